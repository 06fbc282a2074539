"""``inspect`` and ``verify`` for artifacts already on disk: read the manifest, or audit the bare file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from .data import image_paths, load_images
from .errors import EdgevitError
from .export import manifest_input_size, verify_numerics
from .fileio import path_sha256
from .models import create_model, get_entry
from .recipe import recipe_gates
from .runtime import host_cannot_run
from .targets.audit import check_gates
from .targets.registry import target_for_path


def manifest_path_for(artifact: Path) -> Path:
    return artifact.with_name(artifact.name[: -len(artifact.suffix)] + ".manifest.json")


def _check_artifact(artifact: Path) -> None:
    if not artifact.exists():
        raise EdgevitError(f"artifact not found: {artifact}")
    target_for_path(artifact)  # an unknown suffix fails here, naming the known ones


def read_manifest(artifact: Path) -> dict[str, Any] | None:
    path = manifest_path_for(artifact)
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise EdgevitError(
            f"manifest {path} is not valid JSON ({e.__class__.__name__}); re-export the artifact"
        ) from None
    if not isinstance(manifest, dict):
        raise _not_a_manifest(path, "not a mapping")
    return manifest


def read_full_manifest(artifact: Path) -> dict[str, Any] | None:
    """:func:`read_manifest`, checked to hold every section an export writes (verify and inspect read them all)."""
    manifest = read_manifest(artifact)
    missing = [key for key in _MANIFEST_KEYS if key not in manifest] if manifest is not None else []
    if missing:
        raise _not_a_manifest(manifest_path_for(artifact), f"no {', '.join(missing)}")
    return manifest


_MANIFEST_KEYS = ["model", "weights", "input", "recipe", "artifact", "audit", "numerics"]


def _not_a_manifest(path: Path, why: str) -> EdgevitError:
    return EdgevitError(f"{path} is not an edgevit manifest ({why}); re-export the artifact or remove the file")


def manifest_matches(artifact: Path, manifest: dict[str, Any]) -> bool:
    """Whether ``artifact`` is the file its manifest describes (same sha256)."""
    return manifest["artifact"].get("sha256") == path_sha256(artifact)


def inspect_artifact(artifact: str | Path) -> dict[str, Any]:
    """The manifest's audit, or what can be computed from a bare file."""
    artifact = Path(artifact)
    _check_artifact(artifact)
    manifest = read_full_manifest(artifact)
    if manifest is not None and manifest_matches(artifact, manifest):
        return {"artifact": str(artifact), "source": "manifest", **manifest}
    info = {"artifact": str(artifact), "source": "file", "audit": audit_file(artifact)}
    if manifest is not None:  # the file changed after export: its manifest describes other bytes
        name = manifest_path_for(artifact).name
        info["note"] = f"{name} describes another file (sha256 differs); audit read from the file"
    return info


def audit_file(artifact: Path) -> dict[str, Any]:
    target = target_for_path(artifact)
    try:
        return target.audit_file(artifact)
    except EdgevitError:
        raise
    except Exception as e:  # each format's parser raises its own error types on corrupt input
        raise EdgevitError(f"{artifact} cannot be read as {artifact.suffix} ({str(e).splitlines()[0][:120]})") from None


def _reference_model(manifest: dict[str, Any], checkpoint: str | None, size) -> torch.nn.Module:
    """What the artifact was checked against at export: the training form with the manifest's weights, or for
    an artifact of ``edgevit qat`` the fake-quantized model that training left."""
    if (manifest.get("quantization") or {}).get("qat"):
        from .train.qat import rebuild_trained

        return rebuild_trained(manifest)
    return create_model(manifest["model"], checkpoint, input_size=size).eval()


def verify_artifact(artifact: str | Path, images: str | Path | None = None, num_images: int = 8) -> dict[str, Any]:
    """Re-run numerics against the PyTorch reference of the export (rebuilt from the manifest), and check them
    against the recipe's gates."""
    artifact = Path(artifact)
    _check_artifact(artifact)
    manifest = read_full_manifest(artifact)
    if manifest is None:
        raise EdgevitError(
            f"no manifest beside {artifact} ({manifest_path_for(artifact).name}); verify needs it to rebuild "
            "the PyTorch reference"
        )
    if not manifest_matches(artifact, manifest):
        raise EdgevitError(f"{artifact} does not match the sha256 in its manifest; it changed after export")
    model_name = manifest["model"]
    weights = manifest["weights"]
    checkpoint = weights.get("checkpoint")
    if checkpoint and not Path(checkpoint).is_file():
        raise EdgevitError(
            f"checkpoint {checkpoint} (from the manifest) not found: moved or deleted since export, or a relative "
            "path from another directory; re-export the artifact"
        )
    if checkpoint and path_sha256(Path(checkpoint)) != weights["sha256"]:
        raise EdgevitError(f"checkpoint {checkpoint} changed since export (sha256 differs); re-export the artifact")
    reason = host_cannot_run(artifact)
    if reason:  # nothing to compare on this host: the reference is not built
        return {"artifact": str(artifact), "model": model_name, "numerics": {"skipped": reason}}
    torch.manual_seed(int(weights.get("seed", 0)))
    size = manifest_input_size(manifest["input"])
    model = _reference_model(manifest, checkpoint, size)
    photos = load_images(images, get_entry(model_name).input_spec, size, limit=num_images)
    with torch.no_grad():
        reference = model(photos).numpy()
    numerics = verify_numerics(artifact, reference, photos.numpy(), get_entry(model_name).input_spec)
    numerics["images"] = [p.name for p in image_paths(images)[:num_images]]
    result = {"artifact": str(artifact), "model": model_name, "numerics": numerics}
    if "skipped" not in numerics:
        recipe = manifest["recipe"]
        failures = check_gates({}, numerics, recipe_gates(recipe.get("gates", {})), recipe.get("name", "?"))
        result["gates"] = {"passed": not failures, "failures": failures}
    return result

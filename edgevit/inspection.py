"""``inspect`` and ``verify`` for artifacts already on disk: read the manifest, or audit the bare file."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import torch

from .data import image_paths, load_images
from .errors import EdgevitError
from .export import manifest_input_size, verify_numerics
from .fileio import path_sha256
from .models import create_model, get_entry

SUFFIXES = (".pte", ".onnx", ".mlpackage", ".tflite")


def manifest_path_for(artifact: Path) -> Path:
    return artifact.with_name(artifact.name[: -len(artifact.suffix)] + ".manifest.json")


def _check_artifact(artifact: Path) -> None:
    if not artifact.exists():
        raise EdgevitError(f"artifact not found: {artifact}")
    if artifact.suffix not in SUFFIXES:
        raise EdgevitError(f"{artifact} is not an artifact edgevit knows; expected one of {', '.join(SUFFIXES)}")


def read_manifest(artifact: Path) -> dict[str, Any] | None:
    path = manifest_path_for(artifact)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise EdgevitError(
            f"manifest {path} is not valid JSON ({e.__class__.__name__}); re-export the artifact"
        ) from None


def inspect_artifact(artifact: str | Path) -> dict[str, Any]:
    """The manifest's audit, or what can be computed from a bare file."""
    artifact = Path(artifact)
    _check_artifact(artifact)
    manifest = read_manifest(artifact)
    if manifest is not None:
        return {"artifact": str(artifact), "source": "manifest", **manifest}
    return {"artifact": str(artifact), "source": "file", "audit": audit_file(artifact)}


def audit_file(artifact: Path) -> dict[str, Any]:
    try:
        if artifact.suffix == ".pte":
            return _audit_pte(artifact)
        if artifact.suffix == ".onnx":
            from .targets.onnx import audit_onnx

            return audit_onnx(artifact.read_bytes())
        if artifact.suffix == ".mlpackage":
            return _audit_mlpackage(artifact)
        if artifact.suffix == ".tflite":
            from .targets.tflite import audit_tflite

            return audit_tflite(artifact.read_bytes())
    except EdgevitError:
        raise
    except Exception as e:  # each format's parser raises its own error types on corrupt input
        raise EdgevitError(f"{artifact} cannot be read as {artifact.suffix} ({str(e).splitlines()[0][:120]})") from None
    raise EdgevitError(f"no bare-file audit for {artifact.suffix} yet; export it with edgevit to get a manifest")


def _audit_pte(artifact: Path) -> dict[str, Any]:
    from executorch.exir._serialize._program import deserialize_pte_binary

    plan = deserialize_pte_binary(artifact.read_bytes()).program.execution_plan[0]
    delegate_calls, outside = 0, Counter()
    for chain in plan.chains:
        for instruction in chain.instructions:
            kind = type(instruction.instr_args).__name__
            if kind == "DelegateCall":
                delegate_calls += 1
            elif kind == "KernelCall":
                outside[plan.operators[instruction.instr_args.op_index].name] += 1
    return {
        "backend": ", ".join(sorted({d.id for d in plan.delegates})) or "none",
        "partitions": delegate_calls,
        "ops_outside": dict(sorted(outside.items())),
    }


def _audit_mlpackage(artifact: Path) -> dict[str, Any]:
    import coremltools as ct

    spec = ct.models.MLModel(str(artifact), skip_model_load=True).get_spec()
    if not spec.HasField("mlProgram"):
        raise EdgevitError(f"{artifact} is not an ML program (neural network models are not audited)")
    counts: Counter = Counter()
    rank = 0
    for function in spec.mlProgram.functions.values():
        for block in function.block_specializations.values():
            for op in block.operations:
                if op.type == "const":
                    continue
                counts[op.type] += 1
                for out in op.outputs:
                    if out.type.HasField("tensorType"):
                        rank = max(rank, out.type.tensorType.rank)
    return {
        "backend": "coreml",
        "ops": dict(sorted(counts.items())),
        "max_rank": rank,
        "transposes": counts.get("transpose", 0),
    }


def verify_artifact(artifact: str | Path, images: str | Path | None = None, num_images: int = 8) -> dict[str, Any]:
    """Re-run numerics against PyTorch fp32, rebuilding the reference model from the manifest."""
    artifact = Path(artifact)
    _check_artifact(artifact)
    manifest = read_manifest(artifact)
    if manifest is None:
        raise EdgevitError(
            f"no manifest beside {artifact} ({manifest_path_for(artifact).name}); verify needs it to rebuild "
            "the PyTorch reference"
        )
    if manifest["artifact"]["sha256"] != path_sha256(artifact):
        raise EdgevitError(f"{artifact} does not match the sha256 in its manifest; it changed after export")
    model_name = manifest["model"]
    weights = manifest["weights"]
    checkpoint = weights.get("checkpoint")
    if checkpoint and path_sha256(Path(checkpoint)) != weights["sha256"]:
        raise EdgevitError(f"checkpoint {checkpoint} changed since export (sha256 differs); re-export the artifact")
    torch.manual_seed(int(weights.get("seed", 0)))
    size = manifest_input_size(manifest["input"])
    model = create_model(model_name, checkpoint, input_size=size).eval()
    photos = load_images(images, get_entry(model_name).input_spec, size, limit=num_images)
    with torch.no_grad():
        reference = model(photos).numpy()
    numerics = verify_numerics(artifact, reference, photos.numpy(), get_entry(model_name).input_spec)
    numerics["images"] = [p.name for p in image_paths(images)[:num_images]]
    return {"artifact": str(artifact), "model": model_name, "numerics": numerics}

"""The export flow: create_model -> lower -> target export -> verify on real photos -> gates -> artifact + manifest."""

from __future__ import annotations

import importlib
import importlib.metadata
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, is_dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import __version__
from .data import image_paths, load_images
from .errors import EdgevitError
from .fileio import (
    atomic_write_json,
    check_writable_dir,
    make_dir,
    move_into_place,
    path_sha256,
    path_size,
    refuse_overwrite,
    remove_path,
)
from .lowering import lower
from .models import InputSpec, Size, check_input_size, create_model, get_entry, size_hw
from .numerics import compare
from .quant.calibration import checked_calibration_paths
from .quant.flow import QuantizedDeploy, QuantizeRequest, compare_with_fp32, quantize_for_export
from .quant.pt2e import quant_options
from .quant.sensitivity import candidate_blocks, describe_fix, sensitivity_report, simulate
from .recipe import Recipe, default_recipe, get_recipe
from .runtime import host_cannot_run, open_runner
from .targets.audit import check_gates, raise_on_failures
from .targets.registry import get_target

Step = Callable[[str], None]


@dataclass
class Prebuilt:
    """Made elsewhere (QAT): the model the artifact must reproduce (the fake-quantized trained graph), the fp32
    deploy form of the same weights (for the size and latency comparison), the quantized form, the model config
    and the manifest's quantization entry."""

    reference: torch.nn.Module
    reference_name: str
    float_deploy: torch.nn.Module
    quantized: torch.nn.Module
    config: Any
    entry: dict[str, Any]


@dataclass
class ExportResult:
    artifact: Path
    manifest_path: Path
    manifest: dict[str, Any]


def output_paths(model_name: str, recipe: Recipe, out_dir: Path) -> tuple[Path, Path]:
    """Where an export writes its artifact and manifest."""
    stem = f"{model_name}-{recipe.name}"
    return out_dir / f"{stem}{get_target(recipe.target).suffix}", out_dir / f"{stem}.manifest.json"


def resolve_recipe(target: str, recipe: str | None) -> Recipe:
    chosen = default_recipe(target) if recipe is None else get_recipe(recipe)
    if chosen.target != target:
        raise EdgevitError(
            f"recipe {chosen.name} builds for target '{chosen.target}', not '{target}'; "
            f"pass --target {chosen.target} or another recipe"
        )
    return chosen


def tool_versions() -> dict[str, str]:
    versions = {"edgevit": __version__, "python": platform.python_version()}
    for pkg in (
        "torch",
        "executorch",
        "torchao",
        "coremltools",
        "litert-torch",
        "ai-edge-litert",
        "onnx",
        "onnxruntime",
        "numpy",
    ):
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            pass
    return versions


def _jsonable(obj: Any) -> Any:
    return asdict(obj) if is_dataclass(obj) else obj


def export_model(
    model_name: str,
    target: str = "executorch",
    recipe: str | None = None,
    checkpoint: str | Path | None = None,
    input_size: Size | None = None,
    output_dir: str | Path = "artifacts",
    force: bool = False,
    images: str | Path | None = None,
    num_images: int = 8,
    allow_gate_failures: bool = False,
    seed: int = 0,
    labels: list[str] | None = None,
    image_input: bool = False,
    on_step: Step | None = None,
    quantize_request: QuantizeRequest | None = None,
    prebuilt: Prebuilt | None = None,
    sensitivity: bool = True,
    vs_fp32: bool = True,
) -> ExportResult:
    """Export ``model_name`` for ``target``; writes ``<model>-<recipe><suffix>`` and its manifest atomically.

    ``labels`` (one per class) go into the manifest, and make a Core ML export a classifier; ``image_input``
    gives a Core ML export an image input with the normalisation inside.
    ``sensitivity`` runs the per-block report when an int8 artifact misses its SQNR gate; ``vs_fp32`` measures
    an int8 artifact's size and host latency against its fp32 twin (one more export, four timed processes).
    ``prebuilt`` hands in a model and its already-quantized deploy form (QAT) instead of building them.
    Raises :class:`EdgevitError` for bad input and :class:`GateError` when the artifact misses a gate (then
    nothing is written, unless ``allow_gate_failures``).
    """
    step = on_step or (lambda _: None)
    entry = get_entry(model_name)
    chosen = resolve_recipe(target, recipe)
    if image_input and target != "coreml":
        raise EdgevitError(f"--image-input is for the coreml target; {target} artifacts take the normalised tensor")
    pixel_input = image_input or chosen.options.get("input_dtype") == "uint8"
    if (target == "coreml" and labels) or pixel_input:
        spec = entry.input_spec
        extra = {"labels": labels, "mean": list(spec.mean), "std": list(spec.std)}
        if target == "coreml":
            extra["image_input"] = image_input
        chosen = replace(chosen, options={**chosen.options, **extra})
    module = get_target(target)
    size = input_size or entry.input_spec.size
    check_input_size(model_name, size)
    out_dir = Path(output_dir)
    stem = f"{model_name}-{chosen.name}"
    artifact, manifest_path = output_paths(model_name, chosen, out_dir)
    refuse_overwrite([artifact, manifest_path], force)
    check_writable_dir(out_dir)
    photo_paths = image_paths(images)[:num_images]
    if quant_options(chosen) and prebuilt is None:  # a bad calibration folder fails now, not after minutes of work
        request = quantize_request or QuantizeRequest()
        checked_calibration_paths(request.calib_images, request.calib_count)

    step("build model")
    torch.manual_seed(seed)
    model = prebuilt.reference if prebuilt else create_model(model_name, checkpoint, input_size=size).eval()
    photos = load_images(images, entry.input_spec, size, limit=num_images)
    with torch.no_grad():
        reference = model(photos).numpy()
    if labels is not None and len(labels) != reference.shape[-1]:
        raise EdgevitError(
            f"{len(labels)} labels given but {model_name} has {reference.shape[-1]} classes; "
            "pass one label per class, one per line"
        )

    step("lower")
    # a recipe may ask for another target's deploy form (a .pte with the Core ML delegate wants Core ML's)
    deploy = prebuilt.float_deploy if prebuilt else lower(model, chosen.options.get("lowering", target))
    with torch.no_grad():
        lowering_numerics = compare(reference, deploy(photos).numpy())

    t0 = time.perf_counter()
    example = torch.randn(entry.input_spec.shape(size))
    quantization, plan = None, None
    to_export = deploy
    if prebuilt is not None:
        plan = QuantizedDeploy(prebuilt.quantized, prebuilt.entry)
        to_export, quantization = plan.module, plan.entry
    elif quant_options(chosen):
        plan = quantize_for_export(
            deploy, example, chosen, entry.input_spec, size, quantize_request or QuantizeRequest(), step
        )
        to_export, quantization = plan.module, plan.entry
    simulated = None
    if plan is not None and plan.rewrite is None:  # the int8 graph as PyTorch runs it: the gate's input where
        simulated = simulate(plan.module, photos, reference)  # the host cannot run the artifact (Core ML)
        quantization["simulated"] = simulated
    step(f"export ({chosen.name})")
    exported = module.export(to_export, example, chosen)
    if plan and plan.rewrite:
        exported = plan.rewrite(exported)
    export_seconds = time.perf_counter() - t0

    step("verify on host runtime")
    # the candidate sits beside its final name, so moving it into place is a rename
    tmp = out_dir / f".{stem}.partial{module.suffix}"
    make_dir(out_dir)
    remove_path(tmp)
    exported.write(tmp)
    try:
        numerics = verify_numerics(tmp, reference, photos.numpy(), entry.input_spec)
        if "skipped" in numerics and simulated is not None:
            numerics["simulated"] = simulated
        gated = numerics if "skipped" not in numerics else numerics.get("simulated")
        failures = check_gates(exported.audit, gated, chosen.gates, chosen.name)
        threshold = chosen.gates.min_sqnr_db
        if (
            sensitivity
            and plan
            and plan.requantize
            and gated
            and threshold is not None
            and gated["sqnr_db"] < threshold
        ):
            step("find the blocks that cost the most SQNR")
            blocks = list(candidate_blocks(deploy))
            view = plan.float_view or plan.requantize
            report = sensitivity_report(view, blocks, photos, reference, threshold, step, confirm=plan.requantize)
            quantization["sensitivity"] = report
            sqnr = [f"{f}; {describe_fix(report)}" for f in failures if ": SQNR " in f]
            failures = sqnr + [f for f in failures if ": SQNR " not in f]
        if not allow_gate_failures:
            raise_on_failures(failures)
        if quantization is not None and vs_fp32:  # only for an artifact that will be kept: an fp32 export
            quantization["vs_fp32"] = compare_with_fp32(module, deploy, example, chosen, tmp, step)

        step("write")
        manifest = {
            "model": model_name,
            "config": _jsonable(prebuilt.config if prebuilt else getattr(model, "cfg", None)),
            "weights": _weights_entry(checkpoint, seed),
            "input": _input_entry(entry.input_spec, size, exported.audit, image_input),
            "output": _output_entry(int(reference.shape[-1]), exported.audit),
            "labels": labels,
            "recipe": _recipe_entry(chosen),
            "artifact": {
                "file": artifact.name,
                "sha256": path_sha256(tmp),
                "size_bytes": path_size(tmp),
                "export_seconds": round(export_seconds, 2),
            },
            "audit": exported.audit,
            "lowering": {"vs_training_form": lowering_numerics},
            "quantization": quantization,
            "numerics": {
                "reference": prebuilt.reference_name if prebuilt else "PyTorch fp32 training form",
                "images": [p.name for p in photo_paths],
                **numerics,
            },
            "gates": {"passed": not failures, "failures": failures, "overridden": bool(failures)},
            "versions": tool_versions(),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        atomic_write_json(manifest_path, manifest)
        move_into_place(tmp, artifact)
    finally:
        remove_path(tmp)
    return ExportResult(artifact, manifest_path, manifest)


def verify_numerics(path: Path, reference: np.ndarray, inputs: np.ndarray, spec: InputSpec) -> dict[str, Any]:
    """Run the artifact on its host runtime and compare with the reference; say why when it cannot run here.

    ``inputs`` are normalised; an artifact that normalises inside gets the photos' pixel values back.
    """
    reason = host_cannot_run(path)
    if reason:
        return {"skipped": reason}
    runner = open_runner(path)
    if runner.raw_pixels:
        mean = np.asarray(spec.mean, np.float32).reshape(1, -1, 1, 1)
        std = np.asarray(spec.std, np.float32).reshape(1, -1, 1, 1)
        inputs = np.rint((inputs * std + mean) * 255.0)
    return {**compare(reference, runner.run_batch(inputs)), "runtime": runner.name}


def _recipe_entry(recipe: Recipe) -> dict[str, Any]:
    entry = recipe.to_dict()
    if entry["options"].get("labels"):
        entry["options"] = {**entry["options"], "labels": "the manifest's labels"}
    return entry


def read_labels(path: str | Path) -> list[str]:
    """Class labels from a text file, one per line (blank lines ignored)."""
    path = Path(path)
    try:
        labels = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise EdgevitError(f"cannot read labels file {path} ({e.__class__.__name__}); pass a UTF-8 text file") from None
    if not labels:
        raise EdgevitError(f"labels file {path} is empty; write one class label per line")
    return labels


def _weights_entry(checkpoint: str | Path | None, seed: int) -> dict[str, Any]:
    if checkpoint:
        return {"checkpoint": str(checkpoint), "sha256": path_sha256(Path(checkpoint))}
    return {"checkpoint": None, "seed": seed, "note": f"random init (seed {seed}): pass --checkpoint for real weights"}


def _output_entry(classes: int, audit: dict[str, Any]) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": "logits", "shape": [1, classes], "dtype": "float32"}
    if "output" in audit.get("int8_io", {}):
        entry["dtype"] = "int8"
        entry["quantization"] = {**audit["int8_io"]["output"], "formula": "logits = (value - zero_point) * scale"}
    return entry


def _resize_entry(spec: InputSpec, size: Size) -> dict[str, Any]:
    """How the app resizes and crops: the short side for a square input, cover-then-crop for (H, W)."""
    h, w = size_hw(size)
    if h == w:
        return {"resize_short_side": round(h / spec.crop_pct), "center_crop": h}
    cover = [round(h / spec.crop_pct), round(w / spec.crop_pct)]
    return {"resize_to_cover": cover, "center_crop": [h, w]}


def _input_entry(spec: InputSpec, size: Size, audit: dict[str, Any], image_input: bool) -> dict[str, Any]:
    """What the app feeds: tensor or image, shape, layout, dtype and the exact preprocessing."""
    shape = list(spec.shape(size))
    pixels = audit.get("input_dtype") == "uint8"
    layout = "NHWC" if pixels else audit.get("input_layout", "NCHW")
    inside = pixels or image_input  # normalisation runs inside the model
    entry: dict[str, Any] = {
        "name": "pixels" if pixels else "image",
        "shape": shape if layout == "NCHW" else [shape[0], shape[2], shape[3], shape[1]],
        "layout": layout,
        "dtype": "uint8" if pixels else spec.dtype,
        "channel_order": spec.channel_order,
        "preprocessing": {
            **_resize_entry(spec, size),
            "interpolation": spec.interpolation,
            **({"normalisation": "inside the model: (pixel / 255 - mean) / std"} if inside else {"scale": "1/255"}),
            "mean": list(spec.mean),
            "std": list(spec.std),
        },
    }
    if image_input:
        entry.update(type="image (Core ML ImageType, RGB, 0-255 pixels)", dtype="image")
    if spec.kind == "spectrogram":
        h, w = size_hw(size)
        entry["name"] = "spectrogram"
        entry["preprocessing"] = {
            "features": f"log-mel spectrogram: {h} mel bins (rows, low to high) x {w} frames (columns)",
            "normalisation": "standardise with your training set's log-mel mean and std",
            "verified_on": "the bundled photos as 1-channel maps, (pixel / 255 - mean) / std: no audio ships "
            "offline, so numerics check the function, not audio accuracy",
            "mean": list(spec.mean),
            "std": list(spec.std),
        }
    if audit.get("input_dtype") == "int8":  # full-integer TFLite: the app quantizes the normalised image
        entry["dtype"] = "int8"
        entry["quantization"] = {**audit["int8_io"]["input"], "formula": "round(normalised / scale) + zero_point"}
    return entry


def manifest_input_size(entry: dict[str, Any]) -> Size:
    """The input size an artifact was exported at, from its manifest's input shape and layout."""
    shape = entry["shape"]
    h, w = (shape[1], shape[2]) if entry.get("layout") == "NHWC" else (shape[2], shape[3])
    return h if h == w else (h, w)


def model_stats(model_name: str, size: Size | None = None) -> dict[str, Any]:
    """Parameters and MACs (matmul/conv multiply-adds, attention included) at the default input size."""
    from torch.utils.flop_counter import FlopCounterMode

    entry = get_entry(model_name)
    size = size or entry.input_spec.size
    model = create_model(model_name, input_size=size).eval()
    params = sum(p.numel() for p in model.parameters())
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(entry.input_spec.shape(size)))
    return {
        "name": model_name,
        "params_m": round(params / 1e6, 3),
        "gmacs": round(counter.get_total_flops() / 2e9, 3),
        "input_size": size if isinstance(size, int) else list(size_hw(size)),
        "description": entry.description,
    }


__all__ = ["ExportResult", "export_model", "model_stats", "resolve_recipe"]

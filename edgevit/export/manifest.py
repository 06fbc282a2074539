"""The manifest beside every artifact: model, weights, the app's input and output, recipe, audit, numerics,
gates and versions. Built here alone, from a finished export job."""

from __future__ import annotations

from dataclasses import asdict, is_dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..fileio import path_sha256, path_size
from ..models.registry import InputSpec, Size, size_hw
from ..recipe import Recipe
from ..versions import tool_versions

if TYPE_CHECKING:
    from .steps import Job


def build_manifest(job: Job) -> dict[str, Any]:
    request, audit = job.request, job.exported.audit
    return {
        "model": request.model,
        "config": _jsonable(job.config),
        "weights": weights_entry(request.checkpoint, request.seed),
        "input": input_entry(job.entry.input_spec, job.size, audit, request.image_input),
        "output": output_entry(int(job.reference.shape[-1]), audit),
        "labels": list(request.labels) if request.labels is not None else None,
        "recipe": recipe_entry(job.recipe),
        "artifact": {
            "file": job.artifact.name,
            "sha256": path_sha256(job.candidate),
            "size_bytes": path_size(job.candidate),
            "export_seconds": round(job.export_seconds, 2),
            "phase_seconds": {name: round(seconds, 2) for name, seconds in job.phase_seconds.items()},
        },
        "audit": audit,
        "lowering": {"vs_training_form": job.lowering_numerics},
        "quantization": job.quantization,
        "numerics": {
            "reference": job.reference_name,
            "images": [p.name for p in job.photo_paths],
            **job.numerics,
        },
        "gates": {"passed": not job.failures, "failures": job.failures, "overridden": bool(job.failures)},
        "versions": tool_versions(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _jsonable(obj: Any) -> Any:
    return asdict(obj) if is_dataclass(obj) else obj


def recipe_entry(recipe: Recipe) -> dict[str, Any]:
    entry = recipe.to_dict()
    if entry["options"].get("labels"):
        entry["options"] = {**entry["options"], "labels": "the manifest's labels"}
    return entry


def weights_entry(checkpoint: str | Path | None, seed: int) -> dict[str, Any]:
    if checkpoint:
        # absolute, so that verify finds it from any directory
        return {"checkpoint": str(Path(checkpoint).resolve()), "sha256": path_sha256(Path(checkpoint))}
    return {"checkpoint": None, "seed": seed, "note": f"random init (seed {seed}): pass --checkpoint for real weights"}


def output_entry(classes: int, audit: dict[str, Any]) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": "logits", "shape": [1, classes], "dtype": audit.get("output_dtype", "float32")}
    if "output" in audit.get("int8_io", {}):
        entry["dtype"] = "int8"
        entry["quantization"] = {**audit["int8_io"]["output"], "formula": "logits = (value - zero_point) * scale"}
    return entry


def resize_entry(spec: InputSpec, size: Size) -> dict[str, Any]:
    """How the app resizes and crops: the short side for a square input, cover-then-crop for (H, W)."""
    h, w = size_hw(size)
    if h == w:
        return {"resize_short_side": round(h / spec.crop_pct), "center_crop": h}
    cover = [round(h / spec.crop_pct), round(w / spec.crop_pct)]
    return {"resize_to_cover": cover, "center_crop": [h, w]}


def input_entry(spec: InputSpec, size: Size, audit: dict[str, Any], image_input: bool) -> dict[str, Any]:
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
            **resize_entry(spec, size),
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
    if audit.get("input_dtype") == "float16":  # an fp16 program: the app converts the normalised image
        entry["dtype"] = "float16"
    if audit.get("input_dtype") == "int8":  # full-integer TFLite: the app quantizes the normalised image
        entry["dtype"] = "int8"
        entry["quantization"] = {**audit["int8_io"]["input"], "formula": "round(normalised / scale) + zero_point"}
    return entry


def manifest_input_size(entry: dict[str, Any]) -> Size:
    """The input size an artifact was exported at, from its manifest's input shape and layout."""
    shape = entry["shape"]
    h, w = (shape[1], shape[2]) if entry.get("layout") == "NHWC" else (shape[2], shape[3])
    return h if h == w else (h, w)

"""The quantization step of the export flow: calibrate, then quantize through the target's own quantizer."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..models.registry import InputSpec
from ..recipe import Recipe
from ..targets.base import ExportedArtifact
from ..targets.registry import get_target
from .calibration import calibration_batch, checked_calibration_paths
from .pt2e import backend_quantizer, calibrated, converted, copy_prepared, quant_options, quantize
from .sensitivity import with_blocks_float


@dataclass
class QuantizeRequest:
    """What the user asked for on top of the recipe: calibration images and extra float modules."""

    calib_images: str | Path | None = None
    calib_count: int = 16
    keep_float: tuple[str, ...] = ()


@dataclass
class QuantizedDeploy:
    """What the target exports, the manifest's ``quantization`` entry, and for targets that quantize the
    exported file (ONNX) the rewrite of that file."""

    module: nn.Module
    entry: dict[str, Any]
    rewrite: Callable[[ExportedArtifact], ExportedArtifact] | None = None
    # the same quantization with more module names kept float (for the sensitivity report): a real
    # re-quantization, and its quick simulation on this calibration
    requantize: Callable[[tuple[str, ...]], nn.Module] | None = None
    float_view: Callable[[tuple[str, ...]], nn.Module] | None = None


def deploy_float_modules(deploy: nn.Module) -> tuple[str, ...]:
    """Module-name patterns a deploy form keeps float in every int8 graph (its ``float_modules``)."""
    return tuple(getattr(deploy, "float_modules", ()))


def quantize_for_export(
    deploy: nn.Module,
    example: torch.Tensor,
    recipe: Recipe,
    spec: InputSpec,
    size: int,
    request: QuantizeRequest,
    step: Callable[[str], None],
) -> QuantizedDeploy:
    """The quantized deploy form for ``recipe`` and the manifest's ``quantization`` entry."""
    options = quant_options(recipe)
    keep_float = deploy_float_modules(deploy) + tuple(options["keep_float"]) + tuple(request.keep_float)
    paths = checked_calibration_paths(request.calib_images, request.calib_count)

    def progress(done: int, total: int) -> None:
        step(f"calibrate {done}/{total}")

    calib = calibration_batch(paths, spec, size, progress)
    entry = {
        "scheme": options["scheme"],
        "weights": "int8 symmetric, " + ("per channel" if options["per_channel"] else "per tensor"),
        "activations": "int8, static (calibrated)",
        "io": options["io"],
        "keep_float": list(keep_float),
        "calibration": {
            "source": str(request.calib_images) if request.calib_images else "scikit-image sample photos",
            "images": [p.name for p in paths],
        },
    }
    target = get_target(recipe.target)
    rewrite_file = target.quantize_exported(options)
    if rewrite_file is not None:  # the target quantizes the exported file (ONNX: onnxruntime's QDQ)
        calibration = calib.numpy()

        def rewrite(artifact: ExportedArtifact) -> ExportedArtifact:
            step(f"quantize ({target.runtime})")
            return rewrite_file(artifact, calibration, keep_float)

        return QuantizedDeploy(deploy, {**entry, "activations": "uint8, static (calibrated)"}, rewrite)
    step("quantize")
    quantizer = backend_quantizer(recipe.target, options)
    dynamic = options["scheme"] == "dynamic"
    float_types = target.dynamic_float_modules if dynamic else ()
    if dynamic:  # on a copy: the fp32 comparison exports the deploy form as it is
        deploy = copy.deepcopy(deploy)
        target.adapt_for_dynamic(deploy)
    fold = target.fold_quantize
    float_ops = target.float_ops
    prepared, copies = calibrated(deploy, example, quantizer, calib, keep_float, progress, float_types, float_ops)
    entry["norm_means_dropped"] = prepared.meta.get("norm_means_dropped", 0)
    # the sensitivity report's views need weights as float constants behind quantize/dequantize pairs
    unfolded = converted(copy_prepared(prepared), copies, fold_quantize=False) if fold else None
    quantized = converted(prepared, copies, fold)
    if dynamic:
        entry["activations"] = "int8, quantized at run time per call"

    def requantize(more_float: tuple[str, ...]) -> nn.Module:
        return quantize(deploy, example, quantizer, calib, keep_float + more_float, None, float_types, fold, float_ops)

    def float_view(more_float: tuple[str, ...]) -> nn.Module:
        return with_blocks_float(unfolded if fold else quantized, more_float)

    return QuantizedDeploy(quantized, entry, requantize=requantize, float_view=float_view)

"""Post-training quantization through each target's own PT2E quantizer (torchao's prepare_pt2e/convert_pt2e)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
from torch import fx, nn

from ..errors import EdgevitError
from ..recipe import Recipe
from ..targets.norm_center import drop_norm_means
from ..targets.registry import get_target
from .policy import mark_float, retie_float_copies, untie_weights

SCHEMES = ("static", "dynamic")


def quant_options(recipe: Recipe) -> dict[str, Any] | None:
    """The recipe's ``quantization`` options, validated; None for a float recipe."""
    raw = recipe.options.get("quantization")
    if raw is None:
        return None
    if not isinstance(raw, dict) or raw.get("scheme") not in SCHEMES:
        raise EdgevitError(f"recipe {recipe.name}: options.quantization.scheme must be one of {', '.join(SCHEMES)}")
    keep = raw.get("keep_float", [])
    if not isinstance(keep, list) or not all(isinstance(k, str) for k in keep):
        raise EdgevitError(f"recipe {recipe.name}: options.quantization.keep_float must be a list of module names")
    get_target(recipe.target).validate_quantization(recipe.name, raw)
    io = raw.get("io", "float")
    if io not in ("float", "int8") or (io == "int8" and (recipe.target != "tflite" or raw["scheme"] != "static")):
        raise EdgevitError(
            f"recipe {recipe.name}: options.quantization.io is '{io}'; int8 I/O is for static tflite recipes, "
            "every other recipe takes float"
        )
    return {"scheme": raw["scheme"], "per_channel": bool(raw.get("per_channel", True)), "keep_float": keep, "io": io}


def backend_quantizer(target: str, options: dict[str, Any], qat: bool = False):
    """The target's own PT2E quantizer, configured for int8 symmetric weights (per channel by default);
    ``qat`` gives its fake-quantize form for ``prepare_qat_pt2e``."""
    return get_target(target).quantizer(options, qat)


def _keep_float_quantizer(inner, keep_float: tuple[str, ...], extra_types: tuple[type, ...], float_ops=()):
    """Wrap ``inner`` so the float policy's nodes are marked annotated before it annotates the rest."""
    from torchao.quantization.pt2e.quantizer import Quantizer

    class KeepFloat(Quantizer):
        def transform_for_annotation(self, model: fx.GraphModule) -> fx.GraphModule:
            return inner.transform_for_annotation(model)

        def annotate(self, model: fx.GraphModule) -> fx.GraphModule:
            mark_float(model, keep_float, extra_types, float_ops)
            # the Core ML quantizer prunes the graph and regenerates the model's Python code before each of
            # its ~400 pattern matches (most of its annotation time); matching only reads the graph, so both
            # run once, here
            model.graph.eliminate_dead_code()
            model.recompile()
            model.recompile = model.graph.eliminate_dead_code = lambda: None
            try:
                annotated = inner.annotate(model)
            finally:
                del model.recompile, model.graph.eliminate_dead_code
            _unannotate_sizes(annotated)
            return annotated

        def validate(self, model: fx.GraphModule) -> None:
            inner.validate(model)

    return KeepFloat()


def _is_tensor(node) -> bool:
    return isinstance(getattr(node, "meta", {}).get("val"), torch.Tensor)


def _unannotate_sizes(model: fx.GraphModule) -> None:
    """No observer on a size: a quantizer matching ``mul`` by name annotates Python multiplications of symbolic
    sizes too (a dynamic batch times a window count, under QAT), and a fake quantizer cannot take an int."""
    for node in model.graph.nodes:
        annotation = node.meta.get("quantization_annotation")
        if annotation is None:
            continue
        if not _is_tensor(node):
            annotation.output_qspec = None
        for arg in [a for a in annotation.input_qspec_map if not _is_tensor(a)]:
            del annotation.input_qspec_map[arg]


def calibrated(
    deploy: nn.Module,
    example: torch.Tensor,
    quantizer,
    calibration: torch.Tensor,
    keep_float: tuple[str, ...] = (),
    progress: Callable[[int, int], None] | None = None,
    float_types: tuple[type, ...] = (),
    float_ops: tuple = (),
) -> tuple[fx.GraphModule, dict[str, str]]:
    """Export, untie shared weights, annotate (float policy first) and calibrate: the observed graph that
    :func:`converted` turns into a quantized one, and the untied weight copies."""
    from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e

    program = torch.export.export(deploy.eval(), (example,), strict=False)
    means_dropped = drop_norm_means(program)  # calibrated and quantized as the float artifact runs
    gm = program.module()
    copies = untie_weights(gm)
    prepared = prepare_pt2e(gm, _keep_float_quantizer(quantizer, tuple(keep_float), float_types, float_ops))
    prepared.meta["norm_means_dropped"] = means_dropped
    with torch.no_grad():
        for i in range(len(calibration)):
            prepared(calibration[i : i + 1])
            if progress:
                progress(i + 1, len(calibration))
    return prepared, copies


def copy_prepared(prepared: fx.GraphModule) -> fx.GraphModule:
    """A deep copy of a calibrated graph that :func:`converted` can consume. ``copy.deepcopy`` shares each
    node's quantization annotation with the original, whose input map still names the original's nodes; torchao's
    metadata pass then searches the wrong graph (for dynamic inputs, a search without end on residual graphs)."""
    from torchao.quantization.pt2e.quantizer.quantizer import Q_ANNOTATION_KEY

    twin = copy.deepcopy(prepared)
    by_name = {node.name: node for node in twin.graph.nodes}
    for node in twin.graph.nodes:
        annotation = node.meta.get(Q_ANNOTATION_KEY)
        if annotation is not None:
            annotation = copy.copy(annotation)
            annotation.input_qspec_map = {by_name[n.name]: spec for n, spec in annotation.input_qspec_map.items()}
            node.meta[Q_ANNOTATION_KEY] = annotation
    return twin


def converted(prepared: fx.GraphModule, copies: dict[str, str], fold_quantize: bool = True) -> fx.GraphModule:
    """The quantized graph of a calibrated one (which this consumes). ``fold_quantize=False`` keeps weights as
    float constants behind quantize/dequantize pairs, the form litert-torch's converter reads."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    result = convert_pt2e(prepared, fold_quantize=fold_quantize)
    retie_float_copies(result, copies)
    return result


def quantize(
    deploy: nn.Module,
    example: torch.Tensor,
    quantizer,
    calibration: torch.Tensor,
    keep_float: tuple[str, ...] = (),
    progress: Callable[[int, int], None] | None = None,
    float_types: tuple[type, ...] = (),
    fold_quantize: bool = True,
    float_ops: tuple = (),
) -> fx.GraphModule:
    """PTQ of a deploy form: :func:`calibrated`, then :func:`converted`.

    ``float_types`` are module types and ``float_ops`` aten ops kept float on top of the policy's."""
    prepared, copies = calibrated(deploy, example, quantizer, calibration, keep_float, progress, float_types, float_ops)
    return converted(prepared, copies, fold_quantize)

"""Post-training quantization through each target's own PT2E quantizer (torchao's prepare_pt2e/convert_pt2e)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
from torch import fx, nn

from ..errors import EdgevitError
from ..recipe import Recipe
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
    if recipe.target == "onnx" and raw["scheme"] != "static":
        raise EdgevitError(f"recipe {recipe.name}: onnx int8 recipes take scheme static (onnxruntime QDQ)")
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
    dynamic = options["scheme"] == "dynamic"
    if target == "executorch":
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
            XNNPACKQuantizer,
            get_symmetric_quantization_config,
        )

        return XNNPACKQuantizer().set_global(
            get_symmetric_quantization_config(is_per_channel=options["per_channel"], is_dynamic=dynamic, is_qat=qat)
        )
    if target == "tflite":
        from ..runtime.quiet import native_stderr_silenced

        with native_stderr_silenced():  # TensorFlow's start-up notices
            from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config

        quantizer = PT2EQuantizer().set_global(
            get_symmetric_quantization_config(is_per_channel=options["per_channel"], is_dynamic=dynamic, is_qat=qat)
        )
        # its QAT-only conv+BatchNorm patterns fail to build under this torchao (they export a function, not a
        # module), and deploy forms hold no BatchNorm for them to match
        quantizer.STATIC_QAT_ONLY_OPS = []
        return quantizer
    if target == "coreml":
        if dynamic:
            raise EdgevitError("Core ML has no dynamic activation quantization; use scheme static (w8a8)")
        from coremltools.optimize.torch.quantization.quantization_config import LinearQuantizerConfig
        from executorch.backends.apple.coreml.quantizer import CoreMLQuantizer

        # Core ML's int8 activations are unsigned (quint8), its weights signed; symmetric suits the NE.
        # Calibration takes plain min/max: the default moving average (built for QAT's thousands of steps)
        # moves 1% per image, so a few calibration photos leave the ranges of the first one (18.6 dB against
        # 35.3 dB on the digits-trained LVT at 64x64).
        config = {
            "quantization_scheme": "symmetric",
            "activation_dtype": torch.quint8,
            "weight_dtype": torch.qint8,
            "weight_per_channel": options["per_channel"],
            "activation_observer": "moving_average_min_max" if qat else "min_max",
        }
        memoize_coreml_pattern_graphs()
        return CoreMLQuantizer(LinearQuantizerConfig.from_dict({"global_config": config}))
    raise EdgevitError(
        f"no PT2E quantizer for target '{target}'; PT2E int8 recipes exist for executorch, tflite, coreml"
    )


_pattern_graphs: dict = {}


def memoize_coreml_pattern_graphs() -> None:
    """Trace each of the Core ML quantizer's ~400 op patterns once per process, not on every ``annotate``.

    Its annotators re-export every pattern with torch.export on each call (about 40 s here), which the
    per-block sensitivity report and every QAT run would pay again. Matching mutates a pattern graph, so each
    caller gets a copy. Left alone if the (private) hook is not where this version keeps it."""
    try:
        from executorch.backends.apple.coreml.quantizer import _coreml_quantizer_utils as utils
    except ImportError:
        return
    trace = getattr(utils, "_get_aten_graph_module", None)
    if trace is None or getattr(trace, "memoized", False):
        return

    def memoized(pattern, example_inputs, is_cuda=False):
        forward = type(pattern).forward  # a pattern is its forward's code and what that closes over
        key = (
            forward.__code__,
            tuple(cell.cell_contents for cell in forward.__closure__ or ()),
            tuple((tuple(t.shape), t.dtype) for t in example_inputs),
            is_cuda,
        )
        try:
            hash(key)
        except TypeError:  # a pattern of a kind this cache does not know: trace it as the quantizer would
            return trace(pattern, example_inputs, is_cuda)
        if key not in _pattern_graphs:
            _pattern_graphs[key] = trace(pattern, example_inputs, is_cuda)
        return copy.deepcopy(_pattern_graphs[key])

    memoized.memoized = True
    utils._get_aten_graph_module = memoized


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
            return annotated

        def validate(self, model: fx.GraphModule) -> None:
            inner.validate(model)

    return KeepFloat()


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

    gm = torch.export.export(deploy.eval(), (example,), strict=False).module()
    copies = untie_weights(gm)
    prepared = prepare_pt2e(gm, _keep_float_quantizer(quantizer, tuple(keep_float), float_types, float_ops))
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

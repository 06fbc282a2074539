"""Core ML target: torch.jit.trace of the deploy form -> coremltools ML program -> .mlpackage, with a MIL audit.

Conversion, saving and the audit run anywhere; prediction needs macOS, so on other hosts the manifest says
numerics were skipped instead of inventing them.
"""

from __future__ import annotations

import copy
import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..errors import EdgevitError
from .base import ExportedArtifact
from .registry import Target, register_target

if TYPE_CHECKING:
    from ..recipe import Recipe

_DEPLOYMENT_TARGETS = ("iOS16", "iOS17", "iOS18", "macOS13", "macOS14", "macOS15")
_COMPUTE_UNITS = ("ALL", "CPU_ONLY", "CPU_AND_GPU", "CPU_AND_NE")
_PRECISIONS = {"fp16": "FLOAT16", "fp32": "FLOAT32"}


def conversion_options(recipe: Recipe) -> dict[str, Any]:
    import coremltools as ct

    target = recipe.options.get("deployment_target", "iOS17")
    units = recipe.options.get("compute_units", "ALL")
    precision = recipe.options.get("compute_precision", "fp16")
    if target not in _DEPLOYMENT_TARGETS:
        raise EdgevitError(f"recipe {recipe.name}: deployment_target '{target}'; choose one of {_DEPLOYMENT_TARGETS}")
    if units not in _COMPUTE_UNITS:
        raise EdgevitError(f"recipe {recipe.name}: compute_units '{units}'; choose one of {_COMPUTE_UNITS}")
    if precision not in _PRECISIONS:
        raise EdgevitError(f"recipe {recipe.name}: compute_precision '{precision}'; choose fp16 or fp32")
    return {
        "minimum_deployment_target": getattr(ct.target, target),
        "compute_units": getattr(ct.ComputeUnit, units),
        "compute_precision": getattr(ct.precision, _PRECISIONS[precision]),
    }


class ImageClassifier(torch.nn.Module):
    """Normalisation inside the model (per-channel, exact), softmax out: for image inputs and labelled outputs."""

    def __init__(self, model: torch.nn.Module, mean: list[float], std: list[float], softmax: bool) -> None:
        super().__init__()
        self.model = model
        self.softmax = softmax
        self.register_buffer("scale", (1.0 / torch.tensor(std)).reshape(1, -1, 1, 1))
        self.register_buffer("shift", (-torch.tensor(mean) / torch.tensor(std)).reshape(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.model(x * self.scale + self.shift)
        return logits.softmax(dim=-1) if self.softmax else logits


def export(model: torch.nn.Module, example: torch.Tensor, recipe: Recipe) -> ExportedArtifact:
    """Trace (the path coremltools calls stable), convert to an ML program, audit the MIL program.

    Recipe options set by the export flow: ``image_input`` (a ``CVPixelBuffer``-ready RGB image input with
    the model's normalisation inside) and ``labels`` (a classifier with ``classLabel`` and probabilities).
    """
    import coremltools as ct

    image_input = bool(recipe.options.get("image_input"))
    labels = recipe.options.get("labels")
    convert_kwargs: dict[str, Any] = {}
    if image_input:
        model = ImageClassifier(model, recipe.options["mean"], recipe.options["std"], softmax=bool(labels))
        # pixels arrive as 0..255; the wrapper expects 0..1 and normalises per channel itself
        inputs = [
            ct.ImageType(name="image", shape=tuple(example.shape), scale=1 / 255.0, color_layout=ct.colorlayout.RGB)
        ]
        example = example.clamp(0, 1)
    else:
        inputs = [ct.TensorType(name="image", shape=tuple(example.shape))]
        if labels:
            model = ImageClassifier(model, [0.0] * example.shape[1], [1.0] * example.shape[1], softmax=True)
    if labels:
        convert_kwargs["classifier_config"] = ct.ClassifierConfig(list(labels))
    else:
        convert_kwargs["outputs"] = [ct.TensorType(name="logits")]
    mlmodel = ct.convert(
        _torch_program(model, example, quantized=recipe.options.get("quantization") is not None),
        inputs=inputs,
        convert_to="mlprogram",
        skip_model_load=True,  # loading compiles the model, which only macOS can do
        **convert_kwargs,
        **conversion_options(recipe),
    )
    mlmodel = compress(mlmodel, recipe)
    _describe(mlmodel, example, image_input, bool(labels))
    audit = audit_mil(mlmodel._mil_program)
    audit["compression"] = recipe.options.get("compression", "none")
    return ExportedArtifact(audit, lambda path: mlmodel.save(str(path)))


def _torch_program(model: torch.nn.Module, example: torch.Tensor, quantized: bool) -> Any:
    """What coremltools converts: a trace (its stable path), or for a PT2E-quantized graph, whose quantize and
    dequantize ops only the torch.export path understands, the exported program in the ATEN dialect."""
    if quantized:
        return torch.export.export(model, (example,), strict=False).run_decompositions({})
    with torch.no_grad():
        return torch.jit.trace(model.eval(), example)


def compress(mlmodel: Any, recipe: Recipe) -> Any:
    """Weight compression that runs on any host: per-channel int8 weights, or 4-bit k-means palettes. Works on a
    converted model and on a saved package loaded with ``skip_model_load=True`` alike."""
    kind = recipe.options.get("compression", "none")
    if kind == "none":
        return mlmodel
    import coremltools.optimize as cto

    if kind == "w8":
        op_config = cto.coreml.OpLinearQuantizerConfig(mode="linear_symmetric", granularity="per_channel")
        return cto.coreml.linear_quantize_weights(mlmodel, cto.coreml.OptimizationConfig(global_config=op_config))
    if kind == "palettize4":
        op_config = cto.coreml.OpPalettizerConfig(nbits=4, mode="kmeans", granularity="per_tensor")
        return cto.coreml.palettize_weights(mlmodel, cto.coreml.OptimizationConfig(global_config=op_config))
    raise EdgevitError(f"recipe {recipe.name}: compression '{kind}'; choose none, w8 or palettize4")


def _describe(mlmodel: Any, example: torch.Tensor, image_input: bool, classifier: bool) -> None:
    """Model metadata Xcode shows beside the model; the manifest holds the full preprocessing."""
    from .. import __version__

    size = example.shape[-1]
    mlmodel.short_description = "Image classifier exported by edgevit (see the .manifest.json beside it)"
    mlmodel.version = __version__
    mlmodel.author = "edgevit"
    mlmodel.license = "see the model's checkpoint"
    mlmodel.input_description["image"] = (
        f"RGB image {size}x{size} (resize and centre-crop first); normalisation is inside the model"
        if image_input
        else f"float32 (1, 3, {size}, {size}) NCHW RGB, scaled to [0, 1] then normalised with the manifest's mean/std"
    )
    if classifier:
        mlmodel.output_description["classLabel"] = "most likely class"
        mlmodel.output_description["classLabel_probs"] = "softmax probability per class"
    else:
        mlmodel.output_description["logits"] = "class scores (before softmax)"


def audit_mil(program: Any) -> dict[str, Any]:
    """Ops by type, largest tensor rank, transposes and the fp16 share of a MIL program's main function."""
    ops = [op for op in program.functions["main"].operations if op.op_type != "const"]
    counts = Counter(op.op_type for op in ops)
    rank, where, fp16 = 0, "", 0
    for op in ops:
        outputs = [v for v in op.outputs if hasattr(v, "shape")]
        for var in outputs:
            if len(var.shape) > rank:
                rank, where = len(var.shape), f"{op.op_type} ({op.name})"
        if outputs and all(getattr(v.dtype, "__name__", "") == "fp16" for v in outputs):
            fp16 += 1
    return {
        "backend": "coreml",
        "ops": dict(sorted(counts.items())),
        "max_rank": rank,
        "max_rank_op": where,
        "transposes": counts.get("transpose", 0),
        "fp16_share": round(fp16 / len(ops), 4) if ops else 0.0,
    }


def audit_mlpackage_file(path: Path) -> dict[str, Any]:
    """Ops by type, largest rank and transposes of a saved ML program (read from its spec; no compile)."""
    import coremltools as ct

    spec = ct.models.MLModel(str(path), skip_model_load=True).get_spec()
    if not spec.HasField("mlProgram"):
        raise EdgevitError(f"{path} is not an ML program (neural network models are not audited)")
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


_pattern_graphs: dict = {}


def trace_pattern(pattern: torch.nn.Module, example_inputs: tuple, is_cuda: bool = False) -> torch.fx.GraphModule:
    """A quantizer pattern as the aten graph torchao's tracer gives, without TorchDynamo: non-strict
    torch.export gives the same nodes (``test_quant`` compares them) in a quarter of the time, and drops the
    guard call it adds as torchao does."""
    if is_cuda:
        example_inputs = tuple(x.cuda() if isinstance(x, torch.Tensor) else x for x in example_inputs)
    graph_module = torch.export.export(pattern, example_inputs, strict=False).module()
    graph = graph_module.graph
    for node in list(graph.nodes):
        unused_copy = node.target == torch.ops.aten.copy_.default and not node.users  # an input mutation's
        if (node.op == "call_function" and unused_copy) or (node.op == "call_module" and node.name == "_guards_fn"):
            graph.erase_node(node)
    if hasattr(graph_module, "_guards_fn"):
        delattr(graph_module, "_guards_fn")
    graph.eliminate_dead_code()
    graph_module.recompile()
    return graph_module


def memoize_coreml_pattern_graphs() -> None:
    """Trace each of the Core ML quantizer's ~400 op patterns once per process, not on every ``annotate``, and
    without TorchDynamo (``trace_pattern``).

    Its annotators re-export every pattern with strict torch.export on each call (about 60 s here), which every
    int8 export, the per-block sensitivity report and every QAT run would pay again. Matching mutates a pattern
    graph, so each caller gets a copy. Left alone if the (private) hook is not where this version keeps it."""
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
            _pattern_graphs[key] = trace_pattern(pattern, example_inputs, is_cuda)
        return copy.deepcopy(_pattern_graphs[key])

    memoized.memoized = True
    utils._get_aten_graph_module = memoized


class CoreMLTarget(Target):
    name = "coreml"
    suffix = ".mlpackage"
    description = "Core ML ML program (.mlpackage) for iOS and macOS, channels-first for the Neural Engine"
    order = 1
    layout = "channels-first"  # NCHW throughout: every transpose is a memory copy on the Neural Engine
    default_recipe = "coreml-fp16"
    int8_recipe = "coreml-w8a8"
    runtime = "coreml"
    host_runner = "edgevit.runtime.coreml:CoreMLRunner"
    app_image_io = True
    # and the app I/O an export adds (--labels, --image-input: the class names and the normalisation inside)
    recipe_options = frozenset(
        {
            "compute_precision",
            "compute_units",
            "deployment_target",
            "compression",
            "labels",
            "image_input",
            "mean",
            "std",
        }
    )
    # the attention products of two activations: coremltools folds the keys' transpose into its matmul only
    # when no quantize/dequantize pair sits between them (mmvit_s's w8a8 program: 27 transposes instead of 0)
    float_ops = (torch.ops.aten.matmul.default, torch.ops.aten.bmm.default)

    def export(self, model: torch.nn.Module, example: torch.Tensor, recipe: Recipe) -> ExportedArtifact:
        return export(model, example, recipe)

    def audit_file(self, path: Path) -> dict[str, Any]:
        return audit_mlpackage_file(path)

    def validate_quantization(self, recipe_name: str, options: dict[str, Any]) -> None:
        if options["scheme"] == "dynamic":
            raise EdgevitError("Core ML has no dynamic activation quantization; use scheme static (w8a8)")

    def quantizer(self, options: dict[str, Any], qat: bool = False) -> Any:
        from coremltools.optimize.torch.quantization.quantization_config import LinearQuantizerConfig
        from executorch.backends.apple.coreml.quantizer import CoreMLQuantizer

        self.validate_quantization("", options)
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

    def cannot_run_here(self, path: Path) -> str | None:
        if sys.platform != "darwin":
            return "Core ML prediction needs macOS; numerics skipped on this host"
        return None


register_target(CoreMLTarget())

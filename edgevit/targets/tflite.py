"""TFLite target: litert-torch conversion of the deploy form -> .tflite, audited in the LiteRT interpreter.

An ``input_layout: NHWC`` recipe option wraps the model so the app feeds channels-last images, as Android
camera pipelines produce them; the manifest records the layout.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..errors import EdgevitError
from ..quant.pt2e import quant_options
from .base import ExportedArtifact
from .norm_center import with_norm_means_dropped
from .registry import Target, register_target
from .tflite_io import float_io

if TYPE_CHECKING:
    from ..recipe import Recipe
_LAYOUTS = ("NCHW", "NHWC")
_PRECISIONS = ("fp32", "fp16", "int8", "dynamic-int8")  # fp16: float16 weights, fp32 activations
# ops a stock LiteRT runtime cannot run or that leave the CPU/GPU delegates
NON_BUILTIN_PREFIXES = ("Flex", "STABLEHLO_", "CUSTOM")


class PixelInput(torch.nn.Module):
    """uint8 NHWC camera pixels in; the cast, layout change and normalisation run inside the model."""

    def __init__(self, model: torch.nn.Module, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("scale", (1.0 / (255.0 * torch.tensor(std))).reshape(1, -1, 1, 1))
        self.register_buffer("shift", (-torch.tensor(mean) / torch.tensor(std)).reshape(1, -1, 1, 1))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model(pixels.permute(0, 3, 1, 2).float() * self.scale + self.shift)


def export(model: torch.nn.Module, example: torch.Tensor, recipe: Recipe) -> ExportedArtifact:
    os.environ.setdefault("LITERT_TORCH_SHOW_PROGRESS", "n")
    from ..runtime.quiet import native_stderr_silenced

    with native_stderr_silenced():  # TensorFlow's oneDNN/absl notices, printed natively at import
        import litert_torch

    if recipe.precision not in _PRECISIONS:
        raise EdgevitError(
            f"recipe {recipe.name}: precision '{recipe.precision}'; the tflite target takes {', '.join(_PRECISIONS)}"
        )
    quant = quant_options(recipe)
    if quant:
        return _export_quantized(litert_torch, model, example, recipe, quant)
    layout = recipe.options.get("input_layout", "NCHW")
    dtype = recipe.options.get("input_dtype", "float32")
    if layout not in _LAYOUTS:
        raise EdgevitError(f"recipe {recipe.name}: input_layout '{layout}'; choose NCHW or NHWC")
    if dtype not in ("float32", "uint8") or (dtype == "uint8" and layout != "NHWC"):
        raise EdgevitError(f"recipe {recipe.name}: input_dtype '{dtype}'; choose float32, or uint8 with NHWC layout")
    model, means_dropped = with_norm_means_dropped(model, example)
    sample = example
    if dtype == "uint8":
        model = PixelInput(model.eval(), recipe.options["mean"], recipe.options["std"])
        sample = torch.randint(0, 256, (example.shape[0], *example.shape[2:], example.shape[1]), dtype=torch.uint8)
    elif layout == "NHWC":
        model = litert_torch.to_channel_last_io(model.eval(), args=[0])
        sample = example.permute(0, 2, 3, 1).contiguous()
    data = litert_torch.convert(model.eval(), (sample,)).model_content()
    if recipe.precision == "fp16":
        data = fp16_weights(data)
    audit = audit_tflite(data)
    audit["input_layout"] = layout
    audit["input_dtype"] = dtype
    audit["weights"] = recipe.precision
    audit["norm_means_dropped"] = means_dropped
    return ExportedArtifact.from_bytes(data, audit)


def _export_quantized(litert_torch, model, example: torch.Tensor, recipe: Recipe, quant: dict[str, Any]):
    """Convert a PT2E-quantized graph: int8 kernels throughout, with int8 or float32 I/O (static) or float I/O
    and per-call activation quantization (dynamic)."""
    from litert_torch.quantize.quant_config import QuantConfig

    from ..runtime.quiet import native_stderr_silenced

    if (
        recipe.options.get("input_layout", "NCHW") != "NCHW"
        or recipe.options.get("input_dtype", "float32") != "float32"
    ):
        raise EdgevitError(f"recipe {recipe.name}: int8 tflite recipes take NCHW float input; drop input_layout/dtype")
    config = QuantConfig(pt2e_quantizer=TFLiteTarget().quantizer(quant))
    with native_stderr_silenced():  # the MLIR converter logs every quantize pair it meets
        data = litert_torch.convert(model, (example,), quant_config=config).model_content()
    if quant["scheme"] == "static" and quant["io"] == "float":  # dynamic models keep float I/O by construction
        data = float_io(data)
    audit = audit_tflite(data)
    audit["input_layout"] = "NCHW"
    audit["weights"] = "int8"
    return ExportedArtifact.from_bytes(data, audit)


def fp16_weights(data: bytes) -> bytes:
    """Store the weights of FULLY_CONNECTED and (depthwise) CONV_2D as float16, each read through a DEQUANTIZE.

    The TFLite "float16 quantization": half the file, and delegates that compute in fp16 (GPU, XNNPACK on
    ARMv8.2) take the weights as they are; fp32 CPU kernels dequantize once at load. Uses ai-edge-quantizer's
    float-casting algorithm, which covers those three ops; other constants stay fp32.
    """
    from ..runtime.quiet import native_stderr_silenced

    with native_stderr_silenced():  # TensorFlow start-up notices and a progress bar that has no off switch
        from ai_edge_quantizer import qtyping, quantizer
        from ai_edge_quantizer.algorithm_manager import AlgorithmName

        ops = qtyping.TFLOperationName
        fp16 = quantizer.Quantizer(data)
        for op in (ops.FULLY_CONNECTED, ops.CONV_2D, ops.DEPTHWISE_CONV_2D):
            fp16.add_weight_only_config(".*", op, 16, algorithm_key=AlgorithmName.FLOAT_CASTING)
        return bytes(fp16.quantize(enable_progress_bar=False, enable_progress_report=False).quantized_model)


def audit_tflite(data: bytes) -> dict[str, Any]:
    """Ops by type with the default delegates off, builtin check, max rank, XNNPACK's partitions and the ops left
    outside them."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    plain = Interpreter(
        model_content=data, experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    )
    ops = Counter(op["op_name"] for op in plain._get_ops_details())
    ranks = [(len(t["shape"]), t["name"]) for t in plain.get_tensor_details()]
    rank, where = max(ranks, default=(0, ""))
    from ..runtime.quiet import native_stderr_silenced

    delegated = Interpreter(model_content=data, num_threads=1)  # XNNPACK is the default delegate
    try:
        with native_stderr_silenced():
            delegated.allocate_tensors()  # delegation happens here
        (partitions, outside), runtime_error = _partitions(delegated._get_ops_details()), ""
    except RuntimeError as e:  # e.g. a stablehlo scatter the runtime cannot prepare
        partitions, outside, runtime_error = None, Counter(), str(e).strip().splitlines()[0][:200]
    non_builtin = sorted(name for name in ops if name.startswith(NON_BUILTIN_PREFIXES))
    io = {"input": plain.get_input_details()[0], "output": plain.get_output_details()[0]}
    int8_io = {
        name: {"scale": float(d["quantization"][0]), "zero_point": int(d["quantization"][1])}
        for name, d in io.items()
        if d["dtype"] == np.int8
    }
    return {
        **({"input_dtype": "int8", "int8_io": int8_io} if int8_io else {}),
        "backend": "litert",
        "ops": dict(sorted(ops.items())),
        "all_builtin": not non_builtin,
        "non_builtin_ops": non_builtin,
        "max_rank": rank,
        "max_rank_op": where,
        # the gates' shared figures: XNNPACK's partitions, and the ops LiteRT runs itself that feed them
        "delegate": "XNNPACK",
        "partitions": partitions,
        "ops_outside": dict(sorted(outside.items())),
        "runtime_error": runtime_error,
    }


def _partitions(ops: list[dict[str, Any]]) -> tuple[int, Counter]:
    """XNNPACK's partitions in a delegated interpreter's ops, and the ops it left to the interpreter that feed
    one (those that split the graph, or an input's cast): the ops whose outputs a delegate reads and none writes."""
    delegates = [op for op in ops if op["op_name"] == "DELEGATE"]
    read = {t for op in delegates for t in op["inputs"]}
    written = {t for op in delegates for t in op["outputs"]}
    outside = Counter(
        op["op_name"]
        for op in ops
        if op["op_name"] != "DELEGATE" and any(t in read and t not in written for t in op["outputs"])
    )
    return len(delegates), outside


class TFLiteTarget(Target):
    name = "tflite"
    suffix = ".tflite"
    description = "LiteRT flatbuffer (.tflite), all builtin ops, XNNPACK or GPU delegate on Android"
    order = 2
    layout = "tokens-last-litert"  # tokens last, one-batch attention products as two (see the layout)
    recipe_options = frozenset({"input_layout", "input_dtype", "mean", "std"})
    default_recipe = "tflite-fp32"
    int8_recipe = "tflite-int8"
    runtime = "litert"
    host_runner = "edgevit.runtime.tflite:TFLiteRunner"
    device_runner = "benchmark_model"
    fold_quantize = False  # litert-torch reads weights as float constants behind quantize/dequantize pairs

    def export(self, model: torch.nn.Module, example: torch.Tensor, recipe: Recipe) -> ExportedArtifact:
        return export(model, example, recipe)

    def audit_file(self, path: Path) -> dict[str, Any]:
        return audit_tflite(path.read_bytes())

    def quantizer(self, options: dict[str, Any], qat: bool = False) -> Any:
        from ..runtime.quiet import native_stderr_silenced

        with native_stderr_silenced():  # TensorFlow's start-up notices
            from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config

        config = get_symmetric_quantization_config(
            is_per_channel=options["per_channel"], is_dynamic=options["scheme"] == "dynamic", is_qat=qat
        )
        quantizer = PT2EQuantizer().set_global(config)
        # its QAT-only conv+BatchNorm patterns fail to build under this torchao (they export a function, not a
        # module), and deploy forms hold no BatchNorm for them to match
        quantizer.STATIC_QAT_ONLY_OPS = []
        return quantizer

    def adapt_for_dynamic(self, deploy: torch.nn.Module) -> None:
        """LiteRT's converter gives every constant matmul operand int8 weights, and its XNNPACK delegate cannot
        prepare a BATCH_MATMUL with an int8 constant filter: deploy modules that multiply by constants in a batched
        matmul switch to an equal form without one (``without_constant_batch_matmul``: MViTv2's relative positions
        become elementwise products)."""
        for module in deploy.modules():
            if hasattr(module, "without_constant_batch_matmul"):
                module.without_constant_batch_matmul()


register_target(TFLiteTarget())

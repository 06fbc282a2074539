"""TFLite target: litert-torch conversion of the deploy form -> .tflite, audited in the LiteRT interpreter.

An ``input_layout: NHWC`` recipe option wraps the model so the app feeds channels-last images, as Android
camera pipelines produce them; the manifest records the layout.
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

import torch

from ..errors import EdgevitError
from ..recipe import Recipe
from .base import ExportedArtifact

SUFFIX = ".tflite"
_LAYOUTS = ("NCHW", "NHWC")
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
    import litert_torch

    layout = recipe.options.get("input_layout", "NCHW")
    dtype = recipe.options.get("input_dtype", "float32")
    if layout not in _LAYOUTS:
        raise EdgevitError(f"recipe {recipe.name}: input_layout '{layout}'; choose NCHW or NHWC")
    if dtype not in ("float32", "uint8") or (dtype == "uint8" and layout != "NHWC"):
        raise EdgevitError(f"recipe {recipe.name}: input_dtype '{dtype}'; choose float32, or uint8 with NHWC layout")
    sample = example
    if dtype == "uint8":
        model = PixelInput(model.eval(), recipe.options["mean"], recipe.options["std"])
        sample = torch.randint(0, 256, (example.shape[0], *example.shape[2:], example.shape[1]), dtype=torch.uint8)
    elif layout == "NHWC":
        model = litert_torch.to_channel_last_io(model.eval(), args=[0])
        sample = example.permute(0, 2, 3, 1).contiguous()
    data = litert_torch.convert(model.eval(), (sample,)).model_content()
    audit = audit_tflite(data)
    audit["input_layout"] = layout
    audit["input_dtype"] = dtype
    return ExportedArtifact.from_bytes(data, audit)


def audit_tflite(data: bytes) -> dict[str, Any]:
    """Ops by type with the default delegates off, builtin check, max rank, and XNNPACK's partitions."""
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
        partitions, runtime_error = sum(op["op_name"] == "DELEGATE" for op in delegated._get_ops_details()), ""
    except RuntimeError as e:  # e.g. a stablehlo scatter the runtime cannot prepare
        partitions, runtime_error = None, str(e).strip().splitlines()[0][:200]
    non_builtin = sorted(name for name in ops if name.startswith(NON_BUILTIN_PREFIXES))
    return {
        "backend": "litert",
        "ops": dict(sorted(ops.items())),
        "all_builtin": not non_builtin,
        "non_builtin_ops": non_builtin,
        "max_rank": rank,
        "max_rank_op": where,
        "xnnpack_partitions": partitions,
        "runtime_error": runtime_error,
    }

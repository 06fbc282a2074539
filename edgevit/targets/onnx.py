"""ONNX target (the desktop reference): torch.onnx.export of the deploy form, run by onnxruntime."""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..errors import EdgevitError
from .base import ExportedArtifact
from .registry import Target, register_target

if TYPE_CHECKING:
    from ..recipe import Recipe
DEFAULT_OPSET = 18  # Col2Im (the training form's fold) needs 18


def export_bytes(model: torch.nn.Module, example: torch.Tensor, opset: int = DEFAULT_OPSET) -> bytes:
    """Serialise ``model`` (eval mode, static batch-1 shape) to ONNX bytes with the dynamo exporter."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        torch.onnx.export(
            model.eval(),
            (example,),
            str(path),
            dynamo=True,
            opset_version=opset,
            input_names=["image"],
            output_names=["logits"],
            external_data=False,
            verbose=False,
        )
        return path.read_bytes()


def audit_onnx(data: bytes) -> dict[str, Any]:
    """Ops by type and the largest tensor rank, read from the ONNX graph after shape inference."""
    import onnx

    model = onnx.shape_inference.infer_shapes(onnx.load_from_string(data))
    graph = model.graph
    ops = Counter(node.op_type for node in graph.node)
    ranks = [
        (len(v.type.tensor_type.shape.dim), v.name)
        for v in list(graph.value_info) + list(graph.output)
        if v.type.HasField("tensor_type") and v.type.tensor_type.HasField("shape")
    ]
    rank, where = max(ranks, default=(0, ""))
    return {
        "backend": "onnxruntime",
        "opset": next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None),
        "ops": dict(sorted(ops.items())),
        "max_rank": rank,
        "max_rank_op": where,
    }


def _opset(recipe: Recipe) -> int:
    """The recipe's opset, within what torch's exporter writes as asked (below 18 it writes 18 anyway)."""
    from torch.onnx._constants import ONNX_MAX_OPSET

    opset = recipe.options.get("opset", DEFAULT_OPSET)
    if isinstance(opset, bool) or not isinstance(opset, int) or not DEFAULT_OPSET <= opset <= ONNX_MAX_OPSET:
        choose = f"choose an integer from {DEFAULT_OPSET} to {ONNX_MAX_OPSET}"
        raise EdgevitError(f"recipe {recipe.name}: options.opset is {opset!r}; {choose}")
    return opset


class OnnxTarget(Target):
    name = "onnx"
    suffix = ".onnx"
    description = "ONNX (.onnx) for onnxruntime: the desktop reference"
    order = 3
    layout = "tokens-last-layernorm"  # onnxruntime has a LayerNorm op of its own
    recipe_options = frozenset({"opset"})
    default_recipe = "onnx-fp32"
    runtime = "onnxruntime"
    host_runner = "edgevit.runtime.onnx:OnnxRunner"

    def export(self, model: torch.nn.Module, example: torch.Tensor, recipe: Recipe) -> ExportedArtifact:
        """fp32 ONNX; an int8 recipe's QDQ quantization runs on these bytes afterwards (quantize_exported)."""
        data = export_bytes(model, example, _opset(recipe))
        return ExportedArtifact.from_bytes(data, audit_onnx(data))

    def audit_file(self, path: Path) -> dict[str, Any]:
        return audit_onnx(path.read_bytes())

    def validate_quantization(self, recipe_name: str, options: dict[str, Any]) -> None:
        if options["scheme"] != "static":
            raise EdgevitError(f"recipe {recipe_name}: onnx int8 recipes take scheme static (onnxruntime QDQ)")

    def quantize_exported(self, options: dict[str, Any]):
        """onnxruntime's static QDQ on the exported bytes: uint8 activations, int8 weights."""

        def rewrite(artifact: ExportedArtifact, calibration, keep_float: tuple[str, ...]) -> ExportedArtifact:
            from ..quant.onnx_qdq import quantize_qdq

            data = quantize_qdq(artifact.data, calibration, options["per_channel"], keep_float)
            return ExportedArtifact.from_bytes(data, audit_onnx(data))

        return rewrite


register_target(OnnxTarget())

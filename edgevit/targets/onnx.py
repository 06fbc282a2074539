"""ONNX target (desktop reference): torch.onnx.export, run by onnxruntime."""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

SUFFIX = ".onnx"


def export_bytes(model: torch.nn.Module, example: torch.Tensor, opset: int = 18) -> bytes:
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

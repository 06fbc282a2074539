"""ONNX int8 through onnxruntime's own quantizer: static QDQ, per-channel int8 weights, uint8 activations
(onnxruntime's fast path on x86 and ARM CPUs), calibrated on the same photos as the PT2E targets.

The float policy reaches the ONNX graph through the module path and class hierarchy the dynamo exporter
records on every node, so LayerNorm statistics, CSA's softmax and the fold stay float here too.
"""

from __future__ import annotations

import ast
import logging
import tempfile
from pathlib import Path

import numpy as np

from .policy import scope_stays_float


def float_node_names(model, keep_float: tuple[str, ...]) -> list[str]:
    """Names of the nodes the float policy keeps float, read from the exporter's per-node metadata."""
    names = []
    for node in model.graph.node:
        meta = {p.key: p.value for p in node.metadata_props}
        paths = _literal_list(meta.get("pkg.torch.onnx.name_scopes"))
        kinds = _literal_list(meta.get("pkg.torch.onnx.class_hierarchy"))
        if scope_stays_float(paths, kinds, keep_float):
            names.append(node.name)
    return names


def _literal_list(text: str | None) -> list[str]:
    try:
        value = ast.literal_eval(text) if text else []
    except (ValueError, SyntaxError):
        return []
    return [str(v) for v in value] if isinstance(value, list) else []


def quantize_qdq(data: bytes, calibration: np.ndarray, per_channel: bool, keep_float: tuple[str, ...]) -> bytes:
    """Static QDQ int8 of an ONNX model whose single input is called ``image``."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Photos(CalibrationDataReader):
        def __init__(self) -> None:
            self._batches = iter({"image": calibration[i : i + 1]} for i in range(len(calibration)))

        def get_next(self):
            return next(self._batches, None)

    quiet = logging.getLogger()
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # the quantizer logs advice through the root logger
    try:
        with tempfile.TemporaryDirectory() as tmp:
            source, prepared, target = (Path(tmp) / n for n in ("fp32.onnx", "prepared.onnx", "int8.onnx"))
            source.write_bytes(data)
            # onnxruntime's recommended pre-processing, without its graph optimisation: that would rename the
            # nodes and drop the metadata the float policy reads
            quant_pre_process(str(source), str(prepared), skip_optimization=True, skip_symbolic_shape=True)
            excluded = float_node_names(onnx.load(str(prepared)), keep_float)
            quantize_static(
                str(prepared),
                str(target),
                Photos(),
                quant_format=QuantFormat.QDQ,
                per_channel=per_channel,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                nodes_to_exclude=excluded,
            )
            return target.read_bytes()
    finally:
        quiet.setLevel(level)

"""Host runner for .onnx files through onnxruntime's CPU provider."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..errors import EdgevitError
from .base import Runner


class OnnxRunner(Runner):
    name = "onnxruntime"

    def __init__(self, path: Path, threads: int | None = None) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        t0 = time.perf_counter()
        try:
            self._session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own untyped errors for corrupt files
            raise EdgevitError(f"{path} is not a loadable ONNX model ({str(e).splitlines()[0][:120]})") from None
        self.load_seconds = time.perf_counter() - t0
        self._input = self._session.get_inputs()[0].name

    def run(self, x: np.ndarray) -> np.ndarray:
        return self._session.run(None, {self._input: np.ascontiguousarray(x, dtype=np.float32)})[0]

"""Host runner for .onnx files through onnxruntime's CPU provider."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from ..errors import EdgevitError
from .base import Runner


class OnnxRunner(Runner):
    name = "onnxruntime"

    def __init__(self, path: Path, threads: int | None = None) -> None:
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
        first = self._session.get_inputs()[0]
        self._input = first.name
        self.input_shape = tuple(d if isinstance(d, int) else 1 for d in first.shape)  # symbolic dims: 1
        self._feed: dict[str, np.ndarray] = {}
        self._outputs: list[np.ndarray] = []

    def bind(self, x: np.ndarray) -> None:
        self._feed = {self._input: np.ascontiguousarray(x, dtype=np.float32)}

    def invoke(self) -> None:
        self._outputs = self._session.run(None, self._feed)

    def fetch(self) -> np.ndarray:
        return self._outputs[0]

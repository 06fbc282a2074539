"""Host runner for .tflite files through the LiteRT interpreter (XNNPACK delegate, as on Android CPUs)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..errors import EdgevitError
from .base import Runner
from .quiet import native_stderr_silenced

with native_stderr_silenced():
    from ai_edge_litert.interpreter import Interpreter


class TFLiteRunner(Runner):
    name = "litert"

    def __init__(self, path: Path, threads: int | None = None) -> None:
        t0 = time.perf_counter()
        try:
            with native_stderr_silenced():  # "Created TensorFlow Lite XNNPACK delegate" on every load
                self._interpreter = Interpreter(model_path=str(path), num_threads=threads or 2)
                self._interpreter.allocate_tensors()
        except (RuntimeError, ValueError) as e:
            raise EdgevitError(f"{path} is not a loadable .tflite model ({str(e).splitlines()[0][:120]})") from None
        self.load_seconds = time.perf_counter() - t0
        self._input = self._interpreter.get_input_details()[0]
        self._output = self._interpreter.get_output_details()[0]
        shape = tuple(self._input["shape"])
        # a channels-last model takes (1, H, W, C); callers always pass NCHW
        self._nhwc = len(shape) == 4 and shape[-1] in (1, 3) and shape[1] not in (1, 3)
        self._dtype = self._input["dtype"]
        self.raw_pixels = self._dtype == np.uint8
        # a full-integer model takes and gives int8: (value - zero_point) * scale is the float it stands for
        self._in_quant = self._input["quantization"] if self._dtype == np.int8 else None
        self._out_quant = self._output["quantization"] if self._output["dtype"] == np.int8 else None
        self.input_shape = (shape[0], shape[3], shape[1], shape[2]) if self._nhwc else shape

    def bind(self, x: np.ndarray) -> None:
        """``x`` is NCHW: normalised floats, or 0..255 pixel values when ``raw_pixels``."""
        x = x.transpose(0, 2, 3, 1) if self._nhwc else x
        if self.raw_pixels:
            x = np.rint(x).clip(0, 255)
        elif self._in_quant:
            scale, zero_point = self._in_quant
            x = np.rint(x / scale + zero_point).clip(-128, 127)
        x = np.ascontiguousarray(x, dtype=self._dtype)
        self._interpreter.set_tensor(self._input["index"], x)

    def invoke(self) -> None:
        self._interpreter.invoke()

    def fetch(self) -> np.ndarray:
        y = self._interpreter.get_tensor(self._output["index"]).copy()
        if self._out_quant:
            scale, zero_point = self._out_quant
            return (y.astype(np.float32) - zero_point) * np.float32(scale)
        return y

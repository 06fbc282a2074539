"""Host runner for .mlpackage files through Core ML (macOS only; elsewhere ``host_cannot_run`` says why)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..errors import EdgevitError
from .base import Runner


class CoreMLRunner(Runner):
    name = "coreml"

    def __init__(self, path: Path, threads: int | None = None) -> None:  # Core ML picks its own threads
        import coremltools as ct

        t0 = time.perf_counter()
        try:
            self._model = ct.models.MLModel(str(path), compute_units=ct.ComputeUnit.ALL)
        except Exception as e:  # coremltools raises untyped errors for unreadable packages
            raise EdgevitError(f"{path} is not a loadable .mlpackage ({str(e).splitlines()[0][:120]})") from None
        self.load_seconds = time.perf_counter() - t0
        spec = self._model.get_spec()
        first = spec.description.input[0]
        self._input = first.name
        self._image = first.type.WhichOneof("Type") == "imageType"
        self.raw_pixels = self._image  # an image input takes 0..255 pixels; the model normalises them
        if self._image:
            self.input_shape = (1, 3, first.type.imageType.height, first.type.imageType.width)
        else:
            self.input_shape = tuple(first.type.multiArrayType.shape)
        self._output = spec.description.output[0].name
        self._feed: dict = {}
        self._result: dict = {}

    def bind(self, x: np.ndarray) -> None:
        if self._image:
            from PIL import Image

            pixels = np.rint(x[0]).clip(0, 255).astype(np.uint8).transpose(1, 2, 0)
            self._feed = {self._input: Image.fromarray(pixels, "RGB")}
        else:
            self._feed = {self._input: np.ascontiguousarray(x, dtype=np.float32)}

    def invoke(self) -> None:
        self._result = self._model.predict(self._feed)

    def fetch(self) -> np.ndarray:
        out = self._result[self._output]
        return np.asarray(out, dtype=np.float32).reshape(1, -1)

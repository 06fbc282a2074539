"""Host runner for .pte files through ``executorch.runtime`` (XNNPACK kernels as on Android)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from ..errors import EdgevitError
from .base import Runner
from .quiet import native_stderr_silenced

with native_stderr_silenced():  # cpuinfo probes print to fd 2 at import
    from executorch.extension.pybindings.portable_lib import _unsafe_reset_threadpool
    from executorch.runtime import Runtime


HALF = 5  # ExecuTorch's ScalarType code of float16 (an fp16 program takes and returns float16)


class ExecuTorchRunner(Runner):
    name = "executorch"

    def __init__(self, path: Path, threads: int | None = None) -> None:
        if threads:
            with native_stderr_silenced():
                _unsafe_reset_threadpool(threads)  # XNNPACK's pool; default: one thread per core
        t0 = time.perf_counter()
        try:
            with native_stderr_silenced():
                program = Runtime.get().load_program(str(path))
                self._method = program.load_method("forward")
        except (RuntimeError, ValueError) as e:
            raise EdgevitError(f"{path} is not a loadable .pte program ({str(e).splitlines()[0][:120]})") from None
        self.load_seconds = time.perf_counter() - t0
        meta = self._method.metadata.input_tensor_meta(0)
        self.input_shape = tuple(meta.sizes())
        self._input_dtype = torch.float16 if meta.dtype() == HALF else torch.float32
        self._inputs: list[torch.Tensor] = []
        self._outputs: list[torch.Tensor] = []

    def bind(self, x: np.ndarray) -> None:
        # contiguous input: the runtime reads raw memory (strided inputs give wrong results)
        self._inputs = [torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(self._input_dtype)]

    def invoke(self) -> None:
        self._outputs = self._method.execute(self._inputs)

    def fetch(self) -> np.ndarray:
        return self._outputs[0].to(torch.float32, copy=True).numpy()  # the runtime reuses its output buffer

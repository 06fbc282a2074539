"""Host runner for .pte files through ``executorch.runtime`` (XNNPACK kernels as on Android)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from ..errors import EdgevitError
from .base import Runner
from .quiet import native_stderr_silenced


class ExecuTorchRunner(Runner):
    name = "executorch"

    def __init__(self, path: Path) -> None:
        t0 = time.perf_counter()
        try:
            with native_stderr_silenced():
                from executorch.runtime import Runtime

                program = Runtime.get().load_program(str(path))
                self._method = program.load_method("forward")
        except (RuntimeError, ValueError) as e:
            raise EdgevitError(f"{path} is not a loadable .pte program ({str(e).splitlines()[0][:120]})") from None
        self.load_seconds = time.perf_counter() - t0

    def run(self, x: np.ndarray) -> np.ndarray:
        # contiguous input: the runtime reads raw memory (strided inputs give wrong results)
        tensor = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        return self._method.execute([tensor])[0].numpy()

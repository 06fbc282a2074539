"""The runner interface every host runtime implements."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod

import numpy as np


class Runner(ABC):
    """Loads one artifact; ``run`` maps a float32 NCHW batch-1 array to the first output."""

    name: str = ""
    load_seconds: float = 0.0
    # True when the artifact takes 0..255 pixels (normalisation inside); callers then pass pixel values
    raw_pixels: bool = False

    @abstractmethod
    def run(self, x: np.ndarray) -> np.ndarray: ...

    def run_batch(self, xs: np.ndarray) -> np.ndarray:
        """Run each sample on its own (artifacts have a static batch of 1) and stack the outputs."""
        return np.concatenate([self.run(x[None]) for x in xs])

    def time(self, x: np.ndarray, warmup: int, runs: int) -> list[float]:
        """Milliseconds of ``runs`` timed inferences after ``warmup`` discarded ones."""
        for _ in range(warmup):
            self.run(x)
        samples = []
        for _ in range(runs):
            t0 = time.perf_counter()
            self.run(x)
            samples.append((time.perf_counter() - t0) * 1e3)
        return samples

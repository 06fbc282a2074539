"""The runner interface every host runtime implements."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod

import numpy as np

MAX_RUNS = 100_000  # a bound on --min-seconds for sub-millisecond models


class Runner(ABC):
    """Loads one artifact; ``run`` maps a float32 NCHW batch-1 array to the first output.

    ``run`` is ``bind`` (hand the input to the runtime), ``invoke`` (the inference) and ``fetch`` (copy the
    output out); benchmarks time ``invoke`` alone.
    """

    name: str = ""
    load_seconds: float = 0.0
    # True when the artifact takes 0..255 pixels (normalisation inside); callers then pass pixel values
    raw_pixels: bool = False
    # the artifact's input as callers pass it: NCHW, batch 1
    input_shape: tuple[int, ...] = ()

    @abstractmethod
    def bind(self, x: np.ndarray) -> None: ...

    @abstractmethod
    def invoke(self) -> None: ...

    @abstractmethod
    def fetch(self) -> np.ndarray: ...

    def run(self, x: np.ndarray) -> np.ndarray:
        self.bind(x)
        self.invoke()
        return self.fetch()

    def run_batch(self, xs: np.ndarray) -> np.ndarray:
        """Run each sample on its own (artifacts have a static batch of 1) and stack the outputs."""
        return np.concatenate([self.run(x[None]) for x in xs])

    def time(self, x: np.ndarray, warmup: int, runs: int, min_seconds: float = 0.0) -> list[float]:
        """Milliseconds of at least ``runs`` timed inferences (and at least ``min_seconds`` of them) after
        ``warmup`` discarded ones; only ``invoke`` is inside the clock."""
        self.bind(x)
        for _ in range(warmup):
            self.invoke()
        samples: list[float] = []
        start = time.perf_counter()
        while len(samples) < runs or (time.perf_counter() - start < min_seconds and len(samples) < MAX_RUNS):
            t0 = time.perf_counter()
            self.invoke()
            samples.append((time.perf_counter() - t0) * 1e3)
        return samples

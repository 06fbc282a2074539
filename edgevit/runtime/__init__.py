"""Host runners with one interface: load an artifact, run a batch-1 input, time it."""

from __future__ import annotations

from pathlib import Path

from ..errors import EdgevitError
from .base import Runner


def open_runner(path: str | Path, threads: int | None = None) -> Runner:
    """The runner that fits the artifact's suffix."""
    path = Path(path)
    if not path.exists():
        raise EdgevitError(f"artifact not found: {path}")
    if path.suffix == ".pte":
        from .executorch import ExecuTorchRunner

        return ExecuTorchRunner(path)
    if path.suffix == ".onnx":
        from .onnx import OnnxRunner

        return OnnxRunner(path, threads=threads)
    raise EdgevitError(f"no host runner for '{path.suffix}' files; supported: .pte, .onnx")


__all__ = ["Runner", "open_runner"]

"""Host runners with one interface: load an artifact, run a batch-1 input, time it."""

from __future__ import annotations

import sys
from pathlib import Path

from ..errors import EdgevitError
from .base import Runner


def host_cannot_run(path: str | Path) -> str | None:
    """Why this machine cannot run the artifact, or None when it can."""
    if Path(path).suffix == ".mlpackage" and sys.platform != "darwin":
        return "Core ML prediction needs macOS; numerics skipped on this host"
    return None


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
    if path.suffix == ".tflite":
        from .tflite import TFLiteRunner

        return TFLiteRunner(path, threads=threads)
    reason = host_cannot_run(path)
    if reason:
        raise EdgevitError(reason)
    raise EdgevitError(f"no host runner for '{path.suffix}' files; supported: .pte, .tflite, .onnx")


__all__ = ["Runner", "host_cannot_run", "open_runner"]

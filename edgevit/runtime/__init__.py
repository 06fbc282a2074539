"""Host runners with one interface: load an artifact, run a batch-1 input, time it."""

from __future__ import annotations

import sys
from pathlib import Path

from ..errors import EdgevitError
from .base import Runner


def host_cannot_run(path: str | Path) -> str | None:
    """Why this machine cannot run the artifact, or None when it can."""
    path = Path(path)
    if sys.platform == "darwin":
        return None
    if path.suffix == ".mlpackage":
        return "Core ML prediction needs macOS; numerics skipped on this host"
    if path.suffix == ".pte" and "CoreMLBackend" in pte_backends(path):
        return "the .pte delegates to Core ML, which runs on Apple devices only; numerics skipped on this host"
    return None


def pte_backends(path: Path) -> set[str]:
    """Backend ids of the delegates inside a .pte (empty when the file cannot be parsed)."""
    from executorch.exir._serialize._program import deserialize_pte_binary

    try:
        return {d.id for d in deserialize_pte_binary(path.read_bytes()).program.execution_plan[0].delegates}
    except Exception:  # a corrupt file: the runner's own load reports it
        return set()


def runner_class(path: str | Path) -> type[Runner]:
    """The runner class that fits the artifact's suffix, with its runtime imported (so loads time the load)."""
    path = Path(path)
    if not path.exists():
        raise EdgevitError(f"artifact not found: {path}")
    if path.suffix == ".pte":
        from .executorch import ExecuTorchRunner

        return ExecuTorchRunner
    if path.suffix == ".onnx":
        from .onnx import OnnxRunner

        return OnnxRunner
    if path.suffix == ".tflite":
        from .tflite import TFLiteRunner

        return TFLiteRunner
    reason = host_cannot_run(path)
    if reason:
        raise EdgevitError(reason)
    if path.suffix == ".mlpackage":
        from .coreml import CoreMLRunner

        return CoreMLRunner
    raise EdgevitError(f"no host runner for '{path.suffix}' files; supported: .pte, .tflite, .onnx, .mlpackage (macOS)")


def open_runner(path: str | Path, threads: int | None = None) -> Runner:
    """The runner that fits the artifact's suffix, loaded."""
    return runner_class(path)(Path(path), threads=threads)


__all__ = ["Runner", "host_cannot_run", "open_runner", "runner_class"]

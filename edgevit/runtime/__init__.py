"""Host runners with one interface: load an artifact, run a batch-1 input, time it."""

from __future__ import annotations

from pathlib import Path

from ..errors import EdgevitError
from ..targets.registry import target_for_path
from .base import Runner


def host_cannot_run(path: str | Path) -> str | None:
    """Why this machine cannot run the artifact, or None when it can."""
    return target_for_path(path).cannot_run_here(Path(path))


def runner_class(path: str | Path) -> type[Runner]:
    """The runner class that fits the artifact's suffix, with its runtime imported (so loads time the load)."""
    path = Path(path)
    if not path.exists():
        raise EdgevitError(f"artifact not found: {path}")
    target = target_for_path(path)
    reason = target.cannot_run_here(path)
    if reason:
        raise EdgevitError(reason)
    return target.runner_class()


def open_runner(path: str | Path, threads: int | None = None) -> Runner:
    """The runner that fits the artifact's suffix, loaded."""
    return runner_class(path)(Path(path), threads=threads)


__all__ = ["Runner", "host_cannot_run", "open_runner", "runner_class"]

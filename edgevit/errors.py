"""The one exception type for user mistakes: the CLI prints its message on one line and exits non-zero."""

from __future__ import annotations


class EdgevitError(Exception):
    """A problem the user can fix; the message names the problem and the fix."""

    exit_code: int = 2


class GateError(EdgevitError):
    """An artifact missed a recipe threshold (numerics or audit)."""

    exit_code = 3


class RunFailure(EdgevitError):
    """A benchmark started but some runs failed (device lost, runner crash, timeout); results so far are kept."""

    exit_code = 1


class Interrupted(EdgevitError):
    """Ctrl-C during long work that keeps its last good state (a QAT checkpoint)."""

    exit_code = 130

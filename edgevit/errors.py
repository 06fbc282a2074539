"""What the CLI turns into one line and an exit code: user mistakes (EdgevitError and its kinds), Ctrl-C, SIGTERM."""

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


class Stopped(BaseException):
    """Ctrl-C or SIGTERM (``kill``, a job scheduler), raised where the program is so that it unwinds: partial
    files are removed and QAT keeps its last checkpoint. Not a KeyboardInterrupt, which typer would turn
    into a return value that a caller cannot tell from success."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum
        self.exit_code = 128 + signum


def raise_stopped(signum, frame) -> None:
    raise Stopped(signum)

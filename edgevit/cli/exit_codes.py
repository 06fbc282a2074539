"""How a command run ends: one line on stderr and an exit code, the same for every command.

User errors (EdgevitError and its kinds) carry their own code; Ctrl-C and SIGTERM arrive as Stopped
(128 + signal); usage errors keep click's code and message; a command's ``typer.Exit(n)`` is n.
EDGEVIT_DEBUG=1 lets a user error through with its traceback.
"""

from __future__ import annotations

import os
import signal

import typer

from ..errors import EdgevitError, Stopped
from .console import err


def run_app(app: typer.Typer, argv: list[str] | None) -> int:
    """Run ``app`` on ``argv`` (default: the process's arguments) and return its exit code."""
    try:
        # outside standalone mode typer returns, not raises, the code of a typer.Exit
        status = app(args=argv, standalone_mode=False)
    except EdgevitError as e:
        if os.environ.get("EDGEVIT_DEBUG") == "1":
            raise
        err.print(f"[red]error:[/] {e}", highlight=False, soft_wrap=True)
        return e.exit_code
    except (typer.Exit, SystemExit) as e:
        return _system_exit_code(getattr(e, "exit_code", getattr(e, "code", 0)))
    except Stopped as e:
        err.print(f"{'terminated' if e.signum == signal.SIGTERM else 'interrupted'}; no half-written file was left")
        return e.exit_code
    except Exception as e:  # usage errors of typer's click arrive here in standalone_mode=False
        if hasattr(e, "show") and hasattr(e, "exit_code"):
            e.show()
            return e.exit_code
        if type(e).__name__ == "Abort":
            return 1
        raise
    return status if isinstance(status, int) else 0


def _system_exit_code(code: object) -> int:
    """The status ``sys.exit(code)`` would end the process with: None is 0, a message is printed and is 1."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    err.print(str(code), highlight=False, markup=False, soft_wrap=True)
    return 1

"""Silence native libraries that print diagnostics straight to file descriptor 2."""

from __future__ import annotations

import contextlib
import os
import sys


@contextlib.contextmanager
def native_stderr_silenced():
    """Point fd 2 at /dev/null for the block (ExecuTorch's cpuinfo probe logs there on every load)."""
    if os.environ.get("EDGEVIT_DEBUG") == "1":
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        sys.stderr.flush()  # Python-level writes made inside the block go to /dev/null too
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)

"""Atomic writes: a reader never sees a half-written artifact or manifest."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from .errors import EdgevitError


def ensure_writable_dir(folder: Path) -> None:
    """Create ``folder`` if needed and check that files can be written in it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise EdgevitError(
            f"cannot create output directory {folder} ({e.strerror}); choose another --output-dir"
        ) from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise EdgevitError(f"output directory {folder} is not writable; choose another --output-dir")


def refuse_overwrite(paths: list[Path], force: bool) -> None:
    existing = [p for p in paths if p.exists()]
    if existing and not force:
        raise EdgevitError(f"{existing[0]} already exists; pass --force to overwrite it")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: object) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())

"""Atomic writes: a reader never sees a half-written artifact or manifest."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from .errors import EdgevitError


def check_output_file(path: Path, flag: str) -> None:
    """Fail early, creating nothing, if the file the option ``flag`` names cannot be written."""
    if path.is_dir():
        raise EdgevitError(f"{flag} {path} is a directory; pass a file path")
    check_writable_dir(path.parent if str(path.parent) else Path("."), flag)


def check_writable_dir(folder: Path, flag: str = "--output-dir") -> None:
    """Fail early, creating nothing, if ``folder`` cannot be created or written."""
    existing = folder
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        raise EdgevitError(f"cannot create output directory {folder} ({existing} is a file); choose another {flag}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise EdgevitError(f"output directory {existing} is not writable; choose another {flag}")


def missing_folders(folder: Path) -> list[Path]:
    """``folder`` and its ancestors that do not exist yet, deepest first: what ``make_dir`` would create."""
    missing = []
    while not folder.exists() and folder.parent != folder:
        missing.append(folder)
        folder = folder.parent
    return missing


def remove_empty(folders: list[Path]) -> None:
    """Remove each folder that exists and is empty, in order (deepest first)."""
    for folder in folders:
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


def make_dir(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise EdgevitError(
            f"cannot create output directory {folder} ({e.strerror}); choose another --output-dir"
        ) from None


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


def path_sha256(path: Path) -> str:
    """sha256 of a file, or of a directory (e.g. .mlpackage) as its sorted relative paths and contents."""
    digest = hashlib.sha256()
    if path.is_file():
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        return digest.hexdigest()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(path)).encode() + b"\0")
        digest.update(file.read_bytes())
    return digest.hexdigest()


def path_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def remove_path(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def move_into_place(tmp: Path, final: Path) -> None:
    """Rename ``tmp`` to ``final``; a directory replaces an old one via a backup so neither is ever half there."""
    if tmp.is_dir() and final.exists():
        backup = final.with_name(f".{final.name}.old")
        remove_path(backup)
        final.rename(backup)
        tmp.rename(final)
        remove_path(backup)
    else:
        os.replace(tmp, final)


def read_yaml(path: Path, kind: str, fix: str) -> object:
    """Parse a YAML file; errors say which ``kind`` of file, where it broke, and ``fix``."""
    import yaml

    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise EdgevitError(f"{kind} {path} is not valid YAML{where}; {fix}") from None
    except OSError as e:
        raise EdgevitError(f"cannot read {kind} {path} ({e.strerror})") from None

"""What every target's ``export`` returns: a way to write the artifact, and the audit of what was built."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..fileio import atomic_write_bytes


@dataclass
class ExportedArtifact:
    audit: dict[str, Any]
    write: Callable[[Path], None]
    data: bytes | None = None  # the artifact itself, for single-file formats

    @classmethod
    def from_bytes(cls, data: bytes, audit: dict[str, Any]) -> ExportedArtifact:
        return cls(audit, lambda path: atomic_write_bytes(path, data), data)

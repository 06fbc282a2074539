"""Registries without central lists: a package's modules register what they define at their foot, and the
registry imports them all the first time it is asked."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable


def module_importer(package: str) -> Callable[[], None]:
    """A function that imports every public module of ``package`` on its first call and does nothing after.

    Modules whose name starts with an underscore are helpers (some with heavy imports) and are left alone."""
    done = False

    def import_all() -> None:
        nonlocal done
        if done:
            return
        done = True
        for info in pkgutil.iter_modules(importlib.import_module(package).__path__):
            if not info.name.startswith("_"):
                importlib.import_module(f"{package}.{info.name}")

    return import_all

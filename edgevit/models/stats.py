"""Parameters and multiply-adds of a registered model, as `edgevit models` and the results tables show them."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..fileio import atomic_write_json
from .registry import Size, create_model, get_entry, size_hw


def model_stats(model_name: str, size: Size | None = None) -> dict[str, Any]:
    """Parameters and MACs (matmul/conv multiply-adds, attention included) at the default input size."""
    from torch.utils.flop_counter import FlopCounterMode

    entry = get_entry(model_name)
    size = size or entry.input_spec.size
    model = create_model(model_name, input_size=size).eval()
    params = sum(p.numel() for p in model.parameters())
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(entry.input_spec.shape(size)))
    return {
        "name": model_name,
        "params_m": round(params / 1e6, 3),
        "gmacs": round(counter.get_total_flops() / 2e9, 3),
        "input_size": size if isinstance(size, int) else list(size_hw(size)),
        "description": entry.description,
    }


def cached_model_stats(names: list[str], on_measure: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """:func:`model_stats` of each model at its default size, kept in the user's cache between runs: building
    and counting every model takes seconds, and the figures change only with the model code or torch.

    ``on_measure`` is called with each model's name before it is measured (not for cached ones)."""
    path = stats_cache_path()
    key = _code_fingerprint()
    cache = _read_cache(path, key)
    missing = [name for name in names if name not in cache]
    for name in missing:
        if on_measure:
            on_measure(name)
        cache[name] = model_stats(name)
    if missing:
        try:  # a cache that cannot be written costs only time on the next run
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(path, {"fingerprint": key, "models": cache})
        except OSError:
            pass
    return [{**cache[name], "description": get_entry(name).description} for name in names]


def stats_cache_path() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "edgevit" / "model-stats.json"


def _read_cache(path: Path, key: str) -> dict[str, dict[str, Any]]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data.get("models", {}) if isinstance(data, dict) and data.get("fingerprint") == key else {}


def _code_fingerprint() -> str:
    """What the figures depend on: the model definitions (this package's sources) and torch's version."""
    digest = hashlib.sha256(torch.__version__.encode())
    for source in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(source.name.encode() + b"\0" + source.read_bytes())
    return digest.hexdigest()

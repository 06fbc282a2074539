"""Parameters and multiply-adds of a registered model, as `edgevit models` and the results tables show them."""

from __future__ import annotations

from typing import Any

import torch

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

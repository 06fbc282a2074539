"""Model zoo in training form: faithful to each paper, official state_dict keys."""

from __future__ import annotations

from functools import partial

from .lvt import LVT, LVT_CONFIGS, LVTConfig, checkpoint_filter_fn
from .registry import (
    InputSpec,
    ModelEntry,
    check_input_size,
    create_model,
    get_entry,
    list_models,
    register_model,
)


def _build_lvt(name: str, num_classes: int | None = None, features_only: bool = False, **kwargs) -> LVT:
    cfg = LVT_CONFIGS[name]
    if num_classes is not None:
        from dataclasses import replace

        cfg = replace(cfg, num_classes=num_classes)
    return LVT(cfg, features_only=features_only, **kwargs)


register_model(
    ModelEntry(
        "lvt",
        partial(_build_lvt, "lvt"),
        description="LVT, LayerNorm + global average pool + linear head",
        filter_fn=checkpoint_filter_fn,
    )
)
register_model(
    ModelEntry(
        "lvt_cls",
        partial(_build_lvt, "lvt_cls"),
        description="LVT with class-attention post layers and token-labelling aux head (74.8% IN-1k)",
        filter_fn=checkpoint_filter_fn,
    )
)

__all__ = [
    "LVT",
    "LVTConfig",
    "InputSpec",
    "ModelEntry",
    "check_input_size",
    "create_model",
    "get_entry",
    "list_models",
    "register_model",
]

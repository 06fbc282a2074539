"""Model zoo in training form: faithful to each paper, official state_dict keys."""

from __future__ import annotations

from functools import partial

from .lvt import LVT, LVT_CONFIGS, LVTConfig, checkpoint_filter_fn
from .mmvit import MMVIT_CONFIGS, MMViT, MMViTConfig, mmvit_filter_fn
from .registry import (
    InputSpec,
    ModelEntry,
    Size,
    check_input_size,
    create_model,
    get_entry,
    list_models,
    parse_size,
    register_model,
    size_hw,
    size_text,
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


def _build_mmvit(
    name: str, num_classes: int | None = None, features_only: bool = False, img_size: tuple[int, int] | None = None
) -> MMViT:
    from dataclasses import replace

    cfg = MMVIT_CONFIGS[name]
    cfg = replace(cfg, img_size=img_size or cfg.img_size)
    if num_classes is not None:
        cfg = replace(cfg, num_classes=num_classes)
    return MMViT(cfg, features_only=features_only)


for _name, _dims in (("mmvit_xs", "16-128"), ("mmvit_s", "26-208")):
    register_model(
        ModelEntry(
            _name,
            partial(_build_mmvit, _name),
            description=f"MMViT, two overlapping conv views, cross-view attention per stage, dims {_dims}",
            filter_fn=mmvit_filter_fn,
            sized=True,
        )
    )

# MMViT was evaluated on audio as well: the same code on 1-channel log-mel spectrograms, 128 mel bins x 512
# frames (about 5 s at a 10 ms hop), as AST and MMViT's audio experiments feed them
AUDIO_SPEC = InputSpec(
    size=(128, 512),
    channels=1,
    mean=(0.5,),
    std=(0.25,),
    crop_pct=1.0,
    channel_order="mono",
    kind="spectrogram",
)
register_model(
    ModelEntry(
        "mmvit_xs_audio",
        partial(_build_mmvit, "mmvit_xs_audio"),
        input_spec=AUDIO_SPEC,
        description="mmvit_xs on 1-channel 128x512 log-mel spectrograms (527 AudioSet classes)",
        filter_fn=mmvit_filter_fn,
        sized=True,
    )
)

__all__ = [
    "LVT",
    "LVTConfig",
    "MMViT",
    "MMViTConfig",
    "InputSpec",
    "ModelEntry",
    "check_input_size",
    "create_model",
    "get_entry",
    "list_models",
    "register_model",
    "Size",
    "parse_size",
    "size_hw",
    "size_text",
]

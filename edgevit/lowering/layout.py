"""The deploy layouts a target can ask for (``Target.layout``) and what each one means for a deploy form."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import EdgevitError


@dataclass(frozen=True)
class Layout:
    """How a deploy form lays out its tensors and which normalisation ops it may use.

    ``channels_first``: (B, C, H, W) / (B, C, 1, N) from image to logits, Linear layers as 1x1 convs (Core ML
    and the Neural Engine, where every transpose is a memory copy); otherwise tokens last, (B, H, W, C) /
    (B, N, C), the layout XNNPACK's fully connected ops read without copies.
    ``native_norm``: LayerNorm as the runtime's own op; otherwise as Linear reductions, which XNNPACK delegates.
    """

    name: str
    channels_first: bool
    native_norm: bool


LAYOUTS: dict[str, Layout] = {
    layout.name: layout
    for layout in (
        Layout("tokens-last", channels_first=False, native_norm=False),
        Layout("tokens-last-layernorm", channels_first=False, native_norm=True),
        Layout("channels-first", channels_first=True, native_norm=True),
    )
}


def get_layout(name: str) -> Layout:
    try:
        return LAYOUTS[name]
    except KeyError:
        raise EdgevitError(f"unknown deploy layout '{name}'; choose one of: {', '.join(LAYOUTS)}") from None

"""``lower(model, target)``: the deploy form of a training-form model for one target.

The deploy form computes the same function (fp32, max abs diff <= 1e-4 on real photos) with only ops the
target delegates. Each family's deploy module registers its builder at its foot with
:func:`register_lowering`; the target names the layout it wants (``Target.layout``).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ..discovery import module_importer
from ..errors import EdgevitError
from .layout import LAYOUTS, Layout, get_layout

Builder = Callable[[nn.Module, Layout], nn.Module]
_LOWERINGS: dict[type, Builder] = {}
_discover = module_importer(__name__)  # each family's deploy module registers its builder


def register_lowering(model_class: type, build: Builder) -> None:
    """Make ``lower`` build ``build(model, layout)`` for models of ``model_class`` (called by deploy modules)."""
    _LOWERINGS[model_class] = build


def layout_for(target: str) -> Layout:
    """The layout a target's deploy form takes; a layout's own name is accepted too."""
    if target in LAYOUTS:
        return LAYOUTS[target]
    from ..targets.registry import get_target

    return get_layout(get_target(target).layout)


def lower(model: nn.Module, target: str = "executorch") -> nn.Module:
    """Return a new eval-mode module equal to ``model`` in deploy form for ``target``; ``model`` is untouched."""
    layout = layout_for(target)
    _discover()
    build = _LOWERINGS.get(type(model))
    if build is None:
        families = ", ".join(sorted(t.__name__ for t in _LOWERINGS))
        raise EdgevitError(f"no lowering for {type(model).__name__}; lowered families: {families}")
    return build(model, layout).eval()


__all__ = ["Layout", "layout_for", "lower", "register_lowering"]

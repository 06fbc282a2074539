"""``lower(model, target)``: the deploy form of a training-form model for one target.

The deploy form computes the same function (fp32, max abs diff <= 1e-4 on real photos) with only ops the
target delegates. Rewrites are looked up by model class, so each family registers its own.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ..errors import EdgevitError
from ..models.lvt import LVT
from ..models.mmvit import MMViT
from .lvt import DeployLVT
from .lvt_channels_first import ChannelsFirstLVT
from .mmvit import DeployMMViT
from .mmvit_channels_first import ChannelsFirstMMViT
from .passes import native_layer_norm

# the passes that adapt the shared deploy form to each target, in order
TARGET_PASSES: dict[str, list[Callable[[nn.Module], nn.Module]]] = {
    "executorch": [],  # XNNPACK takes LayerNorm only as Linear reductions
    "tflite": [],
    "coreml": [],  # its own channels-first form
    "onnx": [native_layer_norm],
}
TARGETS = tuple(TARGET_PASSES)

# model class -> builder of its deploy form; targets share the form until one needs its own
_LOWERINGS: dict[type, Callable[[nn.Module], nn.Module]] = {
    LVT: DeployLVT.from_module,
    MMViT: DeployMMViT.from_module,
}
# (model class, target) -> a form of its own for that target
_TARGET_LOWERINGS: dict[tuple[type, str], Callable[[nn.Module], nn.Module]] = {
    (LVT, "coreml"): ChannelsFirstLVT.from_module,  # NCHW throughout: no transposes on the Neural Engine
    (MMViT, "coreml"): ChannelsFirstMMViT.from_module,
}


def lower(model: nn.Module, target: str = "executorch") -> nn.Module:
    """Return a new eval-mode module equal to ``model`` in deploy form for ``target``; ``model`` is untouched."""
    if target not in TARGETS:
        raise EdgevitError(f"unknown target '{target}'; choose one of: {', '.join(TARGETS)}")
    build = _TARGET_LOWERINGS.get((type(model), target)) or _LOWERINGS.get(type(model))
    if build is None:
        raise EdgevitError(
            f"no lowering for {type(model).__name__}; lowered families: {', '.join(t.__name__ for t in _LOWERINGS)}"
        )
    deploy = build(model)
    for adapt in TARGET_PASSES[target]:
        deploy = adapt(deploy)
    return deploy.eval()


__all__ = ["lower", "TARGETS"]

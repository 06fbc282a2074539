"""Module passes that adapt one deploy form to a target; each returns the module it was given, rewritten."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from .ops import LinearLayerNorm


def replace_modules(root: nn.Module, kind: type, build: Callable[[nn.Module], nn.Module]) -> nn.Module:
    """Replace every submodule of type ``kind`` by ``build(submodule)``."""
    for name, child in list(root.named_children()):
        if isinstance(child, kind):
            setattr(root, name, build(child))
        else:
            replace_modules(child, kind, build)
    return root


def native_layer_norm(model: nn.Module) -> nn.Module:
    """Put native LayerNorm back where a target delegates it (Core ML fuses it; ONNX has an op for it)."""
    return replace_modules(model, LinearLayerNorm, LinearLayerNorm.to_layer_norm)

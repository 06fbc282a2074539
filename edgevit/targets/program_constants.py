"""The constant tensors an exported program's placeholders stand for: read one, or put a new one in its place."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.export.graph_signature import InputKind

__all__ = ["constant", "replace_constant"]


def _spec(program: Any, node: Any) -> Any:
    if not isinstance(node, torch.fx.Node) or node.op != "placeholder":
        return None
    return next((s for s in program.graph_signature.input_specs if s.arg.name == node.name), None)


def _store(program: Any, spec: Any) -> dict | None:
    """The dict holding a placeholder's tensor: parameters and persistent buffers in the state dict, the rest in
    the program's constants."""
    if spec is None:
        return None
    if spec.kind == InputKind.PARAMETER or (spec.kind == InputKind.BUFFER and spec.persistent):
        return program.state_dict
    if spec.kind in (InputKind.BUFFER, InputKind.CONSTANT_TENSOR):
        return program.constants
    return None


def constant(program: Any, node: Any) -> torch.Tensor | None:
    spec = _spec(program, node)
    store = _store(program, spec)
    value = store.get(spec.target) if store is not None else None
    return value if isinstance(value, torch.Tensor) and value.dtype.is_floating_point else None


def replace_constant(program: Any, node: torch.fx.Node, value: torch.Tensor) -> None:
    """A new tensor under the placeholder's name: the module the program was exported from keeps its own."""
    spec = _spec(program, node)
    store = _store(program, spec)
    store[spec.target] = nn.Parameter(value, requires_grad=False) if spec.kind == InputKind.PARAMETER else value

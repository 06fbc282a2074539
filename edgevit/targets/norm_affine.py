"""LayerNorm's affine folded into the layers it feeds, on an exported program.

A deploy-form LayerNorm ends ``normalized * gamma + beta`` (:class:`~edgevit.lowering.ops.LinearLayerNorm`). Where
every use of that result is a Linear, or a convolution without padding behind the permute to channels first
(every tap then reads a normalized value, never a zero pad), the two elementwise ops fold into those layers'
weights: ``W (n * gamma + beta) + b = (W diag(gamma)) n + (b + W beta)``, a convolution's taps summed for the
bias. Each such norm is two XNNPACK ops (and two graph nodes in every later pass) fewer; the function is the same
up to float rounding (``tests/test_norm_affine.py``).
"""

from __future__ import annotations

from typing import Any

import torch

from .program_constants import constant, replace_constant

A = torch.ops.aten
_TO_CHANNELS_FIRST = [0, 3, 1, 2]


def fold_norm_affines(program: Any) -> int:
    """Fold every foldable norm affine of ``program`` (in place; its weights are replaced, never written into);
    returns how many were folded."""
    graph = program.graph
    folded = 0
    for node in list(graph.nodes):
        affine = _affine(program, node)
        if affine is None:
            continue
        normalized, gamma, beta = affine
        routes = _routes_to_layers(program, node, gamma.shape[0])
        if routes is None:
            continue
        for entry, layer in routes:
            _fold_into(program, layer, gamma, beta)
            entry.replace_input_with(node, normalized)
        folded += 1
    if folded:
        graph.eliminate_dead_code()
        program.graph_module.recompile()
    return folded


def _affine(program: Any, add: torch.fx.Node) -> tuple[torch.fx.Node, torch.Tensor, torch.Tensor] | None:
    """``(normalized, gamma, beta)`` where ``add`` is ``normalized * gamma + beta`` over the last axis, gamma and
    beta constant vectors."""
    if add.op != "call_function" or add.target != A.add.Tensor or add.kwargs or len(add.args) != 2:
        return None
    mul, bias = add.args
    if not isinstance(mul, torch.fx.Node) or mul.target != A.mul.Tensor or mul.kwargs or len(mul.users) != 1:
        return None
    normalized, weight = mul.args
    if not isinstance(normalized, torch.fx.Node):
        return None
    gamma, beta = constant(program, weight), constant(program, bias)
    value = normalized.meta.get("val")
    if gamma is None or beta is None or value is None or gamma.dim() != 1 or gamma.shape != beta.shape:
        return None
    if value.shape[-1] != gamma.shape[0] or add.meta["val"].shape != value.shape:
        return None
    return normalized, gamma, beta


def _routes_to_layers(program: Any, add: torch.fx.Node, channels: int) -> list | None:
    """For each use of ``add``: the node reading it (a Linear, or a reshape or permute on the way to a layer) and
    the layer; None unless every use reaches a layer that can take the affine. Channels last (``add`` itself, or a
    reshape keeping them last) feed Linears; the permute to channels first feeds convolutions."""
    routes = []
    for user in add.users:
        if _takes_affine(program, user, add, channels, A.linear.default):
            routes.append((user, user))
            continue
        layer_op = _layer_behind(user, add, channels)
        layers = list(user.users)
        if layer_op is None or not layers:
            return None
        if not all(_takes_affine(program, layer, user, channels, layer_op) for layer in layers):
            return None
        routes.extend((user, layer) for layer in layers)
    return routes


def _layer_behind(user: torch.fx.Node, add: torch.fx.Node, channels: int) -> Any:
    """The layer op that may read ``add`` through ``user``: a Linear behind a reshape that keeps the channel axis
    last, a convolution behind the permute of a (B, H, W, C) map to channels first; None for any other use."""
    if user.op != "call_function" or user.args[0] is not add:
        return None
    if user.target == A.view.default and list(user.args[1])[-1] == channels:
        return A.linear.default
    if user.target == A.permute.default and list(user.args[1]) == _TO_CHANNELS_FIRST:
        return A.convolution.default
    return None


def _takes_affine(program: Any, layer: torch.fx.Node, source: torch.fx.Node, channels: int, layer_op: Any) -> bool:
    """A ``layer_op`` (a Linear, or a convolution without padding or groups) reading ``source`` as its input,
    with constant weights and bias of its own (used by no other node)."""
    if layer.op != "call_function" or layer.target != layer_op or layer.args[0] is not source or layer.kwargs:
        return False
    if layer_op == A.linear.default:
        if len(layer.args) != 3:
            return False
        weight_node, bias_node = layer.args[1], layer.args[2]
    else:
        _, weight_node, bias_node, _, padding, _, transposed, _, groups = layer.args
        if transposed or groups != 1 or any(padding):
            return False
    own = all(isinstance(n, torch.fx.Node) and len(n.users) == 1 for n in (weight_node, bias_node))
    if not own:
        return False
    weight, bias = constant(program, weight_node), constant(program, bias_node)
    return weight is not None and bias is not None and weight.shape[1] == channels


def _fold_into(program: Any, layer: torch.fx.Node, gamma: torch.Tensor, beta: torch.Tensor) -> None:
    weight_node, bias_node = layer.args[1], layer.args[2]
    weight, bias = constant(program, weight_node), constant(program, bias_node)
    w = weight.detach().double()
    per_input = (1, -1) + (1,) * (w.dim() - 2)  # gamma scales each input channel of every tap
    new_weight = w * gamma.double().reshape(per_input)
    taps_summed = w.flatten(2).sum(2) if w.dim() > 2 else w
    new_bias = bias.detach().double() + taps_summed @ beta.double()
    replace_constant(program, weight_node, new_weight.to(weight.dtype))
    replace_constant(program, bias_node, new_bias.to(bias.dtype))

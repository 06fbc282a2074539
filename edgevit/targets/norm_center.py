"""LayerNorm's mean dropped where its input can be made zero-mean for free, on an exported program.

LayerNorm(x) reads x only through ``x - mean(x)`` over the last axis, so a per-row shift of its input changes
nothing. A deploy-form norm (:class:`~edgevit.lowering.ops.LinearLayerNorm`) pays for that subtraction with a
one-output Linear (padded to the GEMM kernel's full tile width) and a pass over the map. Two exact rewrites
remove both where the input can be centred by changing weights alone:

- **A norm behind a layer**: where a Linear or a convolution feeds the norm (a patch embedding, a pooled key
  projection), subtracting each input's mean over the output channels from the layer's weights, and the mean
  bias from its bias, makes its output zero-mean: ``(W - 1 mean_o(W)) x + b - mean(b)``.
- **A residual stream read only by norms**: in a pre-norm transformer whose stream ends in a norm, every block
  adds ``f(norm(x))`` to the stream and only norms read it. Such a stream can be carried centred: its stem and
  each block's last layer are centred as above, and where a residual cannot be (a max pool), that norm keeps the
  subtraction and the stream continues from its centred value; every other norm reads a zero-mean input.

A node may change by a per-row shift only where every use is blind to it (:func:`_shift_invariant`): a norm's
own mean and subtraction, or a residual add, reshape, slice, concatenation or pad along the rows whose result is
blind in turn. A stream that feeds anything else (a strided convolution into the next stage, a max pool) keeps
its norms as they are. The function is the same up to float rounding (``tests/test_norm_center.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .program_constants import constant, replace_constant

A = torch.ops.aten
_TO_CHANNELS_LAST = [0, 2, 3, 1]
_CONVS = (A.convolution.default, A.conv2d.default)  # the decomposed program's, the exported module's
_LAYERS = (A.linear.default, *_CONVS)
# ops that keep each row of their input a row of their output (channels last, row order aside)
_ROW_OPS = {
    A.view.default,
    A.reshape.default,
    A.slice.Tensor,
    A.cat.default,
    A.constant_pad_nd.default,
    A.permute.default,
}


@dataclass
class _Norm:
    input: torch.fx.Node
    mean: torch.fx.Node  # linear(input, 1/C)
    centred: torch.fx.Node  # input - mean


@dataclass
class _Scope:
    """The norms by input, and which nodes were found shift-invariant (the graph as it stands for one norm)."""

    norms: dict[torch.fx.Node, list[_Norm]]
    invariant: dict[torch.fx.Node, bool] = field(default_factory=dict)


def drop_norm_means(program: Any) -> int:
    """Rewrite ``program`` in place (its weights are replaced, never written into); returns how many norms lost
    their mean."""
    graph = program.graph
    order = {node: i for i, node in enumerate(graph.nodes)}
    centred: set[torch.fx.Node] = set()  # nodes whose rows are zero-mean after the rewrite
    edited: set[torch.fx.Node] = set()  # constants (a layer's weight) already centred
    found = _norms(program)
    norms: dict[torch.fx.Node, list[_Norm]] = {}
    for norm in found:
        norms.setdefault(norm.input, []).append(norm)
    dropped, rewired = 0, False
    for norm in sorted(found, key=lambda n: order[n.centred]):
        x, scope = norm.input, _Scope(norms)
        if len(norms[x]) != 1 or not _shift_invariant(x, scope):
            continue
        edits = _centring(program, x, scope, centred | edited)
        if edits is not None:
            for kind, node in edits:
                key = node if kind == "constant" else node.args[1]  # a shared layer is centred once
                if key not in edited:
                    _centre(program, kind, node)
                    edited.add(key)
            norm.centred.replace_all_uses_with(x)
            centred.add(x)
            dropped += 1
            continue
        # the stream goes on from this norm's centred value, which its other readers cannot tell from x
        others = [u for u in x.users if u is not norm.mean and u is not norm.centred]
        if others and all(order[u] > order[norm.centred] for u in others):
            for user in others:
                user.replace_input_with(x, norm.centred)
            centred.add(norm.centred)
            rewired = True
    if dropped or rewired:
        graph.eliminate_dead_code()
        program.graph_module.recompile()
    return dropped


def with_norm_means_dropped(model: nn.Module, example: torch.Tensor) -> tuple[nn.Module, int]:
    """``model`` exported and rewritten by :func:`drop_norm_means`, as a module for a converter that takes one
    (LiteRT's); ``model`` itself where no norm's mean could go."""
    program = torch.export.export(model.eval(), (example,), strict=False)
    dropped = drop_norm_means(program)
    if not dropped:
        return model, 0
    module = program.module()
    # torch refuses train()/eval() on an exported module; its ops are fixed already, and converters call eval()
    for name in ("train", "eval"):
        module.__dict__.pop(name, None)
    return module, dropped


def _norms(program: Any) -> list[_Norm]:
    """Every ``x - linear(x, 1/C)`` of the graph: a deploy-form LayerNorm's mean over the last axis."""
    found = []
    for sub in program.graph.nodes:
        if sub.op != "call_function" or sub.target != A.sub.Tensor or sub.kwargs or len(sub.args) != 2:
            continue
        x, mean = sub.args
        if not isinstance(mean, torch.fx.Node) or mean.target != A.linear.default or len(mean.args) != 2:
            continue
        if mean.args[0] is not x or len(mean.users) != 1:
            continue
        weight = constant(program, mean.args[1])
        channels = _shape(x)[-1] if _shape(x) else None
        if weight is None or channels is None or tuple(weight.shape) != (1, channels):
            continue
        if not torch.all(weight == 1.0 / channels):
            continue
        found.append(_Norm(x, mean, sub))
    return found


def _shape(node: Any) -> tuple | None:
    value = node.meta.get("val") if isinstance(node, torch.fx.Node) else None
    return tuple(value.shape) if isinstance(value, torch.Tensor) else None


def _keeps_rows(user: torch.fx.Node, source: torch.fx.Node) -> bool:
    """``user`` moves whole rows of ``source`` (channels last in both), so a per-row shift of ``source`` is a
    per-row shift of ``user`` (pad rows stay zero)."""
    if user.op != "call_function" or user.target not in _ROW_OPS or user.kwargs:
        return False
    source_shape, user_shape = _shape(source), _shape(user)
    if not source_shape or not user_shape or source_shape[-1] != user_shape[-1]:
        return False
    if user.target in (A.view.default, A.reshape.default):
        return True
    if user.target == A.permute.default:
        dims = list(user.args[1])
        return dims[-1] in (-1, len(dims) - 1)
    if user.target == A.slice.Tensor:
        dim = user.args[1] if len(user.args) > 1 else 0
        return dim % len(source_shape) != len(source_shape) - 1
    if user.target == A.cat.default:
        dim = user.args[1] if len(user.args) > 1 else 0
        return dim % len(user_shape) != len(user_shape) - 1
    pad, value = list(user.args[1]), user.args[2] if len(user.args) > 2 else 0.0
    return value == 0 and pad[:2] == [0, 0]


def _shift_invariant(node: torch.fx.Node, scope: _Scope) -> bool:
    """Shifting each row of ``node`` by its own constant leaves the program's outputs as they are."""
    if node not in scope.invariant:  # each node once: token reorderings make many paths to one reader
        scope.invariant[node] = _readers_blind(node, scope)
    return scope.invariant[node]


def _readers_blind(node: torch.fx.Node, scope: _Scope) -> bool:
    own = {n for norm in scope.norms.get(node, ()) for n in (norm.mean, norm.centred)}
    for user in node.users:
        if user in own:
            continue
        if user.op == "call_function" and user.target == A.add.Tensor and not user.kwargs and len(user.args) == 2:
            if _shape(user) == _shape(node) and _shift_invariant(user, scope):
                continue
        if _keeps_rows(user, node) and _shift_invariant(user, scope):
            continue
        return False
    return True


def _centring(program: Any, node: torch.fx.Node, scope: _Scope, done: set) -> list | None:
    """The edits (``("layer", linear or convolution)``, ``("constant", placeholder)``) that make every row of
    ``node`` zero-mean, each edited value read only where a shift goes unseen; None if there are none. ``done``:
    the nodes already zero-mean and the constants already centred (a layer shared with one centred before)."""
    if node in done or (node.target in _LAYERS and len(node.args) > 1 and node.args[1] in done):
        return []
    if node.op != "call_function" or node.kwargs or not _shift_invariant(node, scope):
        return None
    if node.target == A.linear.default:
        return [("layer", node)] if _centrable_layer(program, node, scope) else None
    if node.target == A.permute.default and list(node.args[1]) == _TO_CHANNELS_LAST:
        conv = node.args[0]  # a convolution's output channels, moved last
        if not isinstance(conv, torch.fx.Node) or conv.op != "call_function" or conv.target not in _CONVS:
            return None
        if conv.args[1] in done:
            return []
        return [("layer", conv)] if _centrable_layer(program, conv, scope) else None
    if node.target == A.add.Tensor and len(node.args) == 2 and _shape(node):
        edits = []
        for side in node.args:
            part = _constant_edit(program, side, _shape(node)[-1])
            if part is None and isinstance(side, torch.fx.Node):
                part = _centring(program, side, scope, done)
            if part is None:
                return None
            edits.extend(part)
        return edits
    if node.target in _ROW_OPS:
        sources = node.args[0] if node.target == A.cat.default else [node.args[0]]
        edits = []
        for source in sources:
            if not isinstance(source, torch.fx.Node) or not _keeps_rows(node, source):
                return None
            part = _centring(program, source, scope, done)
            if part is None:
                return None
            edits.extend(part)
        return edits
    return None


def _constant_edit(program: Any, node: Any, channels: int) -> list | None:
    """A constant added to the rows, owned by that add, centred in place of the rows' mean."""
    if not isinstance(node, torch.fx.Node) or len(node.users) != 1:
        return None
    value = constant(program, node)
    if value is None or value.dim() == 0 or value.shape[-1] != channels:
        return None
    return [("constant", node)]


def _centrable_layer(program: Any, layer: torch.fx.Node, scope: _Scope) -> bool:
    """``layer``'s constant weight and bias can take the centring: every layer reading them (one, or the same
    layer applied to several inputs) has an output whose per-row shift goes unseen (a convolution's behind its
    one permute to channels last)."""
    if len(layer.args) < 3:
        return False
    weight, bias = layer.args[1], layer.args[2]
    if not all(isinstance(n, torch.fx.Node) for n in (weight, bias)):
        return False
    if constant(program, weight) is None or constant(program, bias) is None:
        return False
    sharing = set(weight.users)
    if set(bias.users) != sharing:
        return False
    for other in sharing:
        if other.target != layer.target or other.args[1:3] != layer.args[1:3] or other.kwargs:
            return False
        output = other
        if other.target in _CONVS:
            if not _plain_conv(other) or len(other.users) != 1:
                return False
            output = next(iter(other.users))
            if output.target != A.permute.default or list(output.args[1]) != _TO_CHANNELS_LAST:
                return False
        if not _shift_invariant(output, scope):
            return False
    return True


def _plain_conv(conv: torch.fx.Node) -> bool:
    """Not grouped, not transposed: each output channel reads every input through weights laid out (out, in, ...),
    so centring over dim 0 shifts every output channel alike."""
    if conv.target == A.convolution.default:
        transposed, groups = conv.args[6], conv.args[8]
        return not transposed and groups == 1
    return len(conv.args) <= 6 or conv.args[6] == 1  # conv2d(input, weight, bias, stride, padding, dilation, groups)


def _centre(program: Any, kind: str, node: torch.fx.Node) -> None:
    """Centre a layer's outputs over its output channels (dim 0 of the weight), or a constant over its last axis."""
    if kind == "constant":
        value = constant(program, node)
        centred = value.double() - value.double().mean(-1, keepdim=True)
        replace_constant(program, node, centred.to(value.dtype))
        return
    weight_node, bias_node = node.args[1], node.args[2]
    weight, bias = constant(program, weight_node), constant(program, bias_node)
    w, b = weight.double(), bias.double()
    replace_constant(program, weight_node, (w - w.mean(0, keepdim=True)).to(weight.dtype))
    replace_constant(program, bias_node, (b - b.mean()).to(bias.dtype))

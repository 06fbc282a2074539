"""Remove the layout round trips that ExecuTorch's XNNPACK lowering inserts around convolutions.

XNNPACK runs convolutions channels-last. ``ChannelsLastTaggedReshapePass`` meets a token tensor (B, H, W, C)
that the model permuted to NCHW for a conv, and converts it back to NHWC for the conv: two transposes that
leave the bytes where they were. After the conv it does the same in reverse. ``lvt`` at 224 carries 249
transposes this way, most of them such pairs.

Two passes undo that. ``PinPermutesContiguousPass`` runs just before XNNPACK's layout pass and pins every
4-D permute's output to contiguous storage: without it a permute of the conv's NHWC output stays tagged NHWC,
so the LayerNorm after it runs in a scrambled layout with copies around each of its Linear reductions (76
transposes in ``lvt``). Where the permute was contiguous already, XNNPACK's ``RemoveRedundantCopyPass`` drops the
pin again. ``RemoveLayoutRoundTripsPass`` runs after XNNPACK's passes: it follows chains of layout ops
(``permute_copy`` and the memory-format ``_to_copy``), computes what each does to the bytes (the tags say which
tensors are stored NHWC), and replaces a chain that moves no data by one reshape, which in XNNPACK
only relabels the dims.

Before:  linear -> permute(0,3,1,2) -> to_copy(channels_last) -> conv -> permute(0,2,3,1) -> to_copy(contiguous)
After:   linear -> view(B,C,H,W) [NHWC] -> conv -> view(B,H,W,C)
"""

from __future__ import annotations

import torch
from executorch.backends.xnnpack._passes.channels_last_tagged_reshape_pass import ChannelsLastTaggedReshapePass
from executorch.backends.xnnpack._passes.xnnpack_pass import XNNPACKPass
from executorch.backends.xnnpack.utils.quant_utils import is_dequant, is_quant
from executorch.exir.dialects._ops import ops as exir_ops
from executorch.exir.pass_base import PassResult

_PERMUTE = exir_ops.edge.aten.permute_copy.default
_TO_COPY = exir_ops.edge.aten._to_copy.default
_VIEW = exir_ops.edge.aten.view_copy.default
_NHWC = (0, 2, 3, 1)  # physical dim k holds logical dim _NHWC[k]
_TAG = ChannelsLastTaggedReshapePass.XNN_NHWC_NODE


def _is_layout_op(node: torch.fx.Node) -> bool:
    if node.op != "call_function":
        return False
    if node.target == _PERMUTE:
        return True
    # a plain memory-format change; a dtype change is real work
    return node.target == _TO_COPY and set(node.kwargs) <= {"memory_format"}


def _stored_nhwc(node: torch.fx.Node) -> bool:
    if node.op == "placeholder":
        val = node.meta.get("val")
        return isinstance(val, torch.Tensor) and ChannelsLastTaggedReshapePass._is_nhwc_tensor(val)
    return ChannelsLastTaggedReshapePass.is_nhwc_node(node)


def _storage_order(node: torch.fx.Node) -> tuple[int, ...]:
    rank = node.meta["val"].dim()
    return _NHWC if rank == 4 and _stored_nhwc(node) else tuple(range(rank))


def byte_move(node: torch.fx.Node) -> tuple[int, ...]:
    """The permutation a layout op applies to its input's storage: output storage dim k is input storage
    dim ``move[k]``. A permute of an NHWC-stored tensor is serialized in storage order, as XNNPACK runs it."""
    source = node.args[0]
    logical = tuple(range(node.meta["val"].dim()))
    if node.target == _PERMUTE:
        logical = tuple(d % len(logical) for d in node.args[1])
    inverse_in = {logical_dim: k for k, logical_dim in enumerate(_storage_order(source))}
    return tuple(inverse_in[logical[d]] for d in _storage_order(node))


def _compose(first: tuple[int, ...], then: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(first[k] for k in then)


def moves_no_data(move: tuple[int, ...], source: torch.fx.Node) -> bool:
    """True when ``move`` keeps the bytes of ``source`` in place: the dims longer than one keep their order."""
    shape = source.meta["val"].shape
    stored = [shape[d] for d in _storage_order(source)]
    kept = [k for k in move if stored[k] > 1]
    return kept == sorted(kept)


class PinPermutesContiguousPass(XNNPACKPass):
    """Follow each 4-D permute by a copy to contiguous storage, so what comes after it stays NCHW-tagged.
    In an int8 graph the copy goes behind the permute's quantize/dequantize pair, with a pair of its own."""

    keeps_values = True  # copies and requantizations of values already there

    def call(self, graph_module: torch.fx.GraphModule) -> PassResult:
        graph = graph_module.graph
        pinned = 0
        for node in list(graph.nodes):
            if node.op != "call_function" or node.target != _PERMUTE or node.meta["val"].dim() != 4:
                continue
            users = list(node.users)
            if len(users) == 1 and is_quant(users[0]):
                self._quantize_before(graph, node, users[0])
                for dq in [u for u in users[0].users if is_dequant(u)]:
                    pinned += self._pin(graph, dq, requantize=users[0])
            elif not any(is_quant(user) for user in users):
                pinned += self._pin(graph, node)
        if not pinned:
            return PassResult(graph_module, False)
        graph_module.recompile()
        return PassResult(super().call(graph_module).graph_module, True)

    @staticmethod
    def _quantize_before(graph: torch.fx.Graph, permute: torch.fx.Node, quantize: torch.fx.Node) -> None:
        """float -> permute -> q becomes float -> q -> dq -> permute -> q: the same values (a permute moves them,
        it does not change them), but the permute now moves int8 and can join an int8 chain."""
        source = permute.args[0]
        if is_dequant(source):
            return
        dequantize = next((u for u in quantize.users if is_dequant(u)), None)
        if dequantize is None:
            return
        with graph.inserting_before(permute):
            q = graph.create_node("call_function", quantize.target, (source, *quantize.args[1:]), dict(quantize.kwargs))
            dq = graph.create_node(
                "call_function", dequantize.target, (q, *dequantize.args[1:]), dict(dequantize.kwargs)
            )
        q.meta = dict(quantize.meta)
        q.meta["val"] = source.meta["val"]
        dq.meta = dict(dequantize.meta)
        dq.meta["val"] = source.meta["val"]
        permute.replace_input_with(source, dq)

    @staticmethod
    def _pin(graph: torch.fx.Graph, node: torch.fx.Node, requantize: torch.fx.Node | None = None) -> int:
        """Put a copy to contiguous storage behind ``node`` (unless one is there); 1 if it did."""
        if any(user.target == _TO_COPY for user in node.users):
            return 0
        with graph.inserting_after(node):
            pin = graph.create_node("call_function", _TO_COPY, (node,), {"memory_format": torch.contiguous_format})
        pin.meta = dict(node.meta)
        last = pin
        if requantize is not None:  # dq -> copy -> q -> dq, the pattern XNNPACK's own copies take
            with graph.inserting_after(pin):
                q = graph.create_node("call_function", requantize.target, (pin, *requantize.args[1:]))
            q.meta = dict(requantize.meta)
            with graph.inserting_after(q):
                last = graph.create_node("call_function", node.target, (q, *node.args[1:]), dict(node.kwargs))
            last.meta = dict(node.meta)
        node.replace_all_uses_with(last, delete_user_cb=lambda user: user is not pin)
        return 1


class RemoveLayoutRoundTripsPass(XNNPACKPass):
    """Replace each chain of layout ops that leaves the bytes in place by one relabelling reshape."""

    keeps_values = True  # the reshape's value is the chain's end's

    def call(self, graph_module: torch.fx.GraphModule) -> PassResult:
        graph = graph_module.graph
        modified = False
        # last first, so each end takes the longest chain; links other ends share stay until unused
        for end in reversed(list(graph.nodes)):
            if not _is_layout_op(end) or not end.users:
                continue
            source = self._no_op_chain_source(end)
            if source is None:
                continue
            with graph.inserting_after(end):
                view = graph.create_node("call_function", _VIEW, (source, list(end.meta["val"].shape)))
            view.meta = {k: v for k, v in end.meta.items() if k != _TAG}
            if _stored_nhwc(end):
                view.meta[_TAG] = True  # the conv side reads it channels-last, as the chain's end was
            end.replace_all_uses_with(view)
            modified = True
        if not modified:
            return PassResult(graph_module, False)
        graph.eliminate_dead_code()
        graph_module.recompile()
        return PassResult(super().call(graph_module).graph_module, True)

    @staticmethod
    def _no_op_chain_source(end: torch.fx.Node) -> torch.fx.Node | None:
        """The input of the longest chain of layout ops ending at ``end`` (int8 links joined by a quantize/
        dequantize pair) whose composed byte move leaves the data in place, and which a reshape can replace
        (quantized at both ends alike); None if there is none."""
        move, link, found = byte_move(end), end, None
        while link is not None:
            source = link.args[0]
            if moves_no_data(move, source) and _same_quantization(source, end):
                found = source
            link = _previous_link(link)
            if link is not None:
                move = _compose(byte_move(link), move)
        return found


def _previous_link(node: torch.fx.Node) -> torch.fx.Node | None:
    """The layout op whose output feeds ``node``, directly or through one quantize/dequantize pair."""
    source = node.args[0]
    if _is_layout_op(source):
        return source
    if not is_dequant(source) or not is_quant(source.args[0]) or source.args[1:] != source.args[0].args[1:]:
        return None
    before = source.args[0].args[0]
    return before if _is_layout_op(before) else None


def _same_quantization(source: torch.fx.Node, end: torch.fx.Node) -> bool:
    """A reshape from ``source`` can stand for the chain ending at ``end``: both float, or the source an int8
    tensor (a dequantize) and the end's only user a quantize with the same parameters, so the reshape moves
    int8 values. (A float reshape feeding a quantize fails to load in XNNPACK.)"""
    users = list(end.users)
    requantized = len(users) == 1 and is_quant(users[0])
    if not is_dequant(source):
        return not requantized
    return requantized and users[0].args[1:] == source.args[1:]

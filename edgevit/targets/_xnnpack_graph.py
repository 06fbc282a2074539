"""Rewrites of the XNNPACK graph that ExecuTorch serializes, where XNNPACK's runtime would copy data that needs
no copy. Each keeps every value bit for bit: it only changes which ops move the bytes.

- **Slice chains.** ExecuTorch writes a slice over several dims as one XNNPACK slice per dim, and each copies.
  A slice whose input is another slice's output, read by nothing else, becomes one slice of the first's input.
- **Identity reshapes.** A reshape to the shape its input already has (the relabelling left where
  ``_xnnpack_layout`` removed a layout round trip) runs in place only when a single op reads its input and a
  single op its output; otherwise XNNPACK copies the tensor. Its readers read its input instead.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Any

from executorch.backends.xnnpack.serialization.xnnpack_graph_schema import (
    XNNGraph,
    XNNStaticReshape,
    XNNStaticSlice,
)
from executorch.backends.xnnpack.utils.xnnpack_constants import XNN_INVALID_VALUE_ID

__all__ = ["remove_needless_copies"]


def _tensor(xvalue: Any) -> Any:
    union = xvalue.xvalue_union
    return getattr(union, "tensor_value", union)


def _input_fields(node: Any) -> list[str]:
    """The fields of a node that name the values it reads."""
    return [
        f.name
        for f in dataclasses.fields(node.xnode_union)
        if f.name.endswith("_id") and not f.name.startswith("output")
    ]


def _reads(node: Any) -> list[int]:
    union = node.xnode_union
    return [getattr(union, name) for name in _input_fields(node) if getattr(union, name) != XNN_INVALID_VALUE_ID]


class _Values:
    """Each value's description and how many ops read it."""

    def __init__(self, graph: XNNGraph) -> None:
        self.described = {_tensor(v).id_out: v for v in graph.xvalues}
        self.readers = Counter(value for node in graph.xnodes for value in _reads(node))

    def internal(self, value: int) -> bool:
        """Neither a model input or output nor a constant."""
        tensor = _tensor(self.described[value])
        return tensor.external_id == XNN_INVALID_VALUE_ID and not tensor.flags and not tensor.constant_buffer_idx

    def alike(self, a: int, b: int) -> bool:
        """Same dtype and quantization, so an op that moves bytes may stand between them."""
        va, vb = self.described[a].xvalue_union, self.described[b].xvalue_union
        same_quantization = getattr(va, "quant_params", None) == getattr(vb, "quant_params", None)
        return _tensor(self.described[a]).datatype == _tensor(self.described[b]).datatype and same_quantization

    def dims(self, value: int) -> list[int]:
        return list(_tensor(self.described[value]).dims)


def _merge_slice_chains(graph: XNNGraph, values: _Values) -> int:
    slices = [node for node in graph.xnodes if isinstance(node.xnode_union, XNNStaticSlice)]
    producer = {node.xnode_union.output_id: node for node in slices}
    dropped: set[int] = set()
    for node in graph.xnodes:
        second = node.xnode_union
        if not isinstance(second, XNNStaticSlice):
            continue
        first_node = producer.get(second.input_id)
        if first_node is None or id(first_node) in dropped:
            continue
        first, middle = first_node.xnode_union, second.input_id
        if values.readers[middle] != 1 or not values.internal(middle) or not values.alike(first.input_id, middle):
            continue
        if first.num_dims != second.num_dims:
            continue
        # the second reads the first's input where the first did (its readers' count is unchanged)
        second.offsets = [a + b for a, b in zip(first.offsets, second.offsets, strict=True)]
        second.input_id = first.input_id
        dropped.add(id(first_node))
    graph.xnodes[:] = [n for n in graph.xnodes if id(n) not in dropped]
    return len(dropped)


def _remove_identity_reshapes(graph: XNNGraph, values: _Values) -> int:
    replaced: dict[int, int] = {}
    kept = []
    for node in graph.xnodes:
        union = node.xnode_union
        for name in _input_fields(node):
            value = getattr(union, name)
            if value in replaced:
                setattr(union, name, replaced[value])
        if (
            isinstance(union, XNNStaticReshape)
            # every dim given (none inferred, so none dynamic) and each the input's: the same tensor at any run
            and list(union.new_shape) == values.dims(union.input_id) == values.dims(union.output_id)
            and values.internal(union.input_id)
            and values.internal(union.output_id)
            and values.alike(union.input_id, union.output_id)
        ):
            replaced[union.output_id] = union.input_id
            continue
        kept.append(node)
    graph.xnodes[:] = kept
    return len(replaced)


def remove_needless_copies(graph: XNNGraph) -> dict[str, int]:
    """Rewrite ``graph`` in place; returns how many slices were merged and identity reshapes removed."""
    merged = _merge_slice_chains(graph, _Values(graph))
    removed = _remove_identity_reshapes(graph, _Values(graph))
    return {"slices_merged": merged, "identity_reshapes_removed": removed}

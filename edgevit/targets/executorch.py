"""ExecuTorch target: torch.export -> to_edge_transform_and_lower(XNNPACK) -> .pte, with a delegation audit."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from ..errors import EdgevitError
from ..recipe import Recipe
from .audit import NON_COMPUTE, max_tensor_rank, op_counts, op_name
from .base import ExportedArtifact

SUFFIX = ".pte"


def _xnnpack(recipe: Recipe):
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner

    return XnnpackPartitioner()


def _coreml(recipe: Recipe):
    """Core ML delegate inside the .pte, with the same deployment options as the coreml target's recipes."""
    from executorch.backends.apple.coreml.compiler import CoreMLBackend
    from executorch.backends.apple.coreml.partition import CoreMLPartitioner

    from .coreml import conversion_options

    opts = conversion_options(recipe)
    specs = CoreMLBackend.generate_compile_specs(
        compute_unit=opts["compute_units"],
        minimum_deployment_target=opts["minimum_deployment_target"],
        compute_precision=opts["compute_precision"],
    )
    return CoreMLPartitioner(compile_specs=specs)


PARTITIONERS = {"xnnpack": _xnnpack, "coreml": _coreml}


def _partitioners(recipe: Recipe) -> list:
    names = recipe.options.get("partitioners", ["xnnpack"])
    unknown = [n for n in names if n not in PARTITIONERS]
    if unknown:
        raise EdgevitError(
            f"recipe {recipe.name}: unknown partitioner '{unknown[0]}'; choose from {list(PARTITIONERS)}"
        )
    return [PARTITIONERS[n](recipe) for n in names]


def export(model: torch.nn.Module, example: torch.Tensor, recipe: Recipe) -> ExportedArtifact:
    """Export a deploy-form model to .pte bytes and audit what the delegate took."""
    from executorch.exir import to_edge_transform_and_lower

    program = torch.export.export(model, (example,), strict=False)
    rank, rank_op = max_tensor_rank(program.graph)
    ops = op_counts(program.graph)
    with _xnnpack_layout_pass():
        edge = to_edge_transform_and_lower(program, partitioner=_partitioners(recipe))
    audit = audit_lowered(edge.exported_program().graph_module)
    audit.update(ops=dict(sorted(ops.items())), max_rank=rank, max_rank_op=rank_op)
    return ExportedArtifact.from_bytes(edge.to_executorch().buffer, audit)


@contextmanager
def _xnnpack_layout_pass() -> Iterator[None]:
    """Add edgevit's layout passes to XNNPACK's own while a program is lowered (the delegate takes no extra
    passes as an argument): one just before its channels-last pass, one after the last."""
    from executorch.backends.xnnpack import xnnpack_preprocess
    from executorch.backends.xnnpack._passes.channels_last_tagged_reshape_pass import ChannelsLastTaggedReshapePass

    from .xnnpack_layout import PinPermutesContiguousPass, RemoveLayoutRoundTripsPass

    base = xnnpack_preprocess.XNNPACKPassManager

    class PassManager(base):
        def __init__(self, exported_program, passes=None) -> None:
            super().__init__(exported_program, passes)
            if passes is None:  # the default list; a dynamic-linear preprocess names its own
                at = self.passes.index(ChannelsLastTaggedReshapePass)
                self.passes = [
                    *self.passes[:at],
                    PinPermutesContiguousPass,
                    *self.passes[at:],
                    RemoveLayoutRoundTripsPass,
                ]

    xnnpack_preprocess.XNNPACKPassManager = PassManager
    try:
        yield
    finally:
        xnnpack_preprocess.XNNPACKPassManager = base


def audit_lowered(gm: torch.fx.GraphModule) -> dict[str, Any]:
    """Partitions and ops inside/outside the delegates of a lowered edge program."""
    partitions = 0
    backends: set[str] = set()
    inside: Counter = Counter()
    outside: Counter = Counter()
    for node in gm.graph.nodes:
        if node.op != "call_function":
            continue
        if "executorch_call_delegate" in str(node.target):
            partitions += 1
            lowered = getattr(gm, node.args[0].target)
            backends.add(lowered.backend_id)
            inside.update(_delegated_ops(lowered))
            continue
        name = op_name(node)
        if name not in NON_COMPUTE:
            outside[name] += 1
    total = sum(inside.values()) + sum(outside.values())
    return {
        "backend": ", ".join(sorted(backends)) or "none",
        "partitions": partitions,
        "ops_delegated": dict(sorted(inside.items())),
        "ops_outside": dict(sorted(outside.items())),
        "delegated_share": round(sum(inside.values()) / total, 4) if total else 0.0,
    }


def _delegated_ops(lowered_module: Any) -> Counter:
    graph = lowered_module.original_module.graph
    return Counter(op_name(n) for n in graph.nodes if n.op == "call_function" and op_name(n) not in NON_COMPUTE)

"""Graph facts shared by every target's audit: op names, tensor ranks, banned ops, gate checks."""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch

from ..errors import GateError
from ..recipe import Gates

# nodes that move no data through compute: bookkeeping of the exported graph
NON_COMPUTE = {"getitem", "output", "placeholder", "get_attr"}
_NAMESPACES = {"aten", "dim_order_ops", "quantized_decomposed", "torchao", "executorch_prim"}


def op_name(node: torch.fx.Node) -> str:
    """Short op name of a call_function node: ``aten.convolution.default`` -> ``convolution``."""
    target = node.target
    parts = getattr(target, "__name__", str(target)).split(".")
    if len(parts) > 1 and parts[0] in _NAMESPACES:  # edge ops are named "aten.convolution.default"
        parts = parts[1:]
    return parts[0].lstrip("_") or parts[0]


def max_tensor_rank(graph: torch.fx.Graph) -> tuple[int, str]:
    """Largest rank of any tensor an op produces, and the op that produces it."""
    best, where = 0, ""
    for node in graph.nodes:
        if node.op != "call_function":
            continue
        vals = node.meta.get("val")
        for v in vals if isinstance(vals, (list, tuple)) else [vals]:
            if isinstance(v, torch.Tensor) and v.dim() > best:
                best, where = v.dim(), f"{op_name(node)} ({node.name})"
    return best, where


def op_counts(graph: torch.fx.Graph) -> Counter:
    return Counter(op_name(n) for n in graph.nodes if n.op == "call_function")


def check_gates(audit: dict[str, Any], numerics: dict[str, float] | None, gates: Gates, recipe: str) -> list[str]:
    """Every gate the artifact misses, as one sentence each naming the op or figure at fault."""
    failures = []
    parts = audit.get("partitions")
    if gates.max_partitions is not None and parts is not None and parts > gates.max_partitions:
        failures.append(
            f"{parts} delegate partitions (max {gates.max_partitions}); ops between them: "
            f"{_top(audit.get('ops_outside', {}))}"
        )
    outside = audit.get("ops_outside", {})
    n_out = sum(outside.values())
    if gates.max_ops_outside is not None and n_out > gates.max_ops_outside:
        failures.append(f"{n_out} compute ops outside the delegate (max {gates.max_ops_outside}): {_top(outside)}")
    rank = audit.get("max_rank")
    if gates.max_rank is not None and rank is not None and rank > gates.max_rank:
        failures.append(f"a rank-{rank} tensor from {audit.get('max_rank_op')} (max rank {gates.max_rank})")
    transposes = audit.get("transposes")
    if gates.max_transposes is not None and transposes is not None and transposes > gates.max_transposes:
        failures.append(f"{transposes} transpose ops in the program (max {gates.max_transposes})")
    present = audit.get("ops", {})
    banned = sorted(op for op in gates.banned_ops if present.get(op))
    if banned:
        failures.append(f"banned ops present: {', '.join(banned)}")
    if numerics:
        if gates.max_abs_diff is not None and numerics["max_abs_diff"] > gates.max_abs_diff:
            failures.append(f"max abs diff {numerics['max_abs_diff']:.3g} vs PyTorch fp32 (max {gates.max_abs_diff:g})")
        if gates.min_sqnr_db is not None and numerics["sqnr_db"] < gates.min_sqnr_db:
            failures.append(f"SQNR {numerics['sqnr_db']:.1f} dB vs PyTorch fp32 (min {gates.min_sqnr_db:g} dB)")
    return [f"recipe {recipe}: {f}" for f in failures]


def raise_on_failures(failures: list[str]) -> None:
    if failures:
        more = f" (+{len(failures) - 1} more)" if len(failures) > 1 else ""
        raise GateError(f"{failures[0]}{more}; fix the lowering or pass --allow-gate-failures to keep the artifact")


def _top(counter: dict[str, int], n: int = 5) -> str:
    items = sorted(counter.items(), key=lambda kv: -kv[1])[:n]
    return ", ".join(f"{k} x{v}" for k, v in items) or "none"

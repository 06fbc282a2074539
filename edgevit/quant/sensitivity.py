"""Per-layer sensitivity: which blocks cost the most accuracy in int8, and which to keep float to pass a gate.

The model is calibrated once. Keeping a block float is simulated on that one quantized graph by feeding the
block's ops their inputs and weights without the quantize/dequantize round trip; the graph is run in PyTorch
on the same photos, and the gain in SQNR ranks the blocks. XNNPACK's observers watch the float model, so
there this equals a re-quantization; Core ML's quantizer fake-quantizes while it calibrates, so its ranges
shift a little with what is float. The fix is the shortest prefix of the ranking that, kept float together,
reaches the threshold; a real re-quantization with those blocks float confirms it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import fx, nn

from ..numerics import compare
from .policy import stays_float

Requantize = Callable[[tuple[str, ...]], nn.Module]


def candidate_blocks(model: nn.Module, prefix: str = "") -> Iterator[str]:
    """Module names of the blocks beneath containers (``stages.0.1``, ``head``): the units of mixed precision."""
    for name, child in model.named_children():
        path = f"{prefix}{name}"
        if isinstance(child, (nn.Sequential, nn.ModuleList, nn.ModuleDict)):
            yield from candidate_blocks(child, f"{path}.")
        elif any(True for _ in child.parameters()) or any(True for _ in child.buffers()):
            yield path


def _is_quant_op(target, prefix: str) -> bool:
    """``quantize_per_tensor``, ``dequantize_per_channel``... of torch's ``quantized_decomposed`` namespace."""
    name = getattr(target, "__name__", "")
    return getattr(target, "namespace", None) == "quantized_decomposed" and name.startswith(prefix)


def with_blocks_float(quantized: fx.GraphModule, blocks: tuple[str, ...]) -> fx.GraphModule:
    """``quantized`` (converted with ``fold_quantize=False``) as a re-quantization with the module names
    ``blocks`` kept float would leave it: a quantize/dequantize round trip stays only where an op outside the
    blocks asked for it (its producer's output or its consumer's input annotation). Shares the weights."""
    bypass = _unrounded_edges(quantized, blocks)
    gm = fx.GraphModule(quantized, copy.deepcopy(quantized.graph))
    nodes = {node.name: node for node in gm.graph.nodes}
    for dequantize, consumer, source in bypass:
        nodes[consumer].replace_input_with(nodes[dequantize], nodes[source])
    gm.graph.eliminate_dead_code()
    gm.recompile()
    return gm


def _unrounded_edges(quantized: fx.GraphModule, blocks: tuple[str, ...]) -> list[tuple[str, str, str]]:
    """(dequantize, consumer, unquantized source) names of the round trips no op outside ``blocks`` asked for."""
    from torchao.quantization.pt2e.quantizer.utils import Q_ANNOTATION_KEY

    def outside(node: fx.Node) -> bool:
        return not (node.op == "call_function" and stays_float(node, blocks))

    edges = []
    for dq in quantized.graph.nodes:
        q = dq.args[0] if dq.op == "call_function" and _is_quant_op(dq.target, "dequantize") else None
        if not (isinstance(q, fx.Node) and _is_quant_op(q.target, "quantize") and isinstance(q.args[0], fx.Node)):
            continue
        source = q.args[0]
        produced = source.meta.get(Q_ANNOTATION_KEY)
        if outside(source) and produced is not None and produced.output_qspec is not None:
            continue
        for consumer in dq.users:
            wanted = consumer.meta.get(Q_ANNOTATION_KEY)
            # a weight is quantized for its consumer (whose annotation may name an untied copy of it); names,
            # because an annotation copied with its graph may still point at the original's nodes
            asked = source.op == "get_attr" or (
                wanted is not None and source.name in {n.name for n in wanted.input_qspec_map}
            )
            if not (outside(consumer) and asked):
                edges.append((dq.name, consumer.name, source.name))
    return edges


def simulate(quantized: nn.Module, photos: torch.Tensor, reference: np.ndarray) -> dict[str, Any]:
    """The quantized graph run by PyTorch's reference int8 kernels on the photos, against the fp32 reference."""
    with torch.no_grad():
        outputs = torch.cat([quantized(photos[i : i + 1]) for i in range(len(photos))])
    return {**compare(reference, outputs.numpy()), "runtime": "PyTorch simulation of the quantized graph"}


def simulated_sqnr(quantized: nn.Module, photos: torch.Tensor, reference: np.ndarray) -> float:
    return float(simulate(quantized, photos, reference)["sqnr_db"])


def sensitivity_report(
    requantize: Requantize,
    blocks: list[str],
    photos: torch.Tensor,
    reference: np.ndarray,
    threshold: float,
    progress: Callable[[str], None] = lambda _: None,
    confirm: Requantize | None = None,
) -> dict[str, Any]:
    """SQNR with each block kept float, worst block first, and the smallest set that reaches ``threshold``.

    ``requantize`` gives the quantized graph with more blocks float (a quick view such as
    :func:`with_blocks_float`); ``confirm``, a real re-quantization, checks the fix it finds and searches
    again if that misses (views are exact for XNNPACK; quantizers that fake-quantize while calibrating, as
    Core ML's does, or that annotate by pattern, as LiteRT's does, shift by a dB or so)."""
    baseline = simulated_sqnr(requantize(()), photos, reference)
    rows = []
    for i, block in enumerate(blocks):
        progress(f"sensitivity {i + 1}/{len(blocks)}: {block}")
        rows.append(
            {"block": block, "sqnr_db_if_float": round(simulated_sqnr(requantize((block,)), photos, reference), 2)}
        )
    rows.sort(key=lambda r: -r["sqnr_db_if_float"])
    helpful = [r["block"] for r in rows if r["sqnr_db_if_float"] > baseline]
    fix, reached = _shortest_fix(requantize, helpful, photos, reference, threshold, baseline, progress)
    if fix and confirm is not None:
        progress(f"sensitivity: confirm {len(fix)} block(s) float")
        reached = simulated_sqnr(confirm(tuple(fix)), photos, reference)
        if reached < threshold:
            fix, reached = _shortest_fix(confirm, helpful, photos, reference, threshold, baseline, progress)
    return {
        "baseline_sqnr_db": round(baseline, 2),
        "threshold_db": threshold,
        "blocks": rows,
        "fix": fix,
        "fix_sqnr_db": round(reached, 2),
    }


def _shortest_fix(requantize, ranked, photos, reference, threshold, baseline, progress):
    """Binary search for the shortest prefix of ``ranked`` that reaches ``threshold`` when kept float (a few
    quantizations instead of one per block; gains add up nearly monotonically along the ranking)."""
    if baseline >= threshold:
        return [], baseline
    progress(f"sensitivity: all {len(ranked)} helpful block(s) float")
    best = simulated_sqnr(requantize(tuple(ranked)), photos, reference) if ranked else baseline
    if best < threshold:
        return None, best
    low, high = 1, len(ranked)  # invariant: keeping ranked[:high] float reaches the threshold
    while low < high:
        mid = (low + high) // 2
        progress(f"sensitivity: {mid} block(s) float")
        sqnr = simulated_sqnr(requantize(tuple(ranked[:mid])), photos, reference)
        if sqnr >= threshold:
            high, best = mid, sqnr
        else:
            low = mid + 1
    return ranked[:high], best


def describe_fix(report: dict[str, Any]) -> str:
    """One line: the worst blocks and the --keep-float options that pass the gate (or that none was found)."""
    worst = ", ".join(f"{r['block']} ({r['sqnr_db_if_float']:.1f} dB if float)" for r in report["blocks"][:3])
    if report["fix"]:
        flags = " ".join(f"--keep-float {b}" for b in report["fix"])
        return f"most sensitive: {worst}; pass {flags} (simulated {report['fix_sqnr_db']:.1f} dB)"
    return f"most sensitive: {worst}; keeping them float does not reach {report['threshold_db']:g} dB, try QAT"

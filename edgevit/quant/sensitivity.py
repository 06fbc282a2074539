"""Per-layer sensitivity: which blocks cost the most accuracy in int8, and which to keep float to pass a gate.

Each block is re-quantized with only itself kept float and the quantized graph is run in PyTorch on the same
photos; the gain in SQNR ranks the blocks. The fix is the shortest prefix of that ranking that, kept float
together, reaches the threshold.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from ..numerics import compare

Requantize = Callable[[tuple[str, ...]], nn.Module]


def candidate_blocks(model: nn.Module, prefix: str = "") -> Iterator[str]:
    """Module names of the blocks beneath containers (``stages.0.1``, ``head``): the units of mixed precision."""
    for name, child in model.named_children():
        path = f"{prefix}{name}"
        if isinstance(child, (nn.Sequential, nn.ModuleList, nn.ModuleDict)):
            yield from candidate_blocks(child, f"{path}.")
        elif any(True for _ in child.parameters()) or any(True for _ in child.buffers()):
            yield path


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
) -> dict[str, Any]:
    """SQNR with each block kept float, worst block first, and the smallest set that reaches ``threshold``."""
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

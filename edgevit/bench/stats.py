"""Latency statistics of one run: what the tables, JSON records and comparisons report."""

from __future__ import annotations

import math
import statistics


def percentile(sorted_ms: list[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default) of an already sorted list."""
    if not sorted_ms:
        return math.nan
    pos = (len(sorted_ms) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return sorted_ms[lo] + (sorted_ms[hi] - sorted_ms[lo]) * (pos - lo)


def trimmed_mean(sorted_ms: list[float], keep: float = 0.8) -> float:
    """Mean of the middle ``keep`` share (Minibench's trimmed mean drops the top and bottom 10%)."""
    n = len(sorted_ms)
    cut = int(n * (1 - keep) / 2 + 1e-9)  # 10 * (1 - 0.8) / 2 is 0.9999999999999998 in floating point
    middle = sorted_ms[cut : n - cut] or sorted_ms
    return statistics.fmean(middle) if middle else math.nan


def summarize(samples_ms: list[float]) -> dict[str, float]:
    """n, min, median, mean, p90, p95, max, std and trimmed mean (middle 80%) of timed runs, in ms."""
    s = sorted(samples_ms)
    if not s:
        return {"n": 0}
    return {
        "n": len(s),
        "min": s[0],
        "median": statistics.median(s),
        "mean": statistics.fmean(s),
        "p90": percentile(s, 90),
        "p95": percentile(s, 95),
        "max": s[-1],
        "std": statistics.stdev(s) if len(s) > 1 else 0.0,
        "trimmed_mean": trimmed_mean(s),
    }

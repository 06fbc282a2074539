"""Parsers for the on-device runners' logs: ExecuTorch's ``executor_runner`` and LiteRT's ``benchmark_model``.

Each returns the figures it recognised plus every line it did not, verbatim, so nothing a new runner version
prints is lost.
"""

from __future__ import annotations

import re
from typing import Any

_ITERATION = re.compile(r"Iteration (\d+) of (\d+): ([\d.]+) ms")
_EXECUTED = re.compile(r"Model executed successfully (\d+) time\(s\) in ([\d.]+) ms")
# a run block's statistics line; the op profiler's "Timings (microseconds): count=..." is not one
_COUNT = re.compile(r"^(?:\w+: )?count=(\d+)((?:\s+\w+=[-\d.e+]+)*)\s*$")
_KEY_VALUE = re.compile(r"(\w+)=([-\d.e+]+)")
_TIMINGS = re.compile(r"Inference timings in us: (.*)")
_TIMING_ITEM = re.compile(r"([A-Za-z][A-Za-z ()]*?): ([\d.e+]+)")
_REPLACING = re.compile(
    r"Replacing (\d+) out of (\d+) node\(s\) with delegate \((\w+)\) node, yielding (\d+) partitions"
)
_GPU_SPLIT = re.compile(r"(\d+) operations will run on the GPU, and the remaining (\d+) operations will run on the CPU")
_PEAK = re.compile(r"Overall peak memory footprint \(MB\) via periodic monitoring: ([\d.]+)")
_FOOTPRINT = re.compile(r"Memory footprint delta from the start of the tool \(MB\): init=([\d.]+) overall=([\d.]+)")
_MODEL_SIZE = re.compile(r"The input model file size \(MB\): ([\d.]+)")
_SECTION = re.compile(r"^=+ (.+?) =+$")


def parse_executor_runner(text: str) -> dict[str, Any]:
    """Per-iteration milliseconds from ``Iteration i of N: X ms`` lines, and the total line."""
    samples: list[float] = []
    total: dict[str, float] = {}
    unknown = []
    for line in text.splitlines():
        if m := _ITERATION.search(line):
            samples.append(float(m.group(3)))
        elif m := _EXECUTED.search(line):
            total = {"runs": int(m.group(1)), "ms": float(m.group(2))}
        elif line.strip():
            unknown.append(line)
    return {"samples_ms": samples, "total": total, "unknown_lines": unknown}


def _stats_us_to_ms(fields: str, count: int) -> dict[str, float]:
    stats: dict[str, float] = {"count": count}
    for key, value in _KEY_VALUE.findall(fields):
        stats[key] = float(value) / 1000.0  # benchmark_model prints microseconds
    return stats


def parse_benchmark_model(text: str) -> dict[str, Any]:
    """The warm-up and steady-state ``count=`` blocks (ms), init and first-inference times, memory, delegation
    and, when ``--enable_op_profiling`` was on, its tables (by header name, as columns vary by version)."""
    blocks: list[dict[str, float]] = []
    result: dict[str, Any] = {"unknown_lines": [], "op_profile": {}}
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if m := _SECTION.match(line.strip()):
            table, i = _read_table(lines, i + 1)
            result["op_profile"][m.group(1)] = table
            continue
        if m := _COUNT.match(line.strip()):
            blocks.append(_stats_us_to_ms(m.group(2), int(m.group(1))))
        elif m := _TIMINGS.search(line):
            result["timings_ms"] = {k.strip(): float(v) / 1000.0 for k, v in _TIMING_ITEM.findall(m.group(1))}
        elif m := _REPLACING.search(line):
            result["delegation"] = {
                "delegate": m.group(3),
                "nodes_delegated": int(m.group(1)),
                "nodes_total": int(m.group(2)),
                "partitions": int(m.group(4)),
            }
        elif m := _GPU_SPLIT.search(line):
            result["gpu_split"] = {"gpu_ops": int(m.group(1)), "cpu_ops": int(m.group(2))}
        elif m := _PEAK.search(line):
            result["peak_memory_mb"] = float(m.group(1))
        elif m := _FOOTPRINT.search(line):
            result["memory_delta_mb"] = {"init": float(m.group(1)), "overall": float(m.group(2))}
        elif m := _MODEL_SIZE.search(line):
            result["model_size_mb"] = float(m.group(1))
        elif line.strip() and "Operator-wise Profiling Info" not in line:
            result["unknown_lines"].append(line)
        i += 1
    # the first block is the warm-up phase, the last the timed runs (one block when warm-up was off)
    result["warmup"] = blocks[0] if len(blocks) > 1 else {}
    result["runs"] = blocks[-1] if blocks else {}
    return result


def _read_table(lines: list[str], i: int) -> tuple[list[dict[str, str]], int]:
    """Rows of one op-profiling table under its ``[header]`` line; stops at a blank line or the next title."""
    while i < len(lines) and not lines[i].strip():
        i += 1
    if i >= len(lines) or "[" not in lines[i]:
        return [], i
    header = [h.strip().strip("[]").lower() for h in lines[i].strip().split("\t") if h.strip()]
    rows = []
    i += 1
    while i < len(lines) and lines[i].strip() and not _SECTION.match(lines[i].strip()):
        cells = [c.strip() for c in lines[i].strip().split("\t") if c.strip()]
        rows.append(dict(zip(header, cells, strict=False)))
        i += 1
    return rows, i

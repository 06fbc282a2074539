"""Where a .pte's time goes on the host: ExecuTorch's ETDump records each delegated XNNPACK op (and each portable
kernel outside a delegate) as an event; this sums them by op type, per run, and takes the median run.

It runs in a fresh process of its own (``python -m edgevit.bench.op_profile ARTIFACT``, one JSON line) after
the timed rounds: the event tracer adds a little time per op, so traced runs are never the timed ones.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

from ..errors import EdgevitError
from ..runtime.executorch import HALF
from ..runtime.quiet import native_stderr_silenced

# events that wrap the ops rather than being one
WRAPPERS = {"Method::execute", "DELEGATE_CALL", "OPERATOR_CALL", "Program::load_method", "Method::init"}


def op_type(event_name: str) -> str:
    """'Fully Connected (NC, F32) GEMM #12' -> 'Fully Connected (NC, F32) GEMM'."""
    return re.sub(r"\s*#\d+$", "", event_name)


def summarize(events: list[tuple[str, list[float]]], warmup: int) -> dict[str, Any]:
    """Per op type: count and time in the median run (by total op time), from (event name, per-run ms)."""
    runs = min((len(times) for _, times in events), default=0) - warmup
    if runs < 1:
        raise EdgevitError("the ETDump holds no traced run beyond the warm-up")
    ops = [(name, times[warmup:]) for name, times in events if name not in WRAPPERS]
    totals = [sum(times[r] for _, times in ops) for r in range(runs)]
    median_run = totals.index(statistics.median_low(totals))
    by_type: dict[str, list[float]] = defaultdict(list)
    for name, times in ops:
        by_type[op_type(name)].append(times[median_run])
    execute = [times[warmup:] for name, times in events if name == "Method::execute"]
    ops_ms = totals[median_run]
    rows = [
        # a model small enough runs every op within the timer's resolution: no share to give
        {
            "op": op,
            "count": len(times),
            "ms": round(sum(times), 4),
            "share": round(sum(times) / ops_ms, 4) if ops_ms else 0.0,
        }
        for op, times in by_type.items()
    ]
    return {
        "source": "ExecuTorch ETDump",
        "runs": runs,
        "execute_ms": round(execute[0][median_run], 4) if execute else None,
        "ops_ms": round(ops_ms, 4),
        "op_count": sum(r["count"] for r in rows),
        "ops": sorted(rows, key=lambda r: -r["ms"]),
    }


def profile_pte(path: Path, threads: int, warmup: int = 3, runs: int = 10) -> dict[str, Any]:
    """Run ``path`` warmup + runs times with ETDump on; the per-op-type summary of the median run."""
    with native_stderr_silenced():
        from executorch.devtools import Inspector
        from executorch.extension.pybindings.portable_lib import _load_for_executorch, _unsafe_reset_threadpool

        _unsafe_reset_threadpool(threads)
        try:
            module = _load_for_executorch(str(path), enable_etdump=True)
        except (RuntimeError, ValueError) as e:
            raise EdgevitError(f"{path} is not a loadable .pte program ({str(e).splitlines()[0][:120]})") from None
        meta = module.method_meta("forward").input_tensor_meta(0)
        x = torch.randn(tuple(meta.sizes()), generator=torch.Generator().manual_seed(0))
        x = x.to(torch.float16 if meta.dtype() == HALF else torch.float32)  # fp16 programs take fp16, as timed
        for _ in range(warmup + runs):
            module.forward([x])
        with tempfile.TemporaryDirectory() as tmp:
            dump = Path(tmp) / "run.etdp"
            module.write_etdump_result_to_file(str(dump))
            inspector = Inspector(etdump_path=str(dump))
    events = [
        (event.name, list(event.perf_data.raw))
        for block in inspector.event_blocks
        if block.name == "Execute"
        for event in block.events
        if event.perf_data is not None
    ]
    return summarize(events, warmup)


def run_profile(path: Path, threads: int, timeout: float = 600) -> dict[str, Any]:
    """:func:`profile_pte` in a fresh process; its summary, or an error record."""
    import subprocess

    cmd = [sys.executable, "-m", "edgevit.bench.op_profile", str(path), f"--threads={threads}"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"op profile timed out after {timeout:g} s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        detail = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
        return {"error": f"op profile process failed: {detail}"}
    return json.loads(lines[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description="per-op-type time of one .pte (edgevit bench --op-profiling)")
    parser.add_argument("artifact", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    try:
        print(json.dumps(profile_pte(args.artifact, args.threads, args.warmup, args.runs)))
    except EdgevitError as e:
        print(json.dumps({"error": str(e)}))
        sys.exit(2)


if __name__ == "__main__":
    main()

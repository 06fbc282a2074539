"""Host benchmarks: each artifact is timed in a fresh process of its own, so runtimes never share cores or
memory, and the process's peak RSS is the artifact's.

``python -m edgevit.bench.host ARTIFACT ...`` is the worker; it prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import EdgevitError


@dataclass(frozen=True)
class Settings:
    threads: int = 2
    warmup: int = 10
    runs: int = 50
    min_seconds: float = 1.0
    rounds: int = 1  # fresh processes per artifact, alternating between artifacts


def _proc_status_mb(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 2**10  # kB
    except (OSError, ValueError, IndexError):
        pass
    return None


def rss_mb() -> float:
    """Current resident set size (Linux); elsewhere the peak so far."""
    return _proc_status_mb("VmRSS") or peak_rss_mb()


def peak_rss_mb() -> float:
    """This process's peak RSS. Linux: VmHWM, because ru_maxrss carries the parent's peak across exec."""
    hwm = _proc_status_mb("VmHWM")
    if hwm is not None:
        return hwm
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB elsewhere


def measure(path: Path, settings: Settings) -> dict[str, Any]:
    """Load one artifact and time ``invoke`` alone, in this process."""
    from ..runtime import runner_class

    runner_type = runner_class(path)  # imports the runtime, so the memory figure below is the model's
    before = rss_mb()
    runner = runner_type(path, threads=settings.threads)
    rng = np.random.default_rng(0)
    shape = runner.input_shape
    x = rng.integers(0, 256, shape).astype(np.float32) if runner.raw_pixels else rng.standard_normal(shape)
    try:
        samples = runner.time(x.astype(np.float32), settings.warmup, settings.runs, settings.min_seconds)
    except RuntimeError as e:  # the runtime loaded the file but cannot execute it
        raise EdgevitError(f"{path}: inference failed ({str(e).strip().splitlines()[0][:120]})") from None
    return {
        "runtime": runner.name,
        "samples_ms": samples,
        "load_ms": runner.load_seconds * 1e3,
        "memory_mb": {"before_load": round(before, 1), "peak": round(peak_rss_mb(), 1)},
    }


def run_worker(path: Path, settings: Settings, timeout: float) -> dict[str, Any]:
    """One fresh process timing ``path``; its JSON result, or an error record."""
    cmd = [
        sys.executable,
        "-m",
        "edgevit.bench.host",
        str(path),
        f"--threads={settings.threads}",
        f"--warmup={settings.warmup}",
        f"--runs={settings.runs}",
        f"--min-seconds={settings.min_seconds}",
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:g} s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        detail = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
        return {"error": json.loads(lines[-1])["error"] if lines else f"runner process failed: {detail}"}
    return json.loads(lines[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description="time one artifact in this process (edgevit bench worker)")
    parser.add_argument("artifact", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--min-seconds", type=float, default=1.0)
    args = parser.parse_args()
    settings = Settings(args.threads, args.warmup, args.runs, args.min_seconds)
    try:
        print(json.dumps(measure(args.artifact, settings)))
    except EdgevitError as e:
        print(json.dumps({"error": str(e)}))
        sys.exit(2)


if __name__ == "__main__":
    main()

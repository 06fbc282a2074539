"""``bench(artifacts, device, settings)``: time artifacts on the host or on a device, one record each."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..errors import EdgevitError
from ..targets.registry import list_targets, target_for_path
from .devices import DeviceProfile
from .host import Settings, run_worker
from .record import finish, host_environment, new_record

Progress = Callable[[str], None]


def check_artifacts(paths: list[Path]) -> None:
    """Fail before any timing starts: every artifact must exist and be of a kind edgevit runs."""
    suffixes = ", ".join(t.suffix for t in list_targets() if t.host_runner)
    if not paths:
        raise EdgevitError(f"no artifact given; pass one or more {suffixes} files")
    for path in paths:
        if not path.exists():
            raise EdgevitError(f"artifact not found: {path}")
        if not any(path.suffix == t.suffix and t.host_runner for t in list_targets()):
            raise EdgevitError(f"{path}: cannot benchmark '{path.suffix}' files; pass {suffixes}")


def distinct(paths: list[Path]) -> list[Path]:
    """``paths`` without repeats of one file (however spelled), in the order first given."""
    seen: set[Path] = set()
    kept = []
    for path in paths:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            kept.append(path)
    return kept


def round_order(paths: list[Path], round_index: int) -> list[Path]:
    """a b c, then c b a, then a b c ...: no artifact always runs first after a pause or right after one
    neighbour, so drift and neighbours' after-effects fall on every artifact alike."""
    return paths if round_index % 2 == 0 else paths[::-1]


def bench(
    paths: list[Path],
    device: DeviceProfile,
    settings: Settings,
    progress: Progress | None = None,
    op_profiling: bool = False,
) -> list[dict[str, Any]]:
    """One record per artifact (a file given twice is timed once), in the order given; failures are records too
    (status failed, samples kept).
    ``op_profiling`` adds per-op tables: Android's benchmark_model for .tflite, ExecuTorch's ETDump for a .pte
    on the host."""
    check_artifacts(paths)
    paths = distinct(paths)
    progress = progress or (lambda _: None)
    if device.kind == "host":
        return bench_host(paths, device, settings, progress, op_profiling)
    if device.kind == "android":
        from .android import bench_android

        return bench_android(paths, device, settings, progress, op_profiling=op_profiling)
    raise EdgevitError(f"device '{device.name}' is an Apple device, which edgevit does not drive: {device.notes}")


def bench_host(
    paths: list[Path], device: DeviceProfile, settings: Settings, progress: Progress, op_profiling: bool = False
) -> list[dict[str, Any]]:
    from ..runtime import host_cannot_run

    records = {
        p: new_record(p, device.name, target_for_path(p).runtime, settings.threads, asdict(settings)) for p in paths
    }
    env_before = host_environment()
    runnable = []
    for path in paths:
        reason = host_cannot_run(path)
        if reason:
            records[path].update(status="skipped", reason=reason.split(";")[0])
        else:
            runnable.append(path)
    rounds: dict[Path, list[dict[str, Any]]] = {p: [] for p in runnable}
    timeout = 300 + 3 * settings.min_seconds
    for r in range(settings.rounds):
        for path in round_order(runnable, r):
            if records[path]["status"] == "failed":
                continue
            progress(f"{path.name}: round {r + 1}/{settings.rounds}")
            result = run_worker(path, settings, timeout)
            if "error" in result:
                records[path].update(status="failed", error=result["error"])
                continue
            rounds[path].append(result)
    for path, results in rounds.items():
        if not results:
            continue
        rec = records[path]
        rec["runtime"] = results[0]["runtime"]
        rec["samples_ms"] = [s for res in results for s in res["samples_ms"]]
        rec["rounds"] = [
            {"median_ms": statistics.median(res["samples_ms"]), "n": len(res["samples_ms"])} for res in results
        ]
        rec["load_ms"] = statistics.median(res["load_ms"] for res in results)
        rec["memory_mb"] = {
            "peak": max(res["memory_mb"]["peak"] for res in results),
            "model": max(res["memory_mb"]["peak"] - res["memory_mb"]["before_load"] for res in results),
        }
    if op_profiling:
        _add_op_profiles(records, rounds, settings, progress)
    env_after = host_environment()
    for rec in records.values():
        rec["environment"] = {"before": env_before, "after": env_after}
        finish(rec)
    return [records[p] for p in paths]


def _add_op_profiles(records, timed: dict[Path, list], settings: Settings, progress: Progress) -> None:
    """Per-op-type time of every timed .pte, in a traced process after the timed ones."""
    from .op_profile import run_profile

    for path, results in timed.items():
        if not results:
            continue
        if path.suffix != ".pte":
            records[path]["op_profile"] = {"error": "host op profiles read ExecuTorch's ETDump: .pte files only"}
            continue
        progress(f"{path.name}: op profile")
        records[path]["op_profile"] = run_profile(path, settings.threads)

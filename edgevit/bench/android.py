"""Benchmarks on an Android phone over adb: push the artifact and the user's runner binary to a folder of
their own, run ``executor_runner`` (.pte) or ``benchmark_model`` (.tflite) under ``taskset``, parse the log,
record the phone's state before and after, cool down between artifacts, clean up."""

from __future__ import annotations

import re
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..errors import EdgevitError
from ..targets.registry import Target, list_targets
from . import android_env
from .adb import Adb, AdbError, CommandTimeout, DeviceLost
from .devices import DeviceProfile
from .host import Settings
from .parsers import parse_benchmark_model, parse_executor_runner
from .record import finish, new_record

THERMAL_POLL_SECONDS = 5.0


def _device_target(path: Path) -> Target | None:
    """The target of an artifact that a phone can run, None for the others."""
    return next((t for t in list_targets() if t.suffix == path.suffix and t.device_runner), None)


def device_runner(path: Path) -> str | None:
    """The Android binary that times this artifact (executor_runner, benchmark_model), None if there is none."""
    target = _device_target(path)
    return target.device_runner if target else None


def _runner_binaries(paths: list[Path], profile: DeviceProfile) -> dict[str, Path]:
    """The host binaries the artifacts need, checked before anything touches the phone."""
    needed = sorted({device_runner(p) for p in paths} - {None})
    binaries = {}
    for kind in needed:
        configured = profile.runners.get(kind)
        if not configured:
            raise EdgevitError(f"device profile {profile.name} names no {kind}; add runners.{kind}: PATH to it")
        binary = Path(configured)
        if not binary.is_file():
            hint = (
                "build it with `make android-runner` (needs the Android NDK)"
                if kind == "executor_runner"
                else ("download LiteRT's android_aarch64_benchmark_model")
            )
            raise EdgevitError(f"{kind} not found at {binary} (device profile {profile.name}): {hint}")
        binaries[kind] = binary
    return binaries


def _remote_folder(profile: DeviceProfile, artifact: Path) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", artifact.stem)
    return f"{profile.remote_dir}/{safe}"


def _command(path: Path, remote_model: str, remote_runner: str, settings: Settings, op_profiling: bool) -> list[str]:
    if device_runner(path) == "executor_runner":
        # executor_runner has no warm-up option: run warm-up + timed iterations and drop the first ones
        return [
            remote_runner,
            f"--model_path={remote_model}",
            f"--num_executions={settings.warmup + settings.runs}",
            f"--cpu_threads={settings.threads}",
        ]
    cmd = [
        remote_runner,
        f"--graph={remote_model}",
        f"--num_threads={settings.threads}",
        f"--warmup_runs={settings.warmup}",
        f"--num_runs={settings.runs}",
        f"--min_secs={settings.min_seconds}",
        "--report_peak_memory_footprint=true",
    ]
    return [*cmd, "--enable_op_profiling=true"] if op_profiling else cmd


def _apply_output(record: dict[str, Any], path: Path, output: str, warmup: int) -> None:
    """Samples (or the runner's own statistics) and the unrecognised lines from a runner's log."""
    if device_runner(path) == "executor_runner":
        parsed = parse_executor_runner(output)
        record["samples_ms"] = parsed["samples_ms"][warmup:]
        record["warmup_ms"] = parsed["samples_ms"][:warmup]
        if not parsed["samples_ms"] and parsed["total"]:  # a runner build without per-iteration lines
            record["stats"] = {"n": parsed["total"]["runs"], "mean": parsed["total"]["ms"] / parsed["total"]["runs"]}
    else:
        parsed = parse_benchmark_model(output)
        runs = parsed["runs"]
        if runs:  # benchmark_model prints statistics, not samples
            record["stats"] = {"n": runs["count"], **{k: v for k, v in runs.items() if k != "count"}}
            if "avg" in runs:
                record["stats"]["mean"] = runs["avg"]
        for field in ("warmup", "timings_ms", "delegation", "gpu_split", "peak_memory_mb", "op_profile"):
            if parsed.get(field):
                record[field] = parsed[field]
        if parsed.get("peak_memory_mb"):
            record["memory_mb"] = {"peak": parsed["peak_memory_mb"]}
        if parsed.get("timings_ms", {}).get("Init"):
            record["load_ms"] = parsed["timings_ms"]["Init"]
    record["raw_log"] = parsed["unknown_lines"]


def _cool_down(adb: Adb, profile: DeviceProfile, progress) -> int | None:
    """Wait the profile's cool-down, then up to as long again for thermal status 0; the status reached."""
    if profile.cooldown_seconds <= 0:
        return android_env.parse_thermal(adb.shell(["dumpsys", "thermalservice"]).output)["status"]
    progress(f"cooling down {profile.cooldown_seconds:g} s")
    time.sleep(profile.cooldown_seconds)
    deadline = time.monotonic() + profile.cooldown_seconds
    while True:
        status = android_env.parse_thermal(adb.shell(["dumpsys", "thermalservice"]).output)["status"]
        if not status or time.monotonic() >= deadline:
            return status
        time.sleep(THERMAL_POLL_SECONDS)


def bench_android(
    paths: list[Path], profile: DeviceProfile, settings: Settings, progress, op_profiling: bool = False
) -> list[dict[str, Any]]:
    binaries = _runner_binaries(paths, profile)
    adb = Adb.connect(profile.serial, timeout=60.0)
    env = android_env.capture(adb)
    if profile.abi and env.get("abi") and env["abi"] != profile.abi:
        raise EdgevitError(
            f"device {adb.serial} is {env['abi']}, but profile {profile.name} is for {profile.abi}: "
            "use a profile (and runner binaries) built for this phone"
        )
    device_name = f"{profile.name}:{adb.serial}"
    records = []
    lost: str | None = None
    for i, path in enumerate(paths):
        target = _device_target(path)
        record = new_record(path, device_name, target.runtime if target else "", settings.threads, asdict(settings))
        record["settings"]["cpu_mask"] = profile.cpu_mask
        records.append(record)
        if lost:
            record.update(status="not run", error=f"device lost earlier: {lost}")
            continue
        if device_runner(path) is None:
            record.update(status="skipped", reason=f"no Android runner for {path.suffix} files")
            continue
        try:
            _bench_one(
                adb,
                profile,
                path,
                binaries[device_runner(path)],
                settings,
                record,
                progress,
                op_profiling,
                cool_down=i > 0,
            )
        except DeviceLost as e:
            lost = str(e)
            record.update(status="failed", error=lost)
        except AdbError as e:
            record.update(status="failed", error=str(e))
        finish(record)
    return records


def _bench_one(adb, profile, path, binary, settings, record, progress, op_profiling, cool_down) -> None:
    folder = _remote_folder(profile, path)
    remote_model, remote_runner = f"{folder}/{path.name}", f"{folder}/{binary.name}"
    status_before = _cool_down(adb, profile, progress) if cool_down else None
    record["environment"] = {"before": android_env.capture(adb)}
    if status_before is None:
        status_before = record["environment"]["before"]["thermal_status"]
    try:
        progress(f"{path.name}: pushing to {folder}")
        adb.check(["mkdir", "-p", folder])
        adb.push(str(path), remote_model)
        adb.push(str(binary), remote_runner)
        adb.check(["chmod", "755", remote_runner])
        cmd = _command(path, remote_model, remote_runner, settings, op_profiling)
        if device_runner(path) == "executor_runner":  # it runs a fixed count: the record says what was applied
            record["settings"]["min_seconds"] = None
            if settings.min_seconds > 0:
                record.setdefault("flags", []).append(
                    f"executor_runner runs a fixed count ({settings.runs} timed runs); --min-seconds does not apply"
                )
        if profile.cpu_mask:
            cmd = ["taskset", profile.cpu_mask, *cmd]
        record["remote_command"] = cmd
        progress(f"{path.name}: running {binary.name}")
        try:
            result = adb.shell(cmd, timeout=profile.timeout_seconds, stall=profile.stall_seconds)
        except CommandTimeout as e:
            _apply_output(record, path, e.output, settings.warmup)  # keep what was measured before it broke
            _stop(adb, remote_runner)
            raise
        except DeviceLost as e:
            _apply_output(record, path, e.output, settings.warmup)
            raise
        _apply_output(record, path, result.output, settings.warmup)
        if result.returncode != 0:
            last = (result.output.strip().splitlines() or [""])[-1]
            crash = " (crashed)" if result.returncode > 128 else ""
            raise AdbError(f"{binary.name} exited with {result.returncode}{crash} on {adb.serial}: {last[:120]}")
        record["environment"]["after"] = android_env.capture(adb)
        after = record["environment"]["after"]["thermal_status"]
        record["thermal"] = {"status_before": status_before, "status_after": after}
        if status_before is not None and after is not None and after > status_before:
            record.setdefault("flags", []).append(f"thermal status rose from {status_before} to {after} during the run")
    finally:
        _clean_up(adb, folder)


def _stop(adb: Adb, remote_runner: str) -> None:
    """Kill a runner that outlived its timeout (the bracket keeps pkill's own shell from matching)."""
    try:
        adb.shell(["pkill", "-f", f"[{remote_runner[0]}]{remote_runner[1:]}"], timeout=15)
    except AdbError:
        pass


def _clean_up(adb: Adb, folder: str) -> None:
    """Remove what was pushed; a lost device keeps its files."""
    try:
        adb.shell(["rm", "-rf", folder], timeout=30)
    except AdbError:
        pass

"""Benchmark records: one JSON object per (artifact, device, runtime, threads), with raw samples, the
environment, tool versions and the command line, so a run can be reproduced and compared later."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from ..errors import EdgevitError
from ..fileio import atomic_write_json, path_sha256, path_size
from .cpu_features import cpu_flags, fp16_arithmetic, int8_dot_products
from .stats import summarize

SCHEMA = "edgevit.bench/1"


def host_environment() -> dict[str, Any]:
    """What makes host timings comparable: CPU, its int8 dot products and fp16 arithmetic, cores, OS, Python, and
    the load."""
    cpu, dots, fp16 = platform.processor() or platform.machine(), None, None  # no /proc/cpuinfo (macOS): unknown
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        cpuinfo = None
    if cpuinfo is not None:
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")]
        cpu = names[0] if names else cpu
        dots, fp16 = int8_dot_products(cpu_flags(cpuinfo)), fp16_arithmetic(cpu_flags(cpuinfo))
    return {
        "os": platform.platform(),
        "machine": platform.machine(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "int8_dot_products": dots,
        "fp16_arithmetic": fp16,
        "python": platform.python_version(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def artifact_info(path: Path) -> dict[str, Any]:
    return {
        "path": str(path),
        "name": path.name,
        "format": path.suffix.lstrip("."),
        "sha256": path_sha256(path),
        "size_bytes": path_size(path),
    }


def new_record(path: Path, device: str, runtime: str, threads: int | None, settings: dict[str, Any]) -> dict[str, Any]:
    from ..versions import tool_versions

    return {
        "schema": SCHEMA,
        "artifact": artifact_info(path),
        "device": device,
        "runtime": runtime,
        "threads": threads,
        "settings": settings,
        "status": "ok",
        "samples_ms": [],
        "stats": {},
        "command": [Path(sys.argv[0]).name, *sys.argv[1:]],
        "versions": tool_versions(),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def finish(record: dict[str, Any]) -> dict[str, Any]:
    """Fill the statistics from the raw samples (a runner that reports only statistics sets them itself)."""
    if record["samples_ms"]:
        record["stats"] = summarize(record["samples_ms"])
    return record


def key(record: dict[str, Any]) -> tuple:
    return (record["artifact"]["name"], record["device"], record["runtime"], record["threads"])


def write_records(path: Path, records: list[dict[str, Any]]) -> None:
    atomic_write_json(path, {"schema": SCHEMA, "records": records})


def read_records(path: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(path.read_text())
    except OSError as e:
        raise EdgevitError(
            f"cannot read {path} ({e.strerror}); pass a JSON file written by `edgevit bench --json`"
        ) from None
    except json.JSONDecodeError:
        raise EdgevitError(f"{path} is not JSON; pass a file written by `edgevit bench --json`") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA or not isinstance(data.get("records"), list):
        raise EdgevitError(f"{path} is not an edgevit bench file (schema {SCHEMA}); pass one written by --json")
    return data["records"]

"""What an Android phone is and how hot it runs: identity from getprop, thermal and battery state, and the
cores' governors and frequencies. Captured before and after every benchmark; also the source of
``edgevit devices probe``."""

from __future__ import annotations

import re
from typing import Any

from .adb import Adb
from .cpu_features import cpu_flags, fp16_arithmetic, int8_dot_products

_PROP = re.compile(r"^\[([^\]]+)\]: \[(.*)\]$")
_THERMAL_STATUS = re.compile(r"Thermal Status: (\d+)")
_TEMPERATURE = re.compile(r"Temperature\{mValue=([-\d.]+), mType=(-?\d+), mName=([^,]+), mStatus=(\d+)\}")
_BATTERY_TEMP = re.compile(r"^\s*temperature: (-?\d+)", re.MULTILINE)
IDENTITY_PROPS = {
    "model": "ro.product.model",
    "manufacturer": "ro.product.manufacturer",
    "soc": "ro.soc.model",
    "board": "ro.board.platform",
    "android": "ro.build.version.release",
    "sdk": "ro.build.version.sdk",
    "abi": "ro.product.cpu.abi",
}
# one line per core: path, governor, current kHz, max kHz ("-" where the kernel hides a file)
CPU_SCRIPT = (
    "for c in /sys/devices/system/cpu/cpu[0-9]*; do "
    'echo "cpu ${c##*/} $(cat $c/cpufreq/scaling_governor 2>/dev/null || echo -) '
    "$(cat $c/cpufreq/scaling_cur_freq 2>/dev/null || echo -) "
    '$(cat $c/cpufreq/cpuinfo_max_freq 2>/dev/null || echo -)"; done'
)


def parse_getprop(text: str) -> dict[str, str]:
    return {m.group(1): m.group(2) for line in text.splitlines() if (m := _PROP.match(line.strip()))}


def parse_thermal(text: str) -> dict[str, Any]:
    """Thermal status (0 none ... 6 shutdown) and the sensors' temperatures, from the HAL's current readings
    when the dump has them (the cached ones can be stale)."""
    status = _THERMAL_STATUS.search(text)
    current = text.split("Current temperatures from HAL:", 1)
    temps = {}
    for value, _type, name, _status in _TEMPERATURE.findall(current[-1]):
        temps[name.strip()] = float(value)
    return {"status": int(status.group(1)) if status else None, "temperatures_c": temps}


def parse_battery_temperature(text: str) -> float | None:
    m = _BATTERY_TEMP.search(text)
    return int(m.group(1)) / 10.0 if m else None  # dumpsys battery prints tenths of a degree


def parse_cpus(text: str) -> list[dict[str, Any]]:
    cpus = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 5 and parts[0] == "cpu" and parts[1].startswith("cpu"):
            cpus.append(
                {
                    "cpu": int(parts[1][3:]),
                    "governor": None if parts[2] == "-" else parts[2],
                    "cur_khz": int(parts[3]) if parts[3].isdigit() else None,
                    "max_khz": int(parts[4]) if parts[4].isdigit() else None,
                }
            )
    return sorted(cpus, key=lambda c: c["cpu"])


def capture(adb: Adb) -> dict[str, Any]:
    """Identity, thermal status and temperatures, battery temperature, per-core governor and frequency, and
    the int8 dot-product instructions the cores have."""
    props = parse_getprop(adb.check(["getprop"]))
    thermal = parse_thermal(adb.shell(["dumpsys", "thermalservice"]).output)
    return {
        "serial": adb.serial,
        **{name: props.get(prop) for name, prop in IDENTITY_PROPS.items()},
        "thermal_status": thermal["status"],
        "temperatures_c": thermal["temperatures_c"],
        "battery_c": parse_battery_temperature(adb.shell(["dumpsys", "battery"]).output),
        "cpus": parse_cpus(adb.shell_script(CPU_SCRIPT).output),
        **_instruction_sets(cpu_flags(adb.shell(["cat", "/proc/cpuinfo"]).output)),
    }


def _instruction_sets(flags: set[str]) -> dict[str, list[str]]:
    return {"int8_dot_products": int8_dot_products(flags), "fp16_arithmetic": fp16_arithmetic(flags)}


def big_core_mask(cpus: list[dict[str, Any]]) -> str | None:
    """Hex taskset mask of the cores with the highest max frequency tier above the slowest (big and prime)."""
    freqs = [c["max_khz"] for c in cpus if c["max_khz"]]
    if not freqs:
        return None
    slowest = min(freqs)
    chosen = [c["cpu"] for c in cpus if c["max_khz"] and (c["max_khz"] > slowest or max(freqs) == slowest)]
    return format(sum(1 << c for c in chosen), "x")


def profile_from(env: dict[str, Any], name: str) -> dict[str, Any]:
    """A device profile (as YAML-ready data) for the phone ``env`` describes: its serial, ABI, big cores."""
    mask = big_core_mask(env["cpus"])
    big = bin(int(mask, 16)).count("1") if mask else None
    what = " ".join(x for x in (env.get("manufacturer"), env.get("model")) if x) or env["serial"]
    soc = env.get("soc") or env.get("board") or "unknown SoC"
    return {
        "name": name,
        "kind": "android",
        "description": f"{what} ({soc}, Android {env.get('android')}), probed by edgevit",
        "serial": env["serial"],
        "abi": env.get("abi"),
        "cpu_mask": mask,
        "threads": big or len(env["cpus"]) or None,
        "remote_dir": "/data/local/tmp/edgevit",
        "runners": {
            "executor_runner": "build/android/executor_runner",
            "benchmark_model": "build/android/benchmark_model",
        },
        "cooldown_seconds": 30,
        "timeout_seconds": 600,
        "stall_seconds": 120,
    }

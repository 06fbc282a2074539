"""The phone's own tools, as the fake adb's shell finds them: getprop, dumpsys, taskset."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(os.environ["FAKE_ANDROID_ROOT"])
PROPS = {
    "ro.product.model": "Pixel Fake",
    "ro.product.manufacturer": "Google",
    "ro.soc.model": "Tensor G9",
    "ro.board.platform": "fakeboard",
    "ro.build.version.release": "16",
    "ro.build.version.sdk": "36",
    "ro.product.cpu.abi": "arm64-v8a",
}


def thermal_status() -> int:
    path = ROOT / ".thermal_status"
    return int(path.read_text()) if path.exists() else 0


def main(tool: str, args: list[str]) -> None:
    if tool == "getprop":
        if args:
            print(PROPS.get(args[0], ""))
        else:
            for key, value in PROPS.items():
                print(f"[{key}]: [{value}]")
    elif tool == "dumpsys" and args == ["thermalservice"]:
        status = thermal_status()
        print("IsStatusOverride: false")
        print(f"ThermalEventListeners:\n\tcallbacks: 1\nThermal Status: {status}")
        print("Cached temperatures:")
        print(f"\tTemperature{{mValue={31.5 + 8 * status}, mType=0, mName=CPU, mStatus={status}}}")
        print("Current temperatures from HAL:")
        print(f"\tTemperature{{mValue={30.25 + 8 * status}, mType=0, mName=CPU, mStatus={status}}}")
        print(f"\tTemperature{{mValue={29.0 + 5 * status}, mType=2, mName=battery, mStatus=0}}")
    elif tool == "dumpsys" and args == ["battery"]:
        print("Current Battery Service state:\n  AC powered: false\n  USB powered: true\n  level: 87")
        print(f"  temperature: {290 + 50 * thermal_status()}\n  technology: Li-ion")
    elif tool == "taskset":
        mask, command = args[0], args[1:]
        if int(mask, 16) <= 0:
            print(f"taskset: bad mask {mask}", file=sys.stderr)
            sys.exit(1)
        os.execvp(command[0], command)
    else:
        print(f"/system/bin/sh: {tool}: inaccessible or not found", file=sys.stderr)
        sys.exit(127)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])

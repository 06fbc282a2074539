"""Fake ``adb``: devices, push and shell against a folder that plays the phone's file system.

State lives in $FAKE_ANDROID_ROOT: pushed files under its data/local/tmp, cpufreq files under its sys/, the
CPU's features in its proc/cpuinfo, ``.gone`` once the device has dropped off. Shell commands run in /bin/sh
with the phone's paths mapped into that folder and the phone's tools (getprop, dumpsys, taskset) on PATH.

Knobs: FAKE_ANDROID_DEVICES ("SERIAL:state,..."), FAKE_ANDROID_DROP_ON (a word; a shell command containing
it prints FAKE_ANDROID_DROP_AFTER_LINES lines, then the device drops off).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(os.environ["FAKE_ANDROID_ROOT"])
TOOLS = os.environ["FAKE_ANDROID_TOOLS"]  # folder with getprop, dumpsys, taskset
PHONE_PATHS = ("/data/local/tmp", "/sys/devices/system/cpu", "/proc/cpuinfo")


def devices() -> list[tuple[str, str]]:
    spec = os.environ.get("FAKE_ANDROID_DEVICES", "FAKE01:device")
    found = [tuple(item.split(":")) for item in spec.split(",") if item]
    return [d for d in found if not (ROOT / f".gone-{d[0]}").exists()]


def to_host(text: str) -> str:
    for phone_path in PHONE_PATHS:
        text = text.replace(phone_path, str(ROOT) + phone_path)
    return text


def fail(message: str) -> None:
    print(message, file=sys.stderr)
    sys.exit(1)


def main(argv: list[str]) -> None:
    serial = None
    if argv[:1] == ["-s"]:
        serial, argv = argv[1], argv[2:]
    if argv[:1] == ["devices"]:
        print("List of devices attached")
        for s, state in devices():
            print(f"{s}\t{state}")
        print()
        return
    ready = [s for s, state in devices() if state == "device"]
    if serial is None:
        if len(devices()) != 1:
            fail("adb: more than one device/emulator" if devices() else "adb: no devices/emulators found")
        serial = devices()[0][0]
    if serial not in ready:
        fail(f"adb: device '{serial}' not found")
    command, args = argv[0], argv[1:]
    if command == "push":
        local, remote = args
        target = Path(to_host(remote))
        if not target.parent.is_dir():
            fail(f"adb: error: failed to copy '{local}' to '{remote}': remote couldn't create file: No such file")
        shutil.copy2(local, target)
        print(f"{local}: 1 file pushed, 0 skipped.")
        return
    if command == "shell":
        script = " ".join(args)
        env = {**os.environ, "PATH": f"{TOOLS}:{os.environ['PATH']}"}
        drop_on = os.environ.get("FAKE_ANDROID_DROP_ON")
        if drop_on and drop_on in script:
            proc = subprocess.run(["/bin/sh", "-c", to_host(script)], capture_output=True, text=True, env=env)
            keep = int(os.environ.get("FAKE_ANDROID_DROP_AFTER_LINES", "3"))
            print("\n".join(proc.stdout.splitlines()[:keep]))
            (ROOT / f".gone-{serial}").touch()
            fail("error: closed")
        proc = subprocess.run(["/bin/sh", "-c", to_host(script)], env=env)
        sys.exit(proc.returncode)
    fail(f"adb: unknown command {command}")


if __name__ == "__main__":
    main(sys.argv[1:])

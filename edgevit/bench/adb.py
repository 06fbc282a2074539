"""A thin wrapper of the ``adb`` binary: argument lists, timeouts, checked exit codes, clear device errors.

Remote commands are built from argument lists and quoted for the device shell; each one ends with an exit-code
marker, because a dropped connection and a failing command both make ``adb shell`` exit non-zero.
"""

from __future__ import annotations

import os
import selectors
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass

from ..errors import EdgevitError

RC_MARKER = "__EDGEVIT_RC="


class AdbError(EdgevitError):
    """adb or the device failed; ``output`` keeps what the command printed before it did."""

    def __init__(self, message: str, output: str = "") -> None:
        super().__init__(message)
        self.output = output


class DeviceLost(AdbError):
    """The device went away (unplugged, rebooted, adb server restarted) while a command ran."""


class CommandTimeout(AdbError):
    """A remote command ran past its timeout and was stopped."""


def find_adb() -> str:
    """$EDGEVIT_ADB, else ``adb`` on PATH."""
    configured = os.environ.get("EDGEVIT_ADB")
    if configured:
        if not (os.path.isfile(configured) and os.access(configured, os.X_OK)):
            raise EdgevitError(f"EDGEVIT_ADB={configured} is not an executable file; point it at the adb binary")
        return configured
    found = shutil.which("adb")
    if not found:
        raise EdgevitError(
            "adb not found: install Android platform-tools (Debian: apt install adb) or set EDGEVIT_ADB to its path"
        )
    return found


@dataclass(frozen=True)
class ShellResult:
    output: str
    returncode: int


@dataclass
class Adb:
    binary: str
    serial: str | None = None
    timeout: float = 60.0

    # ---------------------------------------------------------------------------------------- devices

    def devices(self) -> list[tuple[str, str]]:
        """(serial, state) of every device ``adb devices`` lists; state is device, unauthorized, offline, ..."""
        out = self._run(["devices"], use_serial=False).stdout
        found = []
        for line in out.splitlines():
            parts = line.split()
            if len(parts) >= 2 and not line.startswith(("List of devices", "*")):
                found.append((parts[0], parts[1]))
        return found

    @classmethod
    def connect(cls, serial: str | None = None, timeout: float = 60.0) -> Adb:
        """An Adb bound to one ready device: ``serial``, or the only device connected."""
        adb = cls(find_adb(), None, timeout)
        devices = adb.devices()
        if serial is None:
            if not devices:
                raise EdgevitError("no Android device connected: plug one in with USB debugging on, then `adb devices`")
            if len(devices) > 1:
                listed = ", ".join(s for s, _ in devices)
                raise EdgevitError(
                    f"{len(devices)} devices connected ({listed}): set `serial` in the device profile to pick one"
                )
            serial, state = devices[0]
        else:
            states = dict(devices)
            if serial not in states:
                listed = ", ".join(states) or "none"
                raise EdgevitError(f"device {serial} is not connected (connected: {listed}); check the cable or serial")
            state = states[serial]
        if state == "unauthorized":
            raise EdgevitError(f"device {serial} is unauthorized: accept the USB debugging prompt on the phone")
        if state == "offline":
            raise EdgevitError(f"device {serial} is offline: reconnect it or run `adb reconnect`")
        if state != "device":
            raise EdgevitError(f"device {serial} is in state '{state}', not ready; wait for it to boot")
        return cls(adb.binary, serial, timeout)

    # --------------------------------------------------------------------------------------- commands

    def shell(self, argv: list[str], timeout: float | None = None, stall: float | None = None) -> ShellResult:
        """Run one command on the device; every argument is quoted for the device shell. ``stall``: stop it as
        hung once it has printed and then printed nothing for that many seconds."""
        return self.shell_script(" ".join(shlex.quote(a) for a in argv), timeout, stall)

    def shell_script(self, script: str, timeout: float | None = None, stall: float | None = None) -> ShellResult:
        """Run a fixed shell script of edgevit's own (globs allowed); never pass user text here unquoted."""
        proc = self._run(["shell", f"{script}; echo {RC_MARKER}$?"], timeout=timeout, check=False, stall=stall)
        lines = proc.stdout.splitlines()
        if not lines or not lines[-1].startswith(RC_MARKER):
            detail = (proc.stderr.strip().splitlines() or ["no exit status came back"])[-1]
            raise DeviceLost(f"lost device {self.serial} while running `{script[:60]}`: {detail}", proc.stdout)
        return ShellResult("\n".join(lines[:-1]), int(lines[-1][len(RC_MARKER) :]))

    def check(self, argv: list[str], timeout: float | None = None) -> str:
        """``shell`` that raises when the command fails."""
        result = self.shell(argv, timeout)
        if result.returncode != 0:
            last = (result.output.strip().splitlines() or [""])[-1]
            raise AdbError(f"`{' '.join(argv)[:80]}` failed on {self.serial} (exit {result.returncode}): {last}")
        return result.output

    def push(self, local: str, remote: str) -> None:
        proc = self._run(["push", local, remote], check=False)
        if proc.returncode != 0:
            detail = (proc.stderr.strip().splitlines() or proc.stdout.strip().splitlines() or ["unknown error"])[-1]
            if "not found" in detail or "offline" in detail or "no devices" in detail:
                raise DeviceLost(f"lost device {self.serial} while pushing {local}: {detail}")
            raise AdbError(f"adb push {local} -> {remote} failed: {detail}")

    def _run(
        self,
        args: list[str],
        timeout: float | None = None,
        check: bool = True,
        use_serial: bool = True,
        stall: float | None = None,
    ) -> subprocess.CompletedProcess:
        cmd = [self.binary, *(["-s", self.serial] if use_serial and self.serial else []), *args]
        try:
            proc = run_watched(cmd, timeout or self.timeout, stall)
        except CommandTimeout as e:
            raise CommandTimeout(f"`adb {' '.join(args)[:60]}` {e}", e.output) from None
        except OSError as e:
            raise AdbError(f"cannot run {self.binary}: {e.strerror}") from None
        if check and proc.returncode != 0:
            detail = (proc.stderr.strip().splitlines() or ["unknown error"])[-1]
            raise AdbError(f"`adb {' '.join(args)[:60]}` failed: {detail}", proc.stdout)
        return proc


def run_watched(cmd: list[str], limit: float, stall: float | None = None) -> subprocess.CompletedProcess:
    """Run ``cmd`` to its end, reading its output as it comes. It is killed, with :class:`CommandTimeout` keeping
    what it printed, after ``limit`` seconds in all, or ``stall`` seconds of silence once its first output came
    (a hung runner stops printing; a long benchmark does not)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    chunks: dict[int, list[bytes]] = {proc.stdout.fileno(): [], proc.stderr.fileno(): []}

    def text(stream) -> str:
        return b"".join(chunks[stream.fileno()]).decode(errors="replace")

    start, last_output = time.monotonic(), None
    # closing the pipes on the way out, timed out or not, hangs up on what the command left running
    with proc.stdout, proc.stderr, selectors.DefaultSelector() as selector:
        for stream in (proc.stdout, proc.stderr):
            selector.register(stream, selectors.EVENT_READ)
        while selector.get_map():
            now = time.monotonic()
            reason, deadline = f"timed out after {limit:g} s", start + limit
            if stall is not None and last_output is not None and last_output + stall < deadline:
                reason, deadline = f"printed nothing for {stall:g} s and was stopped as hung", last_output + stall
            if now >= deadline:
                proc.kill()
                proc.wait()
                raise CommandTimeout(reason, text(proc.stdout))
            for key, _ in selector.select(deadline - now):
                data = os.read(key.fd, 65536)
                if not data:
                    selector.unregister(key.fileobj)
                    continue
                chunks[key.fd].append(data)
                last_output = time.monotonic()
        proc.wait()
        return subprocess.CompletedProcess(cmd, proc.returncode, text(proc.stdout), text(proc.stderr))

"""The whole adb path end to end against a fake phone: a fake ``adb`` on PATH keeps pushed files in a folder,
runs commands in a shell with the phone's tools, and the runner binaries are host stand-ins that run the
real models and print the real runners' formats. Failures included: device gone mid-run, runner crash,
timeout, no/unauthorized/several devices."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest
import yaml

from .conftest import run_cli

FAKE = Path(__file__).parent / "fake_android"
# little x4, big x3, prime x1: the big and prime cores are cpu4-7, mask f0
MAX_KHZ = [1704000] * 4 + [2367000] * 3 + [3014000]


ARM_CPUINFO = """processor\t: 0
BogoMIPS\t: 49.15
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
CPU implementer\t: 0x41
"""


def _wrapper(path: Path, script: Path, *args: str) -> Path:
    path.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{script}" {" ".join(args)} "$@"\n')
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


@pytest.fixture
def phone(tmp_path):
    """A fake phone (serial FAKE01) and a device profile for it; returns (env, profile path, phone root)."""
    root = tmp_path / "phone"
    (root / "data" / "local" / "tmp").mkdir(parents=True)
    for cpu, khz in enumerate(MAX_KHZ):
        freq = root / "sys" / "devices" / "system" / "cpu" / f"cpu{cpu}" / "cpufreq"
        freq.mkdir(parents=True)
        (freq / "scaling_governor").write_text("schedutil\n")
        (freq / "scaling_cur_freq").write_text(f"{khz // 2}\n")
        (freq / "cpuinfo_max_freq").write_text(f"{khz}\n")
    (root / "proc").mkdir()
    (root / "proc" / "cpuinfo").write_text(ARM_CPUINFO)
    adb_bin, tools, runners = tmp_path / "adb-bin", tmp_path / "phone-tools", tmp_path / "runners"
    for folder in (adb_bin, tools, runners):
        folder.mkdir()
    _wrapper(adb_bin / "adb", FAKE / "adb.py")
    for tool in ("getprop", "dumpsys", "taskset"):
        _wrapper(tools / tool, FAKE / "phone_tools.py", tool)
    _wrapper(runners / "executor_runner", FAKE / "executor_runner.py")
    _wrapper(runners / "benchmark_model", FAKE / "benchmark_model.py")
    profile = tmp_path / "fake-phone.yaml"
    profile.write_text(
        yaml.safe_dump(
            {
                "name": "fake-phone",
                "kind": "android",
                "abi": "arm64-v8a",
                "cpu_mask": "f0",
                "threads": 2,
                "runners": {
                    "executor_runner": str(runners / "executor_runner"),
                    "benchmark_model": str(runners / "benchmark_model"),
                },
                "cooldown_seconds": 0,
                "timeout_seconds": 120,
            }
        )
    )
    env = {
        "PATH": f"{adb_bin}{os.pathsep}{os.environ['PATH']}",
        "FAKE_ANDROID_ROOT": str(root),
        "FAKE_ANDROID_TOOLS": str(tools),
        "FAKE_ANDROID_DEVICES": "FAKE01:device",
    }
    return env, profile, root


FAST = ("--warmup", "2", "--runs", "5", "--min-seconds", "0")


def _bench(phone, *paths, extra=(), env=None):
    base_env, profile, root = phone
    out = root.parent / "phone.json"
    proc = run_cli(
        "bench",
        *map(str, paths),
        "--device",
        str(profile),
        *FAST,
        "--json",
        str(out),
        *extra,
        env=base_env | (env or {}),
    )
    records = json.loads(out.read_text())["records"] if out.exists() else None
    return proc, records


def _pushed(root: Path) -> list[Path]:
    return [p for p in (root / "data" / "local" / "tmp").rglob("*") if p.is_file()]


def test_pte_and_tflite_on_the_phone(phone, tiny_artifacts):
    proc, records = _bench(
        phone, tiny_artifacts[".pte"], tiny_artifacts[".tflite"], tiny_artifacts[".onnx"], extra=("--op-profiling",)
    )
    assert proc.returncode == 0, proc.stderr
    pte, tfl, onnx = records
    assert pte["device"] == "fake-phone:FAKE01" and pte["runtime"] == "executorch" and pte["status"] == "ok"
    # executor_runner ran warm-up + timed iterations; the warm-up ones are dropped
    assert len(pte["samples_ms"]) == 5 and len(pte["warmup_ms"]) == 2 and pte["stats"]["n"] == 5
    assert pte["remote_command"][:2] == ["taskset", "f0"]
    assert "--num_executions=7" in pte["remote_command"] and "--cpu_threads=2" in pte["remote_command"]
    assert any("Method loaded." in line for line in pte["raw_log"])
    env = pte["environment"]["before"]
    assert env["model"] == "Pixel Fake" and env["soc"] == "Tensor G9" and env["thermal_status"] == 0
    assert env["battery_c"] == 29.0 and len(env["cpus"]) == 8 and env["cpus"][7]["max_khz"] == 3014000
    assert env["int8_dot_products"] == ["Arm dot product (SDOT)"]
    assert pte["environment"]["after"]["thermal_status"] == 0 and "flags" not in pte
    # benchmark_model reports statistics (ms), its delegation and, asked for, its per-op tables
    assert tfl["status"] == "ok" and tfl["stats"]["n"] == 5 and tfl["stats"]["median"] > 0
    assert tfl["delegation"]["delegate"] == "TfLiteXNNPackDelegate" and tfl["load_ms"] > 0
    assert tfl["op_profile"]["Summary by node type"][0]["node type"] == "DELEGATE"
    assert "--enable_op_profiling=true" in tfl["remote_command"]
    assert onnx["status"] == "skipped" and "no Android runner" in onnx["reason"]
    assert _pushed(phone[2]) == []  # everything pushed was cleaned up


def test_thermal_rise_is_flagged(phone, tiny_artifacts):
    proc, records = _bench(phone, tiny_artifacts[".pte"], env={"FAKE_RUNNER_HEAT": "1"})
    assert proc.returncode == 0, proc.stderr
    assert records[0]["thermal"] == {"status_before": 0, "status_after": 1}
    assert records[0]["flags"] == ["thermal status rose from 0 to 1 during the run"]
    assert "thermal status rose" in proc.stdout


def test_runner_crash_keeps_the_samples_before_it(phone, tiny_artifacts):
    proc, records = _bench(
        phone, tiny_artifacts[".pte"], tiny_artifacts[".tflite"], env={"FAKE_RUNNER_CRASH_AFTER": "5"}
    )
    assert proc.returncode == 1 and "1 of 2 benchmarks failed" in proc.stderr
    crashed, other = records
    assert crashed["status"] == "failed" and "exited with 134 (crashed)" in crashed["error"]
    assert len(crashed["samples_ms"]) == 3  # 5 iterations ran, 2 of them warm-up
    assert other["status"] == "ok"  # the next artifact still runs
    assert _pushed(phone[2]) == []


def test_a_silent_runner_is_stopped_as_hung_and_keeps_its_samples(phone, tiny_artifacts):
    """A runner that stops printing mid-run is stopped after the profile's stall_seconds of silence, long before
    its timeout_seconds; the silence counts from its first line, so a slow start (Python, torch and the .pte here,
    beside the other test worker's exports) is not a stall."""
    base_env, profile, root = phone
    data = yaml.safe_load(profile.read_text()) | {"stall_seconds": 3, "timeout_seconds": 600}
    profile.write_text(yaml.safe_dump(data))
    proc, records = _bench(phone, tiny_artifacts[".pte"], env={"FAKE_RUNNER_HANG_AFTER": "4"})
    assert proc.returncode == 1 and "printed nothing for 3 s and was stopped as hung" in proc.stderr
    assert records[0]["status"] == "failed" and len(records[0]["samples_ms"]) == 2


def test_a_command_past_its_timeout_is_stopped_with_what_it_printed():
    from edgevit.bench.adb import CommandTimeout, run_watched

    talking = "import time\nfor i in range(100):\n    print(i, flush=True)\n    time.sleep(0.2)"
    with pytest.raises(CommandTimeout, match="timed out after 1 s") as stopped:
        run_watched([sys.executable, "-c", talking], limit=1.0, stall=0.5)  # never silent for 0.5 s
    assert stopped.value.output.startswith("0\n1\n")


def test_device_gone_mid_run(phone, tiny_artifacts):
    env = {"FAKE_ANDROID_DROP_ON": "executor_runner --model_path", "FAKE_ANDROID_DROP_AFTER_LINES": "7"}
    proc, records = _bench(phone, tiny_artifacts[".pte"], tiny_artifacts[".tflite"], env=env)
    assert proc.returncode == 1 and "lost device FAKE01" in proc.stderr
    lost, rest = records
    # 7 log lines reached the host: 4 set-up lines and iterations 1-3, of which 2 are warm-up
    assert lost["status"] == "failed" and len(lost["samples_ms"]) == 1
    assert rest["status"] == "not run" and "device lost earlier" in rest["error"]
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "devices,message",
    [
        ("", "no Android device connected"),
        ("FAKE01:unauthorized", "unauthorized: accept the USB debugging prompt"),
        ("FAKE01:offline", "offline: reconnect it"),
        ("FAKE01:device,FAKE02:device", "2 devices connected (FAKE01, FAKE02)"),
    ],
)
def test_device_selection_errors(phone, tiny_artifacts, devices, message):
    proc, _ = _bench(phone, tiny_artifacts[".pte"], env={"FAKE_ANDROID_DEVICES": devices})
    assert proc.returncode == 2 and message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


def test_setup_errors_come_before_the_phone_is_touched(phone, tiny_artifacts, tmp_path):
    base_env, profile, root = phone
    data = yaml.safe_load(profile.read_text())
    missing = dict(data, runners={"executor_runner": str(tmp_path / "nope")})
    profile.write_text(yaml.safe_dump(missing))
    proc, _ = _bench(phone, tiny_artifacts[".pte"])
    assert proc.returncode == 2 and "executor_runner not found" in proc.stderr and "make android-runner" in proc.stderr
    profile.write_text(yaml.safe_dump(dict(data, abi="x86_64")))
    proc, _ = _bench(phone, tiny_artifacts[".pte"])
    assert proc.returncode == 2 and "is arm64-v8a, but profile fake-phone is for x86_64" in proc.stderr
    no_adb = run_cli(
        "bench",
        str(tiny_artifacts[".pte"]),
        "--device",
        str(profile),
        env=base_env | {"PATH": "/usr/bin:/bin", "EDGEVIT_ADB": ""},
    )
    assert no_adb.returncode == 2 and "adb not found" in no_adb.stderr
    assert _pushed(root) == []


def test_probe_writes_a_profile_found_by_name(phone, tmp_path):
    home = tmp_path / "home"
    env = phone[0] | {"EDGEVIT_HOME": str(home)}
    probe = ("devices", "probe")  # by default into the user folder, never the shipped devices/
    proc = run_cli(*probe, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / "devices").exists()
    written = yaml.safe_load((home / "devices" / "pixel-fake.yaml").read_text())
    assert written["serial"] == "FAKE01" and written["cpu_mask"] == "f0" and written["threads"] == 4
    assert "Google Pixel Fake (Tensor G9, Android 16)" in written["description"]
    again = run_cli(*probe, cwd=tmp_path, env=env)
    assert again.returncode == 2 and "--force" in again.stderr
    listed = run_cli("devices", "--json", cwd=tmp_path, env=env)  # found by name in the user folder
    assert "pixel-fake" in {p["name"] for p in json.loads(listed.stdout)}


def test_probe_writes_to_the_user_folder_not_the_shipped_one(phone, tmp_path, monkeypatch):
    from edgevit.bench import devices
    from edgevit.errors import EdgevitError

    for key, value in phone[0].items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("EDGEVIT_HOME", str(tmp_path / "home"))
    shipped = sorted(devices.BUILTIN_DIR.iterdir())
    path, profile = devices.probe()
    assert path == tmp_path / "home" / "devices" / "pixel-fake.yaml" and profile["serial"] == "FAKE01"
    assert devices.get_profile("pixel-fake").source == str(path)
    with pytest.raises(EdgevitError, match="--force"):
        devices.probe()
    with pytest.raises(EdgevitError, match="shipped device profiles"):
        devices.probe(output_dir=devices.BUILTIN_DIR, force=True)
    assert sorted(devices.BUILTIN_DIR.iterdir()) == shipped


def test_user_folder_follows_the_environment(tmp_path, monkeypatch):
    from edgevit.bench.devices import user_dir

    monkeypatch.delenv("EDGEVIT_HOME", raising=False)
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert user_dir() == tmp_path / ".config" / "edgevit" / "devices"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert user_dir() == tmp_path / "xdg" / "edgevit" / "devices"
    monkeypatch.setenv("EDGEVIT_HOME", str(tmp_path / "home"))
    assert user_dir() == tmp_path / "home" / "devices"

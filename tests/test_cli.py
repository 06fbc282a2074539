"""The edgevit command as a user runs it: a real export of LVT, and one-line errors for bad input.

Argument and validation errors run the command in this process (``edgevit.cli.run``); real exports and
signals run it as its own process, as a user does."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import time

import numpy as np
import pytest
import torch

from edgevit.cli import run
from edgevit.data import load_images
from edgevit.models import create_model, get_entry
from edgevit.models.stats import cached_model_stats, stats_cache_path
from edgevit.runtime import open_runner

from .conftest import EDGEVIT, run_cli, run_cli_here


def test_existing_artifact_needs_force(tmp_path):
    """As its own process: the user error is one line on stderr and exit 2, with third-party noise silenced."""
    pte = tmp_path / "lvt-executorch-xnnpack-fp32.pte"
    pte.write_bytes(b"kept")
    proc = run_cli("export", "lvt", "--output-dir", str(tmp_path))
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "already exists; pass --force" in lines[0], proc.stderr
    assert pte.read_bytes() == b"kept"


@pytest.fixture
def cli(capsys, monkeypatch):
    """Runs the command in this process: its exit code, stdout and stderr."""
    monkeypatch.delenv("EDGEVIT_DEBUG", raising=False)  # with it set, user errors raise with a traceback

    def call(*args: str) -> tuple[int, str, str]:
        status = run(list(args))
        captured = capsys.readouterr()
        return status, captured.out, captured.err

    return call


@pytest.fixture
def user_error(cli):
    """A user mistake: exit `code` and one line on stderr, which is returned."""

    def fail(*args: str, code: int = 2) -> str:
        status, _, err = cli(*args)
        assert status == code, err
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1, err
        return lines[0]

    return fail


@pytest.fixture
def usage_error(cli):
    """A malformed command line: click's usage line, a hint and the error, exit 2; the error line is returned."""

    def fail(*args: str) -> str:
        status, _, err = cli(*args)
        assert status == 2, err
        lines = [line for line in err.splitlines() if line.strip()]
        assert lines[0].startswith("Usage: ") and lines[-1].startswith("Error: "), err
        return lines[-1]

    return fail


def test_bad_input_gets_one_line_errors(tmp_path, user_error):
    out = str(tmp_path / "out")
    assert "unknown model 'lvt_xl'" in user_error("export", "lvt_xl", "--output-dir", out)
    assert "target 'tensorrt'" in user_error("export", "lvt", "--target", "tensorrt", "--output-dir", out)
    assert "multiple of 32" in user_error("export", "lvt", "--input-size", "100", "--output-dir", out)
    assert "checkpoint not found" in user_error(
        "export", "lvt", "--checkpoint", str(tmp_path / "x.pth"), "--output-dir", out
    )
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"\x80\x02garbage")
    assert "cannot be loaded as tensors only" in user_error(
        "export", "lvt", "--checkpoint", str(corrupt), "--output-dir", out
    )
    text = tmp_path / "notes.pth"
    text.write_text("hello")
    not_a_checkpoint = user_error("export", "lvt", "--checkpoint", str(text), "--output-dir", out)
    assert "(not a PyTorch checkpoint file)" in not_a_checkpoint
    assert "--json " + str(tmp_path) + " is a directory" in user_error("bench", str(corrupt), "--json", str(tmp_path))
    wrong = tmp_path / "cls.pth"
    torch.save(create_model("lvt_cls").state_dict(), wrong)
    assert "unexpected (aux_head.bias" in user_error("export", "lvt", "--checkpoint", str(wrong), "--output-dir", out)
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert "cannot create output directory" in user_error("export", "lvt", "--output-dir", str(blocker / "sub"))
    assert "unknown recipe" in user_error("export", "lvt", "--recipe", "nope", "--output-dir", out)
    assert "image folder not found" in user_error(
        "export", "lvt", "--images", str(tmp_path / "none"), "--output-dir", out
    )
    assert not (tmp_path / "out").exists()  # nothing created for a failed export


def test_malformed_command_lines_are_usage_errors(usage_error):
    assert "No such command 'verfy'" in usage_error("verfy")
    assert "No such option: --colour" in usage_error("models", "--colour")
    assert "Missing argument 'model'" in usage_error("export")
    at_least_one = "Input should be greater than or equal to 1"
    assert f"'--num-images': {at_least_one}" in usage_error("export", "lvt", "--num-images", "0")
    assert f"'--calib-count': {at_least_one}" in usage_error("export", "lvt", "--calib-count", "0")
    assert "'--runs': " in usage_error("bench", "x.onnx", "--runs", "0")


def test_models_json_lists_params_and_macs(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    status, listing, err = cli("models", "--json")
    assert status == 0, err
    rows = {r["name"]: r for r in json.loads(listing)}
    assert rows["lvt"]["params_m"] == pytest.approx(3.687, abs=0.004)
    assert rows["lvt_cls"]["params_m"] == pytest.approx(5.522, abs=0.006)
    assert 0.8 < rows["lvt"]["gmacs"] < 0.95 and rows["lvt"]["input_size"] == 224

    # the second listing reads the figures from the cache the first one wrote, building no model
    assert (tmp_path / "edgevit" / "model-stats.json").is_file()

    def build_nothing(name):
        raise AssertionError(f"{name} was measured again")

    monkeypatch.setattr("edgevit.models.stats.model_stats", build_nothing)
    assert cli("models", "--json") == (0, listing, "")


def test_model_stats_cache_renews_when_the_code_changes(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    cache = stats_cache_path()
    cache.parent.mkdir(parents=True)
    stale = {"lvt": {"name": "lvt", "params_m": 99.0, "gmacs": 99.0, "input_size": 224, "description": ""}}
    cache.write_text(json.dumps({"fingerprint": "older model code", "models": stale}))
    measured = []
    (row,) = cached_model_stats(["lvt"], on_measure=measured.append)
    assert measured == ["lvt"] and row["params_m"] == pytest.approx(3.687, abs=0.004)
    assert json.loads(cache.read_text())["models"]["lvt"] == row


def test_help_explains_export(cli):
    status, help_text, _ = cli("export", "--help")
    assert status == 0 and "--checkpoint" in help_text and "edgevit export lvt" in help_text


def test_sigterm_during_export_leaves_nothing_behind(tmp_path):
    """`kill` while the candidate .pte is being verified: the run unwinds as Ctrl-C does, exit 143."""
    out = tmp_path / "out"
    args = ["export", "lvt_test", "--num-images", "16", "--output-dir", str(out)]
    proc = subprocess.Popen([*EDGEVIT, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    partial = out / ".lvt_test-executorch-xnnpack-fp32.partial.pte"
    deadline = time.monotonic() + 600
    while not partial.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.01)
    assert partial.exists(), f"the export ended before writing its candidate: {proc.communicate()[1][-300:]}"
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 143 and "terminated; no half-written file was left" in stderr
    assert "Traceback" not in stderr
    assert not out.exists()  # not even the folder the export made


def test_target_all_writes_every_target_and_exits_3_when_one_fails(tmp_path):
    """`--target all` as a user runs it, with a checkpoint the test writes itself: four gated artifacts and their
    manifests (the .pte's checked in full and run against the checkpoint's model); run again, every artifact
    already exists, so each target fails on its own, the files are kept, and the exit code says so."""
    torch.manual_seed(123)
    ckpt = tmp_path / "lvt_test.pth.tar"
    torch.save({"state_dict": create_model("lvt_test").state_dict(), "epoch": 1}, ckpt)
    out = tmp_path / "out"
    args = ("export", "lvt_test", "--target", "all", "--checkpoint", str(ckpt), "--num-images", "4")
    proc = run_cli(*args, "--output-dir", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    rows = {row["target"]: row for row in json.loads(proc.stdout)}
    assert set(rows) == {"executorch", "tflite", "onnx", "coreml"}
    assert all(row["ok"] and row["gates"]["passed"] for row in rows.values()), rows
    written = {path: path.stat().st_mtime_ns for path in out.iterdir()}
    assert len(written) == 8  # four artifacts and their manifests, no temp files left

    pte = out / "lvt_test-executorch-xnnpack-fp32.pte"
    manifest = json.loads((out / "lvt_test-executorch-xnnpack-fp32.manifest.json").read_text())
    assert rows["executorch"]["artifact_path"] == str(pte) and manifest == {
        k: v for k, v in rows["executorch"].items() if k not in ("target", "ok", "artifact_path")
    }
    assert manifest["artifact"]["sha256"] == hashlib.sha256(pte.read_bytes()).hexdigest()
    assert manifest["artifact"]["size_bytes"] == pte.stat().st_size
    assert manifest["audit"]["partitions"] == 1 and manifest["audit"]["ops_outside"] == {}
    assert manifest["audit"]["max_rank"] <= 4
    assert manifest["numerics"]["samples"] == 4 and manifest["numerics"]["runtime"] == "executorch"
    assert manifest["numerics"]["max_abs_diff"] < 1e-4 and manifest["numerics"]["top1_agreement"] == 1.0
    assert manifest["lowering"]["vs_training_form"]["max_abs_diff"] <= 1e-4
    assert manifest["input"]["shape"] == [1, 3, 64, 64]
    assert manifest["input"]["preprocessing"]["mean"] == [0.485, 0.456, 0.406]
    assert manifest["weights"]["sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert manifest["gates"] == {"passed": True, "failures": [], "overridden": False}
    assert manifest["versions"]["executorch"] == "1.5.1"
    model = create_model("lvt_test", checkpoint=ckpt).eval()
    photos = load_images(None, get_entry("lvt_test").input_spec, 64, limit=2)
    with torch.no_grad():
        reference = model(photos).numpy()
    assert np.abs(reference - open_runner(pte).run_batch(photos.numpy())).max() < 1e-4

    again = run_cli_here(*args, "--output-dir", str(out), "--json")
    assert again.returncode == 3, again.stderr
    failed = json.loads(again.stdout)
    assert [r["ok"] for r in failed] == [False] * 4 and all("--force" in r["error"] for r in failed)
    assert {path: path.stat().st_mtime_ns for path in out.iterdir()} == written

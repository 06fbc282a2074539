"""Labelled image folders, the offline digits set, and `edgevit qat` end to end: train, checkpoint, resume,
Ctrl-C, export."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time

import pytest
import torch

from edgevit.errors import EdgevitError
from edgevit.train.qat import QATRun, load_checkpoint

from .conftest import EDGEVIT, run_cli_here


def test_digits_are_real_scans_with_a_balanced_split(digits):
    train = {d.name: len(list(d.iterdir())) for d in (digits / "train").iterdir()}
    val = {d.name: len(list(d.iterdir())) for d in (digits / "val").iterdir()}
    assert sorted(train) == [str(i) for i in range(10)] and sum(train.values()) == 1437
    assert all(abs(val[c] / (train[c] + val[c]) - 0.2) < 0.02 for c in train)  # stratified
    again = run_cli_here("datasets", "digits", str(digits))
    assert again.returncode == 2 and "is not empty" in again.stderr


def test_bad_data_folders_are_one_line_errors(tmp_path, small):
    missing = run_cli_here("qat", "lvt", "--data", str(tmp_path / "nope"), "--target", "executorch")
    assert missing.returncode == 2 and "--data folder not found" in missing.stderr
    no_val = run_cli_here(
        "qat", "lvt", "--data", str(small / "train"), "--val", str(tmp_path / "nope"), "--target", "executorch"
    )
    assert no_val.returncode == 2 and "--val folder not found" in no_val.stderr
    one = tmp_path / "one"
    shutil.copytree(small / "train" / "0", one / "0")
    single = run_cli_here("qat", "lvt", "--data", str(one), "--target", "executorch")
    assert single.returncode == 2 and "1 class subfolder" in single.stderr
    (one / "1").mkdir()
    (one / "2").mkdir()
    empty = run_cli_here("qat", "lvt", "--data", str(one), "--target", "executorch")
    assert empty.returncode == 2 and "has no images" in empty.stderr
    onnx = run_cli_here("qat", "lvt", "--data", str(small / "train"), "--target", "onnx")
    assert onnx.returncode == 2 and "QAT targets" in onnx.stderr
    for result in (missing, single, empty, onnx):
        assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_qat_checkpoints_survives_ctrl_c_resumes_and_exports(tmp_path, small):
    """One run, as a user lives it: Ctrl-C after the first checkpoint keeps it and exports nothing; the same
    command with more epochs resumes after the saved ones and exports the gated int8 artifact. The tiny
    registered LVT: checkpoints, resuming and the export's gate against the QAT-trained model are plumbing."""
    checkpoint = tmp_path / "lvt_test-executorch-xnnpack-int8.qat.pt"
    args = ["qat", "lvt_test", "--data", str(small / "train"), "--val", str(small / "val"), "--target", "executorch"]
    args += ["--input-size", "64", "--batch-size", "12", "--output-dir", str(tmp_path), "--no-compare-fp32"]
    proc = subprocess.Popen(
        [*EDGEVIT, *args, "--epochs", "500"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 600
    while not checkpoint.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)
    assert checkpoint.exists(), proc.communicate()[1]
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 130 and "last good checkpoint is" in stderr and "rerun to resume" in stderr
    state = torch.load(checkpoint, weights_only=False)
    done = state["epoch"]
    assert done >= 1 and [h["epoch"] for h in state["history"]] == list(range(1, done + 1))
    assert not list(tmp_path.glob("*.pte"))  # nothing exported from an interrupted run

    # the same command with one epoch more resumes after the saved ones instead of starting over
    resumed = run_cli_here(*args, "--epochs", str(done + 1), "--json")
    assert resumed.returncode == 0, resumed.stderr
    manifest = json.loads(resumed.stdout)
    qat = manifest["quantization"]["qat"]
    assert [h["epoch"] for h in qat["history"]] == list(range(1, done + 2))
    assert qat["history"][:done] == state["history"] and qat["classes"] == ["0", "1", "2"]
    assert manifest["weights"]["checkpoint"] == str(checkpoint)
    assert manifest["numerics"]["reference"].startswith("the QAT-trained model")
    assert manifest["numerics"]["sqnr_db"] >= 20 and manifest["gates"]["passed"]
    assert manifest["output"]["shape"] == [1, 3] and manifest["labels"] == ["0", "1", "2"]
    assert 0.0 <= qat["val_accuracy_artifact"] <= 1.0
    # verify rebuilds the QAT-trained reference from the manifest and the checkpoint, and finds the same numerics
    verified = run_cli_here("verify", str(tmp_path / "lvt_test-executorch-xnnpack-int8.pte"), "--json")
    assert verified.returncode == 0, verified.stderr
    assert json.loads(verified.stdout)["numerics"]["sqnr_db"] == pytest.approx(manifest["numerics"]["sqnr_db"], abs=0.1)
    # without --force an existing artifact stops the run before any training
    again = run_cli_here(*args, "--epochs", str(done + 2))
    assert again.returncode == 2 and "--force" in again.stderr and f"epoch {done + 2}" not in again.stderr

    # another run's checkpoint is refused, not silently reused
    other = QATRun("lvt_test", "executorch", "executorch-xnnpack-int8", 96, ["0", "1", "2"])
    with pytest.raises(EdgevitError, match="checkpoint of another run"):
        load_checkpoint(checkpoint, other)
    # so is one of the same run on another graph (an older deploy form) or from other --init weights
    saved = torch.load(checkpoint, weights_only=False)["run"]
    same = (saved["model"], saved["target"], saved["recipe"], 64, saved["classes"])
    assert load_checkpoint(checkpoint, QATRun(*same, saved["init"], saved["graph"]))["epoch"] == done + 1
    with pytest.raises(EdgevitError, match="another graph of lvt_test"):
        load_checkpoint(checkpoint, QATRun(*same, saved["init"], "0" * 16))
    with pytest.raises(EdgevitError, match="other --init weights"):
        load_checkpoint(checkpoint, QATRun(*same, "0" * 64, saved["graph"]))


@pytest.mark.parametrize("target", ["tflite", "coreml"])
def test_qat_runs_with_each_targets_own_quantizer(tmp_path, small, target):
    args = ["qat", "lvt_test", "--data", str(small / "train"), "--target", target, "--epochs", "1", "--no-compare-fp32"]
    proc = run_cli_here(*args, "--input-size", "64", "--batch-size", "12", "--output-dir", str(tmp_path), "--json")
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads(proc.stdout)
    assert manifest["quantization"]["qat"]["history"][0]["epoch"] == 1
    assert manifest["gates"]["passed"], manifest["gates"]
    if target == "tflite":  # runs here: the artifact is checked against the QAT-trained model
        assert manifest["numerics"]["sqnr_db"] >= 20
    else:  # Core ML cannot predict off macOS: gated on the PyTorch run of the quantized graph
        assert manifest["quantization"]["simulated"]["sqnr_db"] >= 20

"""MMViT through `edgevit export --target all`, for images and for 1-channel non-square spectrograms, with
the same gates as LVT: one XNNPACK partition, builtin-only TFLite, Core ML without gather/scatter, rank <= 4
and at most 20 transposes, and numerics against the training form in each runtime that runs here."""

from __future__ import annotations

import json

import pytest

from .conftest import run_cli


def _export_all(model: str, size: str, out) -> dict[str, dict]:
    proc = run_cli("export", model, "--target", "all", "--input-size", size, "--output-dir", str(out), "--json")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    rows = {row["target"]: row for row in json.loads(proc.stdout)}
    assert set(rows) == {"executorch", "coreml", "tflite", "onnx"}
    assert all(row["ok"] and row["gates"]["passed"] for row in rows.values()), rows
    return rows


def _check_gates(rows: dict[str, dict]) -> None:
    assert rows["executorch"]["audit"]["partitions"] == 1 and not rows["executorch"]["audit"]["ops_outside"]
    assert rows["coreml"]["audit"]["transposes"] <= 20 and rows["coreml"]["audit"]["max_rank"] <= 4
    assert rows["coreml"]["numerics"]["skipped"].startswith("Core ML prediction needs macOS")
    assert rows["tflite"]["audit"]["all_builtin"] and rows["tflite"]["audit"]["max_rank"] <= 4
    for target in ("executorch", "tflite", "onnx"):
        numerics = rows[target]["numerics"]
        assert numerics["max_abs_diff"] < 1e-3 and numerics["top1_agreement"] == 1.0, (target, numerics)


@pytest.mark.parametrize("model", ["mmvit_xs"])
def test_mmvit_exports_to_every_target(tmp_path, model):
    rows = _export_all(model, "64", tmp_path)
    _check_gates(rows)
    assert rows["onnx"]["input"]["shape"] == [1, 3, 64, 64]


def test_audio_config_takes_a_non_square_one_channel_map_on_every_target(tmp_path):
    rows = _export_all("mmvit_xs_audio", "64x256", tmp_path)
    _check_gates(rows)
    entry = rows["tflite"]["input"]
    assert entry["shape"] == [1, 1, 64, 256] and entry["name"] == "spectrogram"
    assert "log-mel" in entry["preprocessing"]["features"] and "photos" in entry["preprocessing"]["verified_on"]
    assert rows["tflite"]["output"]["shape"] == [1, 527]
    proc = run_cli("verify", rows["onnx"]["artifact_path"], "--num-images", "2", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["numerics"]["max_abs_diff"] < 1e-3


def test_bad_input_sizes_are_one_line_errors(tmp_path):
    for size, message in (("64x", "is not a size"), ("64x100", "multiple of 32"), ("abc", "is not a size")):
        proc = run_cli("export", "mmvit_xs", "--input-size", size, "--output-dir", str(tmp_path))
        assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1


def test_mmvit_qat_trains_and_exports_int8(tmp_path, small):
    args = ["qat", "mmvit_xs", "--data", str(small / "train"), "--val", str(small / "val"), "--target", "executorch"]
    proc = run_cli(*args, "--epochs", "1", "--input-size", "64", "--output-dir", str(tmp_path), "--json")
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads(proc.stdout)
    assert manifest["gates"]["passed"] and manifest["audit"]["partitions"] == 1
    assert manifest["numerics"]["sqnr_db"] >= 20 and manifest["output"]["shape"] == [1, 3]

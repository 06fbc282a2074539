"""CLI for the Core ML and ONNX targets, verify and inspect, and their one-line errors (run in this process)."""

from __future__ import annotations

import json
import shutil

import onnx
import pytest

from edgevit.cli import run
from edgevit.models import create_model

from .conftest import run_cli_here


@pytest.fixture(scope="session")
def out_dir(artifact_cache):
    """lvt_test exported by the CLI to Core ML and ONNX, once per run (both workers read the same folder)."""

    def build(folder):
        for target in ("coreml", "onnx"):
            proc = run_cli_here(
                "export", "lvt_test", "--target", target, "--output-dir", str(folder), "--num-images", "3"
            )
            assert proc.returncode == 0, proc.stderr

    return artifact_cache.folder("cli-lvt_test-coreml-onnx", build)


def test_coreml_export_says_numerics_need_macos(out_dir):
    manifest = json.loads((out_dir / "lvt_test-coreml-fp16.manifest.json").read_text())
    assert manifest["numerics"]["skipped"].startswith("Core ML prediction needs macOS")
    assert "max_abs_diff" not in manifest["numerics"]
    assert manifest["audit"]["max_rank"] <= 4 and manifest["gates"]["passed"]
    assert (out_dir / "lvt_test-coreml-fp16.mlpackage").is_dir()
    assert not [p for p in out_dir.iterdir() if p.name.startswith(".")]  # no temp leftovers


def test_verify_onnx_reruns_numerics(out_dir):
    proc = run_cli_here("verify", str(out_dir / "lvt_test-onnx-fp32.onnx"), "--num-images", "2", "--json")
    assert proc.returncode == 0, proc.stderr
    num = json.loads(proc.stdout)["numerics"]
    assert num["runtime"] == "onnxruntime" and num["samples"] == 2 and num["max_abs_diff"] < 1e-4


def test_verify_coreml_is_a_clear_skip(out_dir):
    proc = run_cli_here("verify", str(out_dir / "lvt_test-coreml-fp16.mlpackage"))
    assert proc.returncode == 0
    assert "needs macOS" in proc.stdout


def test_inspect_reads_the_manifest_or_the_bare_file(out_dir, tmp_path):
    proc = run_cli_here("inspect", str(out_dir / "lvt_test-onnx-fp32.onnx"), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["source"] == "manifest"
    bare = tmp_path / "bare.mlpackage"
    shutil.copytree(out_dir / "lvt_test-coreml-fp16.mlpackage", bare)
    proc = run_cli_here("inspect", str(bare), "--json")
    info = json.loads(proc.stdout)
    exported = json.loads((out_dir / "lvt_test-coreml-fp16.manifest.json").read_text())["audit"]
    assert info["source"] == "file" and info["audit"]["max_rank"] <= 4 and info["audit"]["ops"]["layer_norm"] > 0
    assert info["audit"]["ops"] == exported["ops"]  # read back from the file alone, as the export counted them


@pytest.fixture
def user_error(capsys, monkeypatch):
    """Runs the command in this process: it must exit with `code` and say why in one line on stderr."""
    monkeypatch.delenv("EDGEVIT_DEBUG", raising=False)  # with it set, user errors raise with a traceback

    def fail(*args: str, code: int = 2) -> str:
        status = run(list(args))
        err = capsys.readouterr().err
        assert status == code, err
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1, err
        return lines[0]

    return fail


def test_bad_artifacts_get_one_line_errors(tmp_path, user_error):
    corrupt = tmp_path / "corrupt.pte"
    corrupt.write_bytes(b"\x00" * 64)
    assert "cannot be read as .pte" in user_error("inspect", str(corrupt))
    assert "no manifest beside" in user_error("verify", str(corrupt))
    assert "artifact not found" in user_error("inspect", str(tmp_path / "missing.onnx"))
    text = tmp_path / "notes.txt"
    text.write_text("hi")
    assert "not an artifact edgevit knows" in user_error("inspect", str(text))


def test_a_changed_artifact_fails_verify(out_dir, tmp_path, user_error):
    tampered = tmp_path / "lvt_test-onnx-fp32.onnx"
    shutil.copy(out_dir / "lvt_test-onnx-fp32.onnx", tampered)
    shutil.copy(out_dir / "lvt_test-onnx-fp32.manifest.json", tmp_path / "lvt_test-onnx-fp32.manifest.json")
    with tampered.open("ab") as f:
        f.write(b"\x00")
    assert "does not match the sha256" in user_error("verify", str(tampered))


def _copy_onnx(out_dir, folder, edit_manifest=None):
    """The exported lvt_test .onnx and its manifest in ``folder``, the manifest passed through ``edit_manifest``."""
    artifact = folder / "lvt_test-onnx-fp32.onnx"
    shutil.copy(out_dir / artifact.name, artifact)
    manifest = json.loads((out_dir / "lvt_test-onnx-fp32.manifest.json").read_text())
    edited = edit_manifest(manifest) if edit_manifest else manifest
    (folder / "lvt_test-onnx-fp32.manifest.json").write_text(json.dumps(edited))
    return artifact


def test_verify_exits_3_when_the_numerics_miss_the_recipe_gates(out_dir, tmp_path, user_error):
    def other_weights(manifest):  # the reference rebuilt with another seed: another model than the artifact's
        manifest["weights"]["seed"] = 1
        return manifest

    artifact = _copy_onnx(out_dir, tmp_path, other_weights)
    assert "recipe onnx-fp32: max abs diff" in user_error("verify", str(artifact), "--num-images", "2", code=3)


def test_inspect_reads_a_changed_file_not_its_manifest(out_dir, tmp_path):
    artifact = _copy_onnx(out_dir, tmp_path)
    model = onnx.load(str(artifact))
    model.doc_string = "edited after export"  # still a valid model, but not the bytes the manifest describes
    onnx.save(model, str(artifact))
    proc = run_cli_here("inspect", str(artifact), "--json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["source"] == "file" and "sha256 differs" in info["note"]


def test_manifests_that_verify_cannot_use_get_one_line_errors(out_dir, tmp_path, user_error):
    artifact = _copy_onnx(out_dir, tmp_path, lambda manifest: [1, 2])
    assert "is not an edgevit manifest (not a mapping)" in user_error("inspect", str(artifact))
    artifact = _copy_onnx(out_dir, tmp_path, lambda manifest: {})
    assert "is not an edgevit manifest (no model, weights" in user_error("verify", str(artifact))


def test_bad_export_options_get_one_line_errors(tmp_path, user_error):
    assert "builds for target 'coreml'" in user_error(
        "export", "lvt", "--target", "executorch", "--recipe", "coreml-fp16", "--output-dir", str(tmp_path)
    )
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\ndog\n")
    assert "2 labels given but lvt has 1000 classes" in user_error(
        "export", "lvt", "--target", "onnx", "--labels", str(labels), "--output-dir", str(tmp_path / "l")
    )
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    assert "is empty" in user_error("export", "lvt", "--labels", str(empty), "--output-dir", str(tmp_path))
    assert "--image-input is for the coreml target" in user_error(
        "export", "lvt", "--target", "tflite", "--image-input", "--output-dir", str(tmp_path)
    )
    assert "--recipe picks one recipe" in user_error(
        "export", "lvt", "--target", "all", "--recipe", "onnx-fp32", "--output-dir", str(tmp_path)
    )


def test_recipes_lists_every_builtin(capsys):
    assert run(["recipes", "--json"]) == 0
    names = {r["name"] for r in json.loads(capsys.readouterr().out)}
    assert {
        "executorch-xnnpack-fp32",
        "executorch-xnnpack-fp16",
        "executorch-coreml-fp16",
        "coreml-fp16",
        "coreml-fp32",
        "coreml-w8",
        "coreml-palettize4",
        "tflite-fp32",
        "tflite-fp16",
        "tflite-fp32-nhwc",
        "tflite-uint8-nhwc",
        "onnx-fp32",
    } <= names
    assert run(["recipes"]) == 0  # the table shows each recipe's main gates, as its YAML sets them
    row = next(line for line in capsys.readouterr().out.splitlines() if "executorch-xnnpack-fp32 " in line)
    assert "<= 1 partition, >= 60 dB, diff <= 0.001" in row


def test_a_recipe_alone_picks_its_target_and_fp16_weights_halve_the_file(tmp_path, full_width):
    """LVT's real widths, one block per stage (against the fp32 weights' bytes, and lvt's shared fp32 .tflite for
    what an fp32 file holds and how close it comes)."""
    args = ("--input-size", "64", "--num-images", "2", "--output-dir", str(tmp_path), "--json")
    fp16 = run_cli_here("export", "lvt_slim_test", "--recipe", "tflite-fp16", *args)  # no --target: the recipe's
    assert fp16.returncode == 0, fp16.stderr
    half, full = json.loads(fp16.stdout), full_width("lvt", "tflite").manifest
    assert half["artifact_path"].endswith("lvt_slim_test-tflite-fp16.tflite")
    assert half["audit"]["weights"] == "fp16" and half["audit"]["ops"]["DEQUANTIZE"] > 0
    assert "DEQUANTIZE" not in full["audit"]["ops"]
    fp32_bytes = 4 * sum(p.numel() for p in create_model("lvt_slim_test").parameters())
    assert half["artifact"]["size_bytes"] < 0.6 * fp32_bytes
    # float16 weights cost precision, not correctness: measured in LiteRT on real photos
    assert 40 <= half["numerics"]["sqnr_db"] < full["numerics"]["sqnr_db"]

"""ExecuTorch target on the real runtime: one XNNPACK partition, equal outputs, gates that name the op."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from edgevit.errors import EdgevitError, GateError
from edgevit.lowering import lower
from edgevit.numerics import compare
from edgevit.recipe import get_recipe
from edgevit.runtime import open_runner
from edgevit.targets import executorch as et
from edgevit.targets.audit import check_gates, raise_on_failures

from .conftest import audit_path, tiny_lvt, write_exported

RECIPE = get_recipe("executorch-xnnpack-fp32")


@pytest.fixture(scope="module")
def tiny_exports(artifact_cache, tiny_artifacts):
    """The tiny LVT (GAP head and class-attention head) lowered and exported as (model, audit, path), plus the
    audit of the naive export; built once per run (the GAP head's .pte is the shared tiny one)."""

    def build(folder: Path) -> None:
        x = torch.randn(1, 3, 64, 64)
        write_exported(et.export(lower(tiny_lvt(True), "executorch"), x, RECIPE), folder / "tiny-cls.pte")
        audit_path(folder / "naive.pte").write_text(json.dumps(et.export(tiny_lvt(False), x, RECIPE).audit))

    folder = artifact_cache.folder("tiny-lvt-executorch", build)
    out = {}
    for ca, path in ((False, tiny_artifacts[".pte"]), (True, folder / "tiny-cls.pte")):
        out[ca] = (tiny_lvt(ca), json.loads(audit_path(path).read_text()), path)
    out["naive"] = json.loads(audit_path(folder / "naive.pte").read_text())
    return out


@pytest.mark.parametrize("ca", [False, True])
def test_lowered_export_is_one_partition_with_nothing_outside(tiny_exports, ca):
    _, audit, _ = tiny_exports[ca]
    assert audit["partitions"] == 1
    assert audit["ops_outside"] == {}
    assert audit["delegated_share"] == 1.0
    assert audit["max_rank"] <= 4
    assert audit["ops_delegated"]["bmm"] > 0 and audit["ops_delegated"]["convolution"] > 0
    assert check_gates(audit, None, RECIPE.gates, RECIPE.name) == []


@pytest.mark.parametrize("ca", [False, True])
def test_pte_runs_and_matches_pytorch_on_photos(tiny_exports, photos_64, ca):
    model, _, path = tiny_exports[ca]
    runner = open_runner(path)
    with torch.no_grad():
        ref = model(photos_64).numpy()
    result = compare(ref, runner.run_batch(photos_64.numpy()))
    assert result["max_abs_diff"] < 1e-4
    assert result["sqnr_db"] > 60
    assert result["top1_agreement"] == 1.0


def test_naive_export_fails_the_gates_naming_the_op(tiny_exports):
    audit = tiny_exports["naive"]
    assert audit["partitions"] > 1 and audit["ops_outside"]
    failures = check_gates(audit, None, RECIPE.gates, RECIPE.name)
    assert any("partitions" in f for f in failures)
    assert any("native_layer_norm" in f for f in failures)
    assert any("a rank-5 tensor" in f for f in failures)  # the 5-D attention of the reference CSA
    with pytest.raises(GateError, match="native_layer_norm"):
        raise_on_failures(failures)


def test_numeric_gates():
    numerics = compare(np.array([[1.0, 2.0]]), np.array([[1.0, 2.5]]))
    failures = check_gates({}, numerics, RECIPE.gates, RECIPE.name)
    assert any("max abs diff 0.5" in f for f in failures)
    assert any("SQNR" in f for f in failures)


def test_corrupt_pte_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.pte"
    bad.write_bytes(b"not a program" * 100)
    with pytest.raises(EdgevitError, match="not a loadable .pte"):
        open_runner(bad)


def test_fp16_recipe_is_one_half_precision_partition_within_40_db(tmp_path):
    """executorch-xnnpack-fp16 through the CLI on the tiny LVT: float16 in and out, every op (GELU in its tanh
    form) in one XNNPACK partition, run here in the real runtime; the gate is 40 dB against PyTorch fp32."""
    from .conftest import run_cli_here

    args = ("--recipe", "executorch-xnnpack-fp16", "--num-images", "4", "--output-dir", str(tmp_path), "--json")
    proc = run_cli_here("export", "lvt_test", *args)
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads(proc.stdout)
    audit, numerics = manifest["audit"], manifest["numerics"]
    assert manifest["gates"]["passed"] and audit["partitions"] == 1 and not audit["ops_outside"]
    assert "gelu" not in audit["ops_delegated"] and audit["ops_delegated"]["sigmoid"] > 0
    assert manifest["input"]["dtype"] == manifest["output"]["dtype"] == "float16"
    # fp16 rounding shows (an fp32 graph keeps 60+ dB more), and stays far above the gate
    assert numerics["runtime"] == "executorch" and 40 <= numerics["sqnr_db"] < 100, numerics
    runner = open_runner(Path(manifest["artifact_path"]))
    out = runner.run(np.zeros(runner.input_shape, dtype=np.float32))  # the runner casts to the program's float16
    assert out.dtype == np.float32 and out.shape == (1, 10)
    inspected = run_cli_here("inspect", manifest["artifact_path"])
    assert inspected.returncode == 0 and "input [1, 3, 64, 64] float16" in inspected.stdout, inspected.stdout

    own = tmp_path / "bf16.yaml"
    own.write_text("name: bf16\ntarget: executorch\nprecision: fp16\noptions: {program_dtype: bfloat16}\n")
    proc = run_cli_here("export", "lvt_test", "--recipe", str(own), "--output-dir", str(tmp_path / "bf16"))
    assert proc.returncode == 2 and "program_dtype 'bfloat16'; choose float32 or float16" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "bf16").exists()


def test_fp16_gelu_is_the_tanh_form_within_fp16_rounding():
    from edgevit.targets.fp16 import SigmoidTanhGELU, half_precision

    x = torch.linspace(-12, 12, 200001, dtype=torch.float64)
    form = SigmoidTanhGELU().double()(x)
    torch.testing.assert_close(
        form, torch.nn.functional.gelu(x, approximate="tanh"), atol=1e-7, rtol=0
    )  # fp32 constants
    exact = torch.nn.functional.gelu(x)
    assert (form - exact).abs().max() < 4.8e-4
    # under half an fp16 unit in the last place wherever |GELU(x)| > 0.5
    big = exact.abs() > 0.5
    half_ulp = 2.0 ** (torch.floor(torch.log2(exact[big].abs())) - 11)
    assert ((form - exact)[big].abs() < half_ulp).all()

    model = lower(tiny_lvt(), "executorch")
    half = half_precision(model)
    assert not any(isinstance(m, torch.nn.GELU) for m in half.modules())
    assert {p.dtype for p in half.state_dict().values()} == {torch.float16}
    assert {p.dtype for p in model.state_dict().values()} == {torch.float32}  # the original is left as it was

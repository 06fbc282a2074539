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

"""The benchmarks' weights (``benchmarks/bench_weights.py``): shaped like a trained checkpoint, the same every run,
and loaded by every timed path."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_weights  # noqa: E402

from edgevit.models import create_model  # noqa: E402


@pytest.fixture
def out_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(bench_weights, "OUT", tmp_path)
    return tmp_path


def test_no_parameter_keeps_an_init_constant_and_the_rest_are_untouched(out_dir):
    path = bench_weights.write_bench_weights("lvt_test")
    assert path.parent == out_dir
    weights = torch.load(path, weights_only=True)
    torch.manual_seed(bench_weights.SEED)
    init = create_model("lvt_test").state_dict()
    params = dict(create_model("lvt_test").named_parameters())
    moved = [name for name in params if not torch.equal(weights[name], init[name])]
    constant = [name for name, p in init.items() if name in params and p.numel() > 1 and (p == p.flatten()[0]).all()]
    # every constant (norm gammas and betas, zero biases) moved; nothing else did
    assert constant and sorted(moved) == sorted(constant)
    for name in constant:
        assert not (weights[name] == weights[name].flatten()[0]).all(), name


def test_the_checkpoint_is_the_same_every_run_and_loads_into_the_training_form(out_dir):
    first = bench_weights.write_bench_weights("lvt_test").read_bytes()
    assert bench_weights.write_bench_weights("lvt_test").read_bytes() == first
    net = bench_weights.model_with_bench_weights("lvt_test")
    norms = [m for m in net.modules() if isinstance(m, nn.LayerNorm)]
    assert norms and all(not torch.equal(m.weight, torch.ones_like(m.weight)) for m in norms)
    assert not net.training

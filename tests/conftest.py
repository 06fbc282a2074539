"""Shared fixtures: tiny LVT variants for plumbing tests, real photos, the edgevit command."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from edgevit.data import load_images
from edgevit.models import get_entry
from edgevit.models.lvt import LVT, LVTConfig

EDGEVIT = [sys.executable, "-m", "edgevit.cli"]

TINY = LVTConfig(
    depths=(1, 1, 1, 1),
    embed_dims=(16, 16, 32, 32),
    num_heads=(1, 2, 2, 4),
    mlp_ratios=(2, 2, 2, 2),
    num_classes=10,
)


def tiny_lvt(class_attention: bool = False, seed: int = 0) -> LVT:
    torch.manual_seed(seed)
    cfg = TINY if not class_attention else LVTConfig(**{**TINY.__dict__, "class_attention_layers": 2})
    return LVT(cfg).eval()


@pytest.fixture(scope="session")
def photos_224() -> torch.Tensor:
    return load_images(None, get_entry("lvt").input_spec, 224)


@pytest.fixture(scope="session")
def photos_64() -> torch.Tensor:
    return load_images(None, get_entry("lvt").input_spec, 64)


def run_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k != "EDGEVIT_DEBUG"} | (env or {})
    return subprocess.run([*EDGEVIT, *args], capture_output=True, text=True, timeout=900, cwd=cwd, env=full_env)


@pytest.fixture(scope="session")
def tiny_artifacts(tmp_path_factory) -> dict[str, Path]:
    """A tiny LVT exported to .pte, .tflite, .onnx and .mlpackage (64x64 input, 10 classes)."""
    from edgevit.lowering import lower
    from edgevit.recipe import default_recipe
    from edgevit.targets import list_targets

    folder = tmp_path_factory.mktemp("tiny-artifacts")
    x = torch.randn(1, 3, 64, 64)
    paths = {}
    for target in list_targets():
        paths[target.suffix] = folder / f"tiny{target.suffix}"
        target.export(lower(tiny_lvt(), target.name), x, default_recipe(target.name)).write(paths[target.suffix])
    return paths


@pytest.fixture(scope="session")
def digits(tmp_path_factory):
    root = tmp_path_factory.mktemp("digits") / "all"
    proc = run_cli("datasets", "digits", str(root))
    assert proc.returncode == 0, proc.stderr
    assert "1437 training and 360 held-out images" in proc.stdout
    return root


@pytest.fixture(scope="session")
def small(digits, tmp_path_factory):
    """Three digits, 12 training and 6 held-out images each: a QAT run in seconds."""
    root = tmp_path_factory.mktemp("small")
    for split, count in (("train", 12), ("val", 6)):
        for digit in "012":
            target = root / split / digit
            target.mkdir(parents=True)
            for path in sorted((digits / split / digit).iterdir())[:count]:
                shutil.copy(path, target / path.name)
    return root

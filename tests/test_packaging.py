"""The wheel ships what the repository holds: every built-in recipe and device profile (top-level recipes/ and
devices/, packaged as edgevit.recipes and edgevit.devices) and every package under edgevit/."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("edgevit", "recipes", "devices", "pyproject.toml", "setup.py", "README.md")


@pytest.fixture(scope="module")
def wheel_files(tmp_path_factory) -> set[str]:
    """Names inside a wheel built offline from a copy of the sources (the build leaves the repository alone)."""
    src, out = tmp_path_factory.mktemp("src"), tmp_path_factory.mktemp("wheel")
    skip = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=skip)
        else:
            shutil.copy2(path, src / name)
    pip = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(src)]
    proc = subprocess.run(pip, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    (wheel,) = out.glob("edgevit-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        return set(zf.namelist())


@pytest.mark.parametrize("folder", ["recipes", "devices"])
def test_wheel_ships_every_builtin_yaml(wheel_files, folder):
    yamls = sorted((ROOT / folder).glob("*.yaml"))
    assert yamls, f"no YAML files in {folder}/"
    missing = [p.name for p in yamls if f"edgevit/{folder}/{p.name}" not in wheel_files]
    assert not missing, f"not in the wheel under edgevit/{folder}/: {missing}"


def test_wheel_ships_every_package(wheel_files):
    folders = {p.parent.relative_to(ROOT).as_posix() for p in (ROOT / "edgevit").rglob("*.py")}
    shipped = {name.rsplit("/", 1)[0] for name in wheel_files if name.endswith(".py")}
    assert folders - shipped == set()

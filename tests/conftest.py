"""Shared fixtures: real photos, tiny LVT variants for plumbing tests, the edgevit command (in a subprocess, or in
this process for input errors), and artifacts built once per run and shared by every test and both test workers."""

from __future__ import annotations

import os

# Two test workers share two cores: one intra-op thread each (here and in every `edgevit` process a test starts),
# or idle OpenMP threads spin on the core the other worker needs. Set before torch is imported, which reads it.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import io
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from filelock import FileLock

from edgevit.data import load_images
from edgevit.models import get_entry
from edgevit.models.lvt import LVT, LVTConfig

EDGEVIT = [sys.executable, "-m", "edgevit.cli"]

# the config of the registered lvt_test
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
    """`edgevit ARGS` as a user runs it: a fresh process."""
    full_env = {k: v for k, v in os.environ.items() if k != "EDGEVIT_DEBUG"} | (env or {})
    return subprocess.run([*EDGEVIT, *args], capture_output=True, text=True, timeout=900, cwd=cwd, env=full_env)


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str


def run_cli_here(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> CliResult:
    """`edgevit ARGS` in this process, through the same entry as the console script: for input errors, which
    end before any model is built, without the seconds a fresh Python takes to import torch."""
    from edgevit.cli import run

    stdout, stderr = io.StringIO(), io.StringIO()
    previous_cwd, previous_env = os.getcwd(), dict(os.environ)
    os.environ.pop("EDGEVIT_DEBUG", None)
    os.environ.update(env or {})
    try:
        if cwd is not None:
            os.chdir(cwd)
        with redirect_stdout(stdout), redirect_stderr(stderr):
            code = run(list(args))
    finally:
        os.chdir(previous_cwd)
        os.environ.clear()
        os.environ.update(previous_env)
    return CliResult(code, stdout.getvalue(), stderr.getvalue())


@dataclass(frozen=True)
class Exported:
    """An artifact written by the export flow, its manifest beside it, and the manifest's content."""

    artifact: Path
    manifest_path: Path
    manifest: dict[str, Any]


class ArtifactCache:
    """Builds each artifact once per test run. The first test worker to ask builds it under a file lock; the
    other one waits for it and reads the same folder. A failed build is recorded, so it fails once, not twice."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def folder(self, key: str, build: Callable[[Path], None]) -> Path:
        """The folder ``build`` filled for ``key`` (in this run, by whichever worker came first)."""
        folder, done, failed = self.root / key, self.root / f"{key}.built", self.root / f"{key}.failed"
        with FileLock(str(self.root / f"{key}.lock")):
            if failed.exists():
                pytest.fail(f"building {key} failed in an earlier test: {failed.read_text()}")
            if not done.exists():
                shutil.rmtree(folder, ignore_errors=True)
                folder.mkdir(parents=True)
                try:
                    build(folder)
                except Exception as e:
                    failed.write_text(f"{type(e).__name__}: {e}")
                    raise
                done.touch()
        return folder

    def export(
        self,
        model: str,
        target: str | None = None,
        recipe: str | None = None,
        size: int | tuple[int, int] | None = None,
        vs_fp32: bool = False,
        calib_count: int = 4,
        **options: Any,
    ) -> Exported:
        """``edgevit.export.export_model`` once per run for these arguments (the target defaults to the recipe's).
        The fp32 twin of an int8 artifact (one more export and four timed processes) is off unless asked for;
        calibration uses 4 photos."""
        from edgevit.export import export_model
        from edgevit.quant.flow import QuantizeRequest
        from edgevit.recipe import get_recipe

        target = target or (get_recipe(recipe).target if recipe else "executorch")

        size_name = "default" if size is None else (f"{size[0]}x{size[1]}" if isinstance(size, tuple) else str(size))
        parts = [model, recipe or target, size_name, f"calib{calib_count}"]
        parts += ["vs_fp32"] * vs_fp32 + [f"{k}={v}" for k, v in sorted(options.items())]
        key = "-".join(parts)

        def build(folder: Path) -> None:
            export_model(
                model,
                target,
                recipe=recipe,
                input_size=size,
                output_dir=folder,
                vs_fp32=vs_fp32,
                quantize_request=QuantizeRequest(calib_count=calib_count),
                **options,
            )

        folder = self.folder(key, build)
        (manifest_path,) = folder.glob("*.manifest.json")
        manifest = json.loads(manifest_path.read_text())
        return Exported(folder / manifest["artifact"]["file"], manifest_path, manifest)


def rerun(exported: Exported) -> dict[str, Any]:
    """Run a shared artifact in its host runtime, in the calling test, on the photos its manifest names, against
    the model it was exported from (rebuilt from the manifest's seed): the figures of the manifest's numerics."""
    from edgevit.export import manifest_input_size, verify_numerics
    from edgevit.models import create_model

    manifest = exported.manifest
    spec = get_entry(manifest["model"]).input_spec
    size = manifest_input_size(manifest["input"])
    photos = load_images(None, spec, size, limit=len(manifest["numerics"]["images"]))
    torch.manual_seed(manifest["weights"]["seed"])
    model = create_model(manifest["model"], input_size=size).eval()
    with torch.no_grad():
        reference = model(photos).numpy()
    return verify_numerics(exported.artifact, reference, photos.numpy(), spec)


def assert_traces_at_any_batch(model: torch.nn.Module, size: int, targets=("executorch",)) -> None:
    """QAT exports the deploy form with a dynamic batch: it must trace at any batch, without repeat or expand
    (no XNNPACK node), and compute the training form's function at batch 2."""
    from torch.export import Dim

    from edgevit.lowering import lower

    images = torch.randn(2, 3, size, size)
    for target in targets:
        program = torch.export.export(
            lower(model, target), (images,), dynamic_shapes=({0: Dim("batch", min=1, max=64)},)
        )
        ops = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
        assert not any("repeat" in op or "expand" in op for op in ops), sorted(ops)
        with torch.no_grad():
            torch.testing.assert_close(program.module()(images), model(images), atol=1e-4, rtol=0)


def assert_learns(model: torch.nn.Module, size: int, steps: int = 5) -> None:
    """A few SGD steps on four images lower the training loss: gradients reach the weights that matter."""
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = torch.randn(4, 3, size, size), torch.tensor([0, 1, 2, 3])
    losses = []
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0], losses


TIMM_REFERENCE = Path(sys.prefix) / "timm-reference"  # timm 1.0.31 without its dependencies (`make install`)
TIMM_SCRIPTS = Path(__file__).parent / "timm_reference"


def write_timm_references(out: Path, photos: torch.Tensor, specs: tuple[str, ...]) -> Path:
    """Checkpoints and logits written into ``out`` by timm's own code for ``specs`` (see
    ``timm_reference/export_reference.py``), in a process of its own."""
    import numpy as np

    if not (TIMM_REFERENCE / "timm").is_dir():
        pytest.fail(f"timm's reference code is not at {TIMM_REFERENCE}: run `make install`")
    np.save(out / "photos.npy", photos.numpy())
    env = os.environ | {"PYTHONPATH": f"{TIMM_REFERENCE}{os.pathsep}{TIMM_SCRIPTS}"}
    script = TIMM_SCRIPTS / "export_reference.py"
    proc = subprocess.run(
        [sys.executable, str(script), str(out / "photos.npy"), str(out), *specs],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("timm 1.0.31") == len(specs), proc.stdout
    return out


def check_gates(rows: dict[str, dict]) -> None:
    """LVT's gates, which every family meets, on the targets in ``rows`` (target -> manifest): one XNNPACK
    partition, Core ML at rank <= 4 with at most 20 transposes, builtin-only TFLite at rank <= 4, and the numerics
    of each runtime that runs here."""
    if "executorch" in rows:
        assert rows["executorch"]["audit"]["partitions"] == 1 and not rows["executorch"]["audit"]["ops_outside"]
    if "coreml" in rows:
        assert rows["coreml"]["audit"]["transposes"] <= 20 and rows["coreml"]["audit"]["max_rank"] <= 4
        assert rows["coreml"]["numerics"]["skipped"].startswith("Core ML prediction needs macOS")
    if "tflite" in rows:
        assert rows["tflite"]["audit"]["all_builtin"] and rows["tflite"]["audit"]["max_rank"] <= 4
    for target in {"executorch", "tflite", "onnx"} & set(rows):
        numerics = rows[target]["numerics"]
        assert numerics["max_abs_diff"] < 1e-3 and numerics["top1_agreement"] == 1.0, (target, numerics)


@pytest.fixture(scope="session")
def artifact_cache(tmp_path_factory) -> ArtifactCache:
    base = tmp_path_factory.getbasetemp()
    # under xdist each worker has its own base folder inside the run's one: the run's folder is shared
    run_folder = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    return ArtifactCache(run_folder / "shared-artifacts")


@pytest.fixture(scope="session")
def full_width(artifact_cache) -> Callable[[str, str], Exported]:
    """The full-width exports (lvt to each target at 224, random init), built once per run: real widths matter
    for numerics and audits, which 16-channel toys do not show."""

    def exported(model: str, target: str) -> Exported:
        assert model == "lvt", "one full-width model, shared by the tests that need it"
        return artifact_cache.export(model, target, size=224)

    return exported


def audit_path(artifact: Path) -> Path:
    """Where a shared artifact's export audit is kept (``tiny.pte`` -> ``tiny.pte.audit.json``)."""
    return artifact.with_name(artifact.name + ".audit.json")


def write_exported(exported, path: Path) -> None:
    """Write an exported artifact and the audit its export made."""
    exported.write(path)
    audit_path(path).write_text(json.dumps(exported.audit))


@pytest.fixture(scope="session")
def tiny_artifacts(artifact_cache) -> dict[str, Path]:
    """``tiny_lvt()`` through each target's default recipe to .pte, .tflite, .onnx and .mlpackage (64x64 input,
    10 classes); each export's audit is beside its artifact (``audit_path``). One cache entry per target, taken
    in reverse order on the second worker, so the two workers build different ones instead of waiting."""
    from edgevit.lowering import lower
    from edgevit.recipe import default_recipe
    from edgevit.targets import list_targets

    def builder(target):
        def build(folder: Path) -> None:
            x = torch.randn(1, 3, 64, 64)
            artifact = target.export(lower(tiny_lvt(), target.name), x, default_recipe(target.name))
            write_exported(artifact, folder / f"tiny{target.suffix}")

        return build

    targets = list_targets()
    if os.environ.get("PYTEST_XDIST_WORKER", "gw0") != "gw0":
        targets = targets[::-1]
    paths = {
        t.suffix: artifact_cache.folder(f"tiny-lvt-default-{t.name}", builder(t)) / f"tiny{t.suffix}" for t in targets
    }
    return {t.suffix: paths[t.suffix] for t in list_targets()}


@pytest.fixture(scope="session")
def digits(artifact_cache):
    def build(folder: Path) -> None:
        result = run_cli_here("datasets", "digits", str(folder / "all"))
        assert result.returncode == 0, result.stderr
        assert "1437 training and 360 held-out images" in result.stdout

    return artifact_cache.folder("digits", build) / "all"


@pytest.fixture(scope="session")
def small(digits, artifact_cache):
    """Three digits, 12 training and 6 held-out images each: a QAT run in seconds."""

    def build(root: Path) -> None:
        for split, count in (("train", 12), ("val", 6)):
            for digit in "012":
                target = root / split / digit
                target.mkdir(parents=True)
                for path in sorted((digits / split / digit).iterdir())[:count]:
                    shutil.copy(path, target / path.name)

    return artifact_cache.folder("small-digits", build)

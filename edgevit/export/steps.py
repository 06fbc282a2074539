"""The export steps, in order: build -> lower -> quantize -> convert -> verify -> gate -> compare -> write.

Each step reads and fills one :class:`Job`. Where the model and its quantized form come from is a
:class:`ModelSource`: the registry and PTQ by default; QAT hands in its trained graph through a source of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data import image_paths, load_images
from ..errors import EdgevitError
from ..fileio import atomic_write_json, check_writable_dir, make_dir, move_into_place, refuse_overwrite, remove_path
from ..lowering import lower
from ..models.registry import InputSpec, ModelEntry, Size, check_input_size, create_model, get_entry
from ..numerics import compare
from ..quant.calibration import checked_calibration_paths
from ..quant.flow import QuantizedDeploy, quantize_for_export
from ..quant.pt2e import quant_options
from ..quant.sensitivity import candidate_blocks, describe_fix, sensitivity_report, simulate
from ..recipe import Recipe
from ..runtime import host_cannot_run, open_runner
from ..targets.audit import check_gates, raise_on_failures
from ..targets.base import ExportedArtifact
from ..targets.registry import Target, get_target, list_targets
from .manifest import build_manifest
from .request import ExportRequest, output_paths, resolve_recipe

Step = Callable[[str], None]


@dataclass
class Job:
    """One export in progress: what the request resolved to, then what each step adds."""

    request: ExportRequest
    source: ModelSource
    recipe: Recipe
    target: Target
    entry: ModelEntry
    size: Size
    artifact: Path
    manifest_path: Path
    candidate: Path  # the artifact as written for verification, beside its final name: moving it is a rename
    step: Step
    photo_paths: list[Path]
    phase_seconds: dict[str, float] = field(default_factory=dict)
    model: nn.Module | None = None
    config: Any = None
    reference_name: str = ""
    photos: torch.Tensor | None = None
    reference: np.ndarray | None = None
    deploy: nn.Module | None = None
    lowering_numerics: dict[str, Any] | None = None
    example: torch.Tensor | None = None
    plan: QuantizedDeploy | None = None
    quantization: dict[str, Any] | None = None
    simulated: dict[str, Any] | None = None
    exported: ExportedArtifact | None = None
    numerics: dict[str, Any] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    manifest: dict[str, Any] | None = None

    @property
    def export_seconds(self) -> float:
        """Quantization and conversion: the artifact's own making, without building and verifying."""
        return self.phase_seconds.get("quantize", 0.0) + self.phase_seconds.get("convert", 0.0)


class ModelSource:
    """The model an artifact reproduces, its deploy form and its quantized form: from the registry, lowered
    for the recipe's layout, and (int8 recipes) post-training quantized through the target's quantizer."""

    reference_name = "PyTorch fp32 training form"

    def check(self, job: Job) -> None:
        """Fail before any work on what this source needs: a bad calibration folder, not minutes later."""
        if quant_options(job.recipe):
            checked_calibration_paths(job.request.quantize.calib_images, job.request.quantize.calib_count)
        elif job.request.quantize.keep_float:
            raise EdgevitError(f"--keep-float is for int8 recipes; {job.recipe.name} keeps every layer float already")

    def build(self, job: Job) -> nn.Module:
        return create_model(job.request.model, job.request.checkpoint, input_size=job.size).eval()

    def config(self, job: Job) -> Any:
        return getattr(job.model, "cfg", None)

    def lower(self, job: Job) -> nn.Module:
        # a recipe may ask for another target's deploy form (a .pte with the Core ML delegate wants Core ML's)
        return lower(job.model, job.recipe.options.get("lowering", job.target.name))

    def quantize(self, job: Job) -> QuantizedDeploy | None:
        if not quant_options(job.recipe):
            return None
        spec = job.entry.input_spec
        return quantize_for_export(job.deploy, job.example, job.recipe, spec, job.size, job.request.quantize, job.step)


def plan(request: ExportRequest, source: ModelSource, step: Step) -> Job:
    """Resolve and check everything that can fail on bad input before any model is built."""
    entry = get_entry(request.model)
    recipe = with_app_io(resolve_recipe(request.target, request.recipe), request, entry.input_spec)
    size = request.input_size or entry.input_spec.size
    check_input_size(request.model, size)
    out_dir = Path(request.output_dir)
    artifact, manifest_path = output_paths(request.model, recipe, out_dir)
    refuse_overwrite([artifact, manifest_path], request.force)
    check_writable_dir(out_dir)
    target = get_target(recipe.target)
    candidate = out_dir / f".{artifact.name[: -len(target.suffix)]}.partial{target.suffix}"
    photo_paths = image_paths(request.images)[: request.num_images]
    job = Job(request, source, recipe, target, entry, size, artifact, manifest_path, candidate, step, photo_paths)
    source.check(job)
    return job


def with_app_io(recipe: Recipe, request: ExportRequest, spec: InputSpec) -> Recipe:
    """The recipe with the app's I/O options the target needs: labels and normalisation for Core ML classifiers
    and image inputs, and for pixel inputs (uint8 TFLite) the mean and std to fold in."""
    image_io = get_target(recipe.target).app_image_io
    if request.image_input and not image_io:
        takers = ", ".join(t.name for t in list_targets() if t.app_image_io)
        raise EdgevitError(
            f"--image-input is for the {takers} target; {request.target} artifacts take the normalised tensor"
        )
    pixel_input = request.image_input or recipe.options.get("input_dtype") == "uint8"
    if not ((image_io and request.labels) or pixel_input):
        return recipe
    labels = list(request.labels) if request.labels is not None else None
    extra: dict[str, Any] = {"labels": labels, "mean": list(spec.mean), "std": list(spec.std)}
    if image_io:
        extra["image_input"] = request.image_input
    return replace(recipe, options={**recipe.options, **extra})


def build(job: Job) -> None:
    job.step("build model")
    request = job.request
    torch.manual_seed(request.seed)
    job.model = job.source.build(job)
    job.config = job.source.config(job)
    job.reference_name = job.source.reference_name
    job.photos = load_images(request.images, job.entry.input_spec, job.size, limit=request.num_images)
    with torch.no_grad():
        job.reference = job.model(job.photos).numpy()
    classes = job.reference.shape[-1]
    if request.labels is not None and len(request.labels) != classes:
        raise EdgevitError(
            f"{len(request.labels)} labels given but {request.model} has {classes} classes; "
            "pass one label per class, one per line"
        )


def lower_step(job: Job) -> None:
    job.step("lower")
    job.deploy = job.source.lower(job)
    with torch.no_grad():
        job.lowering_numerics = compare(job.reference, job.deploy(job.photos).numpy())


def quantize(job: Job) -> None:
    job.example = torch.randn(job.entry.input_spec.shape(job.size))
    job.plan = job.source.quantize(job)
    if job.plan is None:
        return
    job.quantization = job.plan.entry
    if job.plan.rewrite is None:  # the int8 graph as PyTorch runs it: the gate's input where the host cannot
        job.simulated = simulate(job.plan.module, job.photos, job.reference)  # run the artifact (Core ML)
        job.quantization["simulated"] = job.simulated


def convert(job: Job) -> None:
    job.step(f"export ({job.recipe.name})")
    module = job.plan.module if job.plan else job.deploy
    job.exported = job.target.export(module, job.example, job.recipe)
    if job.plan and job.plan.rewrite:
        job.exported = job.plan.rewrite(job.exported)


def verify(job: Job) -> None:
    job.step("verify on host runtime")
    make_dir(job.candidate.parent)
    remove_path(job.candidate)
    job.exported.write(job.candidate)
    job.numerics = verify_numerics(job.candidate, job.reference, job.photos.numpy(), job.entry.input_spec)
    if "skipped" in job.numerics and job.simulated is not None:
        job.numerics["simulated"] = job.simulated


def gate(job: Job) -> None:
    """Check the recipe's gates; an int8 artifact short of its SQNR gate gets the blocks that cost the most."""
    gated = job.numerics if "skipped" not in job.numerics else job.numerics.get("simulated")
    job.failures = check_gates(job.exported.audit, gated, job.recipe.gates, job.recipe.name)
    threshold = job.recipe.gates.min_sqnr_db
    plan = job.plan
    missed_sqnr = gated and threshold is not None and gated["sqnr_db"] < threshold
    if job.request.sensitivity and plan and plan.requantize and missed_sqnr:
        job.step("find the blocks that cost the most SQNR")
        blocks = list(candidate_blocks(job.deploy))
        view = plan.float_view or plan.requantize
        report = sensitivity_report(
            view, blocks, job.photos, job.reference, threshold, job.step, confirm=plan.requantize
        )
        job.quantization["sensitivity"] = report
        sqnr = [f"{f}; {describe_fix(report)}" for f in job.failures if ": SQNR " in f]
        job.failures = sqnr + [f for f in job.failures if ": SQNR " not in f]
    if not job.request.allow_gate_failures:
        raise_on_failures(job.failures)


def compare_fp32(job: Job) -> None:
    """An int8 artifact that will be kept: its size and host latency against its fp32 twin."""
    if job.quantization is None or not job.request.vs_fp32:
        return
    from ..bench.vs_fp32 import compare_with_fp32

    job.quantization["vs_fp32"] = compare_with_fp32(
        job.target, job.deploy, job.example, job.recipe, job.candidate, job.step
    )


def write(job: Job) -> None:
    job.step("write")
    job.manifest = build_manifest(job)
    atomic_write_json(job.manifest_path, job.manifest)
    move_into_place(job.candidate, job.artifact)


# (phase name, step): the order every export runs in
PIPELINE: tuple[tuple[str, Callable[[Job], None]], ...] = (
    ("build", build),
    ("lower", lower_step),
    ("quantize", quantize),
    ("convert", convert),
    ("verify", verify),
    ("gate", gate),
    ("compare_fp32", compare_fp32),
    ("write", write),
)


def verify_numerics(path: Path, reference: np.ndarray, inputs: np.ndarray, spec: InputSpec) -> dict[str, Any]:
    """Run the artifact on its host runtime and compare with the reference; say why when it cannot run here.

    ``inputs`` are normalised; an artifact that normalises inside gets the photos' pixel values back.
    """
    reason = host_cannot_run(path)
    if reason:
        return {"skipped": reason}
    runner = open_runner(path)
    if runner.raw_pixels:
        mean = np.asarray(spec.mean, np.float32).reshape(1, -1, 1, 1)
        std = np.asarray(spec.std, np.float32).reshape(1, -1, 1, 1)
        inputs = np.rint((inputs * std + mean) * 255.0)
    return {**compare(reference, runner.run_batch(inputs)), "runtime": runner.name}

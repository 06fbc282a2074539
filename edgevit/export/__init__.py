"""The export flow: an :class:`ExportRequest` through the steps of ``steps.PIPELINE``, to an artifact and its
manifest, written atomically (nothing is left behind when a step fails or the user stops it)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..fileio import missing_folders, remove_empty, remove_path
from ..quant.flow import QuantizeRequest
from ..targets.provenance import shared_provenance
from .manifest import manifest_input_size
from .request import ExportRequest, output_paths, read_labels, resolve_recipe
from .steps import PIPELINE, ModelSource, Step, plan, verify_numerics


@dataclass
class ExportResult:
    artifact: Path
    manifest_path: Path
    manifest: dict[str, Any]


def export(request: ExportRequest, on_step: Step | None = None, source: ModelSource | None = None) -> ExportResult:
    """Run ``request`` through every step; ``source`` replaces how the model and its int8 form are made (QAT).

    Raises :class:`EdgevitError` for bad input and :class:`GateError` when the artifact misses a gate (then
    nothing is written, unless ``request.allow_gate_failures``).
    """
    job = plan(request, source or ModelSource(), on_step or (lambda _: None))
    new_folders = missing_folders(job.artifact.parent)
    try:
        with shared_provenance():  # quantizing retraces as much as converting does (targets/provenance.py)
            for name, step in PIPELINE:
                start = time.perf_counter()
                step(job)
                job.phase_seconds[name] = time.perf_counter() - start
    finally:
        remove_path(job.candidate)
        remove_empty(new_folders)  # a failed export leaves no folder it made
    return ExportResult(job.artifact, job.manifest_path, job.manifest)


def export_model(
    model_name: str,
    target: str = "executorch",
    recipe: str | None = None,
    *,
    on_step: Step | None = None,
    quantize_request: QuantizeRequest | None = None,
    labels: list[str] | tuple[str, ...] | None = None,
    **options: Any,
) -> ExportResult:
    """Export ``model_name`` for ``target`` with ``recipe`` (default: the target's); the other keyword arguments
    are :class:`ExportRequest`'s fields."""
    request = ExportRequest(
        model=model_name,
        target=target,
        recipe=recipe,
        quantize=quantize_request or QuantizeRequest(),
        labels=tuple(labels) if labels is not None else None,
        **options,
    )
    return export(request, on_step)


__all__ = [
    "ExportRequest",
    "ExportResult",
    "ModelSource",
    "export",
    "export_model",
    "manifest_input_size",
    "output_paths",
    "read_labels",
    "resolve_recipe",
    "verify_numerics",
]

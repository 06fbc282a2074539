"""An int8 artifact against the fp32 artifact of the same deploy form: file size, and host latency measured in
fresh alternating processes."""

from __future__ import annotations

import statistics
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..fileio import path_size
from ..recipe import Recipe
from ..runtime import host_cannot_run
from ..targets.registry import Target
from .host import Settings, run_worker


def compare_with_fp32(
    target: Target,
    deploy: nn.Module,
    example: torch.Tensor,
    recipe: Recipe,
    quantized_path: Path,
    step: Callable[[str], None],
) -> dict[str, Any]:
    """Size and host latency of the int8 artifact against the fp32 one (2 alternating processes each)."""
    step("export fp32 for comparison")
    float_recipe = replace(recipe, options={k: v for k, v in recipe.options.items() if k != "quantization"})
    with tempfile.TemporaryDirectory() as tmp:
        fp32_path = Path(tmp) / f"fp32{quantized_path.suffix}"
        target.export(deploy, example, float_recipe).write(fp32_path)
        result: dict[str, Any] = {"size_ratio": round(path_size(quantized_path) / path_size(fp32_path), 3)}
        if host_cannot_run(quantized_path):
            result["latency_ratio"] = None
            return result
        settings = Settings(threads=2, warmup=5, runs=20, min_seconds=0.0)
        medians: dict[str, list[float]] = {"int8": [], "fp32": []}
        for r in range(2):
            step(f"time int8 vs fp32 ({r + 1}/2)")
            for name, path in (("int8", quantized_path), ("fp32", fp32_path)):
                timed = run_worker(path, settings, timeout=300)
                if "error" in timed:
                    return {**result, "latency_ratio": None, "latency_error": timed["error"]}
                medians[name].append(statistics.median(timed["samples_ms"]))
    int8_ms, fp32_ms = min(medians["int8"]), min(medians["fp32"])
    return {
        **result,
        "int8_ms": round(int8_ms, 3),
        "fp32_ms": round(fp32_ms, 3),
        "latency_ratio": round(int8_ms / fp32_ms, 3),
    }

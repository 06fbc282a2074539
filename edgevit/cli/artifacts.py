"""``edgevit verify`` and ``edgevit inspect``: what a written artifact computes and what it contains."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ..errors import GateError
from .console import describe_audit, describe_numerics, out


def verify(
    artifact: Annotated[Path, typer.Argument(help="A .pte, .tflite, .onnx or .mlpackage written by `edgevit export`.")],
    images: Annotated[
        Path | None, typer.Option(help="Folder of JPEG/PNG photos; default: scikit-image's photos.")
    ] = None,
    num_images: Annotated[int, typer.Option(min=1, help="How many photos to compare on.")] = 8,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Re-run an artifact on its host runtime against its PyTorch reference (rebuilt from its manifest).

    Exits 3 if the numerics miss its recipe's gates, as `edgevit export` does."""
    from ..inspection import verify_artifact

    result = verify_artifact(artifact, images, num_images)
    num = result["numerics"]
    if as_json:
        print(json.dumps(result, indent=2))
    elif "skipped" in num:
        out.print(f"{artifact}: {num['skipped']}", highlight=False, soft_wrap=True)
    else:
        _print_numerics(artifact, num)
    failures = result.get("gates", {}).get("failures")
    if failures:
        raise GateError("; ".join(failures))


def _print_numerics(artifact: Path, num: dict) -> None:
    table = Table("artifact", "runtime", "photos", "max abs diff", "SQNR dB", "cosine (min)", "top-1 agree")
    table.add_row(
        artifact.name,
        num["runtime"],
        str(num["samples"]),
        f"{num['max_abs_diff']:.2e}",
        f"{num['sqnr_db']:.1f}",
        f"{num['cosine_min']:.6f}",
        f"{num['top1_agreement'] * 100:.0f}%",
    )
    out.print(table)


def inspect(
    artifact: Annotated[
        Path, typer.Argument(help="A .pte, .tflite, .onnx or .mlpackage (with or without a manifest).")
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a summary.")] = False,
) -> None:
    """Show an artifact's audit: from its manifest, or computed from the bare file."""
    from ..inspection import inspect_artifact

    info = inspect_artifact(artifact)
    if as_json:
        print(json.dumps(info, indent=2))
        return
    audit = info["audit"]
    out.print(f"[bold]{artifact}[/] (audit from the {info['source']})", highlight=False)
    if "note" in info:
        out.print(f"  [yellow]{info['note']}[/]", highlight=False, soft_wrap=True)
    out.print(f"  {describe_audit(audit)}", highlight=False)
    if info["source"] == "manifest":
        entry = info["input"]
        dtype = "" if entry.get("dtype", "float32") == "float32" else f" {entry['dtype']}"
        out.print(f"  model {info['model']}, recipe {info['recipe']['name']}, input {entry['shape']}{dtype}")
        out.print(f"  numerics: {describe_numerics(info['numerics'])}", highlight=False, soft_wrap=True)
    table = Table("op", "count", title="ops by type")
    for op, n in sorted((audit.get("ops") or audit.get("ops_delegated") or {}).items(), key=lambda kv: -kv[1]):
        table.add_row(op, str(n))
    for op, n in (audit.get("ops_outside") or {}).items():
        table.add_row(f"{op} (outside delegate)", str(n))
    if table.row_count:
        out.print(table)

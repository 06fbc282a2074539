"""``edgevit export``: one model to one target, or to every target's default recipe."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ..errors import EdgevitError
from .console import describe_audit, out, print_summary, progress

EXPORT_EXAMPLES = """
Examples:

  edgevit export lvt --target executorch

  edgevit export lvt_cls --checkpoint lvt_cls.pth.tar --output-dir build --force

  edgevit export lvt --input-size 256 --json

  edgevit export lvt --target all --output-dir build
"""


def export(
    model: Annotated[str, typer.Argument(help="Model name (see `edgevit models`).")],
    target: Annotated[
        str | None,
        typer.Option(
            help="executorch (.pte), coreml (.mlpackage), tflite, onnx, or all (every default recipe); "
            "default: the recipe's target, else executorch."
        ),
    ] = None,
    recipe: Annotated[
        str | None, typer.Option(help="Recipe name or YAML file; default: the target's default recipe.")
    ] = None,
    checkpoint: Annotated[
        Path | None, typer.Option(help=".pth/.pth.tar/.safetensors weights; default: random init (seed 0).")
    ] = None,
    input_size: Annotated[
        str | None,
        typer.Option(help="Input size: one number for a square input (224) or HEIGHTxWIDTH (128x512)."),
    ] = None,
    output_dir: Annotated[Path, typer.Option(help="Where the artifact and its manifest go.")] = Path("artifacts"),
    force: Annotated[bool, typer.Option(help="Overwrite an existing artifact.")] = False,
    images: Annotated[
        Path | None,
        typer.Option(help="Folder of JPEG/PNG photos for numerics; default: scikit-image's photos."),
    ] = None,
    num_images: Annotated[int, typer.Option(min=1, help="How many photos to compare on.")] = 8,
    allow_gate_failures: Annotated[
        bool, typer.Option(help="Keep an artifact that misses the recipe's gates (recorded in the manifest).")
    ] = False,
    labels: Annotated[
        Path | None,
        typer.Option(help="Text file, one class label per line: recorded in the manifest; Core ML gets a classifier."),
    ] = None,
    image_input: Annotated[
        bool, typer.Option(help="Core ML: take an RGB image (CVPixelBuffer) with the normalisation inside the model.")
    ] = False,
    calib_images: Annotated[
        Path | None,
        typer.Option(help="int8 recipes: folder of JPEG/PNG (recursive) to calibrate on; default: scikit-image's."),
    ] = None,
    calib_count: Annotated[int, typer.Option(min=1, help="int8 recipes: how many calibration images.")] = 16,
    keep_float: Annotated[
        list[str] | None,
        typer.Option(help="int8 recipes: module name (fnmatch) to keep fp32, e.g. stages.0.1; repeatable."),
    ] = None,
    compare_fp32: Annotated[
        bool,
        typer.Option(
            help="int8 recipes: also export the fp32 twin and time both (size and latency ratios in the manifest)."
        ),
    ] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the manifest as JSON on stdout.")] = False,
) -> None:
    """Export MODEL for a target: lower, (quantize,) convert, verify on real photos, gate, write artifact + manifest."""
    from ..export import read_labels
    from ..models import check_input_size, get_entry, parse_size
    from ..quant.flow import QuantizeRequest
    from ..recipe import get_recipe
    from ..targets import get_target, list_targets

    if target is None:
        target = get_recipe(recipe).target if recipe else "executorch"
    get_entry(model)  # a bad name or size fails once, before any target is tried
    if target != "all":
        get_target(target)  # a bad target fails before the progress line starts
    size = None if input_size is None else parse_size(input_size)
    if size is not None:
        check_input_size(model, size)
    options = dict(
        recipe=recipe,
        checkpoint=checkpoint,
        input_size=size,
        output_dir=output_dir,
        force=force,
        images=images,
        num_images=num_images,
        allow_gate_failures=allow_gate_failures,
        labels=read_labels(labels) if labels else None,
        image_input=image_input,
        quantize_request=QuantizeRequest(calib_images, calib_count, tuple(keep_float or ())),
        vs_fp32=compare_fp32,
    )
    if target != "all":
        result = _export_one(model, target, options)
        if as_json:
            print(
                json.dumps(
                    {
                        "artifact_path": str(result.artifact),
                        "manifest_path": str(result.manifest_path),
                        **result.manifest,
                    },
                    indent=2,
                )
            )
            return
        print_summary(result)
        return

    if recipe is not None:
        raise EdgevitError("--recipe picks one recipe; with --target all every target uses its default recipe")
    rows, failed = [], False
    for each in list_targets():
        try:
            # --image-input shapes the artifacts that take images (Core ML); the others take the normalised tensor
            with_image = image_input and each.app_image_io
            result = _export_one(model, each.name, {**options, "image_input": with_image})
            rows.append({"target": each.name, "ok": True, "artifact_path": str(result.artifact), **result.manifest})
        except EdgevitError as e:
            failed = True
            rows.append({"target": each.name, "ok": False, "error": str(e)})
    if as_json:
        print(json.dumps(rows, indent=2))
    else:
        _print_targets_table(rows)
        out.print(f"artifacts and manifests in {output_dir}", highlight=False)
    if failed:
        raise typer.Exit(3)


def _export_one(model: str, target: str, options: dict):
    from ..export import export_model

    with progress() as show:
        return export_model(model, target=target, on_step=lambda step: show(f"{model} -> {target}: {step}"), **options)


def _print_targets_table(rows: list[dict]) -> None:
    table = Table("target", "artifact", "MB", "SQNR dB", "audit")
    for r in rows:
        if not r["ok"]:
            table.add_row(r["target"], "[red]failed[/]", "", "", r["error"])
            continue
        num = r["numerics"]
        table.add_row(
            r["target"],
            Path(r["artifact_path"]).name,
            f"{r['artifact']['size_bytes'] / 1e6:.1f}",
            "skipped (needs macOS)" if "skipped" in num else f"{num['sqnr_db']:.1f}",
            describe_audit(r["audit"]),
        )
    out.print(table)

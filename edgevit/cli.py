"""The ``edgevit`` command: a thin layer over the library's public functions."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import warnings
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from .cli_bench import BENCH_EXAMPLES, bench, devices_app
from .cli_train import QAT_EXAMPLES, datasets_app, qat
from .errors import EdgevitError, Stopped, raise_stopped

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Put small vision transformers on phones: export, verify and benchmark LVT and friends.",
    pretty_exceptions_enable=False,
)
# tables are wide: a pipe or a log gets them whole instead of squeezed to 80 columns
out = Console(width=None if Console().is_terminal else 160)
err = Console(stderr=True)

EXPORT_EXAMPLES = """
Examples:

  edgevit export lvt --target executorch

  edgevit export lvt_cls --checkpoint lvt_cls.pth.tar --output-dir build --force

  edgevit export lvt --input-size 256 --json

  edgevit export lvt --target all --output-dir build
"""


@app.command()
def models(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List the models: parameters, MACs at the default input size, default input size."""
    from .export import model_stats
    from .models import list_models, size_text

    rows = [model_stats(name) for name in list_models()]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table("model", "params (M)", "GMACs", "input", "description")
    for r in rows:
        size = size_text(r["input_size"] if isinstance(r["input_size"], int) else tuple(r["input_size"]))
        table.add_row(r["name"], f"{r['params_m']:.3f}", f"{r['gmacs']:.3f}", size, r["description"])
    out.print(table)


@app.command()
def recipes(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List the built-in recipes (target, precision, gates)."""
    from .recipe import builtin_recipes, default_recipe_names

    items = builtin_recipes()
    if as_json:
        print(json.dumps([r.to_dict() for r in items.values()], indent=2))
        return
    table = Table("recipe", "target", "precision", "default", "description")
    defaults = default_recipe_names()
    for r in items.values():
        table.add_row(r.name, r.target, r.precision, "yes" if r.name in defaults else "", r.description)
    out.print(table)


@app.command(epilog=EXPORT_EXAMPLES)
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
    as_json: Annotated[bool, typer.Option("--json", help="Print the manifest as JSON on stdout.")] = False,
) -> None:
    """Export MODEL for a target: lower, (quantize,) convert, verify on real photos, gate, write artifact + manifest."""
    from .export import read_labels
    from .models import check_input_size, get_entry, parse_size
    from .quant.flow import QuantizeRequest
    from .recipe import get_recipe
    from .targets import list_targets

    if target is None:
        target = get_recipe(recipe).target if recipe else "executorch"
    get_entry(model)  # a bad name or size fails once, before any target is tried
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
        _print_summary(result)
        return

    if recipe is not None:
        raise EdgevitError("--recipe picks one recipe; with --target all every target uses its default recipe")
    rows, failed = [], False
    for each in (t.name for t in list_targets()):
        try:
            # --image-input shapes the Core ML artifact only; the other targets take the normalised tensor
            result = _export_one(model, each, {**options, "image_input": image_input and each == "coreml"})
            rows.append({"target": each, "ok": True, "artifact_path": str(result.artifact), **result.manifest})
        except EdgevitError as e:
            failed = True
            rows.append({"target": each, "ok": False, "error": str(e)})
    if as_json:
        print(json.dumps(rows, indent=2))
    else:
        table = Table("target", "artifact", "MB", "SQNR dB", "audit")
        for r in rows:
            if not r["ok"]:
                table.add_row(r["target"], "[red]failed[/]", "", "", r["error"])
                continue
            audit, num = r["audit"], r["numerics"]
            note = describe_audit(audit)
            table.add_row(
                r["target"],
                Path(r["artifact_path"]).name,
                f"{r['artifact']['size_bytes'] / 1e6:.1f}",
                "skipped (needs macOS)" if "skipped" in num else f"{num['sqnr_db']:.1f}",
                note,
            )
        out.print(table)
        out.print(f"artifacts and manifests in {output_dir}", highlight=False)
    if failed:
        raise typer.Exit(3)


app.command(epilog=BENCH_EXAMPLES)(bench)
app.add_typer(devices_app, name="devices")
app.command(epilog=QAT_EXAMPLES)(qat)
app.add_typer(datasets_app, name="datasets")


def _export_one(model: str, target: str, options: dict):
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from .export import export_model

    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=err, transient=True
    ) as progress:
        task = progress.add_task("start", total=None)

        def on_step(name: str) -> None:
            progress.update(task, description=f"{model} -> {target}: {name}")

        return export_model(model, target=target, on_step=on_step, **options)


def _print_summary(result) -> None:
    m = result.manifest
    lines = [
        f"[bold]{result.artifact}[/] ({m['artifact']['size_bytes'] / 1e6:.1f} MB, "
        f"exported in {m['artifact']['export_seconds']:.0f} s)",
        f"  audit: {describe_audit(m['audit'])}",
        f"  numerics: {describe_numerics(m['numerics'])}",
        f"  manifest: {result.manifest_path}",
    ]
    if m["gates"]["failures"]:
        lines.append("[yellow]  gates missed (kept by --allow-gate-failures):[/] " + "; ".join(m["gates"]["failures"]))
    for line in lines:
        out.print(line, highlight=False, soft_wrap=True)


@app.command()
def verify(
    artifact: Annotated[Path, typer.Argument(help="A .pte, .onnx or .mlpackage written by `edgevit export`.")],
    images: Annotated[
        Path | None, typer.Option(help="Folder of JPEG/PNG photos; default: scikit-image's photos.")
    ] = None,
    num_images: Annotated[int, typer.Option(min=1, help="How many photos to compare on.")] = 8,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Re-run an artifact on its host runtime against PyTorch fp32 (model and weights from its manifest)."""
    from .inspection import verify_artifact

    result = verify_artifact(artifact, images, num_images)
    num = result["numerics"]
    if as_json:
        print(json.dumps(result, indent=2))
        return
    if "skipped" in num:
        out.print(f"{artifact}: {num['skipped']}", highlight=False, soft_wrap=True)
        return
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


@app.command()
def inspect(
    artifact: Annotated[Path, typer.Argument(help="A .pte, .onnx or .mlpackage (with or without a manifest).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a summary.")] = False,
) -> None:
    """Show an artifact's audit: from its manifest, or computed from the bare file."""
    from .inspection import inspect_artifact

    info = inspect_artifact(artifact)
    if as_json:
        print(json.dumps(info, indent=2))
        return
    audit = info["audit"]
    out.print(f"[bold]{artifact}[/] (audit from the {info['source']})", highlight=False)
    out.print(f"  {describe_audit(audit)}", highlight=False)
    if info["source"] == "manifest":
        out.print(f"  model {info['model']}, recipe {info['recipe']['name']}, input {info['input']['shape']}")
        out.print(f"  numerics: {describe_numerics(info['numerics'])}", highlight=False, soft_wrap=True)
    table = Table("op", "count", title="ops by type")
    for op, n in sorted((audit.get("ops") or audit.get("ops_delegated") or {}).items(), key=lambda kv: -kv[1]):
        table.add_row(op, str(n))
    for op, n in (audit.get("ops_outside") or {}).items():
        table.add_row(f"{op} (outside delegate)", str(n))
    if table.row_count:
        out.print(table)


def describe_audit(audit: dict) -> str:
    """One line of the audit figures that matter for the artifact's target."""
    parts = []
    if "partitions" in audit:
        part = f"{audit['partitions']} {audit['backend']} partition(s)"
        if "delegated_share" in audit:
            part += f", {audit['delegated_share'] * 100:.1f}% of ops delegated"
        parts.append(f"{part}, {sum(audit['ops_outside'].values())} ops outside")
    else:
        parts.append(f"{sum(audit['ops'].values())} {audit['backend']} ops")
    if "all_builtin" in audit:
        parts.append("all builtin" if audit["all_builtin"] else f"non-builtin: {', '.join(audit['non_builtin_ops'])}")
    if audit.get("xnnpack_partitions") is not None:
        parts.append(f"{audit['xnnpack_partitions']} XNNPACK partition(s)")
    if "transposes" in audit:
        parts.append(f"{audit['transposes']} transposes")
    if "fp16_share" in audit:
        parts.append(f"fp16 share {audit['fp16_share'] * 100:.0f}%")
    if "max_rank" in audit:
        parts.append(f"max rank {audit['max_rank']}")
    return ", ".join(parts)


def describe_numerics(num: dict) -> str:
    if "skipped" in num and "simulated" in num:
        return f"{num['skipped']}; gated on {describe_numerics(num['simulated'])}"
    if "skipped" in num:
        return num["skipped"]
    return (
        f"vs PyTorch fp32 on {num['samples']} photos ({num['runtime']}): max abs diff {num['max_abs_diff']:.2e}, "
        f"SQNR {num['sqnr_db']:.1f} dB, top-1 agreement {num['top1_agreement'] * 100:.0f}%"
    )


def main() -> None:
    """Console entry point: user errors print one line and exit non-zero; EDGEVIT_DEBUG=1 shows tracebacks."""
    if os.environ.get("EDGEVIT_DEBUG") != "1":
        # third-party deprecation chatter is not the user's to act on
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module="torch")
        # the Core ML trace freezes shape checks on purpose: deploy forms are built for one input size
        warnings.filterwarnings("ignore", message="Converting a tensor to a Python boolean")
        logging.getLogger("torchao").setLevel(logging.ERROR)  # optional CUDA kernels it cannot load
        logging.getLogger("coremltools").setLevel(logging.ERROR)  # macOS-only proxies missing elsewhere
        # "torchvision is not installed" once per torchvision op, from the ONNX exporter's registry
        logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
        logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)
        # "exported with CoreML specification version N": said for every model, whatever the target set
        logging.getLogger("executorch.backends.apple.coreml.compiler.coreml_preprocess").setLevel(logging.ERROR)
        os.environ.setdefault("TQDM_DISABLE", "1")  # converters' pass-by-pass bars; the CLI shows its own
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # XLA/oneDNN start-up notices from litert's jax
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, raise_stopped)
    try:
        # outside standalone mode typer returns, not raises, the code of a typer.Exit
        status = app(standalone_mode=False)
    except EdgevitError as e:
        if os.environ.get("EDGEVIT_DEBUG") == "1":
            raise
        err.print(f"[red]error:[/] {e}", highlight=False, soft_wrap=True)
        sys.exit(e.exit_code)
    except (typer.Exit, SystemExit) as e:
        code = getattr(e, "exit_code", getattr(e, "code", 0))
        sys.exit(code)
    except Stopped as e:
        err.print(f"{'terminated' if e.signum == signal.SIGTERM else 'interrupted'}; no half-written file was left")
        sys.exit(e.exit_code)
    except Exception as e:  # usage errors of typer's click arrive here in standalone_mode=False
        if hasattr(e, "show") and hasattr(e, "exit_code"):
            e.show()
            sys.exit(e.exit_code)
        if type(e).__name__ == "Abort":
            sys.exit(1)
        raise
    if isinstance(status, int) and status:
        sys.exit(status)


if __name__ == "__main__":
    main()

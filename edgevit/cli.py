"""The ``edgevit`` command: a thin layer over the library's public functions."""

from __future__ import annotations

import json
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from .errors import EdgevitError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Put small vision transformers on phones: export, verify and benchmark LVT and friends.",
    pretty_exceptions_enable=False,
)
out = Console()
err = Console(stderr=True)

EXPORT_EXAMPLES = """
Examples:

  edgevit export lvt --target executorch

  edgevit export lvt_cls --checkpoint lvt_cls.pth.tar --output-dir build --force

  edgevit export lvt --input-size 256 --json
"""


@app.command()
def models(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List the models: parameters, MACs at the default input size, default input size."""
    from .export import model_stats
    from .models import list_models

    rows = [model_stats(name) for name in list_models()]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table("model", "params (M)", "GMACs", "input", "description")
    for r in rows:
        table.add_row(r["name"], f"{r['params_m']:.3f}", f"{r['gmacs']:.3f}", str(r["input_size"]), r["description"])
    out.print(table)


@app.command()
def recipes(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List the built-in recipes (target, precision, gates)."""
    from .recipe import DEFAULT_RECIPES, builtin_recipes

    items = builtin_recipes()
    if as_json:
        print(json.dumps([r.to_dict() for r in items.values()], indent=2))
        return
    table = Table("recipe", "target", "precision", "default", "description")
    defaults = set(DEFAULT_RECIPES.values())
    for r in items.values():
        table.add_row(r.name, r.target, r.precision, "yes" if r.name in defaults else "", r.description)
    out.print(table)


@app.command(epilog=EXPORT_EXAMPLES)
def export(
    model: Annotated[str, typer.Argument(help="Model name (see `edgevit models`).")],
    target: Annotated[str, typer.Option(help="executorch (more targets: see `edgevit recipes`).")] = "executorch",
    recipe: Annotated[
        str | None, typer.Option(help="Recipe name or YAML file; default: the target's default recipe.")
    ] = None,
    checkpoint: Annotated[
        Path | None, typer.Option(help=".pth/.pth.tar/.safetensors weights; default: random init (seed 0).")
    ] = None,
    input_size: Annotated[int | None, typer.Option(help="Square input size, a multiple of 32.")] = None,
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
    as_json: Annotated[bool, typer.Option("--json", help="Print the manifest as JSON on stdout.")] = False,
) -> None:
    """Export MODEL for a target: lower, convert, verify on real photos, gate, write artifact + manifest."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from .export import export_model

    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=err, transient=True
    ) as progress:
        task = progress.add_task("start", total=None)

        def on_step(name: str) -> None:
            progress.update(task, description=f"{model}: {name}")

        result = export_model(
            model,
            target=target,
            recipe=recipe,
            checkpoint=checkpoint,
            input_size=input_size,
            output_dir=output_dir,
            force=force,
            images=images,
            num_images=num_images,
            allow_gate_failures=allow_gate_failures,
            on_step=on_step,
        )
    m = result.manifest
    if as_json:
        print(
            json.dumps(
                {"artifact_path": str(result.artifact), "manifest_path": str(result.manifest_path), **m},
                indent=2,
            )
        )
        return
    audit, num = m["audit"], m["numerics"]
    lines = [
        f"[bold]{result.artifact}[/] ({m['artifact']['size_bytes'] / 1e6:.1f} MB, "
        f"exported in {m['artifact']['export_seconds']:.0f} s)",
        f"  delegate: {audit['partitions']} {audit['backend']} partition(s), "
        f"{audit['delegated_share'] * 100:.1f}% of ops delegated, {sum(audit['ops_outside'].values())} outside, "
        f"max rank {audit['max_rank']}",
        f"  numerics vs PyTorch fp32 on {num['samples']} photos ({num['runtime']}): max abs diff "
        f"{num['max_abs_diff']:.2e}, SQNR {num['sqnr_db']:.1f} dB, top-1 agreement {num['top1_agreement'] * 100:.0f}%",
        f"  manifest: {result.manifest_path}",
    ]
    if m["gates"]["failures"]:
        lines.append("[yellow]  gates missed (kept by --allow-gate-failures):[/] " + "; ".join(m["gates"]["failures"]))
    for line in lines:
        out.print(line, highlight=False, soft_wrap=True)


def main() -> None:
    """Console entry point: user errors print one line and exit non-zero; EDGEVIT_DEBUG=1 shows tracebacks."""
    if os.environ.get("EDGEVIT_DEBUG") != "1":
        # third-party deprecation chatter is not the user's to act on
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module="torch")
        logging.getLogger("torchao").setLevel(logging.ERROR)  # optional CUDA kernels it cannot load
    try:
        app(standalone_mode=False)
    except EdgevitError as e:
        if os.environ.get("EDGEVIT_DEBUG") == "1":
            raise
        err.print(f"[red]error:[/] {e}", highlight=False, soft_wrap=True)
        sys.exit(e.exit_code)
    except (typer.Exit, SystemExit) as e:
        code = getattr(e, "exit_code", getattr(e, "code", 0))
        sys.exit(code)
    except KeyboardInterrupt:
        err.print("interrupted; nothing was written")
        sys.exit(130)
    except Exception as e:  # click usage errors arrive here in standalone_mode=False
        import click

        if isinstance(e, click.exceptions.ClickException):
            e.show()
            sys.exit(e.exit_code)
        if isinstance(e, click.exceptions.Abort):
            sys.exit(1)
        raise


if __name__ == "__main__":
    main()

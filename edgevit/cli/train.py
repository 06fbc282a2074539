"""``edgevit qat`` and ``edgevit datasets``: quantization-aware training on an image folder, and offline data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from .console import err, out, print_summary, progress

QAT_EXAMPLES = """
Examples:

  edgevit datasets digits data/digits

  edgevit qat lvt --data data/digits/train --val data/digits/val --target executorch --epochs 3 --input-size 64

  edgevit qat lvt --data photos/ --target tflite --init lvt_finetuned.pth --checkpoint runs/lvt.qat.pt
"""


def qat(
    model: Annotated[str, typer.Argument(help="Model name (see `edgevit models`).")],
    data: Annotated[Path, typer.Option(help="Training images: one subfolder per class, JPEG/PNG inside.")],
    target: Annotated[str, typer.Option(help="executorch, tflite or coreml: QAT uses that target's quantizer.")],
    recipe: Annotated[
        str | None, typer.Option(help="A static int8 recipe of the target; default: the target's int8 recipe.")
    ] = None,
    epochs: Annotated[int, typer.Option(min=1, help="Passes over the training images.")] = 3,
    checkpoint: Annotated[
        Path | None,
        typer.Option(
            help="Saved after every epoch; an existing one of the same run is resumed. "
            "Default: OUTPUT_DIR/MODEL-RECIPE.qat.pt"
        ),
    ] = None,
    init: Annotated[
        Path | None, typer.Option(help="fp32 checkpoint to start from (e.g. your fine-tuned model).")
    ] = None,
    val: Annotated[
        Path | None, typer.Option(help="Held-out images, same class subfolders: accuracy per epoch.")
    ] = None,
    input_size: Annotated[
        str | None, typer.Option(help="Input size: one number (224) or HEIGHTxWIDTH (128x512).")
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per training step.")] = 32,
    lr: Annotated[float, typer.Option(min=0.0, help="AdamW learning rate.")] = 1e-4,
    output_dir: Annotated[Path, typer.Option(help="Where the artifact and manifest go.")] = Path("artifacts"),
    force: Annotated[bool, typer.Option(help="Overwrite an existing artifact.")] = False,
    compare_fp32: Annotated[
        bool, typer.Option(help="Also export the fp32 twin and time both (size and latency ratios in the manifest).")
    ] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the manifest as JSON on stdout.")] = False,
) -> None:
    """Quantization-aware training with the target's own quantizer, then the gated int8 export.

    Ctrl-C keeps the last finished epoch's checkpoint; run the same command again to resume.
    """
    from ..models import parse_size
    from ..train.qat import qat_export

    with progress() as show:

        def on_step(name: str) -> None:
            show(f"{model} QAT -> {target}: {name}")
            if ": loss " in name:  # one line per finished epoch stays on screen
                err.print(name, highlight=False)

        result, _ = qat_export(
            model,
            data,
            target,
            recipe,
            epochs,
            checkpoint,
            init,
            val,
            None if input_size is None else parse_size(input_size),
            batch_size,
            lr,
            output_dir,
            force,
            on_step=on_step,
            vs_fp32=compare_fp32,
        )
    if as_json:
        print(json.dumps({"artifact_path": str(result.artifact), **result.manifest}, indent=2))
        return
    print_summary(result)
    accuracy = result.manifest["quantization"]["qat"].get("val_accuracy_artifact")
    if accuracy is not None:
        out.print(f"  held-out accuracy of the int8 artifact: {accuracy:.1%}", highlight=False)


datasets_app = typer.Typer(
    help="Labelled image sets that work offline, written as class folders.", no_args_is_help=True
)


@datasets_app.command("digits")
def digits(
    out_dir: Annotated[Path, typer.Argument(help="New folder: gets train/<digit>/*.png and val/<digit>/*.png.")],
    size: Annotated[int, typer.Option(min=8, help="Side of the RGB PNGs.")] = 64,
    val_fraction: Annotated[float, typer.Option(help="Share held out for val/, class balance kept.")] = 0.2,
) -> None:
    """scikit-learn's 1,797 handwritten digit scans (10 classes) as an image folder."""
    from ..train.digits import write_digits

    counts = write_digits(out_dir, size, val_fraction)
    out.print(f"{out_dir}: {counts['train']} training and {counts['val']} held-out images, 10 classes", highlight=False)

"""Does every int8 recipe pass its SQNR gate on a trained model?

Per model: the fp32 weights trained on the digits by benchmarks/accuracy.py (trained here, with the same
split, seed, epochs and size, when that run has not left them), then every int8 recipe exported with them at
64x64, calibrated on training digits and checked on held-out ones: the gate `edgevit export` applies, in each
target's runtime (Core ML: the quantized graph simulated in PyTorch, as off macOS the export itself does).

Random weights are no test of int8 for MMViT: its untrained logits hardly differ between images, so rounding
is a large share of what differs (docs/mmvit.md). Results merge per model into
benchmarks/results/int8_gates.json; --write-results puts the table into docs/results.md (bench:int8-gates).
"""

from __future__ import annotations

import argparse
import json
import time

from accuracy import OUT, SIZE, digits_folder, log, save_models, train_fp32, train_size
from results_doc import add_write_flag, write_section

RESULTS = OUT.parents[1] / "results" / "int8_gates.json"
# (target, recipe): every int8 recipe; tflite-int8-float-io quantizes as tflite-int8 does
RECIPES = [
    ("executorch", "executorch-xnnpack-int8"),
    ("executorch", "executorch-xnnpack-dynamic-int8"),
    ("tflite", "tflite-int8"),
    ("tflite", "tflite-dynamic-int8"),
    ("onnx", "onnx-int8"),
    ("coreml", "coreml-w8a8"),
]


def trained_weights(model_name: str, data, epochs: int):
    """accuracy.py's fp32 checkpoint of the model, trained now if that run has not written it."""
    from edgevit.errors import EdgevitError
    from edgevit.models import create_model, get_entry
    from edgevit.train.folder import load_labelled

    checkpoint = OUT / f"{model_name}-digits-fp32.pth"
    if checkpoint.exists():
        try:  # written by an older model definition, it no longer loads: train again
            create_model(model_name, checkpoint, input_size=train_size(model_name))
            log(f"{model_name}: fp32 weights from {checkpoint.name}")
            return checkpoint
        except EdgevitError as e:
            log(f"{model_name}: {checkpoint.name} does not load into this model ({e}); training again")
    spec = get_entry(model_name).input_spec
    train = load_labelled(data / "train", spec, train_size(model_name))
    val = load_labelled(data / "val", spec, train_size(model_name), train.classes)
    checkpoint, _ = train_fp32(model_name, train, val, epochs, batch=32, lr=1e-3)
    return checkpoint


def gate_row(model_name: str, target: str, recipe: str, checkpoint, data) -> dict:
    from edgevit.export import export_model
    from edgevit.quant.flow import QuantizeRequest

    t0 = time.perf_counter()
    result = export_model(
        model_name,
        target,
        recipe,
        checkpoint=checkpoint,
        input_size=train_size(model_name),
        output_dir=OUT / "gates" / model_name,
        force=True,
        images=data / "val" / "0",
        quantize_request=QuantizeRequest(data / "train", 64),
        allow_gate_failures=True,  # a missed gate is the finding to report
        sensitivity=False,
        vs_fp32=False,
    )
    manifest = result.manifest
    numerics = manifest["numerics"]
    measured = numerics.get("simulated") if "skipped" in numerics else numerics
    return {
        "sqnr_db": measured["sqnr_db"],
        "top1_agreement": measured.get("top1_agreement"),
        "runtime": "PyTorch simulation (Core ML needs macOS)" if "skipped" in numerics else "own runtime",
        "min_sqnr_db": manifest["recipe"].get("gates", {}).get("min_sqnr_db"),
        "passed": manifest["gates"]["passed"],
        "failures": manifest["gates"]["failures"],
        "seconds": round(time.perf_counter() - t0, 1),
    }


def table(models: dict) -> str:
    lines = [
        "| model | recipe | SQNR vs fp32 | top-1 agree | gate | measured in |",
        "|---|---|---:|---:|---|---|",
    ]
    for name, rows in models.items():
        for recipe, row in rows.items():
            top1 = f"{row['top1_agreement']:.0%}" if row.get("top1_agreement") is not None else "-"
            verdict = "passed" if row["passed"] else "MISSED"
            lines.append(
                f"| {name} | {recipe} | {row['sqnr_db']:.1f} dB | {top1} | {verdict} (min {row['min_sqnr_db']} dB)"
                f" | {row['runtime']} |"
            )
    return "\n".join(lines) + (
        f"\n\nEach model trained on the digits at {SIZE}x{SIZE} (CrossViT, whose sides are multiples of 120, at "
        "120x120; `benchmarks/accuracy.py`'s weights), every int8 "
        "recipe calibrated on 64 training digits and compared with its fp32 model on 8 held-out ones "
        "(`benchmarks/int8_gates.py`)."
    )


def main() -> None:
    from edgevit.models.registry import benchmarked_models

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--models",
        nargs="+",
        help=f"models to gate; default: the benchmarked ones ({', '.join(benchmarked_models())})",
    )
    parser.add_argument("--recipes", nargs="+", choices=[r for _, r in RECIPES], help="only these int8 recipes")
    parser.add_argument("--epochs", type=int, default=15, help="fp32 training epochs when weights are missing")
    add_write_flag(parser)
    args = parser.parse_args()

    data = digits_folder()
    saved = json.loads(RESULTS.read_text()).get("models", {}) if RESULTS.exists() else {}
    for name in args.models or benchmarked_models():
        checkpoint = trained_weights(name, data, args.epochs)
        rows = saved.get(name, {})
        for target, recipe in RECIPES:
            if args.recipes and recipe not in args.recipes:
                continue
            log(f"{name}: {recipe}")
            rows[recipe] = gate_row(name, target, recipe, checkpoint, data)
            log(f"{name}: {recipe}: {rows[recipe]['sqnr_db']:.1f} dB, passed {rows[recipe]['passed']}")
            saved[name] = rows
            save_models(RESULTS, saved)
    body = table(saved)
    print(body)
    if args.write_results:
        write_section("int8-gates", body)


if __name__ == "__main__":
    main()

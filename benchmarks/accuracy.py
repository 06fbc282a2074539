"""The accuracy table: each model trained at 64x64 on scikit-learn's handwritten digits (offline, real scans),
then fp32, PTQ int8 and QAT int8 top-1 on the held-out split, each measured in the target's own runtime.

Steps per model: write the digits as class folders; train the fp32 training form; export fp32 and PTQ int8 per
target (calibrated on training images); QAT from the fp32 weights per target; score every artifact on val/.
Every model sees the same split, seed, epochs and input size. Results are merged per model into
benchmarks/results/accuracy.json (so one model can be re-measured alone) and, with --write-results, the table of
every measured model goes into docs/results.md (bench:accuracy) and the per-model summary is refreshed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from model_table import write_summary
from results_doc import add_write_flag, write_section

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out" / "accuracy"
RESULTS = ROOT / "benchmarks" / "results" / "accuracy.json"
SIZE = 64  # the digits' side: each model trains at the smallest size it takes from here up (train_size)
SEED = 0
# target -> (fp32 recipe, int8 recipe); ONNX has PTQ only (onnxruntime's quantizer has no QAT)
TARGETS = {
    "executorch": ("executorch-xnnpack-fp32", "executorch-xnnpack-int8"),
    "tflite": ("tflite-fp32", "tflite-int8"),
    "onnx": ("onnx-fp32", "onnx-int8"),
}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def digits_folder() -> Path:
    """The digits as class folders (train/, val/) under OUT, written on first use."""
    from edgevit.train.digits import write_digits

    data = OUT / "digits"
    if not data.exists():
        OUT.mkdir(parents=True, exist_ok=True)
        write_digits(data, SIZE)
    return data


def train_size(model_name: str) -> int:
    """The side a model trains and is scored at: SIZE rounded up to the multiple its input takes (CrossViT: 120)."""
    from edgevit.models import get_entry

    multiple = get_entry(model_name).input_spec.size_multiple
    return -(-SIZE // multiple) * multiple


def save_models(path: Path, saved: dict) -> None:
    """Per-model results, written after each model so a stopped run keeps what it measured."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"models": saved}, indent=2))


def train_fp32(model_name: str, train, val, epochs: int, batch: int, lr: float) -> tuple[Path, list[dict]]:
    from edgevit.models import create_model
    from edgevit.train.loop import accuracy, train_epoch

    torch.manual_seed(SEED)
    model = create_model(model_name, input_size=train_size(model_name), num_classes=len(train.classes))
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs)
    generator = torch.Generator().manual_seed(SEED)
    history = []
    for epoch in range(epochs):
        model.train()
        loss = train_epoch(model, optimizer, train.images, train.labels, batch, generator)
        schedule.step()
        model.eval()
        history.append({"epoch": epoch + 1, "loss": round(loss, 4), "val": accuracy(model, val.images, val.labels)})
        log(f"{model_name} fp32 epoch {epoch + 1}/{epochs}: loss {loss:.3f}, val {history[-1]['val']:.1%}")
    path = OUT / f"{model_name}-digits-fp32.pth"
    torch.save(model.state_dict(), path)
    return path, history


def measure(model_name: str, data: Path, epochs: int, qat_epochs: int, targets: list[str]) -> dict:
    """fp32 training, then fp32 / PTQ / QAT top-1 per target for one model."""
    from edgevit.export import export_model
    from edgevit.models import get_entry
    from edgevit.quant.flow import QuantizeRequest
    from edgevit.train.folder import load_labelled
    from edgevit.train.qat import artifact_accuracy, qat_export

    spec, size = get_entry(model_name).input_spec, train_size(model_name)
    train = load_labelled(data / "train", spec, size)
    val = load_labelled(data / "val", spec, size, train.classes)
    checkpoint, history = train_fp32(model_name, train, val, epochs, batch=32, lr=1e-3)
    out = OUT / model_name
    rows = {}
    for target in targets:
        fp32_recipe, int8_recipe = TARGETS[target]
        row = {}
        for kind, recipe in (("fp32", fp32_recipe), ("ptq", int8_recipe)):
            log(f"{model_name} {target}: export {recipe}")
            result = export_model(
                model_name,
                target,
                recipe,
                checkpoint=checkpoint,
                input_size=size,
                output_dir=out,
                force=True,
                images=data / "val" / "0",
                labels=train.classes,
                quantize_request=QuantizeRequest(data / "train", 64),
            )
            row[kind] = artifact_accuracy(result.artifact, val)
            if kind == "ptq":  # the export's own gate figure: int8 artifact vs its fp32 model on held-out digits
                row["ptq_sqnr_db"] = result.manifest["numerics"].get("sqnr_db")
        if target != "onnx":
            log(f"{model_name} {target}: QAT")
            (out / f"{target}.qat.pt").unlink(missing_ok=True)  # a measurement starts from the fp32 weights
            result, _ = qat_export(
                model_name,
                data / "train",
                target,
                int8_recipe,
                qat_epochs,
                out / f"{target}.qat.pt",
                checkpoint,
                data / "val",
                size,
                output_dir=out / "qat",  # beside, not over, the PTQ artifact of the same recipe
                force=True,
            )
            row["qat"] = result.manifest["quantization"]["qat"]["val_accuracy_artifact"]
        rows[target] = row
        log(f"{model_name} {target}: {row}")
    return {"fp32_training": history, "targets": rows, "epochs": epochs, "qat_epochs": qat_epochs, "size": size}


def table(models: dict) -> str:
    lines = ["| model | target | fp32 | PTQ int8 | PTQ SQNR | QAT int8 |", "|---|---|---:|---:|---:|---:|"]
    for name, result in models.items():
        for target, row in result["targets"].items():
            cells = [f"{row[k]:.1%}" if row.get(k) is not None else "-" for k in ("fp32", "ptq", "qat")]
            sqnr = row.get("ptq_sqnr_db")
            cells.insert(2, f"{sqnr:.1f} dB" if sqnr is not None else "-")
            lines.append(f"| {name} | {target} | " + " | ".join(cells) + " |")
    first = next(iter(models.values()))
    others = ", ".join(f"{n} {r['size']}x{r['size']}" for n, r in models.items() if r["size"] != first["size"])
    return "\n".join(lines) + (
        f"\n\nAt {first['size']}x{first['size']}{f' ({others})' if others else ''}, trained {first['epochs']} epochs "
        "on the 1,437 training digits, "
        f"QAT {first['qat_epochs']} epochs from those weights; top-1 on the 360 held-out digits, each artifact "
        "in its own runtime (`benchmarks/accuracy.py`)."
    )


def main() -> None:
    from edgevit.models.registry import benchmarked_models

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--models",
        nargs="+",
        help=f"models to train and measure; default: the benchmarked ones ({', '.join(benchmarked_models())})",
    )
    parser.add_argument("--epochs", type=int, default=15, help="fp32 training epochs")
    parser.add_argument("--qat-epochs", type=int, default=2, help="QAT epochs, from the fp32 weights")
    parser.add_argument("--targets", nargs="+", choices=list(TARGETS), default=list(TARGETS), help="targets to score")
    add_write_flag(parser)
    args = parser.parse_args()

    data = digits_folder()
    saved = json.loads(RESULTS.read_text()).get("models", {}) if RESULTS.exists() else {}
    for name in args.models or benchmarked_models():
        result = measure(name, data, args.epochs, args.qat_epochs, args.targets)
        previous = saved.get(name, {})
        if all(previous.get(k) == result[k] for k in ("epochs", "qat_epochs", "size")):
            # a run over some targets keeps the others' figures from the same settings
            result["targets"] = {**previous.get("targets", {}), **result["targets"]}
        saved[name] = result
        save_models(RESULTS, saved)
    body = table(saved)
    print(body)
    if args.write_results:
        write_section("accuracy", body)
        write_summary()  # its accuracy columns


if __name__ == "__main__":
    main()

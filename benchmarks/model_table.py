"""The per-model summary (bench:models, in the README and docs/results.md): size and cost from the registry,
latency per target from benchmarks/results/MODEL.json (bench_model.py) and trained accuracy from
benchmarks/results/accuracy.json (accuracy.py). It measures nothing itself; a model not measured yet shows a
dash. bench_model.py and accuracy.py refresh it after their measurements; alone:
python benchmarks/model_table.py --write-results
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from results_doc import add_write_flag, write_section

RESULTS = Path(__file__).resolve().parent / "results"
LATENCY = (("onnx", "(b) ORT, training form"), ("pte", ".pte"), ("tflite", ".tflite"), ("onnx_lowered", ".onnx"))


def _load(name: str) -> dict:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _ms(timing: dict, kind: str) -> str:
    return f"{timing[kind]['median_ms']:.1f}" if kind in timing else "—"


def best_ms(timing: dict, kind: str) -> float:
    """The path's fastest per-process median: the path in the VM's fast state (bench_model.STATES)."""
    return min(timing[kind]["per_process_medians_ms"])


def _best_ratio(timing: dict) -> str:
    """.pte against (b), each in its fastest process."""
    return f"{best_ms(timing, 'pte') / best_ms(timing, 'onnx'):.2f}x" if "pte" in timing and "onnx" in timing else "—"


def _top1(accuracy: dict, stage: str) -> str:
    value = accuracy.get("targets", {}).get("executorch", {}).get(stage)
    return f"{value:.1%}" if value is not None else "—"


def table() -> str:
    from edgevit.models.registry import benchmarked_models
    from edgevit.models.stats import model_stats

    accuracy = _load("accuracy").get("models", {})
    head = ["model", "params", "GMACs"] + [f"{label} ms" for _, label in LATENCY]
    head += [".pte vs (b)", "best process", "digits top-1 fp32", "int8 PTQ", "int8 QAT"]
    rows = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for name in benchmarked_models():
        stats, bench, acc = model_stats(name), _load(name), accuracy.get(name, {})
        timing = bench.get("timing", {})
        ratio = (
            f"{timing['pte']['median_ms'] / timing['onnx']['median_ms']:.2f}x"
            if "pte" in timing and "onnx" in timing
            else "—"
        )
        cells = [f"`{name}`", f"{stats['params_m']:.2f} M", f"{stats['gmacs']:.2f}"]
        cells += [_ms(timing, kind) for kind, _ in LATENCY] + [ratio, _best_ratio(timing)]
        cells += [_top1(acc, stage) for stage in ("fp32", "ptq", "qat")]
        rows.append("| " + " | ".join(cells) + " |")
    notes = (
        "Latency: each model at its own input size (224x224; CrossViT 240x240), batch 1, fp32, 2 threads on this "
        "machine, medians of per-process medians from `benchmarks/bench_model.py` (full tables in docs/results.md; "
        "best process: each path's fastest process), with weights shaped like "
        "a trained checkpoint's (`benchmarks/bench_weights.py`). Accuracy: trained at "
        "64x64 (CrossViT 120x120) on the digits set, held-out split, scored by the ExecuTorch artifact (int8: "
        "`executorch-xnnpack-int8`); other targets in the accuracy table."
    )
    return "\n".join(rows) + "\n\n" + notes


def write_summary() -> None:
    write_section("models", table())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_write_flag(parser)
    args = parser.parse_args()
    body = table()
    print(body)
    if args.write_results:
        write_section("models", body)


if __name__ == "__main__":
    main()

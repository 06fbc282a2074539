"""int8 against fp32 per target for LVT at 224: size, host latency and SQNR, each artifact timed in its own
process, alternating (fp32 int8 ... fp32 int8 ...), the figure being the median of the per-process medians.

Core ML artifacts are sized only: their prediction needs macOS. Results go to benchmarks/results/int8.json and,
with --write-results, into docs/results.md between the bench:int8 markers.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from bench_weights import write_bench_weights
from results_doc import add_write_flag, write_section

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out"
RESULTS = ROOT / "benchmarks" / "results" / "int8.json"

# per target: the fp32 reference recipe first, then the quantized recipes measured against it
GROUPS = {
    "executorch": ["executorch-xnnpack-fp32", "executorch-xnnpack-int8", "executorch-xnnpack-dynamic-int8"],
    "tflite": ["tflite-fp32", "tflite-int8", "tflite-int8-float-io", "tflite-dynamic-int8"],
    "onnx": ["onnx-fp32", "onnx-int8"],
    "coreml": ["coreml-fp16", "coreml-w8a8"],
}


def export_all() -> dict[str, dict]:
    from edgevit.export import export_model

    OUT.mkdir(parents=True, exist_ok=True)
    checkpoint = write_bench_weights("lvt")
    manifests = {}
    for target, recipes in GROUPS.items():
        for recipe in recipes:
            print(f"export {recipe}", file=sys.stderr)
            # a missed gate is a finding to show in the table, not a reason to stop measuring
            result = export_model(
                "lvt",
                target,
                recipe,
                output_dir=OUT,
                force=True,
                checkpoint=checkpoint,
                num_images=8,
                allow_gate_failures=True,
                sensitivity=False,
            )
            manifests[recipe] = {**result.manifest, "path": str(result.artifact)}
    return manifests


def load_exported() -> dict[str, dict]:
    """The manifests of a previous export into benchmarks/out (for --skip-export)."""
    manifests = {}
    for recipes in GROUPS.values():
        for recipe in recipes:
            path = OUT / f"lvt-{recipe}.manifest.json"
            if not path.exists():
                raise SystemExit(f"{path} is missing; run without --skip-export first")
            manifest = json.loads(path.read_text())
            manifests[recipe] = {**manifest, "path": str(OUT / manifest["artifact"]["file"])}
    return manifests


def measure(manifests: dict[str, dict], rounds: int, runs: int) -> dict[str, list[float]]:
    """Each recipe's per-process medians, in the order the alternating processes ran."""
    from edgevit.bench.host import Settings, run_worker
    from edgevit.runtime import host_cannot_run

    settings = Settings(threads=2, warmup=10, runs=runs, min_seconds=0.0)
    medians: dict[str, list[float]] = {}
    for r in range(rounds):
        for recipes in GROUPS.values():
            for recipe in recipes:
                path = Path(manifests[recipe]["path"])
                if host_cannot_run(path):
                    continue
                timed = run_worker(path, settings, timeout=900)
                if "error" in timed:
                    raise SystemExit(f"{recipe}: {timed['error']}")
                medians.setdefault(recipe, []).append(statistics.median(timed["samples_ms"]))
                print(f"round {r + 1}/{rounds} {recipe}: {medians[recipe][-1]:.2f} ms", file=sys.stderr)
    return medians


def sqnr_of(manifest: dict) -> tuple[float | None, str]:
    numerics = manifest["numerics"]
    if "skipped" in numerics:
        simulated = numerics.get("simulated")
        return (simulated["sqnr_db"], " (simulated)") if simulated else (None, "")
    return numerics["sqnr_db"], ""


def table(manifests: dict[str, dict], latency: dict[str, float], best: dict[str, float]) -> str:
    """Median of the per-process medians, and the fastest process (the VM's fast state; see bench_model.STATES)."""
    rows = [
        "| recipe | size | vs fp32 size | host median | vs fp32 | best process | vs fp32 | SQNR vs PyTorch fp32 "
        "| top-1 agree |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for recipes in GROUPS.values():
        base = recipes[0]
        for recipe in recipes:
            m = manifests[recipe]
            size = m["artifact"]["size_bytes"]
            size_ratio = size / manifests[base]["artifact"]["size_bytes"]
            sqnr, note = sqnr_of(m)
            numerics = m["numerics"].get("simulated") or m["numerics"]
            if recipe in latency:
                timing = [
                    f"{latency[recipe]:.2f} ms",
                    f"{latency[recipe] / latency[base]:.2f}x",
                    f"{best[recipe]:.2f} ms",
                    f"{best[recipe] / best[base]:.2f}x",
                ]
            else:
                timing = ["needs macOS", "-", "needs macOS", "-"]
            sqnr_text = f"{sqnr:.1f} dB{note}" if sqnr is not None else "needs macOS"
            top1 = f"{numerics['top1_agreement'] * 100:.0f}%" if "top1_agreement" in numerics else "-"
            if m["gates"]["failures"]:
                sqnr_text += " (gate missed)"
            cells = [recipe, f"{size / 1e6:.1f} MB", f"{size_ratio:.2f}", *timing, sqnr_text, top1]
            rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="fresh processes per artifact, alternating")
    parser.add_argument("--runs", type=int, default=30, help="timed inferences per process")
    add_write_flag(parser)
    parser.add_argument("--export-only", action="store_true", help="export the artifacts and stop")
    parser.add_argument("--skip-export", action="store_true", help="time the artifacts a previous run exported")
    args = parser.parse_args()
    manifests = load_exported() if args.skip_export else export_all()
    if args.export_only:
        return
    per_process = measure(manifests, args.rounds, args.runs)
    latency = {recipe: statistics.median(v) for recipe, v in per_process.items()}
    best = {recipe: min(v) for recipe, v in per_process.items()}
    body = table(manifests, latency, best)
    print(body)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "latency_ms": latency,
                "best_process_ms": best,
                "rounds": args.rounds,
                "runs": args.runs,
                "artifacts": {
                    r: {"size_bytes": m["artifact"]["size_bytes"], "numerics": m["numerics"]}
                    for r, m in manifests.items()
                },
            },
            indent=2,
        )
    )
    if args.write_results:
        from edgevit.bench.record import host_environment

        env = host_environment()
        dots = ", ".join(env["int8_dot_products"] or []) or "none"
        note = (
            f"\n\n`make bench` (`benchmarks/bench_int8.py --rounds {args.rounds} --runs {args.runs}`, measured "
            f"{time.strftime('%Y-%m-%d')}): lvt at 224 with the bench checkpoint's weights "
            f"(`benchmarks/bench_weights.py`), 2 threads on {env['cpu']} (int8 "
            f"dot-product instructions: {dots}), SQNR on 8 photos. Core ML rows: converted here, timed on macOS only."
        )
        write_section("int8", body + note)


if __name__ == "__main__":
    main()

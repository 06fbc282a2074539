"""What int8 buys on this CPU, layer by layer: LVT's own GEMM shapes as one-layer XNNPACK .pte files, fp32 and
static int8 (XNNPACKQuantizer, per-channel weights), each timed in its own process on one thread, alternating.

A model's int8/fp32 latency ratio cannot beat its GEMMs' ratio, and that ratio is set by the CPU: with int8
dot-product instructions (x86 VNNI, Arm SDOT) int8 GEMMs run several times faster than fp32; without them
XNNPACK widens int8 to 16 bits and they run at about fp32's pace. Results go to
benchmarks/results/int8_gemm.json and, with --write-results, into docs/results.md between the bench:int8-gemm markers.

Usage: python benchmarks/bench_int8_gemm.py [--rounds 3] [--runs 50]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from results_doc import add_write_flag, write_section

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out"
RESULTS = ROOT / "benchmarks" / "results" / "int8_gemm.json"

# name -> (kind, input shape, in, out): stage-1 and stage-3 MLP layers and the stage-2 patch embedding of LVT
LAYERS = {
    "linear 3136x64 -> 256 (stage-1 MLP)": ("linear", (1, 3136, 64), 64, 256),
    "linear 3136x256 -> 64 (stage-1 MLP)": ("linear", (1, 3136, 256), 256, 64),
    "linear 196x160 -> 640 (stage-3 MLP)": ("linear", (1, 196, 160), 160, 640),
    "conv 3x3/2 64 -> 64 at 56x56 (stage-2 embedding)": ("conv", (1, 64, 56, 56), 64, 64),
}


def layer(kind: str, cin: int, cout: int):
    from torch import nn

    return nn.Linear(cin, cout) if kind == "linear" else nn.Conv2d(cin, cout, 3, stride=2, padding=1)


def macs(kind: str, shape: tuple[int, ...], cin: int, cout: int) -> int:
    if kind == "linear":
        return shape[1] * cin * cout
    h, w = (shape[2] + 1) // 2, (shape[3] + 1) // 2
    return h * w * cout * cin * 9


def build() -> dict[str, dict[str, Path]]:
    import torch

    from edgevit.quant import backend_quantizer, quantize
    from edgevit.recipe import get_recipe
    from edgevit.targets import executorch as et

    OUT.mkdir(parents=True, exist_ok=True)
    options = {"scheme": "static", "per_channel": True, "io": "float"}
    paths: dict[str, dict[str, Path]] = {}
    for i, (name, (kind, shape, cin, cout)) in enumerate(LAYERS.items()):
        torch.manual_seed(i)
        module = layer(kind, cin, cout).eval()
        x = torch.randn(shape)
        int8 = quantize(module, x, backend_quantizer("executorch", options), torch.randn(8, *shape[1:]))
        paths[name] = {}
        for precision, model in (("fp32", module), ("int8", int8)):
            artifact = et.export(model, x, get_recipe(f"executorch-xnnpack-{precision}"))
            assert artifact.audit["partitions"] == 1 and not artifact.audit["ops_outside"], artifact.audit
            paths[name][precision] = OUT / f"gemm-{i}-{precision}.pte"
            artifact.write(paths[name][precision])
    return paths


def worker(path: str, shape: tuple[int, ...], runs: int) -> None:
    import numpy as np

    from edgevit.runtime import open_runner

    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    samples = open_runner(path, threads=1).time(x, warmup=10, runs=runs)
    print(json.dumps({"median_ms": statistics.median(samples)}))


def main() -> None:
    from edgevit.bench.record import host_environment

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--shape", help=argparse.SUPPRESS)
    ap.add_argument("--rounds", type=int, default=3, help="fresh processes per .pte, alternating")
    ap.add_argument("--runs", type=int, default=50, help="timed inferences per process")
    add_write_flag(ap)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker, tuple(int(n) for n in args.shape.split(",")), args.runs)
        return
    paths = build()
    medians: dict[Path, list[float]] = {p: [] for pair in paths.values() for p in pair.values()}
    shapes = {p: LAYERS[name][1] for name, pair in paths.items() for p in pair.values()}
    for r in range(args.rounds):
        for path in medians:
            shape = ",".join(map(str, shapes[path]))
            cmd = [sys.executable, __file__, "--worker", str(path), "--shape", shape, "--runs", str(args.runs)]
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=True)
            medians[path].append(json.loads(proc.stdout.strip().splitlines()[-1])["median_ms"])
            print(f"round {r + 1}/{args.rounds} {path.name}: {medians[path][-1]:.3f} ms", file=sys.stderr)
    env = host_environment()
    cpu, dots = env["cpu"], env["int8_dot_products"]
    rows = [
        f"One layer per .pte with float input and output (the int8 one quantizes and dequantizes them), XNNPACK, "
        f"1 thread, median of {args.rounds} alternating processes x {args.runs} runs (measured "
        f"{time.strftime('%Y-%m-%d')}) on {cpu}, int8 dot-product instructions: {', '.join(dots) if dots else 'none'}.",
        "",
        "| layer | MMACs | fp32 ms | int8 ms | int8 / fp32 | fp32 GMAC/s | int8 GMAC/s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    results = {}
    for name, pair in paths.items():
        fp32, int8 = (statistics.median(medians[pair[p]]) for p in ("fp32", "int8"))
        mm = macs(*LAYERS[name]) / 1e6
        results[name] = {"mmacs": mm, "fp32_ms": fp32, "int8_ms": int8}
        rows.append(
            f"| {name} | {mm:.1f} | {fp32:.3f} | {int8:.3f} | {int8 / fp32:.2f}x | {mm / fp32:.1f} | {mm / int8:.1f} |"
        )
    table = "\n".join(rows)
    print(table)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"cpu": cpu, "int8_dot_products": dots, "layers": results}, indent=2))
    if args.write_results:
        write_section("int8-gemm", table)


if __name__ == "__main__":
    main()

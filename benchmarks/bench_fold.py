"""Which overlap-add (fold) form makes CSA fastest on XNNPACK: the phase decomposition edgevit uses, or a
grouped one-hot transposed convolution. Both are exact; each variant of a full CSA block (stage 1 of LVT,
56x56x64, 2 heads) is exported to a .pte and timed in its own process, alternating.

Usage: python benchmarks/bench_fold.py [--rounds 3] [--runs 50] [--write-results]
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

OUT = Path(__file__).resolve().parent / "out"


def build(out_dir: Path) -> dict[str, Path]:
    import torch
    import torch.nn.functional as F
    from torch import nn

    from edgevit.lowering.lvt import DeployCSA
    from edgevit.models.lvt import CSA
    from edgevit.recipe import get_recipe
    from edgevit.targets import executorch as et

    class TransposedConvFold(nn.Module):
        """CSA's overlap-add as conv_transpose2d(one-hot 3x3 kernels, stride 2, groups=C), in place of PhaseFold."""

        def __init__(self, dim: int) -> None:
            super().__init__()
            eye = torch.eye(9).reshape(9, 1, 3, 3)
            self.register_buffer("weight", eye.repeat(dim, 1, 1, 1))  # (C*9, 1, 3, 3): channel c*9+t

        def forward(self, taps: list[torch.Tensor]) -> torch.Tensor:
            B, h, w, C = taps[0].shape
            z = torch.stack(taps, dim=-1).permute(0, 3, 4, 1, 2).reshape(B, C * 9, h, w)  # channel c*9 + tap
            y = F.conv_transpose2d(z, self.weight, stride=2, padding=1, output_padding=1, groups=C)
            return y.permute(0, 2, 3, 1)

    class NCHWInput(nn.Module):
        def __init__(self, block: nn.Module) -> None:
            super().__init__()
            self.block = block

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.block(x.permute(0, 2, 3, 1))

    torch.manual_seed(0)
    csa = CSA(64, 2).eval()
    variants = {"phase": DeployCSA.from_module(csa), "convtranspose": DeployCSA.from_module(csa)}
    variants["convtranspose"].fold = TransposedConvFold(64)
    x = torch.randn(1, 64, 56, 56)
    with torch.no_grad():
        ref = csa(x.permute(0, 2, 3, 1))
        for name, block in variants.items():
            err = (block(x.permute(0, 2, 3, 1)) - ref).abs().max().item()
            assert err < 1e-5, f"{name} is not exact ({err})"
    paths = {}
    recipe = get_recipe("executorch-xnnpack-fp32")
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, block in variants.items():
        artifact = et.export(NCHWInput(block), x, recipe)
        assert artifact.audit["partitions"] == 1 and not artifact.audit["ops_outside"], artifact.audit
        paths[name] = out_dir / f"csa-fold-{name}.pte"
        artifact.write(paths[name])
    return paths


def worker(path: str, runs: int) -> None:
    import numpy as np

    from edgevit.runtime import open_runner

    x = np.random.default_rng(0).standard_normal((1, 64, 56, 56)).astype(np.float32)
    samples = open_runner(path).time(x, warmup=10, runs=runs)
    print(json.dumps({"median_ms": statistics.median(samples)}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--runs", type=int, default=50)
    add_write_flag(ap)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker, args.runs)
        return
    paths = build(OUT)
    medians: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(args.rounds):
        for name, path in paths.items():
            cmd = [sys.executable, __file__, "--worker", str(path), "--runs", str(args.runs)]
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=True)
            medians[name].append(json.loads(proc.stdout.strip().splitlines()[-1])["median_ms"])
    lines = [
        f"One CSA block (56x56x64, 2 heads) as an XNNPACK .pte, 2 threads, median of {args.rounds} alternating "
        f"processes x {args.runs} runs (measured {time.strftime('%Y-%m-%d')}):",
        "",
        "| fold form | median ms | per process |",
        "|---|---:|---|",
    ]
    for name, values in medians.items():
        per_process = ", ".join(f"{v:.2f}" for v in values)
        lines.append(f"| {name} | {statistics.median(values):.2f} | {per_process} |")
    table = "\n".join(lines)
    print(table)
    if args.write_results:
        write_section("fold", table)


if __name__ == "__main__":
    main()

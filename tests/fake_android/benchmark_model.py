"""Stand-in for LiteRT's ``benchmark_model`` on the fake phone: times the real .tflite in the LiteRT
interpreter on the host and logs in the real tool's format (microseconds, count= blocks, op profiling)."""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time


def stats_line(us: list[float]) -> str:
    s = sorted(us)
    q = statistics.quantiles(s, n=20) if len(s) > 1 else [s[0]] * 19
    return (
        f"count={len(s)} first={int(us[0])} curr={int(us[-1])} min={int(s[0])} max={int(s[-1])} "
        f"avg={statistics.fmean(s):g} std={int(statistics.pstdev(s))} p5={int(q[0])} "
        f"median={int(statistics.median(s))} p95={int(q[18])}"
    )


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--graph")
    p.add_argument("--num_threads", type=int, default=-1)
    p.add_argument("--warmup_runs", type=int, default=1)
    p.add_argument("--num_runs", type=int, default=50)
    p.add_argument("--min_secs", type=float, default=1.0)
    p.add_argument("--enable_op_profiling", default="false")
    p.add_argument("--report_peak_memory_footprint", default="false")
    a = p.parse_args()
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    print("INFO: STARTING!")
    print(f"INFO: Log parameter values verbosely: [0]\nINFO: Min num runs: [{a.num_runs}]")
    print(f"INFO: Num threads: [{a.num_threads}]\nINFO: Graph: [{a.graph}]")
    print(f"INFO: Loaded model {a.graph}")
    print(f"INFO: The input model file size (MB): {os.path.getsize(a.graph) / 1e6:g}")
    t0 = time.perf_counter()
    it = Interpreter(model_path=a.graph, num_threads=max(a.num_threads, 1))
    it.allocate_tensors()
    init_us = (time.perf_counter() - t0) * 1e6
    print("INFO: Created TensorFlow Lite XNNPACK delegate for CPU.")
    n_ops = len(it._get_ops_details())
    print(
        f"VERBOSE: Replacing {n_ops} out of {n_ops} node(s) with delegate (TfLiteXNNPackDelegate) node, "
        "yielding 1 partitions for subgraph 0."
    )
    print(f"INFO: Initialized session in {init_us / 1e3:.3f}ms.")
    inp = it.get_input_details()[0]
    it.set_tensor(inp["index"], np.zeros(inp["shape"], dtype=inp["dtype"]))

    def timed(n: int) -> list[float]:
        out = []
        for _ in range(n):
            t = time.perf_counter()
            it.invoke()
            out.append((time.perf_counter() - t) * 1e6)
        return out

    print(
        f"INFO: Running benchmark for at least {a.warmup_runs} iterations and at least 0.5 seconds but "
        "terminate if exceeding 150 seconds."
    )
    warm = timed(max(a.warmup_runs, 1))
    print("INFO: " + stats_line(warm))
    print(
        f"INFO: Running benchmark for at least {a.num_runs} iterations and at least {a.min_secs} seconds but "
        "terminate if exceeding 150 seconds."
    )
    runs = timed(a.num_runs)
    print("INFO: " + stats_line(runs))
    print(
        f"INFO: Inference timings in us: Init: {int(init_us)}, First inference: {int(warm[0])}, "
        f"Warmup (avg): {statistics.fmean(warm):g}, Inference (avg): {statistics.fmean(runs):g}"
    )
    print(
        "INFO: Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE "
        "to the actual memory footprint of the model at runtime. Take the information at your discretion."
    )
    print("INFO: Memory footprint delta from the start of the tool (MB): init=41.5 overall=48.25")
    if a.report_peak_memory_footprint == "true":
        print("INFO: Overall peak memory footprint (MB) via periodic monitoring: 61.375")
    if a.enable_op_profiling == "true":
        avg = statistics.fmean(runs) / 1e3
        print("Operator-wise Profiling Info for Regular Benchmark Runs:")
        print("============================== Run Order ==============================")
        print(
            "\t             [node type]\t          [first]\t         [avg ms]\t             [%]\t"
            "          [cdf%]\t      [mem KB]\t  [times called]\t[Name]"
        )
        print(
            f"\t                DELEGATE\t{warm[0] / 1e3:17.3f}\t{avg:17.3f}\t{100:15.3f}%\t{100:15.3f}%\t"
            f"{0:14.3f}\t{1:16d}\t[TfLiteXNNPackDelegate]:{n_ops}"
        )
        print()
        print("============================== Summary by node type ==============================")
        print("\t             [Node type]\t  [count]\t  [avg ms]\t    [avg %]\t    [cdf %]\t  [mem KB]\t[times called]")
        print(f"\t                DELEGATE\t{1:9d}\t{avg:10.3f}\t{100:10.3f}%\t{100:10.3f}%\t{0:10.3f}\t{1:14d}")
        print()


if __name__ == "__main__":
    sys.exit(main())

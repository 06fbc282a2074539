"""Statistics, and the parsers on recorded outputs of the real tools (executor_runner, benchmark_model,
getprop, dumpsys)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgevit.bench import android_env
from edgevit.bench.cpu_features import cpu_flags, fp16_arithmetic, int8_dot_products
from edgevit.bench.parsers import parse_benchmark_model, parse_executor_runner
from edgevit.bench.report import hardware_notes
from edgevit.bench.stats import summarize

DATA = Path(__file__).parent / "data" / "bench"


def test_summary_statistics_match_numpy():
    samples = list(np.random.default_rng(0).gamma(4.0, 3.0, 101))
    s = summarize(samples)
    assert s["n"] == 101 and s["min"] == min(samples) and s["max"] == max(samples)
    assert s["median"] == pytest.approx(np.median(samples))
    assert s["p90"] == pytest.approx(np.percentile(samples, 90))
    assert s["p95"] == pytest.approx(np.percentile(samples, 95))
    assert s["std"] == pytest.approx(np.std(samples, ddof=1))
    middle = sorted(samples)[10:91]  # middle 80% of 101 samples: drop 10 at each end
    assert s["trimmed_mean"] == pytest.approx(np.mean(middle))
    assert summarize([]) == {"n": 0} and summarize([2.0])["std"] == 0.0


def test_trimmed_mean_ignores_outliers_that_move_the_mean():
    samples = [10.0] * 18 + [1000.0, 0.1]
    s = summarize(samples)
    assert s["trimmed_mean"] == 10.0 and s["mean"] > 50
    # a tenth of 10 and of 50 runs is 1 and 5 runs, though (1 - 0.8) / 2 is not exactly 0.1 in floating point
    assert summarize([1.0] * 9 + [100.0])["trimmed_mean"] == 1.0
    assert summarize([1.0] * 45 + [100.0] * 5)["trimmed_mean"] == 1.0


def test_executor_runner_log():
    parsed = parse_executor_runner((DATA / "executor_runner.log").read_text())
    assert parsed["samples_ms"] == [64.299, 40.813, 40.47, 41.085, 40.459]
    assert parsed["total"] == {"runs": 5, "ms": 227.126}
    # what it does not know is kept verbatim: the output tensor dump, the load lines
    assert any("Method loaded." in line for line in parsed["unknown_lines"])
    assert any(line.startswith("Output 0: tensor") for line in parsed["unknown_lines"])


def test_benchmark_model_log_with_op_profiling():
    parsed = parse_benchmark_model((DATA / "benchmark_model.log").read_text())
    assert parsed["warmup"]["count"] == 9 and parsed["warmup"]["first"] == pytest.approx(87.112)
    runs = parsed["runs"]  # the steady-state block, not the op profiler's "Timings (microseconds)" line
    assert runs["count"] == 50 and runs["median"] == pytest.approx(53.958) and runs["p95"] == pytest.approx(61.337)
    assert parsed["timings_ms"]["Init"] == pytest.approx(49.438)
    assert parsed["timings_ms"]["Inference (avg)"] == pytest.approx(55.7442)
    assert parsed["delegation"] == {
        "delegate": "TfLiteXNNPackDelegate",
        "nodes_delegated": 817,
        "nodes_total": 820,
        "partitions": 3,
    }
    assert parsed["peak_memory_mb"] == pytest.approx(74.9648)
    assert parsed["memory_delta_mb"] == {"init": 58.2109, "overall": 66.0312}
    by_type = parsed["op_profile"]["Summary by node type"]
    assert [row["node type"] for row in by_type] == ["DELEGATE", "SOFTMAX", "FULLY_CONNECTED"]
    assert by_type[0]["avg ms"] == "10.968" and by_type[0]["times called"] == "1"
    run_order = parsed["op_profile"]["Run Order"]
    assert run_order[0]["name"] == "[TfLiteXNNPackDelegate]:817"
    assert any(line.startswith("Timings (microseconds)") for line in parsed["unknown_lines"])


def test_benchmark_model_gpu_log():
    parsed = parse_benchmark_model((DATA / "benchmark_model_gpu.log").read_text())
    assert parsed["gpu_split"] == {"gpu_ops": 804, "cpu_ops": 16}
    # one block, all runs equal: only count and curr are printed
    assert parsed["runs"] == {"count": 1, "curr": pytest.approx(670.083)} and parsed["warmup"] == {}
    assert "GATHER_ND: Operation is not supported." in parsed["unknown_lines"]


def test_phone_state_parsers():
    props = android_env.parse_getprop((DATA / "getprop.txt").read_text())
    assert props["ro.product.model"] == "Pixel 8" and props["ro.soc.model"] == "Tensor G3"
    thermal = android_env.parse_thermal((DATA / "thermalservice.txt").read_text())
    # current HAL readings, not the cached ones
    assert thermal == {"status": 2, "temperatures_c": {"cpu0-silver-usr": 46.7, "battery": 32.1, "skin": 38.0}}
    assert android_env.parse_battery_temperature((DATA / "battery.txt").read_text()) == 32.1
    cpus = android_env.parse_cpus(
        "cpu cpu0 schedutil 300000 1704000\ncpu cpu4 - - -\ncpu cpu7 performance 3000 3014000"
    )
    assert cpus[1] == {"cpu": 4, "governor": None, "cur_khz": None, "max_khz": None}


@pytest.mark.parametrize(
    "max_khz,mask",
    [
        ([1704000] * 4 + [2367000] * 3 + [3014000], "f0"),  # little, big, prime
        ([1800000] * 6 + [2400000] * 2, "c0"),
        ([2000000] * 4, "f"),  # one cluster: every core
        ([None] * 4, None),  # cpufreq hidden
    ],
)
def test_big_core_mask(max_khz, mask):
    cpus = [{"cpu": i, "max_khz": f} for i, f in enumerate(max_khz)]
    assert android_env.big_core_mask(cpus) == mask


@pytest.mark.parametrize(
    "cpuinfo,found",
    [
        ("processor\t: 0\nflags\t\t: fpu sse2 avx2 fma\nbugs\t\t: spectre_v1\n", []),  # AVX2 only (Zen 3)
        ("processor\t: 0\nflags\t\t: avx2 avx512f avx512_vnni amx_int8\n", ["AVX-512 VNNI", "AMX-INT8"]),
        (
            "processor\t: 0\nFeatures\t: fp asimd asimddp i8mm\n",
            ["Arm dot product (SDOT)", "Arm int8 matrix multiply (SMMLA)"],
        ),
        ("", []),
    ],
)
def test_int8_dot_products_from_cpuinfo(cpuinfo, found):
    assert int8_dot_products(cpu_flags(cpuinfo)) == found


@pytest.mark.parametrize(
    "cpuinfo,found",
    [
        ("processor\t: 0\nflags\t\t: avx2 f16c avx512f avx512_bf16\n", []),  # converts fp16, no arithmetic
        ("processor\t: 0\nflags\t\t: avx512f avx512fp16\n", ["AVX512-FP16"]),
        ("processor\t: 0\nFeatures\t: fp asimd fphp asimdhp asimddp\n", ["Arm fp16 arithmetic (FEAT_FP16)"]),
    ],
)
def test_fp16_arithmetic_from_cpuinfo(cpuinfo, found):
    assert fp16_arithmetic(cpu_flags(cpuinfo)) == found


def test_hardware_notes_only_for_the_precision_whose_instructions_are_missing(tmp_path):
    artifacts = {  # name: (recipe precision, input dtype)
        "m-int8": ("int8", "float32"),
        "m-fp32": ("fp32", "float32"),
        "m-fp16": ("fp16", "float16"),  # an fp16 program: computes in fp16
        "m-fp16-weights": ("fp16", "float32"),  # fp16 weights (tflite-fp16) or Core ML: the runtime decides
    }
    for name, (precision, dtype) in artifacts.items():
        (tmp_path / f"{name}.pte").write_bytes(b"")
        manifest = {"recipe": {"precision": precision}, "input": {"dtype": dtype}}
        (tmp_path / f"{name}.manifest.json").write_text(json.dumps(manifest))

    def record(name, dot, fp16=(), device="host", status="ok"):
        env = {"cpu": "AMD EPYC", "int8_dot_products": dot, "fp16_arithmetic": list(fp16)}
        artifact = {"path": str(tmp_path / f"{name}.pte")}
        return {"artifact": artifact, "device": device, "status": status, "environment": {"before": env}}

    notes = hardware_notes([record("m-fp32", []), record("m-int8", []), record("m-int8", ["AVX-VNNI"], (), "pc")])
    assert len(notes) == 1 and notes[0].startswith("host (AMD EPYC) has no int8 dot-product instructions")
    assert hardware_notes([record("m-fp32", [])]) == []
    assert hardware_notes([record("m-int8", [], status="skipped")]) == []  # nothing was timed
    # fp16: noted where the cores lack fp16 arithmetic, whatever their int8 instructions, for fp16 programs only
    notes = hardware_notes([record("m-fp16", ["AVX-512 VNNI"]), record("m-fp16", [], ["asimdhp"], "phone")])
    assert len(notes) == 1 and notes[0].startswith("host (AMD EPYC) has no fp16 arithmetic")
    assert hardware_notes([record("m-fp16-weights", [])]) == []


def _timed(name: str, round_medians: list[float], status: str = "ok") -> dict:
    rounds = [{"median_ms": m, "n": 30} for m in round_medians]
    return {
        "artifact": {"name": name},
        "status": status,
        "stats": {"median": float(np.median(round_medians))},
        "rounds": rounds,
    }


def test_paired_ratios_compare_processes_that_ran_back_to_back():
    from edgevit.bench.report import paired_ratios, reference_index, state_notes

    # the machine ran slow in round 2, and for a alone in round 3: the medians of the rounds (20 and 9 ms) would
    # make b 0.45x of a, while in the rounds where both met the same state it takes 0.9x
    a, b = _timed("a.pte", [10.0, 20.0, 20.0]), _timed("b.pte", [9.0, 18.0, 9.0])
    once = _timed("c.onnx", [5.0])
    ratios = paired_ratios([a, b, once])
    assert ratios[0] == 1.0 and ratios[2] is None
    assert ratios[1] == pytest.approx(0.9)
    # a first artifact whose round failed is not the reference of either ratio: the first that ran in full is
    failed = _timed("f.pte", [30.0], status="failed")
    assert reference_index([failed, a, b]) == 1
    assert paired_ratios([failed, a, b])[1:] == [1.0, pytest.approx(0.9)]
    assert paired_ratios([_timed("x", [1.0]), _timed("y", [2.0])]) == [None, None]
    notes = state_notes([a, _timed("steady.pte", [10.0, 11.0])])
    assert len(notes) == 1 and notes[0].startswith("a.pte: its rounds' medians ran from 10.00 to 20.00 ms")


def test_compare_names_what_changed_and_what_has_no_earlier_record():
    from rich.console import Console

    from edgevit.bench.report import compare_table

    def record(name, median, sha, cpu="AMD EPYC", status="ok"):
        return {
            "artifact": {"name": name, "sha256": sha},
            "device": "host",
            "runtime": "executorch",
            "threads": 2,
            "status": status,
            "stats": {"median": median, "p90": median},
            "environment": {"before": {"cpu": cpu}},
        }

    old = [record("a.pte", 10.0, "x"), record("b.pte", 10.0, "y", status="failed")]
    new = [record("a.pte", 8.0, "z"), record("b.pte", 9.0, "y"), record("c.pte", 7.0, "w")]
    table, matched = compare_table(old, new)
    console = Console(width=200, record=True)
    console.print(table)
    rows = {line.split()[1]: line for line in console.export_text().splitlines() if ".pte" in line}
    assert matched == 1  # b's old record failed: not a baseline
    assert "0.80x" in rows["a.pte"] and rows["a.pte"].rstrip(" │").endswith("file")  # re-exported: other bytes
    assert "no earlier record" in rows["b.pte"] and "no earlier record" in rows["c.pte"]

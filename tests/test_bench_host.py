"""`edgevit bench` on this machine: every host runtime, the table, JSON records, plot, comparison, errors."""

from __future__ import annotations

import json
import sys

import pytest

from edgevit.bench.op_profile import WRAPPERS, summarize
from edgevit.bench.run import round_order
from edgevit.errors import EdgevitError

from .conftest import CliResult, run_cli, run_cli_here

FAST = ("--warmup", "1", "--runs", "5", "--min-seconds", "0")


@pytest.fixture(scope="session")
def bench_run(tiny_artifacts, artifact_cache):
    """One `edgevit bench` of the four tiny artifacts with its JSON and plot, run once for both workers: the
    command's result and the folder it wrote."""

    def build(out):
        json_plot = ("--json", str(out / "b.json"), "--plot", str(out / "b.png"))
        paths = [str(tiny_artifacts[s]) for s in (".pte", ".tflite", ".onnx", ".mlpackage")]
        proc = run_cli("bench", *paths, *FAST, "--rounds", "2", "--op-profiling", *json_plot)
        result = {"returncode": proc.returncode, "stdout": proc.stdout, "stderr": proc.stderr}
        (out / "command.json").write_text(json.dumps(result))

    out = artifact_cache.folder("bench-tiny-artifacts", build)
    return CliResult(**json.loads((out / "command.json").read_text())), out


def test_bench_times_every_host_runtime(bench_run):
    proc, out = bench_run
    assert proc.returncode == 0, proc.stderr
    records = json.loads((out / "b.json").read_text())["records"]
    assert [r["artifact"]["name"] for r in records] == ["tiny.pte", "tiny.tflite", "tiny.onnx", "tiny.mlpackage"]
    for r, runtime in zip(records[:3], ("executorch", "litert", "onnxruntime"), strict=True):
        assert r["status"] == "ok" and r["runtime"] == runtime and r["threads"] == 2
        assert len(r["samples_ms"]) >= 10 and len(r["rounds"]) == 2  # two fresh processes, 5+ runs each
        s = r["stats"]
        assert 0 < s["min"] <= s["median"] <= s["p90"] <= s["p95"] <= s["max"]
        assert r["load_ms"] > 0 and r["memory_mb"]["peak"] > r["memory_mb"]["model"] > 0
        assert r["versions"]["edgevit"] and r["command"][1] == "bench" and r["artifact"]["sha256"]
        assert r["environment"]["before"]["cores"] >= 1
    # the table: one row per artifact, ratios against the first
    assert "tiny.tflite" in proc.stdout and "1.00x" in proc.stdout
    assert (out / "b.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.skipif(sys.platform == "darwin", reason="Core ML predicts on macOS")
def test_mlpackage_is_a_clear_skip_off_macos(bench_run):
    records = json.loads((bench_run[1] / "b.json").read_text())["records"]
    assert records[3]["status"] == "skipped" and "needs macOS" in records[3]["reason"]
    assert records[3]["samples_ms"] == [] and "skipped" in bench_run[0].stdout


@pytest.mark.skipif(sys.platform == "darwin", reason="Core ML predicts on macOS")
def test_a_run_that_timed_nothing_fails(tiny_artifacts):
    proc = run_cli_here("bench", str(tiny_artifacts[".mlpackage"]), *FAST)
    assert proc.returncode == 1 and "nothing was timed: tiny.mlpackage" in proc.stderr, proc.stderr


def test_a_file_given_twice_is_timed_once_and_rounds_alternate_their_order(tmp_path, tiny_artifacts):
    onnx = tiny_artifacts[".onnx"]
    again = onnx.parent / ".." / onnx.parent.name / onnx.name  # the same file, spelled otherwise
    out = tmp_path / "r.json"
    proc = run_cli("bench", str(onnx), str(again), *FAST, "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    assert [r["artifact"]["name"] for r in json.loads(out.read_text())["records"]] == ["tiny.onnx"]
    a, b, c = (tmp_path / n for n in "abc")
    assert [round_order([a, b, c], r) for r in range(3)] == [[a, b, c], [c, b, a], [a, b, c]]


def test_op_profiling_says_where_a_pte_spends_its_time(bench_run):
    proc, out = bench_run
    pte, tflite = json.loads((out / "b.json").read_text())["records"][:2]
    profile = pte["op_profile"]
    assert profile["source"] == "ExecuTorch ETDump" and profile["runs"] >= 1
    ops = {row["op"]: row for row in profile["ops"]}
    assert any(op.startswith("Fully Connected") for op in ops)  # XNNPACK's own op names, "#n" stripped
    assert not any("#" in op or op in WRAPPERS for op in ops)
    assert sum(row["count"] for row in ops.values()) == profile["op_count"] > 10
    assert sum(row["ms"] for row in ops.values()) == pytest.approx(profile["ops_ms"], rel=1e-3)
    assert 0 < profile["ops_ms"] <= profile["execute_ms"]
    assert "time per op type" in proc.stdout
    assert ".pte files only" in tflite["op_profile"]["error"]  # said, not silently missing


def test_op_profile_takes_the_median_run_after_the_warmup():
    events = [
        ("Method::execute", [50.0, 5.0, 9.0, 7.0]),
        ("Fully Connected (NC, F32) GEMM #1", [40.0, 2.0, 6.0, 4.0]),
        ("Fully Connected (NC, F32) GEMM #2", [5.0, 1.0, 1.0, 1.0]),
        ("Softmax (NC, F32) #1", [1.0, 1.0, 1.0, 1.0]),
    ]
    summary = summarize(events, warmup=1)
    assert summary["runs"] == 3 and summary["ops_ms"] == 6.0 and summary["execute_ms"] == 7.0  # run totals 4, 8, 6
    assert summary["ops"][0] == {"op": "Fully Connected (NC, F32) GEMM", "count": 2, "ms": 5.0, "share": 0.8333}
    with pytest.raises(EdgevitError, match="no traced run"):
        summarize(events, warmup=4)
    # ops all within the timer's resolution (a tiny model): counted, with no share
    instant = summarize([("Method::execute", [0.0, 0.0]), ("Slice (ND, X32) #1", [0.0, 0.0])], warmup=1)
    assert instant["ops"] == [{"op": "Slice (ND, X32)", "count": 1, "ms": 0.0, "share": 0.0}]


def test_compare_against_an_earlier_run(bench_run, tiny_artifacts):
    proc = run_cli("bench", str(tiny_artifacts[".onnx"]), *FAST, "--compare", str(bench_run[1] / "b.json"))
    assert proc.returncode == 0, proc.stderr
    assert "against the earlier run" in proc.stdout and "tiny.onnx" in proc.stdout
    # a different thread count is a different measurement: nothing to compare with
    other = run_cli(
        "bench", str(tiny_artifacts[".onnx"]), *FAST, "--threads", "1", "--compare", str(bench_run[1] / "b.json")
    )
    assert other.returncode == 0 and "no record in" in other.stdout


def test_bench_input_errors_are_one_line(tmp_path, tiny_artifacts):
    not_bench = tmp_path / "other.json"
    not_bench.write_text('{"records": 1}')
    bad_profile = tmp_path / "phone.yaml"
    bad_profile.write_text("name: phone\nkind: android\ncpu_mask: zz\n")
    text_file = tmp_path / "notes.txt"
    text_file.write_text("x")
    cases = [
        (("bench", str(tmp_path / "missing.pte")), "artifact not found"),
        (("bench", str(text_file)), "cannot benchmark '.txt' files"),
        (("bench", str(tiny_artifacts[".onnx"]), "--compare", str(not_bench)), "not an edgevit bench file"),
        (("bench", str(tiny_artifacts[".onnx"]), "--device", "nokia"), "unknown device 'nokia'"),
        (("bench", str(tiny_artifacts[".onnx"]), "--device", str(bad_profile)), "field 'cpu_mask'"),
        (("bench", str(tiny_artifacts[".onnx"]), "--device", "iphone"), "Apple device"),
    ]
    for args, message in cases:
        proc = run_cli_here(*args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert "Traceback" not in proc.stderr


def test_a_corrupt_artifact_fails_its_record_and_the_run(tmp_path, tiny_artifacts):
    bad = tmp_path / "broken.pte"
    bad.write_bytes(b"not a program" * 50)
    out = tmp_path / "r.json"
    proc = run_cli("bench", str(bad), str(tiny_artifacts[".onnx"]), *FAST, "--json", str(out))
    assert proc.returncode == 1
    assert "1 of 2 benchmarks failed" in proc.stderr and "not a loadable .pte" in proc.stderr
    records = json.loads(out.read_text())["records"]  # the good one is measured and kept
    assert records[0]["status"] == "failed" and records[1]["status"] == "ok"


def test_devices_lists_and_validates_profiles(tmp_path):
    proc = run_cli_here("devices", "--json")
    assert proc.returncode == 0, proc.stderr
    kinds = {p["name"]: p["kind"] for p in json.loads(proc.stdout)}
    assert kinds["host"] == "host" and kinds["android"] == "android" and kinds["iphone"] == "apple"
    (tmp_path / "devices").mkdir()  # the user folder under $EDGEVIT_HOME
    (tmp_path / "devices" / "mine.yaml").write_text("name: mine\nkind: android\nthreads: 0\n")
    bad = run_cli_here("devices", env={"EDGEVIT_HOME": str(tmp_path)})
    assert bad.returncode == 2 and "field 'threads' must be a positive integer" in bad.stderr

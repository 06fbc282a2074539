"""Quantization: calibration input errors, the float policy, int8 PTQ through XNNPACK's quantizer, the gates."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from edgevit.lowering import lower
from edgevit.models import create_model, get_entry
from edgevit.numerics import compare
from edgevit.quant import backend_quantizer, calibration_batch, quantize
from edgevit.quant.calibration import checked_calibration_paths
from edgevit.quant.pads import PADS
from edgevit.quant.policy import module_path, untie_weights
from edgevit.quant.pt2e import calibrated, converted, copy_prepared
from edgevit.quant.sensitivity import (
    candidate_blocks,
    describe_fix,
    sensitivity_report,
    with_blocks_float,
)
from edgevit.recipe import get_recipe
from edgevit.runtime import open_runner
from edgevit.targets import executorch as et
from edgevit.targets import get_target

from .conftest import run_cli_here, tiny_lvt

X = torch.randn(1, 3, 64, 64)


def test_calibration_input_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "photo.jpg").write_text("not an image")
    (tmp_path / "small" / "nested").mkdir(parents=True)
    Image.new("RGB", (640, 480)).save(tmp_path / "small" / "ok.png")
    Image.new("RGB", (24, 300)).save(tmp_path / "small" / "nested" / "thin.png")  # found recursively
    cases = [
        ("empty", "no images in"),
        ("bad", "cannot read calibration image"),
        ("small", "thin.png is 24x300; use images at least 32 px"),
        ("missing", "image folder not found"),
    ]
    out = tmp_path / "out"
    for folder, message in cases:
        proc = run_cli_here(
            "export",
            "lvt",
            "--recipe",
            "executorch-xnnpack-int8",
            "--calib-images",
            str(tmp_path / folder),
            "--output-dir",
            str(out),
        )
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
    assert not out.exists()  # nothing written, not even the folder
    zero = run_cli_here("export", "lvt", "--recipe", "executorch-xnnpack-int8", "--calib-count", "0")
    assert zero.returncode == 2 and "calib-count" in zero.stderr


def test_untie_gives_each_use_its_own_weight():
    gm = torch.export.export(lower(tiny_lvt(), "executorch"), (X,), strict=False).module()
    shared = [n for n in gm.graph.nodes if n.op == "get_attr" and len(n.users) > 1]
    assert shared  # RASA's recursion and shared depthwise kernel reuse weights
    copies = untie_weights(gm)
    assert len(copies) >= len(shared)
    assert all(len(n.users) == 1 for n in gm.graph.nodes if n.op == "get_attr")
    torch.testing.assert_close(gm(X), lower(tiny_lvt(), "executorch")(X))


@pytest.fixture(scope="module")
def static_int8(photos_64):
    deploy = lower(tiny_lvt(), "executorch")
    quantizer = backend_quantizer("executorch", {"scheme": "static", "per_channel": True})
    return deploy, quantize(deploy, X, quantizer, photos_64)


def test_float_policy_keeps_norms_and_softmax_float(static_int8):
    _, q = static_int8
    quantized_inputs = {
        n.args[0].target.__name__ if hasattr(n.args[0].target, "__name__") else ""
        for n in q.graph.nodes
        if n.op == "call_function" and "linear" in str(n.target)
    }
    stacks = [
        [path for path, _ in n.meta.get("nn_module_stack", {}).values()]
        for n in q.graph.nodes
        if n.op == "call_function" and "quantize_per_tensor" in str(n.target)
    ]
    assert quantized_inputs and stacks
    # no quantize node lives inside a LayerNorm, the 9-tap softmax or the fold
    assert not any(p.endswith((".norm1", ".norm2", ".softmax", ".fold")) for stack in stacks for p in stack[-1:])


def test_csa_taps_are_sliced_in_int8(static_int8):
    """CSA pads the norm's float output and slices its nine taps out of it: the pad takes int8 in and gives
    int8 out on one scale (XNNPACK builds an int8 pad only then), so the slices copy int8; the fold's pads, in
    the float policy, stay float."""
    _, q = static_int8
    pads = [n for n in q.graph.nodes if n.op == "call_function" and n.target in PADS]
    folds = [n for n in pads if module_path(n).endswith(".fold")]
    patches = [n for n in pads if n not in folds]
    assert patches and folds
    for pad in patches:
        source = pad.args[0]
        assert "dequantize_per_tensor" in str(source.target)
        (requantize,) = pad.users
        assert "quantize_per_tensor" in str(requantize.target) and requantize.args[1:] == source.args[1:]
    assert not any("dequantize" in str(getattr(n.args[0], "target", "")) for n in folds)


def test_dynamic_int8_pte_runs_in_one_partition_and_keeps_20_db(tmp_path, photos_64):
    """The static scheme's partition and SQNR are checked on the CLI export below. The tiny registered LVT keeps
    about 40 dB with dynamic activations; LVT's real widths in int8 are in the TFLite and ONNX int8 tests."""
    torch.manual_seed(0)
    model = create_model("lvt_test").eval()
    deploy = lower(model, "executorch")
    quantizer = backend_quantizer("executorch", {"scheme": "dynamic", "per_channel": True, "io": "float"})
    # other photos than the ones checked below
    calib = calibration_batch(checked_calibration_paths(None, 8), get_entry("lvt").input_spec, 64)
    prepared, copies = calibrated(
        deploy, X, quantizer, calib, float_types=get_target("executorch").dynamic_float_modules
    )
    # the export flow converts a copy first (for the sensitivity views): the copy must convert, and alike
    twin = converted(copy_prepared(prepared), copies)
    q = converted(prepared, copies)
    assert torch.equal(twin(photos_64[:1]), q(photos_64[:1]))
    recipe = get_recipe("executorch-xnnpack-dynamic-int8")
    artifact = et.export(q, X, recipe)
    assert artifact.audit["partitions"] <= recipe.gates.max_partitions and not artifact.audit["ops_outside"]
    path = tmp_path / "lvt_test-dynamic.pte"
    artifact.write(path)
    with torch.no_grad():
        ref = model(photos_64).numpy()
    result = compare(ref, open_runner(path).run_batch(photos_64.numpy()))
    assert result["sqnr_db"] >= 20, result


def test_int8_export_below_its_sqnr_gate_names_the_blocks_and_keeps_the_artifact_when_allowed(tmp_path):
    """The CLI's static int8 path end to end (the tiny registered LVT, about 19 dB with 4 calibration photos),
    under a 25 dB gate: the failure names the figure, the most sensitive blocks and the --keep-float set that
    passes; --allow-gate-failures keeps the artifact and records all of it. The fp32 twin's timing is skipped
    (the ONNX int8 test measures it), and the manifest says nothing of it."""
    strict = tmp_path / "strict.yaml"
    strict.write_text(
        "name: strict-int8\ntarget: executorch\nprecision: int8\n"
        "options: {partitioners: [xnnpack], quantization: {scheme: static}}\ngates: {min_sqnr_db: 25}\n"
    )
    args = ("--num-images", "4", "--calib-count", "4", "--output-dir", str(tmp_path), "--no-compare-fp32")
    proc = run_cli_here("export", "lvt_test", "--recipe", str(strict), *args, "--allow-gate-failures", "--json")
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads(proc.stdout)
    gates = manifest["gates"]
    assert not gates["passed"] and gates["overridden"] and len(gates["failures"]) == 1
    failure = gates["failures"][0]
    assert "SQNR" in failure and "min 25 dB" in failure and "most sensitive: " in failure
    assert "pass --keep-float " in failure  # a set that passes: a real re-quantization confirmed it
    report = manifest["quantization"]["sensitivity"]
    assert report["fix"] and report["fix_sqnr_db"] >= 25 > report["baseline_sqnr_db"]

    quant = manifest["quantization"]
    assert quant["scheme"] == "static" and len(quant["calibration"]["images"]) == 4 and "vs_fp32" not in quant
    assert quant["norm_means_dropped"] > 0  # calibrated on the graph the float .pte runs (the patch embeddings')
    assert manifest["numerics"]["sqnr_db"] < 25 and manifest["numerics"]["runtime"] == "executorch"
    audit = manifest["audit"]
    assert audit["partitions"] == 1 and not audit["ops_outside"] and audit["ops_delegated"]["quantize_per_tensor"] > 0
    assert (tmp_path / "lvt_test-strict-int8.pte").is_file()


def test_sensitivity_report_finds_the_blocks_that_pass_the_gate(photos_64):
    model = tiny_lvt()
    deploy = lower(model, "executorch")
    quantizer = backend_quantizer("executorch", {"scheme": "static", "per_channel": True, "io": "float"})
    calib = calibration_batch(checked_calibration_paths(None, 4), get_entry("lvt").input_spec, 64)
    photos = photos_64[:4]
    with torch.no_grad():
        reference = model(photos).numpy()

    def requantize(more_float):
        return quantize(deploy, X, quantizer, calib, more_float)

    prepared, copies = calibrated(deploy, X, quantizer, calib)
    unfolded = converted(prepared, copies, fold_quantize=False)

    def view(more_float):
        return with_blocks_float(unfolded, more_float)

    # on XNNPACK a view of blocks kept float is exactly what re-quantizing with them float gives
    blocks = list(candidate_blocks(deploy))
    assert blocks[0] == "stages.0.0" and "head" in blocks

    def outputs(graph):
        with torch.no_grad():
            return torch.cat([graph(photos[i : i + 1]) for i in range(len(photos))])

    for kept in [("stages.0.1",), ("stages.1.0", "head")]:
        assert torch.equal(outputs(view(kept)), outputs(requantize(kept))), kept
    assert not torch.equal(outputs(view(("stages.0.1",))), outputs(unfolded))

    first = sensitivity_report(view, blocks, photos, reference, threshold=200.0, confirm=requantize)
    assert first["fix"] is None and first["blocks"][0]["sqnr_db_if_float"] >= first["blocks"][-1]["sqnr_db_if_float"]
    # a threshold between int8 and the best single block kept float: the fix exists and really passes
    threshold = (first["baseline_sqnr_db"] + first["blocks"][0]["sqnr_db_if_float"]) / 2
    report = sensitivity_report(view, blocks, photos, reference, threshold, confirm=requantize)
    assert report["fix"] and report["fix_sqnr_db"] >= threshold  # measured on a real re-quantization (confirm)
    assert "--keep-float " + report["fix"][0] in describe_fix(report)


def test_coreml_calibration_covers_every_calibration_image():
    """Core ML's quantizer calibrates with plain min/max: a moving average would keep the first image's range
    and clip the larger activations of the later ones."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4)).eval()
    calibration = torch.cat([torch.randn(1, 16) * scale for scale in (0.1, 1.0, 10.0)])
    quantizer = backend_quantizer("coreml", {"scheme": "static", "per_channel": True, "io": "float"})
    quantized = quantize(model, calibration[:1], quantizer, calibration)
    with torch.no_grad():
        largest = calibration[2:]
        assert compare(model(largest).numpy(), quantized(largest).numpy())["sqnr_db"] >= 30


def test_coreml_patterns_trace_to_the_graphs_the_quantizer_would_trace():
    """The Core ML quantizer's patterns traced without TorchDynamo: the same nodes as its own strict tracer, on a
    sample spread over every pattern a quantization asks for."""
    from executorch.backends.apple.coreml.quantizer import _coreml_quantizer_utils as utils
    from torchao.quantization.pt2e.utils import _get_aten_graph_module_for_pattern

    from edgevit.targets.coreml import trace_pattern

    quantizer = backend_quantizer("coreml", {"scheme": "static", "per_channel": True, "io": "float"})
    asked = []
    memoized = utils._get_aten_graph_module
    utils._get_aten_graph_module = lambda p, x, is_cuda=False: asked.append((p, x)) or memoized(p, x, is_cuda)
    try:
        model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU()).eval()
        quantize(model, X[:, :, :8, :8], quantizer, X[:, :, :8, :8])
    finally:
        utils._get_aten_graph_module = memoized

    def nodes(graph_module):
        return [(n.op, str(n.target), str(n.args), str(n.kwargs)) for n in graph_module.graph.nodes]

    assert len(asked) > 100
    for pattern, example in asked[:: len(asked) // 12]:
        assert nodes(trace_pattern(pattern, example)) == nodes(_get_aten_graph_module_for_pattern(pattern, example))

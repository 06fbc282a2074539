"""The int8 recipes of TFLite and ONNX on LVT's real widths (one block per stage, at 64x64), and Core ML's on the
tiny registered LVT, each exported once per run and run in its real runtime where the host has it."""

from __future__ import annotations

import numpy as np
import pytest

from edgevit.models import create_model
from edgevit.runtime import open_runner
from edgevit.targets.tflite_io import float_io

from .conftest import ArtifactCache, Exported, rerun


def lvt_int8(artifact_cache: ArtifactCache, recipe: str, model: str = "lvt_slim_test", **options) -> Exported:
    """LVT's widths at 64x64 through an int8 recipe, calibrated and verified on 4 photos."""
    return artifact_cache.export(model, recipe=recipe, size=64, num_images=4, **options)


def fp32_weight_bytes(model: str) -> int:
    return 4 * sum(p.numel() for p in create_model(model).parameters())


def assert_reruns_as_its_manifest_says(exported: Exported) -> None:
    numerics = rerun(exported)
    assert numerics["runtime"] == exported.manifest["numerics"]["runtime"]
    assert numerics["sqnr_db"] == pytest.approx(exported.manifest["numerics"]["sqnr_db"], abs=0.01)


def test_tflite_full_integer_and_its_float_io_twin(tmp_path, photos_64, artifact_cache):
    exported = lvt_int8(artifact_cache, "tflite-int8")
    manifest = exported.manifest
    assert manifest["numerics"]["sqnr_db"] >= 20 and manifest["audit"]["all_builtin"]
    # the app feeds int8: the manifest says how to quantize the normalised image and read the logits
    assert manifest["input"]["dtype"] == "int8" and manifest["output"]["dtype"] == "int8"
    scale, zero_point = manifest["input"]["quantization"]["scale"], manifest["input"]["quantization"]["zero_point"]
    assert 0 < scale < 1 and -128 <= zero_point <= 127
    artifact = exported.artifact
    assert manifest["audit"]["ops"].get("FULLY_CONNECTED", 0) > 0 and manifest["quantization"]["io"] == "int8"

    # float I/O: the same int8 model behind a QUANTIZE and a DEQUANTIZE gives the same logits
    twin = tmp_path / "float-io.tflite"
    twin.write_bytes(float_io(artifact.read_bytes()))
    x = photos_64[:2].numpy()
    int8_io, float_io_runner = open_runner(artifact), open_runner(twin)
    assert float_io_runner._dtype == np.float32 and int8_io._dtype == np.int8
    np.testing.assert_allclose(float_io_runner.run_batch(x), int8_io.run_batch(x), atol=1e-6)


def test_tflite_dynamic_int8_runs_in_litert(artifact_cache):
    exported = lvt_int8(artifact_cache, "tflite-dynamic-int8")
    manifest = exported.manifest
    assert manifest["numerics"]["sqnr_db"] >= 20 and manifest["input"]["dtype"] == "float32"
    assert manifest["audit"]["runtime_error"] == ""
    # int8 weights: under half the model's fp32 weights
    assert exported.artifact.stat().st_size < 0.5 * fp32_weight_bytes("lvt_slim_test")
    assert_reruns_as_its_manifest_says(exported)


def test_onnx_int8_is_qdq_with_the_norms_float(artifact_cache):
    import onnx

    from edgevit.quant.onnx_qdq import float_node_names

    exported = lvt_int8(artifact_cache, "onnx-int8", vs_fp32=True)
    manifest = exported.manifest
    # against the fp32 twin the export built and timed in alternating processes
    vs_fp32 = manifest["quantization"]["vs_fp32"]
    assert vs_fp32["size_ratio"] < 0.5 and vs_fp32["latency_ratio"] > 0 and vs_fp32["fp32_ms"] > 0
    ops = manifest["audit"]["ops"]
    assert ops.get("QuantizeLinear", 0) > 0 and ops.get("DequantizeLinear", 0) > 0
    assert manifest["numerics"]["sqnr_db"] >= 20 and manifest["numerics"]["runtime"] == "onnxruntime"
    assert_reruns_as_its_manifest_says(exported)
    model = onnx.load(str(exported.artifact))
    kept = set(float_node_names(model, ()))
    assert kept  # LayerNorm statistics and CSA's softmax, found through the exporter's metadata
    produced_by = {out: node for node in model.graph.node for out in node.output}
    constants = {init.name for init in model.graph.initializer}

    def int8_weights(node) -> bool:  # a DequantizeLinear of a stored int8 tensor feeds it
        sources = [produced_by.get(i) for i in node.input]
        return any(s is not None and s.op_type == "DequantizeLinear" and s.input[0] in constants for s in sources)

    matmuls = [n for n in model.graph.node if n.op_type in ("MatMul", "Gemm", "Conv")]
    assert any(int8_weights(n) for n in matmuls if n.name not in kept)
    # LayerNorm's statistics, written as MatMul reductions, keep fp32 weights
    assert not any(int8_weights(n) for n in matmuls if n.name in kept)
    assert any(n.name in kept for n in matmuls)


@pytest.mark.parametrize("recipe", ["coreml-w8a8"])
def test_coreml_w8a8_converts_and_gates_on_the_simulated_graph(artifact_cache, recipe):
    manifest = lvt_int8(artifact_cache, recipe, model="lvt_test").manifest  # about 30 dB: the plumbing
    ops = manifest["audit"]["ops"]
    assert ops.get("quantize", 0) > 0 and ops.get("constexpr_affine_dequantize", 0) > 0
    assert manifest["audit"]["transposes"] <= 20 and manifest["audit"]["max_rank"] <= 4
    numerics = manifest["numerics"]
    assert "needs macOS" in numerics["skipped"]  # never pretends to have run Core ML here
    assert numerics["simulated"]["runtime"] == "PyTorch simulation of the quantized graph"
    assert numerics["simulated"]["sqnr_db"] >= 20

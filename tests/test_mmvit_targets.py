"""MMViT on every target, for images (the tiny registered variant on every target, mmvit_xs's widths at 224
through XNNPACK) and for 1-channel non-square spectrograms (in both deploy
layouts), with the same gates as LVT: one XNNPACK partition, builtin-only TFLite, Core ML
without gather/scatter, rank <= 4 and at most 20 transposes, and numerics against the training form in each
runtime that runs here."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from .conftest import check_gates, rerun, run_cli_here


@pytest.mark.parametrize("target", ["executorch", "tflite", "onnx", "coreml"])
def test_mmvit_exports_to_every_target(artifact_cache, target):
    """The family's tiny registered variant (three stages, both views, cross attention between them) on every target."""
    exported = artifact_cache.export("mmvit_test", target)  # shared: built once per run
    manifest = exported.manifest
    assert manifest["gates"]["passed"], manifest["gates"]
    check_gates({target: manifest})
    if target == "onnx":
        assert manifest["input"]["shape"] == [1, 3, 64, 64]
    if target in ("executorch", "tflite"):  # the stream carried centred past max-pooled residuals, shared layers
        assert manifest["audit"]["norm_means_dropped"] == {"executorch": 17, "tflite": 16}[target]
    if target != "coreml":  # the artifact in its runtime, in this test
        numerics = rerun(exported)
        assert numerics["max_abs_diff"] < 1e-3 and numerics["top1_agreement"] == 1.0, numerics


def test_mmvit_xs_widths_are_one_xnnpack_partition(tmp_path, photos_224):
    """mmvit_xs's widths, views, pooling strides and heads at 224 through XNNPACK, the strictest delegation gate,
    run here. One self block in stages 3 and 4: the variant repeats stage 3's block nine times, which adds
    nodes to export, not kinds (`make bench` exports and audits the real depth)."""
    from dataclasses import replace

    from edgevit.lowering import lower
    from edgevit.models.mmvit import MMVIT_CONFIGS, MMViT
    from edgevit.numerics import compare
    from edgevit.recipe import get_recipe
    from edgevit.runtime import open_runner
    from edgevit.targets import executorch as et

    torch.manual_seed(0)
    model = MMViT(replace(MMVIT_CONFIGS["mmvit_xs"], self_blocks=(0, 0, 1, 1))).eval()
    exported = et.export(lower(model, "executorch"), photos_224[:1], get_recipe("executorch-xnnpack-fp32"))
    audit = exported.audit
    assert audit["partitions"] == 1 and not audit["ops_outside"] and audit["max_rank"] <= 4, audit
    exported.write(tmp_path / "mmvit_xs.pte")
    runner = open_runner(tmp_path / "mmvit_xs.pte")
    photos = photos_224[:4]
    got = np.concatenate([runner.run(photos[i : i + 1].numpy()) for i in range(len(photos))])
    with torch.no_grad():
        numerics = compare(model(photos).numpy(), got)
    assert numerics["max_abs_diff"] < 1e-3 and numerics["top1_agreement"] == 1.0, numerics


def test_audio_config_takes_a_non_square_one_channel_map_in_both_layouts(artifact_cache):
    """A 1-channel non-square spectrogram through each deploy layout once: tokens-last (TFLite, whose gates are
    the strictest of the three targets that share it) and channels-first (Core ML). The tiny registered audio
    config: the input's plumbing, not the widths."""
    exported = {t: artifact_cache.export("mmvit_audio_test", t) for t in ("tflite", "coreml")}
    rows = {t: e.manifest for t, e in exported.items()}
    assert all(row["gates"]["passed"] for row in rows.values()), rows
    check_gates(rows)
    entry = rows["tflite"]["input"]
    assert entry["shape"] == [1, 1, 64, 256] and entry["name"] == "spectrogram"
    assert "log-mel" in entry["preprocessing"]["features"] and "photos" in entry["preprocessing"]["verified_on"]
    assert rows["tflite"]["output"]["shape"] == [1, 527] and rows["coreml"]["input"]["shape"] == [1, 1, 64, 256]
    verified = run_cli_here("verify", str(exported["tflite"].artifact), "--num-images", "2", "--json")
    assert verified.returncode == 0, verified.stderr
    assert json.loads(verified.stdout)["numerics"]["max_abs_diff"] < 1e-3


def test_bad_input_sizes_are_one_line_errors(tmp_path):
    for size, message in (("64x", "is not a size"), ("64x100", "multiple of 32"), ("abc", "is not a size")):
        proc = run_cli_here("export", "mmvit_xs", "--input-size", size, "--output-dir", str(tmp_path))
        assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1


def test_mmvit_deploy_form_trains_with_qat_and_lowers_to_one_int8_partition(tmp_path, photos_64):
    """QAT on MMViT's deploy form (shared weights untied, CLS slices, joint attention) through XNNPACK's own
    quantizer, then the .pte in ExecuTorch against the fake-quantized model. A tiny config keeps the test
    quick; `edgevit qat` on the registered variants runs the same functions."""
    from torchao.quantization.pt2e import move_exported_model_to_eval, move_exported_model_to_train

    from edgevit.lowering import lower
    from edgevit.models.mmvit import MMViT, MMViTConfig
    from edgevit.numerics import compare
    from edgevit.recipe import default_recipe
    from edgevit.runtime import open_runner
    from edgevit.targets import executorch
    from edgevit.train.loop import train_epoch
    from edgevit.train.qat import convert_qat, prepare_qat

    torch.manual_seed(0)
    cfg = MMViTConfig(dims=(8, 16), heads=(1, 2), self_blocks=(0, 1), num_classes=3, img_size=64)
    options = {"scheme": "static", "per_channel": True, "keep_float": [], "io": "float"}
    prepared = prepare_qat(lower(MMViT(cfg).eval(), "executorch"), photos_64[:2], "executorch", options, ())
    optimizer = torch.optim.AdamW(prepared.parameters(), lr=1e-3)
    labels = torch.arange(len(photos_64)) % 3
    before = [p.detach().clone() for p in prepared.parameters()]
    move_exported_model_to_train(prepared)
    loss = train_epoch(prepared, optimizer, photos_64, labels, 4, torch.Generator().manual_seed(0))
    move_exported_model_to_eval(prepared)
    assert math.isfinite(loss)
    moved = sum(not torch.equal(a, b) for a, b in zip(before, prepared.parameters(), strict=True))
    assert moved == len(before), f"{len(before) - moved} weights got no gradient"
    with torch.no_grad():
        reference = prepared(photos_64).numpy()
    converted = convert_qat(prepared, fold_quantize=True)
    artifact = executorch.export(converted, photos_64[:1], default_recipe("executorch"))
    assert artifact.audit["partitions"] == 1 and not artifact.audit["ops_outside"], artifact.audit
    path = tmp_path / "mmvit-qat.pte"
    artifact.write(path)
    numerics = compare(reference, open_runner(path).run_batch(photos_64.numpy()))
    assert numerics["sqnr_db"] >= 20, numerics


def test_mmvit_coreml_w8a8_keeps_attention_products_float_and_no_transpose():
    """Core ML's w8a8 program: Linear and conv weights and activations int8, the attention products float, so
    coremltools still folds the keys' transpose into matmul (with them quantized: one transpose per attention)."""
    from edgevit.lowering import lower
    from edgevit.models import get_entry
    from edgevit.models.mmvit import MMViT, MMViTConfig
    from edgevit.quant.flow import QuantizeRequest, quantize_for_export
    from edgevit.recipe import get_recipe
    from edgevit.targets import coreml

    torch.manual_seed(0)
    cfg = MMViTConfig(dims=(8, 16), heads=(1, 2), self_blocks=(0, 1), num_classes=3, img_size=64)
    deploy = lower(MMViT(cfg).eval(), "coreml")
    recipe = get_recipe("coreml-w8a8")
    example = torch.randn(1, 3, 64, 64)
    plan = quantize_for_export(
        deploy, example, recipe, get_entry("mmvit_xs").input_spec, 64, QuantizeRequest(calib_count=4), lambda _: None
    )
    matmuls = [n for n in plan.module.graph.nodes if n.target == torch.ops.aten.matmul.default]
    assert matmuls and not any("dequantize" in str(arg.target) for n in matmuls for arg in n.all_input_nodes)
    assert any("dequantize" in str(n.target) for n in plan.module.graph.nodes)  # the rest is int8
    audit = coreml.export(plan.module, example, recipe).audit
    assert audit["transposes"] == 0 and audit["ops"].get("quantize", 0) > 0, audit

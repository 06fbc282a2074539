"""CrossViT: timm's checkpoints load with strict keys and give timm's own logits; each deploy-form rewrite equals
what it replaces; the tiny registered variant on every target with LVT's gates; crossvit_mobile_240's widths
through XNNPACK."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from edgevit.data import load_images
from edgevit.lowering import lower
from edgevit.lowering.crossvit import DeployCrossAttentionBlock, bicubic_matrix, transposed_conv
from edgevit.models import create_model, get_entry
from edgevit.models import crossvit as train

from .conftest import assert_traces_at_any_batch, check_gates, rerun, run_cli_here, write_timm_references

# a published checkpoint of each registered timm variant: as timm saves it, under the official repository's
# names, and fine-tuned to 10 classes
TIMM_CHECKPOINTS = ("crossvit_tiny_240", "crossvit_9_240:original", "crossvit_9_dagger_240:10")


@pytest.fixture(scope="module")
def photos_240() -> torch.Tensor:
    return load_images(None, get_entry("crossvit_9_240").input_spec, 240, limit=4)


@pytest.fixture(scope="module")
def timm_references(artifact_cache, photos_240) -> Path:
    """Checkpoints and logits written by timm's own CrossViT code, once per run for both workers."""
    return artifact_cache.folder("timm-crossvit", lambda out: write_timm_references(out, photos_240, TIMM_CHECKPOINTS))


@pytest.mark.parametrize("spec", TIMM_CHECKPOINTS)
def test_timm_checkpoints_load_with_strict_keys_and_give_timms_logits(timm_references, photos_240, spec):
    variant = spec.split(":")[0]
    folder = timm_references / variant
    (checkpoint,) = folder.glob("checkpoint.*")
    model = create_model(variant, checkpoint=checkpoint).eval()  # strict keys: a mismatch raises
    expected = np.load(folder / "logits.npy")
    assert model.num_classes == expected.shape[1] == (10 if spec.endswith(":10") else 1000)
    with torch.no_grad():
        got = model(photos_240).numpy()
        assert np.abs(got - expected).max() <= 1e-4
        # the deploy forms of these weights, both layouts
        for target in ("executorch", "coreml"):
            deployed = lower(model, target)(photos_240).numpy()
            assert np.abs(deployed - expected).max() <= 1e-4, target


def test_checkpoint_position_embeddings_follow_the_input_size(timm_references, photos_240):
    checkpoint = timm_references / "crossvit_tiny_240" / "checkpoint.safetensors"
    model = create_model("crossvit_tiny_240", checkpoint=checkpoint, input_size=360).eval()
    assert model.pos_embed(0).shape == (1, 1 + 30 * 30, 96) and model.pos_embed(1).shape == (1, 1 + 21 * 21, 192)
    photos = F.interpolate(photos_240[:1], size=(360, 360), mode="bicubic", align_corners=False)
    with torch.no_grad():
        assert torch.isfinite(model(photos)).all()
    with pytest.raises(ValueError, match="learned for one size"):
        model(photos_240[:1])
    for size in ("224", "250"):
        proc = run_cli_here("export", "crossvit_9_240", "--input-size", size, "--output-dir", "/nonexistent")
        assert proc.returncode == 2 and "multiple of 120" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize(("size_in", "size_out"), [((240, 120), (224, 112)), ((96, 100), (130, 50))])
def test_bicubic_resize_is_two_constant_matrices(size_in, size_out):
    torch.manual_seed(0)
    image = torch.rand(2, 3, *size_in)
    expected = F.interpolate(image, size=size_out, mode="bicubic", align_corners=False)
    rows, columns = bicubic_matrix(size_in[0], size_out[0]), bicubic_matrix(size_in[1], size_out[1])
    torch.testing.assert_close(rows @ image @ columns.t(), expected, atol=1e-5, rtol=0)


def test_a_conv_of_the_transposed_image_is_the_transposed_conv():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 8, kernel_size=(7, 3), stride=(4, 2), padding=(3, 1))
    image = torch.randn(1, 3, 40, 24)
    with torch.no_grad():
        torch.testing.assert_close(transposed_conv(conv)(image.transpose(2, 3)), conv(image).transpose(2, 3))


@pytest.mark.parametrize("target", ["executorch", "coreml"])
def test_fusion_attention_is_single_query_products(target):
    from edgevit.lowering import layout_for

    torch.manual_seed(0)
    block = train.CrossAttentionBlock(dim=32, num_heads=4, qkv_bias=True, drop_path=0.0).eval()
    with torch.no_grad():
        for p in block.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    layout = layout_for(target)
    deploy = DeployCrossAttentionBlock(block, layout)
    tokens = torch.randn(2, 50, 32)
    as_layout = (lambda t: t.transpose(1, 2).unsqueeze(2)) if layout.channels_first else (lambda t: t)
    with torch.no_grad():
        torch.testing.assert_close(deploy(as_layout(tokens)), as_layout(block(tokens)), atol=1e-5, rtol=0)


def test_whole_model_deploy_forms_match_on_real_photos():
    """Every layout of the tiny variant; its unscaled branch keeps the image as it is (no resize, row-major
    tokens) and its scaled branch resizes by matrices."""
    torch.manual_seed(0)
    model = create_model("crossvit_test").eval()
    photos = load_images(None, get_entry("crossvit_test").input_spec, 120)
    with torch.no_grad():
        reference = model(photos)
        for target in ("executorch", "tflite", "onnx", "coreml"):
            deploy = lower(model, target)
            assert [e.resized for e in deploy.embeds] == [False, True]
            torch.testing.assert_close(deploy(photos), reference, atol=1e-4, rtol=0)


def test_the_deploy_form_traces_at_any_batch_without_expand():
    assert_traces_at_any_batch(create_model("crossvit_test").eval(), 120, targets=("executorch", "coreml"))


@pytest.mark.parametrize("target", ["executorch", "tflite", "onnx", "coreml"])
def test_crossvit_exports_to_every_target(artifact_cache, target):
    """The family's tiny registered variant (both branches, bicubic-resized large branch, two fusions)."""
    exported = artifact_cache.export("crossvit_test", target)
    manifest = exported.manifest
    assert manifest["gates"]["passed"], manifest["gates"]
    check_gates({target: manifest})
    assert manifest["input"]["shape"] == [1, 3, 120, 120]
    if target != "coreml":  # the artifact in its runtime, in this test
        numerics = rerun(exported)
        assert numerics["max_abs_diff"] < 1e-3 and numerics["top1_agreement"] == 1.0, numerics


def test_crossvit_mobile_widths_are_one_xnnpack_partition(tmp_path, photos_240):
    """crossvit_mobile_240's widths, heads and both branches at 240 through XNNPACK, the strictest delegation
    gate, run here; one multi-scale block of one ViT block per branch (the variant repeats them, which adds
    nodes to export, not kinds; `make bench` exports the real depth)."""
    from edgevit.numerics import compare
    from edgevit.recipe import get_recipe
    from edgevit.runtime import open_runner
    from edgevit.targets import executorch as et

    torch.manual_seed(0)
    cfg = replace(train.CROSSVIT_CONFIGS["crossvit_mobile_240"], depths=((1, 1, 0),))
    model = train.CrossViT(cfg).eval()
    exported = et.export(lower(model, "executorch"), photos_240[:1], get_recipe("executorch-xnnpack-fp32"))
    audit = exported.audit
    assert audit["partitions"] == 1 and not audit["ops_outside"] and audit["max_rank"] <= 4, audit
    exported.write(tmp_path / "crossvit_mobile.pte")
    got = open_runner(tmp_path / "crossvit_mobile.pte").run_batch(photos_240.numpy())
    with torch.no_grad():
        numerics = compare(model(photos_240).numpy(), got)
    assert numerics["max_abs_diff"] < 1e-3 and numerics["top1_agreement"] == 1.0, numerics

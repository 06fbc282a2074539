"""MViTv2: timm's and the official checkpoints load with strict keys and give timm's own logits; each deploy-form
rewrite equals what it replaces; the tiny registered variant on every target with LVT's gates; mvitv2_mobile's
widths through XNNPACK."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from edgevit.data import load_images
from edgevit.lowering import layout_for, lower
from edgevit.lowering.mvitv2 import DeployRelPos, as_self_block
from edgevit.lowering.pooling import DeploySelfBlock
from edgevit.models import create_model, get_entry
from edgevit.models import mvitv2 as train

from .conftest import assert_traces_at_any_batch, check_gates, rerun, run_cli_here, write_timm_references

# a checkpoint as timm saves it, and one under the official repository's names fine-tuned to 10 classes
TIMM_CHECKPOINTS = ("mvitv2_tiny", "mvitv2_small:original:10")


@pytest.fixture(scope="module")
def photos() -> torch.Tensor:
    return load_images(None, get_entry("mvitv2_tiny").input_spec, 224, limit=4)


@pytest.fixture(scope="module")
def timm_references(artifact_cache, photos) -> Path:
    """Checkpoints and logits written by timm's own MViTv2 code, once per run for both workers."""
    return artifact_cache.folder("timm-mvitv2", lambda out: write_timm_references(out, photos, TIMM_CHECKPOINTS))


@pytest.mark.parametrize("spec", TIMM_CHECKPOINTS)
def test_timm_checkpoints_load_with_strict_keys_and_give_timms_logits(timm_references, photos, spec):
    variant = spec.split(":")[0]
    folder = timm_references / variant
    (checkpoint,) = folder.glob("checkpoint.*")
    if spec.endswith(":original:10"):  # flat blocks under model_state, the official layout
        assert "blocks.3.proj.weight" in torch.load(checkpoint, weights_only=True)["model_state"]
    model = create_model(variant, checkpoint=checkpoint).eval()  # strict keys: a mismatch raises
    expected = np.load(folder / "logits.npy")
    assert model.num_classes == expected.shape[1] == (10 if spec.endswith(":10") else 1000)
    with torch.no_grad():
        got = model(photos).numpy()
        assert np.abs(got - expected).max() <= 1e-4
        for target in ("executorch", "coreml"):  # the deploy forms of these weights, both layouts
            deployed = lower(model, target)(photos).numpy()
            assert np.abs(deployed - expected).max() <= 1e-4, target


def test_relative_position_tables_follow_the_input_size(timm_references, photos):
    checkpoint = timm_references / "mvitv2_tiny" / "checkpoint.safetensors"
    model = create_model("mvitv2_tiny", checkpoint=checkpoint, input_size=256).eval()
    # stage 1 at 256: a 64x64 query grid against 16x16 keys, 2 * 64 - 1 rows (111 at 224)
    assert model.stages[0].blocks[0].attn.rel_pos_h.shape == (127, 96)
    resized = F.interpolate(photos[:2], size=(256, 256), mode="bicubic", align_corners=False)
    with torch.no_grad():
        reference = model(resized)
        assert torch.isfinite(reference).all()
        torch.testing.assert_close(lower(model, "executorch")(resized), reference, atol=1e-4, rtol=0)
    for size in ("200", "250"):
        proc = run_cli_here("export", "mvitv2_tiny", "--input-size", size, "--output-dir", "/nonexistent")
        assert proc.returncode == 2 and "multiple of 32" in proc.stderr and "Traceback" not in proc.stderr


def _perturbed_block(dim: int, dim_out: int, heads: int, grid, stride_q: int, stride_kv: int):
    torch.manual_seed(0)
    cfg = train.MViTv2Config(mlp_ratio=2.0)
    block = train.MultiScaleBlock(dim, dim_out, heads, grid, cfg, stride_q, stride_kv, 0.0).eval()
    with torch.no_grad():
        for p in block.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return block


# (dim, dim_out, heads, grid, Q stride, K/V stride): stage 1 (keys pooled 4x), a Q-strided block that widens
# (a non-square grid), and a block whose queries, keys and values pool alike
BLOCKS = [(16, 16, 1, (12, 12), 1, 4), (16, 32, 2, (8, 12), 2, 2), (32, 32, 2, (4, 4), 1, 1)]


@pytest.mark.parametrize("form", ["executorch", "executorch-products", "coreml"])
@pytest.mark.parametrize("geometry", BLOCKS, ids=["stage1", "strided", "unpooled-keys"])
def test_relative_positions_are_constant_products(form, geometry):
    """Each layout's form; tokens last also as elementwise products, the form LiteRT's dynamic-range recipe
    takes (``without_constant_batch_matmul``)."""
    dim, dim_out, heads, grid, stride_q, stride_kv = geometry
    attn = _perturbed_block(*geometry).attn
    q_grid, k_grid = train.pooled_grid(grid, stride_q, 3), train.pooled_grid(grid, stride_kv, 3)
    layout = layout_for(form.split("-")[0])
    bias = DeployRelPos(attn, q_grid, k_grid, layout)
    if form.endswith("products"):
        bias.without_constant_batch_matmul()
    batch, d, n, m = 2, dim_out // heads, q_grid[0] * q_grid[1], k_grid[0] * k_grid[1]
    q = torch.randn(batch, heads, n, d)
    expected = attn.rel_pos(q, q_grid, k_grid).reshape(batch * heads, n, m)
    with torch.no_grad():
        if layout.channels_first:  # logits keys x queries, queries (G, d, N)
            got = bias(torch.zeros(batch * heads, m, n), q.reshape(-1, n, d).transpose(1, 2)).transpose(1, 2)
        else:
            got = bias(torch.zeros(batch * heads, n, m), q.reshape(-1, n, d))
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("target", ["executorch", "coreml", "tflite"])
@pytest.mark.parametrize("geometry", BLOCKS, ids=["stage1", "strided", "unpooled-keys"])
def test_a_block_is_the_pooling_attention_block_with_its_relative_positions(target, geometry):
    dim, dim_out, heads, grid, stride_q, stride_kv = geometry
    block = _perturbed_block(*geometry)
    attn = block.attn
    layout = layout_for(target)
    q_grid, k_grid = train.pooled_grid(grid, stride_q, 3), train.pooled_grid(grid, stride_kv, 3)
    # one image for LiteRT's layout: its one-head products (stage1) run as two batches of query halves
    tokens = torch.randn(1 if target == "tflite" else 2, grid[0] * grid[1], dim)
    as_layout = (lambda t: t.transpose(1, 2).unsqueeze(2)) if layout.channels_first else (lambda t: t)
    with torch.no_grad():
        bias = DeployRelPos(attn, q_grid, k_grid, layout)
        deploy = DeploySelfBlock(as_self_block(block), grid, False, layout, logits_bias=bias)
        expected, out_grid = block(tokens, grid)
        assert out_grid == q_grid
        torch.testing.assert_close(deploy(as_layout(tokens)), as_layout(expected), atol=1e-5, rtol=0)


def test_whole_model_deploy_forms_match_on_real_photos():
    torch.manual_seed(0)
    model = create_model("mvitv2_test").eval()
    images = load_images(None, get_entry("mvitv2_test").input_spec, 64)
    with torch.no_grad():
        reference = model(images)
        for target in ("executorch", "tflite", "onnx", "coreml"):
            torch.testing.assert_close(lower(model, target)(images), reference, atol=1e-4, rtol=0)


def test_the_tokens_last_form_traces_at_any_batch_without_repeat_or_expand():
    assert_traces_at_any_batch(create_model("mvitv2_test").eval(), 64)


@pytest.mark.parametrize("target", ["executorch", "tflite", "onnx", "coreml"])
def test_mvitv2_exports_to_every_target(artifact_cache, target):
    """The family's tiny registered variant: four stages, keys pooled 4x, Q-strided and plain blocks."""
    exported = artifact_cache.export("mvitv2_test", target)
    manifest = exported.manifest
    assert manifest["gates"]["passed"], manifest["gates"]
    check_gates({target: manifest})
    assert manifest["input"]["shape"] == [1, 3, 64, 64]
    if target == "coreml":  # the relative positions need no transposes
        assert manifest["audit"]["transposes"] == 0, manifest["audit"]
    else:  # the artifact in its runtime, in this test
        numerics = rerun(exported)
        assert numerics["max_abs_diff"] < 1e-3 and numerics["top1_agreement"] == 1.0, numerics


def test_mvitv2_mobile_widths_are_one_xnnpack_partition(tmp_path, photos):
    """mvitv2_mobile's widths, heads and pooling strides at 224 through XNNPACK, the strictest delegation gate,
    run here; one block per stage (the variant repeats them, which adds nodes to export, not kinds; `make bench`
    exports the real depth)."""
    from edgevit.numerics import compare
    from edgevit.recipe import get_recipe
    from edgevit.runtime import open_runner
    from edgevit.targets import executorch as et

    torch.manual_seed(0)
    model = train.MViTv2(replace(train.MVITV2_CONFIGS["mvitv2_mobile"], depths=(1, 1, 1, 1))).eval()
    exported = et.export(lower(model, "executorch"), photos[:1], get_recipe("executorch-xnnpack-fp32"))
    audit = exported.audit
    assert audit["partitions"] == 1 and not audit["ops_outside"] and audit["max_rank"] <= 4, audit
    exported.write(tmp_path / "mvitv2_mobile.pte")
    got = open_runner(tmp_path / "mvitv2_mobile.pte").run_batch(photos.numpy())
    with torch.no_grad():
        numerics = compare(model(photos).numpy(), got)
    assert numerics["max_abs_diff"] < 1e-3 and numerics["top1_agreement"] == 1.0, numerics

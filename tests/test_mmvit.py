"""MMViT: the training form's structure and sizes, checkpoints across input sizes, and every deploy rewrite
against the training module it replaces (both layouts), down to the whole model on real photos."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from edgevit.lowering import lower
from edgevit.lowering.layout import LAYOUTS
from edgevit.lowering.mmvit import DeployCrossBlock, DeployMMViT
from edgevit.lowering.pooling import DeployPool, DeploySelfBlock
from edgevit.models import create_model
from edgevit.models.mmvit import MMVIT_CONFIGS, CrossBlock, MMViT, MMViTConfig, Pool, SelfBlock
from edgevit.models.stats import model_stats
from edgevit.targets.audit import max_tensor_rank, op_counts

from .conftest import assert_learns

TOL = dict(atol=1e-5, rtol=0)
TOKENS, COLUMNS = LAYOUTS["tokens-last"], LAYOUTS["channels-first"]
EACH_LAYOUT = pytest.mark.parametrize("layout", list(LAYOUTS.values()), ids=list(LAYOUTS))
TINY = MMViTConfig(
    dims=(8, 16, 16, 32), heads=(1, 2, 2, 4), self_blocks=(1, 0, 2, 1), num_classes=10, img_size=(64, 64)
)


def tiny_mmvit(**overrides) -> MMViT:
    torch.manual_seed(0)
    return MMViT(replace(TINY, **overrides)).eval()


@pytest.mark.parametrize("name,params,gmacs", [("mmvit_xs", (2.0, 3.0), 1.0), ("mmvit_s", (5.0, 6.0), 1.0)])
def test_variants_fit_their_budgets(name, params, gmacs):
    stats = model_stats(name)
    assert params[0] <= stats["params_m"] <= params[1]
    assert stats["gmacs"] <= gmacs
    model = create_model(name)
    # 16 blocks per view's path: [0, 0, 9, 1] self blocks, cross + scaled in stages 1-3
    cfg = model.cfg
    assert sum(cfg.self_blocks) + 2 * (cfg.num_stages - 1) == 16
    assert cfg.num_views == 2 and model.stems[0].cls_token is not None and model.stems[1].cls_token is None


def test_every_open_choice_has_a_reason():
    reasons = MMViTConfig.reasons()
    for name in ("view_kernels", "view_strides", "dims", "heads", "self_blocks", "kv_strides", "share_view_weights"):
        assert len(reasons[name]) > 20, name


def test_views_overlap_and_grids_follow_the_strides():
    cfg = MMVIT_CONFIGS["mmvit_xs"]
    assert all(k > s for k, s in zip(cfg.view_kernels, cfg.view_strides, strict=True))
    assert cfg.view_grid(0) == (56, 56) and cfg.view_grid(1) == (28, 28)
    features = create_model("mmvit_xs", features_only=True)(torch.randn(1, 3, 224, 224))
    shapes = [[tuple(t.shape[1:]) for t in stage] for stage in features]
    assert shapes == [
        [(32, 28, 28), (32, 14, 14)],
        [(64, 14, 14), (64, 7, 7)],
        [(128, 7, 7), (128, 4, 4)],
        [(128, 7, 7), (128, 4, 4)],
    ]


def test_train_mode_learns_and_shared_weights_halve_the_blocks():
    assert_learns(tiny_mmvit(drop_path_rate=0.1), 64)
    shared = tiny_mmvit(share_view_weights=True)
    assert shared.stages[0].blocks[0][0] is shared.stages[0].blocks[0][1]
    assert sum(p.numel() for p in shared.parameters()) < sum(p.numel() for p in tiny_mmvit().parameters())


def test_checkpoint_loads_at_another_input_size(tmp_path):
    torch.manual_seed(0)
    model = create_model("mmvit_xs", num_classes=5).eval()
    path = tmp_path / "xs.pth"
    torch.save(model.state_dict(), path)
    small = create_model("mmvit_xs", path, input_size=64).eval()
    assert small.stems[0].pos_embed.shape[1] == 1 + 16 * 16
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():  # resized once at load == resized on the fly by the 224 model
        torch.testing.assert_close(small(x), model(x), **TOL)


@pytest.mark.parametrize("stride,has_cls", [(2, True), (4, False), (2, False)])
@EACH_LAYOUT
def test_pool_on_all_heads_equals_per_head_pool(stride, has_cls, layout):
    torch.manual_seed(0)
    heads, d, grid = 3, 8, (8, 6)
    pool = Pool(d, stride).eval()
    torch.nn.init.normal_(pool.norm.weight)
    x = torch.randn(2, heads, has_cls + 48, d)
    with torch.no_grad():
        expected, _ = pool(x, grid, has_cls)
        tokens = x.permute(0, 2, 1, 3).reshape(2, -1, heads * d)
        got = _run(DeployPool(pool, heads, grid, has_cls, layout), layout, tokens)
    torch.testing.assert_close(got, expected.permute(0, 2, 1, 3).reshape(2, -1, heads * d), **TOL)


def _columns(x):
    return x.transpose(1, 2).unsqueeze(2)


def _tokens(x):
    return x.squeeze(2).transpose(1, 2)


def _run(module, layout, tokens):
    """``module`` on (B, N, C) tokens laid out as ``layout`` lays them out, the result back as tokens."""
    return _tokens(module(_columns(tokens))) if layout.channels_first else module(tokens)


@pytest.mark.parametrize(
    "q_stride,kv_stride,dim_out,has_cls", [(1, 1, 16, True), (1, 2, 16, True), (2, 1, 32, True), (2, 4, 32, False)]
)
@EACH_LAYOUT
def test_deploy_self_block_equals_self_block(q_stride, kv_stride, dim_out, has_cls, layout):
    torch.manual_seed(0)
    block = SelfBlock(16, dim_out, 2, q_stride, kv_stride, TINY).eval()
    grid = (8, 8)
    x = torch.randn(2, has_cls + 64, 16)
    with torch.no_grad():
        expected, _ = block(x, grid, has_cls)
        torch.testing.assert_close(_run(DeploySelfBlock(block, grid, has_cls, layout), layout, x), expected, **TOL)


@pytest.mark.parametrize("q_stride,kv_stride,parts", [(1, 1, [("q", "k", "v")]), (1, 2, [("q",), ("k", "v")])])
def test_projections_that_pool_alike_run_as_one(q_stride, kv_stride, parts):
    block = SelfBlock(16, 16, 2, q_stride, kv_stride, TINY).eval()
    with torch.no_grad():
        deploy = DeploySelfBlock(block, (8, 8), True, TOKENS)
        separate = DeploySelfBlock(block, (8, 8), True, COLUMNS)
    assert separate.qkv.parts == [("q",), ("k",), ("v",)]  # one 1x1 conv each channels first
    assert deploy.qkv.parts == parts
    assert [p.out_features for p in deploy.qkv.projections] == [16 * len(names) for names in parts]


@EACH_LAYOUT
def test_cls_only_final_block_keeps_the_cls_output(layout):
    torch.manual_seed(0)
    block = SelfBlock(16, 16, 2, 1, 1, TINY).eval()
    x = torch.randn(1, 1 + 16, 16)
    with torch.no_grad():
        expected, _ = block(x, (4, 4), True)
        got = _run(DeploySelfBlock(block, (4, 4), True, layout, cls_only=True), layout, x)
    assert got.shape == (1, 1, 16)
    torch.testing.assert_close(got, expected[:, :1], **TOL)
    with pytest.raises(ValueError, match="cls_only"):
        DeploySelfBlock(SelfBlock(16, 32, 2, 2, 1, TINY), (4, 4), True, layout, cls_only=True)


@EACH_LAYOUT
@pytest.mark.parametrize("live", [[0, 1], [0]])
def test_cross_block_without_query_concat_equals_joint_attention(live, layout):
    torch.manual_seed(0)
    block = CrossBlock(16, 2, (2, 1), TINY, 0.0).eval()
    grids, has_cls = [(8, 8), (4, 4)], [True, False]
    views = [torch.randn(1, 65, 16), torch.randn(1, 16, 16)]
    with torch.no_grad():
        expected = block(views, grids, has_cls)
        deploy = DeployCrossBlock(block, grids, has_cls, live, layout)
        got = deploy([_columns(v) for v in views] if layout.channels_first else views)
    for i in range(2):
        if i in live:
            torch.testing.assert_close(_tokens(got[i]) if layout.channels_first else got[i], expected[i], **TOL)
        else:
            assert got[i] is None


@pytest.mark.parametrize("name,size", [("mmvit_xs", 224), ("mmvit_s", 64)])
def test_lowered_model_matches_on_real_photos(name, size, photos_224, photos_64):
    torch.manual_seed(0)
    model = create_model(name, input_size=size).eval()
    photos = photos_224 if size == 224 else photos_64
    with torch.no_grad():
        expected = model(photos)
        for target in ("executorch", "coreml", "onnx"):
            torch.testing.assert_close(lower(model, target)(photos), expected, atol=1e-4, rtol=0)


def test_dead_view_computation_is_removed():
    model = create_model("mmvit_xs", input_size=64).eval()
    deploy = DeployMMViT.from_module(model, TOKENS)
    # each view's path has 13 self blocks (3 scaled, 9 + 1 self); view 2's last two feed nothing
    assert deploy.plan.count(("self", 0)) == 13
    assert deploy.plan.count(("self", 1)) == 11
    assert deploy.steps[-3].live_views == [0]  # the last cross computes view 1's queries only
    assert deploy.steps[-1].cls_only
    assert lower(model, "coreml").plan == deploy.plan  # the same plan in every layout


@pytest.mark.parametrize("target", ["executorch", "coreml"])
def test_deploy_graph_is_static_rank_4_without_gather(target):
    model = tiny_mmvit()
    program = torch.export.export(lower(model, target), (torch.randn(1, 3, 64, 64),)).run_decompositions({})
    ops = op_counts(program.graph)
    assert max_tensor_rank(program.graph)[0] <= 4
    assert not {"index", "gather", "scatter", "index_put", "expand", "select"} & set(ops), ops
    if target == "coreml":  # the keys' transposes only (folded into matmul by the converter)
        attentions = ops.get("bmm", 0) + ops.get("matmul", 0)
        assert ops.get("transpose", 0) + ops.get("permute", 0) <= attentions // 2


def test_deploy_form_refuses_another_input_size():
    deploy = lower(tiny_mmvit(), "executorch")
    with pytest.raises(ValueError, match="token grid"):
        deploy(torch.randn(1, 3, 96, 96))

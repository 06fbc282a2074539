"""LVT deploy modules against their training modules, and the whole lowered model on real photos."""

from __future__ import annotations

import pytest
import torch

from edgevit.errors import EdgevitError
from edgevit.lowering import lower
from edgevit.lowering.layout import LAYOUTS
from edgevit.lowering.lvt import ChannelsFirstCSA, DeployClassBlock, DeployCSA, DeployRASA
from edgevit.models import create_model
from edgevit.models.lvt import CSA, RASA, ClassBlock
from edgevit.targets.audit import max_tensor_rank, op_counts

from .conftest import tiny_lvt

TOL = dict(atol=1e-5, rtol=0)


@pytest.mark.parametrize("B,H,W,C,heads", [(2, 8, 8, 16, 2), (1, 12, 6, 10, 1), (1, 56, 56, 64, 2)])
def test_deploy_csa_equals_csa(B, H, W, C, heads):
    torch.manual_seed(0)
    m = CSA(C, heads).eval()
    x = torch.randn(B, H, W, C)
    with torch.no_grad():
        torch.testing.assert_close(DeployCSA.from_module(m)(x), m(x), **TOL)


def _nchw(module, x_nhwc):
    return module(x_nhwc.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


def _on_map(module, layout, x_nhwc):
    """``module`` run on an NHWC map laid out as ``layout`` lays maps out, the result back in NHWC."""
    return _nchw(module, x_nhwc) if layout.channels_first else module(x_nhwc)


@pytest.mark.parametrize("B,H,W,C,heads", [(2, 8, 8, 16, 2), (1, 12, 6, 10, 1), (1, 56, 56, 64, 2)])
def test_channels_first_csa_equals_csa(B, H, W, C, heads):
    torch.manual_seed(0)
    m = CSA(C, heads).eval()
    x = torch.randn(B, H, W, C)
    with torch.no_grad():
        torch.testing.assert_close(_nchw(ChannelsFirstCSA.from_module(m), x), m(x), **TOL)
    with pytest.raises(ValueError, match="kernel 3"):
        ChannelsFirstCSA.from_module(CSA(8, 1, kernel_size=5))


@pytest.mark.parametrize("B", [2, 1])  # one image takes each tap as a single slice
def test_csa_patches_are_unfold(B):
    torch.manual_seed(0)
    x = torch.randn(B, 10, 6, 3)  # NHWC
    taps = torch.stack([t.reshape(B, 5, 3, 3) for t in DeployCSA.patches(x)], dim=-1)  # B, h, w, C, 9
    ref = torch.nn.Unfold(3, padding=1, stride=2)(x.permute(0, 3, 1, 2))  # B, C*9, h*w
    torch.testing.assert_close(taps.permute(0, 3, 4, 1, 2).reshape(B, 27, 15), ref, **TOL)


def test_deploy_csa_refuses_other_kernels():
    with pytest.raises(ValueError, match="kernel 3"):
        DeployCSA.from_module(CSA(8, 1, kernel_size=5))


@pytest.mark.parametrize("layout", list(LAYOUTS.values()), ids=list(LAYOUTS))
@pytest.mark.parametrize("sr,recursions", [(1, 2), (2, 2), (4, 1), (2, 3)])
def test_deploy_rasa_equals_rasa(sr, recursions, layout):
    torch.manual_seed(0)
    m = RASA(20, 4, sr_ratio=sr, recursions=recursions).eval()
    x = torch.randn(2, 8, 8, 20)
    with torch.no_grad():
        torch.testing.assert_close(_on_map(DeployRASA.from_module(m, layout), layout, x), m(x), **TOL)


@pytest.mark.parametrize("layout", list(LAYOUTS.values()), ids=list(LAYOUTS))
def test_deploy_class_block_equals_class_block(layout):
    torch.manual_seed(0)
    m = ClassBlock(32, 4, 4).eval()
    x = torch.randn(2, 17, 32)
    deploy = DeployClassBlock.from_module(m, layout)
    with torch.no_grad():
        if layout.channels_first:  # tokens as (B, C, 1, N)
            out = deploy(x.transpose(1, 2).reshape(2, 32, 1, 17)).reshape(2, 32, 17).transpose(1, 2)
        else:
            out = deploy(x)
        torch.testing.assert_close(out, m(x), **TOL)


@pytest.mark.parametrize("target", ["executorch", "onnx", "coreml"])  # each layout
@pytest.mark.parametrize("name", ["lvt", "lvt_cls"])
def test_lowered_model_equals_training_form_on_real_photos(name, target, photos_224):
    torch.manual_seed(0)
    model = create_model(name).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    deploy = lower(model, target)
    with torch.no_grad():
        ref, out = model(photos_224), deploy(photos_224)
    assert (ref - out).abs().max().item() <= 1e-4
    assert torch.equal(ref.argmax(1), out.argmax(1))
    # the training model is left as it was
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("class_attention", [False, True])
def test_deploy_graph_has_only_mobile_ops(class_attention):
    deploy = lower(tiny_lvt(class_attention), "executorch")
    graph = torch.export.export(deploy, (torch.randn(1, 3, 64, 64),)).graph
    ops = op_counts(graph)
    for banned in (
        "im2col",
        "col2im",
        "unfold",
        "index",
        "index_put",
        "gather",
        "scatter",
        "layer_norm",
        "native_layer_norm",
        "expand",
        "select",
    ):
        assert ops.get(banned, 0) == 0, banned
    assert max_tensor_rank(graph)[0] <= 4
    # the training form does contain the hazards the lowering removes
    train_graph = torch.export.export(tiny_lvt(class_attention), (torch.randn(1, 3, 64, 64),)).graph
    train_ops = op_counts(train_graph)
    assert train_ops["im2col"] and train_ops["col2im"] and train_ops["layer_norm"] and train_ops["select"]
    assert max_tensor_rank(train_graph)[0] == 5


def test_lower_rejects_unknown_target_and_features_only():
    with pytest.raises(EdgevitError, match="unknown target"):
        lower(tiny_lvt(), "tensorrt")
    with pytest.raises(ValueError, match="features_only"):
        lower(create_model("lvt", features_only=True), "executorch")

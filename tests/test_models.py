"""The training form: faithful sizes, official state_dict keys, features, train mode, input checks."""

from __future__ import annotations

import pytest
import torch

from edgevit.errors import EdgevitError
from edgevit.models import check_input_size, create_model

from .conftest import tiny_lvt

# parameter counts of the official implementation (notes/models.md)
OFFICIAL_PARAMS = {"lvt": 3.687e6, "lvt_cls": 5.522e6}


@pytest.mark.parametrize("name", sorted(OFFICIAL_PARAMS))
def test_parameter_count_matches_official(name):
    model = create_model(name)
    params = sum(p.numel() for p in model.parameters())
    assert abs(params - OFFICIAL_PARAMS[name]) / OFFICIAL_PARAMS[name] < 1e-3


def test_state_dict_keys_follow_official_layout():
    sd = create_model("lvt_cls").state_dict()
    assert len(sd) == 179  # the official lvt_cls checkpoint holds 179 tensors
    expected = {
        "cls_token": (1, 1, 256),
        "backbone.0.0.proj.weight": (64, 3, 7, 7),
        "backbone.0.1.0.attn.attn.weight": (162, 64),
        "backbone.0.1.0.attn.weight.weight": (576, 64, 1, 1),
        "backbone.0.1.1.mlp.fc1.weight": (256, 64),
        "backbone.1.1.0.attn.q.weight": (64, 64),
        "backbone.1.1.0.attn.kv.weight": (128, 64),
        "backbone.1.1.0.attn.ds.weight": (64, 1, 3, 3),
        "backbone.1.1.0.attn.sr.weight": (64, 64, 4, 4),
        "backbone.2.1.1.attn.norm.weight": (160,),
        "backbone.1.1.0.mlp.fc1.weight": (512, 64, 1, 1),
        "backbone.1.1.0.mlp.depconv.weight": (512, 1, 3, 3),
        "post_network.1.attn.kv.weight": (512, 256),
        "post_network.0.mlp.fc2.bias": (256,),
        "aux_head.weight": (1000, 256),
        "head.weight": (1000, 256),
        "norm.weight": (256,),
    }
    for key, shape in expected.items():
        assert tuple(sd[key].shape) == shape, key
    # no bias on q/kv/ds (qkv_bias=False), no sr in stage 4 (sr_ratio 1)
    assert "backbone.1.1.0.attn.q.bias" not in sd and "backbone.1.1.0.attn.ds.bias" not in sd
    assert not any(k.startswith("backbone.3.1.0.attn.sr") for k in sd)
    lvt_keys = set(create_model("lvt").state_dict())
    assert lvt_keys == {k for k in sd if not k.startswith(("post_network", "aux_head", "cls_token"))}


@pytest.mark.parametrize("size", [64, 96])
def test_features_only_returns_four_nchw_stages(size):
    model = create_model("lvt", features_only=True).eval()
    with torch.no_grad():
        feats = model(torch.randn(1, 3, size, size))
    assert [tuple(f.shape) for f in feats] == [
        (1, c, size // r, size // r) for c, r in zip((64, 64, 160, 256), (4, 8, 16, 32), strict=True)
    ]


def test_train_mode_drops_paths_and_backpropagates():
    torch.manual_seed(0)
    from edgevit.models.lvt import LVT

    from .conftest import TINY

    model = LVT(TINY, drop_path_rate=0.5, drop_rate=0.1).train()
    x = torch.randn(2, 3, 64, 64)
    a, b = model(x), model(x)
    assert not torch.allclose(a, b)  # stochastic in train mode
    a.sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))


def test_class_attention_output_combines_cls_and_aux_logits():
    model = tiny_lvt(class_attention=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        tokens = model.forward_features(x)
        B, _, _, C = tokens.shape
        seq = torch.cat([model.cls_token.expand(B, -1, -1), tokens.reshape(B, -1, C)], 1)
        for blk in model.post_network:
            seq = blk(seq)
        seq = model.norm(seq)
        expected = model.head(seq[:, 0]) + 0.5 * model.aux_head(seq[:, 1:]).max(1)[0]
        torch.testing.assert_close(model(x), expected)


@pytest.mark.parametrize("size", [0, 100, 225, -32])
def test_input_size_must_be_multiple_of_32(size):
    with pytest.raises(EdgevitError, match="multiple of 32"):
        check_input_size("lvt", size)


def test_unknown_model_lists_known_ones():
    with pytest.raises(EdgevitError, match="lvt_cls"):
        create_model("lvt_tiny")


def test_reset_classifier_changes_outputs():
    model = create_model("lvt_cls")
    model.reset_classifier(7)
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 3, 64, 64)).shape == (1, 7)

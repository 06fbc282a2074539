"""Each exact op rewrite against the op it replaces (fp32, max abs diff <= 1e-5), plus refusals."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from edgevit.lowering.ops import (
    ChannelLayerNorm,
    GroupedLayerNorm,
    LinearLayerNorm,
    fold_k3s2p1_nchw,
    fold_k3s2p1_nhwc,
    linear_silu,
    max_pool_edge_padded,
    spatial_mean_nhwc,
)

TOL = dict(atol=1e-5, rtol=0)


@pytest.mark.parametrize("shape", [(2, 7, 5, 24), (3, 10, 64), (1, 64)])
def test_linear_layer_norm_matches_layer_norm(shape):
    torch.manual_seed(0)
    ln = nn.LayerNorm(shape[-1], eps=1e-6)
    nn.init.normal_(ln.weight)
    nn.init.normal_(ln.bias)
    x = torch.randn(shape) * 3 + 1
    torch.testing.assert_close(LinearLayerNorm.from_module(ln)(x), ln(x), **TOL)


def test_grouped_norm_normalises_each_group_then_applies_the_whole_affine():
    torch.manual_seed(0)
    groups, dim = 3, 8
    weight, bias = torch.randn(groups * dim), torch.randn(groups * dim)
    x = torch.randn(2, 5, groups * dim) * 3 + 1
    per_group = F.layer_norm(x.reshape(2, 5, groups, dim), (dim,), eps=1e-6).reshape(2, 5, groups * dim)
    expected = per_group * weight + bias
    grouped = LinearLayerNorm(dim, 1e-6, weight, bias)
    assert grouped.groups == groups
    torch.testing.assert_close(grouped(x), expected, **TOL)
    native = grouped.to_layer_norm()  # what ONNX gets
    assert isinstance(native, GroupedLayerNorm)
    torch.testing.assert_close(native(x), expected, **TOL)
    with pytest.raises(ValueError, match="multiple of 8"):
        LinearLayerNorm(dim, 1e-6, torch.ones(12), torch.zeros(12))


def test_linear_layer_norm_refuses_non_affine():
    with pytest.raises(ValueError, match="affine"):
        LinearLayerNorm.from_module(nn.LayerNorm(8, elementwise_affine=False))


@pytest.mark.parametrize("hw", [(8, 8), (4, 6), (2, 2)])
def test_phase_fold_is_col2im(hw):
    torch.manual_seed(0)
    B, C = 2, 3
    h, w = hw
    z = torch.randn(B, C, 9, h, w)  # per channel and tap, one map over patch positions
    ref = F.fold(z.reshape(B, C * 9, h * w), (2 * h, 2 * w), 3, padding=1, stride=2)
    taps = [z[:, :, t].permute(0, 2, 3, 1) for t in range(9)]
    out = fold_k3s2p1_nhwc(taps).permute(0, 3, 1, 2)
    torch.testing.assert_close(out, ref, **TOL)


def test_phase_fold_detects_a_wrong_tap_order():
    # negative case: the identity depends on the tap order, so a transposed order must not match
    torch.manual_seed(0)
    z = torch.randn(1, 2, 9, 4, 4)
    ref = F.fold(z.reshape(1, 18, 16), (8, 8), 3, padding=1, stride=2)
    order = [0, 3, 6, 1, 4, 7, 2, 5, 8]
    taps = [z[:, :, t].permute(0, 2, 3, 1) for t in order]
    assert (fold_k3s2p1_nhwc(taps).permute(0, 3, 1, 2) - ref).abs().max() > 1e-2


def test_channel_layer_norm_is_layer_norm_over_channels():
    torch.manual_seed(0)
    ln = nn.LayerNorm(24, eps=1e-6)
    nn.init.normal_(ln.weight)
    nn.init.normal_(ln.bias)
    x = torch.randn(2, 24, 5, 7) * 3 + 1
    ref = ln(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
    torch.testing.assert_close(ChannelLayerNorm.from_module(ln)(x), ref, **TOL)
    with pytest.raises(ValueError, match="affine"):
        ChannelLayerNorm.from_module(nn.LayerNorm(8, elementwise_affine=False))


@pytest.mark.parametrize("hw", [(8, 8), (4, 6), (1, 3)])
def test_channels_first_phase_fold_is_col2im(hw):
    torch.manual_seed(0)
    B, C = 2, 3
    h, w = hw
    z = torch.randn(B, C, 9, h, w)
    ref = F.fold(z.reshape(B, C * 9, h * w), (2 * h, 2 * w), 3, padding=1, stride=2)
    torch.testing.assert_close(fold_k3s2p1_nchw([z[:, :, t] for t in range(9)]), ref, **TOL)
    swapped = [0, 3, 6, 1, 4, 7, 2, 5, 8]  # rows and columns of the taps exchanged: must not match
    assert (fold_k3s2p1_nchw([z[:, :, t] for t in swapped]) - ref).abs().max() > 1e-2


def test_spatial_mean_and_silu():
    x = torch.randn(2, 5, 6, 7)
    torch.testing.assert_close(spatial_mean_nhwc(x), x.mean(dim=(1, 2)), **TOL)
    torch.testing.assert_close(linear_silu(x), F.silu(x), **TOL)


@pytest.mark.parametrize("kernel,stride,padding", [(3, 2, 1), (5, 4, 2), (3, 1, 1), (2, 2, 1)])
def test_edge_padded_max_pool_equals_max_pool(kernel, stride, padding):
    torch.manual_seed(0)
    for h in range(2, 10):
        for w in (2, 5, 8):
            x = torch.randn(2, 3, h, w)
            expected = F.max_pool2d(x, kernel, stride, padding)
            torch.testing.assert_close(max_pool_edge_padded(x, kernel, stride, padding), expected, atol=0, rtol=0)
    with pytest.raises(ValueError, match="padding < kernel"):
        max_pool_edge_padded(x, 2, 2, 2)

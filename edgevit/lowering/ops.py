"""Exact op rewrites shared by every architecture's deploy form.

Each rewrite computes the same function as the op it replaces (fp32, up to rounding) using only ops that
XNNPACK, Core ML and LiteRT delegate: linear/conv, bmm, elementwise, softmax on the last axis, stride-1
slices, constant pads and concatenation, with every tensor at rank <= 4. The equivalence tests live in
tests/test_lowering_ops.py.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "LinearLayerNorm",
    "GroupedLayerNorm",
    "ShortRowSoftmax",
    "linear_silu",
    "fold_k3s2p1_nhwc",
    "PhaseFold",
    "fold_k3s2p1_nchw",
    "spatial_mean_nhwc",
    "ChannelLayerNorm",
    "HeadChannelLayerNorm",
    "attend_channels_first",
    "max_pool_edge_padded",
]


class LinearLayerNorm(nn.Module):
    """LayerNorm over the last axis with both reductions written as a Linear to one feature.

    ExecuTorch's XNNPACK delegate takes neither ``native_layer_norm`` nor ``mean`` over the last axis, but
    it takes a fully-connected layer: mean(x) = x @ (1/C) and var(x) + eps = (x - mean)^2 @ (1/C) + eps, the
    epsilon as that layer's bias (one op fewer, and a constant that follows the model's dtype).

    An affine ``groups`` times ``dim`` long normalises each ``dim``-wide group of the last axis on its own
    (attention heads side by side, each with the per-head norm of MViTv2's pooling) before the affine.
    """

    def __init__(self, dim: int, eps: float, weight: torch.Tensor, bias: torch.Tensor) -> None:
        super().__init__()
        if weight.shape != bias.shape or weight.shape[0] % dim:
            raise ValueError(f"the affine must be a multiple of {dim} long, got {tuple(weight.shape)}")
        self.eps = eps
        self.groups = weight.shape[0] // dim
        self.register_buffer("mean_weight", torch.full((1, dim), 1.0 / dim))
        self.register_buffer("eps_bias", torch.full((1,), float(eps)))
        self.weight = nn.Parameter(weight.detach().clone())
        self.bias = nn.Parameter(bias.detach().clone())

    @classmethod
    def from_module(cls, norm: nn.LayerNorm) -> LinearLayerNorm:
        if len(norm.normalized_shape) != 1 or not norm.elementwise_affine:
            raise ValueError("only an affine LayerNorm over the last axis is supported")
        return cls(norm.normalized_shape[0], norm.eps, norm.weight, norm.bias)

    def to_layer_norm(self) -> nn.Module:
        """The native op again, for targets that take it (Core ML, ONNX) or fuse it (coremltools crashes
        on this form's Linear-to-one-feature in ``fuse_linear_bias``)."""
        if self.groups > 1:
            return GroupedLayerNorm(self.mean_weight.shape[1], self.eps, self.weight, self.bias)
        norm = nn.LayerNorm(self.weight.shape[0], eps=self.eps)
        with torch.no_grad():
            norm.weight.copy_(self.weight)
            norm.bias.copy_(self.bias)
        return norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        if self.groups > 1:  # each group of the last axis normalised on its own, as rows of (B, N*groups, dim)
            x = x.reshape(shape[0], -1, self.mean_weight.shape[1])
        centered = x - F.linear(x, self.mean_weight)
        normalized = centered * torch.rsqrt(F.linear(centered * centered, self.mean_weight, self.eps_bias))
        if self.groups > 1:
            normalized = normalized.reshape(shape)
        return normalized * self.weight + self.bias


class GroupedLayerNorm(nn.Module):
    """Native LayerNorm over each ``dim``-wide group of the last axis, then one affine over the whole axis:
    a grouped :class:`LinearLayerNorm` for targets with a LayerNorm op."""

    def __init__(self, dim: int, eps: float, weight: torch.Tensor, bias: torch.Tensor) -> None:
        super().__init__()
        self.dim, self.eps = dim, eps
        self.weight = nn.Parameter(weight.detach().clone())
        self.bias = nn.Parameter(bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        normalized = F.layer_norm(x.reshape(shape[0], -1, self.dim), (self.dim,), eps=self.eps)
        return normalized.reshape(shape) * self.weight + self.bias


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channel axis of an NCHW map: a token LayerNorm with no layout change.

    Core ML (and the Neural Engine) work channels-first; normalising dim 1 in place saves the two
    transposes a last-axis LayerNorm would need around it.
    """

    def __init__(self, dim: int, eps: float, weight: torch.Tensor, bias: torch.Tensor) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(weight.detach().clone().reshape(1, dim, 1, 1))
        self.bias = nn.Parameter(bias.detach().clone().reshape(1, dim, 1, 1))

    @classmethod
    def from_module(cls, norm: nn.LayerNorm | LinearLayerNorm) -> ChannelLayerNorm:
        if isinstance(norm, nn.LayerNorm) and (len(norm.normalized_shape) != 1 or not norm.elementwise_affine):
            raise ValueError("only an affine LayerNorm over the last axis is supported")
        return cls(norm.weight.shape[0], norm.eps, norm.weight, norm.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        centered = x - x.mean(dim=1, keepdim=True)
        var = (centered * centered).mean(dim=1, keepdim=True)
        return centered * torch.rsqrt(var + self.eps) * self.weight + self.bias


class HeadChannelLayerNorm(nn.Module):
    """:class:`ChannelLayerNorm` of each head's channels on their own: heads side by side on dim 1 share
    one ``d``-wide norm (the per-head norm of MViTv2's pooling)."""

    def __init__(self, heads: int, norm: ChannelLayerNorm) -> None:
        super().__init__()
        self.heads, self.norm = heads, norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, *rest = x.shape
        return self.norm(x.reshape(B * self.heads, C // self.heads, *rest)).reshape(B, C, *rest)


def attend_channels_first(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: Callable | None = None
) -> torch.Tensor:
    """Softmax attention on channels-first heads: q (G, d, N), k and v (G, d, M) -> (G, d, N).

    Scores are laid out keys x queries and normalised over the keys (dim 1), so the values multiply
    them as they are; only k is transposed, and the Core ML converter folds that into the matmul.
    ``bias(logits, q)`` adds a term to the (G, M, N) logits before the softmax.
    """
    logits = torch.matmul(k.transpose(1, 2), q)  # G, M, N
    if bias is not None:
        logits = bias(logits, q)
    return torch.matmul(v, logits.softmax(dim=1))


def max_pool_edge_padded(x: torch.Tensor, kernel: int, stride: int, padding: int) -> torch.Tensor:
    """``F.max_pool2d`` with implicit -inf padding, written as edge replication (concatenated edge slices)
    and an unpadded pool.

    Every window that covers a padded cell also covers the edge cell it replicates (padding < kernel), so
    the maximum is the same; LiteRT's XNNPACK delegate does not take the PADV2 (-inf pad) the converter
    would emit, and that op would split the graph into partitions.
    """
    if padding >= kernel:
        raise ValueError("edge padding equals -inf padding only when padding < kernel")
    for dim in (2, 3):
        n = x.shape[dim]
        # the far edge is padded only as far as the pool reads it
        far = max(0, ((n + 2 * padding - kernel) // stride) * stride + kernel - padding - n)
        parts = [x.narrow(dim, 0, 1)] * padding + [x] + [x.narrow(dim, n - 1, 1)] * far
        x = torch.cat(parts, dim=dim) if len(parts) > 1 else x
    return F.max_pool2d(x, kernel, stride)


def linear_silu(x: torch.Tensor) -> torch.Tensor:
    """SiLU as x * sigmoid(x): ``silu`` has no XNNPACK node in ExecuTorch, sigmoid and mul do."""
    return x * torch.sigmoid(x)


class ShortRowSoftmax(nn.Module):
    """Softmax over a short last axis (CSA's 9 taps) as max, sub, exp, a Linear sum and a divide.

    XNNPACK's softmax operator pays a fixed cost per row, which dominates when rows hold 9 values
    (CSA has L*heads*9 of them); these five element-wise passes do not. Input and output are rank 4.
    """

    def __init__(self, length: int) -> None:
        super().__init__()
        self.register_buffer("ones", torch.ones(1, length))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e = torch.exp(x - torch.max(x, dim=3, keepdim=True)[0])  # XNNPACK reduces dim 2 or 3 of rank 4
        return e / F.linear(e, self.ones)


def _shift_up(x: torch.Tensor, dim: int) -> torch.Tensor:
    """out[i] = x[i + 1] along ``dim`` (1 = rows, 2 = cols of an NHWC tensor), zero at the far edge."""
    size = x.shape[dim]
    moved = x.narrow(dim, 1, size - 1)
    pad = [0, 0, 0, 0, 0, 0]
    pad[2 * (3 - dim) + 1] = 1  # F.pad lists the last axis first
    return F.pad(moved, pad)


def _interleave(even: torch.Tensor, odd: torch.Tensor, dim: int) -> torch.Tensor:
    """Interleave two NHWC maps along rows (dim 1) or cols (dim 2): out[2i] = even[i], out[2i+1] = odd[i]."""
    B, h, w, C = even.shape
    if dim == 2:
        pair = torch.cat([even.reshape(B * h, w, 1, C), odd.reshape(B * h, w, 1, C)], dim=2)
        return pair.reshape(B, h, 2 * w, C)
    pair = torch.cat([even.reshape(B, h, 1, w * C), odd.reshape(B, h, 1, w * C)], dim=2)
    return pair.reshape(B, 2 * h, w, C)


class TapLinear(nn.Module):
    """A separate (C_in -> C_out) Linear per tap, applied to each tap's map: a list in, a list out.

    Per-tap Linears rather than one ``bmm`` over a stacked tap axis: no copy to stack the taps, and the
    int8 quantizers annotate Linear weights (XNNPACK runs a constant-operand ``bmm`` in float)."""

    def __init__(self, taps: int, dim: int) -> None:
        super().__init__()
        self.maps = nn.ModuleList(nn.Linear(dim, dim, bias=False) for _ in range(taps))

    def forward(self, taps: list[torch.Tensor]) -> list[torch.Tensor]:
        return [linear(tap) for linear, tap in zip(self.maps, taps, strict=True)]


class PhaseFold(nn.Module):
    """:func:`fold_k3s2p1_nhwc` as a module, so quantizers can keep it float by type (its shifts are pads
    whose int8 form XNNPACK refuses when input and output scales differ)."""

    def forward(self, taps: list[torch.Tensor]) -> torch.Tensor:
        return fold_k3s2p1_nhwc(taps)


def fold_k3s2p1_nhwc(taps: list[torch.Tensor]) -> torch.Tensor:
    """Overlap-add of 3x3 patches taken at stride 2 with padding 1 (``F.fold``), without col2im or scatter.

    ``taps[ki*3 + kj]`` is the (B, h, w, C) map of tap (ki, kj); the output is (B, 2h, 2w, C) NHWC.
    Output row 2m takes tap row 1 of patch m; row 2m+1 takes tap row 2 of patch m and tap row 0 of patch
    m+1 (the same for columns). So each of the four output phases is a sum of shifted taps, and the phases
    interleave by a concat + reshape (depth-to-space), which costs no MACs.
    """
    t = taps

    def cols(k_row: int) -> tuple[torch.Tensor, torch.Tensor]:
        # even cols: tap col 1; odd cols: tap col 2 of patch n + tap col 0 of patch n+1
        even = t[k_row * 3 + 1]
        odd = t[k_row * 3 + 2] + _shift_up(t[k_row * 3 + 0], dim=2)
        return even, odd

    r1_even, r1_odd = cols(1)
    r2_even, r2_odd = cols(2)
    r0_even, r0_odd = cols(0)
    even_rows = _interleave(r1_even, r1_odd, dim=2)
    odd_rows = _interleave(r2_even + _shift_up(r0_even, dim=1), r2_odd + _shift_up(r0_odd, dim=1), dim=2)
    return _interleave(even_rows, odd_rows, dim=1)


def _next_nchw(x: torch.Tensor, dim: int) -> torch.Tensor:
    """out[i] = x[i + 1] along ``dim`` (2 = rows, 3 = cols of an NCHW map), zero at the far edge."""
    moved = x.narrow(dim, 1, x.shape[dim] - 1)
    return F.pad(moved, (0, 1) if dim == 3 else (0, 0, 0, 1))


def fold_k3s2p1_nchw(taps: list[torch.Tensor]) -> torch.Tensor:
    """:func:`fold_k3s2p1_nhwc` for (B, C, h, w) taps: the four output phases, interleaved by ``pixel_shuffle``.

    Phase (row parity r, col parity s) is a sum of shifted taps (see the NHWC form); stacking the phases as
    channel ``c*4 + 2r + s`` makes the interleave one depth-to-space op, which Core ML has natively.
    """
    t = taps
    even_even = t[4]
    even_odd = t[5] + _next_nchw(t[3], 3)
    odd_even = t[7] + _next_nchw(t[1], 2)
    odd_odd = t[8] + _next_nchw(t[6], 3) + _next_nchw(t[2] + _next_nchw(t[0], 3), 2)
    B, C, h, w = even_even.shape
    phases = [p.reshape(B, C, 1, h * w) for p in (even_even, even_odd, odd_even, odd_odd)]
    return F.pixel_shuffle(torch.cat(phases, dim=2).reshape(B, 4 * C, h, w), 2)


def spatial_mean_nhwc(x: torch.Tensor) -> torch.Tensor:
    """Mean over H and W of an NHWC map, as a global average pool (the mean form XNNPACK delegates)."""
    return x.permute(0, 3, 1, 2).mean(dim=(2, 3), keepdim=True).flatten(1)

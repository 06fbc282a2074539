"""The deploy layouts a target can ask for (``Target.layout``): the strategy every deploy form is written over.

A deploy form calls its layout for everything that depends on where the channels sit: the layer a Linear
becomes, the norm, slicing and joining tokens, splitting heads, the attention products, pooling. The forms
each call makes are the ones measured fastest on the layout's runtimes; keep them op for op.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import EdgevitError
from .ops import (
    ChannelLayerNorm,
    HeadChannelLayerNorm,
    LinearLayerNorm,
    attend_channels_first,
    linear_silu,
    max_pool_edge_padded,
    spatial_mean_nhwc,
)
from .weights import conv1x1_from, linear_from

Grid = tuple[int, int]


@dataclass(frozen=True)
class Layout:
    """How a deploy form lays out its tensors and which normalisation ops it may use.

    ``channels_first``: (B, C, H, W) / (B, C, 1, N) from image to logits, Linear layers as 1x1 convs (Core ML
    and the Neural Engine, where every transpose is a memory copy); otherwise tokens last, (B, H, W, C) /
    (B, N, C), the layout XNNPACK's fully connected ops read without copies.
    ``native_norm``: LayerNorm as the runtime's own op; otherwise as Linear reductions, which XNNPACK delegates.

    Each layout (:class:`TokensLast`, :class:`ChannelsFirst`; the first documents every operation) builds the
    layers (``linear``, ``norm``, ``head_norm``), moves tokens (``to_map``/``from_map``, ``flatten_tokens``/
    ``unflatten_tokens``, ``attention_tokens``, ``channels``, ``token_param``) and gives the attention
    products (``split_heads``, ``split_keys``, ``keys_from_heads``, ``one_token_heads``, ``attend``,
    ``merge_heads``) and reductions (``silu``, ``spatial_mean``, ``max_over_tokens``, ``max_pool``).
    """

    name: str
    channels_first: bool
    native_norm: bool

    token_axis: ClassVar[int]
    fuse_projections: ClassVar[bool]  # Q/K/V that pool alike as one layer (fewer nodes for ExecuTorch)

    def tokens(self, x: torch.Tensor, start: int, stop: int | None = None) -> torch.Tensor:
        """Tokens ``start:stop`` by a stride-1 slice (``select`` has no XNNPACK node)."""
        return x[(slice(None),) * self.token_axis + (slice(start, stop),)]

    def cat_tokens(self, parts: Sequence[torch.Tensor]) -> torch.Tensor:
        return torch.cat(list(parts), dim=self.token_axis)

    def pad_front_token(self, x: torch.Tensor) -> torch.Tensor:
        """A zero token in front of a row of tokens."""
        return F.pad(x, (0, 0) * (x.dim() - 1 - self.token_axis) + (1, 0))


def one_image(batch: int | torch.SymInt) -> bool:
    """A batch of exactly one, as every export traces it; a traced dynamic batch (QAT's) is not one."""
    return isinstance(batch, int) and batch == 1


@dataclass(frozen=True)
class TokensLast(Layout):
    """(B, H, W, C) / (B, N, C): Linear layers, attention as 3-D ``bmm`` on (B*heads, N, d).

    ``query_halves`` (LiteRT): a product with one batch (one image, one head) runs as two, over the top and
    bottom halves of the queries. LiteRT's converter rewrites a one-batch ``q @ k^T`` into a FULLY_CONNECTED
    whose weights are the keys, a tensor computed at run time, which its XNNPACK delegate leaves to the
    interpreter: the graph splits around every such product.
    """

    token_axis: ClassVar[int] = 1
    fuse_projections: ClassVar[bool] = True
    query_halves: bool = False

    def linear(self, weight: torch.Tensor, bias: torch.Tensor | None = None) -> nn.Module:
        """A fresh layer computing ``x @ weight.T + bias`` on this layout's channel axis."""
        return linear_from(weight, bias)

    def norm(self, norm: nn.LayerNorm) -> nn.Module:
        """The LayerNorm ``norm`` over this layout's channel axis."""
        return self._native(LinearLayerNorm.from_module(norm))

    def head_norm(self, parts: Sequence[tuple[nn.LayerNorm, float]], heads: int) -> nn.Module:
        """Per-head norms of one or more projections side by side on the channel axis, each ``(norm, scale)``
        normalising every ``heads`` slice of its part on its own, its affine multiplied by ``scale``."""
        weight = torch.cat([n.weight.repeat(heads) * s for n, s in parts])
        bias = torch.cat([n.bias.repeat(heads) * s for n, s in parts])
        first = parts[0][0]
        return self._native(LinearLayerNorm(first.normalized_shape[0], first.eps, weight, bias))

    def _native(self, norm: LinearLayerNorm) -> nn.Module:
        return norm.to_layer_norm() if self.native_norm else norm

    def silu(self, x: torch.Tensor) -> torch.Tensor:
        """SiLU in the form the runtime delegates."""
        return linear_silu(x)

    def to_map(self, x: torch.Tensor) -> torch.Tensor:
        """A spatial map in this layout as the (B, C, H, W) map a conv takes."""
        return x.permute(0, 3, 1, 2)

    def from_map(self, x: torch.Tensor) -> torch.Tensor:
        """A conv's (B, C, H, W) output as a spatial map in this layout."""
        # XNNPACK holds a conv's output NHWC, so this permute moves no data in the delegate
        return x.permute(0, 2, 3, 1)

    def flatten_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """A spatial map in this layout as a row of tokens."""
        return x.reshape(x.shape[0], -1, x.shape[-1])

    def attention_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """A spatial map as the keys' and values' projections read it."""
        return self.flatten_tokens(x)  # Linear layers on (B, N, C) rows

    def unflatten_tokens(self, x: torch.Tensor, grid: Grid) -> torch.Tensor:
        """A row of tokens as a spatial map in this layout."""
        return x.reshape(x.shape[0], grid[0], grid[1], x.shape[-1])

    def token_param(self, tokens: torch.Tensor) -> nn.Parameter:
        """A fresh parameter of (1, N, C) learned tokens (CLS, position embeddings) in this layout."""
        return nn.Parameter(tokens.detach().clone())

    def channels(self, x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """Channels ``start:stop`` of tokens or a map, by a stride-1 slice."""
        return x[..., start:stop]

    def split_heads(self, x: torch.Tensor, heads: int) -> torch.Tensor:
        """Queries or values per head, as :meth:`attend` takes them."""
        if heads == 1 and x.dim() == 3:
            return x
        B, C = x.shape[0], x.shape[-1]
        d = C // heads
        return x.reshape(B, -1, heads, d).permute(0, 2, 1, 3).reshape(B * heads, -1, d)

    def split_keys(self, x: torch.Tensor, heads: int) -> torch.Tensor:
        """Keys per head, (B*heads, d, M), as :meth:`attend` takes them."""
        B, C = x.shape[0], x.shape[-1]
        d = C // heads
        return x.reshape(B, -1, heads, d).permute(0, 2, 3, 1).reshape(B * heads, d, -1)

    def keys_from_heads(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`split_heads` output as keys, (B*heads, d, M)."""
        return x.transpose(1, 2)

    def one_token_heads(self, x: torch.Tensor, heads: int) -> torch.Tensor:
        """:meth:`split_heads` of a single token, by a reshape alone."""
        return x.reshape(x.shape[0] * heads, 1, x.shape[-1] // heads)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: Callable | None = None) -> torch.Tensor:
        """softmax(q k [+ bias]) v per head (the softmax scale is already in k), laid out as ``q``; ``bias``
        takes the logits, (B*heads, N, M) here, and ``q`` and returns them with its term added."""
        if self.query_halves and one_image(q.shape[0]) and (bias is None or q.shape[1] % 2 == 0):
            return self._attend_query_halves(q, k, v, bias)
        logits = torch.bmm(q, k)
        if bias is not None:
            logits = bias(logits, q)
        return torch.bmm(logits.softmax(dim=-1), v)

    @staticmethod
    def _attend_query_halves(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: Callable | None) -> torch.Tensor:
        """:meth:`attend` for one batch as two: queries (1, N, d) as (2, N/2, d), keys and values broadcast. The
        halves are a reshape of the same rows, so the logits are too, and ``bias`` sees them laid out as before
        (N is even then: its terms follow the query grid); an odd N takes one zero query row, dropped after."""
        N, d = q.shape[1], q.shape[2]
        odd = N % 2
        halves = (F.pad(q, (0, 0, 0, 1)) if odd else q).reshape(2, (N + odd) // 2, d)
        logits = torch.matmul(halves, k)
        if bias is not None:
            logits = bias(logits.reshape(1, N, -1), q).reshape(2, N // 2, -1)
        out = torch.matmul(logits.softmax(dim=-1), v).reshape(1, N + odd, d)
        return out[:, :N] if odd else out

    def merge_heads(self, x: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        """:meth:`attend`'s output as tokens or a map of ``shape``, heads side by side on the channel axis."""
        B = shape[0]
        heads, N, d = x.shape[0] // B, x.shape[1], x.shape[2]
        if heads == 1 and x.shape == shape:
            return x
        return x.reshape(B, heads, N, d).permute(0, 2, 1, 3).reshape(shape)

    def spatial_mean(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C): the mean of a spatial map."""
        return spatial_mean_nhwc(x)

    def max_over_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C): the maximum over a row of tokens."""
        # a rank-4 max.dim with keepdim: the form XNNPACK takes
        B, N, C = x.shape
        return torch.max(x.reshape(B, 1, N, C), dim=2, keepdim=True)[0].reshape(B, -1)

    def max_pool(self, x: torch.Tensor, kernel: int, stride: int, padding: int) -> torch.Tensor:
        """``F.max_pool2d`` of a (B, C, H, W) map, its padding as the runtime takes it."""
        return max_pool_edge_padded(x, kernel, stride, padding)


@dataclass(frozen=True)
class ChannelsFirst(Layout):
    """(B, C, H, W) / (B, C, 1, N): 1x1 convs, heads split off the channel axis, no transposes but the keys'."""

    # Q, K and V as one 1x1 conv each, the Core ML graph as measured
    fuse_projections: ClassVar[bool] = False
    token_axis: ClassVar[int] = 3

    def linear(self, weight: torch.Tensor, bias: torch.Tensor | None = None) -> nn.Module:
        return conv1x1_from(weight, bias)

    def norm(self, norm: nn.LayerNorm) -> nn.Module:
        return ChannelLayerNorm.from_module(norm)

    def head_norm(self, parts: Sequence[tuple[nn.LayerNorm, float]], heads: int) -> nn.Module:
        if len(parts) != 1:
            raise ValueError("channels-first projections pool one at a time")
        norm, scale = parts[0]
        channel_norm = ChannelLayerNorm(norm.weight.shape[0], norm.eps, norm.weight * scale, norm.bias * scale)
        return HeadChannelLayerNorm(heads, channel_norm)

    def silu(self, x: torch.Tensor) -> torch.Tensor:
        return F.silu(x)

    def to_map(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def from_map(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def flatten_tokens(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], x.shape[1], 1, -1)

    def attention_tokens(self, x: torch.Tensor) -> torch.Tensor:
        return x  # 1x1 convs read the map; heads split from it by a reshape

    def unflatten_tokens(self, x: torch.Tensor, grid: Grid) -> torch.Tensor:
        return x.reshape(x.shape[0], x.shape[1], *grid)

    def token_param(self, tokens: torch.Tensor) -> nn.Parameter:
        return nn.Parameter(tokens.detach().clone().transpose(1, 2).unsqueeze(2))  # 1, C, 1, N

    def channels(self, x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        return x[:, start:stop]

    def split_heads(self, x: torch.Tensor, heads: int) -> torch.Tensor:
        return x.reshape(x.shape[0] * heads, x.shape[1] // heads, -1)

    def split_keys(self, x: torch.Tensor, heads: int) -> torch.Tensor:
        return self.split_heads(x, heads)

    def keys_from_heads(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def one_token_heads(self, x: torch.Tensor, heads: int) -> torch.Tensor:
        return self.split_heads(x, heads)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: Callable | None = None) -> torch.Tensor:
        return attend_channels_first(q, k, v, bias)  # logits (G, M, N): keys by queries

    def merge_heads(self, x: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        return x.reshape(shape)

    def spatial_mean(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))

    def max_over_tokens(self, x: torch.Tensor) -> torch.Tensor:
        return x.amax(dim=3).reshape(x.shape[0], -1)

    def max_pool(self, x: torch.Tensor, kernel: int, stride: int, padding: int) -> torch.Tensor:
        return F.max_pool2d(x, kernel, stride, padding)


LAYOUTS: dict[str, Layout] = {
    layout.name: layout
    for layout in (
        TokensLast("tokens-last", channels_first=False, native_norm=False),
        TokensLast("tokens-last-layernorm", channels_first=False, native_norm=True),
        TokensLast("tokens-last-litert", channels_first=False, native_norm=False, query_halves=True),
        ChannelsFirst("channels-first", channels_first=True, native_norm=True),
    )
}


def get_layout(name: str) -> Layout:
    try:
        return LAYOUTS[name]
    except KeyError:
        raise EdgevitError(f"unknown deploy layout '{name}'; choose one of: {', '.join(LAYOUTS)}") from None

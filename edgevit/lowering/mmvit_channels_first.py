"""Channels-first deploy form of MMViT for Core ML: every view as (B, C, 1, N) columns, no layout copies.

Core ML and the Neural Engine pay a memory copy for every transpose. Here a view's tokens are the columns
of a (B, C, 1, N) tensor (the CLS, where there is one, is column 0): projections are 1x1 convs, LayerNorm
normalises dim 1, heads split off the channel axis by a reshape, the poolings reshape the spatial columns
to the (B, C, H, W) map they already are, and the only transposes left are the keys' (which coremltools
folds into ``matmul``). The plan (dead views, CLS-only final block) is :class:`DeployMMViT`'s.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..models import mmvit as train
from . import register_lowering
from .layout import Layout
from .mmvit import DeployMMViT
from .ops import ChannelLayerNorm, attend_channels_first
from .passes import native_layer_norm
from .weights import conv1x1_from, k_norm_scale, pooling_attention_weights

__all__ = ["ChannelsFirstMMViT"]


def _spatial(x: torch.Tensor, has_cls: bool) -> torch.Tensor:
    return x[..., 1:] if has_cls else x


def _with_cls(x: torch.Tensor, columns: torch.Tensor, has_cls: bool) -> torch.Tensor:
    """``columns`` (B, C, 1, n) behind the CLS column of ``x``, when the view has one."""
    return torch.cat([x[..., :1], columns], dim=3) if has_cls else columns


def _norm_per_head(norm: ChannelLayerNorm, x: torch.Tensor, heads: int) -> torch.Tensor:
    B, C, _, N = x.shape
    return norm(x.reshape(B * heads, C // heads, 1, N)).reshape(B, C, 1, N)


class ChannelsFirstPool(nn.Module):
    """:class:`models.mmvit.Pool` on columns: every head in one depthwise conv on the (B, C, H, W) map."""

    def __init__(self, pool: train.Pool, heads: int, grid: tuple[int, int], has_cls: bool, scale: float = 1.0):
        super().__init__()
        conv, d = pool.conv, pool.conv.in_channels
        self.heads, self.grid, self.has_cls = heads, grid, has_cls
        self.conv = nn.Conv2d(
            d * heads, d * heads, conv.kernel_size, conv.stride, conv.padding, groups=d * heads, bias=False
        )
        self.conv.weight.copy_(conv.weight.repeat(heads, 1, 1, 1))
        self.norm = ChannelLayerNorm(d, pool.norm.eps, pool.norm.weight * scale, pool.norm.bias * scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C = x.shape[:2]
        pooled = self.conv(_spatial(x, self.has_cls).reshape(B, C, *self.grid))
        x = _with_cls(x, pooled.reshape(B, C, 1, -1), self.has_cls)
        return _norm_per_head(self.norm, x, self.heads)

    def cls_only(self, cls: torch.Tensor) -> torch.Tensor:
        """The pooled CLS alone, from its (B, C, 1, 1) column: it skips the conv, so only the norm applies."""
        return _norm_per_head(self.norm, cls, self.heads)


class ChannelsFirstViewAttention(nn.Module):
    """One view's Q/K/V (1x1 convs) and poolings; the softmax scale is folded into K (norm or projection)."""

    def __init__(self, m: train.PoolingAttention, view: int, grid: tuple[int, int], has_cls: bool) -> None:
        super().__init__()
        heads = m.num_heads
        for name, (weight, bias) in pooling_attention_weights(m, view).items():  # q, k, v
            setattr(self, name, conv1x1_from(weight, bias))

        def pool(p: nn.Module, scale: float = 1.0) -> nn.Module:
            return ChannelsFirstPool(p, heads, grid, has_cls, scale) if isinstance(p, train.Pool) else nn.Identity()

        self.pool_q = pool(m.pool_q[view])
        self.pool_k = pool(m.pool_k[view], k_norm_scale(m, view))
        self.pool_v = pool(m.pool_v[view])

    def forward(self, x: torch.Tensor, queries: bool = True):
        q = self.pool_q(self.q(x)) if queries else None
        return q, self.pool_k(self.k(x)), self.pool_v(self.v(x))

    def cls_query(self, x: torch.Tensor) -> torch.Tensor:
        """The CLS column's query alone (column 0 of ``x``)."""
        q = self.q(x[..., :1])
        return self.pool_q.cls_only(q) if isinstance(self.pool_q, ChannelsFirstPool) else q


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, residual: bool) -> torch.Tensor:
    B, C, _, N = q.shape
    G, d = B * heads, C // heads
    qh = q.reshape(G, d, N)
    out = attend_channels_first(qh, k.reshape(G, d, -1), v.reshape(G, d, -1))
    if residual:
        out = out + qh
    return out.reshape(B, C, 1, N)


class ChannelsFirstMlp(nn.Module):
    def __init__(self, m: train.Mlp) -> None:
        super().__init__()
        self.fc1 = conv1x1_from(m.fc1.weight, m.fc1.bias)
        self.fc2 = conv1x1_from(m.fc2.weight, m.fc2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class ChannelsFirstSelfBlock(nn.Module):
    """:class:`models.mmvit.SelfBlock` on columns; ``cls_only`` as in :class:`DeploySelfBlock`."""

    def __init__(self, m: train.SelfBlock, grid: tuple[int, int], has_cls: bool, cls_only: bool = False) -> None:
        super().__init__()
        if cls_only and (m.q_stride > 1 or not has_cls):
            raise ValueError("cls_only needs a block with a CLS token and no Q pooling")
        self.heads, self.residual, self.cls_only = m.attn.num_heads, m.attn.residual_pooling, cls_only
        self.q_stride, self.grid, self.has_cls = m.q_stride, grid, has_cls
        self.norm1 = ChannelLayerNorm.from_module(m.norm1)
        proj = m.shortcut_proj
        self.shortcut_proj = None if proj is None else conv1x1_from(proj.weight, proj.bias)
        self.qkv = ChannelsFirstViewAttention(m.attn, 0, grid, has_cls)
        self.proj = conv1x1_from(m.attn.proj.weight, m.attn.proj.bias)
        self.norm2 = ChannelLayerNorm.from_module(m.norm2)
        self.mlp = ChannelsFirstMlp(m.mlp)

    def shortcut_pool(self, x: torch.Tensor) -> torch.Tensor:
        if self.q_stride == 1:
            return x
        kernel, padding = train.skip_geometry(self.q_stride)
        B, C = x.shape[:2]
        pooled = F.max_pool2d(_spatial(x, self.has_cls).reshape(B, C, *self.grid), kernel, self.q_stride, padding)
        return _with_cls(x, pooled.reshape(B, C, 1, -1), self.has_cls)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_norm = self.norm1(x)
        shortcut = self.shortcut_pool(x if self.shortcut_proj is None else self.shortcut_proj(x_norm))
        if self.cls_only:
            _, k, v = self.qkv(x_norm, queries=False)
            q, shortcut = self.qkv.cls_query(x_norm), shortcut[..., :1]
        else:
            q, k, v = self.qkv(x_norm)
        x = shortcut + self.proj(_attend(q, k, v, self.heads, self.residual))
        return x + self.mlp(self.norm2(x))


class ChannelsFirstCrossBlock(nn.Module):
    """:class:`models.mmvit.CrossBlock` on columns: each live view's queries against all views' K/V."""

    def __init__(self, m: train.CrossBlock, grids: list, has_cls: list, live_views: list[int]) -> None:
        super().__init__()
        self.heads, self.residual, self.live_views = m.attn.num_heads, m.attn.residual_pooling, list(live_views)
        self.norm1 = ChannelLayerNorm.from_module(m.norm1)
        self.views = nn.ModuleList(
            ChannelsFirstViewAttention(m.attn, i, g, c) for i, (g, c) in enumerate(zip(grids, has_cls, strict=True))
        )
        self.proj = conv1x1_from(m.attn.proj.weight, m.attn.proj.bias)
        self.norm2 = ChannelLayerNorm.from_module(m.norm2)
        self.mlp = ChannelsFirstMlp(m.mlp)

    def forward(self, views: list[torch.Tensor]) -> list[torch.Tensor | None]:
        projected = [
            att(self.norm1(x), queries=i in self.live_views)
            for i, (att, x) in enumerate(zip(self.views, views, strict=True))
        ]
        k = torch.cat([k for _, k, _ in projected], dim=3)
        v = torch.cat([v for _, _, v in projected], dim=3)
        outs: list[torch.Tensor | None] = []
        for i, x in enumerate(views):
            if i not in self.live_views:
                outs.append(None)
                continue
            x = x + self.proj(_attend(projected[i][0], k, v, self.heads, self.residual))
            outs.append(x + self.mlp(self.norm2(x)))
        return outs


class ChannelsFirstStem(nn.Module):
    """Conv patch embedding of one view as columns, plus its position embedding (and view 1's CLS)."""

    def __init__(self, stem: train.ViewStem) -> None:
        super().__init__()
        conv = stem.proj
        self.proj = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding)
        self.proj.load_state_dict(conv.state_dict())
        self.grid = stem.grid
        pos = stem.pos_embed.detach().clone().transpose(1, 2).unsqueeze(2)  # 1, C, 1, [1 +] N
        self.has_cls = stem.cls_token is not None
        if self.has_cls:  # the CLS enters as column 0 of a zero column padded in front (no expand, any batch)
            pos[..., :1] += stem.cls_token.detach().transpose(1, 2).unsqueeze(2)
        self.pos_embed = nn.Parameter(pos)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.proj(image)
        B, C, h, w = x.shape
        if (h, w) != self.grid:
            raise ValueError(
                f"this deploy form is built for a {self.grid} token grid, got {(h, w)}; "
                "build the model at the export input size"
            )
        x = x.reshape(B, C, 1, h * w)
        if self.has_cls:
            x = F.pad(x, (1, 0))
        return x + self.pos_embed


class ChannelsFirstMMViT(DeployMMViT):
    """:class:`DeployMMViT` with every view as (B, C, 1, N) columns: no transposes but the keys'."""

    Stem = ChannelsFirstStem
    SelfBlock = ChannelsFirstSelfBlock
    CrossBlock = ChannelsFirstCrossBlock
    Norm = ChannelLayerNorm
    head_from = staticmethod(conv1x1_from)

    def readout(self, columns: torch.Tensor) -> torch.Tensor:
        cls = columns if columns.shape[3] == 1 else columns[..., :1]
        return self.head(self.norm(cls)).reshape(cls.shape[0], -1)


def _build(model: train.MMViT, layout: Layout) -> nn.Module:
    if layout.channels_first:
        return ChannelsFirstMMViT.from_module(model)
    deploy = DeployMMViT.from_module(model)
    return native_layer_norm(deploy) if layout.native_norm else deploy


register_lowering(train.MMViT, _build)

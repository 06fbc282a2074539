"""MViTv2's pooling attention in deploy form (:mod:`models.mmvit`'s ``Pool``, ``PoolingAttention`` and
``SelfBlock``, which MMViT takes from MViTv2), shared by the MMViT and MViTv2 deploy forms.

The rewrites, each exact up to fp32 rounding:
- Q/K/V pooling runs on all heads at once: one depthwise conv whose kernel is the shared per-head kernel
  tiled over heads, then a per-head LayerNorm on (B, N*heads, d); projections that pool alike (K and V, and
  Q in stride-1 blocks) share one Linear, one conv and one norm, and are split by slices (tokens last);
- the softmax scale is folded into K's pooling LayerNorm (or K's projection when K is not pooled), so the
  residual pooling still adds the unscaled Q (and relative positions read it unscaled, as MViTv2's do).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..models import mmvit as train
from .blocks import DeployMlp, multi_head_attention
from .layout import Grid, Layout
from .weights import k_norm_scale, pooling_attention_weights

__all__ = ["DeployPool", "DeployShortcutPool", "DeploySelfBlock", "DeployViewAttention", "through_map"]


def through_map(
    layout: Layout, x: torch.Tensor, grid: Grid, has_cls: bool, op: Callable[[torch.Tensor], torch.Tensor]
) -> torch.Tensor:
    """``op`` on a view's spatial tokens as the (B, C, H, W) map they are, the CLS passed in front by slices."""
    spatial = layout.tokens(x, 1) if has_cls else x
    out = layout.flatten_tokens(layout.from_map(op(layout.to_map(layout.unflatten_tokens(spatial, grid)))))
    return layout.cat_tokens([layout.tokens(x, 0, 1), out]) if has_cls else out


class DeployPool(nn.Module):
    """:class:`models.mmvit.Pool` on a view's tokens: the poolings of one or more projections laid side by
    side (``pools``, all of one geometry), every head of every part in one depthwise conv and one norm.
    ``scales`` multiply each part's norm affine (the softmax scale for K)."""

    def __init__(
        self,
        pools: train.Pool | list[train.Pool],
        heads: int,
        grid: Grid,
        has_cls: bool,
        layout: Layout,
        scales: list[float] | None = None,
    ):
        super().__init__()
        pools = pools if isinstance(pools, list) else [pools]
        scales = scales or [1.0] * len(pools)
        conv = pools[0].conv
        if any(_geometry(p) != _geometry(pools[0]) for p in pools):
            raise ValueError("poolings run together only when they share kernel, stride and padding")
        channels = conv.in_channels * heads * len(pools)
        self.layout, self.grid, self.has_cls = layout, grid, has_cls
        self.conv = nn.Conv2d(
            channels, channels, conv.kernel_size, conv.stride, conv.padding, groups=channels, bias=False
        )
        self.conv.weight.copy_(torch.cat([p.conv.weight.repeat(heads, 1, 1, 1) for p in pools]))
        self.norm = layout.head_norm([(p.norm, s) for p, s in zip(pools, scales, strict=True)], heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(through_map(self.layout, x, self.grid, self.has_cls, self.conv))

    def cls_only(self, cls: torch.Tensor) -> torch.Tensor:
        """The pooled CLS alone, from its token: the CLS skips the conv, so only the norm applies."""
        return self.norm(cls)


def _geometry(pool: nn.Module) -> tuple | None:
    """What must match for poolings to run as one conv; None for no pooling."""
    if not isinstance(pool, train.Pool):
        return None
    conv = pool.conv
    return conv.kernel_size, conv.stride, conv.padding


class DeployViewAttention(nn.Module):
    """One view's Q/K/V projections and poolings, from a training :class:`PoolingAttention` (view ``view``).

    Tokens last, projections whose poolings share a geometry (K and V always; Q too where it pools like them,
    as in every stride-1 block) run as one Linear, one depthwise conv and one norm, then split by slices: far
    fewer nodes than one chain each, which ExecuTorch lowers proportionally faster.
    ``queries``: "all"; "cls" (the CLS token's query alone, see :meth:`cls_query`); "none".
    """

    def __init__(
        self,
        m: train.PoolingAttention,
        view: int,
        grid: Grid,
        has_cls: bool,
        layout: Layout,
        queries: str = "all",
    ) -> None:
        super().__init__()
        if queries not in ("all", "cls", "none"):
            raise ValueError(f"queries must be 'all', 'cls' or 'none', got {queries!r}")
        heads = m.num_heads
        self.dim = m.proj.in_features
        weights = pooling_attention_weights(m, view)  # q, k, v
        pools = {"q": m.pool_q[view], "k": m.pool_k[view], "v": m.pool_v[view]}
        scales = {"q": 1.0, "k": k_norm_scale(m, view), "v": 1.0}

        def pool(names: list[str]) -> nn.Module:
            if _geometry(pools[names[0]]) is None:
                return nn.Identity()
            return DeployPool([pools[n] for n in names], heads, grid, has_cls, layout, [scales[n] for n in names])

        groups: dict[object, list[str]] = {}
        for name in ("q", "k", "v") if queries == "all" else ("k", "v"):
            groups.setdefault(_geometry(pools[name]) if layout.fuse_projections else name, []).append(name)
        self.parts = [tuple(names) for names in groups.values()]
        self.projections = nn.ModuleList(
            layout.linear(torch.cat([weights[n][0] for n in names]), torch.cat([weights[n][1] for n in names]))
            for names in self.parts
        )
        self.pools = nn.ModuleList(pool(list(names)) for names in self.parts)
        self.layout = layout
        if queries == "cls":
            self.q = layout.linear(*weights["q"])
            self.pool_q = pool(["q"])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for names, projection, pool in zip(self.parts, self.projections, self.pools, strict=True):
            y = pool(projection(x))
            for i, name in enumerate(names):
                out[name] = y if len(names) == 1 else self.layout.channels(y, i * self.dim, (i + 1) * self.dim)
        return out.get("q"), out["k"], out["v"]

    def cls_query(self, x: torch.Tensor) -> torch.Tensor:
        """The CLS token's query alone (``x`` starts with the CLS)."""
        q = self.q(self.layout.tokens(x, 0, 1))
        return self.pool_q.cls_only(q) if isinstance(self.pool_q, DeployPool) else q


class DeployShortcutPool(nn.Module):
    """The max-pooled residual of a Q-strided block, CLS passed through by slices."""

    def __init__(self, stride: int, grid: Grid, has_cls: bool, layout: Layout) -> None:
        super().__init__()
        self.kernel, self.padding = train.skip_geometry(stride)
        self.stride, self.grid, self.has_cls, self.layout = stride, grid, has_cls, layout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return through_map(self.layout, x, self.grid, self.has_cls, self.pool)

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        return self.layout.max_pool(x, self.kernel, self.stride, self.padding)


class DeploySelfBlock(nn.Module):
    """:class:`models.mmvit.SelfBlock` for one view at a fixed input grid.

    ``cls_only``: the block's output is read only at the CLS token (the last block before the head), so its
    queries, residuals and MLP run for that one token; keys and values still come from every token.
    ``logits_bias``: a term added to the attention logits (MViTv2's relative positions).
    """

    def __init__(
        self,
        m: train.SelfBlock,
        grid: Grid,
        has_cls: bool,
        layout: Layout,
        cls_only: bool = False,
        logits_bias: nn.Module | None = None,
    ) -> None:
        super().__init__()
        if cls_only and (m.q_stride > 1 or not has_cls):
            raise ValueError("cls_only needs a block with a CLS token and no Q pooling")
        self.layout = layout
        self.heads = m.attn.num_heads
        self.residual = m.attn.residual_pooling
        self.cls_only = cls_only
        self.norm1 = layout.norm(m.norm1)
        proj = m.shortcut_proj
        self.shortcut_proj = None if proj is None else layout.linear(proj.weight, proj.bias)
        self.shortcut_pool = DeployShortcutPool(m.q_stride, grid, has_cls, layout) if m.q_stride > 1 else nn.Identity()
        self.qkv = DeployViewAttention(m.attn, 0, grid, has_cls, layout, queries="cls" if cls_only else "all")
        self.proj = layout.linear(m.attn.proj.weight, m.attn.proj.bias)
        self.norm2 = layout.norm(m.norm2)
        self.mlp = DeployMlp.from_module(m.mlp, layout)
        self.logits_bias = logits_bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_norm = self.norm1(x)
        shortcut = x if self.shortcut_proj is None else self.shortcut_proj(x_norm)
        shortcut = self.shortcut_pool(shortcut)
        if self.cls_only:  # the head reads the CLS only: one query, one residual row, one MLP row
            _, k, v = self.qkv(x_norm)
            q, shortcut = self.qkv.cls_query(x_norm), self.layout.tokens(shortcut, 0, 1)
        else:
            q, k, v = self.qkv(x_norm)
        x = shortcut + self.proj(
            multi_head_attention(
                self.layout, q, k, v, self.heads, self.residual, keys_like_queries=True, logits_bias=self.logits_bias
            )
        )
        return x + self.mlp(self.norm2(x))

"""Deploy form of MMViT: the same function as ``edgevit.models.mmvit`` in mobile-delegated ops, once for
every layout (``lowering.layout``): tokens (B, N, C) for XNNPACK/LiteRT/ONNX, or each view as (B, C, 1, N)
columns for Core ML, every head side by side on the channel axis. Rules kept here: static shapes (grids and
token counts are fixed when the form is built), rank <= 4, attention as the layout's products, no
gather/scatter, the CLS token (first, where a view has one) split off by slices (never ``select``).

The rewrites, each exact up to fp32 rounding:
- each view's pooling attention is MViTv2's (``lowering.pooling``: heads pooled at once, Q/K/V that pool
  alike as one layer, the softmax scale folded into K's norm);
- cross-attention runs each view's queries against the views' concatenated keys and values: attention is
  row-wise, so this equals the joint attention over concatenated queries followed by a split, with no
  concatenation of queries and no split;
- dead view computation is removed: the head reads view 1's CLS token only, so every block of the other
  views after the last cross-attention is dropped, the last cross-attention computes view 1's queries
  only, and the final block computes its attention and MLP for the CLS token alone.
"""

from __future__ import annotations

import torch
from torch import nn

from ..models import mmvit as train
from . import register_lowering
from .blocks import DeployMlp, multi_head_attention, require_classifier
from .layout import Layout
from .pooling import DeploySelfBlock, DeployViewAttention
from .weights import linear_from

__all__ = ["DeployMMViT"]


class DeployCrossBlock(nn.Module):
    """:class:`models.mmvit.CrossBlock`: each view's queries against all views' keys and values.

    ``live_views``: the views whose output is used downstream; the others still give keys and values.
    """

    def __init__(self, m: train.CrossBlock, grids: list, has_cls: list, live_views: list[int], layout: Layout) -> None:
        super().__init__()
        self.layout = layout
        self.heads = m.attn.num_heads
        self.residual = m.attn.residual_pooling
        self.live_views = list(live_views)
        self.norm1 = layout.norm(m.norm1)
        self.views = nn.ModuleList(
            DeployViewAttention(m.attn, i, g, c, layout, queries="all" if i in live_views else "none")
            for i, (g, c) in enumerate(zip(grids, has_cls, strict=True))
        )
        self.proj = layout.linear(m.attn.proj.weight, m.attn.proj.bias)
        self.norm2 = layout.norm(m.norm2)
        self.mlp = DeployMlp.from_module(m.mlp, layout)

    def forward(self, views: list[torch.Tensor]) -> list[torch.Tensor | None]:
        L = self.layout
        projected = [att(self.norm1(x)) for att, x in zip(self.views, views, strict=True)]
        k = L.cat_tokens([k for _, k, _ in projected])
        v = L.cat_tokens([v for _, _, v in projected])
        outs: list[torch.Tensor | None] = []
        for i, x in enumerate(views):
            if i not in self.live_views:
                outs.append(None)
                continue
            x = x + self.proj(
                multi_head_attention(L, projected[i][0], k, v, self.heads, self.residual, keys_like_queries=True)
            )
            outs.append(x + self.mlp(self.norm2(x)))
        return outs


class DeployStem(nn.Module):
    """Conv patch embedding of one view, plus its position embedding (and view 1's CLS) for one grid."""

    def __init__(self, stem: train.ViewStem, layout: Layout) -> None:
        super().__init__()
        conv = stem.proj
        self.proj = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding)
        self.proj.load_state_dict(conv.state_dict())
        self.layout, self.grid = layout, stem.grid
        pos = stem.pos_embed.detach().clone()
        self.has_cls = stem.cls_token is not None
        if self.has_cls:  # the CLS enters as position 0 of a zero token padded in front (no expand, any batch)
            pos[:, :1] += stem.cls_token.detach()
        self.pos_embed = layout.token_param(pos)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.proj(image)
        if (x.shape[2], x.shape[3]) != self.grid:
            raise ValueError(
                f"this deploy form is built for a {self.grid} token grid, got {tuple(x.shape[2:])}; "
                "build the model at the export input size"
            )
        x = self.layout.flatten_tokens(self.layout.from_map(x))
        if self.has_cls:
            x = self.layout.pad_front_token(x)
        return x + self.pos_embed


class DeployMMViT(nn.Module):
    """The MMViT classifier for one input size: NCHW image in, logits out.

    The plan (which blocks run, for which views, CLS-only at the end) is the same in every layout.
    """

    def __init__(self, model: train.MMViT, layout: Layout) -> None:
        super().__init__()
        require_classifier(model)
        cfg = model.cfg
        self.layout = layout
        self.stems = nn.ModuleList(DeployStem(stem, layout) for stem in model.stems)
        grids = [stem.grid for stem in model.stems]
        has_cls = [stem.cls_token is not None for stem in model.stems]
        last_cross = max(i for i, stage in enumerate(model.stages) if hasattr(stage, "cross"))
        # (kind, view or None, module) in execution order; views other than 0 die after the last cross
        self.steps = nn.ModuleList()
        self.plan: list[tuple[str, int | None]] = []

        def add_self(blocks: nn.ModuleList, live: list[int], last: bool = False) -> None:
            for v in live:
                block = DeploySelfBlock(blocks[v], grids[v], has_cls[v], layout, cls_only=last and v == 0)
                grids[v] = self._out_grid(blocks[v], grids[v])
                self.steps.append(block)
                self.plan.append(("self", v))

        all_views = list(range(cfg.num_views))
        for s, stage in enumerate(model.stages):
            live = all_views if s <= last_cross else [0]
            for j, per_view in enumerate(stage.blocks):
                final = s > last_cross and j == len(stage.blocks) - 1
                add_self(per_view, live, last=final)
            if hasattr(stage, "cross"):
                cross_live = all_views if s < last_cross else [0]
                self.steps.append(DeployCrossBlock(stage.cross, list(grids), has_cls, cross_live, layout))
                self.plan.append(("cross", None))
                add_self(stage.scale, cross_live)
        self.norm = layout.norm(model.norm)
        self.head = linear_from(model.head.weight, model.head.bias)

    @staticmethod
    def _out_grid(block: train.SelfBlock, grid: tuple[int, int]) -> tuple[int, int]:
        if block.q_stride == 1:
            return grid
        kernel, padding = train.skip_geometry(block.q_stride)
        return tuple(train._conv_out(n, kernel, block.q_stride, padding) for n in grid)

    @classmethod
    @torch.no_grad()
    def from_module(cls, model: train.MMViT, layout: Layout) -> DeployMMViT:
        return cls(model, layout).eval()

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        views: list[torch.Tensor | None] = [stem(image) for stem in self.stems]
        for (kind, view), step in zip(self.plan, self.steps, strict=True):
            if kind == "self":
                views[view] = step(views[view])
            else:
                views = step(views)
        return self.readout(views[0])

    def readout(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits from view 1's tokens: the head on its normalised CLS."""
        L = self.layout
        cls = tokens if tokens.shape[L.token_axis] == 1 else L.tokens(tokens, 0, 1)  # a full slice is an alias op
        return self.head(self.norm(cls).reshape(cls.shape[0], -1))


register_lowering(train.MMViT, DeployMMViT.from_module)

"""Deploy form of MViTv2: the same function as ``edgevit.models.mvitv2`` in mobile-delegated ops, once for every
layout (``lowering.layout``). Static shapes (every grid is fixed when the form is built), rank <= 4, no gather,
no einsum, no int64.

MViTv2's block is the pooling-attention block MMViT took from it, so each block is rebuilt as
:class:`models.mmvit.SelfBlock` (the same weights under that module's names) and deployed with the shared
pooling-attention form (``lowering.pooling``), plus one rewrite:

- the decomposed relative positions become constants: at a fixed input size the gathered tables R_h
  (q_h, k_h, d) and R_w (q_w, k_w, d) are fixed, and each query's terms are products with them. Tokens last,
  R_h is a batched matmul over query rows (no copy) and R_w one over query columns (a transpose there and
  back, on tensors no larger than Q); the terms reach the (N, M) logits as broadcast adds on a
  (N, k_h, k_w) view. Channels first, where every transpose is a copy the Core ML gate counts, the terms
  are elementwise products with the tables laid along the map and a sum over the head dim, added to the
  logits viewed as (heads, k_h, k_w, N).
"""

from __future__ import annotations

import torch
from torch import nn

from ..models import mmvit
from ..models import mvitv2 as train
from . import register_lowering
from .blocks import require_classifier
from .layout import Grid, Layout, one_image
from .pooling import DeploySelfBlock
from .weights import conv_copy, linear_from

__all__ = ["DeployMViTv2", "DeployRelPos", "as_self_block"]


def as_self_block(block: train.MultiScaleBlock) -> mmvit.SelfBlock:
    """``block`` as :class:`models.mmvit.SelfBlock` with the same weights (its relative positions aside)."""
    attn = block.attn
    cfg = mmvit.MMViTConfig(
        mlp_ratio=block.mlp.fc1.out_features / block.mlp.fc1.in_features,
        pool_kernel=attn.kernel,
        residual_pooling=attn.residual_pooling,
        qkv_bias=attn.qkv.bias is not None,
    )
    dim = block.norm1.normalized_shape[0]
    same = mmvit.SelfBlock(dim, attn.dim_out, attn.num_heads, attn.stride_q, attn.stride_kv, cfg)
    state = {}
    for key, value in block.state_dict().items():
        if "rel_pos" in key:
            continue
        key = key.replace("shortcut_proj_attn.", "shortcut_proj.")
        for part in "qkv":
            key = key.replace(f"attn.pool_{part}.", f"attn.pool_{part}.0.conv.")
            key = key.replace(f"attn.norm_{part}.", f"attn.pool_{part}.0.norm.")
        state[key] = value
    same.load_state_dict(state)  # strict: every weight has its place
    return same.eval()


class DeployRelPos(nn.Module):
    """MViTv2's relative-position logits of one attention at fixed query and key grids, added to the logits
    (``LogitsBias``; the queries unscaled, per head)."""

    def __init__(self, attn: train.MultiScaleAttention, q_grid: Grid, k_grid: Grid, layout: Layout) -> None:
        super().__init__()
        self.q_grid, self.k_grid, self.heads = q_grid, k_grid, attn.num_heads
        self.channels_first = layout.channels_first
        self.products = False  # tokens last: bmm with the tables (True: elementwise products)
        r_h, r_w = (t.detach() for t in train.rel_pos_tables(attn.rel_pos_h, attn.rel_pos_w, q_grid, k_grid))
        if self.channels_first:  # (heads*d, k, rows, 1) and (heads*d, k, 1, columns): the tables along the map
            self.register_buffer("r_h", r_h.permute(2, 1, 0).unsqueeze(-1).repeat(self.heads, 1, 1, 1))
            self.register_buffer("r_w", r_w.permute(2, 1, 0).unsqueeze(2).repeat(self.heads, 1, 1, 1))
        else:  # (heads*rows, d, k) and (heads*columns, d, k): one matrix per bmm batch
            self.register_buffer("r_h", r_h.transpose(1, 2).repeat(self.heads, 1, 1))
            self.register_buffer("r_w", r_w.transpose(1, 2).repeat(self.heads, 1, 1))

    def without_constant_batch_matmul(self) -> None:
        """Tokens last, the terms as elementwise products summed over the head dim, as channels first computes
        them (LiteRT's dynamic-range quantization turns a constant bmm operand into weights XNNPACK rejects)."""
        if not self.channels_first and not self.products:
            # (heads*rows, 1, k_h, d): one table per query row; (1, columns, k_w, d): one for every row
            self.r_h = self.r_h.transpose(1, 2).unsqueeze(1)
            self.r_w = self.r_w[: self.q_grid[1]].transpose(1, 2).unsqueeze(0)
            self.products = True

    def forward(self, logits: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        return self._channels_first(logits, q) if self.channels_first else self._tokens_last(logits, q)

    def _tokens_last(self, logits: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """logits (G, N, M), q (G, N, d), G = batch * heads. The tables are laid out for one image, every
        export's batch; another batch (QAT traces a dynamic one) folds its images into the products' rows."""
        (q_h, q_w), (k_h, k_w) = self.q_grid, self.k_grid
        G, N, d = q.shape
        B, H = G // self.heads, self.heads
        single = one_image(B)
        if self.products:
            rows = q.reshape(G * q_h, q_w, 1, d)
            r_h = self.r_h if single else self.r_h.repeat(B, 1, 1, 1)
            rel_h, rel_w = (rows * r_h).sum(dim=-1), (rows * self.r_w).sum(dim=-1)
        elif single:
            rel_h = torch.bmm(q.reshape(G * q_h, q_w, d), self.r_h)  # query rows: (G*q_h, q_w, k_h)
            columns = q.reshape(G, q_h, q_w, d).transpose(1, 2).reshape(G * q_w, q_h, d)
            rel_w = torch.bmm(columns, self.r_w).reshape(G, q_w, q_h, k_w).transpose(1, 2)
        else:
            rows = q.reshape(B, H * q_h, q_w, d).transpose(0, 1).reshape(H * q_h, -1, d)
            rel_h = torch.bmm(rows, self.r_h).reshape(H * q_h, B, q_w, k_h).transpose(0, 1)
            columns = q.reshape(G, q_h, q_w, d).transpose(1, 2).reshape(B, H * q_w, q_h, d).transpose(0, 1)
            rel_w = torch.bmm(columns.reshape(H * q_w, -1, d), self.r_w).reshape(H * q_w, B, q_h, k_w)
            rel_w = rel_w.transpose(0, 1).reshape(G, q_w, q_h, k_w).transpose(1, 2)
        logits = logits.reshape(G * N, k_h, k_w) + rel_h.reshape(G * N, k_h, 1) + rel_w.reshape(G * N, 1, k_w)
        return logits.reshape(G, N, k_h * k_w)

    def _channels_first(self, logits: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """logits (G, M, N), q (G, d, N)."""
        (q_h, q_w), (k_h, k_w) = self.q_grid, self.k_grid
        G, d, N = q.shape
        batch = G // self.heads  # the tables are laid out for one image (every export); more repeat them
        r_h, r_w = (self.r_h, self.r_w) if batch == 1 else (t.repeat(batch, 1, 1, 1) for t in (self.r_h, self.r_w))
        q = q.reshape(G * d, 1, q_h, q_w)
        rel_h = (q * r_h).reshape(G, d, k_h, N).sum(dim=1).reshape(G, k_h, 1, N)
        rel_w = (q * r_w).reshape(G, d, k_w, N).sum(dim=1).reshape(G, 1, k_w, N)
        return (logits.reshape(G, k_h, k_w, N) + rel_h + rel_w).reshape(G, k_h * k_w, N)


class DeployMViTv2(nn.Module):
    """The MViTv2 classifier for one input size: NCHW image in, logits out."""

    def __init__(self, model: train.MViTv2, layout: Layout) -> None:
        super().__init__()
        require_classifier(model)
        cfg = model.cfg
        self.layout = layout
        self.stem = conv_copy(model.patch_embed.proj)
        self.grid = grid = cfg.patch_grid
        self.blocks = nn.ModuleList()
        for stage in model.stages:
            for block in stage.blocks:
                attn = block.attn
                q_grid = train.pooled_grid(grid, attn.stride_q, attn.kernel)
                k_grid = train.pooled_grid(grid, attn.stride_kv, attn.kernel)
                bias = DeployRelPos(attn, q_grid, k_grid, layout)
                self.blocks.append(DeploySelfBlock(as_self_block(block), grid, False, layout, logits_bias=bias))
                grid = q_grid
        self.out_grid = grid
        self.norm = layout.norm(model.norm)
        self.head = linear_from(model.head.fc.weight, model.head.fc.bias)

    @classmethod
    @torch.no_grad()
    def from_module(cls, model: train.MViTv2, layout: Layout) -> DeployMViTv2:
        return cls(model, layout).eval()

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        L = self.layout
        x = self.stem(image)
        if (x.shape[2], x.shape[3]) != self.grid:
            raise ValueError(
                f"this deploy form is built for a {self.grid} token grid, got {tuple(x.shape[2:])}; "
                "build the model at the export input size"
            )
        x = L.flatten_tokens(L.from_map(x))
        for block in self.blocks:
            x = block(x)
        return self.head(L.spatial_mean(L.unflatten_tokens(self.norm(x), self.out_grid)))


register_lowering(train.MViTv2, DeployMViTv2.from_module)

"""Deploy form of CrossViT: the same function as ``edgevit.models.crossvit`` in mobile-delegated ops, once for
every layout (``lowering.layout``): tokens (B, N, C) for XNNPACK/LiteRT/ONNX, (B, C, 1, N) columns for Core ML.
Rules kept here: static shapes, rank <= 4, attention as the layout's products, no gather/scatter, no resize op,
CLS tokens split off by slices.

The rewrites, each exact up to fp32 rounding:
- the large branch's bicubic resize (240 -> 224) is a fixed linear map per axis, ``R_h X R_w^T``: a Linear
  over the image's columns, one transpose, a Linear over its rows. The image then stays transposed: the
  branch's patch convs take transposed kernels (a conv of a transposed image is the transposed conv of the
  image), so its patch tokens come out column-major and its position embedding is permuted to match.
  Attention and the fusion never depend on the order of the patch tokens, and the head reads only CLS;
- the softmax scale is folded into K's projection, and the CLS token into its position embedding;
- the single-query fusion attention is (B*heads, 1, d) x (B*heads, d, N) products, rank 3;
- the head's mean over the two branches is the sum of two classifiers with halved weights (no stack/mean),
  and the last block skips rebuilding token rows the head never reads.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..models import crossvit as train
from . import register_lowering
from .blocks import DeployAttention, DeployPreNormBlock, require_classifier
from .layout import Layout
from .weights import conv_copy, linear_from

__all__ = ["DeployCrossViT", "bicubic_matrix", "transposed_conv"]


def bicubic_matrix(size_in: int, size_out: int) -> torch.Tensor:
    """(size_out, size_in): ``F.interpolate(bicubic, align_corners=False)`` along one axis as a matrix, read off
    by resizing each basis vector (the resize is linear and separable)."""
    basis = torch.eye(size_in).reshape(size_in, 1, 1, size_in)  # float32: the weights F.interpolate uses
    resized = F.interpolate(basis, size=(1, size_out), mode="bicubic", align_corners=False)
    return resized.reshape(size_in, size_out).t().contiguous()


def transposed_conv(conv: nn.Conv2d) -> nn.Conv2d:
    """The conv that maps a transposed image to the transposed output of ``conv``."""
    new = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size[::-1],
        conv.stride[::-1],
        conv.padding[::-1],
        conv.dilation[::-1],
        conv.groups,
        bias=conv.bias is not None,
    )
    with torch.no_grad():
        new.weight.copy_(conv.weight.transpose(2, 3))
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    return new


def _stem_copy(proj: nn.Module, transpose: bool) -> nn.Sequential:
    """A patch embedding's conv (or the dagger stem's convs and ReLUs), for a transposed image if asked."""
    layers = list(proj) if isinstance(proj, nn.Sequential) else [proj]
    copied = []
    for layer in layers:
        if isinstance(layer, nn.Conv2d):
            copied.append(transposed_conv(layer) if transpose else conv_copy(layer))
        else:
            copied.append(nn.ReLU())
    return nn.Sequential(*copied)


class DeployBranchEmbed(nn.Module):
    """One branch's tokens from the image: the resize as matrices (transposed output), the patch convs,
    then the CLS and position embedding (CLS first)."""

    def __init__(self, model: train.CrossViT, branch: int, layout: Layout) -> None:
        super().__init__()
        cfg = model.cfg
        self.layout = layout
        self.resized = cfg.branch_size(branch) != cfg.img_size
        if self.resized:
            (h, w), (h2, w2) = cfg.img_size, cfg.branch_size(branch)
            self.columns = linear_from(bicubic_matrix(w, w2))
            self.rows = linear_from(bicubic_matrix(h, h2))
        self.stem = _stem_copy(model.patch_embed[branch].proj, transpose=self.resized)
        pos = model.pos_embed(branch).detach()
        patches = pos[:, 1:]
        if self.resized:  # patch tokens come out column-major
            gh, gw = cfg.grid(branch)
            patches = patches.reshape(1, gh, gw, -1).transpose(1, 2).reshape(1, gh * gw, -1)
        # the CLS enters as position 0 of a zero token padded in front: no expand, so any batch, QAT's too
        self.pos = layout.token_param(torch.cat([model.cls_token(branch).detach() + pos[:, :1], patches], dim=1))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        L = self.layout
        if self.resized:
            image = self.rows(self.columns(image).transpose(2, 3))  # (B, C, W', H'): the resized image transposed
        return L.pad_front_token(L.flatten_tokens(L.from_map(self.stem(image)))) + self.pos


class DeployProjection(nn.Module):
    """LayerNorm, GELU, Linear on one token (a CLS moving between branches)."""

    def __init__(self, m: nn.Sequential, layout: Layout) -> None:
        super().__init__()
        self.norm = layout.norm(m[0])
        self.act = nn.GELU()  # a module, so that a precision step can swap it (``targets.fp16``)
        self.linear = layout.linear(m[2].weight, m[2].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.act(self.norm(x)))


class DeployCrossAttentionBlock(nn.Module):
    """The first token as the single query over all tokens, residual on it: rows in, one token out."""

    def __init__(self, m: train.CrossAttentionBlock, layout: Layout) -> None:
        super().__init__()
        a = m.attn
        self.layout, self.heads = layout, a.num_heads
        self.norm1 = layout.norm(m.norm1)
        self.q = layout.linear(a.wq.weight, a.wq.bias)
        k_bias = a.wk.bias * a.scale if a.wk.bias is not None else None
        self.k = layout.linear(a.wk.weight * a.scale, k_bias)
        self.v = layout.linear(a.wv.weight, a.wv.bias)
        self.proj = layout.linear(a.proj.weight, a.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        L = self.layout
        query = L.tokens(x, 0, 1)
        x = self.norm1(x)
        q = L.one_token_heads(self.q(L.tokens(x, 0, 1)), self.heads)
        k = L.split_keys(self.k(x), self.heads)
        v = L.split_heads(self.v(x), self.heads)
        return query + self.proj(L.merge_heads(L.attend(q, k, v), query.shape))


class DeployMultiScaleBlock(nn.Module):
    """ViT blocks per branch, then the CLS fusion; ``last``: return each branch's new CLS token alone."""

    def __init__(self, m: train.MultiScaleBlock, layout: Layout, last: bool) -> None:
        super().__init__()
        self.layout, self.last = layout, last
        self.blocks = nn.ModuleList(
            nn.Sequential(*(DeployPreNormBlock(b, DeployAttention(b.attn, layout), layout) for b in branch))
            for branch in m.blocks
        )
        self.projs = nn.ModuleList(DeployProjection(p, layout) for p in m.projs)
        self.fusion = nn.ModuleList(
            nn.Sequential(*(DeployCrossAttentionBlock(b, layout) for b in (f if isinstance(f, nn.Sequential) else [f])))
            for f in m.fusion
        )
        self.revert_projs = nn.ModuleList(DeployProjection(p, layout) for p in m.revert_projs)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        L = self.layout
        xs = [blocks(x) for blocks, x in zip(self.blocks, xs, strict=True)]
        n = len(xs)
        outs = []
        for b in range(n):
            cls = self.projs[b](L.tokens(xs[b], 0, 1))
            fused = self.fusion[b](L.cat_tokens([cls, L.tokens(xs[(b + 1) % n], 1)]))
            cls = self.revert_projs[b](fused)
            outs.append(cls if self.last else L.cat_tokens([cls, L.tokens(xs[b], 1)]))
        return outs


class DeployCrossViT(nn.Module):
    """Whole CrossViT classifier in deploy form, NCHW image in, logits out."""

    # int8 graphs keep the CLS projections between branches float: each writes one token that joins the other
    # branch's patch tokens, whose range it does not share, and LiteRT's converter gives that concatenation
    # one scale (its output is unobserved), saturating the CLS (trained crossvit_mobile_240: 8 dB, 41 dB float)
    float_modules = ("blocks.*.projs.*", "blocks.*.revert_projs.*")

    def __init__(self, model: train.CrossViT, layout: Layout) -> None:
        super().__init__()
        require_classifier(model)
        if model.num_classes <= 0:
            raise ValueError("lowering supports the classifier; this model has no classes (num_classes=0)")
        self.embeds = nn.ModuleList(DeployBranchEmbed(model, b, layout) for b in range(len(model.patch_embed)))
        last = len(model.blocks) - 1
        self.blocks = nn.ModuleList(DeployMultiScaleBlock(blk, layout, i == last) for i, blk in enumerate(model.blocks))
        self.norms = nn.ModuleList(layout.norm(n) for n in model.norm)
        # the mean of the branches' logits: each classifier's weights and bias halved, the results summed
        share = 1.0 / len(model.head)
        self.heads = nn.ModuleList(linear_from(h.weight * share, h.bias * share) for h in model.head)

    @classmethod
    @torch.no_grad()
    def from_module(cls, model: train.CrossViT, layout: Layout) -> DeployCrossViT:
        return cls(model, layout).eval()

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        xs = [embed(image) for embed in self.embeds]
        for block in self.blocks:
            xs = block(xs)
        B = image.shape[0]
        logits = [head(norm(cls).reshape(B, -1)) for norm, head, cls in zip(self.norms, self.heads, xs, strict=True)]
        out = logits[0]
        for other in logits[1:]:
            out = out + other
        return out


register_lowering(train.CrossViT, DeployCrossViT.from_module)

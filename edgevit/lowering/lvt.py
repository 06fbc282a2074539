"""Deploy form of LVT: the same function as ``edgevit.models.lvt`` written in mobile-delegated ops, once for
every layout (tokens last for XNNPACK/LiteRT/ONNX, channels first for Core ML; see ``lowering.layout``).

Every module is built from its training counterpart by ``from_module`` under ``torch.no_grad()``; the
training model is never modified. Rules kept here: no unfold/fold/gather/scatter, rank <= 4, static
recursion, attention as the layout's products (3-D ``bmm`` on (B*heads, N, d) tokens last).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..models import lvt as train
from . import register_lowering
from .blocks import DeployPreNormBlock, multi_head_attention, require_classifier
from .layout import Layout, one_image
from .ops import PhaseFold, ShortRowSoftmax, TapLinear, fold_k3s2p1_nchw
from .weights import class_block_weights, conv1x1_from, conv_copy, linear_from

__all__ = ["DeployLVT", "DeployCSA", "ChannelsFirstCSA", "DeployRASA", "DeployClassBlock"]


def _check_csa_geometry(m: train.CSA) -> None:
    if (m.kernel_size, m.stride, m.padding) != (3, 2, 1):
        raise ValueError("deploy CSA supports the LVT setting: kernel 3, stride 2, padding 1")


class DeployCSA(nn.Module):
    """CSA tokens last (NHWC), with no conv, no im2col and no col2im: slices, two ``bmm`` and a phase fold.

    The 3x3 stride-2 patches are strided slices of the padded map, taken as stride-1 slices of a view
    that splits rows and columns into (block, parity); the 2x2 average pool is the mean of four of those
    taps; the per-tap value weights are one ``bmm`` over taps; the attention is a ``bmm`` over
    (location, head); the overlap-add is :func:`fold_k3s2p1_nhwc`. Staying NHWC means XNNPACK needs no
    layout copies around convolutions, which dominate a conv-based form of this block.
    """

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.dim = dim
        self.num_heads = num_heads
        self.attn = nn.Linear(dim, 81 * num_heads)
        self.values = TapLinear(9, dim)
        self.softmax = ShortRowSoftmax(9)
        self.fold = PhaseFold()
        self.proj = nn.Linear(dim, dim)

    @classmethod
    @torch.no_grad()
    def from_module(cls, m: train.CSA) -> DeployCSA:
        _check_csa_geometry(m)
        new = cls(m.dim, m.num_heads)
        # folded into the logits' Linear: the softmax scale, scale*(Wx + b), and the pool's 1/4, W(sum/4)
        new.attn.weight.copy_(m.attn.weight * (m.scale / 4))
        new.attn.bias.copy_(m.attn.bias * m.scale)
        C = m.dim
        # grouped 1x1 conv weight (9C, C, 1, 1): group t maps tap t's inputs to outputs t*C..t*C+C-1
        for linear, weight in zip(new.values.maps, m.weight.weight.reshape(9, C, C), strict=True):
            linear.weight.copy_(weight)
        new.proj.load_state_dict(m.proj.state_dict())
        return new

    @staticmethod
    def patches(x: torch.Tensor) -> list[torch.Tensor]:
        """The nine taps of 3x3 patches at stride 2, padding 1, each holding ``x[b, 2m+ki-1, 2n+kj-1]`` for
        tap ``ki*3+kj`` in (b, m, n, channel) order; their shape is this function's own (reshape to (B, h, w, C)).

        With one image, one view of the padded map exposes (row block, row parity, column block, column
        parity and channel), so each tap is a single slice of it. Otherwise the rows are sliced first, then
        each row's columns. XNNPACK copies a reshape whose output several ops read, so the single-slice form
        also saves the three row copies and their reshapes."""
        B, H, W, C = x.shape
        h, w = H // 2, W // 2
        padded = F.pad(x, (0, 0, 1, 1, 1, 1))  # B, 2(h+1), 2(w+1), C
        if one_image(B):
            grid = padded.reshape(h + 1, 2, w + 1, 2 * C)
            return [
                grid[ki // 2 : ki // 2 + h, ki % 2 : ki % 2 + 1, kj // 2 : kj // 2 + w, kj % 2 * C : (kj % 2 + 1) * C]
                for ki in range(3)
                for kj in range(3)
            ]
        rows = padded.reshape(B, h + 1, 2, 2 * (w + 1) * C)  # row = 2*block + parity
        taps = []
        for ki in range(3):
            row = rows[:, ki // 2 : ki // 2 + h, ki % 2 : ki % 2 + 1].reshape(B * h, w + 1, 2, C)
            taps.extend(row[:, kj // 2 : kj // 2 + w, kj % 2 : kj % 2 + 1] for kj in range(3))
        return taps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        L, heads = (H // 2) * (W // 2), self.num_heads
        d = C // heads
        taps = self.patches(x)

        # logits from the 2x2 average pool (taps (1,1), (1,2), (2,1), (2,2); the 1/4 is in the weights)
        pooled = taps[4] + taps[5] + taps[7] + taps[8]
        attn = self.softmax(self.attn(pooled).reshape(1, B * L * heads, 9, 9))
        attn = attn.reshape(B * L * heads, 9, 9)  # rows: (b, location, head)

        # per-tap linear maps stacked on the tap axis (B*L*heads, 9, d) as three rows of three taps: XNNPACK
        # concatenates at most five inputs, and LiteRT's converter merges nested concatenations on one axis
        # back into one, which its delegate then leaves outside (a split of the graph)
        values = [v.reshape(B * L * heads, 1, 1, d) for v in self.values(taps)]
        rows = [torch.cat(values[3 * i : 3 * i + 3], dim=2) for i in range(3)]
        values = torch.cat(rows, dim=1).reshape(B * L * heads, 9, d)

        out = torch.bmm(attn, values)  # rows (b, location, head), so tap t's rows are the (B, h, w, C) map
        # slice each output tap straight from the product (stride-1 slice; select has no XNNPACK node): a
        # reshape there would feed nine slices, and XNNPACK copies such a reshape
        out_taps = [out[:, t : t + 1].reshape(B, H // 2, W // 2, C) for t in range(9)]
        return self.proj(self.fold(out_taps))


class ChannelsFirstCSA(nn.Module):
    """CSA on an NCHW map: strided-slice patches, per-tap 1x1 convs, broadcast attention, phase fold.

    The 9x9 attention of each location is applied as nine broadcast multiply-adds over (heads, taps,
    channels, locations), so locations stay on the last (widest) axis and never move to the batch axis.
    """

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.dim = dim
        self.num_heads = num_heads
        self.attn = nn.Conv2d(dim, 81 * num_heads, 1)
        self.values = nn.ModuleList(nn.Conv2d(dim, dim, 1, bias=False) for _ in range(9))
        self.proj = nn.Conv2d(dim, dim, 1)

    @classmethod
    @torch.no_grad()
    def from_module(cls, m: train.CSA) -> ChannelsFirstCSA:
        _check_csa_geometry(m)
        new = cls(m.dim, m.num_heads)
        new.attn = conv1x1_from(m.attn.weight * m.scale, m.attn.bias * m.scale)
        C = m.dim
        for t, conv in enumerate(new.values):  # group t of the grouped 1x1 conv maps tap t
            conv.weight.copy_(m.weight.weight[t * C : (t + 1) * C])
        new.proj = conv1x1_from(m.proj.weight, m.proj.bias)
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        h, w = H // 2, W // 2
        heads = self.num_heads
        d = C // heads
        padded = F.pad(x, (1, 1, 1, 1))
        taps = [padded[:, :, ki : ki + 2 * h : 2, kj : kj + 2 * w : 2] for ki in range(3) for kj in range(3)]

        # logits channel = head*81 + out_tap*9 + in_tap; normalised over the input taps
        attn = self.attn(F.avg_pool2d(x, 2)).reshape(B * heads, 9, 9, h * w).softmax(dim=2)
        out = None
        for j, tap in enumerate(taps):
            term = attn[:, :, j : j + 1] * self.values[j](tap).reshape(B * heads, 1, d, h * w)
            out = term if out is None else out + term  # B*heads, 9 (out tap), d, h*w
        out_taps = [out[:, i : i + 1].reshape(B, C, h, w) for i in range(9)]
        return self.proj(fold_k3s2p1_nchw(out_taps))


def csa_from(m: train.CSA, layout: Layout) -> nn.Module:
    """The CSA algorithm measured fastest for the layout: slices and ``bmm`` tokens last, broadcast
    multiply-adds and a pixel-shuffle fold channels first."""
    return ChannelsFirstCSA.from_module(m) if layout.channels_first else DeployCSA.from_module(m)


class DeployRASA(nn.Module):
    """RASA with split K/V projections, the layout's attention products, recursion unrolled."""

    def __init__(self, m: train.RASA, layout: Layout) -> None:
        super().__init__()
        C = m.dim
        self.layout = layout
        self.num_heads = m.num_heads
        self.dilations = m.ds.dilations
        self.recursions = m.recursions
        self.q = layout.linear(m.q.weight)
        # the softmax scale is folded into K (linear, no bias); Q passes a nonlinear conv first
        self.k = layout.linear(m.kv.weight[:C] * m.scale)
        self.v = layout.linear(m.kv.weight[C:])
        self.proj = layout.linear(m.proj.weight, m.proj.bias)
        self.ds_weight = nn.Parameter(m.ds.weight.detach().clone())
        self.reduces = m.sr_ratio > 1  # keys and values from a strided conv + norm
        if self.reduces:
            self.sr = conv_copy(m.sr)
            self.norm = layout.norm(m.norm)

    @classmethod
    @torch.no_grad()
    def from_module(cls, m: train.RASA, layout: Layout) -> DeployRASA:
        return cls(m, layout)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        L, C = self.layout, self.ds_weight.shape[0]
        q = L.to_map(self.q(x))
        # one shared depthwise kernel at each dilation (summed without a scalar 0, which would export as
        # a constant the delegate does not own)
        branches = [L.silu(F.conv2d(q, self.ds_weight, None, 1, dil, dil, C)) for dil in self.dilations]
        q = branches[0]
        for branch in branches[1:]:
            q = q + branch
        kv_in = x
        if self.reduces:
            kv_in = self.norm(L.from_map(self.sr(L.to_map(x))))
        kv_in = L.attention_tokens(kv_in)
        return self.proj(multi_head_attention(L, L.from_map(q), self.k(kv_in), self.v(kv_in), self.num_heads))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.recursions == 1:
            return self.attention(x)
        silu = self.layout.silu
        x_in = x
        x = silu(self.attention(x))
        for _ in range(self.recursions - 1):
            x = x + x_in
            x_in = x
            x = silu(self.attention(x))
        return x


class DeployBlock(DeployPreNormBlock):
    """An LVT block: CSA in stage 1, RASA after."""

    def __init__(self, m: train.Block, layout: Layout) -> None:
        attn = csa_from(m.attn, layout) if isinstance(m.attn, train.CSA) else DeployRASA.from_module(m.attn, layout)
        super().__init__(m, attn, layout)


class DeployPatchEmbed(nn.Module):
    """Strided conv, then the norm, on the layout's map (the first stage takes the NCHW image)."""

    def __init__(self, m: train.PatchEmbed, layout: Layout) -> None:
        super().__init__()
        self.proj = conv_copy(m.proj)
        self.norm = layout.norm(m.norm)
        self.layout, self.nchw_input = layout, m.nchw_input

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.nchw_input:
            x = self.layout.to_map(x)
        return self.norm(self.layout.from_map(self.proj(x)))


class DeployClassBlock(nn.Module):
    """Class-attention post layer: one query (the CLS token, first), keys and values from all tokens."""

    def __init__(self, m: train.ClassBlock, layout: Layout) -> None:
        super().__init__()
        self.layout = layout
        self.num_heads = m.attn.num_heads
        self.norm1 = layout.norm(m.norm1)
        self.norm2 = layout.norm(m.norm2)
        self.act = nn.GELU()
        for name, (weight, bias) in class_block_weights(m).items():  # q, k, v, proj, fc1, fc2
            setattr(self, name, layout.linear(weight, bias))

    @classmethod
    @torch.no_grad()
    def from_module(cls, m: train.ClassBlock, layout: Layout) -> DeployClassBlock:
        return cls(m, layout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        L, heads = self.layout, self.num_heads
        cls_tok = L.tokens(x, 0, 1)
        y = self.norm1(x)
        q = L.one_token_heads(self.q(L.tokens(y, 0, 1)), heads)
        attended = L.attend(q, L.split_keys(self.k(y), heads), L.split_heads(self.v(y), heads))
        cls_tok = cls_tok + self.proj(attended.reshape(cls_tok.shape))
        cls_tok = cls_tok + self.fc2(self.act(self.fc1(self.norm2(cls_tok))))
        return L.cat_tokens([cls_tok, L.tokens(x, 1)])


class DeployLVT(nn.Module):
    """Whole LVT classifier in deploy form (``lvt`` or ``lvt_cls``), NCHW image in, logits out."""

    def __init__(self, model: train.LVT, layout: Layout) -> None:
        super().__init__()
        require_classifier(model)
        cfg = model.cfg
        self.layout = layout
        self.aux_weight = cfg.aux_weight
        self.stages = nn.ModuleList(
            nn.Sequential(DeployPatchEmbed(stage[0], layout), *(DeployBlock(b, layout) for b in stage[1]))
            for stage in model.backbone
        )
        self.norm = layout.norm(model.norm)
        self.head = linear_from(model.head.weight, model.head.bias) if cfg.num_classes > 0 else nn.Identity()
        self.class_attention = cfg.class_attention_layers > 0
        if self.class_attention:
            self.cls_token = layout.token_param(model.cls_token)
            self.post_network = nn.ModuleList(DeployClassBlock(b, layout) for b in model.post_network)
            self.aux_head = layout.linear(model.aux_head.weight, model.aux_head.bias)

    @classmethod
    @torch.no_grad()
    def from_module(cls, model: train.LVT, layout: Layout) -> DeployLVT:
        return cls(model, layout).eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        L = self.layout
        for stage in self.stages:
            x = stage(x)
        if not self.class_attention:
            return self.head(L.spatial_mean(self.norm(x)))
        B = x.shape[0]
        # expand has no XNNPACK node; at batch 1 (every export) the token is used as it is
        cls_tok = self.cls_token if B == 1 else self.cls_token.expand(B, *self.cls_token.shape[1:])
        x = L.cat_tokens([cls_tok, L.flatten_tokens(x)])
        for block in self.post_network:
            x = block(x)
        x = self.norm(x)
        cls_logits = self.head(L.tokens(x, 0, 1).reshape(B, -1))
        return cls_logits + self.aux_weight * L.max_over_tokens(self.aux_head(L.tokens(x, 1)))


register_lowering(train.LVT, DeployLVT.from_module)

"""Deploy form of LVT: the same function as ``edgevit.models.lvt`` written in mobile-delegated ops.

Tensors stay NHWC between blocks (as in the training form), so tokens meet Linear layers without copies.
Every module is built from its training counterpart by ``from_module`` under ``torch.no_grad()``; the
training model is never modified. Rules kept here: no unfold/fold/gather/scatter, rank <= 4, attention as
3-D ``bmm`` on (B*heads, N, d), LayerNorm as Linear reductions, static recursion.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..models import lvt as train
from .ops import LinearLayerNorm, PhaseFold, ShortRowSoftmax, TapLinear, linear_silu, spatial_mean_nhwc
from .weights import class_block_weights, conv_copy, linear_from

__all__ = ["DeployLVT", "DeployCSA", "DeployRASA", "DeployClassBlock"]


class DeployCSA(nn.Module):
    """CSA on NHWC tensors with no conv, no im2col and no col2im: slices, two ``bmm`` and a phase fold.

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
        if (m.kernel_size, m.stride, m.padding) != (3, 2, 1):
            raise ValueError("DeployCSA supports the LVT setting: kernel 3, stride 2, padding 1")
        new = cls(m.dim, m.num_heads)
        # folded into the logits' Linear: the softmax scale, scale*(Wx + b), and the pool's 1/4, W(sum/4)
        new.attn.weight.copy_(m.attn.weight * (m.scale / 4))
        new.attn.bias.copy_(m.attn.bias * m.scale)
        C = m.dim
        # grouped 1x1 conv weight (9C, C, 1, 1): group t maps tap t's inputs to outputs t*C..t*C+C-1
        new.values.weight.copy_(m.weight.weight.reshape(9, C, C).transpose(1, 2))
        new.proj.load_state_dict(m.proj.state_dict())
        return new

    @staticmethod
    def patches(x: torch.Tensor) -> list[torch.Tensor]:
        """The nine taps of 3x3 patches at stride 2, padding 1: ``taps[ki*3+kj][b, m, n] = x[b, 2m+ki-1, 2n+kj-1]``."""
        B, H, W, C = x.shape
        h, w = H // 2, W // 2
        padded = F.pad(x, (0, 0, 1, 1, 1, 1))  # B, 2(h+1), 2(w+1), C
        rows = padded.reshape(B, h + 1, 2, 2 * (w + 1) * C)  # row = 2*block + parity
        taps = []
        for ki in range(3):
            row = rows[:, ki // 2 : ki // 2 + h, ki % 2 : ki % 2 + 1].reshape(B * h, w + 1, 2, C)
            for kj in range(3):
                tap = row[:, kj // 2 : kj // 2 + w, kj % 2 : kj % 2 + 1]
                taps.append(tap.reshape(B, h, w, C))
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

        stacked = torch.cat([t.reshape(1, B * L, C) for t in taps], dim=0)  # 9, B*L, C
        values = self.values(stacked)  # per-tap linear map
        values = values.reshape(9, B * L * heads, d).transpose(0, 1)  # B*L*heads, 9, d

        out = torch.bmm(attn, values).reshape(B * L, heads, 9, d)
        # slice each output tap (stride-1 slice; select has no XNNPACK node)
        out_taps = [out[:, :, t : t + 1].reshape(B, H // 2, W // 2, C) for t in range(9)]
        return self.proj(self.fold(out_taps))


class DeployRASA(nn.Module):
    """RASA with split K/V projections, 3-D bmm attention, SiLU as x*sigmoid(x), recursion unrolled."""

    def __init__(self, dim: int, num_heads: int, sr_ratio: int, dilations: tuple[int, ...], recursions: int):
        super().__init__()
        self.num_heads = num_heads
        self.sr_ratio = sr_ratio
        self.dilations = dilations
        self.recursions = recursions
        self.q = nn.Linear(dim, dim, bias=False)
        self.k = nn.Linear(dim, dim, bias=False)
        self.v = nn.Linear(dim, dim, bias=False)
        self.proj = nn.Linear(dim, dim)
        self.ds_weight = nn.Parameter(torch.zeros(dim, 1, 3, 3))
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, sr_ratio, sr_ratio)
            self.norm = LinearLayerNorm(dim, 1e-5, torch.ones(dim), torch.zeros(dim))

    @classmethod
    @torch.no_grad()
    def from_module(cls, m: train.RASA) -> DeployRASA:
        new = cls(m.dim, m.num_heads, m.sr_ratio, m.ds.dilations, m.recursions)
        C = m.dim
        new.q.weight.copy_(m.q.weight)
        # the softmax scale is folded into K (linear, no bias); Q passes a nonlinear conv first
        new.k.weight.copy_(m.kv.weight[:C] * m.scale)
        new.v.weight.copy_(m.kv.weight[C:])
        new.proj.load_state_dict(m.proj.state_dict())
        new.ds_weight.copy_(m.ds.weight)
        if m.sr_ratio > 1:
            new.sr = conv_copy(m.sr)
            new.norm = LinearLayerNorm.from_module(m.norm)
        return new

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        heads = self.num_heads
        d = C // heads
        q = self.q(x).permute(0, 3, 1, 2)
        # one shared depthwise kernel at each dilation (summed without a scalar 0, which would export as
        # a constant the delegate does not own)
        branches = [linear_silu(F.conv2d(q, self.ds_weight, None, 1, dil, dil, C)) for dil in self.dilations]
        q = branches[0]
        for b in branches[1:]:
            q = q + b
        # back to tokens first: XNNPACK holds the conv's output NHWC, so that permute moves no data
        q = q.permute(0, 2, 3, 1).reshape(B, H * W, heads, d).transpose(1, 2).reshape(B * heads, H * W, d)

        kv_in = x
        if self.sr_ratio > 1:
            kv_in = self.norm(self.sr(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1))
        kv_in = kv_in.reshape(B, -1, C)
        M = kv_in.shape[1]
        k_t = self.k(kv_in).reshape(B, M, heads, d).permute(0, 2, 3, 1).reshape(B * heads, d, M)
        v = self.v(kv_in).reshape(B, M, heads, d).permute(0, 2, 1, 3).reshape(B * heads, M, d)

        attn = torch.bmm(q, k_t).softmax(dim=-1)
        out = torch.bmm(attn, v).reshape(B, heads, H * W, d).permute(0, 2, 1, 3).reshape(B, H, W, C)
        return self.proj(out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.recursions == 1:
            return self.attention(x)
        x_in = x
        x = linear_silu(self.attention(x))
        for _ in range(self.recursions - 1):
            x = x + x_in
            x_in = x
            x = linear_silu(self.attention(x))
        return x


class DeployMlp(nn.Module):
    """MLP: Linear-GELU-Linear on tokens, or (stages 2-4) the 1x1 / depthwise / 1x1 convs on an NCHW view.

    The conv form changes layout on the narrow side (C channels) instead of around the depthwise conv
    (4-8x C channels): XNNPACK runs convs NHWC and copies at every NCHW boundary.
    """

    def __init__(self, fc1: nn.Module, fc2: nn.Module, depconv: nn.Conv2d | None) -> None:
        super().__init__()
        self.fc1 = fc1
        self.depconv = depconv
        self.fc2 = fc2

    @classmethod
    @torch.no_grad()
    def from_module(cls, m: train.Mlp) -> DeployMlp:
        if m.depthwise:
            return cls(conv_copy(m.fc1), conv_copy(m.fc2), conv_copy(m.depconv))
        return cls(linear_from(m.fc1.weight, m.fc1.bias), linear_from(m.fc2.weight, m.fc2.bias), None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.depconv is None:
            return self.fc2(F.gelu(self.fc1(x)))
        x = self.depconv(self.fc1(x.permute(0, 3, 1, 2)))
        return self.fc2(F.gelu(x)).permute(0, 2, 3, 1)


class DeployBlock(nn.Module):
    def __init__(self, norm1: nn.Module, attn: nn.Module, norm2: nn.Module, mlp: nn.Module) -> None:
        super().__init__()
        self.norm1, self.attn, self.norm2, self.mlp = norm1, attn, norm2, mlp

    @classmethod
    def from_module(cls, m: train.Block) -> DeployBlock:
        attn = DeployCSA.from_module(m.attn) if isinstance(m.attn, train.CSA) else DeployRASA.from_module(m.attn)
        return cls(
            LinearLayerNorm.from_module(m.norm1),
            attn,
            LinearLayerNorm.from_module(m.norm2),
            DeployMlp.from_module(m.mlp),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class DeployPatchEmbed(nn.Module):
    def __init__(self, proj: nn.Conv2d, norm: LinearLayerNorm, nchw_input: bool) -> None:
        super().__init__()
        self.proj, self.norm, self.nchw_input = proj, norm, nchw_input

    @classmethod
    @torch.no_grad()
    def from_module(cls, m: train.PatchEmbed) -> DeployPatchEmbed:
        return cls(conv_copy(m.proj), LinearLayerNorm.from_module(m.norm), m.nchw_input)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.nchw_input:
            x = x.permute(0, 3, 1, 2)
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


class DeployClassBlock(nn.Module):
    """Class-attention post layer: one query (the CLS token), keys/values from all tokens, 3-D bmm."""

    def __init__(self, m: train.ClassBlock) -> None:
        super().__init__()
        self.num_heads = m.attn.num_heads
        self.norm1 = LinearLayerNorm.from_module(m.norm1)
        self.norm2 = LinearLayerNorm.from_module(m.norm2)
        for name, (weight, bias) in class_block_weights(m).items():  # q, k, v, proj, fc1, fc2
            setattr(self, name, linear_from(weight, bias))

    @classmethod
    @torch.no_grad()
    def from_module(cls, m: train.ClassBlock) -> DeployClassBlock:
        return cls(m)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        heads, d = self.num_heads, C // self.num_heads
        cls_tok = x[:, :1]
        y = self.norm1(x)
        q = self.q(y[:, :1]).reshape(B * heads, 1, d)
        k_t = self.k(y).reshape(B, N, heads, d).permute(0, 2, 3, 1).reshape(B * heads, d, N)
        v = self.v(y).reshape(B, N, heads, d).permute(0, 2, 1, 3).reshape(B * heads, N, d)
        attn = torch.bmm(q, k_t).softmax(dim=-1)
        cls_tok = cls_tok + self.proj(torch.bmm(attn, v).reshape(B, 1, C))
        cls_tok = cls_tok + self.fc2(F.gelu(self.fc1(self.norm2(cls_tok))))
        return torch.cat([cls_tok, x[:, 1:]], dim=1)


class DeployLVT(nn.Module):
    """Whole LVT classifier in deploy form (``lvt`` or ``lvt_cls``), NCHW image in, logits out."""

    def __init__(self, model: train.LVT) -> None:
        super().__init__()
        if model.features_only:
            raise ValueError("lowering supports the classifier; build the model without features_only")
        cfg = model.cfg
        self.aux_weight = cfg.aux_weight
        self.stages = nn.ModuleList(
            nn.Sequential(DeployPatchEmbed.from_module(stage[0]), *(DeployBlock.from_module(b) for b in stage[1]))
            for stage in model.backbone
        )
        self.norm = LinearLayerNorm.from_module(model.norm)
        self.head = linear_from(model.head.weight, model.head.bias) if cfg.num_classes > 0 else nn.Identity()
        self.class_attention = cfg.class_attention_layers > 0
        if self.class_attention:
            self.cls_token = nn.Parameter(model.cls_token.detach().clone())
            self.post_network = nn.ModuleList(DeployClassBlock.from_module(b) for b in model.post_network)
            self.aux_head = linear_from(model.aux_head.weight, model.aux_head.bias)

    @classmethod
    @torch.no_grad()
    def from_module(cls, model: train.LVT) -> DeployLVT:
        return cls(model).eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for stage in self.stages:
            x = stage(x)
        if not self.class_attention:
            return self.head(spatial_mean_nhwc(self.norm(x)))
        B, _, _, C = x.shape
        # expand has no XNNPACK node; at batch 1 (every export) the token is used as it is
        cls_tok = self.cls_token if B == 1 else self.cls_token.expand(B, -1, -1)
        x = torch.cat([cls_tok, x.reshape(B, -1, C)], dim=1)
        for block in self.post_network:
            x = block(x)
        x = self.norm(x)
        cls_logits = self.head(x[:, :1].reshape(B, C))  # slice, not select: select is not delegated
        # max over tokens as a rank-4 max.dim with keepdim, the form XNNPACK takes
        aux = self.aux_head(x[:, 1:])
        aux = aux.reshape(B, 1, aux.shape[1], aux.shape[2])  # B, 1, N, classes
        aux_max = torch.max(aux, dim=2, keepdim=True)[0].reshape(B, -1)
        return cls_logits + self.aux_weight * aux_max

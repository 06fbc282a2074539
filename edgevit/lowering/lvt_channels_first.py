"""Channels-first deploy form of LVT for Core ML: NCHW from the image to the logits, no layout copies.

Core ML and the Neural Engine keep tensors as (B, C, H, W) and pay a memory copy for every transpose, so
this form never moves the channel axis: Linear layers are 1x1 convs, LayerNorm normalises dim 1, CSA's
3x3 patches are strided slices of the padded map, and the only transposes left are the keys' (which
coremltools fuses into ``matmul``). Same function as ``edgevit.models.lvt`` (fp32, <= 1e-4).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..models import lvt as train
from . import register_lowering
from .layout import Layout
from .lvt import DeployLVT
from .ops import ChannelLayerNorm, attend_channels_first, fold_k3s2p1_nchw
from .passes import native_layer_norm
from .weights import class_block_weights, conv1x1_from, conv_copy, linear_from

__all__ = ["ChannelsFirstLVT", "ChannelsFirstCSA", "ChannelsFirstRASA", "ChannelsFirstClassBlock"]


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
        if (m.kernel_size, m.stride, m.padding) != (3, 2, 1):
            raise ValueError("ChannelsFirstCSA supports the LVT setting: kernel 3, stride 2, padding 1")
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


class ChannelsFirstRASA(nn.Module):
    """RASA on an NCHW map: 1x1-conv projections, heads split off the channel axis, recursion unrolled."""

    def __init__(self, dim: int, num_heads: int, dilations: tuple[int, ...], recursions: int):
        super().__init__()
        self.num_heads = num_heads
        self.dilations = dilations
        self.recursions = recursions
        self.q = nn.Conv2d(dim, dim, 1, bias=False)
        self.k = nn.Conv2d(dim, dim, 1, bias=False)
        self.v = nn.Conv2d(dim, dim, 1, bias=False)
        self.proj = nn.Conv2d(dim, dim, 1)
        self.ds_weight = nn.Parameter(torch.zeros(dim, 1, 3, 3))
        self.reduce: nn.Module = nn.Identity()  # keys and values from a strided conv + norm when sr_ratio > 1

    @classmethod
    @torch.no_grad()
    def from_module(cls, m: train.RASA) -> ChannelsFirstRASA:
        new = cls(m.dim, m.num_heads, m.ds.dilations, m.recursions)
        C = m.dim
        new.q = conv1x1_from(m.q.weight)
        new.k = conv1x1_from(m.kv.weight[:C] * m.scale)  # the softmax scale, folded into the linear keys
        new.v = conv1x1_from(m.kv.weight[C:])
        new.proj = conv1x1_from(m.proj.weight, m.proj.bias)
        new.ds_weight.copy_(m.ds.weight)
        if m.sr_ratio > 1:
            new.reduce = nn.Sequential(conv_copy(m.sr), ChannelLayerNorm.from_module(m.norm))
        return new

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        G, d = B * self.num_heads, C // self.num_heads
        q_in = self.q(x)
        branches = [F.silu(F.conv2d(q_in, self.ds_weight, None, 1, dil, dil, C)) for dil in self.dilations]
        q = branches[0]
        for branch in branches[1:]:
            q = q + branch
        kv_in = self.reduce(x)
        k = self.k(kv_in).reshape(G, d, -1)
        v = self.v(kv_in).reshape(G, d, -1)
        return self.proj(attend_channels_first(q.reshape(G, d, H * W), k, v).reshape(B, C, H, W))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.recursions == 1:
            return self.attention(x)
        x_in = x
        x = F.silu(self.attention(x))
        for _ in range(self.recursions - 1):
            x = x + x_in
            x_in = x
            x = F.silu(self.attention(x))
        return x


class ChannelsFirstMlp(nn.Module):
    """1x1 conv, GELU, 1x1 conv (stage 1), or 1x1 conv, depthwise 3x3, GELU, 1x1 conv (stages 2-4)."""

    def __init__(self, fc1: nn.Conv2d, depconv: nn.Module, fc2: nn.Conv2d) -> None:
        super().__init__()
        self.fc1, self.depconv, self.fc2 = fc1, depconv, fc2

    @classmethod
    @torch.no_grad()
    def from_module(cls, m: train.Mlp) -> ChannelsFirstMlp:
        if m.depthwise:
            return cls(conv_copy(m.fc1), conv_copy(m.depconv), conv_copy(m.fc2))
        return cls(conv1x1_from(m.fc1.weight, m.fc1.bias), nn.Identity(), conv1x1_from(m.fc2.weight, m.fc2.bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.depconv(self.fc1(x))))


class ChannelsFirstBlock(nn.Module):
    def __init__(self, m: train.Block) -> None:
        super().__init__()
        self.norm1 = ChannelLayerNorm.from_module(m.norm1)
        if isinstance(m.attn, train.CSA):
            self.attn: nn.Module = ChannelsFirstCSA.from_module(m.attn)
        else:
            self.attn = ChannelsFirstRASA.from_module(m.attn)
        self.norm2 = ChannelLayerNorm.from_module(m.norm2)
        self.mlp = ChannelsFirstMlp.from_module(m.mlp)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ChannelsFirstClassBlock(nn.Module):
    """Class-attention post layer on tokens laid out (B, C, 1, 1 + N), the CLS token first."""

    def __init__(self, m: train.ClassBlock) -> None:
        super().__init__()
        self.num_heads = m.attn.num_heads
        self.norm1 = ChannelLayerNorm.from_module(m.norm1)
        self.norm2 = ChannelLayerNorm.from_module(m.norm2)
        for name, (weight, bias) in class_block_weights(m).items():  # q, k, v, proj, fc1, fc2
            setattr(self, name, conv1x1_from(weight, bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, _, T = x.shape
        G, d = B * self.num_heads, C // self.num_heads
        y = self.norm1(x)
        q = self.q(y[..., :1]).reshape(G, d, 1)
        attended = attend_channels_first(q, self.k(y).reshape(G, d, T), self.v(y).reshape(G, d, T))
        cls_tok = x[..., :1] + self.proj(attended.reshape(B, C, 1, 1))
        cls_tok = cls_tok + self.fc2(F.gelu(self.fc1(self.norm2(cls_tok))))
        return torch.cat([cls_tok, x[..., 1:]], dim=3)


class ChannelsFirstLVT(nn.Module):
    """Whole LVT classifier (``lvt`` or ``lvt_cls``) channels-first: NCHW image in, logits out."""

    def __init__(self, model: train.LVT) -> None:
        super().__init__()
        if model.features_only:
            raise ValueError("lowering supports the classifier; build the model without features_only")
        cfg = model.cfg
        self.aux_weight = cfg.aux_weight
        self.stages = nn.ModuleList(
            nn.Sequential(
                conv_copy(stage[0].proj),
                ChannelLayerNorm.from_module(stage[0].norm),
                *(ChannelsFirstBlock(b) for b in stage[1]),
            )
            for stage in model.backbone
        )
        self.norm = ChannelLayerNorm.from_module(model.norm)
        self.head = linear_from(model.head.weight, model.head.bias) if cfg.num_classes > 0 else nn.Identity()
        self.class_attention = cfg.class_attention_layers > 0
        if self.class_attention:
            self.cls_token = nn.Parameter(model.cls_token.detach().clone().reshape(1, -1, 1, 1))
            self.post_network = nn.ModuleList(ChannelsFirstClassBlock(b) for b in model.post_network)
            self.aux_head = conv1x1_from(model.aux_head.weight, model.aux_head.bias)

    @classmethod
    @torch.no_grad()
    def from_module(cls, model: train.LVT) -> ChannelsFirstLVT:
        return cls(model).eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for stage in self.stages:
            x = stage(x)
        if not self.class_attention:
            return self.head(self.norm(x).mean(dim=(2, 3)))
        B, C, H, W = x.shape
        x = torch.cat([self.cls_token.expand(B, -1, -1, -1), x.reshape(B, C, 1, H * W)], dim=3)
        for block in self.post_network:
            x = block(x)
        x = self.norm(x)
        cls_logits = self.head(x[..., 0:1].reshape(B, C))
        aux_max = self.aux_head(x[..., 1:]).amax(dim=3).reshape(B, -1)  # max over tokens
        return cls_logits + self.aux_weight * aux_max


def _build(model: train.LVT, layout: Layout) -> nn.Module:
    if layout.channels_first:
        return ChannelsFirstLVT.from_module(model)
    deploy = DeployLVT.from_module(model)
    return native_layer_norm(deploy) if layout.native_norm else deploy


register_lowering(train.LVT, _build)

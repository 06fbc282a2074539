"""Lite Vision Transformer (LVT): CSA in stage 1, recursive atrous self-attention (RASA) in stages 2-4.

Paper: Yang et al., "Lite Vision Transformer with Enhanced Self-Attention", CVPR 2022, arXiv 2112.10809.
Official code: github.com/Chenglin-Yang/LVT (classification/models/lvt.py and lvt_cls.py).

This is the training form: it follows the official code op for op and keeps its state_dict keys, so the
published checkpoints load with strict=True. Tensors between blocks are NHWC, as in the original.
Mobile rewrites of these modules live in ``edgevit.lowering.lvt``, never here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from .layers import DropPath, init_conv_fan_out, init_linear_and_norm
from .registry import InputSpec, ModelEntry, register_model

__all__ = ["LVTConfig", "LVT", "CSA", "RASA", "ClassBlock", "LVT_CONFIGS"]


# ----------------------------------------------------------------------------------------------- layers


class SharedDilatedDepthwiseConv(nn.Module):
    """One depthwise 3x3 kernel applied at several dilations, each result through SiLU, summed.

    The official ``ds_conv2d``: the kernel is shared across dilations (1, 3, 5), so one parameter
    sees three receptive fields. No bias in LVT (``qkv_bias=False``).
    """

    def __init__(self, dim: int, dilations: tuple[int, ...] = (1, 3, 5)) -> None:
        super().__init__()
        self.dilations = tuple(dilations)
        self.weight = nn.Parameter(torch.empty(dim, 1, 3, 3))
        nn.init.kaiming_uniform_(self.weight)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = 0
        for d in self.dilations:
            out = out + self.act(F.conv2d(x, self.weight, None, 1, d, d, x.shape[1]))
        return out


class CSA(nn.Module):
    """Convolutional self-attention (stage 1).

    For every stride-2 output location, a 2x2 average pool and a Linear predict one 9x9 attention matrix per
    head over the 3x3 neighbourhood; values are a per-tap linear map of the unfolded 3x3 patch (a 1x1 conv
    with 9 groups); the attended patches are overlap-added back to full resolution (fold) and projected.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        kernel_size: int = 3,
        stride: int = 2,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.num_heads = num_heads
        self.kernel_size = kernel_size
        self.stride = stride
        self.padding = kernel_size // 2
        self.scale = (dim // num_heads) ** -0.5
        taps = kernel_size * kernel_size
        self.attn = nn.Linear(dim, taps * taps * num_heads)
        self.attn_drop = nn.Dropout(attn_drop)
        self.unfold = nn.Unfold(kernel_size, padding=self.padding, stride=stride)
        self.pool = nn.AvgPool2d(stride, stride, ceil_mode=True)
        # per-tap value weights: group t maps tap t's C channels to C channels
        self.weight = nn.Conv2d(taps * dim, taps * dim, 1, groups=taps, bias=False)
        nn.init.normal_(self.weight.weight, 0.0, math.sqrt(2.0 / (taps * dim)))
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        k2 = self.kernel_size * self.kernel_size
        h, w = math.ceil(H / self.stride), math.ceil(W / self.stride)

        attn = self.pool(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        attn = self.attn(attn).reshape(B, h * w, self.num_heads, k2, k2).permute(0, 2, 1, 3, 4)
        attn = (attn * self.scale).softmax(dim=-1)  # B, heads, N, k2 (out tap), k2 (in tap)
        attn = self.attn_drop(attn)

        v = self.unfold(x.permute(0, 3, 1, 2))  # B, C*k2, N
        v = v.reshape(B, C, k2, h * w).permute(0, 3, 2, 1).reshape(B * h * w, k2 * C, 1, 1)
        v = self.weight(v)
        v = v.reshape(B, h * w, k2, self.num_heads, C // self.num_heads).permute(0, 3, 1, 2, 4)

        x = (attn @ v).permute(0, 1, 4, 3, 2).reshape(B, C * k2, h * w)  # channel index c*k2 + tap
        x = F.fold(x, (H, W), self.kernel_size, padding=self.padding, stride=self.stride)
        x = self.proj(x.permute(0, 2, 3, 1))
        return self.proj_drop(x)


class RASA(nn.Module):
    """Recursive atrous self-attention (stages 2-4).

    q = Linear(x) refined by a shared-kernel multi-dilation depthwise conv; K/V from a spatially reduced
    map (strided conv + LayerNorm) when ``sr_ratio > 1``. The attention runs ``recursions`` times with the
    same weights: y1 = SiLU(A(x)), y = SiLU(A(y1 + x)).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        sr_ratio: int = 1,
        dilations: tuple[int, ...] = (1, 3, 5),
        recursions: int = 2,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.dim = dim
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.sr_ratio = sr_ratio
        self.recursions = recursions
        self.q = nn.Linear(dim, dim, bias=False)
        self.kv = nn.Linear(dim, dim * 2, bias=False)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, sr_ratio, sr_ratio)
            self.norm = nn.LayerNorm(dim)
        self.ds = SharedDilatedDepthwiseConv(dim, dilations)
        self.silu = nn.SiLU()
        for m in (self.q, self.kv, self.proj):
            init_linear_and_norm(m)
        if sr_ratio > 1:
            init_conv_fan_out(self.sr)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """One pass of the attention, NHWC in and out."""
        B, H, W, C = x.shape
        heads, d = self.num_heads, C // self.num_heads
        q = self.q(x).permute(0, 3, 1, 2)  # B, C, H, W
        q = self.ds(q).reshape(B, heads, d, H * W).transpose(-1, -2)  # B, heads, N, d

        kv_in = x
        if self.sr_ratio > 1:
            kv_in = self.norm(self.sr(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1))
        kv = self.kv(kv_in).reshape(B, -1, 2, heads, d).permute(2, 0, 3, 1, 4)
        k, v = kv[0], kv[1]

        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        attn = self.attn_drop(attn)
        x = (attn @ v).transpose(1, 2).reshape(B, H, W, C)
        return self.proj_drop(self.proj(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.recursions == 1:
            return self.attention(x)
        x_in = x
        x = self.silu(self.attention(x))
        for _ in range(self.recursions - 1):
            x = x + x_in
            x_in = x
            x = self.silu(self.attention(x))
        return x


class Mlp(nn.Module):
    """Feed-forward: Linear-GELU-Linear, or 1x1 conv, depthwise 3x3, GELU, 1x1 conv (stages 2-4)."""

    def __init__(self, dim: int, hidden: int, depthwise: bool, drop: float = 0.0) -> None:
        super().__init__()
        self.depthwise = depthwise
        if depthwise:
            self.fc1 = nn.Conv2d(dim, hidden, 1)
            self.depconv = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
            self.fc2 = nn.Conv2d(hidden, dim, 1)
        else:
            self.fc1 = nn.Linear(dim, hidden)
            self.fc2 = nn.Linear(hidden, dim)
        self.act = nn.GELU()
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.depthwise:
            return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))
        x = self.fc1(x.permute(0, 3, 1, 2))
        x = self.drop(self.act(self.depconv(x)))
        return self.drop(self.fc2(x)).permute(0, 2, 3, 1)


class Block(nn.Module):
    """Pre-norm transformer block on NHWC tokens: x + attn(norm1(x)), then x + mlp(norm2(x))."""

    def __init__(self, dim: int, attn: nn.Module, mlp: Mlp, drop_path: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = attn
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = mlp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchEmbed(nn.Module):
    """Overlapping patch embedding (strided conv + LayerNorm); NCHW image in (stage 1) or NHWC, NHWC out."""

    def __init__(self, in_chans: int, dim: int, kernel: int, stride: int, nchw_input: bool) -> None:
        super().__init__()
        self.nchw_input = nchw_input
        self.proj = nn.Conv2d(in_chans, dim, kernel, stride, padding=kernel // 2)
        self.norm = nn.LayerNorm(dim)
        init_conv_fan_out(self.proj)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.nchw_input:
            x = x.permute(0, 3, 1, 2)
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


class ClassAttention(nn.Module):
    """Class attention (CaiT/VOLO): only the CLS token queries; keys and values come from all tokens."""

    def __init__(self, dim: int, num_heads: int, attn_drop: float = 0.0, proj_drop: float = 0.0) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.kv = nn.Linear(dim, dim * 2, bias=False)
        self.q = nn.Linear(dim, dim, bias=False)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        kv = self.kv(x).reshape(B, N, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        k, v = kv[0], kv[1]
        q = self.q(x[:, :1, :]).reshape(B, self.num_heads, 1, self.head_dim)
        attn = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
        attn = self.attn_drop(attn)
        cls_embed = (attn @ v).transpose(1, 2).reshape(B, 1, C)
        return self.proj_drop(self.proj(cls_embed))


class ClassMlp(nn.Module):
    """Linear-GELU-Linear of the class-attention post layers."""

    def __init__(self, dim: int, hidden: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class ClassBlock(nn.Module):
    """Post layer of ``lvt_cls``: updates the CLS token only, the patch tokens pass through."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, drop: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = ClassAttention(dim, num_heads, proj_drop=drop)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = ClassMlp(dim, int(dim * mlp_ratio), drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cls_embed = x[:, :1] + self.attn(self.norm1(x))
        cls_embed = cls_embed + self.mlp(self.norm2(cls_embed))
        return torch.cat([cls_embed, x[:, 1:]], dim=1)


# ------------------------------------------------------------------------------------------------ model


@dataclass(frozen=True)
class LVTConfig:
    """One LVT variant. Field defaults are the paper's only size."""

    depths: tuple[int, ...] = (2, 2, 2, 2)
    embed_dims: tuple[int, ...] = (64, 64, 160, 256)
    num_heads: tuple[int, ...] = (2, 2, 5, 8)
    mlp_ratios: tuple[float, ...] = (4, 8, 4, 4)
    mlp_depthwise: tuple[bool, ...] = (False, True, True, True)
    sr_ratios: tuple[int, ...] = (8, 4, 2, 1)  # stage 1 (CSA) ignores its entry, as the official code does
    rasa_dilations: tuple[int, ...] = (1, 3, 5)
    rasa_recursions: int = 2
    class_attention_layers: int = 0  # 2 in lvt_cls (VOLO-style post layers + token-labelling aux head)
    aux_weight: float = 0.5  # inference logits = cls + aux_weight * max over tokens of aux logits
    in_chans: int = 3
    num_classes: int = 1000

    @property
    def num_features(self) -> int:
        return self.embed_dims[-1]


LVT_CONFIGS: dict[str, LVTConfig] = {
    "lvt": LVTConfig(),
    "lvt_cls": LVTConfig(class_attention_layers=2),
    # random-init plumbing checks (tests, CI): every block kind at a fraction of a millisecond per image
    "lvt_test": LVTConfig(
        depths=(1, 1, 1, 1),
        embed_dims=(16, 16, 32, 32),
        num_heads=(1, 2, 2, 4),
        mlp_ratios=(2, 2, 2, 2),
        num_classes=10,
    ),
    # lvt's widths, heads and classes with one block per stage: int8 and fp16 numerics at real widths for half the
    # export time (export time grows with the graph's nodes; the blocks of a stage repeat one kind)
    "lvt_slim_test": LVTConfig(depths=(1, 1, 1, 1)),
}


class LVT(nn.Module):
    """LVT classifier (GAP head, ``lvt``) or with class-attention post layers (``lvt_cls``).

    ``features_only=True`` builds the dense-task backbone of the official code (one LayerNorm per stage)
    and returns the four stage outputs as NCHW tensors.
    """

    def __init__(
        self,
        cfg: LVTConfig,
        features_only: bool = False,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.features_only = features_only
        self.num_classes = cfg.num_classes
        total = sum(cfg.depths)
        stages = []
        for s, depth in enumerate(cfg.depths):
            dim = cfg.embed_dims[s]
            embed = PatchEmbed(
                cfg.in_chans if s == 0 else cfg.embed_dims[s - 1],
                dim,
                kernel=7 if s == 0 else 3,
                stride=4 if s == 0 else 2,
                nchw_input=s == 0,
            )
            blocks = []
            for b in range(depth):
                dpr = drop_path_rate * (b + sum(cfg.depths[:s])) / max(total - 1, 1)
                if s == 0:
                    attn: nn.Module = CSA(dim, cfg.num_heads[s], attn_drop=attn_drop_rate, proj_drop=drop_rate)
                else:
                    attn = RASA(
                        dim,
                        cfg.num_heads[s],
                        cfg.sr_ratios[s],
                        cfg.rasa_dilations,
                        cfg.rasa_recursions,
                        attn_drop=attn_drop_rate,
                        proj_drop=drop_rate,
                    )
                mlp = Mlp(dim, int(dim * cfg.mlp_ratios[s]), cfg.mlp_depthwise[s], drop=drop_rate)
                blocks.append(Block(dim, attn, mlp, dpr))
            stages.append(nn.Sequential(embed, nn.Sequential(*blocks)))
        self.backbone = nn.ModuleList(stages)
        self.feature_info = [
            dict(num_chs=cfg.embed_dims[s], reduction=4 * 2**s, module=f"backbone.{s}") for s in range(4)
        ]

        if features_only:
            self.downstream_norms = nn.ModuleList(nn.LayerNorm(d) for d in cfg.embed_dims)
        else:
            dim = cfg.num_features
            self.norm = nn.LayerNorm(dim)
            self.head = nn.Linear(dim, cfg.num_classes) if cfg.num_classes > 0 else nn.Identity()
            if cfg.class_attention_layers:
                self.post_network = nn.ModuleList(
                    ClassBlock(dim, cfg.num_heads[-1], cfg.mlp_ratios[-1], drop_rate)
                    for _ in range(cfg.class_attention_layers)
                )
                self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
                nn.init.trunc_normal_(self.cls_token, std=0.02)
                self.aux_head = nn.Linear(dim, cfg.num_classes) if cfg.num_classes > 0 else nn.Identity()
        self.apply(init_linear_and_norm)

    # the uniform model interface ------------------------------------------------------------------

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """NCHW image -> last stage tokens as NHWC (B, H/32, W/32, C)."""
        for stage in self.backbone:
            x = stage(x)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """NHWC stage-4 tokens -> logits (or the pooled / CLS features with ``pre_logits``)."""
        if not self.cfg.class_attention_layers:
            x = self.norm(x).mean(dim=(1, 2))
            return x if pre_logits else self.head(x)
        B, _, _, C = x.shape
        x = torch.cat([self.cls_token.expand(B, -1, -1), x.reshape(B, -1, C)], dim=1)
        for block in self.post_network:
            x = block(x)
        x = self.norm(x)
        if pre_logits:
            return x[:, 0]
        return self.head(x[:, 0]) + self.cfg.aux_weight * self.aux_head(x[:, 1:]).max(1)[0]

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The four stage outputs, each through its own LayerNorm, as NCHW (dense tasks)."""
        outs = []
        for stage, norm in zip(self.backbone, self.downstream_norms, strict=True):
            x = stage(x)
            outs.append(norm(x).permute(0, 3, 1, 2).contiguous())
        return outs

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        if self.features_only:
            return self.forward_stages(x)
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier (and aux head) with fresh ones for ``num_classes``."""
        if self.features_only:
            raise ValueError("a features_only model has no classifier")
        dim = self.cfg.num_features
        self.num_classes = num_classes
        self.head = nn.Linear(dim, num_classes) if num_classes > 0 else nn.Identity()
        init_linear_and_norm(self.head)
        if self.cfg.class_attention_layers:
            self.aux_head = nn.Linear(dim, num_classes) if num_classes > 0 else nn.Identity()
            init_linear_and_norm(self.aux_head)


def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: LVT) -> dict[str, torch.Tensor]:
    """Official checkpoints already use our keys; drop the ones a headless model has no use for."""
    if model.features_only:
        return {k: v for k, v in state_dict.items() if k.startswith(("backbone.", "downstream_norms."))}
    return state_dict


def _build(name: str, num_classes: int | None = None, features_only: bool = False, **kwargs) -> LVT:
    cfg = LVT_CONFIGS[name]
    if num_classes is not None:
        cfg = replace(cfg, num_classes=num_classes)
    return LVT(cfg, features_only=features_only, **kwargs)


register_model(
    ModelEntry(
        "lvt",
        partial(_build, "lvt"),
        description="LVT, LayerNorm + global average pool + linear head",
        filter_fn=checkpoint_filter_fn,
        benchmark=True,
    )
)
register_model(
    ModelEntry(
        "lvt_cls",
        partial(_build, "lvt_cls"),
        description="LVT with class-attention post layers and token-labelling aux head (74.8% IN-1k)",
        filter_fn=checkpoint_filter_fn,
    )
)
register_model(
    ModelEntry(
        "lvt_slim_test",
        partial(_build, "lvt_slim_test"),
        description="lvt's widths with one block per stage (1000 classes) for numerics tests at real widths",
        filter_fn=checkpoint_filter_fn,
        test=True,
    )
)
register_model(
    ModelEntry(
        "lvt_test",
        partial(_build, "lvt_test"),
        input_spec=InputSpec(size=64),
        description="tiny LVT (one block per stage, 10 classes, 64x64) for tests and plumbing checks",
        filter_fn=checkpoint_filter_fn,
        test=True,
    )
)

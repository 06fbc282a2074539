"""Blocks shared by the model families: the ViT MLP, attention and block, stochastic depth, weight init and
position-embedding resizing."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def drop_path(x: torch.Tensor, drop_prob: float, training: bool) -> torch.Tensor:
    """Stochastic depth per sample (Huang et al. 2016): zero whole residual branches, rescale the rest."""
    if drop_prob == 0.0 or not training:
        return x
    keep = 1.0 - drop_prob
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
    return x * mask / keep


class DropPath(nn.Module):
    """Module form of :func:`drop_path`."""

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.drop_prob, self.training)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


def init_linear_and_norm(m: nn.Module) -> None:
    """ViT init used by the official LVT code: truncated normal (std .02) Linear, unit LayerNorm."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


def init_conv_fan_out(m: nn.Module) -> None:
    """He-normal init over fan-out for Conv2d, as in the official LVT attention and patch embeds."""
    if isinstance(m, nn.Conv2d):
        fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
        nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
        if m.bias is not None:
            nn.init.zeros_(m.bias)


def resize_pos_embed(pos: torch.Tensor, old: tuple[int, int], new: tuple[int, int], has_cls: bool) -> torch.Tensor:
    """Bicubic resize of a (1, [1 +] H*W, C) position embedding from grid ``old`` to ``new``."""
    cls, grid = (pos[:, :1], pos[:, 1:]) if has_cls else (None, pos)
    C = pos.shape[-1]
    grid = grid.reshape(1, *old, C).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=new, mode="bicubic", align_corners=False)
    grid = grid.flatten(2).transpose(1, 2)
    return grid if cls is None else torch.cat([cls, grid], dim=1)


def grid_of(tokens: int, like: tuple[int, int]) -> tuple[int, int]:
    """The grid with ``tokens`` cells and the aspect ratio of ``like`` (a checkpoint stores tokens flat)."""
    h, w = like
    for rows in range(1, tokens + 1):
        if tokens % rows == 0 and rows * w == (tokens // rows) * h:
            return rows, tokens // rows
    raise ValueError(f"a position embedding of {tokens} tokens fits no grid shaped like {like}")


class Mlp(nn.Module):
    """fc1, GELU, fc2 (timm's ``Mlp`` keys); ``dim_out`` defaults to ``dim``."""

    def __init__(self, dim: int, hidden: int, dim_out: int | None = None) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim_out or dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Attention(nn.Module):
    """ViT multi-head self-attention over (B, N, C) tokens (timm's ``vision_transformer.Attention`` keys)."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        attn = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(B, N, C))


class Block(nn.Module):
    """Pre-norm ViT block (timm keys: norm1, attn, norm2, mlp), LayerNorm eps 1e-6 as timm's ViTs."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, qkv_bias: bool, drop_path: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class TokenStagesClassifier(nn.Module):
    """A hierarchical classifier over stages of (B, N, C) tokens: the head reads the mean of the last stage's
    (normalised) tokens; ``features_only`` returns every stage as a (B, C, H, W) map. Subclasses give
    ``forward_features`` (each stage's tokens and grid), ``_head(num_classes)``, ``features_only`` and
    ``num_features``."""

    def forward(self, image: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        stages = self.forward_features(image)
        if self.features_only:
            return [x.transpose(1, 2).reshape(x.shape[0], -1, *grid) for x, grid in stages]
        return self.head(stages[-1][0].mean(dim=1))

    def reset_classifier(self, num_classes: int) -> None:
        if self.features_only:
            raise ValueError("a features_only model has no classifier")
        self.num_classes = num_classes
        self.head = self._head(num_classes)
        self.head.apply(init_linear_and_norm)

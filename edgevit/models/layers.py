"""Blocks shared by the model families: stochastic depth, weight init and position-embedding resizing."""

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

"""Deploy form of MAFormer: the same function as ``edgevit.models.maformer`` in mobile-delegated ops, once for
every layout (``lowering.layout``). Static shapes (every grid is fixed when the form is built), rank <= 4, no
interpolation, no einsum, no int64. The rewrites, each with its equivalence test in ``tests/test_maformer.py``:

- window partition and reverse at rank <= 4: tokens last, (B, H, W, C) -> (B*H/w, w, W/w, w*C), one rank-4
  transpose, -> (B*windows, w*w, C), and the mirror way back; channels first, where the windows must become
  the batch in front of the channels, one transpose more. The windows then run ViT self-attention as a batch
  (``blocks.DeployAttention``, the softmax scale in K);
- the padding up to whole windows is a static pad (zeros after the norm, as the training form) and a slice;
- GLD's token-axis FC is a Linear over the token axis: tokens last it reads the tokens transposed (C, N),
  channels first the (C, 1, N) row as it is; its bias and the interpolated position embedding are one
  constant added after it;
- fusion attention as 3-D products (``blocks.multi_head_attention``), local queries over the global tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..models import maformer as train
from . import register_lowering
from .blocks import (
    DeployAttention,
    DeployMlp,
    DeployPreNormBlock,
    keys_scaled,
    multi_head_attention,
    require_classifier,
)
from .layout import Grid, Layout
from .weights import conv_copy, linear_from

__all__ = ["DeployMAFormer", "DeployMAFBlock", "DeployWindowAttention", "DeployGLD", "Windows"]


class Windows:
    """Window partition and reverse of a map padded up to whole ``window`` x ``window`` windows, at rank <= 4:
    ``pad`` (tokens -> padded map), ``partition`` (padded map -> windows in the batch), ``reverse`` and ``crop``
    (padded map -> tokens)."""

    def __init__(self, grid: Grid, window: int, layout: Layout) -> None:
        self.grid, self.window, self.layout = grid, window, layout
        self.padded = train.padded_grid(grid, window)

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens of the grid -> the map padded with zeros: (B, Hp, Wp, C) tokens last, (B, C, Hp, Wp) channels
        first."""
        (H, W), (Hp, Wp) = self.grid, self.padded
        if self.layout.channels_first:
            return F.pad(x.reshape(x.shape[0], x.shape[1], H, W), (0, Wp - W, 0, Hp - H))
        return F.pad(x.reshape(x.shape[0], H, W, x.shape[-1]), (0, 0, 0, Wp - W, 0, Hp - H))

    def partition(self, x: torch.Tensor) -> torch.Tensor:
        """The padded map -> the windows' tokens, windows in the batch: (B*nW, w*w, C) tokens last,
        (B*nW, C, 1, w*w) channels first."""
        (Hp, Wp), w = self.padded, self.window
        if self.layout.channels_first:
            C = x.shape[1]
            x = x.reshape(-1, w, Wp // w, w).transpose(1, 2)  # (B*C*nWh, nWw, w, w)
            x = x.reshape(-1, C, (Hp // w) * (Wp // w), w * w).transpose(1, 2)  # (B, nW, C, w*w)
            return x.reshape(-1, C, 1, w * w)
        C = x.shape[-1]
        x = x.reshape(-1, w, Wp // w, w * C).transpose(1, 2)  # (B*nWh, nWw, w, w*C)
        return x.reshape(-1, w * w, C)

    def reverse(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`partition`'s inverse: the padded map."""
        (Hp, Wp), w = self.padded, self.window
        nWh, nWw = Hp // w, Wp // w
        if self.layout.channels_first:
            C = x.shape[1]
            x = x.reshape(-1, nWh * nWw, C, w * w).transpose(1, 2)  # (B, C, nW, w*w)
            return x.reshape(-1, nWw, w, w).transpose(1, 2).reshape(-1, C, Hp, Wp)
        C = x.shape[-1]
        return x.reshape(-1, nWw, w, w * C).transpose(1, 2).reshape(-1, Hp, Wp, C)

    def crop(self, x: torch.Tensor) -> torch.Tensor:
        """The padded map -> the grid's tokens, (B, N, C) or (B, C, 1, N)."""
        (H, W), (Hp, Wp) = self.grid, self.padded
        if self.layout.channels_first:
            x = x[:, :, :H, :W] if (Hp, Wp) != (H, W) else x
            return x.reshape(x.shape[0], x.shape[1], 1, H * W)
        x = x[:, :H, :W] if (Hp, Wp) != (H, W) else x
        return x.reshape(x.shape[0], H * W, x.shape[-1])


class DeployWindowAttention(DeployAttention):
    """The local branch: ViT self-attention with the windows in the batch (the softmax scale in K)."""

    def __init__(self, m: train.WindowAttention, grid: Grid, layout: Layout) -> None:
        super().__init__(m, layout)
        self.windows = Windows(grid, m.window, layout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        W = self.windows
        return W.crop(W.reverse(super().forward(W.partition(W.pad(x)))))


class DeployGLD(nn.Module):
    """GLD at a fixed grid: the token-axis FC as a Linear, then its bias plus the position embedding as one
    constant; out come the global tokens in the layout's token form."""

    def __init__(self, m: train.GlobalDownsampling, layout: Layout) -> None:
        super().__init__()
        self.channels_first = layout.channels_first
        self.fc = linear_from(m.fc.weight)  # over the token axis, which is last in both forms it reads
        constant = (m.position() + m.fc.bias.reshape(1, 1, -1)).detach()  # (1, C, M)
        self.register_buffer("constant", constant.unsqueeze(2) if self.channels_first else constant)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_first:
            return self.fc(x) + self.constant  # (B, C, 1, N) -> (B, C, 1, M)
        return (self.fc(x.transpose(1, 2)) + self.constant).transpose(1, 2)  # (B, N, C) -> (B, M, C)


class DeployFusion(nn.Module):
    """Fusion attention: local queries, global keys and values (the softmax scale in K), local added back."""

    def __init__(self, m: train.FusionAttention, layout: Layout) -> None:
        super().__init__()
        self.layout, self.heads, self.residual = layout, m.heads, m.residual
        C = m.proj.in_features
        w, b = keys_scaled(m.kv, 0, C, m.scale)
        self.dim = C
        self.q = layout.linear(m.q.weight, m.q.bias)
        self.kv = layout.linear(w, b)
        self.proj = layout.linear(m.proj.weight, m.proj.bias)

    def forward(self, local: torch.Tensor, global_tokens: torch.Tensor) -> torch.Tensor:
        L, C = self.layout, self.dim
        kv = self.kv(global_tokens)
        out = self.proj(
            multi_head_attention(L, self.q(local), L.channels(kv, 0, C), L.channels(kv, C, 2 * C), self.heads)
        )
        return local + out if self.residual else out


class DeployMAFBlock(nn.Module):
    """The MAF block: windows' self-attention and GLD on norm1(x), fused; then the MLP."""

    def __init__(self, m: train.MAFBlock, layout: Layout) -> None:
        super().__init__()
        self.norm1 = layout.norm(m.norm1)
        self.local = DeployWindowAttention(m.local, m.grid, layout)
        self.gld = DeployGLD(m.gld, layout)
        self.fuse = DeployFusion(m.fuse, layout)
        self.norm2 = layout.norm(m.norm2)
        self.mlp = DeployMlp.from_module(m.mlp, layout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.norm1(x)
        x = x + self.fuse(self.local(n), self.gld(n))
        return x + self.mlp(self.norm2(x))


class DeployConvNorm(nn.Module):
    """Stem or patch merging: conv on the map, then the LayerNorm on its tokens."""

    def __init__(self, m: train.ConvNorm, layout: Layout) -> None:
        super().__init__()
        self.layout = layout
        self.conv = conv_copy(m.conv)
        self.norm = layout.norm(m.norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) map -> tokens in the layout."""
        L = self.layout
        return self.norm(L.flatten_tokens(L.from_map(self.conv(x))))


class DeployMAFormer(nn.Module):
    """The MAFormer classifier for its one input size: NCHW image in, logits out."""

    def __init__(self, model: train.MAFormer, layout: Layout) -> None:
        super().__init__()
        require_classifier(model)
        cfg = model.cfg
        self.layout = layout
        self.img_size = cfg.img_size
        self.grids = [cfg.stage_grid(s) for s in range(len(cfg.dims))]
        self.stem = DeployConvNorm(model.stem, layout)
        self.downsample = nn.ModuleList(DeployConvNorm(m, layout) for m in model.downsample)
        self.stages = nn.ModuleList()
        for stage in model.stages:
            blocks = [
                DeployMAFBlock(b, layout)
                if isinstance(b, train.MAFBlock)
                else DeployPreNormBlock(b, DeployAttention(b.attn, layout), layout)
                for b in stage.blocks
            ]
            self.stages.append(nn.Sequential(*blocks))
        self.norm = layout.norm(model.norm)
        self.head = linear_from(model.head.weight, model.head.bias)

    @classmethod
    @torch.no_grad()
    def from_module(cls, model: train.MAFormer, layout: Layout) -> DeployMAFormer:
        return cls(model, layout).eval()

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        L = self.layout
        if not torch.jit.is_tracing() and tuple(image.shape[2:]) != self.img_size:
            raise ValueError(
                f"this deploy form is built for {self.img_size} inputs (the GLD token FC fixes the size), got "
                f"{tuple(image.shape[2:])}; build the model at the export input size"
            )
        x = self.stem(image)
        for s, stage in enumerate(self.stages):
            if s:
                x = self.downsample[s - 1](L.to_map(L.unflatten_tokens(x, self.grids[s - 1])))
            x = stage(x)
        return self.head(L.spatial_mean(L.unflatten_tokens(self.norm(x), self.grids[-1])))


register_lowering(train.MAFormer, DeployMAFormer.from_module)

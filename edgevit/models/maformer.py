"""MAFormer: a hierarchical vision transformer with multi-scale attention fusion (training form).

Paper: Wang, Sun et al., "MAFormer: A Transformer Network with Multi-scale Attention Fusion for Visual
Recognition", arXiv 2209.01620 (Neurocomputing 2024). No official code exists, so the model is defined here
from what the paper states; ``docs/maformer.md`` gives the sources and every choice. In brief:

- four stages with patch merging: a 7x7/4 conv stem, then a 3x3/2 conv between stages, each with a LayerNorm;
- MAF blocks in the first two stages, plain transformer blocks in the last two;
- the MAF block's three parts, all reading the block's normalised input:
  1. local: multi-head self-attention inside non-overlapping w x w windows;
  2. global (GLD, "global learning with down-sampling"): a fully connected layer along the *token* axis
     compresses the N tokens to M global tokens, plus a position embedding learned at a small grid and
     bilinearly interpolated to the global grid;
  3. fusion: attention with the local features as queries and the global tokens as keys and values, added to
     the local features; the sum is the block's residual branch, followed by the MLP.

Every choice the paper leaves open is a field of :class:`MAFormerConfig` with its reason beside it
(``MAFormerConfig.reasons()``). The token-axis FC is learned for one input size: a model is built for its
``img_size`` and a checkpoint loads only at the size it was trained at. Mobile rewrites (windows at rank <= 4,
the token FC as a delegated Linear, the position embedding as a constant) live in ``edgevit.lowering.maformer``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import EdgevitError
from .layers import Block, DropPath, Mlp, TokenStagesClassifier, init_linear_and_norm
from .registry import InputSpec, register_config

__all__ = [
    "MAFormerConfig",
    "MAFormer",
    "MAFBlock",
    "WindowAttention",
    "GlobalDownsampling",
    "FusionAttention",
    "MAFORMER_CONFIGS",
    "maformer_filter_fn",
    "window_partition",
    "window_reverse",
]

Grid = tuple[int, int]
LN_EPS = 1e-6  # every LayerNorm, as timm's ViTs


def _why(default, reason: str):
    return field(default=default, metadata={"why": reason})


@dataclass(frozen=True)
class MAFormerConfig:
    """One MAFormer variant. ``reasons()`` gives the one-line reason for every field the paper leaves open."""

    dims: tuple[int, ...] = _why((32, 64, 160, 256), "widths for phones: ~4.7M params, 0.83 GMACs at 224")
    depths: tuple[int, ...] = _why((2, 2, 6, 2), "most blocks at 1/16 as in Swin and CSWin, the paper's baselines")
    heads: tuple[int, ...] = _why((1, 2, 5, 8), "head dim 32 throughout, as Swin")
    maf_stages: int = _why(2, "the paper: MAF blocks in the early stages, plain transformer blocks later")
    window: int = _why(7, "Swin's and CSWin's 7x7 windows; a grid that is no multiple is padded (Swin's way)")
    global_grids: tuple[Grid, ...] = _why(
        ((7, 7), (7, 7)),
        "GLD's output grid per MAF stage: 49 global tokens; the paper's ratio 0.5 would need a 3136x1568 "
        "token FC (4.9M weights) per stage-1 block",
    )
    pos_grid: Grid = _why((7, 7), "the GLD position embedding is learned here and bilinearly resized per block")
    mlp_ratio: float = _why(4.0, "Swin, CSWin and ViT")
    fusion_residual: bool = _why(True, "fusion adds the attended global context to the local features it queried")
    qkv_bias: bool = _why(True, "Swin and CSWin")
    drop_path_rate: float = _why(0.05, "stochastic depth for a small model (Swin-T uses 0.2 at 28M)")
    in_chans: int = 3
    num_classes: int = 1000
    img_size: Grid = (224, 224)

    def __post_init__(self) -> None:
        if isinstance(self.img_size, int):  # a square size may be given as one number, as the registry does
            object.__setattr__(self, "img_size", (self.img_size, self.img_size))
        if not 0 <= self.maf_stages <= len(self.dims) or len(self.global_grids) != self.maf_stages:
            raise ValueError("give one GLD grid per MAF stage (global_grids) and at most one MAF stage per stage")

    @classmethod
    def reasons(cls) -> dict[str, str]:
        return {f.name: f.metadata["why"] for f in fields(cls) if "why" in f.metadata}

    def stage_grid(self, stage: int) -> Grid:
        """The token grid of ``stage``: the 4x stem, then a stride-2 conv (padding 1) per stage."""
        h, w = (-(-n // 4) for n in self.img_size)
        for _ in range(stage):
            h, w = -(-h // 2), -(-w // 2)
        return (h, w)


# ----------------------------------------------------------------------------------------------- windows


def window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """(B, H, W, C) with H and W multiples of ``window`` -> (B * windows, window * window, C), row-major."""
    B, H, W, C = x.shape
    x = x.view(B, H // window, window, W // window, window, C)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window * window, C)


def window_reverse(windows: torch.Tensor, window: int, grid: Grid) -> torch.Tensor:
    """:func:`window_partition`'s inverse: (B * windows, window * window, C) -> (B, H, W, C)."""
    H, W = grid
    C = windows.shape[-1]
    x = windows.view(-1, H // window, W // window, window, window, C)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, H, W, C)


def padded_grid(grid: Grid, window: int) -> Grid:
    """``grid`` padded up to whole windows."""
    return (-(-grid[0] // window) * window, -(-grid[1] // window) * window)


# ------------------------------------------------------------------------------------------------ layers


def _heads_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, scale: float) -> torch.Tensor:
    """softmax(q k^T * scale) v per head on (B, N, C) queries and (B, M, C) keys/values -> (B, N, C)."""
    B, N, C = q.shape
    q, k, v = (t.reshape(B, -1, heads, C // heads).transpose(1, 2) for t in (q, k, v))
    attn = ((q * scale) @ k.transpose(-2, -1)).softmax(dim=-1)
    return (attn @ v).transpose(1, 2).reshape(B, N, C)


class WindowAttention(nn.Module):
    """The local branch: multi-head self-attention inside non-overlapping windows (no shift)."""

    def __init__(self, dim: int, heads: int, window: int, qkv_bias: bool) -> None:
        super().__init__()
        self.num_heads, self.window = heads, window
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, grid: Grid) -> torch.Tensor:
        B, N, C = x.shape
        H, W = grid
        Hp, Wp = padded_grid(grid, self.window)
        # padded after the norm, as Swin: the padding tokens are zeros and their keys the projections' biases
        x = F.pad(x.view(B, H, W, C), (0, 0, 0, Wp - W, 0, Hp - H))
        q, k, v = self.qkv(window_partition(x, self.window)).chunk(3, dim=-1)
        out = self.proj(_heads_attention(q, k, v, self.num_heads, self.scale))
        return window_reverse(out, self.window, (Hp, Wp))[:, :H, :W].reshape(B, N, C)


class GlobalDownsampling(nn.Module):
    """GLD: a fully connected layer along the token axis (N -> M global tokens) plus a position embedding
    learned at ``pos_grid`` and bilinearly interpolated to the global grid."""

    def __init__(self, dim: int, tokens: int, grid: Grid, pos_grid: Grid) -> None:
        super().__init__()
        self.grid = grid
        self.fc = nn.Linear(tokens, grid[0] * grid[1])
        self.pos = nn.Parameter(torch.zeros(1, dim, *pos_grid))
        nn.init.trunc_normal_(self.pos, std=0.02)

    def position(self) -> torch.Tensor:
        """The position embedding at the global grid, (1, C, M)."""
        return F.interpolate(self.pos, size=self.grid, mode="bilinear", align_corners=False).flatten(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.fc(x.transpose(1, 2)) + self.position()).transpose(1, 2)  # (B, M, C)


class FusionAttention(nn.Module):
    """Local features as queries over the global tokens as keys and values; the local features added back."""

    def __init__(self, dim: int, heads: int, qkv_bias: bool, residual: bool) -> None:
        super().__init__()
        self.heads, self.residual = heads, residual
        self.scale = (dim // heads) ** -0.5
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, dim * 2, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, local: torch.Tensor, global_tokens: torch.Tensor) -> torch.Tensor:
        k, v = self.kv(global_tokens).chunk(2, dim=-1)
        out = self.proj(_heads_attention(self.q(local), k, v, self.heads, self.scale))
        return local + out if self.residual else out


class MAFBlock(nn.Module):
    """Multi-scale attention fusion block: x + fuse(local(n), GLD(n)) with n = norm1(x), then x + mlp(norm2(x))."""

    def __init__(self, dim: int, heads: int, grid: Grid, global_grid: Grid, cfg: MAFormerConfig, drop_path: float):
        super().__init__()
        self.grid = grid
        self.norm1 = nn.LayerNorm(dim, eps=LN_EPS)
        self.local = WindowAttention(dim, heads, cfg.window, cfg.qkv_bias)
        self.gld = GlobalDownsampling(dim, grid[0] * grid[1], global_grid, cfg.pos_grid)
        self.fuse = FusionAttention(dim, heads, cfg.qkv_bias, cfg.fusion_residual)
        self.norm2 = nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp = Mlp(dim, int(dim * cfg.mlp_ratio))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.norm1(x)
        x = x + self.drop_path(self.fuse(self.local(n, self.grid), self.gld(n)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class ConvNorm(nn.Module):
    """A strided conv and a LayerNorm on its tokens: the stem (7x7/4) and the patch merging (3x3/2)."""

    def __init__(self, dim_in: int, dim_out: int, kernel: int, stride: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(dim_in, dim_out, kernel, stride, kernel // 2)
        self.norm = nn.LayerNorm(dim_out, eps=LN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) map -> (B, N, C_out) tokens."""
        return self.norm(self.conv(x).flatten(2).transpose(1, 2))


class MAFormerStage(nn.Module):
    def __init__(self, blocks: list[nn.Module]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


class MAFormer(TokenStagesClassifier):
    """MAFormer classifier. ``features_only=True`` gives each stage's output as a (B, C, H, W) map instead of
    logits, and no classifier."""

    def __init__(self, cfg: MAFormerConfig, features_only: bool = False) -> None:
        super().__init__()
        if any(n % 32 for n in cfg.img_size):
            raise ValueError(f"MAFormer takes sides that are multiples of 32, got {cfg.img_size}")
        self.cfg = cfg
        self.features_only = features_only
        self.num_classes = cfg.num_classes
        self.stem = ConvNorm(cfg.in_chans, cfg.dims[0], 7, 4)
        self.downsample = nn.ModuleList(ConvNorm(cfg.dims[s], cfg.dims[s + 1], 3, 2) for s in range(len(cfg.dims) - 1))
        rates = iter(torch.linspace(0, cfg.drop_path_rate, sum(cfg.depths)).tolist())
        self.stages = nn.ModuleList()
        for s, (dim, depth, heads) in enumerate(zip(cfg.dims, cfg.depths, cfg.heads, strict=True)):
            grid = cfg.stage_grid(s)
            if s < cfg.maf_stages:
                blocks = [MAFBlock(dim, heads, grid, cfg.global_grids[s], cfg, next(rates)) for _ in range(depth)]
            else:
                blocks = [Block(dim, heads, cfg.mlp_ratio, cfg.qkv_bias, next(rates)) for _ in range(depth)]
            self.stages.append(MAFormerStage(blocks))
        self.num_features = cfg.dims[-1]
        self.norm = nn.LayerNorm(self.num_features, eps=LN_EPS)
        self.head = None if features_only else self._head(cfg.num_classes)
        self.apply(init_linear_and_norm)

    def forward_features(self, image: torch.Tensor) -> list[tuple[torch.Tensor, Grid]]:
        """Every stage's tokens (B, N, C) and grid; the last stage's normalised."""
        if tuple(image.shape[2:]) != self.cfg.img_size:
            raise ValueError(
                f"this MAFormer is built for {self.cfg.img_size} inputs (its token-axis FC fixes the size), "
                f"got {tuple(image.shape[2:])}"
            )
        x = self.stem(image)
        out = []
        for s, stage in enumerate(self.stages):
            grid = self.cfg.stage_grid(s)
            if s:
                prev = out[-1][1]
                x = self.downsample[s - 1](x.transpose(1, 2).reshape(x.shape[0], -1, *prev))
            x = stage(x)
            out.append((x, grid))
        out[-1] = (self.norm(x), out[-1][1])
        return out

    def _head(self, num_classes: int) -> nn.Linear:
        return nn.Linear(self.num_features, num_classes)


MAFORMER_CONFIGS: dict[str, MAFormerConfig] = {
    "maformer_tiny": MAFormerConfig(),
    # closer to the paper: CSWin-T's widths and depths (the paper's baseline), GLD halving each side of the grid
    # (ratio 1/4: the token FC stays at 2.5M weights in stage 1) and the position embedding upsampled to it
    "maformer_small": MAFormerConfig(
        dims=(64, 128, 256, 512),
        depths=(1, 2, 21, 1),
        heads=(2, 4, 8, 16),
        global_grids=((28, 28), (14, 14)),
        pos_grid=(14, 14),
        drop_path_rate=0.2,
    ),
    # random-init plumbing checks (tests, CI) at 64x64: 3x3 windows pad both MAF grids (16 and 8), and the
    # position embedding is interpolated from 2x2 to stage 1's 4x4 global grid
    "maformer_test": MAFormerConfig(
        dims=(16, 32, 48, 64),
        depths=(1, 1, 1, 1),
        heads=(1, 2, 3, 4),
        window=3,
        global_grids=((4, 4), (2, 2)),
        pos_grid=(2, 2),
        num_classes=10,
        img_size=(64, 64),
    ),
}


def maformer_filter_fn(state_dict: dict[str, torch.Tensor], model: MAFormer) -> dict[str, torch.Tensor]:
    """A checkpoint as the model loads it: refused, in one line, at another input size than it was trained at
    (the token-axis FC is learned per grid); no classifier for a features_only model."""
    own = model.state_dict()
    for key, value in state_dict.items():
        if key.endswith("gld.fc.weight") and key in own and value.shape != own[key].shape:
            tokens = value.shape[1]
            raise EdgevitError(
                f"this checkpoint's MAF blocks were trained for {tokens} tokens in {key.split('.blocks')[0]}, "
                f"not {own[key].shape[1]} (input {model.cfg.img_size[0]}x{model.cfg.img_size[1]}): "
                "export it at the input size it was trained at (--input-size)"
            )
    if model.features_only:
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith("head.")}
    return state_dict


# ImageNet's usual data config (bicubic, crop 0.9, as Swin); sides are multiples of 32 (four halvings after
# the 4x stem) and each size is its own model (the token FC)
MAFORMER_SPEC = InputSpec(size=224, size_multiple=32, crop_pct=0.9)


_register = partial(register_config, MAFormer, MAFORMER_CONFIGS, spec=MAFORMER_SPEC, filter_fn=maformer_filter_fn)

_register(
    "maformer_tiny",
    "MAFormer for phones: MAF blocks (7x7 windows, 49 GLD tokens) in stages 1-2, dims 32-256",
    benchmark=True,
)
_register("maformer_small", "MAFormer with CSWin-T's widths and depths, GLD to a quarter of the tokens, dims 64-512")
_register(
    "maformer_test",
    "tiny MAFormer (four stages, 10 classes, 64x64) for tests and plumbing checks",
    spec=replace(MAFORMER_SPEC, size=64),
    test=True,
)

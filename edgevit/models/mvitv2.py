"""MViTv2: multiscale vision transformer with pooling attention and decomposed relative positions.

Paper: Li, Wu, Fan, Mangalam, Xiong, Malik and Feichtenhofer, "MViTv2: Improved Multiscale Vision
Transformers for Classification and Detection", CVPR 2022, arXiv 2112.01526. Official code:
github.com/facebookresearch/mvit (``mvit/models``); timm's ``mvitv2.py`` keeps its modules and renames the
flat ``blocks.N`` into stages.

This is the training form with timm's state_dict keys, so timm's checkpoints load with strict=True, and so do
the official ones (flat ``blocks.N``, ``blocks.N.proj`` for the shortcut, ``head.projection``, under
``model_state``), which the filter renames as timm's does. In brief:

- a 7x7/s4 conv cuts the image into tokens; no CLS token, no absolute position embedding;
- four stages; the first block of stages 2-4 pools Q with stride 2 (halving the grid) and doubles channels
  and heads, its residual projected and max-pooled (kernel 3, stride 2);
- every block pools Q, K and V with a depthwise 3x3 conv shared by the heads, then a LayerNorm per head; K/V
  are pooled by a stride that starts at 4 and halves with each Q stride (so K/V meet at 1/16 of the input);
- the attention logits get decomposed relative positions: q . R_h[dist(row)] + q . R_w[dist(column)],
  tables learned per block; the pooled Q is added to the attention output (residual pooling);
- LayerNorm, the mean of all tokens, a Linear classifier.

Only timm's class-token-free, ``expand_attn``, conv-pooling configuration (every ImageNet-1k checkpoint of
``mvitv2_tiny``/``small``/``base``) is built here. Mobile rewrites (the relative positions as constant
products, no gather, no einsum, rank <= 4) live in ``edgevit.lowering.mvitv2``.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass, replace
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from .layers import DropPath, Mlp, TokenStagesClassifier, init_linear_and_norm
from .mmvit import shortcut_pool, skip_geometry
from .registry import InputSpec, register_config

__all__ = ["MViTv2Config", "MViTv2", "MultiScaleAttention", "MultiScaleBlock", "MVITV2_CONFIGS", "mvitv2_filter_fn"]

LN_EPS = 1e-6  # every LayerNorm of MViTv2
Grid = tuple[int, int]


@dataclass(frozen=True)
class MViTv2Config:
    """One MViTv2 variant, in timm's terms; widths and heads double at each stage."""

    depths: tuple[int, ...] = (1, 2, 5, 2)
    embed_dim: int = 96  # stage 1's channels
    num_heads: int = 1  # stage 1's heads
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    residual_pooling: bool = True
    kernel_qkv: int = 3  # the pooling convs' kernel
    stride_q: tuple[int, ...] = (1, 2, 2, 2)  # per stage, in its first block
    stride_kv_adaptive: int = 4  # stage 1's K/V pooling stride, divided by every Q stride after it
    patch_kernel: int = 7
    patch_stride: int = 4
    patch_padding: int = 3
    drop_path_rate: float = 0.0
    in_chans: int = 3
    num_classes: int = 1000
    img_size: tuple[int, int] = (224, 224)

    def __post_init__(self) -> None:
        if isinstance(self.img_size, int):
            object.__setattr__(self, "img_size", (self.img_size, self.img_size))

    @property
    def dims(self) -> tuple[int, ...]:
        return tuple(self.embed_dim * 2**i for i in range(len(self.depths)))

    @property
    def heads(self) -> tuple[int, ...]:
        return tuple(self.num_heads * 2**i for i in range(len(self.depths)))

    @property
    def stride_kv(self) -> tuple[int, ...]:
        """K/V pooling stride per stage (timm's ``stride_kv_adaptive``)."""
        strides, stride = [], self.stride_kv_adaptive
        for q in self.stride_q:
            if q > 1:
                stride = max(stride // q, 1)
            strides.append(stride)
        return tuple(strides)

    @property
    def patch_grid(self) -> Grid:
        return tuple(n // self.patch_stride for n in self.img_size)


def pooled_grid(grid: Grid, stride: int, kernel: int) -> Grid:
    """The grid a pooling conv (padding kernel // 2) leaves."""
    return tuple((n + 2 * (kernel // 2) - kernel) // stride + 1 for n in grid)


def rel_pos_length(size: int, stride_q: int, stride_kv: int) -> int:
    """Rows of a relative-position table along an axis of ``size`` tokens (timm's ``rel_sp_dim``)."""
    return 2 * max(size // stride_q, size // stride_kv) - 1


def rel_pos_index(q_size: int, k_size: int) -> torch.Tensor:
    """(q_size, k_size) table rows: the distance between query i and key j in units of the finer grid."""
    q_ratio, k_ratio = max(k_size / q_size, 1.0), max(q_size / k_size, 1.0)
    dist = torch.arange(q_size).unsqueeze(-1) * q_ratio - torch.arange(k_size).unsqueeze(0) * k_ratio
    return (dist + (k_size - 1) * k_ratio).long()


def rel_pos_tables(
    rel_pos_h: torch.Tensor, rel_pos_w: torch.Tensor, q_grid: Grid, k_grid: Grid
) -> tuple[torch.Tensor, torch.Tensor]:
    """The tables gathered for one query and key grid: R_h (q_h, k_h, d) and R_w (q_w, k_w, d)."""
    return rel_pos_h[rel_pos_index(q_grid[0], k_grid[0])], rel_pos_w[rel_pos_index(q_grid[1], k_grid[1])]


class MultiScaleAttention(nn.Module):
    """Pooling attention with decomposed relative positions (timm's ``MultiScaleAttention``, conv mode)."""

    def __init__(
        self,
        dim: int,
        dim_out: int,
        feat_size: Grid,
        num_heads: int,
        qkv_bias: bool,
        kernel: int,
        stride_q: int,
        stride_kv: int,
        residual_pooling: bool,
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.dim_out = dim_out
        self.head_dim = dim_out // num_heads
        self.scale = self.head_dim**-0.5
        self.kernel, self.stride_q, self.stride_kv = kernel, stride_q, stride_kv
        self.residual_pooling = residual_pooling
        self.qkv = nn.Linear(dim, dim_out * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim_out, dim_out)
        d = self.head_dim

        def pool(stride: int) -> tuple[nn.Module | None, nn.Module | None]:
            if kernel == 1 and stride == 1:  # timm skips a 1x1, stride-1 pooling and its norm
                return None, None
            conv = nn.Conv2d(d, d, kernel, stride, kernel // 2, groups=d, bias=False)
            return conv, nn.LayerNorm(d, eps=LN_EPS)

        self.pool_q, self.norm_q = pool(stride_q)
        self.pool_k, self.norm_k = pool(stride_kv)
        self.pool_v, self.norm_v = pool(stride_kv)
        rows = [rel_pos_length(n, stride_q, stride_kv) for n in feat_size]
        self.rel_pos_h = nn.Parameter(torch.zeros(rows[0], d))
        self.rel_pos_w = nn.Parameter(torch.zeros(rows[1], d))
        nn.init.trunc_normal_(self.rel_pos_h, std=0.02)
        nn.init.trunc_normal_(self.rel_pos_w, std=0.02)

    def _pool(self, x: torch.Tensor, grid: Grid, conv: nn.Module | None, norm: nn.Module | None):
        """(B, heads, N, d) -> pooled (B, heads, N', d) and its grid; every head through the same conv."""
        if conv is None:
            return x, grid
        B, heads, _, d = x.shape
        x = conv(x.reshape(B * heads, *grid, d).permute(0, 3, 1, 2))
        grid = (x.shape[2], x.shape[3])
        return norm(x.reshape(B, heads, d, -1).transpose(2, 3)), grid

    def forward(self, x: torch.Tensor, grid: Grid) -> tuple[torch.Tensor, Grid]:
        B, N, _ = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        q, q_grid = self._pool(q, grid, self.pool_q, self.norm_q)
        k, k_grid = self._pool(k, grid, self.pool_k, self.norm_k)
        v, _ = self._pool(v, grid, self.pool_v, self.norm_v)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        attn = attn + self.rel_pos(q, q_grid, k_grid)
        x = attn.softmax(dim=-1) @ v
        if self.residual_pooling:
            x = x + q
        x = x.transpose(1, 2).reshape(B, -1, self.dim_out)
        return self.proj(x), q_grid

    def rel_pos(self, q: torch.Tensor, q_grid: Grid, k_grid: Grid) -> torch.Tensor:
        """(B, heads, Nq, Nk) logit terms: each query against its row and column distance to each key."""
        B, heads, _, d = q.shape
        r_h, r_w = rel_pos_tables(self.rel_pos_h, self.rel_pos_w, q_grid, k_grid)
        r_q = q.reshape(B, heads, *q_grid, d)
        rel_h = torch.einsum("byhwc,hkc->byhwk", r_q, r_h)
        rel_w = torch.einsum("byhwc,wkc->byhwk", r_q, r_w)
        bias = rel_h.unsqueeze(-1) + rel_w.unsqueeze(-2)  # B, heads, q_h, q_w, k_h, k_w
        return bias.reshape(B, heads, q_grid[0] * q_grid[1], k_grid[0] * k_grid[1])


class MultiScaleBlock(nn.Module):
    """Pre-norm pooling-attention block; a Q-strided block projects (``dim != dim_out``) and max-pools its
    attention residual, as timm's ``expand_attn`` configuration does."""

    def __init__(
        self,
        dim: int,
        dim_out: int,
        num_heads: int,
        feat_size: Grid,
        cfg: MViTv2Config,
        stride_q: int,
        stride_kv: int,
        drop_path: float,
    ) -> None:
        super().__init__()
        self.stride_q = stride_q
        self.norm1 = nn.LayerNorm(dim, eps=LN_EPS)
        self.shortcut_proj_attn = nn.Linear(dim, dim_out) if dim != dim_out else None
        kernel, padding = skip_geometry(stride_q)
        self.shortcut_pool_attn = nn.MaxPool2d(kernel, stride_q, padding) if stride_q > 1 else None
        self.attn = MultiScaleAttention(
            dim,
            dim_out,
            feat_size,
            num_heads,
            cfg.qkv_bias,
            cfg.kernel_qkv,
            stride_q,
            stride_kv,
            cfg.residual_pooling,
        )
        self.drop_path1 = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim_out, eps=LN_EPS)
        self.mlp = Mlp(dim_out, int(dim_out * cfg.mlp_ratio), dim_out)
        self.drop_path2 = DropPath(drop_path)

    def forward(self, x: torch.Tensor, grid: Grid) -> tuple[torch.Tensor, Grid]:
        x_norm = self.norm1(x)
        # as in the official code: without a projection the shortcut is the un-normalised input
        shortcut = x if self.shortcut_proj_attn is None else self.shortcut_proj_attn(x_norm)
        if self.stride_q > 1:
            shortcut = shortcut_pool(shortcut, grid, self.stride_q, has_cls=False)
        y, grid = self.attn(x_norm, grid)
        x = shortcut + self.drop_path1(y)
        x = x + self.drop_path2(self.mlp(self.norm2(x)))
        return x, grid


class MultiScaleVitStage(nn.Module):
    def __init__(self, cfg: MViTv2Config, stage: int, dim: int, feat_size: Grid, drop_path: list[float]) -> None:
        super().__init__()
        dim_out, heads = cfg.dims[stage], cfg.heads[stage]
        self.blocks = nn.ModuleList()
        for i in range(cfg.depths[stage]):
            stride_q = cfg.stride_q[stage] if i == 0 else 1
            block = MultiScaleBlock(dim, dim_out, heads, feat_size, cfg, stride_q, cfg.stride_kv[stage], drop_path[i])
            self.blocks.append(block)
            dim = dim_out
            if i == 0:
                feat_size = tuple(n // stride_q for n in feat_size)

    def forward(self, x: torch.Tensor, grid: Grid) -> tuple[torch.Tensor, Grid]:
        for block in self.blocks:
            x, grid = block(x, grid)
        return x, grid


class PatchEmbed(nn.Module):
    def __init__(self, cfg: MViTv2Config) -> None:
        super().__init__()
        self.proj = nn.Conv2d(cfg.in_chans, cfg.embed_dim, cfg.patch_kernel, cfg.patch_stride, cfg.patch_padding)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, Grid]:
        x = self.proj(image)
        return x.flatten(2).transpose(1, 2), (x.shape[2], x.shape[3])


class MViTv2(TokenStagesClassifier):
    """MViTv2 classifier (timm's ``MultiScaleVit``). ``features_only=True`` gives each stage's output as a
    (B, C, H, W) map instead of logits, and no classifier."""

    def __init__(self, cfg: MViTv2Config, features_only: bool = False) -> None:
        super().__init__()
        if any(n % (cfg.patch_stride * 8) for n in cfg.img_size):
            raise ValueError(f"MViTv2 takes sides that are multiples of {cfg.patch_stride * 8}, got {cfg.img_size}")
        self.cfg = cfg
        self.features_only = features_only
        self.num_classes = cfg.num_classes
        self.patch_embed = PatchEmbed(cfg)
        rates = torch.linspace(0, cfg.drop_path_rate, sum(cfg.depths)).tolist()
        self.stages = nn.ModuleList()
        dim, grid, first = cfg.embed_dim, cfg.patch_grid, 0
        for s, depth in enumerate(cfg.depths):
            self.stages.append(MultiScaleVitStage(cfg, s, dim, grid, rates[first : first + depth]))
            dim, first = cfg.dims[s], first + depth
            grid = tuple(n // cfg.stride_q[s] for n in grid)
        self.num_features = dim
        self.norm = nn.LayerNorm(dim, eps=LN_EPS)
        self.head = None if features_only else self._head(cfg.num_classes)
        self.apply(init_linear_and_norm)

    def _head(self, num_classes: int) -> nn.Sequential:
        fc = nn.Linear(self.num_features, num_classes)
        return nn.Sequential(OrderedDict([("drop", nn.Dropout(0.0)), ("fc", fc)]))  # timm's keys: head.fc

    def forward_features(self, image: torch.Tensor) -> list[tuple[torch.Tensor, Grid]]:
        """Every stage's tokens (B, N, C) and grid; the last stage's normalised."""
        x, grid = self.patch_embed(image)
        out = []
        for stage in self.stages:
            x, grid = stage(x, grid)
            out.append((x, grid))
        out[-1] = (self.norm(x), grid)
        return out


MVITV2_CONFIGS: dict[str, MViTv2Config] = {
    "mvitv2_tiny": MViTv2Config(),
    "mvitv2_small": MViTv2Config(depths=(1, 2, 11, 2)),
    # for phones: mvitv2_tiny at half the width and MLP ratio 3 (5.28M params, 1.23 GMACs at 224); pooling and
    # relative positions kept, since they are what makes it MViTv2
    "mvitv2_mobile": MViTv2Config(embed_dim=48, mlp_ratio=3.0),
    # random-init plumbing checks (tests, CI): four stages, a Q-strided and a plain block in stage 2, at 64x64
    "mvitv2_test": MViTv2Config(depths=(1, 2, 1, 1), embed_dim=16, num_classes=10, img_size=(64, 64)),
}


def _official_names(state_dict: dict[str, torch.Tensor], depths: tuple[int, ...]) -> dict[str, torch.Tensor]:
    """The official repository's flat ``blocks.N`` (``blocks.N.proj`` the shortcut, ``head.projection``) in
    timm's names, as timm's ``checkpoint_filter_fn`` maps them."""
    stage_of = [(s, b) for s, depth in enumerate(depths) for b in range(depth)]

    def rename(key: str) -> str:
        match = re.match(r"blocks\.(\d+)\.(.*)", key)
        if match:
            index, rest = int(match.group(1)), match.group(2)
            if index >= len(stage_of):
                return key  # a deeper model's block: strict loading names it
            s, b = stage_of[index]
            key = f"stages.{s}.blocks.{b}." + ("shortcut_proj_attn" + rest[4:] if rest.startswith("proj.") else rest)
        return key.replace("head.projection", "head.fc")

    return {rename(k): v for k, v in state_dict.items()}


def mvitv2_filter_fn(state_dict: dict[str, torch.Tensor], model: MViTv2) -> dict[str, torch.Tensor]:
    """Official names as timm's; relative-position tables resized linearly to the model's (a checkpoint
    trained at another input size); no classifier for a features_only model."""
    if "stages.0.blocks.0.norm1.weight" not in state_dict:
        state_dict = _official_names(state_dict, model.cfg.depths)
    own = model.state_dict()
    state = {}
    for key, value in state_dict.items():
        if "rel_pos" in key and key in own and value.shape[0] != own[key].shape[0]:
            rows = own[key].shape[0]
            value = F.interpolate(value.t().unsqueeze(0), size=rows, mode="linear").squeeze(0).t()
        state[key] = value
    if model.features_only:
        state = {k: v for k, v in state.items() if not k.startswith("head.")}
    return state


# timm's data config: bicubic, crop 0.9; the grid halves three times after the 4x stem, so sides are multiples
# of 32, and the relative-position tables are learned for one size (resized when a checkpoint is loaded)
MVITV2_SPEC = InputSpec(size=224, size_multiple=32, crop_pct=0.9)


_register = partial(
    register_config,
    MViTv2,
    MVITV2_CONFIGS,
    spec=MVITV2_SPEC,
    filter_fn=mvitv2_filter_fn,
    classifier=("head.fc", "head.projection"),  # timm's name, the official code's
)

_register("mvitv2_tiny", "MViTv2-T (timm mvitv2_tiny), pooling attention with relative positions, dims 96-768")
_register("mvitv2_small", "MViTv2-S (timm mvitv2_small), MViTv2-T with 11 blocks in stage 3")
_register("mvitv2_mobile", "MViTv2 for phones: MViTv2-T's depths at dims 48-384, MLP ratio 3", benchmark=True)
_register(
    "mvitv2_test",
    "tiny MViTv2 (four stages, 10 classes, 64x64) for tests and plumbing checks",
    spec=replace(MVITV2_SPEC, size=64),
    test=True,
)

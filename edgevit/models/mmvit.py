"""MMViT: multiscale multiview vision transformer (training form).

Paper: Liu et al., "MMViT: Multiscale Multiview Vision Transformers", Interspeech 2023, arXiv 2305.00104.
No official code exists. What is known, and from where, is in ``docs/mmvit.md``; in short:

- the input becomes several views through 2-D convs of different kernel and stride (kernel > stride, so
  patches overlap); each view gets a learnable position embedding; view 1 carries a CLS token, which the
  head reads;
- four channel-resolution stages, 16 blocks: per stage n pooling self-attention blocks per view (MViTv2:
  Q/K/V pooled by a strided depthwise conv + LayerNorm, residual pooling), then one cross-attention block
  (every view pooled, tokens concatenated, one joint attention, split back per view, residual per view),
  then a scaled self-attention block per view (Q stride 2, channels and heads doubled) into the next stage.

Every choice the paper does not fix is a field of :class:`MMViTConfig` with its reason beside it
(``MMViTConfig.reasons()``). Tokens are (B, N, C) with the CLS first where a view has one.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from .layers import DropPath, Mlp, grid_of, init_linear_and_norm, resize_pos_embed
from .registry import InputSpec, register_config

__all__ = ["MMViTConfig", "MMViT", "PoolingAttention", "SelfBlock", "CrossBlock", "MMVIT_CONFIGS", "mmvit_filter_fn"]

LN_EPS = 1e-6  # MViTv2's LayerNorm epsilon


def _why(default, reason: str):
    return field(default=default, metadata={"why": reason})


@dataclass(frozen=True)
class MMViTConfig:
    """One MMViT variant. ``reasons()`` gives the one-line reason for every field the paper leaves open."""

    view_kernels: tuple[int, ...] = _why(
        (7, 15), "two views (the paper's summary); MViTv2's 7x7/s4 stem, then a coarser view at twice the stride"
    )
    view_strides: tuple[int, ...] = _why((4, 8), "kernel = 2*stride - 1: overlapping patches, as the paper asks")
    dims: tuple[int, ...] = _why((16, 32, 64, 128), "channels per stage, doubled by each scaled block (MViT)")
    heads: tuple[int, ...] = _why((1, 2, 4, 8), "head dim 16 throughout; heads double with channels (MViTv2)")
    self_blocks: tuple[int, ...] = _why((0, 0, 9, 1), "the only published layout (third-party, 16 blocks)")
    mlp_ratio: float = _why(4.0, "MViTv2 default")
    kv_strides: tuple[int, ...] = _why(
        (4, 2), "K/V pooling stride per view in stage 1 (both views' K/V meet at 1/16 of the input), halved per stage"
    )
    pool_kernel: int = _why(3, "MViTv2's 3x3 depthwise pooling kernel, in every block (stride 1 included)")
    residual_pooling: bool = _why(True, "MViTv2's residual pooling connection (adds pooled Q to the output)")
    qkv_bias: bool = _why(True, "MViTv2 default")
    share_view_weights: bool = _why(False, "views are processed 'in parallel': separate streams, as in MTV/CrossViT")
    drop_path_rate: float = _why(0.05, "stochastic depth for a small model (MViTv2 uses 0.1-0.3 at 24-52M)")
    in_chans: int = 3
    num_classes: int = 1000
    img_size: tuple[int, int] = (224, 224)

    def __post_init__(self) -> None:
        if isinstance(self.img_size, int):  # a square size may be given as one number, as the registry does
            object.__setattr__(self, "img_size", (self.img_size, self.img_size))

    @classmethod
    def reasons(cls) -> dict[str, str]:
        return {f.name: f.metadata["why"] for f in fields(cls) if "why" in f.metadata}

    @property
    def num_views(self) -> int:
        return len(self.view_kernels)

    @property
    def num_stages(self) -> int:
        return len(self.dims)

    def view_grid(self, view: int, size: tuple[int, int] | None = None) -> tuple[int, int]:
        """Token grid of ``view`` after its stem for an input of ``size`` (H, W)."""
        k, s = self.view_kernels[view], self.view_strides[view]
        return tuple(_conv_out(n, k, s, (k - 1) // 2) for n in (size or self.img_size))

    def kv_stride(self, view: int, stage: int) -> int:
        return max(self.kv_strides[view] // 2**stage, 1)


def _conv_out(n: int, kernel: int, stride: int, padding: int) -> int:
    return (n + 2 * padding - kernel) // stride + 1


def skip_geometry(stride: int) -> tuple[int, int]:
    """(kernel, padding) of the max pool on a Q-strided block's residual: kernel stride + 1 (MViTv2)."""
    return stride + 1, (stride + 1) // 2


class Pool(nn.Module):
    """MViTv2 attention pooling: a depthwise conv (stride 1 or more) on each head's grid, shared across heads,
    and a LayerNorm over the head dim; the CLS token skips the conv and joins the norm."""

    def __init__(self, head_dim: int, stride: int, kernel: int = 3) -> None:
        super().__init__()
        padding = kernel // 2
        self.conv = nn.Conv2d(head_dim, head_dim, kernel, stride, padding, groups=head_dim, bias=False)
        self.norm = nn.LayerNorm(head_dim, eps=LN_EPS)

    def forward(self, x: torch.Tensor, grid: tuple[int, int], has_cls: bool) -> tuple[torch.Tensor, tuple[int, int]]:
        B, heads, _, d = x.shape
        cls, x = (x[:, :, :1], x[:, :, 1:]) if has_cls else (None, x)
        x = self.conv(x.reshape(B * heads, *grid, d).permute(0, 3, 1, 2))
        grid = (x.shape[2], x.shape[3])
        x = x.reshape(B, heads, d, -1).transpose(2, 3)
        if cls is not None:
            x = torch.cat([cls, x], dim=2)
        return self.norm(x), grid


def _maybe_pool(head_dim: int, stride: int, kernel: int) -> nn.Module:
    """A pooling, or none where kernel and stride are both 1 (as MViTv2 skips it)."""
    return Pool(head_dim, stride, kernel) if kernel > 1 or stride > 1 else nn.Identity()


class PoolingAttention(nn.Module):
    """Multi-head pooling attention over one view, or jointly over several (the cross-attention).

    Each view's Q, K and V are pooled on that view's own grid (``q_stride``, ``kv_strides[v]``), then the
    views' tokens are concatenated, attended jointly, and split back by each view's pooled token count.
    Q/K/V/output projections are shared by all views the module serves; the pooling is per view.
    """

    def __init__(
        self,
        dim: int,
        dim_out: int,
        num_heads: int,
        q_stride: int,
        kv_strides: tuple[int, ...],
        qkv_bias: bool = True,
        residual_pooling: bool = True,
        pool_kernel: int = 3,
    ) -> None:
        super().__init__()
        if dim_out % num_heads:
            raise ValueError(f"dim {dim_out} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim_out // num_heads
        self.scale = self.head_dim**-0.5
        self.residual_pooling = residual_pooling
        self.q_stride = q_stride
        self.kv_strides = tuple(kv_strides)
        self.qkv = nn.Linear(dim, 3 * dim_out, bias=qkv_bias)
        self.proj = nn.Linear(dim_out, dim_out)
        views = len(kv_strides)
        d, k = self.head_dim, pool_kernel
        self.pool_q = nn.ModuleList([_maybe_pool(d, q_stride, k) for _ in range(views)])
        self.pool_k = nn.ModuleList([_maybe_pool(d, s, k) for s in kv_strides])
        self.pool_v = nn.ModuleList([_maybe_pool(d, s, k) for s in kv_strides])

    @staticmethod
    def _pool(pool: nn.Module, x: torch.Tensor, grid, has_cls) -> tuple[torch.Tensor, tuple[int, int]]:
        return (x, grid) if isinstance(pool, nn.Identity) else pool(x, grid, has_cls)

    def forward(
        self, views: list[torch.Tensor], grids: list[tuple[int, int]], has_cls: list[bool]
    ) -> tuple[list[torch.Tensor], list[tuple[int, int]]]:
        qs, ks, vs, out_grids = [], [], [], []
        for i, x in enumerate(views):
            B, N, _ = x.shape
            q, k, v = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
            q, q_grid = self._pool(self.pool_q[i], q, grids[i], has_cls[i])
            k, _ = self._pool(self.pool_k[i], k, grids[i], has_cls[i])
            v, _ = self._pool(self.pool_v[i], v, grids[i], has_cls[i])
            qs.append(q), ks.append(k), vs.append(v), out_grids.append(q_grid)
        q, k, v = torch.cat(qs, dim=2), torch.cat(ks, dim=2), torch.cat(vs, dim=2)
        attn = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
        x = attn @ v
        if self.residual_pooling:
            x = x + q
        B = x.shape[0]
        x = self.proj(x.transpose(1, 2).reshape(B, x.shape[2], -1))
        counts = [q.shape[2] for q in qs]
        return list(torch.split(x, counts, dim=1)), out_grids


def shortcut_pool(x: torch.Tensor, grid: tuple[int, int], stride: int, has_cls: bool) -> torch.Tensor:
    """The residual of a Q-strided block: max pool (kernel stride + 1) over the grid; the CLS passes through."""
    kernel, padding = skip_geometry(stride)
    cls, x = (x[:, :1], x[:, 1:]) if has_cls else (None, x)
    B, _, C = x.shape
    x = F.max_pool2d(x.transpose(1, 2).reshape(B, C, *grid), kernel, stride, padding)
    x = x.flatten(2).transpose(1, 2)
    return x if cls is None else torch.cat([cls, x], dim=1)


class SelfBlock(nn.Module):
    """MViTv2 multiscale block on one view: pooling attention + MLP, pre-norm, residuals.

    A scaled block (``q_stride`` 2, ``dim_out`` 2x) projects and max-pools its attention residual, as
    MViTv2 does with ``dim_mul_in_att``.
    """

    def __init__(
        self,
        dim: int,
        dim_out: int,
        num_heads: int,
        q_stride: int,
        kv_stride: int,
        cfg: MMViTConfig,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.q_stride = q_stride
        self.norm1 = nn.LayerNorm(dim, eps=LN_EPS)
        self.shortcut_proj = nn.Linear(dim, dim_out) if dim != dim_out else None
        self.attn = PoolingAttention(
            dim, dim_out, num_heads, q_stride, (kv_stride,), cfg.qkv_bias, cfg.residual_pooling, cfg.pool_kernel
        )
        self.norm2 = nn.LayerNorm(dim_out, eps=LN_EPS)
        self.mlp = Mlp(dim_out, int(dim_out * cfg.mlp_ratio), dim_out)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor, grid: tuple[int, int], has_cls: bool) -> tuple[torch.Tensor, tuple[int, int]]:
        x_norm = self.norm1(x)
        shortcut = x if self.shortcut_proj is None else self.shortcut_proj(x_norm)
        if self.q_stride > 1:
            shortcut = shortcut_pool(shortcut, grid, self.q_stride, has_cls)
        (y,), (grid,) = self.attn([x_norm], [grid], [has_cls])
        x = shortcut + self.drop_path(y)
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x, grid


class CrossBlock(nn.Module):
    """Cross-view block: one pre-norm transformer block over the views' concatenated tokens.

    Each view is pooled on its own grid (K/V at its stage stride), the tokens are concatenated into one
    joint attention, the result is split back per view and added to that view's residual; the MLP is
    per token, so it is the same whether applied joined or split.
    """

    def __init__(self, dim: int, num_heads: int, kv_strides: tuple[int, ...], cfg: MMViTConfig, drop_path: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LN_EPS)
        self.attn = PoolingAttention(
            dim, dim, num_heads, 1, kv_strides, cfg.qkv_bias, cfg.residual_pooling, cfg.pool_kernel
        )
        self.norm2 = nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp = Mlp(dim, int(dim * cfg.mlp_ratio), dim)
        self.drop_path = DropPath(drop_path)

    def forward(self, views: list[torch.Tensor], grids, has_cls) -> list[torch.Tensor]:
        fused, _ = self.attn([self.norm1(x) for x in views], grids, has_cls)
        views = [x + self.drop_path(y) for x, y in zip(views, fused, strict=True)]
        return [x + self.drop_path(self.mlp(self.norm2(x))) for x in views]


class ViewStem(nn.Module):
    """One view: an overlapping strided conv patch embedding, plus a learnable position embedding (and the
    CLS token with its own position on view 1)."""

    def __init__(self, cfg: MMViTConfig, view: int) -> None:
        super().__init__()
        k, s = cfg.view_kernels[view], cfg.view_strides[view]
        self.proj = nn.Conv2d(cfg.in_chans, cfg.dims[0], k, s, (k - 1) // 2)
        self.grid = cfg.view_grid(view)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.dims[0])) if view == 0 else None
        tokens = self.grid[0] * self.grid[1] + (view == 0)
        self.pos_embed = nn.Parameter(torch.zeros(1, tokens, cfg.dims[0]))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        if self.cls_token is not None:
            nn.init.trunc_normal_(self.cls_token, std=0.02)

    def position(self, grid: tuple[int, int]) -> torch.Tensor:
        """The position embedding for ``grid``: the learned one, or it resized bicubically (another input size)."""
        if tuple(grid) == self.grid:
            return self.pos_embed
        return resize_pos_embed(self.pos_embed, self.grid, grid, self.cls_token is not None)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        x = self.proj(image)
        grid = (x.shape[2], x.shape[3])
        x = x.flatten(2).transpose(1, 2)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        return x + self.position(grid), grid


class MMViT(nn.Module):
    """MMViT classifier; ``features_only=True`` returns, per stage, one NCHW map per view (CLS dropped)."""

    def __init__(self, cfg: MMViTConfig, features_only: bool = False) -> None:
        super().__init__()
        if not (len(cfg.view_kernels) == len(cfg.view_strides) == len(cfg.kv_strides)):
            raise ValueError("view_kernels, view_strides and kv_strides need one entry per view")
        if not (len(cfg.dims) == len(cfg.heads) == len(cfg.self_blocks)):
            raise ValueError("dims, heads and self_blocks need one entry per stage")
        self.cfg = cfg
        self.features_only = features_only
        views, stages = cfg.num_views, cfg.num_stages
        self.stems = nn.ModuleList([ViewStem(cfg, v) for v in range(views)])

        # drop-path rises linearly over the 16 blocks of one view's path
        depth = sum(cfg.self_blocks) + 2 * (stages - 1)
        rates = iter(torch.linspace(0, cfg.drop_path_rate, depth).tolist())
        self.stages = nn.ModuleList()
        for s in range(stages):
            stage = nn.Module()
            stage.blocks = nn.ModuleList(
                [self._view_blocks(cfg, s, s, 1, next(rates)) for _ in range(cfg.self_blocks[s])]
            )
            if s < stages - 1:
                kv = tuple(cfg.kv_stride(v, s) for v in range(views))
                stage.cross = CrossBlock(cfg.dims[s], cfg.heads[s], kv, cfg, next(rates))
                stage.scale = self._view_blocks(cfg, s, s + 1, 2, next(rates))
            self.stages.append(stage)
        self.num_features = cfg.dims[-1]
        if not features_only:
            self.norm = nn.LayerNorm(self.num_features, eps=LN_EPS)
            self.head = nn.Linear(self.num_features, cfg.num_classes)
        self.apply(init_linear_and_norm)

    @staticmethod
    def _view_blocks(cfg: MMViTConfig, stage: int, out_stage: int, q_stride: int, drop_path: float) -> nn.ModuleList:
        """One SelfBlock per view from stage ``stage``'s width to ``out_stage``'s (K/V stride of ``out_stage``,
        as MViTv2 sets it on the block that pools Q); one shared block when views share weights."""

        def build(view: int) -> SelfBlock:
            dim, dim_out, heads = cfg.dims[stage], cfg.dims[out_stage], cfg.heads[out_stage]
            return SelfBlock(dim, dim_out, heads, q_stride, cfg.kv_stride(view, out_stage), cfg, drop_path)

        if cfg.share_view_weights:
            return nn.ModuleList([build(0)] * cfg.num_views)
        return nn.ModuleList([build(v) for v in range(cfg.num_views)])

    @staticmethod
    def _run_views(blocks: nn.ModuleList, views: list, grids: list, has_cls: list) -> tuple[list, list]:
        outs = [blk(x, g, c) for blk, x, g, c in zip(blocks, views, grids, has_cls, strict=True)]
        return [x for x, _ in outs], [g for _, g in outs]

    def forward_stages(self, image: torch.Tensor) -> list[tuple[list[torch.Tensor], list[tuple[int, int]]]]:
        """Tokens and grids of every view after each stage (after its scaled block, for stages 1-3)."""
        views, grids = zip(*(stem(image) for stem in self.stems), strict=True)
        views, grids = list(views), list(grids)
        has_cls = [stem.cls_token is not None for stem in self.stems]
        outputs = []
        for stage in self.stages:
            for per_view in stage.blocks:
                views, grids = self._run_views(per_view, views, grids, has_cls)
            if hasattr(stage, "cross"):
                views = stage.cross(views, grids, has_cls)
                views, grids = self._run_views(stage.scale, views, grids, has_cls)
            outputs.append((views, grids))
        return outputs

    def forward_features(self, image: torch.Tensor) -> list[list[torch.Tensor]]:
        maps = []
        for views, grids in self.forward_stages(image):
            stage = []
            for x, g, stem in zip(views, grids, self.stems, strict=True):
                x = x[:, 1:] if stem.cls_token is not None else x
                stage.append(x.transpose(1, 2).reshape(x.shape[0], -1, *g))
            maps.append(stage)
        return maps

    def forward(self, image: torch.Tensor):
        if self.features_only:
            return self.forward_features(image)
        views, _ = self.forward_stages(image)[-1]
        return self.head(self.norm(views[0][:, 0]))  # view 1's CLS token


MMVIT_CONFIGS: dict[str, MMViTConfig] = {
    "mmvit_xs": MMViTConfig(),
    # the widest [0, 0, 9, 1] layout within 5-6M params and 1 GMAC at 224 (head dim 26)
    "mmvit_s": MMViTConfig(dims=(26, 52, 104, 208), heads=(1, 2, 4, 8), drop_path_rate=0.1),
    # audio: mmvit_xs on a (128 mel, 512 frame) log-mel map; view grids 32x128 and 16x64, AudioSet's 527 labels
    "mmvit_xs_audio": MMViTConfig(in_chans=1, img_size=(128, 512), num_classes=527),
    # random-init plumbing checks (tests, CI): both views, cross attention and a scaled block in every stage but
    # the last, self blocks where K/V pool most (stage 1) and not at all (stage 3), at 64x64; three stages, since
    # a fourth adds nodes to every export and no kind of op (tests export mmvit_xs's four stages at its widths)
    "mmvit_test": MMViTConfig(
        dims=(8, 16, 32), heads=(1, 2, 4), self_blocks=(1, 0, 1), num_classes=10, img_size=(64, 64)
    ),
    # the same on a 1-channel non-square map, as the audio config takes it
    "mmvit_audio_test": MMViTConfig(
        dims=(8, 16, 32),
        heads=(1, 2, 4),
        self_blocks=(1, 0, 1),
        in_chans=1,
        img_size=(64, 256),
        num_classes=527,
    ),
}


def mmvit_filter_fn(state_dict: dict[str, torch.Tensor], model: MMViT) -> dict[str, torch.Tensor]:
    """Resize a checkpoint's position embeddings to the model's grid (trained at one size, deployed at
    another); drop the classifier for a features_only model."""
    state = dict(state_dict)
    for v, stem in enumerate(model.stems):
        key = f"stems.{v}.pos_embed"
        pos = state.get(key)
        if pos is None or pos.shape == stem.pos_embed.shape:
            continue
        has_cls = stem.cls_token is not None
        tokens = pos.shape[1] - has_cls
        old = grid_of(tokens, stem.grid)
        state[key] = resize_pos_embed(pos, old, stem.grid, has_cls)
    if model.features_only:
        state = {k: v for k, v in state.items() if not k.startswith(("head.", "norm."))}
    return state


# MMViT was evaluated on audio as well: the same code on 1-channel log-mel spectrograms, 128 mel bins x 512
# frames (about 5 s at a 10 ms hop), as AST and MMViT's audio experiments feed them
AUDIO_SPEC = InputSpec(
    size=(128, 512), channels=1, mean=(0.5,), std=(0.25,), crop_pct=1.0, channel_order="mono", kind="spectrogram"
)


_register = partial(register_config, MMViT, MMVIT_CONFIGS, spec=InputSpec(), filter_fn=mmvit_filter_fn)

_register("mmvit_xs", "MMViT, two overlapping conv views, cross-view attention per stage, dims 16-128", benchmark=True)
_register("mmvit_s", "MMViT, two overlapping conv views, cross-view attention per stage, dims 26-208", benchmark=True)
_register(
    "mmvit_xs_audio", "mmvit_xs on 1-channel 128x512 log-mel spectrograms (527 AudioSet classes)", spec=AUDIO_SPEC
)
_register(
    "mmvit_test",
    "tiny MMViT (three stages, 10 classes, 64x64) for tests and plumbing checks",
    spec=InputSpec(size=64),
    test=True,
)
_register(
    "mmvit_audio_test",
    "tiny MMViT on 1-channel 64x256 spectrograms (527 classes) for tests and plumbing checks",
    spec=replace(AUDIO_SPEC, size=(64, 256)),
    test=True,
)

"""CrossViT: two-branch vision transformer with cross-attention fusion of the branches' CLS tokens.

Paper: Chen, Fan and Panda, "CrossViT: Cross-Attention Multi-Scale Vision Transformer for Image
Classification", ICCV 2021, arXiv 2103.14899. Official code: github.com/IBM/CrossViT (models/crossvit.py);
timm's ``crossvit.py`` keeps its keys and renames the variants ``*_224`` to ``*_240``, the size the small-patch
branch actually reads.

This is the training form with timm's state_dict keys, so timm's published checkpoints (and IBM's, whose
``cls_token.0``/``pos_embed.0`` the filter renames) load with strict=True. In brief:

- branch 0 cuts the 240 px image into 12 px patches; branch 1 resizes it bicubically to 224 px and cuts
  16 px patches; each branch gets a CLS token and a learned position embedding;
- each multi-scale block runs plain ViT blocks per branch, then per branch: its CLS is projected
  (LayerNorm, GELU, Linear) to the other branch's width, attends as the single query over the other
  branch's patch tokens (cross-attention, residual on the CLS), and is projected back to replace its CLS;
- the head averages the two branches' classifiers on their CLS tokens.

Mobile rewrites of these modules (the resize as two matmuls, the fusion at rank <= 4, the head without
stack/mean) live in ``edgevit.lowering.crossvit``, never here.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from .layers import Block, DropPath, grid_of, init_linear_and_norm, resize_pos_embed
from .registry import InputSpec, register_config

__all__ = ["CrossViTConfig", "CrossViT", "CrossAttention", "MultiScaleBlock", "CROSSVIT_CONFIGS", "crossvit_filter_fn"]

LN_EPS = 1e-6  # every LayerNorm of CrossViT


@dataclass(frozen=True)
class CrossViTConfig:
    """One CrossViT variant, in timm's terms (branch 0: small patches; branch 1: large patches)."""

    embed_dims: tuple[int, int] = (96, 192)
    num_heads: tuple[int, int] = (3, 3)
    # per multi-scale block: ViT blocks in branch 0, in branch 1, then cross-attention layers (0 means one)
    depths: tuple[tuple[int, int, int], ...] = ((1, 4, 0),) * 3
    # MLP ratio of branch 0's and branch 1's ViT blocks (timm's third entry is unused: fusion has no MLP)
    mlp_ratios: tuple[float, ...] = (4.0, 4.0, 1.0)
    patch_sizes: tuple[int, int] = (12, 16)
    # each branch sees the input resized by numerator/denominator: timm's img_scale (1.0, 224/240)
    branch_scales: tuple[tuple[int, int], ...] = ((1, 1), (224, 240))
    multi_conv: bool = False  # the "dagger" stem: three convs instead of one patchifying conv
    qkv_bias: bool = True
    drop_path_rate: float = 0.1
    in_chans: int = 3
    num_classes: int = 1000
    img_size: tuple[int, int] = (240, 240)

    def __post_init__(self) -> None:
        if isinstance(self.img_size, int):
            object.__setattr__(self, "img_size", (self.img_size, self.img_size))

    def branch_size(self, branch: int) -> tuple[int, int]:
        """The image size branch ``branch`` reads: the input resized by its scale (exact integer arithmetic)."""
        num, den = self.branch_scales[branch]
        return (self.img_size[0] * num // den, self.img_size[1] * num // den)

    def grid(self, branch: int) -> tuple[int, int]:
        """Branch ``branch``'s patch grid (rows, columns)."""
        h, w = self.branch_size(branch)
        p = self.patch_sizes[branch]
        return (h // p, w // p)


# ----------------------------------------------------------------------------------------------- layers


class PatchEmbed(nn.Module):
    """Image -> (B, N, C) patch tokens: one patchifying conv, or the dagger models' three-conv stem."""

    def __init__(self, in_chans: int, dim: int, patch: int, multi_conv: bool) -> None:
        super().__init__()
        if not multi_conv:
            self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch, stride=patch)
            return
        # 7x7/4 then two 3x3 convs reaching the patch size: /3 then /1 for 12 px patches, /2 and /2 for 16 px
        second, third = {12: ((3, 0), (1, 1)), 16: ((2, 1), (2, 1))}.get(patch, (None, None))
        if second is None:
            raise ValueError(f"the multi-conv stem exists for 12 and 16 px patches, not {patch}")
        self.proj = nn.Sequential(
            nn.Conv2d(in_chans, dim // 4, kernel_size=7, stride=4, padding=3),
            nn.ReLU(inplace=True),
            nn.Conv2d(dim // 4, dim // 2, kernel_size=3, stride=second[0], padding=second[1]),
            nn.ReLU(inplace=True),
            nn.Conv2d(dim // 2, dim, kernel_size=3, stride=third[0], padding=third[1]),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class CrossAttention(nn.Module):
    """The first token (a CLS from the other branch) as the only query over all tokens."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.wq = nn.Linear(dim, dim, bias=qkv_bias)
        self.wk = nn.Linear(dim, dim, bias=qkv_bias)
        self.wv = nn.Linear(dim, dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        heads, d = self.num_heads, C // self.num_heads
        q = self.wq(x[:, 0:1]).reshape(B, 1, heads, d).permute(0, 2, 1, 3)
        k = self.wk(x).reshape(B, N, heads, d).permute(0, 2, 1, 3)
        v = self.wv(x).reshape(B, N, heads, d).permute(0, 2, 1, 3)
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)  # B, heads, 1, N
        return self.proj((attn @ v).transpose(1, 2).reshape(B, 1, C))


class CrossAttentionBlock(nn.Module):
    """norm1 then cross-attention, residual on the query token alone: (B, N, C) -> (B, 1, C)."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool, drop_path: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LN_EPS)
        self.attn = CrossAttention(dim, num_heads, qkv_bias)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 0:1] + self.drop_path(self.attn(self.norm1(x)))


def _projection(dim_in: int, dim_out: int) -> nn.Sequential:
    """LayerNorm, GELU, Linear: a CLS token into the other branch's width (keys .0 and .2)."""
    return nn.Sequential(nn.LayerNorm(dim_in, eps=LN_EPS), nn.GELU(), nn.Linear(dim_in, dim_out))


class MultiScaleBlock(nn.Module):
    """ViT blocks per branch, then each branch's CLS fused with the other branch's patch tokens."""

    def __init__(self, cfg: CrossViTConfig, depth: tuple[int, int, int], drop_path: list[float]) -> None:
        super().__init__()
        dims, heads = cfg.embed_dims, cfg.num_heads
        branches = len(dims)
        if any(n < 1 for n in depth[:branches]):
            raise ValueError(f"every branch needs at least one ViT block per multi-scale block, got {depth}")
        self.blocks = nn.ModuleList(
            nn.Sequential(
                *(Block(dims[b], heads[b], cfg.mlp_ratios[b], cfg.qkv_bias, drop_path[i]) for i in range(depth[b]))
            )
            for b in range(branches)
        )
        self.projs = nn.ModuleList(_projection(dims[b], dims[(b + 1) % branches]) for b in range(branches))
        fusion = []
        for b in range(branches):
            other = (b + 1) % branches
            layers = [
                CrossAttentionBlock(dims[other], heads[other], cfg.qkv_bias, drop_path[-1])
                for _ in range(max(depth[-1], 1))
            ]
            fusion.append(layers[0] if depth[-1] == 0 else nn.Sequential(*layers))  # timm's keys either way
        self.fusion = nn.ModuleList(fusion)
        self.revert_projs = nn.ModuleList(_projection(dims[(b + 1) % branches], dims[b]) for b in range(branches))

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        xs = [blocks(x) for blocks, x in zip(self.blocks, xs, strict=True)]
        n = len(xs)
        outs = []
        for b in range(n):
            cls = self.projs[b](xs[b][:, 0:1])
            fused = self.fusion[b](torch.cat([cls, xs[(b + 1) % n][:, 1:]], dim=1))
            outs.append(torch.cat([self.revert_projs[b](fused[:, 0:1]), xs[b][:, 1:]], dim=1))
        return outs


# ------------------------------------------------------------------------------------------------ model


class CrossViT(nn.Module):
    """CrossViT classifier; ``features_only=True`` returns each branch's normalised tokens (CLS first)."""

    def __init__(self, cfg: CrossViTConfig, features_only: bool = False) -> None:
        super().__init__()
        branches = len(cfg.embed_dims)
        if not (branches == len(cfg.num_heads) == len(cfg.patch_sizes) == len(cfg.branch_scales)):
            raise ValueError("embed_dims, num_heads, patch_sizes and branch_scales need one entry per branch")
        for b in range(branches):
            size, p = cfg.branch_size(b), cfg.patch_sizes[b]
            if size[0] % p or size[1] % p:
                raise ValueError(f"branch {b} reads {size[0]}x{size[1]} px, not a multiple of its {p} px patches")
        self.cfg = cfg
        self.features_only = features_only
        self.num_classes = cfg.num_classes
        self.patch_embed = nn.ModuleList(
            PatchEmbed(cfg.in_chans, d, p, cfg.multi_conv) for d, p in zip(cfg.embed_dims, cfg.patch_sizes, strict=True)
        )
        for b, dim in enumerate(cfg.embed_dims):  # timm's flat names (IBM's were ParameterLists)
            grid = cfg.grid(b)
            self.register_parameter(f"pos_embed_{b}", nn.Parameter(torch.zeros(1, 1 + grid[0] * grid[1], dim)))
            self.register_parameter(f"cls_token_{b}", nn.Parameter(torch.zeros(1, 1, dim)))

        # drop-path rises linearly over the deepest branch path (ViT blocks plus fusion) of every block
        per_block = [max(d[:branches]) + d[-1] for d in cfg.depths]
        rates = torch.linspace(0, cfg.drop_path_rate, sum(per_block)).tolist()
        starts = [sum(per_block[:i]) for i in range(len(per_block))]
        self.blocks = nn.ModuleList(
            MultiScaleBlock(cfg, depth, rates[start : start + n])
            for depth, start, n in zip(cfg.depths, starts, per_block, strict=True)
        )
        self.norm = nn.ModuleList(nn.LayerNorm(d, eps=LN_EPS) for d in cfg.embed_dims)
        self.head = self._heads(cfg.num_classes)

        for b in range(branches):
            nn.init.trunc_normal_(self.pos_embed(b), std=0.02)
            nn.init.trunc_normal_(self.cls_token(b), std=0.02)
        self.apply(init_linear_and_norm)

    def _heads(self, num_classes: int) -> nn.ModuleList:
        return nn.ModuleList(
            nn.Linear(d, num_classes) if num_classes > 0 else nn.Identity() for d in self.cfg.embed_dims
        )

    def pos_embed(self, branch: int) -> nn.Parameter:
        return getattr(self, f"pos_embed_{branch}")

    def cls_token(self, branch: int) -> nn.Parameter:
        return getattr(self, f"cls_token_{branch}")

    def branch_image(self, image: torch.Tensor, branch: int) -> torch.Tensor:
        """The image as branch ``branch`` reads it: resized bicubically where its scale is not 1."""
        size = self.cfg.branch_size(branch)
        if tuple(image.shape[-2:]) == size:
            return image
        return F.interpolate(image, size=size, mode="bicubic", align_corners=False)

    def embed(self, image: torch.Tensor) -> list[torch.Tensor]:
        """Each branch's tokens: CLS then patches, position embedding added."""
        if tuple(image.shape[-2:]) != self.cfg.img_size:
            h, w = self.cfg.img_size
            raise ValueError(
                f"CrossViT built for {h}x{w} got {image.shape[-2]}x{image.shape[-1]}: its position embeddings "
                "are learned for one size; build it for this size (a checkpoint's are resized on loading)"
            )
        xs = []
        for b, patch_embed in enumerate(self.patch_embed):
            x = patch_embed(self.branch_image(image, b))
            x = torch.cat([self.cls_token(b).expand(x.shape[0], -1, -1), x], dim=1)
            xs.append(x + self.pos_embed(b))
        return xs

    # the uniform model interface ------------------------------------------------------------------

    def forward_features(self, image: torch.Tensor) -> list[torch.Tensor]:
        """NCHW image -> each branch's normalised tokens (B, 1 + N_b, C_b), CLS first."""
        xs = self.embed(image)
        for block in self.blocks:
            xs = block(xs)
        return [norm(x) for norm, x in zip(self.norm, xs, strict=True)]

    def forward_head(self, xs: list[torch.Tensor], pre_logits: bool = False) -> torch.Tensor:
        """The mean of the branches' classifiers on their CLS tokens (or the CLS tokens side by side)."""
        cls = [x[:, 0] for x in xs]
        if pre_logits:
            return torch.cat(cls, dim=1)
        return torch.mean(torch.stack([head(c) for head, c in zip(self.head, cls, strict=True)], dim=0), dim=0)

    def forward(self, image: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        xs = self.forward_features(image)
        return xs if self.features_only else self.forward_head(xs)

    def reset_classifier(self, num_classes: int) -> None:
        """Replace every branch's classifier with a fresh one for ``num_classes``."""
        self.num_classes = num_classes
        self.head = self._heads(num_classes)
        self.head.apply(init_linear_and_norm)


CROSSVIT_CONFIGS: dict[str, CrossViTConfig] = {
    "crossvit_tiny_240": CrossViTConfig(),
    "crossvit_9_240": CrossViTConfig(
        embed_dims=(128, 256), num_heads=(4, 4), depths=((1, 3, 0),) * 3, mlp_ratios=(3.0, 3.0, 1.0)
    ),
    "crossvit_9_dagger_240": CrossViTConfig(
        embed_dims=(128, 256), num_heads=(4, 4), depths=((1, 3, 0),) * 3, mlp_ratios=(3.0, 3.0, 1.0), multi_conv=True
    ),
    # for phones: crossvit_tiny's widths with CrossViT-9's depths and MLP ratios; the large branch's blocks carry
    # most of the MACs, so that is where the cut goes (4.96M params, 1.10 GMACs at 240)
    "crossvit_mobile_240": CrossViTConfig(depths=((1, 3, 0),) * 3, mlp_ratios=(3.0, 3.0, 1.0)),
    # random-init plumbing checks (tests, CI): both branches, a bicubic-resized large branch and two fusions at 120
    "crossvit_test": CrossViTConfig(
        embed_dims=(16, 32),
        num_heads=(2, 2),
        depths=((1, 1, 0),) * 2,
        mlp_ratios=(2.0, 2.0, 1.0),
        num_classes=10,
        img_size=(120, 120),
    ),
}


def crossvit_filter_fn(state_dict: dict[str, torch.Tensor], model: CrossViT) -> dict[str, torch.Tensor]:
    """IBM's ``cls_token.0``/``pos_embed.0`` as timm names them; position embeddings resized to the model's
    grids (a checkpoint trained at another size); no classifier for a features_only model."""
    state = {}
    for key, value in state_dict.items():
        if key.startswith(("cls_token.", "pos_embed.")):
            key = key.replace(".", "_")
        state[key] = value
    for b in range(len(model.cfg.embed_dims)):
        key, grid = f"pos_embed_{b}", model.cfg.grid(b)
        pos = state.get(key)
        if pos is not None and pos.shape != model.pos_embed(b).shape:
            state[key] = resize_pos_embed(pos, grid_of(pos.shape[1] - 1, grid), grid, has_cls=True)
    if model.features_only:
        state = {k: v for k, v in state.items() if not k.startswith("head.")}
    return state


# timm's data config: bicubic, crop 0.875; sizes in steps of 120 keep both branches' patch grids whole
CROSSVIT_SPEC = InputSpec(size=240, size_multiple=120, crop_pct=0.875)


_register = partial(
    register_config, CrossViT, CROSSVIT_CONFIGS, spec=CROSSVIT_SPEC, filter_fn=crossvit_filter_fn, classifier="head.0"
)

_register("crossvit_tiny_240", "CrossViT-Ti (timm crossvit_tiny_240), 12/16 px branches, dims 96/192")
_register("crossvit_9_240", "CrossViT-9 (timm crossvit_9_240), 12/16 px branches, dims 128/256")
_register("crossvit_9_dagger_240", "CrossViT-9-dagger (timm crossvit_9_dagger_240), three-conv stems")
_register("crossvit_mobile_240", "CrossViT for phones: dims 96/192, CrossViT-9's depths and MLP ratios", benchmark=True)
_register(
    "crossvit_test",
    "tiny CrossViT (two branches, two fusions, 10 classes, 120x120) for tests and plumbing checks",
    spec=replace(CROSSVIT_SPEC, size=120),
    test=True,
)

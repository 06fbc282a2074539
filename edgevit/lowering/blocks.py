"""Deploy-form pieces every family shares, written once over a :class:`~edgevit.lowering.layout.Layout`."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..models.layers import Attention
from .layout import Layout
from .weights import conv_copy

__all__ = [
    "DeployAttention",
    "DeployMlp",
    "DeployPreNormBlock",
    "LogitsBias",
    "keys_scaled",
    "multi_head_attention",
    "require_classifier",
]

# (logits, query heads) -> logits: a term added to the attention logits before the softmax, laid out as the
# layout's ``attend`` holds them (MViTv2's relative positions)
LogitsBias = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def require_classifier(model: nn.Module) -> None:
    """Deploy forms are whole classifiers: refuse a backbone built for features."""
    if model.features_only:
        raise ValueError("lowering supports the classifier; build the model without features_only")


class DeployMlp(nn.Module):
    """fc1, GELU, fc2 on tokens; or (LVT stages 2-4) 1x1 conv, depthwise 3x3, GELU, 1x1 conv on the conv map.

    The conv form changes layout on the narrow side (C channels) instead of around the depthwise conv
    (4-8x C channels): XNNPACK runs convs NHWC and copies at every NCHW boundary.
    """

    def __init__(self, fc1: nn.Module, fc2: nn.Module, depconv: nn.Conv2d | None, layout: Layout) -> None:
        super().__init__()
        self.fc1 = fc1
        self.depconv = depconv
        self.fc2 = fc2
        self.layout = layout
        self.act = nn.GELU()  # a module, so that a precision step can swap it (``targets.fp16``)

    @classmethod
    @torch.no_grad()
    def from_module(cls, m: nn.Module, layout: Layout) -> DeployMlp:
        """From a training MLP with ``fc1`` and ``fc2`` (Linear, or 1x1 convs around a ``depconv``)."""
        if getattr(m, "depthwise", False):
            return cls(conv_copy(m.fc1), conv_copy(m.fc2), conv_copy(m.depconv), layout)
        return cls(layout.linear(m.fc1.weight, m.fc1.bias), layout.linear(m.fc2.weight, m.fc2.bias), None, layout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.depconv is None:
            return self.fc2(self.act(self.fc1(x)))
        x = self.depconv(self.fc1(self.layout.to_map(x)))
        return self.layout.from_map(self.fc2(self.act(x)))


class DeployPreNormBlock(nn.Module):
    """Pre-norm transformer block, x + attn(norm1(x)) then x + mlp(norm2(x)), from a training block with
    ``norm1``, ``norm2`` and ``mlp`` and the deploy form of its attention."""

    def __init__(self, m: nn.Module, attn: nn.Module, layout: Layout) -> None:
        super().__init__()
        self.norm1 = layout.norm(m.norm1)
        self.attn = attn
        self.norm2 = layout.norm(m.norm2)
        self.mlp = DeployMlp.from_module(m.mlp, layout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def multi_head_attention(
    layout: Layout,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    heads: int,
    residual: bool = False,
    keys_like_queries: bool = False,
    logits_bias: LogitsBias | None = None,
) -> torch.Tensor:
    """softmax(q k^T) v [+ q] per head, laid out as ``q``; the softmax scale is already in ``k``.

    ``keys_like_queries``: split the keys' heads as the queries' and transpose them (MMViT's measured graph)
    rather than by one permute straight to (B*heads, d, M) (LVT's).
    """
    qh = layout.split_heads(q, heads)
    if keys_like_queries:
        kh = layout.keys_from_heads(layout.split_heads(k, heads))
    else:
        kh = layout.split_keys(k, heads)
    out = layout.attend(qh, kh, layout.split_heads(v, heads), logits_bias)
    if residual:
        out = out + qh
    return layout.merge_heads(out, q.shape)


def keys_scaled(linear: nn.Linear, start: int, stop: int, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``linear``'s weight and bias (zeros if it has none) with output rows ``start:stop``, the keys, multiplied
    by the softmax scale: the scale folded into the projection, as :meth:`Layout.attend` takes it."""
    factor = torch.ones(linear.out_features)
    factor[start:stop] = scale
    bias = linear.bias.detach() if linear.bias is not None else torch.zeros(linear.out_features)
    return linear.weight.detach() * factor[:, None], bias * factor


class DeployAttention(nn.Module):
    """ViT self-attention: one Q/K/V projection (tokens last) or three (channels first), the scale in K."""

    def __init__(self, m: Attention, layout: Layout) -> None:
        super().__init__()
        self.layout, self.heads = layout, m.num_heads
        C = m.proj.in_features
        w, b = keys_scaled(m.qkv, C, 2 * C, m.scale)
        self.fused = layout.fuse_projections
        if self.fused:
            self.qkv = layout.linear(w, b)
        else:
            self.q, self.k, self.v = (layout.linear(w[i * C : (i + 1) * C], b[i * C : (i + 1) * C]) for i in range(3))
        self.proj = layout.linear(m.proj.weight, m.proj.bias)
        self.dim = C

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        L, C = self.layout, self.dim
        if self.fused:
            qkv = self.qkv(x)
            q, k, v = L.channels(qkv, 0, C), L.channels(qkv, C, 2 * C), L.channels(qkv, 2 * C, 3 * C)
        else:
            q, k, v = self.q(x), self.k(x), self.v(x)
        return self.proj(multi_head_attention(L, q, k, v, self.heads))

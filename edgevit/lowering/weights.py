"""Fresh layers built from trained weights, so a deploy form never shares a parameter with its source."""

from __future__ import annotations

import torch
from torch import nn


def linear_from(weight: torch.Tensor, bias: torch.Tensor | None = None) -> nn.Linear:
    """A Linear with a copy of ``weight`` (a Linear's, or a 1x1 conv's) and ``bias``."""
    out_f, in_f = weight.shape[:2]
    layer = nn.Linear(in_f, out_f, bias=bias is not None)
    with torch.no_grad():
        layer.weight.copy_(weight.reshape(out_f, in_f))
        if bias is not None:
            layer.bias.copy_(bias)
    return layer


def conv1x1_from(weight: torch.Tensor, bias: torch.Tensor | None = None) -> nn.Conv2d:
    """A 1x1 Conv2d computing a Linear (or a 1x1 conv) on the channel axis of an NCHW map."""
    out_f, in_f = weight.shape[:2]
    layer = nn.Conv2d(in_f, out_f, 1, bias=bias is not None)
    with torch.no_grad():
        layer.weight.copy_(weight.reshape(out_f, in_f, 1, 1))
        if bias is not None:
            layer.bias.copy_(bias)
    return layer


def conv_copy(conv: nn.Conv2d) -> nn.Conv2d:
    """An independent copy of ``conv`` with the same geometry and weights."""
    new = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        conv.dilation,
        conv.groups,
        bias=conv.bias is not None,
    )
    new.load_state_dict(conv.state_dict())
    return new


def class_block_weights(m: nn.Module) -> dict[str, tuple[torch.Tensor, torch.Tensor | None]]:
    """(weight, bias) of each projection of a class-attention block (``models.lvt.ClassBlock``), with K and V
    split apart and the softmax scale folded into Q, for deploy forms to build their own layers from."""
    a = m.attn
    C = a.num_heads * a.head_dim
    return {
        "q": (a.q.weight * a.scale, None),
        "k": (a.kv.weight[:C], None),
        "v": (a.kv.weight[C:], None),
        "proj": (a.proj.weight, a.proj.bias),
        "fc1": (m.mlp.fc1.weight, m.mlp.fc1.bias),
        "fc2": (m.mlp.fc2.weight, m.mlp.fc2.bias),
    }


def pooling_attention_weights(m: nn.Module, view: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """(weight, bias) of Q, K and V of an MMViT pooling attention (``models.mmvit.PoolingAttention``), split
    apart, with the softmax scale folded into K's projection when view ``view`` does not pool K (a pooled K
    takes the scale in its norm instead, see :func:`k_norm_scale`)."""
    C = m.proj.in_features
    w = m.qkv.weight
    b = m.qkv.bias if m.qkv.bias is not None else torch.zeros(3 * C)
    k_scale = 1.0 if _pools_k(m, view) else m.scale
    return {
        "q": (w[:C], b[:C]),
        "k": (w[C : 2 * C] * k_scale, b[C : 2 * C] * k_scale),
        "v": (w[2 * C :], b[2 * C :]),
    }


def k_norm_scale(m: nn.Module, view: int) -> float:
    """The factor for the affine of K's pooling norm: the softmax scale when K is pooled, else 1."""
    return m.scale if _pools_k(m, view) else 1.0


def _pools_k(m: nn.Module, view: int) -> bool:
    return not isinstance(m.pool_k[view], nn.Identity)

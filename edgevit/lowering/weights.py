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

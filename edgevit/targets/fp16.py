"""fp16 weights and activations for XNNPACK: the deploy form in half precision, with nothing left in fp32.

XNNPACK runs every op of a deploy form in fp16 except GELU (ExecuTorch's partitioner refuses an fp16 GELU: the
library has no fp16 erf), and a graph that casts to fp32 and back around it splits into a partition per block.
In fp16 the activation is GELU's tanh form, written with ops XNNPACK runs in fp16:

    0.5 x (1 + tanh(z)) = x * sigmoid(2 z),   z = sqrt(2/pi) (x + 0.044715 x^3)
                        = x * sigmoid(x * (a + b x^2)),   a = 2 sqrt(2/pi),  b = 0.044715 a

The tanh form differs from the exact (erf) GELU by at most 4.8e-4, less than half a unit in the last place of
fp16 wherever |GELU(x)| > 0.5 (``test_targets``): in fp16 the rounding, not the form, sets the error.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

A = 2.0 * math.sqrt(2.0 / math.pi)
B = 0.044715 * A


class SigmoidTanhGELU(nn.Module):
    """GELU's tanh form as ``x * sigmoid(x * (a + b x^2))``: four multiplies, an add and a sigmoid. The two
    constants are buffers, which follow the model to fp16 (a Python float would stay an fp32 tensor, and its cast
    would run outside the delegate)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("a", torch.tensor([A]))
        self.register_buffer("b", torch.tensor([B]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(x * (x * x * self.b + self.a))


def half_precision(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in fp16 with every ``nn.GELU`` in its fp16-runnable form; the original is untouched."""
    half = copy.deepcopy(model)
    for parent in half.modules():
        for name, child in parent.named_children():
            if isinstance(child, nn.GELU):
                setattr(parent, name, SigmoidTanhGELU())
    return half.half().eval()

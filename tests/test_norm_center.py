"""LayerNorm means dropped where the input can be centred by its producer's weights (``edgevit.targets.norm_center``):
which norms lose their mean, and the rewritten program computing the same function. The real runtimes run the
rewritten LVT and MMViT in the full-width and MMViT target tests, against PyTorch."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edgevit.lowering.ops import LinearLayerNorm
from edgevit.targets._xnnpack_passes import decompose_for_xnnpack
from edgevit.targets.norm_center import drop_norm_means

C = 8


def _norm() -> LinearLayerNorm:
    return LinearLayerNorm(C, 1e-5, torch.rand(C) + 0.5, torch.rand(C) - 0.5)


class PreNormStream(nn.Module):
    """A conv stem, four pre-norm blocks (the second one's residual a max pool, the last two sharing one Linear)
    and a final norm: the stream is read by norms, residual adds and token reorderings only."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, C, 2, stride=2)
        self.pos = nn.Parameter(torch.randn(16, C))
        self.norms = nn.ModuleList(_norm() for _ in range(5))
        self.fc, self.pooled, self.attn, self.shared = (nn.Linear(C, C) for _ in range(4))
        self.head = nn.Linear(C, 3)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.stem(image).permute(0, 2, 3, 1).reshape(image.shape[0], 16, C) + self.pos
        x = x + self.fc(F.gelu(self.norms[0](x)))  # the stem's conv and the position constant take the centring
        x = torch.cat([x[:, ::2], x[:, 1::2]], dim=1)  # tokens reordered: rows stay rows
        h = self.norms[1](x)
        # a residual max-pooled over tokens cannot be centred by weights: the next norm keeps its mean ...
        x = F.max_pool1d(self.pooled(h).transpose(1, 2), 2).transpose(1, 2) + self.attn(h)[:, :8]
        x = x + self.shared(self.norms[2](x))  # ... and the stream goes on from that norm's centred value
        x = x + self.shared(self.norms[3](x))  # one Linear applied twice, centred once
        return self.head(self.norms[4](x).mean(1))


class ReadElsewhere(nn.Module):
    """A norm's input that something else reads as it is: nothing may shift it."""

    def __init__(self) -> None:
        super().__init__()
        self.fc, self.norm = nn.Linear(C, C), _norm()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fc(x)
        return self.norm(y) + y[..., :1]


class ConvsThatCannotCentre(nn.Module):
    """Norms behind a depthwise conv, a transposed conv, a ReLU and a reshape to a map, each then moved channels
    last: no weight change shifts every channel of those alike, so each keeps its mean."""

    def __init__(self) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(C, C, 3, padding=1, groups=C)
        self.transposed = nn.ConvTranspose2d(C, C, 2, stride=2)
        self.plain = nn.Conv2d(C, C, 1)
        self.norms = nn.ModuleList(_norm() for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, C, 4, 4)
        out = self.norms[0](self.depthwise(x).permute(0, 2, 3, 1)).sum()
        out = out + self.norms[1](self.transposed(x).permute(0, 2, 3, 1)).sum()
        out = out + self.norms[2](F.relu(self.plain(x)).permute(0, 2, 3, 1)).sum()
        return out + self.norms[3](x.reshape(x.shape[0], C, 2, 8).permute(0, 2, 3, 1)).sum()


def _program(model: nn.Module, example: torch.Tensor):
    return decompose_for_xnnpack(torch.export.export(model.eval(), (example,), strict=False))


def test_a_stream_read_by_norms_loses_every_mean_it_can_and_computes_the_same():
    torch.manual_seed(0)
    model = PreNormStream().eval()
    example = torch.randn(2, 3, 8, 8)
    weights = {name: p.detach().clone() for name, p in model.state_dict().items()}
    program = _program(model, example)
    # every norm but norm 2, which reads the max-pool residual
    assert drop_norm_means(program) == 4
    subtractions = [n for n in program.graph.nodes if n.target == torch.ops.aten.sub.Tensor]
    assert len(subtractions) == 1
    with torch.no_grad():
        torch.testing.assert_close(program.module()(example), model(example), rtol=1e-5, atol=1e-5)
    # the module the program came from keeps its own weights
    assert all(torch.equal(p, weights[name]) for name, p in model.state_dict().items())


def test_a_norm_input_read_by_anything_else_keeps_its_mean():
    program = _program(ReadElsewhere(), torch.randn(1, 4, C))
    assert drop_norm_means(program) == 0


def test_grouped_transposed_and_non_layer_inputs_keep_their_means():
    torch.manual_seed(0)
    model = ConvsThatCannotCentre().eval()
    example = torch.randn(2, C, 4, 4)
    program = _program(model, example)
    assert drop_norm_means(program) == 0
    with torch.no_grad():
        torch.testing.assert_close(program.module()(example), model(example), rtol=1e-5, atol=1e-5)

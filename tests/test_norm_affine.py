"""LayerNorm affines folded into the layers they feed (``edgevit.targets.norm_affine``): which norms fold, and the
folded .pte computing the same function on the real runtime."""

from __future__ import annotations

import torch
from torch import nn

from edgevit.lowering.ops import LinearLayerNorm
from edgevit.recipe import get_recipe
from edgevit.runtime import open_runner
from edgevit.targets import executorch as et
from edgevit.targets._xnnpack_passes import decompose_for_xnnpack
from edgevit.targets.norm_affine import fold_norm_affines

C = 8


def _norm() -> LinearLayerNorm:
    return LinearLayerNorm(C, 1e-5, torch.rand(C) + 0.5, torch.rand(C) - 0.5)


class FoldableAndNot(nn.Module):
    """Three norms that fold (into two Linears; through a reshape; through the permute to channels first into an
    unpadded strided conv) and four that must not (a padded conv, a residual use, a Linear shared by two, a Linear
    over the map's width behind the permute, as wide as the channels)."""

    def __init__(self) -> None:
        super().__init__()
        self.norms = nn.ModuleList(_norm() for _ in range(7))
        self.q, self.kv, self.flat = nn.Linear(C, C), nn.Linear(C, 2 * C), nn.Linear(C, C)
        self.reduce = nn.Conv2d(C, C, 2, stride=2)
        self.padded = nn.Conv2d(C, C, 3, padding=1)
        self.shared, self.beside_residual, self.over_width = nn.Linear(C, C), nn.Linear(C, C), nn.Linear(C, C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, H, W, C)
        a = self.norms[0](x)
        out = self.q(a).sum() + self.kv(a).sum()
        out = out + self.flat(self.norms[1](x).reshape(x.shape[0], -1, C)).sum()
        out = out + self.reduce(self.norms[2](x).permute(0, 3, 1, 2)).sum()
        out = out + self.padded(self.norms[3](x).permute(0, 3, 1, 2)).sum()
        residual = self.norms[4](x)
        out = out + (self.beside_residual(residual) + residual).sum()
        out = out + self.over_width(self.norms[6](x).permute(0, 3, 1, 2)).sum()
        return out + self.shared(self.norms[5](x)).sum() + self.shared(x).sum()


def test_only_norms_whose_every_use_is_a_layer_of_their_own_fold():
    torch.manual_seed(0)
    model = FoldableAndNot().eval()
    example = torch.randn(1, 4, C, C)  # as wide as it has channels
    weights = {name: p.detach().clone() for name, p in model.state_dict().items()}
    program = decompose_for_xnnpack(torch.export.export(model, (example,), strict=False))
    assert fold_norm_affines(program) == 3
    with torch.no_grad():
        torch.testing.assert_close(program.module()(example), model(example), rtol=1e-5, atol=1e-5)
    # the module the program came from keeps its own weights
    assert all(torch.equal(p, weights[name]) for name, p in model.state_dict().items())


class PreNormMlp(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.norm = _norm()
        self.fc1, self.fc2 = nn.Linear(C, 4 * C), nn.Linear(4 * C, C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(torch.nn.functional.gelu(self.fc1(self.norm(x))))


def test_the_folded_pte_computes_the_same_function_with_two_ops_fewer(tmp_path):
    torch.manual_seed(0)
    model = PreNormMlp().eval()
    reference_weight = model.fc1.weight.detach().clone()
    example, batch = torch.randn(1, 16, C), torch.randn(4, 16, C)
    artifact = et.export(model, example, get_recipe("executorch-xnnpack-fp32"))
    assert artifact.audit["norm_affines_folded"] == 1
    assert torch.equal(model.fc1.weight, reference_weight)
    delegated = artifact.audit["ops_delegated"]
    # the norm's own centring and scaling remain (sub, two muls), its affine's mul and add are gone, and the
    # residual add stays
    assert delegated["mul"] == 2 and delegated["add"] == 1, delegated
    path = tmp_path / "mlp.pte"
    artifact.write(path)
    out = torch.from_numpy(open_runner(path).run_batch(batch.numpy()))
    with torch.no_grad():
        torch.testing.assert_close(out, model(batch), rtol=1e-5, atol=1e-5)

"""edgevit's XNNPACK layout passes on the real runtime: the transposes they remove (counted in ExecuTorch's op
profile) and outputs bit-identical to the program XNNPACK's own passes give, in fp32 and int8."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edgevit.bench.op_profile import profile_pte
from edgevit.lowering.ops import LinearLayerNorm
from edgevit.quant.pt2e import backend_quantizer, quantize
from edgevit.recipe import get_recipe
from edgevit.runtime import open_runner
from edgevit.targets import executorch as et


class TokensConvTokens(nn.Module):
    """The pattern of LVT's MLP and MMViT's poolings: NHWC tokens through a Linear, permuted to NCHW for a
    depthwise conv (one branch shared by two convs, as RASA's dilations share Q), back to tokens, LayerNorm."""

    def __init__(self, channels: int = 16) -> None:
        super().__init__()
        self.fc = nn.Linear(channels, channels)
        self.conv1 = nn.Conv2d(channels, channels, 3, 1, 1, groups=channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 2, dilation=2, groups=channels)
        self.norm = LinearLayerNorm(channels, 1e-5, torch.ones(channels), torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fc(x).permute(0, 3, 1, 2)
        y = (self.conv1(y) + self.conv2(y)).permute(0, 2, 3, 1)
        return self.norm(y) + x


def _lower_without_layout_passes(model: nn.Module, example: torch.Tensor) -> bytes:
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    program = torch.export.export(model, (example,), strict=False)
    return to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()]).to_executorch().buffer


def _transposes(path) -> int:
    ops = profile_pte(path, threads=1, warmup=1, runs=2)["ops"]
    return sum(row["count"] for row in ops if row["op"].startswith("Transpose"))


@pytest.fixture(scope="module")
def block_and_inputs():
    torch.manual_seed(0)
    return TokensConvTokens().eval(), torch.randn(1, 12, 12, 16), torch.randn(4, 12, 12, 16)


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_layout_passes_remove_transposes_and_keep_every_output_bit(block_and_inputs, tmp_path, precision):
    block, example, batch = block_and_inputs
    model = block
    if precision == "int8":
        quantizer = backend_quantizer("executorch", {"scheme": "static", "per_channel": True})
        model = quantize(block, example, quantizer, batch)
    ours, theirs = tmp_path / "ours.pte", tmp_path / "theirs.pte"
    et.export(model, example, get_recipe(f"executorch-xnnpack-{precision}")).write(ours)
    theirs.write_bytes(_lower_without_layout_passes(model, example))

    # XNNPACK's own lowering moves the tokens to NCHW and back around the convs; edgevit's passes remove that
    assert _transposes(theirs) >= 4
    assert _transposes(ours) == 0
    ours_out = torch.from_numpy(open_runner(ours).run_batch(batch.numpy()))
    theirs_out = torch.from_numpy(open_runner(theirs).run_batch(batch.numpy()))
    assert torch.equal(ours_out, theirs_out)
    if precision == "fp32":
        with torch.no_grad():
            torch.testing.assert_close(ours_out, block(batch))

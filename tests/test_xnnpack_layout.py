"""edgevit's XNNPACK layout passes on the real runtime: the transposes they remove (counted in ExecuTorch's op
profile) and outputs bit-identical to the program XNNPACK's own passes give, in fp32 and int8."""

from __future__ import annotations

import contextlib

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


def _op_counts(path) -> dict[str, int]:
    """XNNPACK ops by type, from the runtime's own profile."""
    return {row["op"]: row["count"] for row in profile_pte(path, threads=1, warmup=1, runs=2)["ops"]}


def _transposes(ops: dict[str, int]) -> int:
    return sum(count for op, count in ops.items() if op.startswith("Transpose"))


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
    artifact = et.export(model, example, get_recipe(f"executorch-xnnpack-{precision}"))
    artifact.write(ours)
    theirs.write_bytes(_lower_without_layout_passes(model, example))

    # XNNPACK's own lowering moves the tokens to NCHW and back around the convs; edgevit's passes remove that
    assert _transposes(_op_counts(theirs)) >= 4
    ours_ops = _op_counts(ours)
    assert _transposes(ours_ops) == 0
    # the relabelling reshapes left in their place (after the conv, read by the norm's Linear and subtraction;
    # before the two convs) would each copy the map, as several ops read them: they are dropped
    assert artifact.audit["xnnpack_copies_removed"]["identity_reshapes_removed"] >= 2
    assert not any(op.startswith("Static Reshape") for op in ours_ops)
    ours_out = torch.from_numpy(open_runner(ours).run_batch(batch.numpy()))
    theirs_out = torch.from_numpy(open_runner(theirs).run_batch(batch.numpy()))
    assert torch.equal(ours_out, theirs_out)
    if precision == "fp32":
        with torch.no_grad():
            torch.testing.assert_close(ours_out, block(batch))


class EveryPassFires(nn.Module):
    """A block on which several of XNNPACK's passes change the graph: conv + batch norm + ReLU, bilinear
    upsampling, a concat of six, max pooling, and a 4-D permute there and back (edgevit's layout passes)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn(self.conv(x)))
        y = nn.functional.interpolate(y, scale_factor=2.0, mode="bilinear", align_corners=False)
        y = nn.functional.max_pool2d(torch.cat([y[:, i : i + 1] for i in range(6)], dim=1), 2)
        return (y.permute(0, 2, 3, 1) * 2.0).permute(0, 3, 1, 2)


def test_passes_that_change_nothing_skip_their_retrace_and_the_program_is_the_same(monkeypatch):
    """The export-time savings (passes that change nothing skip their retrace or do not run, passes that keep
    every value recompile instead of retracing, node provenance is shared, one decomposition run fewer, no
    dim-order ops) leave the program byte for byte as the default lowering writes it."""
    from executorch.backends.xnnpack.partition.graphs import bilinear_2d, sdpa
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import EdgeCompileConfig
    from executorch.exir.pass_base import ExportPass

    from edgevit.targets import _xnnpack_passes, provenance

    # a pattern pass is skipped where one of these ops is missing: each must be in every one of its patterns
    patterns = {"ConvertToSDPAPass": sdpa.get_graphs(), "ConvertToUpsampleBilinear2d": bilinear_2d.get_graphs_dict()}
    for pass_class, needed in _xnnpack_passes.PATTERN_OPS.items():
        assert all(needed <= _xnnpack_passes.graph_ops(graph) for graph in patterns[pass_class.__name__])

    retraces, kept = [], []
    retrace = ExportPass.call
    monkeypatch.setattr(ExportPass, "call", lambda self, gm: retraces.append(1) or retrace(self, gm))
    traced = _xnnpack_passes.traced
    monkeypatch.setattr(_xnnpack_passes, "traced", lambda gm: kept.append(1) or traced(gm))
    torch.manual_seed(0)
    model = EveryPassFires().eval()
    model.bn.running_mean.uniform_(-1, 1)
    example = torch.randn(1, 3, 8, 8)
    recipe = get_recipe("executorch-xnnpack-fp32")
    fast = et.export(model, example, recipe)
    fast_retraces = len(retraces)
    assert len(kept) >= 3  # the permute pinning, the copy removal and the round-trip removal, not retraced
    # and with the node provenance copied, as torch does by default (edgevit shares it while lowering)
    monkeypatch.setattr(_xnnpack_passes, "lazy", lambda pass_class: pass_class)
    monkeypatch.setattr(provenance, "shared_provenance", contextlib.nullcontext)
    monkeypatch.setattr(_xnnpack_passes, "idle_edge_passes_skipped", contextlib.nullcontext)
    monkeypatch.setattr(_xnnpack_passes, "one_decomposition_partitioner", XnnpackPartitioner)
    monkeypatch.setattr(et, "_edge_config", lambda taken_whole: EdgeCompileConfig())
    every_pass = et.export(model, example, recipe)
    assert fast.data == every_pass.data and "upsample_bilinear2d" in fast.audit["ops_delegated"]
    assert fast_retraces < len(retraces) - fast_retraces


def test_a_program_xnnpack_takes_whole_is_checked_against_the_edge_dialect_once(monkeypatch):
    """ExecuTorch's per-pass dialect checks are off for the fast path; edgevit's one check after the lowering
    still sees every delegated node: without the ops the partitioner keeps whole, the kept linear fails it."""
    from torch._export.verifier import SpecViolationError

    checks = []
    check = et.check_delegated_edge_dialect
    monkeypatch.setattr(
        et, "check_delegated_edge_dialect", lambda gm, kept: checks.append((gm, kept)) or check(gm, kept)
    )
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.GELU()).eval()
    et.export(model, torch.randn(2, 8), get_recipe("executorch-xnnpack-fp32"))
    assert len(checks) == 1
    gm, kept = checks[0]
    assert torch.ops.aten.linear.default in kept
    with pytest.raises(SpecViolationError, match="linear"):
        check(gm, [])


class IntegerOffset(nn.Module):
    """A float map plus an integer buffer: the cast of the integer stays outside XNNPACK."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("steps", torch.arange(3).reshape(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.steps)


def test_ops_left_outside_the_delegate_keep_executorchs_dim_order_form(monkeypatch):
    from executorch.exir import EdgeCompileConfig

    example = torch.randn(1, 3, 4, 4)
    recipe = get_recipe("executorch-xnnpack-fp32")
    ours = et.export(IntegerOffset(), example, recipe)
    monkeypatch.setattr(et, "_edge_config", lambda taken_whole: EdgeCompileConfig())
    assert ours.audit["ops_outside"] == {"to_dim_order_copy": 1}
    assert ours.data == et.export(IntegerOffset(), example, recipe).data


def test_provenance_is_shared_only_while_lowering():
    import copy

    from torch.fx.traceback import NodeSource

    from edgevit.targets.provenance import shared_provenance

    record = NodeSource(None, "a pass")
    with shared_provenance():
        assert copy.deepcopy(record) is record
    assert copy.deepcopy(record) is not record and "__deepcopy__" not in NodeSource.__dict__


class SlicesOfSlices(nn.Module):
    """Slices over several dims (one XNNPACK slice per dim as ExecuTorch writes them), and a slice of one."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x * 2.0
        corner = y[:, 1:5, 2:6, 3:11]
        return corner[:, 1:3] + y[:, 0:2, 0:4, 0:8]


def test_slice_chains_run_as_one_slice_each(tmp_path):
    torch.manual_seed(0)
    model, example = SlicesOfSlices(), torch.randn(1, 12, 12, 16)
    artifact = et.export(model, example, get_recipe("executorch-xnnpack-fp32"))
    artifact.write(tmp_path / "slices.pte")
    # seven slice ops in torch, one per sliced dim: chains of four and three
    assert artifact.audit["xnnpack_copies_removed"]["slices_merged"] == 5
    assert _op_counts(tmp_path / "slices.pte")["Slice (ND, X32)"] == 2
    out = torch.from_numpy(open_runner(tmp_path / "slices.pte").run_batch(example.numpy()))
    assert torch.equal(out, model(example))

"""ExecuTorch target: torch.export -> to_edge_transform_and_lower(XNNPACK) -> .pte, with a delegation audit."""

from __future__ import annotations

import functools
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..errors import EdgevitError
from .audit import NON_COMPUTE, max_tensor_rank, op_counts, op_name
from .base import ExportedArtifact
from .registry import Target, register_target

if TYPE_CHECKING:
    from ..recipe import Recipe


def _xnnpack(recipe: Recipe):
    from ._xnnpack_passes import one_decomposition_partitioner

    return one_decomposition_partitioner()


def _coreml(recipe: Recipe):
    """Core ML delegate inside the .pte, with the same deployment options as the coreml target's recipes."""
    from executorch.backends.apple.coreml.compiler import CoreMLBackend
    from executorch.backends.apple.coreml.partition import CoreMLPartitioner

    from .coreml import conversion_options

    opts = conversion_options(recipe)
    specs = CoreMLBackend.generate_compile_specs(
        compute_unit=opts["compute_units"],
        minimum_deployment_target=opts["minimum_deployment_target"],
        compute_precision=opts["compute_precision"],
    )
    return CoreMLPartitioner(compile_specs=specs)


PARTITIONERS = {"xnnpack": _xnnpack, "coreml": _coreml}


def _partitioners(recipe: Recipe) -> list:
    names = recipe.options.get("partitioners", ["xnnpack"])
    unknown = [n for n in names if n not in PARTITIONERS]
    if unknown:
        raise EdgevitError(
            f"recipe {recipe.name}: unknown partitioner '{unknown[0]}'; choose from {list(PARTITIONERS)}"
        )
    return [PARTITIONERS[n](recipe) for n in names]


def export(model: torch.nn.Module, example: torch.Tensor, recipe: Recipe) -> ExportedArtifact:
    """Export a deploy-form model to .pte bytes and audit what the delegate took."""
    from .provenance import shared_provenance

    fp16 = _program_dtype(recipe) == "float16"
    if fp16:  # the app feeds and reads float16; inside, nothing is cast back to fp32
        from .fp16 import half_precision

        model, example = half_precision(model), example.half()
    with shared_provenance():
        program = torch.export.export(model, (example,), strict=False)
        rank, rank_op = max_tensor_rank(program.graph)
        ops = op_counts(program.graph)
        xnnpack_only = _xnnpack_only(recipe)
        folded = means_dropped = 0
        if xnnpack_only:
            from ._xnnpack_passes import decompose_for_xnnpack, kept_whole
            from .norm_affine import fold_norm_affines
            from .norm_center import drop_norm_means

            program = decompose_for_xnnpack(program)
            means_dropped = drop_norm_means(program)
            folded = fold_norm_affines(program)
        edge, copies_removed = _lower(program, recipe, xnnpack_only)
        audit = audit_lowered(edge.exported_program().graph_module)
        if audit["ops_outside"] and xnnpack_only:  # those ops take ExecuTorch's dim-order form
            edge, copies_removed = _lower(program, recipe, False)
            audit = audit_lowered(edge.exported_program().graph_module)
        elif xnnpack_only:  # nothing outside for the dim-order pass to fix, which would retrace every node
            edge.compile_config._skip_dim_order = True
            check_delegated_edge_dialect(edge.exported_program().graph_module, kept_whole(program))
        audit.update(ops=dict(sorted(ops.items())), max_rank=rank, max_rank_op=rank_op, norm_affines_folded=folded)
        audit.update(norm_means_dropped=means_dropped)
        audit.update(xnnpack_copies_removed=dict(copies_removed))
        if fp16:
            audit.update(input_dtype="float16", output_dtype="float16")
        return ExportedArtifact.from_bytes(edge.to_executorch().buffer, audit)


def _lower(program: Any, recipe: Recipe, taken_whole: bool) -> tuple[Any, Counter]:
    """The lowered edge program, and what :mod:`._xnnpack_graph` removed from its XNNPACK graphs."""
    from executorch.exir import to_edge_transform_and_lower

    from ._xnnpack_passes import decomposed_already, idle_edge_passes_skipped

    with _xnnpack_layout_pass() as copies_removed, idle_edge_passes_skipped(), decomposed_already(program):
        edge = to_edge_transform_and_lower(
            program, partitioner=_partitioners(recipe), compile_config=_edge_config(taken_whole)
        )
    return edge, copies_removed


def _xnnpack_only(recipe: Recipe) -> bool:
    return recipe.options.get("partitioners", ["xnnpack"]) == ["xnnpack"]


def _edge_config(taken_whole: bool) -> Any:
    """ExecuTorch's edge config for a program XNNPACK is expected to take whole, or ExecuTorch's default one.

    XNNPACK's passes revert dim-order ops to the copies they were made from, so a program XNNPACK takes whole
    is the same without them (two whole-program passes fewer); ops left outside take the dim-order form.

    That program is not checked against the edge dialect after every ExecuTorch pass (each check runs every node
    through its argument validator again: a sixth of mmvit_s's export) but once, after the lowering
    (:func:`check_delegated_edge_dialect`); the default form keeps ExecuTorch's own checks."""
    from executorch.exir import EdgeCompileConfig

    return EdgeCompileConfig(_skip_dim_order=taken_whole, _check_ir_validity=not taken_whole)


def check_delegated_edge_dialect(gm: torch.fx.GraphModule, kept_whole: list) -> None:
    """Check every delegated program in ``gm`` against the edge dialect, the ops the partitioner kept whole
    allowed, as ExecuTorch's last check before the partitioning does; raises torch's SpecViolationError naming
    the op that fails."""
    from executorch.exir import EdgeCompileConfig
    from executorch.exir.lowered_backend_module import LoweredBackendModule
    from executorch.exir.verification.verifier import EXIREdgeDialectVerifier

    config = EdgeCompileConfig(_skip_dim_order=True)
    verify = EXIREdgeDialectVerifier(edge_compile_config=config, class_only=True, preserve_ops=kept_whole)()
    for module in gm.modules():
        if isinstance(module, LoweredBackendModule):
            verify(module.original_module.graph_module)


def _program_dtype(recipe: Recipe) -> str:
    """The float dtype of the exported program: float16 puts weights, activations, input and output in half."""
    dtype = recipe.options.get("program_dtype", "float32")
    if dtype not in ("float32", "float16"):
        raise EdgevitError(f"recipe {recipe.name}: program_dtype '{dtype}'; choose float32 or float16")
    return dtype


@contextmanager
def _xnnpack_layout_pass() -> Iterator[Counter]:
    """Add edgevit's layout passes to XNNPACK's own while a program is lowered (the delegate takes no extra
    passes as an argument): one just before its channels-last pass, one after the last. Every pass skips the
    retrace where it changed nothing, and the program is checked once after the last (``_xnnpack_passes``).
    Each XNNPACK graph then loses the copies that move no data (``_xnnpack_graph``), counted in the yield."""
    from executorch.backends.xnnpack import xnnpack_preprocess
    from executorch.backends.xnnpack._passes.channels_last_tagged_reshape_pass import ChannelsLastTaggedReshapePass

    from ._xnnpack_graph import remove_needless_copies
    from ._xnnpack_layout import PinPermutesContiguousPass, RemoveLayoutRoundTripsPass
    from ._xnnpack_passes import lazy, run_checked_once

    base = xnnpack_preprocess.XNNPACKPassManager

    class PassManager(base):
        def __init__(self, exported_program, passes=None) -> None:
            super().__init__(exported_program, passes)
            if passes is None:  # the default list; a dynamic-linear preprocess names its own
                at = self.passes.index(ChannelsLastTaggedReshapePass)
                self.passes = [
                    *self.passes[:at],
                    PinPermutesContiguousPass,
                    *self.passes[at:],
                    RemoveLayoutRoundTripsPass,
                ]
            self.passes = [lazy(p) for p in self.passes]

        def transform(self):
            return run_checked_once(self.exported_program, self.passes)

    serialize = xnnpack_preprocess.serialize_xnnpack_binary
    removed: Counter = Counter()

    def serialize_without_needless_copies(graph: Any, *args: Any, **kwargs: Any) -> bytes:
        removed.update(remove_needless_copies(graph))
        return serialize(graph, *args, **kwargs)

    xnnpack_preprocess.XNNPACKPassManager = PassManager
    xnnpack_preprocess.serialize_xnnpack_binary = serialize_without_needless_copies
    try:
        yield removed
    finally:
        xnnpack_preprocess.XNNPACKPassManager = base
        xnnpack_preprocess.serialize_xnnpack_binary = serialize


def audit_lowered(gm: torch.fx.GraphModule) -> dict[str, Any]:
    """Partitions and ops inside/outside the delegates of a lowered edge program."""
    partitions = 0
    backends: set[str] = set()
    inside: Counter = Counter()
    outside: Counter = Counter()
    for node in gm.graph.nodes:
        if node.op != "call_function":
            continue
        if "executorch_call_delegate" in str(node.target):
            partitions += 1
            lowered = getattr(gm, node.args[0].target)
            backends.add(lowered.backend_id)
            inside.update(_delegated_ops(lowered))
            continue
        name = op_name(node)
        if name not in NON_COMPUTE:
            outside[name] += 1
    total = sum(inside.values()) + sum(outside.values())
    return {
        "backend": ", ".join(sorted(backends)) or "none",
        "partitions": partitions,
        "ops_delegated": dict(sorted(inside.items())),
        "ops_outside": dict(sorted(outside.items())),
        "delegated_share": round(sum(inside.values()) / total, 4) if total else 0.0,
    }


def _delegated_ops(lowered_module: Any) -> Counter:
    graph = lowered_module.original_module.graph
    return Counter(op_name(n) for n in graph.nodes if n.op == "call_function" and op_name(n) not in NON_COMPUTE)


def audit_pte_file(path: Path) -> dict[str, Any]:
    """Delegate calls and the kernels left outside them, read from a .pte's execution plan."""
    from executorch.exir._serialize._program import deserialize_pte_binary

    plan = deserialize_pte_binary(path.read_bytes()).program.execution_plan[0]
    delegate_calls, outside = 0, Counter()
    for chain in plan.chains:
        for instruction in chain.instructions:
            kind = type(instruction.instr_args).__name__
            if kind == "DelegateCall":
                delegate_calls += 1
            elif kind == "KernelCall":
                outside[plan.operators[instruction.instr_args.op_index].name] += 1
    return {
        "backend": ", ".join(sorted({d.id for d in plan.delegates})) or "none",
        "partitions": delegate_calls,
        "ops_outside": dict(sorted(outside.items())),
    }


def pte_backends(path: Path) -> frozenset[str]:
    """Backend ids of the delegates inside a .pte (empty when the file cannot be parsed)."""
    stat = path.stat()
    return _pte_backends(str(path.resolve()), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=32)
def _pte_backends(path: str, mtime_ns: int, size: int) -> frozenset[str]:
    """Parsed once per file version: checking whether the host can run a .pte precedes every runner's load."""
    from executorch.exir._serialize._program import deserialize_pte_binary

    try:
        return frozenset(
            d.id for d in deserialize_pte_binary(Path(path).read_bytes()).program.execution_plan[0].delegates
        )
    except Exception:  # a corrupt file: the runner's own load reports it
        return frozenset()


class ExecuTorchTarget(Target):
    name = "executorch"
    suffix = ".pte"
    description = "ExecuTorch program (.pte), XNNPACK delegate (or Core ML's inside the .pte)"
    order = 0
    layout = "tokens-last"
    # the Core ML partitioner's settings too (executorch-coreml-fp16)
    recipe_options = frozenset(
        {"partitioners", "program_dtype", "compute_precision", "compute_units", "deployment_target"}
    )
    default_recipe = "executorch-xnnpack-fp32"
    int8_recipe = "executorch-xnnpack-int8"
    runtime = "executorch"
    host_runner = "edgevit.runtime.executorch:ExecuTorchRunner"
    device_runner = "executor_runner"
    # ExecuTorch 1.5.1 fails to reshape dynamically quantized convs (RASA's strided reduction, 1x1 convs) at
    # run time, so they stay float in dynamic int8 graphs
    dynamic_float_modules = (torch.nn.Conv2d,)

    def export(self, model: torch.nn.Module, example: torch.Tensor, recipe: Recipe) -> ExportedArtifact:
        return export(model, example, recipe)

    def audit_file(self, path: Path) -> dict[str, Any]:
        return audit_pte_file(path)

    def quantizer(self, options: dict[str, Any], qat: bool = False) -> Any:
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
            XNNPACKQuantizer,
            get_symmetric_quantization_config,
        )

        from ..quant.pads import with_int8_pads

        config = get_symmetric_quantization_config(
            is_per_channel=options["per_channel"], is_dynamic=options["scheme"] == "dynamic", is_qat=qat
        )
        quantizer = XNNPACKQuantizer().set_global(config)
        return quantizer if options["scheme"] == "dynamic" else with_int8_pads(quantizer, config.input_activation)

    def cannot_run_here(self, path: Path) -> str | None:
        if sys.platform != "darwin" and "CoreMLBackend" in pte_backends(path):
            return "the .pte delegates to Core ML, which runs on Apple devices only; numerics skipped on this host"
        return None


register_target(ExecuTorchTarget())

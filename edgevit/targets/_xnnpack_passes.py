"""XNNPACK's lowering passes, run only where they can change the graph.

ExecuTorch's XNNPACK preprocess runs about twenty passes over the whole program, and each one ends by retracing
every node under fake tensors and re-verifying the program, whether it changed anything or not: on ``lvt`` that is
about a second per pass, most of the time a ``.pte`` export takes. Two changes keep the output byte for byte and
drop most of that time:

- a pass whose own rewrite left the graph's structure as it was (same nodes, targets and arguments) skips the
  retrace and reports "not modified", so the program is not rebuilt and re-verified either;
- the two pattern passes that export their patterns on every call (SDPA and bilinear upsampling) are skipped
  when the graph lacks ops that every one of their patterns contains, so no pattern can match;
- a pass that only removes or bypasses nodes whose output equals their input (copies, layout round trips, a
  max pool's unused indices) leaves every surviving node's traced value as it was: when every node still has
  one, the graph is cleaned and recompiled instead of retraced (``test_xnnpack_layout`` checks the bytes);
- a pass that rewrites node by node during its retrace (ExecuTorch's own conversion to the edge dialect among
  them: view ops to copies, numbers and symbolic values to tensors, mixed dtypes) is skipped where no node is
  one it rewrites, and the programs are exported without dim-order ops, which XNNPACK's passes would revert anyway;
- ExecuTorch checks the whole program (regenerating its Python code, linting, verifying every node) before and
  after each pass; the passes run here with the program checked once, after the last (``run_checked_once``);
- the partitioner's ops to keep whole (``linear``, ``max_pool2d``) are checked node by node before decomposition;
  where every such node passes, ExecuTorch keeps them by op rather than marking each node, which spares one of
  its three whole-program decomposition runs (``one_decomposition_partitioner``); and the program is
  functionalized and decomposed in one run, not two (``decompose_for_xnnpack``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from executorch.backends.transforms.remove_getitem_op import RemoveGetItemPass
from executorch.backends.xnnpack._passes.convert_to_sdpa import ConvertToSDPAPass
from executorch.backends.xnnpack._passes.convert_to_upsample_bilinear2d import ConvertToUpsampleBilinear2d
from executorch.backends.xnnpack._passes.remove_redundant_copy_pass import RemoveRedundantCopyPass
from executorch.exir.pass_base import ExportPass, PassResult
from executorch.exir.passes.const_prop_pass import ConstPropPass
from executorch.exir.passes.memory_format_ops_pass import DimOrderOpsRevertPass
from executorch.exir.passes.normalize_transpose_pass import NormalizeTransposePass
from executorch.exir.passes.remove_mixed_type_operators import RemoveMixedTypeOperators
from executorch.exir.passes.replace_broken_ops_with_function_ops_pass import ReplaceBrokenOpsWithFunctionalOpsPass
from executorch.exir.passes.scalar_to_tensor_pass import ScalarToTensorPass
from executorch.exir.passes.sym_to_tensor_pass import SymToTensorPass

# ops that each of the pass's patterns contains (``test_xnnpack_layout`` checks this against the patterns): a graph
# without one of them cannot match
PATTERN_OPS: dict[type, frozenset[str]] = {
    ConvertToSDPAPass: frozenset({"aten.logical_not.default", "aten.where.self", "aten.any.dim"}),
    ConvertToUpsampleBilinear2d: frozenset({"aten.upsample_bilinear2d.vec"}),
}


def _rewrites_dim_order(graph_module: torch.fx.GraphModule) -> bool:
    from executorch.exir.passes.dim_order_ops_registry import MemoryFormatOpsMap

    return any(n.op == "call_function" and n.target in MemoryFormatOpsMap for n in graph_module.graph.nodes)


def _rewrites_t(graph_module: torch.fx.GraphModule) -> bool:
    return any(n.op == "call_function" and n.target == torch.ops.aten.t.default for n in graph_module.graph.nodes)


def _has_constant_op(graph_module: torch.fx.GraphModule) -> bool:
    """A node none of whose arguments is another node: the only kind constant propagation can fold."""
    return any(n.op == "call_function" and not n.all_input_nodes for n in graph_module.graph.nodes)


def _has_view_op(graph_module: torch.fx.GraphModule) -> bool:
    return any(n.op == "call_function" and getattr(n.target, "is_view", False) for n in graph_module.graph.nodes)


def _has_symbolic_value(graph_module: torch.fx.GraphModule) -> bool:
    symbolic = torch.SymInt | torch.SymFloat | torch.SymBool
    return any(isinstance(n.meta.get("val"), symbolic) for n in graph_module.graph.nodes)


def _has_number_for_tensor(graph_module: torch.fx.GraphModule) -> bool:
    """A Python number passed where the op's schema takes a tensor: what ``ScalarToTensorPass`` rewrites."""
    for n in graph_module.graph.nodes:
        schema = getattr(n.target, "_schema", None) if n.op == "call_function" else None
        if schema is None:
            continue
        passed = dict(zip((a.name for a in schema.arguments), n.args, strict=False)) | dict(n.kwargs)
        for argument in schema.arguments:
            value = passed.get(argument.name)
            if isinstance(argument.type, torch.TensorType) and isinstance(value, bool | int | float):
                return True
    return False


_PROMOTING = frozenset(
    {
        torch.ops.aten.add.Tensor,
        torch.ops.aten.mul.Tensor,
        torch.ops.aten.sub.Tensor,
        torch.ops.aten.div.Tensor,
        torch.ops.aten.div.Tensor_mode,
        torch.ops.aten.minimum.default,
    }
)


def _has_mixed_dtypes(graph_module: torch.fx.GraphModule) -> bool:
    """A binary op of ``RemoveMixedTypeOperators``'s list whose tensor arguments are not all of one floating dtype
    (Python numbers beside floating tensors promote nothing)."""

    def dtype(arg: Any) -> Any:
        value = arg.meta.get("val") if isinstance(arg, torch.fx.Node) else arg
        return value.dtype if isinstance(value, torch.Tensor) else None

    for n in graph_module.graph.nodes:
        if n.op != "call_function" or n.target not in _PROMOTING or len(n.args) <= 1:
            continue
        tensors = [a for a in n.args if isinstance(a, torch.fx.Node | torch.Tensor)]
        dtypes = {dtype(a) for a in tensors}
        if len(dtypes) != 1 or not next(iter(dtypes)).is_floating_point:
            return True
    return False


# passes that rewrite node by node while retracing: where this says no node is one they rewrite, the retrace
# would rebuild the same graph (``test_xnnpack_layout`` checks the bytes)
REWRITES_ANY: dict[type, Callable[[torch.fx.GraphModule], bool]] = {
    DimOrderOpsRevertPass: _rewrites_dim_order,
    NormalizeTransposePass: _rewrites_t,
    ConstPropPass: _has_constant_op,
    ReplaceBrokenOpsWithFunctionalOpsPass: _has_view_op,
    SymToTensorPass: _has_symbolic_value,
    RemoveMixedTypeOperators: _has_mixed_dtypes,
    ScalarToTensorPass: _has_number_for_tensor,
}


# passes whose rewrite keeps the value of every node that survives it (edgevit's own layout passes say so with
# ``keeps_values = True``)
VALUE_KEEPING: frozenset[type] = frozenset({RemoveGetItemPass, RemoveRedundantCopyPass})


def keeps_values(pass_class: type) -> bool:
    return pass_class in VALUE_KEEPING or getattr(pass_class, "keeps_values", False)


def traced(graph_module: torch.fx.GraphModule) -> bool:
    """Every op of the graph carries its traced value (a node a pass created without one needs the retrace)."""
    return all("val" in n.meta for n in graph_module.graph.nodes if n.op in ("call_function", "placeholder"))


def structure(graph_module: torch.fx.GraphModule) -> tuple:
    """What a retrace depends on: each node's name, kind, target and arguments, in order."""
    return tuple((n.name, n.op, str(n.target), repr(n.args), repr(n.kwargs)) for n in graph_module.graph.nodes)


def graph_ops(graph_module: torch.fx.GraphModule) -> set[str]:
    return {getattr(n.target, "__name__", str(n.target)) for n in graph_module.graph.nodes if n.op == "call_function"}


class _RetraceOnlyIfChanged(ExportPass):
    """Sits just above ``ExportPass`` in a pass's method order: the pass's own ``super().call`` (the retrace) runs
    only when the pass changed the graph's structure since it started."""

    _structure_at_start: tuple = ()

    _values_kept: bool = False

    def call(self, graph_module: torch.fx.GraphModule) -> PassResult:
        if structure(graph_module) == self._structure_at_start:
            return PassResult(graph_module, False)
        if self._values_kept and traced(graph_module):
            graph_module.graph.eliminate_dead_code()
            graph_module.recompile()
            return PassResult(graph_module, True)
        return super().call(graph_module)


# ExportPass's per-node hooks: a pass that overrides one rewrites during the retrace itself, which must run
_RETRACE_HOOKS = frozenset(
    name
    for cls in ExportPass.__mro__
    for name in vars(cls)
    if name.startswith(("call_", "on_")) or name in ("placeholder", "output")
)


def rewrites_while_retracing(pass_class: type) -> bool:
    own = pass_class.__mro__[: pass_class.__mro__.index(ExportPass)]
    return any(hook in vars(cls) for cls in own for hook in _RETRACE_HOOKS)


def lazy(pass_class: type) -> type:
    """``pass_class`` that retraces and reports a change only when its rewrite changed the graph's structure, and
    that does not run at all where its patterns cannot match. A pass that rewrites during the retrace is kept."""
    if rewrites_while_retracing(pass_class):
        return _skipped_where_idle(pass_class)
    needed = PATTERN_OPS.get(pass_class, frozenset())

    class Lazy(pass_class, _RetraceOnlyIfChanged):
        _values_kept = keeps_values(pass_class)

        def call(self, graph_module: torch.fx.GraphModule) -> PassResult:
            if needed and not needed <= graph_ops(graph_module):
                return PassResult(graph_module, False)
            self._structure_at_start = before = structure(graph_module)
            result = super().call(graph_module)
            if result.graph_module is graph_module and structure(graph_module) == before:
                return PassResult(graph_module, False)  # meta may have changed, in place: nothing to rebuild
            return result

    Lazy.__name__ = Lazy.__qualname__ = pass_class.__name__
    return Lazy


def _skipped_where_idle(pass_class: type) -> type:
    """A pass that rewrites during its retrace, not run where none of its nodes is in the graph."""
    rewrites_any = REWRITES_ANY.get(pass_class)
    if rewrites_any is None:
        return pass_class

    class SkippedWhereIdle(pass_class):
        def call(self, graph_module: torch.fx.GraphModule) -> PassResult:
            if not rewrites_any(graph_module):
                return PassResult(graph_module, False)
            return super().call(graph_module)

    SkippedWhereIdle.__name__ = SkippedWhereIdle.__qualname__ = pass_class.__name__
    return SkippedWhereIdle


def one_decomposition_partitioner() -> Any:
    """XNNPACK's partitioner, telling ExecuTorch to keep its ops whole by op where every node of them passes the
    partitioner's per-node check: the result is the program the per-node marking gives, one whole-program
    decomposition run sooner. Where a node fails the check, the per-node marking is kept."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir.program._program import _remove_invalid_ops_for_not_decompose

    class OneDecompositionPartitioner(XnnpackPartitioner):
        def ops_to_not_decompose(self, ep: Any) -> tuple[list, Callable | None]:
            ops, check = super().ops_to_not_decompose(ep)
            kept = [n for n in ep.graph.nodes if n.op == "call_function" and n.target in ops]
            if check is None or not all(check(n) for n in kept):
                return ops, check
            return _remove_invalid_ops_for_not_decompose(ops), None

    return OneDecompositionPartitioner()


def _skipped_instance_where_idle(pass_: Any) -> Any:
    """An instance of a pass of ``REWRITES_ANY`` (or ExecuTorch's wrapper of one), as a pass that returns the
    graph untouched where it is idle."""
    rewrites_any = REWRITES_ANY.get(type(getattr(pass_, "__wrapped__", pass_)))
    if rewrites_any is None:
        return pass_

    def run(graph_module: torch.fx.GraphModule) -> PassResult:
        return pass_(graph_module) if rewrites_any(graph_module) else PassResult(graph_module, False)

    return run


@contextmanager
def idle_edge_passes_skipped() -> Iterator[None]:
    """While a program is converted to the edge dialect, its passes of ``REWRITES_ANY`` run only where they can
    rewrite a node (ExecuTorch takes no pass list for that conversion, so its list is wrapped meanwhile)."""
    from executorch.exir.program import _program

    base = _program._get_aten_to_edge_passes

    def passes(config: Any) -> tuple[list, list]:
        before, after = base(config)
        return [_skipped_instance_where_idle(p) for p in before], after

    _program._get_aten_to_edge_passes = passes
    try:
        yield
    finally:
        _program._get_aten_to_edge_passes = base


def run_checked_once(exported_program: Any, pass_classes: list[type]) -> Any:
    """XNNPACK's pass manager's loop (each pass made for the program as the previous one left it) with the program
    checked after the last pass only: ExecuTorch's per-pass manager checks it before and after every one."""
    from executorch.backends.xnnpack._passes.xnnpack_pass import XNNPACKPass
    from executorch.exir.pass_manager import ExportedProgramPassManager
    from executorch.exir.program._program import _transform_with_pass_manager

    class Unchecked(ExportedProgramPassManager):
        def check(self, exported_program: Any) -> None:
            pass

    for pass_class in pass_classes:
        transform = pass_class(exported_program) if issubclass(pass_class, XNNPACKPass) else pass_class()
        exported_program = _transform_with_pass_manager(exported_program, Unchecked([transform]))
    ExportedProgramPassManager([]).check(exported_program)
    return exported_program


def _kept_whole(program: Any) -> tuple[list, Callable | None]:
    """The ops XNNPACK keeps whole, as ExecuTorch's marking path keeps them (mutating or aliasing ones dropped),
    and the partitioner's per-node check."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir.program._program import _remove_invalid_ops_for_not_decompose

    ops, check = XnnpackPartitioner().ops_to_not_decompose(program)
    return _remove_invalid_ops_for_not_decompose(ops), check


def kept_whole(program: Any) -> list:
    """The ops XNNPACK keeps whole in ``program`` (the edge dialect allows them beside the core ATen ops)."""
    return _kept_whole(program)[0]


def decompose_for_xnnpack(program: Any) -> Any:
    """``program`` functionalized and decomposed as ExecuTorch decomposes it for XNNPACK where every node of the
    ops XNNPACK keeps whole passes the partitioner's check, in one run where ExecuTorch takes two; otherwise
    ``program`` as it was, for ExecuTorch's own node-by-node marking."""
    from executorch.exir.program._program import _default_decomposition_table

    ops, check = _kept_whole(program)
    table = _default_decomposition_table()
    for op in ops:
        table.pop(op, None)
    decomposed = program.run_decompositions(table)
    kept = [n for n in decomposed.graph.nodes if n.op == "call_function" and n.target in ops]
    if check is not None and not all(check(n) for n in kept):
        return program
    decomposed._edgevit_decomposed = True  # noqa: SLF001 - read by ``decomposed_already``
    return decomposed


@contextmanager
def decomposed_already(program: Any) -> Iterator[None]:
    """While ``program`` is lowered, ExecuTorch's functionalizing run of no decompositions on it returns it as it
    is when ``decompose_for_xnnpack`` made it (already functional and decomposed: the run would rebuild it)."""
    from torch.export import ExportedProgram

    if not getattr(program, "_edgevit_decomposed", False):
        yield
        return
    base = ExportedProgram.run_decompositions

    def run_decompositions(self: Any, decomp_table: Any = None, *args: Any, **kwargs: Any) -> Any:
        if self is program and decomp_table == {}:
            return self
        return base(self, decomp_table, *args, **kwargs)

    ExportedProgram.run_decompositions = run_decompositions
    try:
        yield
    finally:
        ExportedProgram.run_decompositions = base

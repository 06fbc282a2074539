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
  one, the graph is cleaned and recompiled instead of retraced (``test_xnnpack_layout`` checks the bytes).
"""

from __future__ import annotations

import torch
from executorch.backends.transforms.remove_getitem_op import RemoveGetItemPass
from executorch.backends.xnnpack._passes.convert_to_sdpa import ConvertToSDPAPass
from executorch.backends.xnnpack._passes.convert_to_upsample_bilinear2d import ConvertToUpsampleBilinear2d
from executorch.backends.xnnpack._passes.remove_redundant_copy_pass import RemoveRedundantCopyPass
from executorch.exir.pass_base import ExportPass, PassResult

# ops that each of the pass's patterns contains (``test_xnnpack_layout`` checks this against the patterns): a graph
# without one of them cannot match
PATTERN_OPS: dict[type, frozenset[str]] = {
    ConvertToSDPAPass: frozenset({"aten.logical_not.default", "aten.where.self", "aten.any.dim"}),
    ConvertToUpsampleBilinear2d: frozenset({"aten.upsample_bilinear2d.vec"}),
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
        return pass_class
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

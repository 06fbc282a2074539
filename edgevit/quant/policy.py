"""Which ops stay float, in one place: per-backend module types, plus the user's mixed-precision choices.

The deploy forms write LayerNorm's statistics and CSA's 9-tap softmax sum as Linear layers (so XNNPACK
delegates them); quantizing those would quantize the normalisation itself, which is what wrecks int8 ViTs.
"""

from __future__ import annotations

import fnmatch

import torch
from torch import fx, nn

from ..lowering.ops import ChannelLayerNorm, LinearLayerNorm, PhaseFold, ShortRowSoftmax

# module types whose ops stay float on every backend: normalisations and softmax, whatever form they take,
# and CSA's overlap-add (pads and adds that cost little and need no int8 form)
FLOAT_MODULES: tuple[type[nn.Module], ...] = (
    LinearLayerNorm,
    ChannelLayerNorm,
    ShortRowSoftmax,
    nn.LayerNorm,
    PhaseFold,
)


def module_path(node: fx.Node) -> str:
    """Qualified name of the innermost module a node of an exported graph came from ('' at top level)."""
    stack = node.meta.get("nn_module_stack") or {}
    return next(reversed(stack.values()))[0] if stack else ""


def _type_name(kind: type | str) -> str:
    """Exported graphs record module types as 'package.module.Class' strings (older torch: the class)."""
    return kind if isinstance(kind, str) else f"{kind.__module__}.{kind.__qualname__}"


def stays_float(
    node: fx.Node, keep_float: tuple[str, ...], extra_types: tuple[type, ...] = (), float_ops: tuple = ()
) -> bool:
    """True for nodes inside a float-policy module type, of a backend's float op (``float_ops``) or under a
    module name the user keeps float (``fnmatch`` patterns such as ``stages.0.*``; a name also covers everything
    beneath it)."""
    if node.target in float_ops:
        return True
    stack = (node.meta.get("nn_module_stack") or {}).values()
    return scope_stays_float([path for path, _ in stack], [kind for _, kind in stack], keep_float, extra_types)


def scope_stays_float(
    paths: list[str], kinds: list[type | str], keep_float: tuple[str, ...], extra_types: tuple[type, ...] = ()
) -> bool:
    """The float policy for an op inside the modules ``paths`` of types ``kinds`` (outermost first)."""
    float_types = {_type_name(t) for t in (*FLOAT_MODULES, *extra_types)}
    if any(_type_name(kind) in float_types for kind in kinds):
        return True
    return any(fnmatch.fnmatchcase(path, pattern) for path in paths for pattern in keep_float)


def untie_weights(gm: fx.GraphModule) -> dict[str, str]:
    """Give every use of a shared weight its own copy (RASA's recursion and its shared depthwise kernel);
    returns copy name -> original name, for :func:`retie_float_copies`.

    PT2E quantizers annotate a weight once, so a second conv or linear on the same parameter would stay float
    beside quantized activations, which XNNPACK cannot build. Int8 copies cost a few hundred kB.
    """
    copies: dict[str, str] = {}
    count = 0
    for node in list(gm.graph.nodes):
        if node.op != "get_attr" or len(node.users) < 2:
            continue
        value = _tensor_attr(gm, node.target)
        if value is None:
            continue
        for user in list(node.users)[1:]:
            name = f"_untied_{count}"
            count += 1
            copies[name] = node.target
            gm.register_parameter(name, nn.Parameter(value.detach().clone(), requires_grad=False))
            with gm.graph.inserting_before(user):
                copy = gm.graph.get_attr(name)
            copy.meta = dict(node.meta)
            user.replace_input_with(node, copy)
    gm.graph.lint()
    gm.recompile()
    return copies


def retie_float_copies(gm: fx.GraphModule, copies: dict[str, str]) -> None:
    """Point the copies that stayed float back at their original weight, so fp32 weights are not stored twice."""
    originals: dict[str, fx.Node] = {n.target: n for n in gm.graph.nodes if n.op == "get_attr"}
    for node in list(gm.graph.nodes):
        if node.op != "get_attr" or node.target not in copies:
            continue
        source = copies[node.target]
        if source not in originals:
            with gm.graph.inserting_before(node):
                originals[source] = gm.graph.get_attr(source)
            originals[source].meta = dict(node.meta)
        node.replace_all_uses_with(originals[source])
        gm.graph.erase_node(node)
    used = {n.target for n in gm.graph.nodes if n.op == "get_attr"}
    for name in copies:
        if name not in used and hasattr(gm, name):  # folded into an int8 constant, or retied above
            delattr(gm, name)
    gm.graph.lint()
    gm.recompile()


def _tensor_attr(gm: fx.GraphModule, target: str) -> torch.Tensor | None:
    for get in (gm.get_parameter, gm.get_buffer):
        try:
            return get(target)
        except AttributeError:
            continue
    return None


def mark_float(
    gm: fx.GraphModule, keep_float: tuple[str, ...], extra_types: tuple[type, ...] = (), float_ops: tuple = ()
) -> int:
    """Mark the nodes that stay float as already annotated, so the backend's quantizer leaves them alone."""
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation
    from torchao.quantization.pt2e.quantizer.utils import Q_ANNOTATION_KEY

    marked = 0
    for node in gm.graph.nodes:
        if node.op == "call_function" and stays_float(node, keep_float, extra_types, float_ops):
            node.meta[Q_ANNOTATION_KEY] = QuantizationAnnotation(_annotated=True)
            marked += 1
    return marked

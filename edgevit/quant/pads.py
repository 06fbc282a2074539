"""Zero pads quantized with their input's own int8 parameters, so what is sliced out of a padded map stays int8.

XNNPACK's quantizer annotates no pad, so a pad of a float tensor (CSA pads the LayerNorm's output, then takes
its nine taps as slices) runs in float and every slice after it copies fp32. Quantized here with one set of
parameters in and out (XNNPACK builds an int8 pad only then; symmetric int8 holds zero exactly), the pad, the
reshapes and the slices after it all share it (the quantizer's own propagation), and their consumers take
int8 directly.
"""

from __future__ import annotations

import torch
from torch import fx

PADS = (torch.ops.aten.pad.default, torch.ops.aten.constant_pad_nd.default)


def _zero_constant_pad(node: fx.Node) -> bool:
    if node.target is torch.ops.aten.constant_pad_nd.default:
        return (node.args[2] if len(node.args) > 2 else node.kwargs.get("value", 0)) == 0
    mode = node.args[2] if len(node.args) > 2 else node.kwargs.get("mode", "constant")
    value = node.args[3] if len(node.args) > 3 else node.kwargs.get("value", None)
    return mode == "constant" and value in (None, 0)


def annotate_pads(model: fx.GraphModule, activation) -> None:
    """Annotate every zero pad no earlier annotation claimed (the float policy marks its own first)."""
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation, SharedQuantizationSpec
    from torchao.quantization.pt2e.quantizer.utils import Q_ANNOTATION_KEY

    for node in model.graph.nodes:
        if node.op != "call_function" or node.target not in PADS or Q_ANNOTATION_KEY in node.meta:
            continue
        source = node.args[0]
        if not (isinstance(source, fx.Node) and _zero_constant_pad(node)):
            continue
        node.meta[Q_ANNOTATION_KEY] = QuantizationAnnotation(
            input_qspec_map={source: activation},
            output_qspec=SharedQuantizationSpec((source, node)),
            _annotated=True,
        )


def with_int8_pads(quantizer, activation):
    """``quantizer`` annotating zero pads (:func:`annotate_pads`) before its own patterns, so its propagation
    through reshapes and slices starts from them."""
    own_annotate = quantizer.annotate

    def annotate(model: fx.GraphModule) -> fx.GraphModule:
        annotate_pads(model, activation)
        return own_annotate(model)

    quantizer.annotate = annotate
    return quantizer

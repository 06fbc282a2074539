"""Float I/O for a full-integer .tflite: a QUANTIZE in front of the int8 input and a DEQUANTIZE after the int8
output, so the app feeds and reads float32 while every op inside stays int8.

litert-torch's static PT2E conversion folds the model's first quantize and last dequantize into int8 I/O and has
no switch to keep float I/O; this rewrites the flatbuffer the way TensorFlow's converter builds it.
"""

from __future__ import annotations

import copy

from ..errors import EdgevitError

_TFLITE_FILE_ID = b"TFL3"


def float_io(data: bytes) -> bytes:
    """``data`` with every int8 subgraph input and output of the main subgraph turned into float32."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
    graph = model.subgraphs[0]
    int8 = schema.TensorType.INT8
    float32 = schema.TensorType.FLOAT32
    quantize = _opcode_index(model, schema, schema.BuiltinOperator.QUANTIZE)
    dequantize = _opcode_index(model, schema, schema.BuiltinOperator.DEQUANTIZE)
    renamed: dict[int, int] = {}  # int8 tensor index -> new float32 tensor index

    def float_twin(index: int, suffix: str) -> int:
        twin = copy.copy(graph.tensors[index])
        twin.type, twin.quantization, twin.buffer = float32, None, 0  # buffer 0 is the empty one by convention
        twin.name = (graph.tensors[index].name or b"") + suffix.encode()
        graph.tensors.append(twin)
        renamed[index] = len(graph.tensors) - 1
        return renamed[index]

    head, tail = [], []
    for position, index in enumerate(graph.inputs):
        if graph.tensors[index].type == int8:
            graph.inputs[position] = float_twin(index, "_float")
            head.append(_operator(schema, quantize, graph.inputs[position], index))
    for position, index in enumerate(graph.outputs):
        if graph.tensors[index].type == int8:
            graph.outputs[position] = float_twin(index, "_float")
            tail.append(_operator(schema, dequantize, index, graph.outputs[position]))
    if not renamed:
        raise EdgevitError("the .tflite has no int8 input or output to turn into float")
    graph.operators = head + graph.operators + tail
    for signature in model.signatureDefs or []:
        for tensor_map in (signature.inputs or []) + (signature.outputs or []):
            tensor_map.tensorIndex = renamed.get(tensor_map.tensorIndex, tensor_map.tensorIndex)
    builder = flatbuffers.Builder(len(data) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=_TFLITE_FILE_ID)
    return bytes(builder.Output())


def _opcode_index(model, schema, builtin: int) -> int:
    for i, code in enumerate(model.operatorCodes):
        if max(code.builtinCode, code.deprecatedBuiltinCode) == builtin:
            return i
    code = schema.OperatorCodeT()
    code.builtinCode, code.deprecatedBuiltinCode, code.version = builtin, min(builtin, 127), 1
    model.operatorCodes.append(code)
    return len(model.operatorCodes) - 1


def _operator(schema, opcode: int, source: int, target: int):
    op = schema.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = opcode, [source], [target]
    return op

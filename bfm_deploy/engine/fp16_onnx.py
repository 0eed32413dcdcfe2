"""FP32 -> FP16 ONNX graphs, for TensorRT >= 11, which builds strongly typed networks only.

TensorRT 10 lowers an FP32 graph to FP16 with ``BuilderFlag.FP16``; TensorRT 11 removed that flag and runs
each tensor in the type the graph gives it. So for TensorRT 11 the graph itself must be FP16: weights and
constants become float16, and Cast nodes at the boundary keep the engine's input and output float32, so the
bundle's tensor contract (and the trt backend's buffers) do not change.

Only graphs of the plain operators our exporters emit (and the detector's) are converted; operators that hold
subgraphs are refused rather than converted wrongly. Resize (the detector's feature pyramid) is converted with
its ``roi`` and ``scales`` inputs left float32, as ONNX requires of ``scales``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..errors import BfmError

# Operators we know to be type-generic over float16 in TensorRT's ONNX parser with all-float16 inputs.
SUPPORTED_OPS = frozenset(
    {
        "Add", "AveragePool", "BatchNormalization", "Cast", "Clip", "Concat", "Constant", "Conv", "Div",
        "Dropout", "Flatten", "Gemm", "GlobalAveragePool", "Identity", "LeakyRelu", "MatMul", "MaxPool", "Mul",
        "PRelu", "ReduceMean", "Relu", "Reshape", "Shape", "Sigmoid", "Slice", "Softmax", "Sqrt", "Squeeze",
        "Sub", "Tanh", "Transpose", "Unsqueeze", "Gather", "ReduceL2", "Pow", "Resize",
    }
)
FP16_MAX = float(np.finfo(np.float16).max)


def convert_to_fp16(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> Path:
    """Write an FP16 copy of the ONNX graph ``source`` to ``target`` (float32 graph inputs and outputs kept)."""
    model = onnx.load(str(source))
    graph = model.graph
    unsupported = sorted({node.op_type for node in graph.node} - SUPPORTED_OPS)
    if unsupported:
        raise BfmError(f"{source}: cannot convert operators {', '.join(unsupported)} to FP16 for TensorRT >= 11")

    # Resize's roi and scales stay float32 (scales must be float32 whatever the data type).
    keep_float = {name for node in graph.node if node.op_type == "Resize" for name in node.input[1:3] if name}
    for index, init in enumerate(graph.initializer):
        if init.data_type == TensorProto.FLOAT and init.name not in keep_float:
            graph.initializer[index].CopyFrom(_half(numpy_helper.to_array(init), init.name, source))
    for node in graph.node:
        if node.op_type == "Constant" and set(node.output) & keep_float:
            continue
        for attr in node.attribute:
            if node.op_type == "Cast" and attr.name == "to" and attr.i == TensorProto.FLOAT:
                attr.i = TensorProto.FLOAT16
            elif attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == TensorProto.FLOAT:
                attr.t.CopyFrom(_half(numpy_helper.to_array(attr.t), attr.t.name, source))
            elif attr.type == onnx.AttributeProto.GRAPH or attr.type == onnx.AttributeProto.GRAPHS:
                raise BfmError(f"{source}: node {node.name or node.op_type} holds a subgraph; not converted to FP16")
            elif node.op_type == "Constant" and attr.name in ("value_float", "value_floats"):
                raise BfmError(f"{source}: Constant {node.name!r} uses {attr.name}; not converted to FP16")

    # The graph's float32 inputs and outputs stay float32: a Cast sits between each and the FP16 body.
    head = _boundary_casts(graph, "input")
    tail = _boundary_casts(graph, "output")
    nodes = [*head, *graph.node, *tail]
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.value_info[:]  # intermediate types changed; TensorRT infers them again
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        detail = " ".join(str(exc).split())[:300]
        raise BfmError(f"{source}: FP16 conversion produced an invalid graph: {detail}") from None
    target = Path(target)
    onnx.save(model, str(target))
    return target


def _boundary_casts(graph: onnx.GraphProto, side: str) -> list[onnx.NodeProto]:
    """Rename each float32 graph ``side`` ("input" or "output") inside the body to ``<name>__fp16`` and return
    the Cast nodes that connect it to the unchanged float32 tensor."""
    casts: list[onnx.NodeProto] = []
    for value in getattr(graph, side):
        if value.type.tensor_type.elem_type != TensorProto.FLOAT:
            continue
        half_name = f"{value.name}__fp16"
        for node in graph.node:
            ports = getattr(node, side)
            ports[:] = [half_name if name == value.name else name for name in ports]
        if side == "input":
            casts.append(helper.make_node("Cast", [value.name], [half_name], to=TensorProto.FLOAT16,
                                          name=f"{value.name}_to_fp16"))
        else:
            casts.append(helper.make_node("Cast", [half_name], [value.name], to=TensorProto.FLOAT,
                                          name=f"{value.name}_to_fp32"))
    return casts


def _half(array: np.ndarray, name: str, source: str | os.PathLike[str]) -> onnx.TensorProto:
    if array.size and float(np.max(np.abs(array))) > FP16_MAX:
        raise BfmError(f"{source}: tensor {name!r} has values beyond the float16 range; not converted to FP16")
    return numpy_helper.from_array(array.astype(np.float16), name)

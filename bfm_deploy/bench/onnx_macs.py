"""Count multiply-accumulates over an ONNX graph, independently of PyTorch's FLOP counter.

Counted ops (the ones that carry essentially all the arithmetic of a CNN; the same set PyTorch's
``FlopCounterMode`` counts for these models):

- ``Conv``: N * Cout * Hout * Wout * (Cin / groups) * kH * kW, i.e. the output size times the weight's
  per-output fan-in ``prod(W.shape[1:])`` (any number of spatial dims);
- ``ConvTranspose``: the input size times ``prod(W.shape[1:])`` (each input value meets Cout/groups * k kernels);
- ``Gemm``: M * N * K; ``MatMul``: output size times K (batched matmuls included).

Bias additions, BatchNormalization, activations (ReLU, PReLU), Add and pooling are not counted; they are
listed under ``uncounted`` so the reader sees what was left out. ``onnx`` is imported lazily: the runtime
side of bfm does not depend on it.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import BfmError
from ..optional import install_hint

if TYPE_CHECKING:
    import onnx

COUNTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


@dataclass(frozen=True)
class OnnxMacCount:
    """MACs of one ONNX graph for one batch size."""

    batch: int
    macs: int
    macs_by_op: dict[str, int] = field(default_factory=dict)
    counted_nodes: dict[str, int] = field(default_factory=dict)
    uncounted: dict[str, int] = field(default_factory=dict)
    params: int = 0  # elements of all float initializers (the weights as exported, BN possibly folded)


def _onnx() -> Any:
    try:
        import onnx
    except ImportError:
        raise BfmError(f"counting MACs over ONNX needs the onnx package: {install_hint('train')}") from None
    return onnx


def _fix_batch(model: onnx.ModelProto, batch: int) -> None:
    """Give every graph input a concrete leading dimension so shape inference yields concrete sizes."""
    initializers = {init.name for init in model.graph.initializer}
    for value in model.graph.input:
        if value.name in initializers:
            continue
        dims = value.type.tensor_type.shape.dim
        if dims:
            dims[0].ClearField("dim_param")
            dims[0].dim_value = batch


def _shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    """Concrete shapes of every tensor we can resolve: initializers, inputs, inferred values, outputs."""
    shapes: dict[str, tuple[int, ...]] = {init.name: tuple(init.dims) for init in model.graph.initializer}
    for value in [*model.graph.input, *model.graph.value_info, *model.graph.output]:
        tensor = value.type.tensor_type
        if not tensor.HasField("shape"):
            continue
        dims = tensor.shape.dim
        if all(d.HasField("dim_value") for d in dims):
            shapes[value.name] = tuple(d.dim_value for d in dims)
    for node in model.graph.node:  # Constant nodes carry weights in some exports
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    shapes[node.output[0]] = tuple(attr.t.dims)
    return shapes


def _attr(node: Any, name: str, default: int) -> int:
    for attr in node.attribute:
        if attr.name == name:
            return int(attr.i)
    return default


def _need(shapes: dict[str, tuple[int, ...]], node: Any, name: str) -> tuple[int, ...]:
    if name not in shapes:
        raise BfmError(f"ONNX shape inference left {node.op_type} node '{node.name}' tensor '{name}' without a shape")
    return shapes[name]


def _node_macs(node: Any, shapes: dict[str, tuple[int, ...]]) -> int:
    op = node.op_type
    if op == "Conv":
        out = _need(shapes, node, node.output[0])
        weight = _need(shapes, node, node.input[1])
        return math.prod(out) * math.prod(weight[1:])
    if op == "ConvTranspose":
        inp = _need(shapes, node, node.input[0])
        weight = _need(shapes, node, node.input[1])
        return math.prod(inp) * math.prod(weight[1:])
    if op == "Gemm":
        a = _need(shapes, node, node.input[0])
        out = _need(shapes, node, node.output[0])
        k = a[0] if _attr(node, "transA", 0) else a[1]
        return math.prod(out) * k
    if op == "MatMul":
        a = _need(shapes, node, node.input[0])
        out = _need(shapes, node, node.output[0])
        return math.prod(out) * a[-1]
    raise AssertionError(op)


def count_onnx_macs(model: str | Path | onnx.ModelProto, batch: int = 1) -> OnnxMacCount:
    """MACs of ``model`` at ``batch`` images; raises BfmError if a counted op's shapes cannot be inferred."""
    onnx = _onnx()
    if batch < 1:
        raise BfmError(f"batch must be >= 1, got {batch}")
    if isinstance(model, (str, Path)):
        path = Path(model)
        if not path.is_file():
            raise BfmError(f"ONNX file not found: {path}")
        try:
            proto = onnx.load(str(path))
        except Exception as exc:  # onnx raises DecodeError and friends on a corrupt file
            raise BfmError(f"cannot read ONNX file {path}: {type(exc).__name__}") from None
    else:
        proto = onnx.ModelProto()
        proto.CopyFrom(model)  # we rewrite the input shape: never touch the caller's model
    _fix_batch(proto, batch)
    # data_prop follows Shape -> Gather -> Concat chains, which exporters emit for a dynamic-batch Reshape
    inferred = onnx.shape_inference.infer_shapes(proto, strict_mode=False, data_prop=True)
    shapes = _shapes(inferred)
    by_op: Counter[str] = Counter()
    counted: Counter[str] = Counter()
    uncounted: Counter[str] = Counter()
    for node in inferred.graph.node:
        if node.op_type in COUNTED_OPS:
            by_op[node.op_type] += _node_macs(node, shapes)
            counted[node.op_type] += 1
        elif node.op_type != "Constant":
            uncounted[node.op_type] += 1
    params = sum(
        math.prod(init.dims) for init in inferred.graph.initializer if init.data_type in (1, 10, 11, 16)
    )  # FLOAT, FLOAT16, DOUBLE, BFLOAT16: weights, not integer shape constants
    return OnnxMacCount(
        batch=batch,
        macs=sum(by_op.values()),
        macs_by_op=dict(by_op),
        counted_nodes=dict(counted),
        uncounted=dict(sorted(uncounted.items())),
        params=params,
    )

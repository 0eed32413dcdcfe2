"""The interface of an ONNX graph (opset, input and output names, types and shapes), read without onnx.

The runtime must not depend on the onnx package, and onnxruntime only tells a graph's interface once it has
built a session. ONNX files are protocol buffers, and the few fields needed here can be read with a small
wire-format walker that skips everything else (weights included) by its length.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import BfmError

FLOAT = 1  # TensorProto.DataType.FLOAT
_VARINT, _FIXED64, _BYTES, _FIXED32 = 0, 1, 2, 5


@dataclass(frozen=True)
class TensorInfo:
    name: str
    elem_type: int  # TensorProto.DataType (1 = float32)
    dims: tuple[int | str, ...]  # a fixed size, or the name of a symbolic one ("batch")


@dataclass(frozen=True)
class GraphInfo:
    opset: int  # of the default domain
    inputs: tuple[TensorInfo, ...]  # without initializers (old IR versions list weights as inputs too)
    outputs: tuple[TensorInfo, ...]

    def input(self, name: str) -> TensorInfo | None:
        return next((t for t in self.inputs if t.name == name), None)

    def output(self, name: str) -> TensorInfo | None:
        return next((t for t in self.outputs if t.name == name), None)


class _Reader:
    def __init__(self, data: bytes | memoryview) -> None:
        self.data = memoryview(data)
        self.pos = 0

    def varint(self) -> int:
        value, shift = 0, 0
        while True:
            if self.pos >= len(self.data) or shift > 63:
                raise ValueError("truncated varint")
            byte = self.data[self.pos]
            self.pos += 1
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
            shift += 7

    def fields(self):  # -> Iterator[tuple[int, int, int | memoryview]]
        while self.pos < len(self.data):
            key = self.varint()
            number, wire = key >> 3, key & 7
            if wire == _VARINT:
                yield number, wire, self.varint()
            elif wire == _BYTES:
                length = self.varint()
                if self.pos + length > len(self.data):
                    raise ValueError("truncated field")
                yield number, wire, self.data[self.pos : self.pos + length]
                self.pos += length
            elif wire in (_FIXED64, _FIXED32):
                size = 8 if wire == _FIXED64 else 4
                yield number, wire, self.data[self.pos : self.pos + size]
                self.pos += size
            else:
                raise ValueError(f"unsupported wire type {wire}")


def _messages(data: memoryview, number: int) -> list[memoryview]:
    return [value for n, wire, value in _Reader(data).fields() if n == number and wire == _BYTES]  # type: ignore[misc]


def _text(data: memoryview, number: int) -> str:
    found = _messages(data, number)
    return bytes(found[-1]).decode("utf-8", "replace") if found else ""


def _tensor_info(value_info: memoryview) -> TensorInfo:
    elem_type, dims = 0, []
    for tensor in (t for tp in _messages(value_info, 2) for t in _messages(tp, 1)):  # TypeProto.tensor_type
        for n, wire, value in _Reader(tensor).fields():
            if n == 1 and wire == _VARINT:
                elem_type = int(value)  # type: ignore[arg-type]
        for shape in _messages(tensor, 2):
            for dim in _messages(shape, 1):
                size: int | str = "?"
                for n, wire, value in _Reader(dim).fields():
                    if n == 1 and wire == _VARINT:
                        size = int(value)  # type: ignore[arg-type]
                    elif n == 2 and wire == _BYTES:
                        size = bytes(value).decode("utf-8", "replace")  # type: ignore[arg-type]
                dims.append(size)
    return TensorInfo(_text(value_info, 1), elem_type, tuple(dims))


def read_graph_info(path: str | Path, data: bytes | None = None) -> GraphInfo:
    """Opset and interface of the ONNX file at ``path`` (or of its ``data``, already read); BfmError when it
    is not a readable ONNX model."""
    path = Path(path)
    try:
        model = memoryview(path.read_bytes() if data is None else data)
        opset, graph = 0, None
        for number, wire, value in _Reader(model).fields():
            if number == 8 and wire == _BYTES:  # opset_import
                domain = _text(value, 1)  # type: ignore[arg-type]
                if domain in ("", "ai.onnx"):
                    for n, w, v in _Reader(value).fields():  # type: ignore[arg-type]
                        if n == 2 and w == _VARINT:
                            opset = int(v)  # type: ignore[arg-type]
            elif number == 7 and wire == _BYTES:
                graph = value
        if graph is None:
            raise ValueError("no graph")
        initializers = {_text(t, 8) for t in _messages(graph, 5)}  # type: ignore[arg-type]
        inputs = tuple(t for t in map(_tensor_info, _messages(graph, 11)) if t.name not in initializers)  # type: ignore[arg-type]
        outputs = tuple(map(_tensor_info, _messages(graph, 12)))  # type: ignore[arg-type]
    except (ValueError, IndexError) as exc:
        raise BfmError(f"{path} is not a readable ONNX model ({exc})") from None
    except OSError as exc:
        raise BfmError(f"cannot read {path}: {exc.strerror or exc}") from None
    return GraphInfo(opset, inputs, outputs)


# ---- the whole graph (nodes and weights), for rebuilding torch modules without onnx -------------------------

_NUMPY_TYPES = {1: np.float32, 6: np.int32, 7: np.int64, 10: np.float16, 11: np.float64}


@dataclass(frozen=True)
class Node:
    op_type: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: dict[str, Any]  # ints, floats, strings, lists of them, and tensors as numpy arrays


@dataclass(frozen=True)
class Graph:
    nodes: tuple[Node, ...]
    initializers: dict[str, np.ndarray]


def read_graph(path: str | Path) -> Graph:
    """Every node and initialiser of the ONNX file at ``path`` (external data is not supported)."""
    path = Path(path)
    try:
        model = memoryview(path.read_bytes())
        graph = next(value for number, wire, value in _Reader(model).fields() if number == 7 and wire == _BYTES)
        nodes = tuple(_node(n) for n in _messages(graph, 1))  # type: ignore[arg-type]
        initializers = dict(_tensor(t) for t in _messages(graph, 5))  # type: ignore[arg-type]
    except (ValueError, IndexError, StopIteration, KeyError) as exc:
        raise BfmError(f"{path} is not a readable ONNX model ({type(exc).__name__}: {exc})") from None
    except OSError as exc:
        raise BfmError(f"cannot read {path}: {exc.strerror or exc}") from None
    return Graph(nodes, initializers)


def _node(data: memoryview) -> Node:
    inputs, outputs, op_type, attrs = [], [], "", {}
    for number, wire, value in _Reader(data).fields():
        if wire != _BYTES:
            continue
        if number == 1:
            inputs.append(bytes(value).decode())  # type: ignore[arg-type]
        elif number == 2:
            outputs.append(bytes(value).decode())  # type: ignore[arg-type]
        elif number == 4:
            op_type = bytes(value).decode()  # type: ignore[arg-type]
        elif number == 5:
            name, attr = _attribute(value)  # type: ignore[arg-type]
            attrs[name] = attr
    return Node(op_type, tuple(inputs), tuple(outputs), attrs)


def _attribute(data: memoryview) -> tuple[str, Any]:
    name, kind = "", 0
    scalar: dict[int, Any] = {}
    ints: list[int] = []
    floats: list[float] = []
    for number, wire, value in _Reader(data).fields():
        if number == 1 and wire == _BYTES:
            name = bytes(value).decode()  # type: ignore[arg-type]
        elif number == 20 and wire == _VARINT:
            kind = int(value)  # type: ignore[arg-type]
        elif number == 2 and wire == _FIXED32:
            scalar[1] = float(np.frombuffer(bytes(value), "<f4")[0])  # type: ignore[arg-type]  # FLOAT
        elif number == 3 and wire == _VARINT:
            scalar[2] = _signed(int(value))  # type: ignore[arg-type]  # INT
        elif number == 4 and wire == _BYTES:
            scalar[3] = bytes(value).decode("utf-8", "replace")  # type: ignore[arg-type]  # STRING
        elif number == 5 and wire == _BYTES:
            scalar[4] = _tensor(value)[1]  # type: ignore[arg-type]  # TENSOR
        elif number == 8:
            ints += _varints(value) if wire == _BYTES else [int(value)]  # type: ignore[arg-type]
        elif number == 7 and wire == _BYTES:
            floats += np.frombuffer(bytes(value), "<f4").tolist()  # type: ignore[arg-type]
    if kind == 7:
        return name, [_signed(i) for i in ints]
    if kind == 6:
        return name, floats
    return name, scalar.get(kind)


def _varints(data: memoryview) -> list[int]:
    reader, out = _Reader(data), []
    while reader.pos < len(reader.data):
        out.append(reader.varint())
    return out


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _tensor(data: memoryview) -> tuple[str, np.ndarray]:
    dims: list[int] = []
    data_type, name, raw = 0, "", None
    floats: list[float] = []
    int64s: list[int] = []
    for number, wire, value in _Reader(data).fields():
        if number == 1:
            dims += _varints(value) if wire == _BYTES else [int(value)]  # type: ignore[arg-type]
        elif number == 2 and wire == _VARINT:
            data_type = int(value)  # type: ignore[arg-type]
        elif number == 8 and wire == _BYTES:
            name = bytes(value).decode()  # type: ignore[arg-type]
        elif number == 9 and wire == _BYTES:
            raw = bytes(value)  # type: ignore[arg-type]
        elif number == 4 and wire == _BYTES:
            floats += np.frombuffer(bytes(value), "<f4").tolist()  # type: ignore[arg-type]
        elif number == 7 and wire == _BYTES:
            int64s += [_signed(v) for v in _varints(value)]  # type: ignore[arg-type]
    dtype = _NUMPY_TYPES.get(data_type)
    if dtype is None:
        raise ValueError(f"tensor {name!r} has unsupported data type {data_type}")
    if raw is not None:
        array = np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<")).astype(dtype)
    else:
        array = np.asarray(floats if dtype in (np.float32, np.float64, np.float16) else int64s, dtype=dtype)
    return name, array.reshape(dims) if dims else array.reshape(())


# ---- initialiser bytes in place, for graphs whose weights are set by hand (the test bundles) ------------------


@dataclass(frozen=True)
class RawInitializer:
    name: str
    dtype: np.dtype
    shape: tuple[int, ...]
    offset: int  # of its raw_data bytes in the file
    size: int  # bytes


def raw_initializers(data: bytes) -> dict[str, RawInitializer]:
    """Where each initialiser stored as raw_data lies in the serialised model ``data``: the model can then be
    changed by overwriting those bytes, which keeps every length prefix (and so the protobuf) valid."""
    found: dict[str, RawInitializer] = {}
    top = _Reader(data)
    for number, wire, graph in top.fields():
        if number != 7 or wire != _BYTES:
            continue
        graph_start = top.pos  # while a field is yielded, pos is the start of its value
        reader = _Reader(graph)  # type: ignore[arg-type]
        for n, w, tensor in reader.fields():
            if n != 5 or w != _BYTES:
                continue
            tensor_start = graph_start + reader.pos
            inner = _Reader(tensor)  # type: ignore[arg-type]
            dims: list[int] = []
            data_type, name, raw = 0, "", None
            for tn, tw, value in inner.fields():
                if tn == 1:
                    dims += _varints(value) if tw == _BYTES else [int(value)]  # type: ignore[arg-type]
                elif tn == 2 and tw == _VARINT:
                    data_type = int(value)  # type: ignore[arg-type]
                elif tn == 8 and tw == _BYTES:
                    name = bytes(value).decode()  # type: ignore[arg-type]
                elif tn == 9 and tw == _BYTES:
                    raw = (tensor_start + inner.pos, len(value))  # type: ignore[arg-type]
            dtype = _NUMPY_TYPES.get(data_type)
            if raw is not None and dtype is not None:
                found[name] = RawInitializer(name, np.dtype(dtype).newbyteorder("<"), tuple(dims), raw[0], raw[1])
    return found


def replace_initializers(data: bytes, values: dict[str, np.ndarray]) -> bytes:
    """``data`` (a serialised ONNX model) with the named raw_data initialisers set to ``values``, each of the
    initialiser's own shape; BfmError naming the first that is missing or of another shape."""
    located = raw_initializers(data)
    out = bytearray(data)
    for name, value in values.items():
        where = located.get(name)
        if where is None:
            raise BfmError(f"the graph has no raw_data initialiser {name!r}")
        if tuple(value.shape) != where.shape:
            raise BfmError(f"initialiser {name!r} has shape {where.shape}, not {tuple(value.shape)}")
        raw = np.ascontiguousarray(value, dtype=where.dtype).tobytes()
        if len(raw) != where.size:
            raise BfmError(f"initialiser {name!r} holds {where.size} bytes, not {len(raw)}")
        out[where.offset : where.offset + where.size] = raw
    return bytes(out)

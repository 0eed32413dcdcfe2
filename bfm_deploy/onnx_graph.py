"""The interface of an ONNX graph (opset, input and output names, types and shapes), read without onnx.

The runtime must not depend on the onnx package, and onnxruntime only tells a graph's interface once it has
built a session. ONNX files are protocol buffers, and the few fields needed here can be read with a small
wire-format walker that skips everything else (weights included) by its length.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

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
                self.pos += 8 if wire == _FIXED64 else 4
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


def read_graph_info(path: str | Path) -> GraphInfo:
    """Opset and interface of the ONNX file at ``path``; BfmError when it is not a readable ONNX model."""
    path = Path(path)
    try:
        model = memoryview(path.read_bytes())
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

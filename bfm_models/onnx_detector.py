"""A detector graph (SCRFD ``*_bnkps``) rebuilt as a torch module from its ONNX nodes and initialisers.

SCRFD exports are plain convolution graphs (BatchNorm already folded into the convolutions) with a feature
pyramid (nearest-neighbour upsampling and additions) and per-stride heads that are transposed and reshaped
into the nine outputs the decoder reads. Rather than a hand-written SCRFD class that would fit one variant,
the module replays the graph's nodes over a small operator set, with one ``nn.Conv2d`` per Conv node holding
the graph's weights. Shape arithmetic (Shape, Gather, Concat, ...) runs on host integers, so the forward pass
launches only convolutions and element-wise kernels: it can be captured in a CUDA graph like the extractors.
An operator outside the set is refused in one line when the module is built, never at inference.

Read with ``bfm_deploy.onnx_graph.read_graph`` (no onnx package); ``check_against_graph`` compares the module
with ONNX Runtime on a probe batch, as the torch backend does for every network it rebuilds.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from bfm_deploy.errors import BfmError
from bfm_deploy.onnx_graph import Graph, Node, read_graph

# Operators whose results are tensors on the device, and those evaluated on host integers (shape arithmetic).
TENSOR_OPS = frozenset({"Conv", "Relu", "Sigmoid", "Add", "Transpose", "Reshape", "Resize"})
HOST_OPS = frozenset({"Shape", "Gather", "Unsqueeze", "Concat", "Slice", "Cast", "Constant"})


class OnnxDetector(nn.Module):
    """The graph's ``outputs`` (in that order) from its one float input, for any batch and input size."""

    def __init__(self, graph: Graph, input_name: str, outputs: Sequence[str], source: str) -> None:
        super().__init__()
        self.input_name = input_name
        self.output_names = tuple(outputs)
        self.convs = nn.ModuleList()
        self._conv_index: dict[str, int] = {}  # Conv node output -> its module
        self._constants: dict[str, np.ndarray] = {}  # non-weight initialisers (Reshape shapes), host values
        unsupported = sorted({n.op_type for n in graph.nodes} - TENSOR_OPS - HOST_OPS)
        if unsupported:
            raise BfmError(f"cannot rebuild the detector {source} in torch: operators {', '.join(unsupported)} "
                           "are not supported (SCRFD *_bnkps graphs need none of them)")
        weights: set[str] = set()
        for node in graph.nodes:
            if node.op_type == "Conv":
                self._conv_index[node.outputs[0]] = len(self.convs)
                self.convs.append(_conv(node, graph.initializers, source))
                weights.update(node.inputs[1:])
            elif node.op_type == "Resize":
                _check_resize(node, source)
        self._constants = {k: v for k, v in graph.initializers.items() if k not in weights}
        self._nodes = graph.nodes
        produced = {o for n in graph.nodes for o in n.outputs}
        missing = [name for name in self.output_names if name not in produced]
        if missing:
            raise BfmError(f"detector {source} has no output {missing[0]!r}")

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        values: dict[str, Any] = dict(self._constants)
        values[self.input_name] = x
        for node in self._nodes:
            names = node.inputs[:1] if node.op_type == "Conv" else node.inputs  # a Conv's weights live in its module
            values[node.outputs[0]] = self._run(node, [values[i] if i else None for i in names])
        return [values[name] for name in self.output_names]

    def _run(self, node: Node, args: list[Any]) -> Any:
        op, attrs = node.op_type, node.attrs
        if op == "Conv":
            return self.convs[self._conv_index[node.outputs[0]]](args[0])
        if op == "Relu":
            return torch.relu(args[0])
        if op == "Sigmoid":
            return torch.sigmoid(args[0])
        if op == "Add":
            return args[0] + args[1]
        if op == "Transpose":
            return args[0].permute(*attrs["perm"])
        if op == "Reshape":
            return args[0].reshape(_reshape_target(tuple(args[0].shape), args[1]))
        if op == "Resize":
            sizes = args[3] if len(args) > 3 and args[3] is not None and np.size(args[3]) else None
            if sizes is not None:
                return F.interpolate(args[0], size=tuple(int(s) for s in np.asarray(sizes)[2:]), mode="nearest")
            scales = np.asarray(args[2], dtype=np.float64)
            return F.interpolate(args[0], scale_factor=tuple(float(s) for s in scales[2:]), mode="nearest")
        return _host(node, args)


def _conv(node: Node, inits: dict[str, np.ndarray], source: str) -> nn.Conv2d:
    attrs = node.attrs
    weight = inits.get(node.inputs[1])
    if weight is None or weight.ndim != 4:
        raise BfmError(f"detector {source}: Conv {node.outputs[0]} has no constant 4-D weight")
    pads = list(attrs.get("pads", [0, 0, 0, 0]))
    if pads[:2] != pads[2:] or attrs.get("auto_pad", "NOTSET") not in ("NOTSET", b"NOTSET"):
        raise BfmError(f"detector {source}: Conv {node.outputs[0]} has asymmetric or automatic padding")
    groups = int(attrs.get("group", 1))
    bias = inits.get(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] else None
    conv = nn.Conv2d(weight.shape[1] * groups, weight.shape[0], tuple(weight.shape[2:]),
                     stride=tuple(attrs.get("strides", [1, 1])), padding=tuple(pads[:2]),
                     dilation=tuple(attrs.get("dilations", [1, 1])), groups=groups, bias=bias is not None)
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(np.ascontiguousarray(weight, dtype=np.float32)))
        if bias is not None and conv.bias is not None:
            conv.bias.copy_(torch.from_numpy(np.ascontiguousarray(bias, dtype=np.float32)))
    return conv


def _check_resize(node: Node, source: str) -> None:
    # torch's "nearest" picks floor(dst * in / out): ONNX's nearest with asymmetric coordinates and floor.
    mode = node.attrs.get("mode", "nearest")
    transform = node.attrs.get("coordinate_transformation_mode", "half_pixel")
    rounding = node.attrs.get("nearest_mode", "round_prefer_floor")
    if (mode, transform, rounding) != ("nearest", "asymmetric", "floor"):
        raise BfmError(f"detector {source}: Resize {mode}/{transform}/{rounding} is not supported "
                       "(only nearest/asymmetric/floor)")


def _reshape_target(shape: tuple[int, ...], target: Any) -> tuple[int, ...]:
    """ONNX Reshape's shape: 0 copies the input's dimension at that place, -1 is inferred."""
    dims = [int(d) for d in np.asarray(target).reshape(-1)]
    return tuple(shape[i] if d == 0 else d for i, d in enumerate(dims))


def _host(node: Node, args: list[Any]) -> np.ndarray:
    """Shape arithmetic on host int64 arrays (what torch.onnx emits around Resize and Reshape)."""
    op, attrs = node.op_type, node.attrs
    if op == "Constant":
        return np.asarray(attrs["value"])
    if op == "Shape":
        return np.asarray(tuple(args[0].shape), dtype=np.int64)
    if op == "Gather":
        return np.take(np.asarray(args[0]), np.asarray(args[1]), axis=int(attrs.get("axis", 0)))
    if op == "Unsqueeze":
        return np.expand_dims(np.asarray(args[0]), tuple(attrs["axes"]))
    if op == "Concat":
        return np.concatenate([np.asarray(a).reshape(-1) if np.ndim(a) == 0 else np.asarray(a) for a in args],
                              axis=int(attrs.get("axis", 0)))
    if op == "Cast":
        return np.asarray(args[0]).astype(np.int64 if int(attrs["to"]) == 7 else np.float32)
    if op == "Slice":
        data, starts, ends = np.asarray(args[0]), np.asarray(args[1]), np.asarray(args[2])
        axes = np.asarray(args[3]) if len(args) > 3 and args[3] is not None else np.arange(len(starts))
        steps = np.asarray(args[4]) if len(args) > 4 and args[4] is not None else np.ones(len(starts), np.int64)
        index = [slice(None)] * data.ndim
        for start, end, axis, step in zip(starts, ends, axes, steps):
            index[int(axis)] = slice(int(start), int(min(end, np.iinfo(np.int64).max)), int(step))
        return data[tuple(index)]
    raise BfmError(f"detector operator {op} reached the host evaluator")  # guarded at build time


def load_onnx_detector(path: Path, input_name: str, outputs: Sequence[str]) -> OnnxDetector:
    """The detector graph at ``path`` as an eval-mode FP32 CPU module (not yet checked against the graph)."""
    graph = read_graph(path)
    return OnnxDetector(graph, input_name, outputs, path.name).eval()


# Each output of the rebuilt detector within this of ONNX Runtime's, relative to the output's largest value:
# FP32 convolutions in another order differ by ~1e-6; a wrong weight or operator by orders of magnitude more.
DETECTOR_MAX_RELATIVE_DIFF = 1e-4


def check_against_graph(module: OnnxDetector, path: Path, size: int) -> float:
    """The largest relative difference of any output between ``module`` and ONNX Runtime on a probe batch;
    BfmError above ``DETECTOR_MAX_RELATIVE_DIFF``."""
    import onnxruntime as ort

    probe = np.random.default_rng(0).uniform(-1, 1, (2, 3, size, size)).astype(np.float32)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    expected = session.run(list(module.output_names), {module.input_name: probe})
    with torch.inference_mode():
        got = [t.numpy() for t in module(torch.from_numpy(probe))]
    worst = 0.0
    for name, want, have in zip(module.output_names, expected, got):
        if want.shape != have.shape:
            raise BfmError(f"the detector rebuilt from {path.name} gives {name} of shape {have.shape}, "
                           f"the graph {want.shape}")
        worst = max(worst, float(np.abs(want - have).max() / max(1.0, float(np.abs(want).max()))))
    if not worst <= DETECTOR_MAX_RELATIVE_DIFF:
        raise BfmError(f"the detector rebuilt from {path.name} disagrees with the graph (relative difference "
                       f"{worst:.2e} > {DETECTOR_MAX_RELATIVE_DIFF:.0e})")
    return worst

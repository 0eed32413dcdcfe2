"""One way to turn a network into ONNX: ``bfm-export`` writes bundles with it and ``bfm-bench --flops`` counts
the graph it makes, so the count is that of the graph the runtime runs."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bfm_deploy.alignment import CROP_SIZE
from bfm_deploy.contract import INPUT_NAME



# Only weight matrices this large are stored as float16: below it the bytes saved are not worth a Cast node.
FLOAT16_MIN_VALUES = 65536
FLOAT16_MAX = 65504.0  # the largest finite float16
FLOAT32_SUFFIX = ":float32"  # the Cast's output, read where the float32 initialiser was


def stored_as_float16(values: np.ndarray) -> bool:
    """Does this float32 weight go to float16: large enough to be worth it, and within float16's range? One rule
    for the torch module (``round_to_float16``) and its graph (``store_float16_weights``), so both agree."""
    return values.size >= FLOAT16_MIN_VALUES and float(np.abs(values).max()) <= FLOAT16_MAX


def export_onnx(module: nn.Module, path: Path, output_name: str, opset: int, float16_weights: bool = False) -> None:
    """Single-file ONNX with a dynamic batch axis named ``batch``, checked by the onnx package. With
    ``float16_weights``, the module's large weights are first rounded to float16 in place (``round_to_float16``)
    and the graph stores them so (``store_float16_weights``): module and graph then hold the same weights.

    The TorchScript exporter (dynamo=False) handles these plain CNNs reliably and deterministically;
    its deprecation warnings are not actionable for users of bfm-export.
    """
    import onnx

    module = module.eval()
    if float16_weights:
        round_to_float16(module)
    dummy = torch.zeros(2, 3, CROP_SIZE, CROP_SIZE)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, (dummy,), str(path), dynamo=False, opset_version=opset, do_constant_folding=True,
            input_names=[INPUT_NAME], output_names=[output_name],
            dynamic_axes={INPUT_NAME: {0: "batch"}, output_name: {0: "batch"}},
        )
    onnx.checker.check_model(str(path))
    if float16_weights:
        store_float16_weights(path)


def round_to_float16(module: nn.Module) -> None:
    """Round ``module``'s tensors that ``stored_as_float16`` picks to float16 values in place (kept float32)."""
    with torch.no_grad():
        for tensor in (*module.parameters(), *module.buffers()):
            if tensor.is_floating_point() and stored_as_float16(tensor.detach().cpu().numpy()):
                tensor.copy_(tensor.half().to(tensor.dtype))


def store_float16_weights(path: Path) -> None:
    """Rewrite the ONNX file ``path`` with each float32 initialiser that ``stored_as_float16`` picks stored as
    float16 under its own name, and a Cast back to float32 before its first use: the graph still
    computes in float32 (onnxruntime and OpenVINO fold the Cast when they load it) on weights rounded to
    float16, in half the bytes. The initialiser keeps its name so that tools addressing weights by name still
    find them; the node reads ``<name>:float32``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    casts = []
    for index, init in enumerate(graph.initializer):
        if init.data_type != TensorProto.FLOAT:
            continue
        values = numpy_helper.to_array(init)
        if not stored_as_float16(values):
            continue
        graph.initializer[index].CopyFrom(numpy_helper.from_array(values.astype(np.float16), init.name))
        wide = init.name + FLOAT32_SUFFIX
        for node in graph.node:
            node.input[:] = [wide if name == init.name else name for name in node.input]
        casts.append(helper.make_node("Cast", [init.name], [wide], to=TensorProto.FLOAT, name=f"{init.name}_cast"))
    nodes = [*casts, *graph.node]
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))

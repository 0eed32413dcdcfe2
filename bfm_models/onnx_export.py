"""One way to turn a network into ONNX: ``bfm-export`` writes bundles with it and ``bfm-bench --flops`` counts
the graph it makes, so the count is that of the graph the runtime runs."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from bfm_deploy.alignment import CROP_SIZE
from bfm_deploy.contract import INPUT_NAME



def export_onnx(module: nn.Module, path: Path, output_name: str, opset: int) -> None:
    """Single-file ONNX with a dynamic batch axis named ``batch``, checked by the onnx package.

    The TorchScript exporter (dynamo=False) handles these plain CNNs reliably and deterministically;
    its deprecation warnings are not actionable for users of bfm-export.
    """
    import onnx

    module = module.eval()
    dummy = torch.zeros(2, 3, CROP_SIZE, CROP_SIZE)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, (dummy,), str(path), dynamo=False, opset_version=opset, do_constant_folding=True,
            input_names=[INPUT_NAME], output_names=[output_name],
            dynamic_axes={INPUT_NAME: {0: "batch"}, output_name: {0: "batch"}},
        )
    onnx.checker.check_model(str(path))

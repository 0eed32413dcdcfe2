"""One network into a bundle folder: ONNX export, parity against the torch module, its manifest entry."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from bfm_deploy.contract import INPUT_NAME, OUTPUT_NAMES, OUTPUT_SIZES, Network, sha256_file
from bfm_deploy.errors import BfmError
from bfm_deploy.manifest import ModelEntry, Parity
from bfm_models import count_macs, count_params
from bfm_models.onnx_export import export_onnx

from .parity import check_parity


def export_network(network: Network, module: nn.Module, folder: Path, architecture: str, batch: np.ndarray,
                   opset: int, min_cosine: float, log: Any, note: str | None = None) -> ModelEntry:
    """Export ``module`` to ``folder/<network>.onnx``, check it against the torch model on ``batch`` and return
    its manifest entry; BfmError (nothing kept) when the graph disagrees or breaks the output contract."""
    path = folder / f"{network}.onnx"
    export_onnx(module, path, OUTPUT_NAMES[network], opset)
    parity = check_parity(module, path, batch)
    log(f"{network}: max abs diff {parity.max_abs_diff:.3g}, min cosine {parity.min_cosine:.7f}")
    if not parity.min_cosine >= min_cosine:  # also catches NaN
        raise BfmError(f"{network}.onnx disagrees with the torch model: cosine {parity.min_cosine:.6f} "
                       f"< {min_cosine}; the bundle was not written")
    if parity.output_size != OUTPUT_SIZES[network]:
        raise BfmError(f"{network} outputs {parity.output_size} values per face; "
                       f"the bundle contract needs {OUTPUT_SIZES[network]}")
    return ModelEntry(network, path, architecture, count_params(module), count_macs(module), sha256_file(path),
                      INPUT_NAME, OUTPUT_NAMES[network], Parity(parity.max_abs_diff, parity.min_cosine), note)

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

# Networks whose large weights a bundle stores as float16 (computed in float32). The Table I classifier's fc1
# (12544 x 512) makes it the largest file of a bundle, and a mask decision has margins far beyond that rounding
# (engines/README.md: what `tools/compare_classifiers.py` measured on the demo bundle). Embeddings are compared
# against thresholds to 1e-4 and stay float32.
FLOAT16_WEIGHTS: frozenset[Network] = frozenset({"classifier"})


def export_network(network: Network, module: nn.Module, folder: Path, architecture: str, batch: np.ndarray,
                   opset: int, min_cosine: float, log: Any, note: str | None = None) -> ModelEntry:
    """Export ``module`` to ``folder/<network>.onnx``, check it against the torch model on ``batch`` and return
    its manifest entry; BfmError (nothing kept) when the graph disagrees or breaks the output contract.
    A network of ``FLOAT16_WEIGHTS`` has its large weights rounded to float16 in place (``export_onnx``)."""
    path = folder / f"{network}.onnx"
    export_onnx(module, path, OUTPUT_NAMES[network], opset, float16_weights=network in FLOAT16_WEIGHTS)
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

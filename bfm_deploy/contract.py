"""The names and numbers every part of bfm agrees on, defined once (torch-free; ARCHITECTURE.md explains them).

Training, export, the bundle, the backends, the runtime and evaluation import these; none of them restates one.
The routing rule itself (which face counts as masked) is ``bfm_deploy.routing``; the tensor conversion is
``bfm_deploy.tensor.preprocess``.
"""

from __future__ import annotations

import hashlib
import os
from typing import Literal

Network = Literal["classifier", "full", "partial"]
NETWORKS: tuple[Network, ...] = ("classifier", "full", "partial")
ROUTES: tuple[str, ...] = ("full", "partial")  # E_F for pairs of unmasked faces, E_P for every pair with a mask

CROP_SIZE = 112  # aligned face crops, ArcFace template
INPUT_SHAPE = (3, CROP_SIZE, CROP_SIZE)  # C, H, W of one face at every network input
EMBEDDING_SIZE = 512  # extractor output
UNMASKED, MASKED = 0, 1  # the classifier's logit indices
FACE_MEAN = 127.5  # network input: RGB, (x - FACE_MEAN) / FACE_STD
FACE_STD = 127.5
INPUT_NAME = "input"  # every network's input tensor
OUTPUT_NAMES: dict[Network, str] = {"classifier": "logits", "full": "embedding", "partial": "embedding"}
OUTPUT_SIZES: dict[Network, int] = {"classifier": 2, "full": EMBEDDING_SIZE, "partial": EMBEDDING_SIZE}
MIN_OPSET = 17  # of the three networks; the detector keeps the opset it was published with


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """The hex sha256 of a file (manifests record one per graph, engine and checkpoint)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()

"""Aligned face crops into tensors that follow the tensor contract (ARCHITECTURE.md), by the runtime's own
decoder (``bfm_deploy.images``) and preprocessing (``bfm_deploy.tensor.preprocess``): what a network sees in
training is, bit for bit, what it sees in the runtime (tests/train/test_data.py checks it on real faces)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from bfm_deploy.alignment import CROP_SIZE
from bfm_deploy.errors import BfmError
from bfm_deploy.images import decode_image, load_image
from bfm_deploy.tensor import preprocess


def _checked(image: np.ndarray, source: str) -> np.ndarray:
    if image.shape[:2] != (CROP_SIZE, CROP_SIZE):
        # Resizing would silently break the alignment template, so insist on aligned crops.
        raise BfmError(f"{source}: expected a {CROP_SIZE}x{CROP_SIZE} aligned crop, got {image.shape[1]}x{image.shape[0]}")
    return image


def decode_face(data: bytes, source: str) -> np.ndarray:
    """Encoded image bytes (a record file's payload) -> BGR uint8 112x112x3, checked to be an aligned crop."""
    return _checked(decode_image(data, source), source)


def load_face(path: Path) -> np.ndarray:
    """An aligned crop file -> BGR uint8 112x112x3."""
    return _checked(load_image(path), str(path))


def to_tensor(bgr: np.ndarray, flip: bool = False) -> torch.Tensor:
    """BGR uint8 HxWx3 -> float32 3xHxW, the runtime's preprocessing, optionally mirrored left-right."""
    if flip:
        bgr = bgr[:, ::-1]
    return torch.from_numpy(preprocess([bgr])[0])

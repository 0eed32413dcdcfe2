"""Decoding aligned face crops into tensors that follow the tensor contract (ARCHITECTURE.md)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from bfm_deploy.errors import BfmError

FACE_SIZE = 112


def decode_face(data: bytes, source: str) -> np.ndarray:
    """Encoded image bytes -> RGB uint8 HxWx3, checked to be a 112x112 aligned crop."""
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise BfmError(f"{source}: cannot decode image")
    if image.shape[:2] != (FACE_SIZE, FACE_SIZE):
        # Resizing would silently break the alignment template, so insist on aligned crops.
        raise BfmError(
            f"{source}: expected a {FACE_SIZE}x{FACE_SIZE} aligned crop, got {image.shape[1]}x{image.shape[0]}"
        )
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def load_face(path: Path) -> np.ndarray:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise BfmError(f"{path}: cannot read ({exc.strerror})") from None
    return decode_face(data, str(path))


def to_tensor(rgb: np.ndarray, flip: bool = False) -> torch.Tensor:
    """RGB uint8 HxWx3 -> float32 3xHxW in [-1, 1] ((x - 127.5) / 127.5), optionally mirrored left-right."""
    if flip:
        rgb = rgb[:, ::-1]
    # numpy, not torch ops: DataLoader workers should not wake torch's intra-op thread pool per image
    chw = (rgb.transpose(2, 0, 1).astype(np.float32) - np.float32(127.5)) / np.float32(127.5)
    return torch.from_numpy(np.ascontiguousarray(chw))

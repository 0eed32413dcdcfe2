"""What the host detectors (MTCNN, YuNet) share: one image at a time on the CPU, the same input check."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from ..errors import BfmError

if TYPE_CHECKING:
    from .mtcnn import Face  # mtcnn.py defines Face and builds on this module


def check_bgr(bgr: np.ndarray) -> None:
    if bgr.dtype != np.uint8 or bgr.ndim != 3 or bgr.shape[2] != 3:
        raise BfmError(f"detector expects a BGR uint8 HxWx3 image, got {bgr.dtype} {bgr.shape}")


class HostDetector:
    """A detector whose graph has a different shape for every image (MTCNN's pyramid) or that runs outside
    the backends (YuNet in OpenCV): ``detect_batch`` is a loop over ``detect``."""

    name = "host"

    def detect(self, bgr: np.ndarray) -> list[Face]:
        raise NotImplementedError

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[list[Face]]:
        return [self.detect(bgr) for bgr in images]

"""``Face``: one detection with five landmarks, and ``Detector``: what every detector offers (SCRFD, YuNet, MTCNN)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True, eq=False)  # holds arrays: compare fields explicitly
class Face:
    """One detection in image pixel coordinates (0-based)."""

    box: np.ndarray  # [x1, y1, x2, y2], inclusive pixel indices
    score: float  # the detector's face probability
    landmarks: np.ndarray  # 5x2 (x, y): left eye, right eye, nose, left mouth corner, right mouth corner

    @property
    def width(self) -> float:
        return float(self.box[2] - self.box[0] + 1)

    @property
    def height(self) -> float:
        return float(self.box[3] - self.box[1] + 1)

    @property
    def centre(self) -> tuple[float, float]:
        return float(self.box[0] + self.box[2]) / 2, float(self.box[1] + self.box[3]) / 2


class Detector(Protocol):
    """What every detector offers: SCRFD on a backend (``NetworkDetector``), MTCNN and YuNet on the host."""

    name: str

    def detect(self, bgr: np.ndarray) -> list[Face]: ...

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[list[Face]]: ...

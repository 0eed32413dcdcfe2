"""YuNet (OpenCV Zoo, MIT) through ``cv2.FaceDetectorYN``: a small, permissively licensed host detector.

The shipped graph is block-quantised int8, which onnxruntime cannot run but OpenCV's DNN can, so YuNet runs
on the CPU one image at a time, outside the bundle's backends. Its five landmarks come in our order (the eye
and mouth corner on the image's left first).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..errors import BfmError
from .host import HostDetector, check_bgr
from .detection import Face

DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "assets" / "yunet" / "face_detection_yunet_2023mar_int8bq.onnx"
LICENCE = "YuNet (OpenCV Zoo): MIT"


@dataclass(frozen=True)
class YunetConfig:
    input_size: int = 320  # longer side of the image as the detector sees it, like SCRFD's letterbox
    score_threshold: float = 0.6
    nms_threshold: float = 0.3
    model_path: Path = DEFAULT_MODEL

    def __post_init__(self) -> None:
        if self.input_size < 32:
            raise BfmError(f"YuNet input_size must be at least 32, got {self.input_size}")
        if not 0.0 < self.score_threshold < 1.0:
            raise BfmError(f"YuNet score_threshold must be in (0, 1), got {self.score_threshold}")


class YunetDetector(HostDetector):
    name = "yunet"

    def __init__(self, config: YunetConfig | None = None) -> None:
        self.config = config or YunetConfig()
        if not hasattr(cv2, "FaceDetectorYN"):
            raise BfmError(f"detector 'yunet' needs OpenCV >= 4.10 (this is {cv2.__version__})")
        if not self.config.model_path.is_file():
            raise BfmError(f"YuNet model not found: {self.config.model_path}")
        size = self.config.input_size
        # OpenCV 5 warns on every load that its new graph engine ignores target settings: noise for users.
        if hasattr(cv2, "utils") and hasattr(cv2.utils, "logging"):
            cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
        try:
            self._net = cv2.FaceDetectorYN.create(str(self.config.model_path), "", (size, size),
                                                  self.config.score_threshold, self.config.nms_threshold)
        except cv2.error as exc:
            raise BfmError(f"OpenCV cannot load YuNet: {str(exc).strip().splitlines()[-1]}") from None

    def detect(self, bgr: np.ndarray) -> list[Face]:
        check_bgr(bgr)
        height, width = bgr.shape[:2]
        scale = self.config.input_size / max(height, width)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        interpolation = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR
        self._net.setInputSize(size)
        _, rows = self._net.detect(cv2.resize(bgr, size, interpolation=interpolation))
        if rows is None:
            return []
        faces = []
        for row in sorted(rows, key=lambda r: -float(r[14])):
            x, y, w, h = (float(v) / scale for v in row[:4])
            faces.append(Face(box=np.array([x, y, x + w - 1, y + h - 1], np.float32), score=float(row[14]),
                              landmarks=(row[4:14].reshape(5, 2) / scale).astype(np.float32)))
        return faces

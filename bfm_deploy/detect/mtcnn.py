"""MTCNN face detection with five landmarks on ONNX Runtime (Zhang et al. 2016, the detector the paper used).

The cascade: an image pyramid through the fully convolutional P-Net proposes boxes; R-Net (24x24 crops) and
O-Net (48x48 crops) reject false positives and refine the boxes, and O-Net adds the five landmarks.
The nets (``bfm_deploy/assets/mtcnn``, made by ``tools/convert_mtcnn.py``) take float32 NCHW **RGB**
``(x - 127.5) * 0.0078125`` in ordinary (H, W) order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from ..errors import BfmError
from .boxes import apply_regression, box_sizes, crop_patches, nms, to_square
from .detection import Face
from .host import HostDetector, check_bgr, onnx_session

if TYPE_CHECKING:
    import onnxruntime as ort

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "assets" / "mtcnn"
PNET_CELL = 12  # P-Net's receptive field in pixels of the scaled image
PNET_STRIDE = 2


@dataclass(frozen=True)
class MtcnnConfig:
    """Detector settings; the defaults are facenet-pytorch's (and the MTCNN paper's)."""

    min_face_size: float = 20.0  # pixels; smaller faces are not searched for
    scale_factor: float = 0.709  # pyramid step (about 1/sqrt(2) in area)
    thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7)  # face probability per stage
    pnet_nms_per_scale: float = 0.5
    pnet_nms: float = 0.7
    rnet_nms: float = 0.7
    onet_nms: float = 0.7  # intersection over the smaller box
    threads: int = 1  # ONNX Runtime intra-op threads; the nets are tiny, so more threads rarely pay
    # Images with a longer side above this are shrunk for detection (results are mapped back to full
    # resolution): P-Net's cost grows with the pixel count (about 2 s for 2000x2000 on one core), and faces in
    # photos meant for verification are large. Faces below min_face_size in the shrunk image are missed.
    max_side: int | None = 1600
    model_dir: Path | None = None  # None: the weights shipped with the package

    def __post_init__(self) -> None:
        if self.min_face_size < PNET_CELL:
            raise BfmError(f"min_face_size must be at least {PNET_CELL} pixels, got {self.min_face_size}")
        if not 0.0 < self.scale_factor < 1.0:
            raise BfmError(f"scale_factor must be in (0, 1), got {self.scale_factor}")
        if self.max_side is not None and self.max_side < self.min_face_size:
            raise BfmError(f"max_side ({self.max_side}) must be at least min_face_size ({self.min_face_size})")


def _rescale(face: Face, factor: float) -> Face:
    """Map a detection to an image ``factor`` times larger (pixel centres scale about the image corner)."""
    return Face(
        box=((face.box + 0.5) * factor - 0.5).astype(np.float32),
        score=face.score,
        landmarks=((face.landmarks + 0.5) * factor - 0.5).astype(np.float32),
    )


def _session(path: Path, threads: int) -> ort.InferenceSession:
    return onnx_session(path, threads, missing="MTCNN model not found (regenerate with tools/convert_mtcnn.py)")


def _to_input(rgb: np.ndarray) -> np.ndarray:
    """(N,)H,W,3 uint8 RGB -> float32 N,3,H,W normalised as the nets were trained."""
    batch = rgb[None] if rgb.ndim == 3 else rgb
    return np.ascontiguousarray(((batch.astype(np.float32) - 127.5) * 0.0078125).transpose(0, 3, 1, 2))


class MtcnnDetector(HostDetector):
    """Finds faces and their five landmarks in BGR uint8 images. Holds three ONNX Runtime sessions.

    A host detector: its image pyramid has a different shape for every image size, so it runs one image at
    a time on the CPU, outside the bundle's backends.
    """

    name = "mtcnn"

    def __init__(self, config: MtcnnConfig | None = None) -> None:
        self.config = config or MtcnnConfig()
        model_dir = self.config.model_dir or DEFAULT_MODEL_DIR
        self._pnet = _session(model_dir / "pnet.onnx", self.config.threads)
        self._rnet = _session(model_dir / "rnet.onnx", self.config.threads)
        self._onet = _session(model_dir / "onet.onnx", self.config.threads)

    def detect(self, bgr: np.ndarray) -> list[Face]:
        """All faces in ``bgr`` (HxWx3 uint8), highest score first."""
        check_bgr(bgr)
        height, width = bgr.shape[:2]
        shrink = 1.0
        if self.config.max_side is not None and max(height, width) > self.config.max_side:
            shrink = self.config.max_side / max(height, width)
            size = (max(1, round(width * shrink)), max(1, round(height * shrink)))
            bgr = cv2.resize(bgr, size, interpolation=cv2.INTER_AREA)
        rgb = np.ascontiguousarray(bgr[:, :, ::-1])
        boxes = self._propose(rgb)
        if len(boxes):
            boxes = self._refine(rgb, boxes)
        if not len(boxes):
            return []
        faces = self._output(rgb, boxes)
        return faces if shrink == 1.0 else [_rescale(face, 1.0 / shrink) for face in faces]

    def _scales(self, height: int, width: int) -> list[float]:
        # Scale so that a face of min_face_size becomes P-Net's 12-pixel cell, then shrink until the image
        # itself is smaller than one cell.
        scale = PNET_CELL / self.config.min_face_size
        scales = []
        while min(height, width) * scale >= PNET_CELL:
            scales.append(scale)
            scale *= self.config.scale_factor
        return scales

    def _propose(self, rgb: np.ndarray) -> np.ndarray:
        """Stage 1: P-Net over the pyramid -> square candidate boxes (N, 5: box + score)."""
        height, width = rgb.shape[:2]
        threshold = self.config.thresholds[0]
        found = []
        for scale in self._scales(height, width):
            sh, sw = max(PNET_CELL, math.ceil(height * scale)), max(PNET_CELL, math.ceil(width * scale))
            scaled = cv2.resize(rgb, (sw, sh), interpolation=cv2.INTER_AREA)
            reg, prob = self._pnet.run(None, {"input": _to_input(scaled)})
            rows, cols = np.nonzero(prob[0, 1] >= threshold)
            if not len(rows):
                continue
            # Cell (r, c) saw scaled pixels [2c, 2c + 11]; map back with the actual per-axis scale.
            sx, sy = sw / width, sh / height
            boxes = np.stack(
                [
                    PNET_STRIDE * cols / sx,
                    PNET_STRIDE * rows / sy,
                    (PNET_STRIDE * cols + PNET_CELL) / sx - 1,
                    (PNET_STRIDE * rows + PNET_CELL) / sy - 1,
                ],
                axis=1,
            )
            scores = prob[0, 1, rows, cols]
            offsets = reg[0][:, rows, cols].T
            keep = nms(boxes, scores, self.config.pnet_nms_per_scale)
            found.append(np.hstack([boxes[keep], scores[keep, None], offsets[keep]]))
        if not found:
            return np.zeros((0, 5))
        candidates = np.vstack(found)
        candidates = candidates[nms(candidates[:, :4], candidates[:, 4], self.config.pnet_nms)]
        boxes = to_square(apply_regression(candidates[:, :4], candidates[:, 5:9]))
        return np.hstack([boxes, candidates[:, 4:5]])

    def _refine(self, rgb: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """Stage 2: R-Net on 24x24 crops rejects and refines the proposals."""
        patches, boxes = crop_patches(rgb, candidates[:, :4], 24)
        reg, prob = self._rnet.run(None, {"input": _to_input(patches)})
        passed = prob[:, 1] > self.config.thresholds[1]
        boxes, scores, reg = boxes[passed], prob[passed, 1], reg[passed]
        keep = nms(boxes, scores, self.config.rnet_nms)
        boxes = to_square(apply_regression(boxes[keep], reg[keep]))
        return np.hstack([boxes, scores[keep, None]])

    def _output(self, rgb: np.ndarray, candidates: np.ndarray) -> list[Face]:
        """Stage 3: O-Net on 48x48 crops gives the final boxes, scores and landmarks."""
        patches, boxes = crop_patches(rgb, candidates[:, :4], 48)
        reg, points, prob = self._onet.run(None, {"input": _to_input(patches)})
        passed = prob[:, 1] > self.config.thresholds[2]
        boxes, scores, reg, points = boxes[passed], prob[passed, 1], reg[passed], points[passed]
        # Landmarks come as [x1..x5, y1..y5] in units of the crop the net saw.
        widths, heights = box_sizes(boxes)
        xs = boxes[:, :1] + points[:, :5] * widths[:, None]
        ys = boxes[:, 1:2] + points[:, 5:] * heights[:, None]
        landmarks = np.stack([xs, ys], axis=2)
        boxes = apply_regression(boxes, reg)
        keep = nms(boxes, scores, self.config.onet_nms, mode="min")
        return [
            Face(box=boxes[i].astype(np.float32), score=float(scores[i]), landmarks=landmarks[i].astype(np.float32))
            for i in keep
        ]

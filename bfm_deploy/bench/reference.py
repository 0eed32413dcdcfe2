"""The peer a new user compares bfm with: a hand-written insightface-style pipeline on onnxruntime.

Per photo: ``cv2.imread``, SCRFD-500M at insightface's 640x640, its own output decoding and NMS, five-point
alignment with OpenCV's similarity estimate, then ArcFace embeddings (the bundle's ``full.onnx``, w600k_mbf
in the demo) in batches of 64. Written from insightface's public recipe, independently of bfm's runtime, so
that a speed-up of the runtime cannot leak into the reference it is compared with.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from ..alignment import ARCFACE_TEMPLATE

INPUT = 640
SCORE, NMS_IOU = 0.5, 0.4
EMBED_BATCH = 64


class ReferencePipeline:
    """SCRFD-500M (640) + alignment + one ArcFace network, each on a default onnxruntime CPU session."""

    def __init__(self, scrfd_path: Path, arcface_path: Path) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        self.det = ort.InferenceSession(str(scrfd_path), options, providers=["CPUExecutionProvider"])
        self.rec = ort.InferenceSession(str(arcface_path), options, providers=["CPUExecutionProvider"])
        self.det_input = self.det.get_inputs()[0].name
        self.rec_input = self.rec.get_inputs()[0].name

    def embed(self, paths: Sequence[Path]) -> np.ndarray:
        crops = []
        for path in paths:
            image = cv2.imread(str(path))
            if image is None:
                continue  # an unreadable photo gives no face, as in insightface's own tools
            points = self._landmarks(image)
            if points is not None:
                matrix, _ = cv2.estimateAffinePartial2D(points, ARCFACE_TEMPLATE.astype(np.float32), method=cv2.LMEDS)
                crops.append(cv2.warpAffine(image, matrix, (112, 112), borderValue=0.0))
        out = []
        for start in range(0, len(crops), EMBED_BATCH):
            blob = cv2.dnn.blobFromImages(crops[start : start + EMBED_BATCH], 1.0 / 127.5, (112, 112),
                                          (127.5, 127.5, 127.5), swapRB=True)
            out.append(self.rec.run(None, {self.rec_input: blob})[0])
        emb = np.concatenate(out) if out else np.zeros((0, 512), np.float32)
        return emb / np.linalg.norm(emb, axis=1, keepdims=True)

    def _landmarks(self, image: np.ndarray) -> np.ndarray | None:
        """Five landmarks of the highest-scoring face, insightface's way (top-left letterbox, 2 anchors)."""
        height, width = image.shape[:2]
        scale = INPUT / max(height, width)
        canvas = np.zeros((INPUT, INPUT, 3), np.uint8)
        canvas[: round(height * scale), : round(width * scale)] = cv2.resize(image, (round(width * scale), round(height * scale)))
        blob = cv2.dnn.blobFromImage(canvas, 1.0 / 128, (INPUT, INPUT), (127.5, 127.5, 127.5), swapRB=True)
        outs = self.det.run(None, {self.det_input: blob})
        best_score, best_points = -1.0, None
        boxes, scores, points = [], [], []
        for i, stride in enumerate((8, 16, 32)):
            n = INPUT // stride
            rows, cols = np.mgrid[:n, :n]
            grid = np.stack([cols.reshape(-1), rows.reshape(-1)], axis=1) * stride
            centres = np.repeat(grid, 2, axis=0).astype(np.float32)
            s = outs[i][0].reshape(-1)
            keep = s >= SCORE
            d = outs[i + 3][0][keep] * stride
            k = outs[i + 6][0][keep].reshape(-1, 5, 2) * stride
            c = centres[keep]
            boxes.append(np.hstack([c - d[:, :2], c + d[:, 2:]]))
            scores.append(s[keep])
            points.append(c[:, None] + k)
        all_scores = np.concatenate(scores)
        if not len(all_scores):
            return None
        corners = np.vstack(boxes)
        xywh = np.hstack([corners[:, :2], corners[:, 2:] - corners[:, :2]])
        keep_idx = cv2.dnn.NMSBoxes(xywh.tolist(), all_scores.tolist(), SCORE, NMS_IOU)
        for idx in np.asarray(keep_idx).reshape(-1):
            if all_scores[idx] > best_score:
                best_score, best_points = float(all_scores[idx]), np.concatenate(points)[idx]
        return None if best_points is None else (best_points / scale).astype(np.float32)

"""Five-point similarity alignment to the ArcFace 112x112 template (the input contract of every extractor)."""

from __future__ import annotations

import cv2
import numpy as np

from .contract import CROP_SIZE as CROP_SIZE  # re-exported: the crop size of the template below

# Left eye, right eye, nose tip, left mouth corner, right mouth corner in the 112x112 crop (insightface).
ARCFACE_TEMPLATE = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) mapping ``src`` onto ``dst``.

    Umeyama's closed form; returns the 2x3 matrix for ``cv2.warpAffine``.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    src_mean, dst_mean = src.mean(0), dst.mean(0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    cov = dst_c.T @ src_c / len(src)
    u, s, vt = np.linalg.svd(cov)
    d = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[1, 1] = -1.0
    rot = u @ d @ vt
    scale = np.trace(np.diag(s) @ d) / src_c.var(0).sum()
    matrix = np.zeros((2, 3))
    matrix[:, :2] = scale * rot
    matrix[:, 2] = dst_mean - scale * rot @ src_mean
    return matrix


def align_face(image: np.ndarray, landmarks: np.ndarray, size: int = CROP_SIZE) -> np.ndarray:
    """Warp ``image`` so that its five ``landmarks`` (5x2, pixel x/y) land on the ArcFace template."""
    template = ARCFACE_TEMPLATE * (size / CROP_SIZE)
    matrix = similarity_transform(np.asarray(landmarks).reshape(5, 2), template)
    return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderValue=0.0)

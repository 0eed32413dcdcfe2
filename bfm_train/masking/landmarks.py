"""68-point facial landmarks from dlib: HOG detection on raw photos, a fixed face box on aligned crops.

dlib's 68-point indices (0-based) used across the masking package: jaw 0-16 (0 at the image-left ear, 8 the
chin), eyebrows 17-26, nose bridge 27-30 (30 the tip), nostrils 31-35, eyes 36-41 (image-left) and 42-47,
mouth 48-67.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from bfm_deploy.alignment import CROP_SIZE
from bfm_deploy.errors import BfmError, NoFaceError

PREDICTOR_FILE = "shape_predictor_68_face_landmarks.dat"

# Where dlib's HOG detector puts its box on a face aligned to the ArcFace 112x112 template: centre (x, y) and
# side, in crop pixels. Measured on 298 LFW raw-fold1 photos: detect on the raw photo, map the box through the
# five-point similarity that aligns the photo (landmarks5.txt), take the median. On the aligned crops the
# detector itself often misses (the crop cuts the chin and forehead), but the shape predictor run inside this
# box lands within 1.3 px (median) of the landmarks found on the raw photo and mapped into the crop.
ARCFACE_FACE_BOX = (58.24, 71.72, 88.86)

LEFT_EYE = slice(36, 42)
RIGHT_EYE = slice(42, 48)


def default_predictor_path() -> Path:
    """The 68-point model shipped by ``face-recognition-models``.

    Found through the import system without running the package's ``__init__``: it imports ``pkg_resources``,
    which recent setuptools no longer provides.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise BfmError("dlib's 68-point landmark model is missing: pip install face-recognition-models")
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "models" / PREDICTOR_FILE
        if candidate.is_file():
            return candidate
    raise BfmError(f"face-recognition-models is installed but has no models/{PREDICTOR_FILE}")


class LandmarkDetector:
    """dlib's HOG face detector and 68-point shape predictor (loaded once; about 100 MB, 1 s)."""

    def __init__(self, predictor_path: Path | None = None) -> None:
        path = Path(predictor_path) if predictor_path else default_predictor_path()
        if not path.is_file():
            raise BfmError(f"landmark model not found: {path}")
        self._dlib, self._predictor, self._detector = _load_dlib(str(path.resolve()))

    def landmarks(self, bgr: np.ndarray, aligned: bool) -> np.ndarray:
        """68x2 float64 landmarks of the main face; ``NoFaceError`` when a raw photo shows none."""
        gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
        box = self._aligned_box(gray.shape) if aligned else self._detect(gray)
        shape = self._predictor(gray, box)
        return np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)

    def _aligned_box(self, shape: tuple[int, ...]) -> object:
        height, width = shape[:2]
        if height != width:
            raise BfmError(f"an aligned crop must be square, got {width}x{height} (use raw mode for photos)")
        scale = width / CROP_SIZE
        cx, cy, side = (v * scale for v in ARCFACE_FACE_BOX)
        half = side / 2
        return self._dlib.rectangle(
            int(round(cx - half)), int(round(cy - half)), int(round(cx + half)), int(round(cy + half))
        )

    def _detect(self, gray: np.ndarray) -> object:
        # Upsampling once finds faces down to about 40 px but costs 4x; try without it first.
        boxes = list(self._detector(gray, 0)) or list(self._detector(gray, 1))
        if not boxes:
            raise NoFaceError("no face found")
        # Photos of one subject (LFW, MFR2) centre the subject; a bystander may be as large but sits off-centre.
        largest = max(b.area() for b in boxes)
        centre = np.array([gray.shape[1], gray.shape[0]]) / 2.0

        def off_centre(b: object) -> float:
            c = np.array([(b.left() + b.right()) / 2.0, (b.top() + b.bottom()) / 2.0])  # type: ignore[attr-defined]
            return float(np.linalg.norm(c - centre))

        return min((b for b in boxes if b.area() >= 0.5 * largest), key=off_centre)


@functools.lru_cache(maxsize=2)
def _load_dlib(predictor_path: str) -> tuple[Any, Any, Any]:
    """dlib, its shape predictor and its HOG detector. Cached: the model takes a second or more to load and
    is only read afterwards, so every LandmarkDetector in a process shares one copy."""
    try:
        import dlib
    except ImportError:
        raise BfmError("dlib is not installed: pip install dlib-bin") from None
    try:
        predictor = dlib.shape_predictor(predictor_path)
    except RuntimeError as exc:
        raise BfmError(f"cannot load the landmark model {predictor_path}: {exc}") from None
    return dlib, predictor, dlib.get_frontal_face_detector()


def check_landmarks(landmarks: np.ndarray) -> np.ndarray:
    points = np.asarray(landmarks, dtype=np.float64)
    if points.shape != (68, 2) or not np.all(np.isfinite(points)):
        raise BfmError(f"landmarks must be 68x2 finite numbers (dlib order), got shape {points.shape}")
    return points

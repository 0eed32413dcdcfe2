"""``POST /v1/verify?detail=true``: what a person looking at a decision wants drawn, per face: the aligned crop the
networks saw and where the detector found the face (box, five landmarks), in the uploaded photo's own pixels.

The aligner works on a copy shrunk to its work_side (a large JPEG is even decoded at 1/2..1/8 scale), so its
coordinates are mapped back here by the ratio of the photo's stored size (its header) to the working copy's. A
JPEG turned by its EXIF orientation is decoded turned: the stored width then maps to the working height.
"""

from __future__ import annotations

import base64
import dataclasses
from typing import Any

import cv2
import numpy as np

from ..detect.detection import Face as Detection
from ..errors import BfmError
from ..images import encoded_size
from ..results import Face


def in_photo_pixels(face: Face, data: bytes, name: str, working: np.ndarray) -> Face:
    """``face`` with its detection moved from ``working``'s pixels (the decoded copy the aligner saw) to those
    of the photo that ``data`` encodes; a face given as a crop has none and comes back as it is."""
    if face.detection is None:
        return face
    stored_w, stored_h = encoded_size(data, name)
    height, width = working.shape[:2]
    turned = abs(stored_h / stored_w - width / height) < abs(stored_w / stored_h - width / height)
    photo_w, photo_h = (stored_h, stored_w) if turned else (stored_w, stored_h)
    scale = np.array([photo_w / width, photo_h / height], np.float32)
    found = face.detection

    def moved(points: np.ndarray) -> np.ndarray:  # pixel centres map to pixel centres
        return ((points.reshape(-1, 2) + 0.5) * scale - 0.5).astype(np.float32)

    detection = Detection(box=moved(found.box).reshape(-1), score=found.score, landmarks=moved(found.landmarks))
    return dataclasses.replace(face, detection=detection)


def face_detail(face: Face) -> dict[str, Any]:
    """One face of the detail answer: ``crop`` (a PNG data URL of the 112x112 aligned face), ``box`` [x1, y1, x2,
    y2], ``landmarks`` [[x, y] x 5] (left eye, right eye, nose, mouth corners) and ``detector_score``; the last three
    null for a face given as a crop."""
    ok, png = cv2.imencode(".png", face.crop)
    if not ok:
        raise BfmError("cannot encode the aligned crop as PNG")
    found = face.detection
    return {
        "crop": "data:image/png;base64," + base64.b64encode(png.tobytes()).decode("ascii"),
        "box": None if found is None else [round(float(v), 1) for v in found.box],
        "landmarks": None if found is None else [[round(float(x), 1), round(float(y), 1)] for x, y in found.landmarks],
        "detector_score": None if found is None else round(float(found.score), 4),
    }

"""Detect, pick one face and align it: the runtime's whole preprocessing from a BGR image to a 112x112 crop."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..alignment import CROP_SIZE, align_face
from ..errors import BfmError
from ..images import ImageLimits, load_image
from .mtcnn import Face, MtcnnConfig, MtcnnDetector
from .scrfd import ScrfdConfig, ScrfdDetector


class NoFaceError(BfmError):
    """The detector found no face in an image."""


@dataclass(frozen=True)
class AlignerConfig:
    # MTCNN (the paper's detector) by default; SCRFD gives far better landmarks on masked faces.
    detector: MtcnnConfig | ScrfdConfig = field(default_factory=MtcnnConfig)
    crop_size: int = CROP_SIZE
    # How much an off-centre face is penalised against a larger one: a face at an image corner counts as
    # (1 - centre_weight) of its size. Photos for verification are framed on their subject, while the
    # largest face can be a partial one at the border (a neighbour's shoulder-level face in a crowd shot).
    centre_weight: float = 0.5
    image_limits: ImageLimits = field(default_factory=ImageLimits)


@dataclass(frozen=True, eq=False)  # holds arrays: compare fields explicitly
class AlignmentInfo:
    """What the aligner saw; ``note`` is a message worth showing the user, or None."""

    face: Face  # the face that was aligned
    num_faces: int
    note: str | None

    @property
    def multiple_faces(self) -> bool:
        return self.num_faces > 1


def face_priority(face: Face, image_height: int, image_width: int, centre_weight: float = 0.5) -> float:
    """Larger and more central is better: face side length, reduced linearly with distance from the centre."""
    cx, cy = face.centre
    half_diagonal = math.hypot(image_width, image_height) / 2
    offset = min(1.0, math.hypot(cx - (image_width - 1) / 2, cy - (image_height - 1) / 2) / half_diagonal)
    return math.sqrt(face.width * face.height) * (1.0 - centre_weight * offset)


class FaceAligner:
    """Turns images into aligned face crops. Build one and reuse it: it holds the detector's sessions."""

    def __init__(self, config: AlignerConfig | None = None) -> None:
        self.config = config or AlignerConfig()
        detector = self.config.detector
        self.detector: MtcnnDetector | ScrfdDetector = (
            ScrfdDetector(detector) if isinstance(detector, ScrfdConfig) else MtcnnDetector(detector)
        )

    def detect_and_align(self, bgr: np.ndarray, name: str = "image") -> tuple[np.ndarray, AlignmentInfo]:
        """The aligned crop (BGR uint8, crop_size^2) of the largest, most centred face in ``bgr``.

        Raises ``NoFaceError("no face found in <name>")`` when there is none.
        """
        faces = self.detector.detect(bgr)
        if not faces:
            raise NoFaceError(f"no face found in {name}")
        height, width = bgr.shape[:2]
        best = max(faces, key=lambda f: face_priority(f, height, width, self.config.centre_weight))
        note = None
        if len(faces) > 1:
            note = f"{len(faces)} faces found in {name}, using the largest centred one"
        crop = align_face(bgr, best.landmarks, self.config.crop_size)
        return crop, AlignmentInfo(face=best, num_faces=len(faces), note=note)

    def load_and_align(self, source: str | os.PathLike[str] | np.ndarray) -> tuple[np.ndarray, AlignmentInfo]:
        """``load_image`` (safe decoding) followed by ``detect_and_align``; errors name the file."""
        name = Path(source).name if isinstance(source, (str, os.PathLike)) else "image"
        return self.detect_and_align(load_image(source, self.config.image_limits), name)


def detect_and_align(
    bgr: np.ndarray, name: str = "image", aligner: FaceAligner | None = None
) -> tuple[np.ndarray, AlignmentInfo]:
    """One-off convenience around ``FaceAligner``; pass ``aligner`` (or use the class) for many images,
    since building one loads three ONNX sessions."""
    return (aligner or FaceAligner()).detect_and_align(bgr, name)

"""Aligned crops of loose face images (MFR2, generic pairs with ``--detect``): detection once per image."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import cv2
import numpy as np

from ..errors import BfmError
from ..images import load_image
from .protocols import CROP_SIZE


# Masks lower MTCNN's confidence in a face; before giving up on an image the detector is asked again with
# these per-stage thresholds (the defaults are 0.6, 0.7, 0.7). Lower still finds boxes on eyes or ears.
RELAXED_THRESHOLDS = (0.5, 0.5, 0.5)
# SCRFD's retry threshold (its default is 0.5): it is rarely needed, SCRFD finds masked faces readily.
RELAXED_SCRFD_THRESHOLD = 0.3
DetectorName = Literal["mtcnn", "scrfd"]
DETECTORS: tuple[str, ...] = get_args(DetectorName)


@dataclass
class DetectingLoader:
    """Detects and aligns each image the first time it is asked for, then serves the crop from memory.

    The evaluation asks for an image once for the classifier and again for an extractor, and detection
    costs far more than a 112x112 crop's memory. Where the detector finds no face even with relaxed thresholds
    (heavily masked or turned faces), the whole loose crop is resized to 112x112 rather than dropping its
    pairs, since the protocol scores every pair; ``fallbacks`` lists those images for the report.

    ``detector="scrfd"`` uses SCRFD instead of MTCNN (the paper's detector): MTCNN's landmarks drift on
    masked faces, which costs the pretrained w600k_mbf about three points of MFR2 accuracy.
    """

    detector: DetectorName = "mtcnn"
    crops: dict[Path, np.ndarray] = field(default_factory=dict)
    fallbacks: list[Path] = field(default_factory=list)
    relaxed: int = 0
    multiple_faces: int = 0
    _aligners: list[Any] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.detector not in DETECTORS:
            raise BfmError(f"unknown detector {self.detector!r}: expected one of {', '.join(DETECTORS)}")

    def __call__(self, path: Path) -> np.ndarray:
        crop = self.crops.get(path)
        if crop is None:
            crop = self._align(path)
            self.crops[path] = crop
        return crop

    def _align(self, path: Path) -> np.ndarray:
        from ..detect import NoFaceError

        if not self._aligners:
            self._aligners = self._build_aligners()
        bgr = load_image(path)
        for attempt, aligner in enumerate(self._aligners):
            try:
                crop, info = aligner.detect_and_align(bgr, path.name)
            except NoFaceError:
                continue
            self.relaxed += attempt > 0
            self.multiple_faces += info.num_faces > 1
            return np.ascontiguousarray(crop)
        self.fallbacks.append(path)
        return cv2.resize(bgr, (CROP_SIZE, CROP_SIZE), interpolation=cv2.INTER_AREA)

    def _build_aligners(self) -> list[Any]:
        from ..detect import AlignerConfig, FaceAligner, MtcnnConfig, ScrfdConfig

        if self.detector == "scrfd":
            configs = [ScrfdConfig(), ScrfdConfig(score_threshold=RELAXED_SCRFD_THRESHOLD)]
            return [FaceAligner(AlignerConfig(detector=config)) for config in configs]
        return [FaceAligner(), FaceAligner(AlignerConfig(detector=MtcnnConfig(thresholds=RELAXED_THRESHOLDS)))]

    def notes(self) -> list[str]:
        notes = []
        if self.fallbacks:
            names = ", ".join(p.name for p in self.fallbacks[:5]) + (" ..." if len(self.fallbacks) > 5 else "")
            notes.append(f"no face detected in {len(self.fallbacks)} images, used them resized whole: {names}")
        if self.relaxed:
            relaxed = RELAXED_SCRFD_THRESHOLD if self.detector == "scrfd" else RELAXED_THRESHOLDS
            notes.append(
                f"{self.relaxed} faces were only found with relaxed {self.detector.upper()} thresholds {relaxed}"
            )
        if self.multiple_faces:
            notes.append(f"{self.multiple_faces} images held several faces; the largest centred one was used")
        return notes

"""Images to aligned face crops: decode, detect in batches, pick one face, align; the runtime's preprocessing.

Decoding and alignment run on a small thread pool (OpenCV releases the GIL), detection runs once per batch
on the detector, so a batch of photos keeps every core busy. An image without a face is an error for that
image, never a resized whole image.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Union

import numpy as np

from ..alignment import CROP_SIZE, align_face
from ..errors import BfmError, NoFaceError
from ..images import ImageLimits, load_image, shrink_to
from .fallback import FIRST_PASS, FallbackChain
from .detection import Detector, Face

Image = Union[str, "os.PathLike[str]", np.ndarray]


@dataclass(frozen=True)
class AlignerConfig:
    crop_size: int = CROP_SIZE
    # How much an off-centre face is penalised against a larger one: a face at an image corner counts as
    # (1 - centre_weight) of its size. Photos for verification are framed on their subject, while the
    # largest face can be a partial one at the border (a neighbour's shoulder-level face in a crowd shot).
    centre_weight: float = 0.5
    # Photos are shrunk to this longer side before detection and alignment: the detector sees 320 pixels,
    # and a face found there keeps at least 4x that resolution for its 112-pixel crop.
    work_side: int = 1280
    threads: int = 0  # decode and align workers; 0: one per CPU, at most 4
    image_limits: ImageLimits = field(default_factory=ImageLimits)

    def __post_init__(self) -> None:
        if self.work_side < 2 * self.crop_size:
            raise BfmError(f"work_side must be at least {2 * self.crop_size}, got {self.work_side}")
        if self.threads < 0:
            raise BfmError(f"threads must be >= 0, got {self.threads}")


@dataclass(frozen=True, eq=False)  # holds arrays: compare fields explicitly
class AlignedFace:
    """One image's aligned crop and what the aligner saw; ``note`` is a message worth showing the user."""

    crop: np.ndarray  # crop_size^2 x 3 BGR uint8
    face: Face  # the face that was aligned, in the (possibly shrunk) working image's pixels
    num_faces: int
    note: str | None
    found_by: str = FIRST_PASS  # the detector's first pass, or the fallback step that found the face

    @property
    def multiple_faces(self) -> bool:
        return self.num_faces > 1


def face_priority(face: Face, image_height: int, image_width: int, centre_weight: float = 0.5) -> float:
    """Larger and more central is better: face side length, reduced linearly with distance from the centre."""
    cx, cy = face.centre
    half_diagonal = math.hypot(image_width, image_height) / 2
    offset = min(1.0, math.hypot(cx - (image_width - 1) / 2, cy - (image_height - 1) / 2) / half_diagonal)
    return math.sqrt(face.width * face.height) * (1.0 - centre_weight * offset)


def image_name(source: Image) -> str:
    return "image" if isinstance(source, np.ndarray) else str(source)


class FaceAligner:
    """Turns images into aligned face crops with ``detector``, retrying the photos it finds no face in with
    ``fallback`` (the bundle's chain; ``open_aligner`` builds both). Build one and reuse it (it holds a pool)."""

    def __init__(self, detector: Detector, config: AlignerConfig | None = None,
                 fallback: FallbackChain | None = None) -> None:
        self.detector = detector
        self.fallback = fallback
        self.config = config or AlignerConfig()
        workers = self.config.threads or min(4, os.cpu_count() or 1)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="bfm-align")

    def align_many(self, sources: Sequence[Image]) -> list[AlignedFace | BfmError]:
        """Each source (path or BGR array) decoded, detected in one batch and aligned; a failed image gives
        its ``BfmError`` (unreadable, or ``NoFaceError``) in its place."""
        decoded = list(self._pool.map(self._decode, sources))
        good = [i for i, item in enumerate(decoded) if not isinstance(item, BfmError)]
        images = [item for item in decoded if not isinstance(item, BfmError)]
        found, by = self._detect(images)
        jobs = [(image, faces, image_name(sources[i]), step)
                for i, image, faces, step in zip(good, images, found, by)]
        aligned = list(self._pool.map(lambda job: self._align(*job), jobs))
        results: list[AlignedFace | BfmError] = list(decoded)  # type: ignore[arg-type]  # errors stay in place
        for i, item in zip(good, aligned):
            results[i] = item
        return results

    def detect_and_align(self, bgr: np.ndarray, name: str = "image") -> AlignedFace:
        """The aligned crop of the largest, most centred face in ``bgr``; ``NoFaceError`` when there is none."""
        bgr = shrink_to(bgr, self.config.work_side)
        (faces,), (step,) = self._detect([bgr])
        return self._checked(self._align(bgr, faces, name, step))

    def _detect(self, images: Sequence[np.ndarray]) -> tuple[list[list[Face]], list[str]]:
        found = self.detector.detect_batch(images) if images else []
        if self.fallback:
            return self.fallback.retry(images, found)
        return found, [FIRST_PASS] * len(found)

    def _decode(self, source: Image) -> np.ndarray | BfmError:
        try:
            return load_image(source, self.config.image_limits, max_side=self.config.work_side)
        except BfmError as exc:
            return exc

    def _align(self, bgr: np.ndarray, faces: list[Face], name: str, step: str = FIRST_PASS) -> AlignedFace | BfmError:
        if not faces:
            tried = f" (retried: {', '.join(map(str, self.fallback.steps))})" if self.fallback else ""
            return NoFaceError(f"no face found in {name}{tried}")
        height, width = bgr.shape[:2]
        best = max(faces, key=lambda f: face_priority(f, height, width, self.config.centre_weight))
        note = f"{len(faces)} faces found in {name}, using the largest centred one" if len(faces) > 1 else None
        crop = np.ascontiguousarray(align_face(bgr, best.landmarks, self.config.crop_size))
        return AlignedFace(crop=crop, face=best, num_faces=len(faces), note=note, found_by=step)

    @staticmethod
    def _checked(item: AlignedFace | BfmError) -> AlignedFace:
        if isinstance(item, BfmError):
            raise item
        return item

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def __enter__(self) -> FaceAligner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

"""Aligned crops of loose face images (MFR2, generic pairs with ``--detect``), detected as the runtime does.

The detector is chosen with the runtime's grammar (``--detector``, default the bundle's own), and images are
aligned by the runtime's ``FaceAligner`` in batches, so what ``bfm-eval`` reports is what ``bfm-verify`` users
get. One difference, said in the report: the protocol scores every pair, so an image without a face is
used resized whole (and listed) instead of failing its pairs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..bundle import Bundle
from ..errors import BfmError
from ..progress import progress as progress_bar
from .protocols import CROP_SIZE

PREFETCH_CHUNK = 64  # images a detector batch


@dataclass
class DetectingLoader:
    """Detects and aligns images (all of a set at once with ``prefetch``), then serves the crops from memory.

    ``detector``: a ``--detector`` choice; ``bundle``: whose detector ``auto``/``bundle`` mean.
    """

    detector: str = "auto"
    bundle: Bundle | None = None
    crops: dict[Path, np.ndarray] = field(default_factory=dict)
    fallbacks: list[Path] = field(default_factory=list)
    multiple_faces: int = 0
    retried: dict[str, int] = field(default_factory=dict)  # fallback step -> faces it found (none at first pass)
    _aligner: Any = None

    def __post_init__(self) -> None:
        from ..detect import check_choice

        check_choice(self.detector)

    @property
    def detector_name(self) -> str:
        return str(self._get_aligner().detector.name)

    def __call__(self, path: Path) -> np.ndarray:
        if path not in self.crops:
            self.prefetch([path], progress=False)
        return self.crops[path]

    def prefetch(self, paths: Sequence[Path], progress: bool = True) -> None:
        """Detect and align every image of ``paths`` not yet done, a detector batch at a time."""
        todo = [p for p in dict.fromkeys(paths) if p not in self.crops]
        aligner = self._get_aligner()
        with progress_bar(total=len(todo), desc="detect", unit="image", enabled=progress) as bar:
            for start in range(0, len(todo), PREFETCH_CHUNK):
                chunk = todo[start : start + PREFETCH_CHUNK]
                for path, item in zip(chunk, aligner.align_many(chunk)):
                    self.crops[path] = self._crop(path, item)
                bar.update(len(chunk))

    def _crop(self, path: Path, item: Any) -> np.ndarray:
        from ..detect import FIRST_PASS, NoFaceError
        from ..images import load_image

        if isinstance(item, NoFaceError):
            self.fallbacks.append(path)
            return cv2.resize(load_image(path), (CROP_SIZE, CROP_SIZE), interpolation=cv2.INTER_AREA)
        if isinstance(item, BfmError):
            raise item
        self.multiple_faces += item.num_faces > 1
        if item.found_by != FIRST_PASS:
            self.retried[item.found_by] = self.retried.get(item.found_by, 0) + 1
        return np.ascontiguousarray(item.crop)

    def _get_aligner(self) -> Any:
        if self._aligner is None:
            from ..detect import open_aligner

            self._aligner = open_aligner(self.detector, self.bundle)
        return self._aligner

    def notes(self) -> list[str]:
        notes = [f"faces detected with {self.detector_name} and aligned by the runtime's FaceAligner"]
        if self.fallbacks:
            names = ", ".join(p.name for p in self.fallbacks[:5]) + (" ..." if len(self.fallbacks) > 5 else "")
            notes.append(f"no face detected in {len(self.fallbacks)} images, used them resized whole: {names}")
        if self.retried:
            steps = ", ".join(f"{count} by {step}" for step, count in self.retried.items())
            notes.append(f"faces found only on a retry of the bundle's fallback chain: {steps}")
        if self.multiple_faces:
            notes.append(f"{self.multiple_faces} images held several faces; the largest centred one was used")
        return notes

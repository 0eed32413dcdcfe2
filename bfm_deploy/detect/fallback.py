"""What to try when the detector finds no face: the bundle's ordered retry chain (``detector.fallback``).

Steps, tried in the manifest's order on the photos that are still without a face; a step is one part or several
joined by ``+`` (``detector:yunet+pad:0.25``: YuNet on the padded photo):

``pad:F``          the photo on a black border F times its longer side wide: a face that fills the frame (a
                   close-up portrait, a tight crop) is found once it has room around it
``detector:NAME``  another detector (``yunet``, ``mtcnn`` or ``scrfd``); skipped when it is the first detector
``letterbox:S``    the bundle's detector on an S x S letterbox instead of its own: small faces in crowd photos
``score:T``        the bundle's detector with a lower score threshold T: faces cut by the frame or mostly
                   covered (a mask, sunglasses and a cap) score under the usual threshold

Only photos that fail pay for a retry (and only a chain that is used opens its detectors). A face found on the
padded photo is mapped back to the photo's own pixels; its landmarks may then lie outside the photo, which
alignment fills with black, the same pixels the border held.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

import cv2
import numpy as np

from .detection import Detector, Face
from .fallback_steps import (DEFAULT_CHAIN, FIRST_PASS, MAX_LETTERBOX, MAX_PAD, MIN_SCORE, RETRY_DETECTORS,
                             STEP_KINDS, FallbackStep, parse_chain, parse_chain_option)

if TYPE_CHECKING:
    from .spec import DetectorSpec

# The chain's grammar, named here too for the callers that run chains.
__all__ = ["DEFAULT_CHAIN", "FIRST_PASS", "MAX_LETTERBOX", "MAX_PAD", "MIN_SCORE", "RETRY_DETECTORS", "STEP_KINDS",
           "FallbackChain", "FallbackStep", "bundle_step_detector", "pad_image", "parse_chain", "parse_chain_option"]


def pad_image(bgr: np.ndarray, fraction: float) -> tuple[np.ndarray, int]:
    """``bgr`` on a black border ``fraction`` of its longer side wide on every side; returns (image, border)."""
    border = max(1, round(fraction * max(bgr.shape[:2])))
    padded = cv2.copyMakeBorder(bgr, border, border, border, border, cv2.BORDER_CONSTANT, value=(0, 0, 0))
    return padded, border


def _shifted(face: Face, offset: float) -> Face:
    return Face(box=(face.box - offset).astype(np.float32), score=face.score,
                landmarks=(face.landmarks - offset).astype(np.float32))


class FallbackChain:
    """Runs the chain's steps on the photos a first detection pass left without a face.

    ``open_step_detector(step)`` gives the detector of a step with a ``detector:``, ``letterbox:`` or ``score:``
    part; it is called on the first use of that detector only, and its result is kept (``opened``).
    """

    def __init__(self, steps: Sequence[FallbackStep], primary: Detector,
                 open_step_detector: Callable[[FallbackStep], Detector], primary_name: str = "") -> None:
        # A detector step that repeats the first detector would find nothing new.
        self.steps = tuple(s for s in steps if not (s.detector == primary_name and not s.pad))
        self._primary = primary
        self._open = open_step_detector
        self._opened: dict[str, Detector] = {}

    def __bool__(self) -> bool:
        return bool(self.steps)

    @property
    def opened(self) -> list[str]:
        """The retry detectors opened so far: none while every photo is found at once."""
        return sorted(self._opened)

    def retry(self, images: Sequence[np.ndarray], found: list[list[Face]]) -> tuple[list[list[Face]], list[str]]:
        """``found`` with the empty entries retried step by step; and the step that found each image's faces
        (``FIRST_PASS`` for those found at once, ``""`` for those no step found)."""
        found = list(found)
        by = [FIRST_PASS if faces else "" for faces in found]
        for step in self.steps:
            missing = [i for i, faces in enumerate(found) if not faces]
            if not missing:
                break
            retried = self._run(step, [images[i] for i in missing])
            for i, faces in zip(missing, retried):
                if faces:
                    found[i], by[i] = faces, str(step)
        return found, by

    def _run(self, step: FallbackStep, images: list[np.ndarray]) -> list[list[Face]]:
        detector = self._primary
        if step.detector or step.uses_bundle_graph:
            key = str(FallbackStep(detector=step.detector, letterbox=step.letterbox, score=step.score))
            if key not in self._opened:
                self._opened[key] = self._open(step)
            detector = self._opened[key]
        if not step.pad:
            return detector.detect_batch(images)
        padded = [pad_image(bgr, step.pad) for bgr in images]
        faces = detector.detect_batch([image for image, _ in padded])
        return [[_shifted(f, border) for f in image_faces] for image_faces, (_, border) in zip(faces, padded)]


def bundle_step_detector(spec: DetectorSpec, step: FallbackStep, threads: int = 0) -> Detector:
    """The bundle's detector graph as a ``letterbox:`` or ``score:`` step wants it, on its own CPU session: the
    backend's detector may be an engine built for one input size, and only photos that failed come here."""
    from .network import NetworkDetector, OnnxRunner

    if step.letterbox:
        spec = replace(spec, input_size=step.letterbox)
    if step.score:
        spec = replace(spec, score_threshold=step.score)
    return NetworkDetector(spec, OnnxRunner(spec.file, spec.input_name, spec.output_names, threads),
                           name=f"bundle:{spec.architecture}[{step}]")

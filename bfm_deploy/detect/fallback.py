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
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import cv2
import numpy as np

from ..errors import BfmError
from .mtcnn import Face

if TYPE_CHECKING:
    from .face import Detector
    from .spec import DetectorSpec

FIRST_PASS = "detector"  # what ``AlignedFace.found_by`` says of a face the detector found at once
STEP_KINDS = ("pad", "detector", "letterbox", "score")
RETRY_DETECTORS = ("yunet", "mtcnn", "scrfd")
# What bfm-export writes unless told otherwise, chosen on the train and validation photos of
# chandrikadeb7/Face-Mask-Detection (README.md, "When the detector finds no face"): close-ups first (the cheapest
# retry), then YuNet as it is and padded, small faces, and last the bundle's detector at a lower score
# threshold, which finds tight crops cut at the brow and chin whose faces score under 0.5.
DEFAULT_CHAIN = ("pad:0.25", "detector:yunet", "detector:yunet+pad:0.25", "letterbox:640", "score:0.2",
                 "score:0.2+pad:0.25")
MAX_PAD = 2.0
MAX_LETTERBOX = 1920
MIN_SCORE = 0.1  # below it a detector's noise passes for faces


@dataclass(frozen=True)
class FallbackStep:
    """One retry of the chain: parts joined by ``+`` (``detector:yunet+pad:0.25``), at most one of each kind;
    ``str(step)`` gives the manifest's spelling back, parts in a fixed order."""

    pad: float = 0.0  # border, as a fraction of the longer side; 0: none
    detector: str = ""  # another detector; "": the first detector, or the bundle's graph for letterbox/score
    letterbox: int = 0  # the bundle's graph at this letterbox side; 0: its own
    score: float = 0.0  # the bundle's graph at this score threshold; 0: its own

    @classmethod
    def parse(cls, text: str) -> FallbackStep:
        values: dict[str, float | int | str] = {}
        for part in text.split("+"):
            kind, sep, value = part.strip().partition(":")
            if kind not in STEP_KINDS or not sep or not value:
                raise BfmError(f"detector fallback step {text!r}: {part!r} is not one of pad:FRACTION, detector:NAME, "
                               "letterbox:SIDE, score:THRESHOLD")
            if kind in values:
                raise BfmError(f"detector fallback step {text!r} names {kind} twice")
            values[kind] = _part_value(text, kind, value)
        step = cls(**values)  # type: ignore[arg-type]
        if step.detector and (step.letterbox or step.score):
            raise BfmError(f"detector fallback step {text!r}: letterbox and score change the bundle's detector, "
                           "not another one")
        return step

    @property
    def uses_bundle_graph(self) -> bool:
        return bool(self.letterbox or self.score)

    def __str__(self) -> str:
        parts = [f"detector:{self.detector}" if self.detector else "", f"letterbox:{self.letterbox}" if self.letterbox else "",
                 f"score:{self.score:g}" if self.score else "", f"pad:{self.pad:g}" if self.pad else ""]
        return "+".join(p for p in parts if p)


def _part_value(text: str, kind: str, value: str) -> float | int | str:
    if kind == "detector":
        if value not in RETRY_DETECTORS:
            raise BfmError(f"detector fallback step {text!r}: the detector must be one of {', '.join(RETRY_DETECTORS)}")
        return value
    try:
        number = int(value) if kind == "letterbox" else float(value)
    except ValueError:
        raise BfmError(f"detector fallback step {text!r}: {value!r} is not a number") from None
    if kind == "pad" and not 0.0 < number <= MAX_PAD:
        raise BfmError(f"detector fallback step {text!r}: the border must be in (0, {MAX_PAD}] of the longer side")
    if kind == "score" and not MIN_SCORE <= number < 1.0:
        raise BfmError(f"detector fallback step {text!r}: the score threshold must be in [{MIN_SCORE}, 1)")
    if kind == "letterbox" and (not 32 <= number <= MAX_LETTERBOX or number % 32):
        raise BfmError(f"detector fallback step {text!r}: the letterbox side must be a multiple of 32 in 32..{MAX_LETTERBOX}")
    return number


def parse_chain(steps: Sequence[str]) -> tuple[FallbackStep, ...]:
    """The manifest's list of step spellings, validated; a repeated step is an error (it would never help)."""
    parsed = tuple(FallbackStep.parse(s) for s in steps)
    spelled = [str(s) for s in parsed]
    for i, name in enumerate(spelled):
        if name in spelled[:i]:
            raise BfmError(f"detector fallback step {name!r} appears twice")
    return parsed


def parse_chain_option(value: str) -> tuple[FallbackStep, ...]:
    """``--detector-fallback``: comma-separated steps, or ``none`` for no retries."""
    if value.strip().lower() == "none":
        return ()
    return parse_chain([step.strip() for step in value.split(",") if step.strip()])


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

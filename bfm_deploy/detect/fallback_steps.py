"""The grammar of the detector's retry chain (``detector.fallback`` in a bundle manifest, ``--detector-fallback``):
what each step means is in ``fallback.py``, which runs them; this module only parses and spells them, so the
manifest schema can hold steps without the detectors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import BfmError

FIRST_PASS = "detector"  # what ``AlignedFace.found_by`` says of a face the detector found at once
STEP_KINDS = ("pad", "detector", "letterbox", "score")
RETRY_DETECTORS = ("yunet", "mtcnn", "scrfd")
# What bfm-export writes unless told otherwise, chosen on the train and validation photos of
# chandrikadeb7/Face-Mask-Detection (benchmarks/results/detectors/README.md, "The fallback chain"): close-ups first (the cheapest
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

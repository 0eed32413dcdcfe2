"""What a bundle's detector graph needs to be fed and decoded (the manifest's ``detector`` entry)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import BfmError
from .fallback import FallbackStep

DECODINGS = ("scrfd",)


@dataclass(frozen=True)
class DetectorSpec:
    """How to feed and decode a detector graph: the ``detector`` entry of a bundle manifest."""

    file: Path
    architecture: str  # e.g. "scrfd-500m"
    decoding: str  # which output decoder: "scrfd" (strides 8/16/32, two anchors a cell, five keypoints)
    input_name: str
    output_names: tuple[str, ...]  # in the decoder's order: scores, boxes, keypoints, each per stride
    input_size: int  # square letterbox side, a multiple of 32
    mean: float
    std: float
    channel_order: str  # "RGB" or "BGR"
    score_threshold: float
    nms_threshold: float
    sha256: str = ""
    licence: str = ""
    source: str = ""
    fallback: tuple[FallbackStep, ...] = ()  # the retries when no face is found (``detect.fallback``)

    def __post_init__(self) -> None:
        if self.decoding not in DECODINGS:
            raise BfmError(f"detector decoding {self.decoding!r} is not supported (known: {', '.join(DECODINGS)})")
        if self.input_size < 32 or self.input_size % 32:
            raise BfmError(f"detector input size must be a positive multiple of 32, got {self.input_size}")
        if not 0.0 < self.score_threshold < 1.0:
            raise BfmError(f"detector score threshold must be in (0, 1), got {self.score_threshold}")
        if not 0.0 < self.nms_threshold <= 1.0:
            raise BfmError(f"detector NMS threshold must be in (0, 1], got {self.nms_threshold}")
        if self.channel_order not in ("RGB", "BGR"):
            raise BfmError(f"detector channel order must be RGB or BGR, got {self.channel_order!r}")
        if self.std <= 0:
            raise BfmError("detector normalisation std must be positive")

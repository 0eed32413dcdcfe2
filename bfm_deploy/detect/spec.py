"""What a bundle's detector graph needs to be fed and decoded (the manifest's ``detector`` entry)."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import BfmError
from ..json_fields import Fields, Where
from .fallback_steps import FallbackStep, parse_chain

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
    params: int | None = None  # weights in the graph, as the manifest reports them (older bundles: none)
    extra: dict[str, Any] = field(default_factory=dict)  # manifest keys this version does not read, kept as they are

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

    @classmethod
    def from_dict(cls, obj: Any, where: Where, root: Path) -> DetectorSpec:
        """The manifest's ``detector`` entry at ``where``; its file lies in the bundle folder ``root``."""
        f = Fields.of(obj, where)
        size = f.get("input_size", list)
        if len(size) != 2 or size[0] != size[1] or not all(isinstance(v, int) and not isinstance(v, bool) for v in size):
            raise f.fail("input_size", f"must be [side, side] (a square letterbox), got {size!r}")
        outputs = f.get("outputs", list)
        if not outputs or not all(isinstance(o, str) and o for o in outputs):
            raise f.fail("outputs", "must be a list of output tensor names")
        norm = f.child("normalisation")
        fallback = f.optional("fallback", list) or []
        if not all(isinstance(step, str) for step in fallback):
            raise f.fail("fallback", "must be a list of step names such as \"pad:0.25\"")
        file, architecture, decoding = root / f.file_name("file"), f.text("architecture"), f.text("decoding")
        input_name, channel_order = f.text("input"), f.text("channel_order")
        mean, std = norm.number("mean"), norm.number("std")
        score_threshold, nms_threshold = f.number("score_threshold"), f.number("nms_threshold")
        sha256, licence, source = f.sha256("sha256"), f.text("licence"), f.text("source")
        params = f.optional("params", int)
        extra = f.rest()
        try:  # the chain's and the spec's own checks, their messages placed in the manifest
            return cls(file, architecture, decoding, input_name, tuple(outputs), size[0], mean, std, channel_order,
                       score_threshold, nms_threshold, sha256, licence, source, parse_chain(fallback), params, extra)
        except BfmError as exc:
            raise where.wrap(exc) from None

    def to_dict(self) -> dict[str, Any]:
        """The manifest's ``detector`` entry (``from_dict`` reads it back to an equal spec)."""
        return {
            "file": self.file.name,
            "architecture": self.architecture,
            "decoding": self.decoding,
            "input": self.input_name,
            "outputs": list(self.output_names),
            "input_size": [self.input_size, self.input_size],
            "channel_order": self.channel_order,
            "normalisation": {"mean": self.mean, "std": self.std},
            "score_threshold": self.score_threshold,
            "nms_threshold": self.nms_threshold,
            **({"params": self.params} if self.params is not None else {}),
            "sha256": self.sha256,
            "licence": self.licence,
            "source": self.source,
            **({"fallback": [str(step) for step in self.fallback]} if self.fallback else {}),
            **copy.deepcopy(self.extra),
        }

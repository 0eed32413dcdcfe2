"""What the runtime hands back: a prepared face, a verified pair, an embedded face, a face as a gallery keeps it."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .routing import Route

if TYPE_CHECKING:
    from .detect.detection import Face as Detection


@dataclass(frozen=True)
class Face:
    crop: np.ndarray  # 112x112x3 BGR uint8, aligned to the ArcFace template
    note: str | None = None
    found_by: str = "aligned"  # "detector", the fallback step that found it, or "aligned" (given as a crop)
    # the detection it was aligned from (box, landmarks), in the pixels of the image the aligner worked on (a
    # photo shrunk to its work_side); None for a face given as a crop
    detection: Detection | None = None


@dataclass(frozen=True)
class VerifyResult:
    same: bool
    score: float  # cosine similarity of the L2-normalised embeddings of the route
    threshold: float
    route: Route
    case: int  # 1 both unmasked, 2 one masked, 3 both masked
    mask_probability: tuple[float, float]
    note: str | None = None  # e.g. several faces found, the largest was used
    # how each face was found: "detector" (first pass), a fallback step of the bundle's chain, or "aligned"
    found_by: tuple[str, str] = ("aligned", "aligned")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["mask_probability"] = list(self.mask_probability)
        data["found_by"] = list(self.found_by)
        if self.note is None:
            del data["note"]
        return data


@dataclass(frozen=True)
class EmbedResult:
    route: Route  # the extractor this face's mask state calls for
    mask_probability: float
    embedding: np.ndarray  # L2-normalised float32
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"route": self.route, "mask_probability": self.mask_probability,
                                "embedding": [round(float(v), 7) for v in self.embedding]}
        if self.note is not None:
            data["note"] = self.note
        return data


@dataclass(frozen=True)
class FaceFeatures:
    """A face as a gallery keeps it: its mask state and both extractors' L2-normalised embeddings, so that
    it can be matched on either route (``bfm_deploy.gallery``)."""

    mask_probability: float
    masked: bool
    full: np.ndarray
    partial: np.ndarray
    note: str | None = None


@dataclass(frozen=True)
class PairError:
    """Stands in for the result of a pair that could not be verified (``verify_many(errors="collect")``)."""

    message: str

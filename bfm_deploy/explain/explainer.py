"""Explain a verification: each face's guided-backpropagation map for the extractor its pair's route uses.

``explain("a.jpg", "b.jpg")`` runs the shipped bundle as the paper's system; ``compare`` adds methods in
bfm-eval's grammar (``NAME=BUNDLE[:routed|:full|:partial]``, ``bfm_deploy.eval.methods``), so Baseline 1
(``engines/demo:full``), a retrained Baseline 2 and ours sit side by side on the same two crops. The crops come
from the first method's bundle (its detector and aligner), once, so every method explains the same pixels.

Everything a decision needs is computed here, on the CPU in FP32, from the bundle's networks as torch modules
(``weights.safetensors``, or rebuilt from the ONNX graphs and checked against them: the torch backend's
``torch_modules``): the classifier's mask probabilities, the case, the route (the classifier's, or the one a
``:full``/``:partial`` method forces), the cosine score against the bundle's threshold for that route, and the
maps of the route's extractor. The maps and the decision therefore come from the same forward pass.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import numpy as np

from ..bundle import Bundle, default_bundle
from ..contract import Network
from ..errors import BfmError
from ..eval.methods import Method, collect_methods
from ..routing import Route, case_of, is_masked, mask_probability, route_of_case
from ..tensor import l2_normalise, preprocess
from .guided import EXTRA, guided_saliency
from .regions import mask_region_share

Image = Union[str, "os.PathLike[str]", np.ndarray]


@dataclass(frozen=True, eq=False)  # holds arrays
class FaceExplanation:
    crop: np.ndarray  # 112 x 112 x 3 BGR uint8, what the extractor saw
    saliency: np.ndarray  # 112 x 112 float32 >= 0, guided backpropagation of the embedding's norm
    network: Route  # the extractor that made the embedding and the map
    mask_probability: float
    mask_region_share: float  # of the map's mass below the nose line (``regions``)

    def to_dict(self) -> dict[str, Any]:
        return {"network": self.network, "mask_probability": round(self.mask_probability, 6),
                "mask_region_share": round(self.mask_region_share, 6)}


@dataclass(frozen=True, eq=False)
class PairExplanation:
    method: str
    mode: str  # routed, full or partial (bfm-eval's method grammar)
    bundle: str
    same: bool
    score: float
    threshold: float
    route: Route
    case: int  # from the classifier, whichever route the method takes
    faces: tuple[FaceExplanation, FaceExplanation]

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "mode": self.mode, "bundle": self.bundle, "same": self.same,
                "score": round(self.score, 6), "threshold": round(self.threshold, 6), "route": self.route,
                "case": self.case, "faces": [face.to_dict() for face in self.faces]}


class Explainer:
    """One method's networks as torch modules (CPU, FP32, eval) and its decision rule."""

    def __init__(self, method: Method) -> None:
        from ..backends.torch_backend import torch_modules

        _require_torch()
        self.method = method
        self.bundle = Bundle.load(method.bundle)
        networks = ("classifier", "full", "partial") if method.routed else ("classifier", method.mode)
        self.modules, self.weights_from = torch_modules(self.bundle, networks)  # type: ignore[arg-type]

    def tensor(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        return preprocess(crops, self.bundle.input.mean, self.bundle.input.std)

    def mask_probabilities(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        return mask_probability(self._forward("classifier", self.tensor(crops)))

    def saliency(self, crops: Sequence[np.ndarray], network: Route) -> np.ndarray:
        """N x 112 x 112 guided-backpropagation maps of ``network`` (``guided.guided_saliency``)."""
        return self.explained(crops, network)[0]

    def explained(self, crops: Sequence[np.ndarray], network: Route) -> tuple[np.ndarray, np.ndarray]:
        """``network``'s maps of ``crops`` and their L2-normalised embeddings, from one forward pass."""
        if network not in self.modules:
            raise BfmError(f"method {self.method.name!r} ({self.method.mode}) has no {network} extractor here")
        maps, embeddings = guided_saliency(self.modules[network], self.tensor(crops))
        return maps, l2_normalise(embeddings)

    def pair(self, crop_a: np.ndarray, crop_b: np.ndarray) -> PairExplanation:
        crops = [crop_a, crop_b]
        probabilities = self.mask_probabilities(crops)
        masked = is_masked(probabilities, self.bundle.mask_threshold)
        case = case_of(bool(masked[0]), bool(masked[1]))
        route: Route = route_of_case(case) if self.method.routed else self.method.mode  # type: ignore[assignment]
        maps, embeddings = self.explained(crops, route)
        score = float(embeddings[0] @ embeddings[1])
        threshold = self.bundle.threshold(route)
        shares = mask_region_share(maps)
        faces = tuple(FaceExplanation(crop, maps[i], route, float(probabilities[i]), float(shares[i]))
                      for i, crop in enumerate(crops))
        return PairExplanation(self.method.name, self.method.mode, str(self.method.bundle), score >= threshold,
                               score, threshold, route, case, faces)  # type: ignore[arg-type]

    def _forward(self, network: Network, tensor: np.ndarray) -> np.ndarray:
        torch = _require_torch()
        with torch.inference_mode():
            return self.modules[network](torch.from_numpy(tensor)).numpy()  # type: ignore[no-any-return]


def _require_torch() -> Any:
    from ..optional import require

    require("bfm_models", EXTRA, "explanations (bfm-explain)")
    return require("torch", EXTRA, "explanations (bfm-explain)")


def aligned_crops(images: Sequence[Image], bundle: Path, aligned: bool = False,
                  detector: str = "auto") -> list[np.ndarray]:
    """The aligned crops of ``images`` by ``bundle``'s detector (ONNX Runtime), or the images themselves when
    ``aligned``; the first image that fails raises its one-line error."""
    from ..verifier import Verifier

    with Verifier(bundle, backend="ort", detector=detector) as verifier:
        faces = verifier.prepare_many(images, aligned)
    for face in faces:
        if isinstance(face, BfmError):
            raise face
    return [face.crop for face in faces]  # type: ignore[union-attr]


def explain(image_a: Image, image_b: Image, bundle: str | os.PathLike[str] | None = None,
            compare: Sequence[str] = (), aligned: bool = False, detector: str = "auto") -> list[PairExplanation]:
    """Explain the pair ``image_a``, ``image_b`` for each method: ``bundle`` (``PATH[:routed|:full|:partial]``,
    default the shipped bundle) first, then each ``NAME=SPEC`` of ``compare``; the maps are arrays in
    ``PairExplanation.faces[i].saliency``."""
    spec = str(bundle) if bundle is not None else (str(default_bundle()) if not compare else None)
    methods = collect_methods(spec, tuple(compare))
    crop_a, crop_b = aligned_crops([image_a, image_b], methods[0].bundle, aligned, detector)
    return [Explainer(method).pair(crop_a, crop_b) for method in methods]

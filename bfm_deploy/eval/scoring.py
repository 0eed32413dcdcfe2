"""Pair scores of one method on one evaluation set, computing each image's network outputs only once.

A routed method first runs the mask classifier on every image, then routes each pair (``full`` when
both faces are classified unmasked, else ``partial``) and embeds each image only with the extractor(s)
its pairs need. Outputs are cached per bundle and image, so methods sharing a bundle (``ours`` and
``ours:full``) and evaluation sets sharing images (masked-LFW case 2 and case 3) reuse them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

import numpy as np

from ..progress import progress
from ..routing import DEFAULT_MASK_THRESHOLD, partial_route
from .methods import Method
from .protocols import EvalSet, ImageLoader

Output = Literal["mask", "full", "partial"]


class FaceModel(Protocol):
    """What scoring needs from a bundle at run time (``bfm_deploy.verifier.Verifier`` provides it)."""

    def mask_probability(self, images: Sequence[np.ndarray], aligned: bool = ...) -> np.ndarray: ...

    def embed(
        self, images: Sequence[np.ndarray], route: Literal["full", "partial"] = ..., aligned: bool = ...
    ) -> np.ndarray: ...


@dataclass
class FeatureCache:
    """One bundle's model and everything it has computed, per image path."""

    model: FaceModel
    batch_size: int = 64
    outputs: dict[Output, dict[Path, np.ndarray]] = field(
        default_factory=lambda: {"mask": {}, "full": {}, "partial": {}}
    )

    def compute(self, output: Output, images: Sequence[Path], load: ImageLoader, label: str) -> None:
        """Fill the cache for ``images`` that lack ``output``, in batches."""
        done = self.outputs[output]
        todo = [image for image in dict.fromkeys(images) if image not in done]
        if not todo:
            return
        with progress(total=len(todo), desc=f"{label}: {output}", unit="img", leave=False) as bar:
            for batch in _batches(todo, self.batch_size):
                crops = [load(image) for image in batch]
                if output == "mask":
                    values = np.asarray(self.model.mask_probability(crops, aligned=True), dtype=np.float64)
                else:
                    embedded = self.model.embed(crops, route=output, aligned=True)  # type: ignore[arg-type]
                    values = _normalise(np.asarray(embedded))
                done.update(zip(batch, values))
                bar.update(len(batch))

    def get(self, output: Output, images: Sequence[Path]) -> np.ndarray:
        return np.stack([self.outputs[output][image] for image in images])


@dataclass(frozen=True)
class MethodScores:
    scores: np.ndarray  # cosine similarity per pair
    routes: np.ndarray  # "full" or "partial" per pair
    mask_probability: dict[Path, float] | None  # per image, for routed methods


def score_pairs(method: Method, evalset: EvalSet, cache: FeatureCache,
                mask_threshold: float = DEFAULT_MASK_THRESHOLD) -> MethodScores:
    """Scores of ``method`` on ``evalset``; a routed method routes by ``mask_threshold`` (the bundle's)."""
    lefts = [p.left for p in evalset.pairs]
    rights = [p.right for p in evalset.pairs]
    label = f"{method.name} {evalset.name}"
    probabilities: dict[Path, float] | None = None
    if method.routed:
        cache.compute("mask", evalset.images, evalset.load, label)
        probabilities = {image: float(cache.outputs["mask"][image]) for image in evalset.images}
        masked_pair = partial_route(np.array([probabilities[a] for a in lefts]),
                                    np.array([probabilities[b] for b in rights]), mask_threshold)
        routes = np.where(masked_pair, "partial", "full")
    else:
        routes = np.full(len(lefts), method.mode)
    scores = np.zeros(len(lefts))
    for route in ("full", "partial"):
        chosen = np.flatnonzero(routes == route)
        if len(chosen) == 0:
            continue
        left = [lefts[i] for i in chosen]
        right = [rights[i] for i in chosen]
        cache.compute(route, left + right, evalset.load, label)  # type: ignore[arg-type]
        scores[chosen] = np.sum(cache.get(route, left) * cache.get(route, right), axis=1)  # type: ignore[arg-type]
    return MethodScores(scores=scores, routes=routes, mask_probability=probabilities)


def _normalise(embeddings: np.ndarray) -> np.ndarray:
    # The runtime already L2-normalises; doing it again is harmless and keeps scores cosines regardless.
    embeddings = embeddings.astype(np.float64)
    norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
    return embeddings / np.maximum(norms, 1e-12)


def _batches(items: list[Path], size: int) -> Iterator[list[Path]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]

"""The routed pipeline, once: classify every face, route by the bundle's calibrated mask threshold, run E_F and
E_P concurrently on their own rows, L2-normalise. ``Verifier`` (pairs, probes, gallery templates), evaluation
scoring and the service all compute through it; the rule itself is ``bfm_deploy.routing``'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from .backends import Backend
from .bundle import Bundle
from .routing import Route, case_of, is_masked, mask_probability, route_of_case, route_of_face
from .tensor import l2_normalise, preprocess

Network = Literal["classifier", "full", "partial"]


@dataclass(frozen=True)
class PairOutputs:
    """Pairs through the routed pipeline: per pair its faces' mask probabilities, its case, route and score."""

    probabilities: np.ndarray  # N x 2
    cases: list[int]
    routes: list[Route]
    scores: np.ndarray  # N cosine similarities, float32


@dataclass(frozen=True)
class FaceOutputs:
    """Faces embedded by the extractor their own mask state calls for."""

    probabilities: np.ndarray  # N
    routes: list[Route]
    embeddings: list[np.ndarray]  # L2-normalised, one per face


@dataclass(frozen=True)
class BothOutputs:
    """Faces through the classifier and both extractors (a gallery template matches on either route)."""

    probabilities: np.ndarray  # N
    masked: np.ndarray  # N bools at the pipeline's mask threshold
    full: np.ndarray  # N x D, L2-normalised
    partial: np.ndarray


class RoutedPipeline:
    """A bundle's three networks on one backend, over aligned BGR uint8 crops.

    ``batch_size`` bounds what one network call sees where the caller passes more faces than that
    (``run``, ``both``); pair and face batches are sized by their callers.
    """

    def __init__(self, bundle: Bundle, backend: Backend, batch_size: int, mask_threshold: float) -> None:
        self.bundle = bundle
        self.backend = backend
        self.batch_size = batch_size
        self.mask_threshold = mask_threshold

    def tensor(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """The networks' input for ``crops``: the normalised float tensor, or the uint8 crops themselves where the
        backend normalises on its device (``Backend.takes_uint8``: a quarter of the bytes to copy). Either is
        indexed by face along its first axis."""
        if self.backend.takes_uint8:
            return np.stack(crops) if len(crops) else np.zeros((0, *self.bundle.input.size, 3), np.uint8)
        return preprocess(crops, self.bundle.input.mean, self.bundle.input.std)

    def infer(self, network: Network, tensor: np.ndarray) -> np.ndarray:
        if tensor.dtype == np.uint8:
            return self.backend.infer_crops(network, tensor, self.bundle.input.mean, self.bundle.input.std)
        return self.backend.infer(network, tensor)

    def infer_concurrent(self, jobs: dict[Any, np.ndarray]) -> dict[Any, np.ndarray]:
        if any(t.dtype == np.uint8 for t in jobs.values()):
            return self.backend.infer_concurrent_crops(jobs, self.bundle.input.mean, self.bundle.input.std)
        return self.backend.infer_concurrent(jobs)

    def run(self, network: Network, tensor: np.ndarray) -> np.ndarray:
        """One network over any number of faces, ``batch_size`` at a time."""
        outputs = [self.infer(network, tensor[i : i + self.batch_size])
                   for i in range(0, len(tensor), self.batch_size)]
        return np.concatenate(outputs) if outputs else np.zeros((0, 0), np.float32)

    def pairs(self, crops: Sequence[np.ndarray]) -> PairOutputs:
        """``crops`` as pairs (0 and 1, 2 and 3, ...) in one batch: every face through the classifier in one call,
        then each pair's route through its extractor, E_F and E_P concurrently."""
        tensor = self.tensor(crops)
        probs = mask_probability(self.infer("classifier", tensor)).reshape(-1, 2)
        masked = is_masked(probs, self.mask_threshold)
        cases = [case_of(bool(m[0]), bool(m[1])) for m in masked]
        routes = [route_of_case(case) for case in cases]
        members: dict[Route, list[int]] = {"full": [], "partial": []}
        for i, route in enumerate(routes):
            members[route].append(i)
        jobs = {route: tensor[np.array([[2 * i, 2 * i + 1] for i in idx]).reshape(-1)]
                for route, idx in members.items() if idx}
        outputs = self.infer_concurrent(jobs)
        scores = np.zeros(len(routes), np.float32)
        for route, idx in members.items():
            if idx:
                emb = l2_normalise(outputs[route]).reshape(len(idx), 2, -1)
                scores[idx] = np.einsum("nd,nd->n", emb[:, 0], emb[:, 1])
        return PairOutputs(probs, cases, routes, scores)

    def faces(self, crops: Sequence[np.ndarray]) -> FaceOutputs:
        """Each face embedded by the extractor its own mask state calls for (E_P when masked), in one batch."""
        tensor = self.tensor(crops)
        probs = mask_probability(self.infer("classifier", tensor))
        routes = [route_of_face(bool(m)) for m in is_masked(probs, self.mask_threshold)]
        members = {route: [i for i, r in enumerate(routes) if r == route] for route in ("full", "partial")}
        outputs = self.infer_concurrent({route: tensor[idx] for route, idx in members.items() if idx})
        embeddings: dict[int, np.ndarray] = {}
        for route, idx in members.items():
            if idx:
                embeddings.update(zip(idx, l2_normalise(outputs[route])))
        return FaceOutputs(probs, routes, [embeddings[i] for i in range(len(routes))])

    def both(self, crops: Sequence[np.ndarray]) -> BothOutputs:
        """Every face through the classifier and both extractors, ``batch_size`` at a time."""
        probs, masked, full, partial = [], [], [], []
        for start in range(0, len(crops), self.batch_size):
            tensor = self.tensor(crops[start : start + self.batch_size])
            chunk_probs = mask_probability(self.infer("classifier", tensor))
            outputs = self.infer_concurrent({"full": tensor, "partial": tensor})
            probs.append(chunk_probs)
            masked.append(is_masked(chunk_probs, self.mask_threshold))
            full.append(l2_normalise(outputs["full"]))
            partial.append(l2_normalise(outputs["partial"]))
        if not probs:
            empty = np.zeros((0, self.bundle.embedding_size), np.float32)
            return BothOutputs(np.zeros(0, np.float32), np.zeros(0, bool), empty, empty)
        return BothOutputs(np.concatenate(probs), np.concatenate(masked), np.concatenate(full), np.concatenate(partial))

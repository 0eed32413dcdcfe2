"""Evaluate methods on evaluation sets: scores -> cross-validated metrics, mask accuracy, bundle thresholds."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..bundle import Bundle
from .methods import Method
from ..metrics import evaluate_scores, mask_accuracy
from .protocols import EvalSet
from .report import MethodResult
from .scoring import FaceModel, FeatureCache, score_pairs

ModelFactory = Callable[[Bundle], FaceModel]


@dataclass
class LoadedBundle:
    bundle: Bundle
    cache: FeatureCache


def load_bundles(methods: list[Method], open_model: ModelFactory, batch_size: int) -> dict[Path, LoadedBundle]:
    """One model and feature cache per distinct bundle folder, shared by the methods that name it."""
    loaded: dict[Path, LoadedBundle] = {}
    for method in methods:
        key = method.bundle.resolve()
        if key not in loaded:
            bundle = Bundle.load(key)
            loaded[key] = LoadedBundle(bundle, FeatureCache(open_model(bundle), batch_size))
    return loaded


def evaluate(evalsets: list[EvalSet], methods: list[Method], bundles: dict[Path, LoadedBundle]) -> list[MethodResult]:
    results = []
    for evalset in evalsets:
        same, folds = evalset.arrays()
        cases = evalset.cases()
        for method in methods:
            loaded = bundles[method.bundle.resolve()]
            scores = score_pairs(method, evalset, loaded.cache, loaded.bundle.mask_threshold)
            metrics = evaluate_scores(scores.scores, same, folds, cases)
            thresholds = np.array([loaded.bundle.threshold(str(route)) for route in scores.routes])
            results.append(
                MethodResult(
                    variant=evalset.name,
                    method=method.name,
                    metrics=metrics,
                    mask_accuracy=_mask_accuracy(evalset, scores.mask_probability, loaded.bundle.mask_threshold),
                    scores=scores,
                    same=same,
                    bundle_threshold_accuracy=float(np.mean((scores.scores >= thresholds) == same)),
                )
            )
    return results


def _mask_accuracy(evalset: EvalSet, probabilities: dict[Path, float] | None, threshold: float) -> float | None:
    """Classifier accuracy over the set's unique labelled images (Table III); None without a classifier."""
    if probabilities is None:
        return None
    labelled = [image for image in evalset.images if image in evalset.masked]
    if not labelled:
        return None
    return mask_accuracy(
        np.array([probabilities[image] for image in labelled]), np.array([evalset.masked[i] for i in labelled]),
        threshold,
    )

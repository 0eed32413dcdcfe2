"""The routing rule of the paper's inference (Sec. III-F), defined once for the runtime, evaluation and export.

A face is masked when the classifier's softmax probability of "masked" (logit index ``MASKED``) reaches the
bundle's mask threshold; a pair goes to the partial-face extractor E_P when either face is masked, else to E_F.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from .contract import MASKED

DEFAULT_MASK_THRESHOLD = 0.5  # argmax of the two logits: bundles without a calibrated threshold

Route = Literal["full", "partial"]
CASE_NAMES = {1: "both unmasked", 2: "one masked", 3: "both masked"}


def mask_probability(logits: np.ndarray) -> np.ndarray:
    """Softmax probability of "masked" per row of ``N x 2`` logits."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return (exp[:, MASKED] / exp.sum(axis=1)).astype(np.float32)


def is_masked(probability: np.ndarray | float, threshold: float = DEFAULT_MASK_THRESHOLD) -> np.ndarray:
    return np.asarray(probability) >= threshold


def partial_route(probability_a: np.ndarray, probability_b: np.ndarray, threshold: float) -> np.ndarray:
    """True where a pair goes to E_P (either face masked)."""
    return is_masked(probability_a, threshold) | is_masked(probability_b, threshold)


def case_of(masked_a: bool, masked_b: bool) -> int:
    """The paper's matching case: 1 both unmasked, 2 one masked, 3 both masked."""
    return 1 + int(masked_a) + int(masked_b)


def route_of_case(case: int) -> Route:
    return "full" if case == 1 else "partial"


def route_of_face(masked: bool) -> Route:
    """The extractor a single face's own mask state calls for (what a gallery template or a probe is embedded
    with first)."""
    return "partial" if masked else "full"


def calibrate_mask_threshold(unmasked: np.ndarray, masked: np.ndarray) -> tuple[float, float]:
    """The threshold maximising balanced accuracy (the mean of both classes' accuracies) on held-out
    probabilities of unmasked and masked faces, and that accuracy. Ties go to the threshold nearest 0.5,
    placed midway between the two neighbouring probabilities."""
    unmasked, masked = np.asarray(unmasked, np.float64), np.asarray(masked, np.float64)
    if not len(unmasked) or not len(masked):
        raise ValueError("mask threshold calibration needs unmasked and masked faces")
    values = np.unique(np.concatenate([unmasked, masked]))
    candidates = np.concatenate([[values[0] / 2], (values[:-1] + values[1:]) / 2, [(values[-1] + 1) / 2]])
    candidates = candidates[(candidates > 0) & (candidates < 1)]
    if not len(candidates):
        return DEFAULT_MASK_THRESHOLD, 0.5
    true_negative = np.searchsorted(np.sort(unmasked), candidates, side="left") / len(unmasked)
    true_positive = 1.0 - np.searchsorted(np.sort(masked), candidates, side="left") / len(masked)
    balanced = (true_negative + true_positive) / 2
    best = balanced.max()
    ties = np.flatnonzero(balanced >= best - 1e-12)
    choice = ties[np.argmin(np.abs(candidates[ties] - DEFAULT_MASK_THRESHOLD))]
    return float(candidates[choice]), float(best)

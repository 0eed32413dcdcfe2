"""Verification metrics of the paper's protocol, on plain numpy arrays of pair scores.

Scores are similarities (higher = more alike, e.g. cosine); a pair is predicted "same" when
``score >= threshold``. Accuracy follows the insightface ``verification.py`` protocol: the data are cut
into folds, each fold is scored with the accuracy-maximising threshold of the other folds, and the mean
and (population) standard deviation of the fold accuracies are reported. Unlike insightface's fixed
threshold grid, every gap between two distinct scores is a candidate, so the optimum is exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import BfmError
from .routing import DEFAULT_MASK_THRESHOLD, is_masked

DEFAULT_FOLDS = 10
CASES = (1, 2, 3)  # 1: both unmasked, 2: one masked, 3: both masked


@dataclass(frozen=True)
class Roc:
    """ROC operating points from the strictest threshold (nothing accepted) to the loosest (all accepted)."""

    thresholds: np.ndarray  # the threshold that yields each point (score >= threshold is accepted)
    far: np.ndarray  # false accept rate = false positives / different pairs
    tar: np.ndarray  # true accept rate = true positives / same pairs


@dataclass(frozen=True)
class CrossValidation:
    fold_accuracies: np.ndarray  # accuracy on each held-out fold, in [0, 1]
    fold_thresholds: np.ndarray  # the threshold chosen on the other folds, per fold
    predictions: np.ndarray  # bool per pair: the prediction made with its fold's threshold

    @property
    def accuracy(self) -> float:
        return float(self.fold_accuracies.mean())

    @property
    def std(self) -> float:
        # Population std (ddof=0), as insightface's verification.py reports it.
        return float(self.fold_accuracies.std())


def _check(scores: np.ndarray, same: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64)
    same = np.asarray(same, dtype=bool)
    if scores.ndim != 1 or scores.shape != same.shape:
        raise BfmError(f"scores and labels must be 1-D of equal length, got {scores.shape} and {same.shape}")
    if not np.all(np.isfinite(scores)):
        raise BfmError("scores contain NaN or infinity")
    return scores, same


def roc_curve(scores: np.ndarray, same: np.ndarray) -> Roc:
    """Every distinct operating point: one per gap between distinct scores, plus both extremes."""
    scores, same = _check(scores, same)
    positives, negatives = int(same.sum()), int((~same).sum())
    if positives == 0 or negatives == 0:
        raise BfmError("a ROC needs both same and different pairs")
    order = np.argsort(-scores, kind="stable")
    ranked, labels = scores[order], same[order]
    # Accepting the top k pairs is only reachable where the k-th and (k+1)-th scores differ.
    last_of_run = np.flatnonzero(np.append(ranked[:-1] > ranked[1:], True))
    accepted = last_of_run + 1
    true_pos = np.cumsum(labels)[last_of_run]
    false_pos = accepted - true_pos
    thresholds = np.concatenate([[np.nextafter(ranked[0], np.inf)], ranked[last_of_run]])
    far = np.concatenate([[0.0], false_pos / negatives])
    tar = np.concatenate([[0.0], true_pos / positives])
    return Roc(thresholds=thresholds, far=far, tar=tar)


def best_threshold(scores: np.ndarray, same: np.ndarray) -> float:
    """The threshold with the highest accuracy on these pairs.

    It is placed in the middle of the gap between the last accepted and the first rejected score, so a
    held-out pair that falls in the gap is decided by the nearer side. Ties go to the strictest threshold.
    """
    scores, same = _check(scores, same)
    if len(scores) == 0:
        raise BfmError("cannot choose a threshold from zero pairs")
    order = np.argsort(-scores, kind="stable")
    ranked, labels = scores[order], same[order]
    n = len(ranked)
    positives = int(labels.sum())
    # k = number of top-ranked pairs accepted, 0..n; valid only at the ends and between distinct scores.
    k = np.arange(n + 1)
    true_pos = np.concatenate([[0], np.cumsum(labels)])
    true_neg = (n - positives) - (k - true_pos)
    correct = true_pos + true_neg
    valid = np.ones(n + 1, dtype=bool)
    valid[1:n] = ranked[:-1] > ranked[1:]
    best = int(np.flatnonzero(valid)[np.argmax(correct[valid])])
    if best == 0:
        return float(np.nextafter(ranked[0], np.inf))
    if best == n:
        return float(ranked[-1])
    return float((ranked[best - 1] + ranked[best]) / 2.0)


def contiguous_folds(count: int, folds: int = DEFAULT_FOLDS) -> np.ndarray:
    """Fold index per pair for ``folds`` contiguous blocks, the first ``count % folds`` one pair longer.

    This is what insightface's ``KFold(n_splits=10, shuffle=False)`` does for pair lists without folds.
    """
    if count < folds:
        raise BfmError(f"{count} pairs cannot be split into {folds} folds")
    sizes = np.full(folds, count // folds)
    sizes[: count % folds] += 1
    return np.repeat(np.arange(folds), sizes)


def cross_validate(scores: np.ndarray, same: np.ndarray, folds: np.ndarray) -> CrossValidation:
    """Accuracy per held-out fold with the threshold chosen on all other folds."""
    scores, same = _check(scores, same)
    folds = np.asarray(folds)
    if folds.shape != scores.shape:
        raise BfmError("one fold index per pair is required")
    fold_ids = np.unique(folds)
    if len(fold_ids) < 2:
        raise BfmError("cross-validation needs at least two folds")
    accuracies, thresholds = [], []
    predictions = np.zeros(len(scores), dtype=bool)
    for fold in fold_ids:
        test = folds == fold
        threshold = best_threshold(scores[~test], same[~test])
        predicted = scores[test] >= threshold
        predictions[test] = predicted
        accuracies.append(float(np.mean(predicted == same[test])))
        thresholds.append(threshold)
    return CrossValidation(np.array(accuracies), np.array(thresholds), predictions)


def equal_error_rate(roc: Roc) -> float:
    """The rate where false accepts equal false rejects, interpolated linearly between ROC points."""
    frr = 1.0 - roc.tar
    gap = frr - roc.far  # starts at 1 (nothing accepted), ends at -1 (everything accepted): it crosses 0
    cross = int(np.flatnonzero(gap <= 0)[0])
    if cross == 0 or gap[cross] == 0:
        return float(roc.far[cross])
    before, after = gap[cross - 1], gap[cross]
    t = before / (before - after)
    return float(roc.far[cross - 1] + t * (roc.far[cross] - roc.far[cross - 1]))


def tar_at_far(roc: Roc, far: float) -> float:
    """The highest true accept rate among operating points whose false accept rate is at most ``far``.

    With N different pairs the smallest non-zero FAR is 1/N, so for N < 1/far this is the TAR at zero
    false accepts.
    """
    allowed = roc.far <= far + 1e-12
    return float(roc.tar[allowed].max())


def case_accuracies(predictions: np.ndarray, same: np.ndarray, cases: np.ndarray | None) -> dict[str, float | None]:
    """Accuracy of the cross-validated predictions per matching case; ``None`` where a case has no pairs."""
    result: dict[str, float | None] = {str(c): None for c in CASES}
    if cases is None:
        return result
    cases = np.asarray(cases)
    correct = np.asarray(predictions, dtype=bool) == np.asarray(same, dtype=bool)
    for case in CASES:
        chosen = cases == case
        if chosen.any():
            result[str(case)] = float(correct[chosen].mean())
    return result


def mask_accuracy(mask_probabilities: np.ndarray, masked: np.ndarray, threshold: float = DEFAULT_MASK_THRESHOLD) -> float:
    """Share of images whose classifier decision (masked when the probability reaches ``threshold``, the
    bundle's routing rule) matches the label."""
    probabilities = np.asarray(mask_probabilities, dtype=np.float64)
    masked = np.asarray(masked, dtype=bool)
    if probabilities.shape != masked.shape or len(masked) == 0:
        raise BfmError("mask accuracy needs one probability per labelled image")
    return float(np.mean(is_masked(probabilities, threshold) == masked))


@dataclass(frozen=True)
class VerificationMetrics:
    """Everything one method reports on one set of pairs; rates in [0, 1]."""

    accuracy: float
    std: float
    eer: float
    tar_at_far_1e3: float
    cases: dict[str, float | None]
    roc: Roc
    cross_validation: CrossValidation


def evaluate_scores(
    scores: np.ndarray, same: np.ndarray, folds: np.ndarray | None = None, cases: np.ndarray | None = None
) -> VerificationMetrics:
    """All verification metrics; ``folds`` defaults to 10 contiguous folds."""
    scores, same = _check(scores, same)
    if folds is None:
        folds = contiguous_folds(len(scores))
    cv = cross_validate(scores, same, folds)
    roc = roc_curve(scores, same)
    return VerificationMetrics(
        accuracy=cv.accuracy,
        std=cv.std,
        eer=equal_error_rate(roc),
        tar_at_far_1e3=tar_at_far(roc, 1e-3),
        cases=case_accuracies(cv.predictions, same, cases),
        roc=roc,
        cross_validation=cv,
    )

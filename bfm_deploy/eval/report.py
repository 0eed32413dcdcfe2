"""Results of one ``bfm-eval`` run: the JSON document, the terminal table and the ROC/histogram figure."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..metrics import VerificationMetrics
from .scoring import MethodScores

from ..contract import ROUTES


@dataclass(frozen=True)
class MethodResult:
    """One method on one evaluation set; rates in [0, 1]."""

    variant: str  # evaluation set name, e.g. "lfw" or "masked-lfw/case3"
    method: str
    metrics: VerificationMetrics
    mask_accuracy: float | None  # None for single-extractor methods or sets without mask labels
    scores: MethodScores
    same: np.ndarray
    bundle_threshold_accuracy: float  # accuracy at the bundle manifest's per-route thresholds


def result_key(result: MethodResult, variants: int, methods: list[str]) -> str:
    """``NAME`` for a set with one variant; the variant (single bundle) or ``VARIANT/NAME`` otherwise."""
    if variants == 1:
        return result.method
    if methods == ["bundle"]:
        return result.variant
    return f"{result.variant}/{result.method}"


def _percent(value: float | None) -> float | None:
    return None if value is None else round(100.0 * value, 4)


def to_json(dataset: str, pairs: int, results: list[MethodResult]) -> dict[str, Any]:
    variants = list(dict.fromkeys(r.variant for r in results))
    methods = list(dict.fromkeys(r.method for r in results))
    document: dict[str, Any] = {"dataset": dataset, "pairs": pairs, "results": {}}
    for r in results:
        document["results"][result_key(r, len(variants), methods)] = {
            "accuracy": _percent(r.metrics.accuracy),
            "std": _percent(r.metrics.std),
            "eer": _percent(r.metrics.eer),
            "tar_at_far_1e-3": _percent(r.metrics.tar_at_far_1e3),
            "cases": {case: _percent(value) for case, value in r.metrics.cases.items()},
            "mask_accuracy": _percent(r.mask_accuracy),
        }
    return document


def _cell(value: float | None, std: float | None = None) -> str:
    if value is None:
        return "-"
    return f"{100 * value:.2f} ± {100 * std:.2f}" if std is not None else f"{100 * value:.2f}"


def table(results: list[MethodResult]) -> str:
    """Rows: data set and its cases/metrics; columns: methods (all numbers in percent)."""
    methods = list(dict.fromkeys(r.method for r in results))
    variants = list(dict.fromkeys(r.variant for r in results))
    by = {(r.variant, r.method): r for r in results}
    rows: list[list[str]] = [["data set", "metric (%)", *methods]]
    for variant in variants:
        cells = [by[(variant, m)] for m in methods]
        n = len(cells[0].same)
        rows.append([f"{variant} ({n} pairs)", "accuracy", *(_cell(r.metrics.accuracy, r.metrics.std) for r in cells)])
        for case in ("1", "2", "3"):
            if any(r.metrics.cases[case] is not None for r in cells):
                rows.append(["", f"case {case}", *(_cell(r.metrics.cases[case]) for r in cells)])
        rows.append(["", "EER", *(_cell(r.metrics.eer) for r in cells)])
        rows.append(["", "TAR@FAR=1e-3", *(_cell(r.metrics.tar_at_far_1e3) for r in cells)])
        rows.append(["", "mask accuracy", *(_cell(r.mask_accuracy) for r in cells)])
        rows.append(["", "at bundle thresholds", *(_cell(r.bundle_threshold_accuracy) for r in cells)])
        rows.append(["", "pairs full/partial", *(_route_split(r) for r in cells)])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _route_split(result: MethodResult) -> str:
    routes = result.scores.routes
    return f"{int(np.sum(routes == 'full'))}/{int(np.sum(routes == 'partial'))}"


def write_plot(path: Path, results: list[MethodResult]) -> None:
    """ROC curves (one panel per evaluation set) and per-route score histograms (one panel per method)."""
    from ..plotting import pyplot, save_png

    plt = pyplot()
    methods = list(dict.fromkeys(r.method for r in results))
    variants = list(dict.fromkeys(r.variant for r in results))
    by = {(r.variant, r.method): r for r in results}
    cols = 1 + len(methods)
    fig, axes = plt.subplots(len(variants), cols, figsize=(4.2 * cols, 3.6 * len(variants)), squeeze=False)
    for row, variant in enumerate(variants):
        roc_axis = axes[row][0]
        for method in methods:
            r = by[(variant, method)]
            negatives = max(1, int(np.sum(~r.same)))
            # FAR 0 cannot sit on a log axis: draw it at half the smallest non-zero FAR.
            far = np.maximum(r.metrics.roc.far, 0.5 / negatives)
            label = f"{method} ({100 * r.metrics.accuracy:.2f}%)"
            roc_axis.plot(far, r.metrics.roc.tar, drawstyle="steps-post", label=label)
        roc_axis.set_xscale("log")
        roc_axis.set_xlabel("false accept rate")
        roc_axis.set_ylabel("true accept rate")
        roc_axis.set_title(f"{variant}: ROC")
        roc_axis.grid(True, which="both", alpha=0.3)
        roc_axis.legend(fontsize=7, loc="lower right")
        for col, method in enumerate(methods, start=1):
            _histogram(axes[row][col], by[(variant, method)])
    save_png(fig, path)


def _histogram(axis: Any, result: MethodResult) -> None:
    bins = np.linspace(-1.0, 1.0, 81)
    colours = {"full": ("tab:blue", "tab:orange"), "partial": ("tab:green", "tab:red")}
    for route in ROUTES:
        on_route = result.scores.routes == route
        for same, colour, kind in ((True, colours[route][0], "same"), (False, colours[route][1], "different")):
            chosen = result.scores.scores[on_route & (result.same == same)]
            if len(chosen):
                axis.hist(chosen, bins=bins, histtype="step", color=colour, label=f"{route} {kind} ({len(chosen)})")
    axis.set_title(f"{result.variant}: {result.method} scores by route", fontsize=9)
    axis.set_xlabel("cosine similarity")
    axis.set_ylabel("pairs")
    axis.legend(fontsize=7)

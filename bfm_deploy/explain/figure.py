"""Pictures of explanations: a map over its crop, a grid of pairs by method (Fig. 4's layout), faces by
extractor (Fig. 2's)."""

from __future__ import annotations

import os
from collections.abc import Sequence

import cv2
import numpy as np

from ..plotting import pyplot, save_png
from ..routing import CASE_NAMES
from .explainer import PairExplanation
from .regions import nose_row

# A map is shown up to this percentile of its own values: guided maps have a few very bright pixels, which
# would leave everything else dark if the maximum set the scale.
DISPLAY_PERCENTILE = 99.5
# Panels of 112-pixel crops are drawn near their own resolution (a 1.45-inch cell at 80 dpi): more pixels would
# show nothing the crop has, and the committed figures stay small.
CELL_INCHES, DPI = 1.45, 80


def heat(saliency: np.ndarray) -> np.ndarray:
    """The map scaled to 0-255 (uint8) by its own ``DISPLAY_PERCENTILE``."""
    top = float(np.percentile(saliency, DISPLAY_PERCENTILE))
    scaled = np.clip(saliency / top, 0, 1) if top > 0 else np.zeros_like(saliency)
    return (scaled * 255).astype(np.uint8)


def overlay(crop_bgr: np.ndarray, saliency: np.ndarray, alpha: float = 0.6) -> np.ndarray:
    """The map as a heat image (OpenCV's "inferno") blended over the grey crop; RGB uint8."""
    grey = cv2.cvtColor(cv2.cvtColor(crop_bgr, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
    coloured = cv2.applyColorMap(heat(saliency), cv2.COLORMAP_INFERNO)
    blended = cv2.addWeighted(coloured, alpha, grey, 1 - alpha, 0)
    return cv2.cvtColor(blended, cv2.COLOR_BGR2RGB)  # type: ignore[no-any-return]


def _nose_line(ax: object, height: int) -> None:
    ax.axhline(nose_row(height) - 0.5, color="white", linewidth=0.6, linestyle=":")  # type: ignore[attr-defined]


def _blank(ax: object) -> None:
    ax.set_xticks([])  # type: ignore[attr-defined]
    ax.set_yticks([])  # type: ignore[attr-defined]


def decision_line(pair: PairExplanation) -> str:
    verdict = "same" if pair.same else "different"
    relation = ">=" if pair.same else "<"
    return f"{verdict}: {pair.score:.3f} {relation} {pair.threshold:.3f} ({pair.route})"


def plot_pairs(pairs: Sequence[Sequence[PairExplanation]], path: str | os.PathLike[str],
               titles: Sequence[str] | None = None) -> None:
    """A grid: one column pair per image pair, the crops on top, then one row per method with both faces' maps
    (nose line dotted), its decision, score, threshold and route, and each map's mask-region share.
    ``pairs[j][m]`` is method ``m`` on pair ``j``; every pair must list the same methods."""
    plt = pyplot()
    methods = [p.method for p in pairs[0]]
    if any([p.method for p in column] != methods for column in pairs):
        raise ValueError("every pair must be explained by the same methods, in the same order")
    rows, cols = 1 + len(methods), 2 * len(pairs)
    fig, axes = plt.subplots(rows, cols, figsize=(CELL_INCHES * cols, (CELL_INCHES + 0.35) * rows), squeeze=False)
    for j, column in enumerate(pairs):
        first = column[0]
        head = titles[j] if titles else f"case {first.case} ({CASE_NAMES[first.case]})"
        for side, face in enumerate(first.faces):
            ax = axes[0][2 * j + side]
            ax.imshow(cv2.cvtColor(face.crop, cv2.COLOR_BGR2RGB))
            ax.set_xlabel(f"p(mask) {face.mask_probability:.2f}", fontsize=7)
            _blank(ax)
        axes[0][2 * j].set_title(head, fontsize=7, loc="left")
        for m, pair in enumerate(column, start=1):
            for side, face in enumerate(pair.faces):
                ax = axes[m][2 * j + side]
                ax.imshow(overlay(face.crop, face.saliency))
                _nose_line(ax, face.saliency.shape[0])
                ax.set_xlabel(f"below nose {face.mask_region_share:.0%}", fontsize=7)
                _blank(ax)
            axes[m][2 * j].set_title(decision_line(pair), fontsize=7, loc="left",
                                     color="tab:green" if pair.same else "tab:red")
    axes[0][0].set_ylabel("aligned", fontsize=8)
    for m, name in enumerate(methods, start=1):
        axes[m][0].set_ylabel(name, fontsize=8)
    save_png(fig, path, dpi=DPI)


def plot_faces(crops: Sequence[np.ndarray], maps: dict[str, np.ndarray], labels: Sequence[str],
               path: str | os.PathLike[str]) -> None:
    """Faces by extractor (Fig. 2's layout): one row per face, its crop, then ``maps[name][i]`` for each
    extractor ``name`` with its mask-region share."""
    from .regions import mask_region_share

    plt = pyplot()
    rows, cols = len(crops), 1 + len(maps)
    fig, axes = plt.subplots(rows, cols, figsize=(CELL_INCHES * cols + 0.3, (CELL_INCHES + 0.25) * rows), squeeze=False)
    for i, crop in enumerate(crops):
        axes[i][0].imshow(cv2.cvtColor(crop, cv2.COLOR_BGR2RGB))
        axes[i][0].set_ylabel(labels[i], fontsize=8)
        _blank(axes[i][0])
        for k, (name, stack) in enumerate(maps.items(), start=1):
            ax = axes[i][k]
            ax.imshow(overlay(crop, stack[i]))
            _nose_line(ax, stack[i].shape[0])
            ax.set_xlabel(f"below nose {float(mask_region_share(stack[i])):.0%}", fontsize=7)
            _blank(ax)
            if i == 0:
                ax.set_title(name, fontsize=8)
    save_png(fig, path, dpi=DPI)

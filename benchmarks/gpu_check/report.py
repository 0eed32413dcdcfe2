"""The check's report: a text table on stdout, ``gpu_check.json`` and ``gpu_check.png`` in the output folder.

The PNG uses matplotlib where it is installed and falls back to OpenCV drawing (a GPU machine may have only
the runtime's dependencies).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from bfm_deploy.atomic import atomic_write_text
from bfm_deploy.plotting import pyplot, save_png


def write_json(path: Path, report: dict[str, Any]) -> None:
    # written after each part: a run killed mid-write keeps the previous complete report, never half of one
    atomic_write_text(path, json.dumps(report, indent=2, default=_plain) + "\n")


def _plain(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def _series(timings: list[dict[str, Any]]) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """model -> variant -> [(batch, faces/s)]"""
    out: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for t in timings:
        out.setdefault(t["model"], {}).setdefault(t["variant"], []).append((t["batch"], t["faces_per_s"]))
    return out


def write_png(path: Path, timings: list[dict[str, Any]], title: str) -> None:
    series = _series(timings) or {"no throughput figures (see 'crashed' in the JSON)": {}}
    try:
        plt = pyplot()
    except ImportError:
        _write_png_cv2(path, series, title)
        return
    fig, axes = plt.subplots(1, len(series), figsize=(6.5 * len(series), 4.8), squeeze=False)
    for ax, (model, variants) in zip(axes[0], series.items()):
        for variant, points in variants.items():
            ax.plot(*zip(*points), marker="o", label=variant)
        ax.set(xlabel="batch", ylabel="faces/s", title=f"{model}")
        if variants:
            ax.set(xscale="log", yscale="log")
            ax.legend(fontsize=7)
        ax.grid(True, which="both", alpha=0.3)
    fig.suptitle(title, fontsize=9)
    save_png(fig, path)


def _write_png_cv2(path: Path, series: dict[str, dict[str, list[tuple[int, float]]]], title: str) -> None:
    import cv2

    width, height, margin = 640, 480, 60
    panels = []
    colours = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
               (227, 119, 194), (127, 127, 127)]
    for model, variants in series.items():
        img = np.full((height, width, 3), 255, np.uint8)
        points = [p for pts in variants.values() for p in pts] or [(1, 1.0)]
        xs = [math.log2(b) for b, _ in points]
        ys = [math.log10(max(v, 1e-3)) for _, v in points]
        x0, x1, y0, y1 = min(xs), max(xs) or 1.0, min(ys), max(ys)

        def at(b: int, v: float, x0: float = x0, x1: float = x1, y0: float = y0, y1: float = y1) -> tuple[int, int]:
            x = margin + (math.log2(b) - x0) / max(x1 - x0, 1e-9) * (width - 2 * margin)
            y = height - margin - (math.log10(max(v, 1e-3)) - y0) / max(y1 - y0, 1e-9) * (height - 2 * margin)
            return int(x), int(y)

        for i, (variant, pts) in enumerate(variants.items()):
            colour = colours[i % len(colours)]
            cv2.polylines(img, [np.array([at(b, v) for b, v in pts], np.int32)], False, colour, 2)
            cv2.putText(img, variant, (margin, 20 + 14 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.4, colour, 1)
        cv2.putText(img, f"{model}: faces/s (log) vs batch (log2), {10 ** y0:.0f}..{10 ** y1:.0f}",
                    (margin, height - 20), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1)
        panels.append(img)
    canvas = np.hstack(panels) if panels else np.full((height, width, 3), 255, np.uint8)
    cv2.putText(canvas, title[:120], (10, height - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 0, 0), 1)
    if not cv2.imwrite(str(path), canvas):
        raise OSError(f"cannot write {path}")


def print_tables(report: dict[str, Any], echo: Any) -> None:
    echo(f"\n{'path':28} {'check':36} {'n':>5} {'min cos':>8} {'differ':>6} {'ties':>5} {'lm px':>6}  result")
    for r in report["parity"]:
        cos = "" if r["min_cosine"] is None else f"{r['min_cosine']:.5f}"
        lm = "" if r["max_landmark_px"] is None else f"{r['max_landmark_px']:.3f}"
        echo(f"{r['path']:28} {r['check']:36} {r['compared']:5d} {cos:>8} {r['decisions_differ']:6d} "
             f"{r['near_ties']:5d} {lm:>6}  {'ok' if r['ok'] else 'FAIL' if r['required'] else 'fail (informational)'}")
    echo(f"\n{'model':5} {'variant':28} {'replaces':28} " + " ".join(f"{b:>7}" for b in report["batches"]))
    for model, variants in _series(report["throughput"]).items():
        for variant, points in variants.items():
            replaces = next(t["replaces"] for t in report["throughput"] if t["variant"] == variant)
            echo(f"{model:5} {variant:28} {replaces:28} " + " ".join(f"{v:7.0f}" for _, v in points))
    for name, value in report["pipeline"].items():
        echo(f"{name}: {value}")
    service = report["service"]
    if service.get("measured"):
        from bfm_deploy.bench.serve_load import format_serve_table

        echo("\n" + format_serve_table(service))
    else:
        echo(f"\nservice: not measured: {service.get('why')}")
    for target in report["targets"]:
        value = "none (crashed)" if target["value"] is None else f"{target['value']:.4g}"
        echo(f"target {target['what']}: {value} (need {target['need']}) "
             f"{'met' if target['met'] else 'MISSED'}")

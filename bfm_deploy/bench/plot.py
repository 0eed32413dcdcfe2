"""PNG of latency and throughput against batch size (drawn with ``bfm_deploy.plotting``)."""

from __future__ import annotations

import os
from collections import defaultdict
from typing import Any

from ..plotting import pyplot, save_png


def plot_sweep(points: list[dict[str, Any]], path: str | os.PathLike[str], title: str) -> None:
    """Two panels sharing a log2 batch axis: p50 latency (with the p90-p99 band) and faces/s."""
    plt = pyplot()
    series: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for point in points:
        series[f"{point['network']} ({point['backend']})"].append(point)
    fig, (ax_lat, ax_tp) = plt.subplots(1, 2, figsize=(11, 4.2))
    try:
        for label, pts in sorted(series.items()):
            pts = sorted(pts, key=lambda p: p["batch"])
            batches = [p["batch"] for p in pts]
            (line,) = ax_lat.plot(batches, [p["p50_ms"] for p in pts], marker="o", label=label)
            ax_lat.fill_between(
                batches, [p["p90_ms"] for p in pts], [p["p99_ms"] for p in pts], color=line.get_color(), alpha=0.15
            )
            ax_tp.plot(batches, [p["faces_per_s"] for p in pts], marker="o", label=label, color=line.get_color())
        for ax in (ax_lat, ax_tp):
            ax.set_xscale("log", base=2)
            ax.set_xlabel("batch size (faces)")
            ax.grid(True, which="both", alpha=0.3)
        ax_lat.set_yscale("log")
        ax_tp.set_yscale("log")  # the classifier is ~100x faster than an extractor: linear would flatten them
        ax_lat.set_ylabel("latency per call, ms (line p50, band p90-p99)")
        ax_tp.set_ylabel("throughput, faces/s")
        ax_tp.legend(fontsize=8)
        fig.suptitle(title, fontsize=10)
    except BaseException:
        plt.close(fig)
        raise
    save_png(fig, path)

"""A run's training report: ``report.json`` (summary) and ``report.png`` (loss and validation curves).

``bfm-train`` writes both into the run directory after every validation and at the end of the run, so a run
killed mid-way still has a report of what it did. Both come from ``metrics.jsonl`` alone, so the report of any
finished or interrupted run can be made again:

    bfm-train --report work_dirs/demo_mbf [--report work_dirs/baseline2_mbf ...]
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from bfm_deploy.atomic import atomic_write_text
from bfm_deploy.errors import BfmError

REPORT_FORMAT = "bfm-train-report/1"


def read_metrics(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(training rows, validation rows) of a ``metrics.jsonl``, one row per step (a resumed step's last wins)."""
    train: dict[int, dict[str, Any]] = {}
    val: dict[int, dict[str, Any]] = {}
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # the half-written last line of a killed run
        if not isinstance(row, dict) or "step" not in row:
            continue
        if "loss" in row:
            train[int(row["step"])] = row
        elif any(k.startswith("val_") for k in row):
            val[int(row["step"])] = row
    return [train[s] for s in sorted(train)], [val[s] for s in sorted(val)]


def summarize(run_dir: Path) -> dict[str, Any]:
    """The JSON summary of one run: its recipe and schedule, the last losses, every validation, the speed."""
    metrics = run_dir / "metrics.jsonl"
    if not metrics.is_file():
        raise BfmError(f"{run_dir}: no metrics.jsonl (not a bfm-train run directory)")
    train, val = read_metrics(metrics)
    config: dict[str, Any] = {}
    config_file = run_dir / "config.yaml"
    if config_file.is_file():
        import yaml

        config = yaml.safe_load(config_file.read_text()) or {}
    last = train[-1] if train else {}
    val_keys = sorted({k for row in val for k in row if k.endswith("_acc")})
    return {
        "format": REPORT_FORMAT,
        "run_dir": str(run_dir),
        "recipe": config.get("recipe"),
        "epochs": config.get("epochs"),
        "batch_size": config.get("batch_size"),
        "loss_settings": config.get("loss"),
        "steps": last.get("step", 0),
        "last_epoch": last.get("epoch"),
        "last_losses": {k: v for k, v in last.items() if k.startswith("loss")},
        "median_images_per_s": round(statistics.median(r["images_per_s"] for r in train), 2) if train else None,
        "validation": [{k: row[k] for k in ("step", "epoch", *val_keys) if k in row} for row in val],
        "best_validation": {k: max(row[k] for row in val if k in row) for k in val_keys},
    }


def plot(run_dir: Path, out: Path) -> None:
    """Loss terms (log scale) against step beside validation accuracies against step."""
    from bfm_deploy.plotting import pyplot, save_png

    plt = pyplot()
    train, val = read_metrics(run_dir / "metrics.jsonl")
    fig, (loss_ax, val_ax) = plt.subplots(1, 2, figsize=(10, 3.6))
    steps = [r["step"] for r in train]
    for key in sorted({k for r in train for k in r if k.startswith("loss")}):
        loss_ax.plot(steps, [r.get(key, float("nan")) for r in train], label=key)
    loss_ax.set(title=f"{run_dir.name}: training loss", xlabel="step", yscale="log")
    for key in sorted({k for r in val for k in r if k.endswith("_acc")}):
        val_ax.plot([r["step"] for r in val], [100 * r[key] for r in val], marker="o", label=key)
    val_ax.set(title="validation accuracy (%)", xlabel="step")
    for ax in (loss_ax, val_ax):
        if ax.lines:
            ax.legend(fontsize=7)
    save_png(fig, out)


def write_report(run_dir: Path) -> tuple[Path, Path]:
    """``report.json`` and ``report.png`` in ``run_dir``, each written atomically."""
    summary = summarize(run_dir)
    json_path, png_path = run_dir / "report.json", run_dir / "report.png"
    atomic_write_text(json_path, json.dumps(summary, indent=2) + "\n")
    plot(run_dir, png_path)
    return json_path, png_path

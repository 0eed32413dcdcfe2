"""Plot loss curves from bfm-train ``metrics.jsonl`` files (one panel per run, one line per loss term).

    python tools/plot_training.py benchmarks/results/training/*.metrics.jsonl --out benchmarks/results/training/loss.png
"""

from __future__ import annotations

import json
from pathlib import Path

import click
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from bfm_deploy.atomic import atomic_path  # noqa: E402
from bfm_deploy.cli_support import one_line_errors  # noqa: E402


@click.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), required=True)
@one_line_errors
def main(files: tuple[Path, ...], out: Path) -> None:
    fig, axes = plt.subplots(1, len(files), figsize=(5 * len(files), 3.6), squeeze=False)
    for ax, path in zip(axes[0], files):
        # Training lines carry a "loss"; validation lines carry "val_*" keys and are skipped here.
        rows = [r for r in map(json.loads, path.read_text().splitlines()) if "loss" in r]
        rows = list({r["step"]: r for r in rows}.values())  # the last line of a step wins
        steps = [r["step"] for r in rows]
        for key in sorted(k for k in rows[0] if k.startswith("loss")):
            ax.plot(steps, [r[key] for r in rows], label=key)
        ax.set_title(path.name.split(".")[0])
        ax.set_xlabel("step")
        ax.set_yscale("log")
        ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    click.echo(f"wrote {out}")


if __name__ == "__main__":
    main()

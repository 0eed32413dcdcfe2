"""Dump the per-pair scores of a ``bfm-eval`` run, or compare two dumps bit for bit.

    python tools/eval_scores.py dump --dataset lfw --folds 6-10 OUT.npz [--data-dir ../shared/data]
    python tools/eval_scores.py compare A.npz B.npz
    python tools/eval_scores.py agree A.npz B.npz       # another backend: the share of identical decisions

What a refactoring of the runtime must leave unchanged: every score, route and mask probability of every pair
(``compare`` exits 1 on the first array that differs in any bit).
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import click
import numpy as np

from bfm_deploy.atomic import atomic_write_bytes
from bfm_deploy.bundle import Bundle, default_bundle
from bfm_deploy.cli_support import one_line_errors
from bfm_deploy.datasets import default_data_dir
from bfm_deploy.errors import BfmError
from bfm_deploy.eval.api import EvalOptions, run_eval


@click.group()
def main() -> None:
    """Per-pair evaluation scores."""


@main.command()
@click.option("--dataset", required=True)
@click.option("--folds", default=None)
@click.option("--bundle", default=None)
@click.option("--backend", default="ort", show_default=True)
@click.option("--data-dir", type=click.Path(path_type=Path), default=None)
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@one_line_errors
def dump(dataset: str, folds: str | None, bundle: str | None, backend: str, data_dir: Path | None, out: Path) -> None:
    """Run the protocol and write every result's arrays to OUT (npz)."""
    run = run_eval(EvalOptions(dataset=dataset, folds=folds, bundle=bundle, backend=backend,
                               data_dir=data_dir or default_data_dir()))
    arrays: dict[str, np.ndarray] = {}
    loaded = Bundle.load(bundle or default_bundle())
    thresholds = {route: loaded.threshold(route) for route in loaded.thresholds}
    for result in run.results:
        key = f"{result.variant}/{result.method}"
        arrays[f"{key}/scores"] = np.asarray(result.scores.scores)
        arrays[f"{key}/routes"] = np.asarray(result.scores.routes).astype(str)
        arrays[f"{key}/same"] = np.asarray(result.same)
        if all(route in thresholds for route in result.scores.routes):  # the deployed decision: the route's threshold
            limits = np.array([thresholds[route] for route in result.scores.routes])
            arrays[f"{key}/decided"] = np.asarray(result.scores.scores) >= limits
        if result.scores.mask_probability is not None:
            probabilities = sorted(result.scores.mask_probability.items())
            arrays[f"{key}/mask_images"] = np.array([str(path) for path, _ in probabilities])
            arrays[f"{key}/mask_probability"] = np.array([value for _, value in probabilities])
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write_bytes(out, buffer.getvalue())
    click.echo(f"{out}: {len(arrays)} arrays, {len(run.results[0].same)} pairs")


@main.command()
@click.argument("first", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("second", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@one_line_errors
def compare(first: Path, second: Path) -> None:
    """Exit 0 when both dumps hold the same arrays, bit for bit."""
    a, b = np.load(first), np.load(second)
    if sorted(a.files) != sorted(b.files):
        raise BfmError(f"different results: {sorted(set(a.files) ^ set(b.files))}")
    for name in sorted(a.files):
        x, y = a[name], b[name]
        if x.dtype != y.dtype or x.shape != y.shape or x.tobytes() != y.tobytes():
            click.echo(f"{name}: differs", err=True)
            sys.exit(1)
    click.echo(f"identical: {len(a.files)} arrays")


@main.command()
@click.argument("first", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("second", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@one_line_errors
def agree(first: Path, second: Path) -> None:
    """Per result: the share of pairs decided alike (score against the route's threshold) and the largest
    score difference; for two backends, which are not bit-identical."""
    a, b = np.load(first), np.load(second)
    for name in sorted(n for n in a.files if n.endswith("/scores")):
        key = name[: -len("/scores")]
        if f"{key}/decided" not in a.files:
            continue
        same = (a[f"{key}/decided"] == b[f"{key}/decided"]).mean()
        click.echo(f"{key}: {100 * same:.2f}% of {len(a[name])} pairs decided alike, "
                   f"max |score difference| {np.abs(a[name] - b[name]).max():.2e}")


if __name__ == "__main__":
    main()

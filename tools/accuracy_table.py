"""Render bfm-eval JSON reports as the paper's Tables II and III (markdown), beside the paper's own figures.

    python tools/accuracy_table.py benchmarks/results/accuracy_lfw.json benchmarks/results/accuracy_masked-lfw.json \
        benchmarks/results/accuracy_mfr2.json > benchmarks/results/accuracy_tables.md
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from bfm_deploy.cli_options import bfm_command
from bfm_deploy.cli_support import one_line_errors
from bfm_deploy.errors import BfmError

# Table II and III of the paper (r50 trained on CASIA-WebFace; masked LFW there is case 3 only).
PAPER_TABLE_II = {"lfw": (99.3, 98.8, 99.3), "masked-lfw/case3": (96.1, 98.4, 98.5), "mfr2": (94.5, 96.0, 96.4)}
PAPER_TABLE_III = {"lfw": 99.9, "masked-lfw/case3": 99.6, "mfr2": 98.5}


def _rows(report: dict) -> dict[str, dict[str, dict]]:
    """{data set row: {method: result}} from one bfm-eval report (masked-lfw holds two rows)."""
    rows: dict[str, dict[str, dict]] = {}
    for name, result in report["results"].items():
        row, _, method = name.rpartition("/")
        rows.setdefault(row or report["dataset"], {})[method] = result
    return rows


def _pct(value: float | None, std: float | None = None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f} ± {std:.2f}" if std is not None else f"{value:.2f}"


@bfm_command()
@click.argument("reports", nargs=-1, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--ours", default="ours", show_default=True, help="The method reported per case and in Table III.")
@click.option("--baseline", default="Baseline 2", show_default=True,
              help="The method every 'ours...' column is compared with, point by point.")
@click.option("--methods", default=None,
              help="Comma-separated methods to show, in this order (default: every method, in the reports' order).")
@one_line_errors
def main(reports: tuple[Path, ...], ours: str, baseline: str, methods: str | None) -> None:
    """Tables II and III from bfm-eval --json-out reports; methods in the order the reports name them (several
    reports of one data set merge, so a variant evaluated later joins the table)."""
    if not reports:
        raise BfmError("give one or more bfm-eval --json-out reports")
    chosen = [m.strip() for m in methods.split(",") if m.strip()] if methods else None
    rows: dict[str, dict[str, dict]] = {}
    pairs: dict[str, int] = {}
    order: list[str] = []
    for path in reports:
        report = json.loads(path.read_text())
        for row, methods in _rows(report).items():
            rows.setdefault(row, {}).update(methods)
            pairs[row] = report["pairs"]
            order += [m for m in methods if m not in order]
    if chosen is not None:
        missing = [m for m in chosen if m not in order]
        if missing:
            raise BfmError(f"--methods: {', '.join(missing)} not in these reports ({', '.join(order)})")
        order = chosen
    if ours not in order:
        raise BfmError(f"--ours {ours!r} is not a method of these reports ({', '.join(order)})")
    click.echo("Table II: verification accuracy (%), 10-fold cross-validated threshold, mean ± std over folds\n")
    click.echo("| data set | pairs | " + " | ".join(order) + " | paper (B1 / B2 / ours) |")
    click.echo("|---|---:|" + "---:|" * len(order) + "---|")
    for row, methods in rows.items():
        cells = [_pct(methods[m]["accuracy"], methods[m]["std"]) if m in methods else "-" for m in order]
        paper = " / ".join(f"{v}" for v in PAPER_TABLE_II[row]) if row in PAPER_TABLE_II else "-"
        click.echo(f"| {row} | {pairs[row]} | " + " | ".join(cells) + f" | {paper} |")
    variants = [m for m in order if m.startswith("ours")]
    if baseline in order and variants:
        click.echo(f"\nAgainst {baseline} (accuracy points; the target is +0.3 on masked LFW case 3 and case 2 and MFR2)\n")
        click.echo("| data set | " + " | ".join(variants) + " |")
        click.echo("|---|" + "---:|" * len(variants))
        for row, methods in rows.items():
            if baseline in methods:
                base = methods[baseline]["accuracy"]
                cells = [f"{methods[m]['accuracy'] - base:+.2f}" if m in methods else "-" for m in variants]
                click.echo(f"| {row} | " + " | ".join(cells) + " |")
    click.echo("\nEER and TAR at FAR 1e-3 (%)\n")
    click.echo("| data set | " + " | ".join(f"{m} EER | {m} TAR@1e-3" for m in order) + " |")
    click.echo("|---|" + "---:|---:|" * len(order))
    for row, methods in rows.items():
        cells = [f"{_pct(methods[m]['eer'])} | {_pct(methods[m]['tar_at_far_1e-3'])}" if m in methods else "- | -"
                 for m in order]
        click.echo(f"| {row} | " + " | ".join(cells) + " |")
    click.echo(f"\nAccuracy per matching case (%), {ours} (1: both unmasked, 2: one masked, 3: both masked)\n")
    click.echo("| data set | case 1 | case 2 | case 3 |")
    click.echo("|---|---:|---:|---:|")
    for row, methods in rows.items():
        cases = methods.get(ours, {}).get("cases", {})
        click.echo(f"| {row} | " + " | ".join(_pct(cases.get(c)) for c in ("1", "2", "3")) + " |")
    click.echo(f"\nTable III: mask classification accuracy of C (%), {ours}\n")
    click.echo("| data set | ours | paper |")
    click.echo("|---|---:|---:|")
    for row, methods in rows.items():
        value = methods.get(ours, {}).get("mask_accuracy")
        click.echo(f"| {row} | {_pct(value)} | {PAPER_TABLE_III.get(row, '-')} |")


if __name__ == "__main__":
    main()

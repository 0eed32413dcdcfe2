"""Score a ``bfm-verify --pairs`` JSON-lines output against the truth of a pairs protocol.

    python tools/score_pairs.py OUT.jsonl --dataset mfr2 [--data-dir ../shared/data] [--json-out summary.json]

Counts pairs decided right at the bundle's own thresholds (no cross-validation: what a user of
``bfm-verify`` gets), failed pairs, and the split by route and matching case.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import click

from bfm_deploy.cli_options import bfm_command, data_dir_option, emit_json, json_option, quiet_option
from bfm_deploy.cli_support import one_line_errors
from bfm_deploy.datasets import read_lfw_pairs, read_mfr2_pairs
from bfm_deploy.errors import BfmError


def truth(dataset: str, data_dir: Path) -> dict[tuple[str, str], bool]:
    if dataset == "mfr2":
        pairs = read_mfr2_pairs(data_dir / "mfr2" / "pairs.txt", data_dir / "mfr2")
    elif dataset == "lfw-raw":
        pairs = read_lfw_pairs(data_dir / "lfw" / "pairs.txt", data_dir / "lfw" / "raw-fold1")
    else:
        raise BfmError(f"unknown dataset {dataset!r} (mfr2, lfw-raw)")
    return {(str(p.left.resolve()), str(p.right.resolve())): p.same for p in pairs}


@bfm_command()
@click.argument("results", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--dataset", default="mfr2", show_default=True)
@data_dir_option
@json_option
@quiet_option
@one_line_errors
def main(results: Path, dataset: str, data_dir: Path, json_out: str | None) -> None:
    expected = truth(dataset, data_dir)
    right = failed = scored = 0
    routes: Counter[str] = Counter()
    cases: Counter[int] = Counter()
    wrong_by_case: Counter[int] = Counter()
    for line in results.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        key = (str(Path(record["a"]).resolve()), str(Path(record["b"]).resolve()))
        if key not in expected:
            raise BfmError(f"pair {key} is not in the {dataset} protocol")
        scored += 1
        if "error" in record:
            failed += 1
            continue
        routes[record["route"]] += 1
        cases[record["case"]] += 1
        if record["same"] == expected[key]:
            right += 1
        else:
            wrong_by_case[record["case"]] += 1
    summary = {
        "results": str(results), "dataset": dataset, "pairs": scored, "failed": failed,
        "right": right, "accuracy_all_pairs": 100.0 * right / scored if scored else None,
        "accuracy_verified_pairs": 100.0 * right / (scored - failed) if scored > failed else None,
        "routes": dict(routes), "cases": {str(k): v for k, v in sorted(cases.items())},
        "wrong_by_case": {str(k): v for k, v in sorted(wrong_by_case.items())},
    }
    emit_json(json_out or "-", summary)  # the summary is the output: on stdout unless --json-out names a file


if __name__ == "__main__":
    main()

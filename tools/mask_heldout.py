"""Mask accuracy of bundles' classifiers on held-out training faces: how C is chosen without test data.

    python tools/mask_heldout.py --bundle old=engines/demo --bundle c4=work_dirs/bundles/demo_c4 \
        --set v2=work_dirs/cal_v2_fold5.txt --set fabric=work_dirs/cal_fabric_fold5.txt --json-out out.json

Each set is a ``tools/mask_calibration_list.py`` file ('image<TAB>0|1', aligned crops; 1 = masked). For every
bundle and set it prints the accuracy on unmasked and on masked faces and their mean (balanced accuracy), at
the bundle's own mask threshold (``mask_threshold`` in its manifest, else 0.5). Sets must come from LFW folds
1-5: folds 6-10 and MFR2 are test data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import numpy as np

from bfm_deploy.bundle import Bundle
from bfm_deploy.cli_options import bfm_command, emit_json, json_option, quiet_option
from bfm_deploy.cli_support import one_line_errors
from bfm_deploy.errors import BfmError
from bfm_deploy.images import load_image
from bfm_deploy.verifier import Verifier
from bfm_train.export.mask_threshold import read_mask_calibration


def _named(values: tuple[str, ...], what: str) -> dict[str, Path]:
    named = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise BfmError(f"--{what} takes NAME=PATH, got {value!r}")
        named[name] = Path(path)
    return named


def held_out_accuracy(verifier: Verifier, images: list[Path], labels: np.ndarray) -> dict[str, Any]:
    probs = np.concatenate([verifier.mask_probability([load_image(p) for p in images[i : i + 256]], aligned=True)
                            for i in range(0, len(images), 256)])
    called = probs >= verifier.mask_threshold
    unmasked, masked = float(np.mean(~called[~labels])), float(np.mean(called[labels]))
    return {"threshold": verifier.mask_threshold, "unmasked_accuracy": round(100 * unmasked, 2),
            "masked_accuracy": round(100 * masked, 2), "balanced_accuracy": round(50 * (unmasked + masked), 2),
            "faces": int(len(labels))}


@bfm_command()
@click.option("--bundle", "bundles", multiple=True, required=True, help="NAME=BUNDLE_DIR, repeatable.")
@click.option("--set", "sets", multiple=True, required=True, help="NAME=LIST.txt (mask_calibration_list.py), repeatable.")
@json_option
@quiet_option
@one_line_errors
def main(bundles: tuple[str, ...], sets: tuple[str, ...], json_out: str | None) -> None:
    set_paths = _named(sets, "set")
    lists = {name: read_mask_calibration(path) for name, path in set_paths.items()}
    report: dict[str, Any] = {"format": "bfm-mask-heldout/1", "sets": {k: str(v) for k, v in set_paths.items()},
                              "results": {}}
    for name, path in _named(bundles, "bundle").items():
        with Verifier(Bundle.load(path), backend="ort") as verifier:
            report["results"][name] = {s: held_out_accuracy(verifier, *lists[s]) for s in lists}
    click.echo(f"{'bundle':<12} {'set':<10} {'threshold':>9} {'unmasked':>9} {'masked':>9} {'balanced':>9}",
               err=json_out == "-")
    for name, per_set in report["results"].items():
        for s, r in per_set.items():
            click.echo(f"{name:<12} {s:<10} {r['threshold']:>9.3f} {r['unmasked_accuracy']:>9.2f} "
                       f"{r['masked_accuracy']:>9.2f} {r['balanced_accuracy']:>9.2f}", err=json_out == "-")
    emit_json(json_out, report)


if __name__ == "__main__":
    main()

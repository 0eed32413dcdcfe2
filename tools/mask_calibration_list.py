"""Held-out faces for calibrating a bundle's mask threshold: LFW images of chosen folds and their masked twins.

    python tools/mask_calibration_list.py --folds 5 --masked-root work_dirs/lfw_masked_v2 --out work_dirs/mask_calibration.txt

Writes 'image<TAB>0|1' lines (1 = masked) for every aligned LFW image of the identities in those folds of
pairs.txt that has a masked twin. Use folds left out of the classifier's training (never 6-10: test data).
"""

from __future__ import annotations

from pathlib import Path

import click

from bfm_deploy.atomic import atomic_write_text
from bfm_deploy.cli_options import bfm_command, data_dir_option, quiet_option
from bfm_deploy.cli_support import one_line_errors
from bfm_deploy.datasets import lfw_identities_in_folds, read_lfw_pairs
from bfm_deploy.errors import BfmError

TEST_FOLDS = {6, 7, 8, 9, 10}


@bfm_command()
@click.option("--folds", required=True, help="1-based LFW folds, e.g. 5 or 4,5.")
@click.option("--masked-root", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True)
@data_dir_option
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
@quiet_option
@one_line_errors
def main(folds: str, masked_root: Path, data_dir: Path, out: Path) -> None:
    chosen = {int(f) for f in folds.split(",") if f.strip()}
    if chosen & TEST_FOLDS:
        raise BfmError(f"folds {sorted(chosen & TEST_FOLDS)} are test data: calibrate on training folds only")
    root = data_dir / "lfw"
    pairs = read_lfw_pairs(root / "pairs.txt", root / "aligned112")
    identities = lfw_identities_in_folds(pairs, {f - 1 for f in chosen})
    lines = []
    for name in sorted(identities):
        for image in sorted((root / "aligned112" / name).glob("*.jpg")):
            twin = masked_root / name / image.name
            if twin.is_file():
                lines += [f"{image.resolve()}\t0", f"{twin.resolve()}\t1"]
    if not lines:
        raise BfmError(f"no image of folds {sorted(chosen)} has a masked twin under {masked_root}")
    atomic_write_text(out, "\n".join(lines) + "\n")
    click.echo(f"wrote {out}: {len(lines) // 2} faces and their masked twins of {len(identities)} identities")


if __name__ == "__main__":
    main()

"""Write a threshold-calibration pairs list from LFW folds of *training* identities, in all three cases.

Each LFW pair of the chosen folds appears three times: both faces unmasked (case 1), one face masked (case 2,
left on even pair indices, right on odd) and both masked (case 3), the masked faces taken from a bfm-mask twin
of aligned112. The output feeds ``bfm-export --calibrate``, so each route's threshold is fitted on the pairs the
classifier sends it. Use folds whose identities were in training (the demo trains on all but folds 6-10).

    python tools/lfw_calibration_pairs.py --folds 1-5 --masked-root work_dirs/lfw_masked \
        --out work_dirs/calibration_pairs.txt
"""

from __future__ import annotations

from pathlib import Path

import click

from bfm_deploy.atomic import atomic_write_text
from bfm_deploy.cli_options import bfm_command, data_dir_option, quiet_option
from bfm_deploy.cli_support import one_line_errors
from bfm_deploy.datasets import read_lfw_pairs
from bfm_deploy.errors import BfmError


def _fold_range(spec: str) -> set[int]:
    first, _, last = spec.partition("-")
    try:
        return set(range(int(first) - 1, int(last or first)))
    except ValueError:
        raise BfmError(f"--folds must look like 1-5 or 3, got {spec!r}") from None


@bfm_command()
@click.option("--folds", default="1-5", show_default=True, help="1-based LFW folds (training identities).")
@click.option("--masked-root", type=click.Path(path_type=Path), required=True, help="bfm-mask twin of aligned112.")
@data_dir_option
@click.option("--out", type=click.Path(path_type=Path), required=True)
@quiet_option
@one_line_errors
def main(folds: str, masked_root: Path, data_dir: Path, out: Path) -> None:
    root = data_dir.resolve() / "lfw"  # read_lfw_pairs gives resolved paths
    aligned = root / "aligned112"
    chosen = _fold_range(folds)
    pairs = [p for p in read_lfw_pairs(root / "pairs.txt", aligned) if p.fold in chosen]

    def masked(path: Path) -> Path:
        twin = masked_root.resolve() / path.relative_to(aligned)
        if not twin.is_file():
            raise BfmError(f"no masked twin for {path.relative_to(aligned)} under {masked_root}")
        return twin

    lines = []
    for index, pair in enumerate(pairs):
        label = int(pair.same)
        left, right = pair.left.resolve(), pair.right.resolve()
        lines.append(f"{left}\t{right}\t{label}")
        one_masked = (masked(left), right) if index % 2 == 0 else (left, masked(right))
        lines.append(f"{one_masked[0]}\t{one_masked[1]}\t{label}")
        lines.append(f"{masked(left)}\t{masked(right)}\t{label}")
    atomic_write_text(out, "\n".join(lines) + "\n")
    click.echo(f"{len(lines)} calibration pairs from {len(pairs)} LFW pairs of folds {folds} -> {out}")


if __name__ == "__main__":
    main()

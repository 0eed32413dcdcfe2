"""Do two bundles' mask classifiers decide alike? Mask probabilities on every MFR2 photo and on every fifth
aligned LFW face (``--every``: every Nth of both), through onnxruntime, at each bundle's own mask threshold.

    git archive a7533f9 engines/demo | tar -x -C /tmp/before   # the demo bundle before its float16 weights
    python tools/compare_classifiers.py /tmp/before/engines/demo engines/demo

MFR2 photos are detected and aligned once by the first bundle (photos it finds no face in are left out). Prints
per set the faces compared, the largest probability change, the decisions that differ and the smallest distance
of a probability from the first bundle's threshold; ``--json-out`` writes the same. Exit 1 when a decision
differs. MFR2 and LFW serve here as real faces to compare on: nothing is tuned.
"""

from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np

from bfm_deploy.atomic import atomic_write_text
from bfm_deploy.cli_options import data_dir_option
from bfm_deploy.cli_support import one_line_errors
from bfm_deploy.errors import BfmError
from bfm_deploy.images import load_image
from bfm_deploy.progress import progress
from bfm_deploy.verifier import Face, Verifier

CHUNK = 128


def _faces(data_dir: Path, verifier: Verifier, every: int) -> dict[str, list[np.ndarray]]:
    mfr2 = sorted((data_dir / "mfr2").glob("*/*.png"))[::every]
    lfw = sorted((data_dir / "lfw" / "aligned112").glob("*/*.jpg"))[::5 * every]
    if not mfr2 or not lfw:
        raise BfmError(f"no MFR2 photos or aligned LFW faces under {data_dir} (set --data-dir)")
    prepared = verifier.prepare_many([load_image(p) for p in progress(mfr2, desc="MFR2 photos", unit="photo")])
    return {"mfr2": [f.crop for f in prepared if isinstance(f, Face)],
            "lfw": [load_image(p) for p in progress(lfw, desc="LFW faces", unit="face")]}


def _probabilities(verifier: Verifier, crops: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([verifier.mask_probability(crops[i:i + CHUNK], aligned=True)
                           for i in range(0, len(crops), CHUNK)])


@click.command()
@click.argument("first", type=click.Path(file_okay=False, path_type=Path))
@click.argument("second", type=click.Path(file_okay=False, path_type=Path))
@data_dir_option
@click.option("--every", type=click.IntRange(min=1), default=1, show_default=True,
              help="Compare every Nth MFR2 photo and every (5N)th LFW face only (a quick look).")
@click.option("--json-out", type=click.Path(dir_okay=False, path_type=Path), help="Also write the figures as JSON.")
@one_line_errors
def main(first: Path, second: Path, data_dir: Path, every: int, json_out: Path | None) -> None:
    """Compare the mask decisions of bundle FIRST and bundle SECOND."""
    with Verifier(first, backend="ort") as a, Verifier(second, backend="ort") as b:
        faces = _faces(data_dir, a, every)
        rows = {}
        for name, crops in faces.items():
            pa, pb = _probabilities(a, crops), _probabilities(b, crops)
            ta, tb = a.bundle.mask_threshold, b.bundle.mask_threshold
            rows[name] = {"faces": len(crops), "max_probability_change": float(np.abs(pa - pb).max()),
                          "decisions_differ": int(((pa >= ta) != (pb >= tb)).sum()),
                          "min_distance_from_threshold": float(np.abs(pa - ta).min())}
    for name, row in rows.items():
        click.echo(f"{name}: {row['faces']} faces, max probability change {row['max_probability_change']:.2g}, "
                   f"{row['decisions_differ']} decisions differ, closest to the threshold "
                   f"{row['min_distance_from_threshold']:.3g}")
    if json_out is not None:
        atomic_write_text(json_out, json.dumps({"first": str(first), "second": str(second), "sets": rows},
                                               indent=2) + "\n")
    if any(row["decisions_differ"] for row in rows.values()):
        raise SystemExit(1)


if __name__ == "__main__":
    main()

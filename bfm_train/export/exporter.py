"""Checkpoint -> model bundle: three ONNX graphs, parity-checked, plus manifest.json (ARCHITECTURE.md)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import onnx
import onnxruntime
import torch

import bfm_train
from bfm_deploy.atomic import atomic_dir, atomic_write_text
from bfm_deploy.bundle import MANIFEST, ROUTES, sha256_file
from bfm_deploy.contract import EMBEDDING_SIZE, NETWORKS, Network
from bfm_deploy.cli_options import note as tool_note
from bfm_deploy.datasets import default_data_dir
from bfm_deploy.detect.fallback import parse_chain_option
from bfm_deploy.detect.spec import DetectorSpec
from bfm_train.export.detector import install_detector
from bfm_deploy.errors import BfmError
from bfm_deploy.manifest import METRIC, InputContract, Manifest, ModelEntry, Threshold, WeightsEntry
from bfm_deploy.progress import progress
from bfm_deploy.routing import DEFAULT_MASK_THRESHOLD

from .calibrate import calibrate
from .options import ExportOptions
from .mask_threshold import calibrated_mask_threshold
from .network import export_network
from .parity import parity_batch
from .source import ExportSource, load_source

WEIGHTS_FILE = "weights.safetensors"


def export_bundle(checkpoint: str | Path | None, options: ExportOptions | None = None) -> Path:
    """Export ``checkpoint`` (a bfm-checkpoint/1 safetensors file; ``None`` with ``options.from_pretrained``)
    to a bundle folder and return its path."""
    options = options or ExportOptions()
    options.check_inputs()  # before the checkpoint is loaded: a typo costs nothing
    return _export(load_source(checkpoint, options), options, tool_note)


def export_source(source: ExportSource, options: ExportOptions, log: Any = tool_note) -> Path:
    """Export already-built networks (see ``source.load_source``): the step the tests drive directly."""
    options.check_inputs()
    return _export(source, options, log)


def _export(source: ExportSource, options: ExportOptions, log: Any) -> Path:
    name, out = options.resolve_out(source.default_name)
    if out.exists() and not options.overwrite:
        raise BfmError(f"{out} exists; pass --overwrite to replace it")
    if options.calibrate is None and options.threshold_values() is None:
        raise BfmError("no thresholds: pass --thresholds full=..,partial=.. or --calibrate PAIRS")
    batch = parity_batch(options.data_dir or default_data_dir(), options.parity_images)
    log(f"parity check on {batch.description}")
    with atomic_dir(out, overwrite=options.overwrite) as tmp:
        models: dict[Network, ModelEntry] = {
            network: export_network(network, source.networks[network], tmp, source.architectures[network],
                                    batch.tensor, options.opset, options.min_cosine, log, note=source.notes.get(network))
            for network in progress(NETWORKS, desc="export", unit="graph")}
        mask_threshold = source.mask_threshold
        if options.mask_calibration is not None:
            mask_threshold = calibrated_mask_threshold(tmp / "classifier.onnx", Path(options.mask_calibration))
        # Route thresholds after the mask threshold: calibration pairs are routed as the bundle will route them.
        thresholds = _thresholds(source, options, log,
                                 DEFAULT_MASK_THRESHOLD if mask_threshold is None else mask_threshold.value)
        detector = None
        if options.detector != "none":
            detector = install_detector(tmp, options.detector, options.detector_size,
                                        parse_chain_option(options.detector_fallback))
            log(f"detector: {detector.architecture} at {detector.input_size}x{detector.input_size}, "
                f"fallback {', '.join(map(str, detector.fallback)) or 'none'}")
        weights = None
        if options.torch_weights:
            write_weights(tmp / WEIGHTS_FILE, source)
            weights = WeightsEntry(tmp / WEIGHTS_FILE, sha256_file(tmp / WEIGHTS_FILE))
        manifest = _manifest(name, source, options, thresholds, models, detector=detector,
                             mask_threshold=mask_threshold, weights=weights)
        atomic_write_text(tmp / MANIFEST, manifest.to_json())
        _make_readable(tmp)
    log(f"wrote {out}")
    return out


def _make_readable(folder: Path) -> None:
    """Temporary folders and files are created private (0700/0600); a bundle is meant to be deployed and
    read by a service account, so give it the usual 0755/0644."""
    folder.chmod(0o755)
    for file in folder.iterdir():
        file.chmod(0o644)


def write_weights(path: Path, source: ExportSource) -> None:
    """The three state dicts for the torch backend, keys ``<network>.<state key>`` as in the checkpoint."""
    from safetensors.torch import save_file

    tensors = {f"{network}.{key}": value.detach().cpu().contiguous().clone()
               for network in NETWORKS for key, value in source.networks[network].state_dict().items()}
    metadata = {"format": "bfm-bundle-weights/1", "architectures": json.dumps(source.architectures)}
    save_file(tensors, str(path), metadata=metadata)


def _thresholds(source: ExportSource, options: ExportOptions, log: Any, mask_threshold: float) -> dict[str, Threshold]:
    given = options.threshold_values()
    if options.calibrate is not None:
        calibrated = calibrate(options.calibrate, source.networks, mask_threshold)
        for route, cal in calibrated.items():
            log(f"threshold {route}: {cal.value:.4f} ({cal.description})")
        return {route: Threshold(round(cal.value, 6), cal.description) for route, cal in calibrated.items()}
    if given is None:
        raise BfmError("no thresholds: pass --thresholds full=..,partial=.. or --calibrate PAIRS")
    return {route: Threshold(given[route], "given at export (not calibrated by bfm-export)") for route in ROUTES}


def _manifest(name: str, source: ExportSource, options: ExportOptions, thresholds: dict[str, Threshold],
              models: dict[Network, ModelEntry], *, detector: DetectorSpec | None, mask_threshold: Threshold | None,
              weights: WeightsEntry | None) -> Manifest:
    tools = {
        "bfm": bfm_train.__version__,
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "opset": options.opset,
    }
    return Manifest(name, InputContract.default(), EMBEDDING_SIZE, METRIC, thresholds, models, source.source, tools,
                    created=dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                    licence=options.licence or source.licence, detector=detector, mask_threshold=mask_threshold,
                    weights=weights)

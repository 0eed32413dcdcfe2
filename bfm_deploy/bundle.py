"""A model bundle on disk (``engines/<name>/``): manifest validation and file integrity.

``Bundle.load`` refuses anything it cannot trust with a one-line ``BfmError``: unreadable or corrupt
``manifest.json``, a missing or mistyped field, an unknown ``format_version``, an ONNX file whose sha256
differs from the manifest (edited, truncated or swapped after export). The layout is described in
ARCHITECTURE.md ("Model bundle").
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .atomic import recover
# re-exported as part of the bundle API (one definition, in contract)
from .contract import MIN_OPSET as MIN_OPSET
from .contract import NETWORKS as NETWORKS
from .contract import ROUTES as ROUTES
from .contract import Network as Network
from .contract import sha256_file as sha256_file
from .detect.fallback import parse_chain
from .detect.spec import DetectorSpec
from .errors import BfmError
from .onnx_graph import FLOAT, GraphInfo, TensorInfo, read_graph_info
from .routing import DEFAULT_MASK_THRESHOLD

MANIFEST = "manifest.json"
FORMAT = "bfm-bundle"
FORMAT_VERSION = 1
DEFAULT_BUNDLE = "engines/demo"


DEMO_BUNDLE_PACKAGE = "bfm_demo_bundle"  # the demo bundle as a package of its own: packaging/bfm-demo-bundle


def default_bundle() -> str:
    """The bundle every tool uses unless told otherwise, the first of: ``$BFM_BUNDLE``; ``engines/demo`` of
    the source checkout bfm runs from (whatever the working directory); the installed demo bundle package
    (``pip install ./packaging/bfm-demo-bundle``, for bfm installed without the repository); else
    ``engines/demo`` of the working directory, whose absence ``Bundle.load`` reports."""
    if os.environ.get("BFM_BUNDLE"):
        return os.environ["BFM_BUNDLE"]
    checkout = Path(__file__).resolve().parents[1] / DEFAULT_BUNDLE
    if (checkout / MANIFEST).is_file():
        return str(checkout)
    spec = importlib.util.find_spec(DEMO_BUNDLE_PACKAGE)
    if spec is not None and spec.origin is not None:
        installed = Path(spec.origin).parent / "bundle"
        if (installed / MANIFEST).is_file():
            return str(installed)
    return DEFAULT_BUNDLE


@dataclass(frozen=True)
class InputContract:
    """What every network expects: NCHW float32 RGB crops aligned to the ArcFace template."""

    size: tuple[int, int]
    layout: str
    channel_order: str
    dtype: str
    mean: float
    std: float
    alignment_method: str
    template: tuple[tuple[float, float], ...]


@dataclass(frozen=True)
class ModelEntry:
    network: Network
    file: Path
    architecture: str
    params: int
    macs: int
    sha256: str
    input_name: str
    output_name: str


@dataclass(frozen=True)
class Threshold:
    value: float
    calibration: str


@dataclass(frozen=True)
class Bundle:
    """A validated bundle: paths of the three ONNX graphs, thresholds per route and the input contract."""

    root: Path
    name: str
    manifest: dict[str, Any]
    input: InputContract
    embedding_size: int
    metric: str
    thresholds: dict[str, Threshold]
    models: dict[Network, ModelEntry]
    weights: Path | None  # optional weights.safetensors for the torch backend
    detector: DetectorSpec | None = None  # optional detector.onnx (the manifest's "detector" entry)
    mask_threshold_entry: Threshold | None = None  # optional calibrated "mask_threshold"

    @property
    def mask_threshold(self) -> float:
        """The classifier probability at which a face counts as masked (0.5 when the bundle has none)."""
        return DEFAULT_MASK_THRESHOLD if self.mask_threshold_entry is None else self.mask_threshold_entry.value

    @classmethod
    def load(cls, path: str | os.PathLike[str], verify_files: bool = True) -> Bundle:
        root = Path(path)
        recover(root)  # an export or update killed between its two renames: the previous bundle comes back
        if not root.is_dir():
            raise BfmError(
                f"bundle {root} not found (a folder written by bfm-export; choose one with --bundle or $BFM_BUNDLE, "
                "or pip install ./packaging/bfm-demo-bundle from the repository)"
            )
        manifest_path = root / MANIFEST
        try:
            text = manifest_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise BfmError(f"{manifest_path} is missing: {root} is not a bundle (re-export it with bfm-export)") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise BfmError(f"cannot read {manifest_path}: {exc}") from None
        try:
            manifest = json.loads(text)
        except json.JSONDecodeError as exc:
            raise BfmError(f"{manifest_path} is not valid JSON ({exc.msg} at line {exc.lineno}); re-export the bundle") from None
        bundle = _parse(root, manifest, _Fields(manifest_path))
        if verify_files:
            bundle.verify_files()
        return bundle

    @property
    def digest(self) -> str:
        """sha256 of manifest.json: the manifest names every file's sha256, so this names the whole bundle."""
        return sha256_file(self.root / MANIFEST)

    def path(self, network: Network) -> Path:
        return self.models[network].file

    def threshold(self, route: str) -> float:
        return self.thresholds[route].value

    def verify_files(self) -> None:
        """Check each ONNX file against the manifest's sha256 (the torch weights: ``verify_weights``), and each
        graph's interface against the manifest's contract. Each file is read once for both."""
        height, width = self.input.size
        for network, entry in self.models.items():
            info = read_graph_info(entry.file, self._checked_bytes(entry.file, entry.sha256))
            where = f"bundle {self.root}: {entry.file.name}"
            if info.opset < MIN_OPSET:
                raise BfmError(f"{where}: opset {info.opset}, bundles need >= {MIN_OPSET}; re-export the bundle")
            _check_input(where, info, entry.input_name, (3, height, width))
            output = _check_output(where, info, entry.output_name)
            width_out = 2 if network == "classifier" else self.embedding_size
            what = "two logits" if network == "classifier" else f"embedding_size {self.embedding_size}"
            if len(output.dims) != 2 or output.dims[-1] != width_out:
                raise BfmError(f"{where}: output {entry.output_name!r} has shape {list(output.dims)}, the manifest's "
                               f"{network} needs [batch, {width_out}] ({what}); re-export the bundle")
        spec = self.detector
        if spec is not None:
            info = read_graph_info(spec.file, self._checked_bytes(spec.file, spec.sha256))
            where = f"bundle {self.root}: {spec.file.name}"
            _check_input(where, info, spec.input_name, (3, None, None))
            for name in spec.output_names:
                _check_output(where, info, name)

    def verify_weights(self) -> None:
        """Check ``weights.safetensors``; only the torch backend reads it, so only it pays for the hash."""
        if self.weights is None:
            return
        if not self.weights.is_file():
            raise self._missing(self.weights)
        if sha256_file(self.weights) != str(self.manifest["weights"]["sha256"]):  # streamed: it can be large
            raise self._mismatch(self.weights)

    def _checked_bytes(self, file: Path, expected: str) -> bytes:
        """The file's content, after checking it against ``expected`` (its sha256 in the manifest)."""
        if not file.is_file():
            raise self._missing(file)
        try:
            data = file.read_bytes()
        except OSError as exc:
            raise BfmError(f"bundle {self.root}: cannot read {file.name}: {exc.strerror or exc}") from None
        if hashlib.sha256(data).hexdigest() != expected:
            raise self._mismatch(file)
        return data

    def _missing(self, file: Path) -> BfmError:
        return BfmError(f"bundle {self.root}: {file.name} is missing; re-export the bundle with bfm-export")

    def _mismatch(self, file: Path) -> BfmError:
        return BfmError(f"bundle {self.root}: {file.name} does not match the sha256 in {MANIFEST} "
                        "(modified or corrupt); re-export the bundle with bfm-export")

def _check_input(where: str, info: GraphInfo, name: str, chw: tuple[int | None, ...]) -> None:
    found = info.input(name)
    if found is None or len(info.inputs) != 1:
        raise BfmError(f"{where}: the manifest's input {name!r} is not the graph's one input "
                       f"(graph inputs: {[t.name for t in info.inputs]}); re-export the bundle")
    if found.elem_type != FLOAT:
        raise BfmError(f"{where}: input {name!r} is not float32 (ONNX type {found.elem_type}); re-export the bundle")
    fixed = [d for d, want in zip(found.dims[1:], chw) if want is not None and isinstance(d, int) and d != want]
    if len(found.dims) != 4 or fixed:
        shown = ", ".join("H" if c is None else str(c) for c in chw)
        raise BfmError(f"{where}: input {name!r} has shape {list(found.dims)}, the bundle needs [batch, {shown}]; "
                       "re-export the bundle")


def _check_output(where: str, info: GraphInfo, name: str) -> TensorInfo:
    found = info.output(name)
    if found is None:
        raise BfmError(f"{where}: output {name!r} named by the manifest is not in the graph "
                       f"(graph outputs: {[t.name for t in info.outputs]}); re-export the bundle")
    if found.elem_type != FLOAT:
        raise BfmError(f"{where}: output {name!r} is not float32 (ONNX type {found.elem_type}); re-export the bundle")
    return found


class _Fields:
    """Typed look-ups into the manifest that fail with the dotted name of the offending field."""

    def __init__(self, manifest_path: Path) -> None:
        self.where = manifest_path

    def fail(self, key: str, problem: str) -> BfmError:
        return BfmError(f"{self.where}: field '{key}' {problem}; re-export the bundle with bfm-export")

    def get(self, obj: dict[str, Any], key: str, kind: type | tuple[type, ...], prefix: str = "") -> Any:
        name = f"{prefix}{key}"
        if not isinstance(obj, dict) or key not in obj:
            raise self.fail(name, "is missing")
        value = obj[key]
        # bool is an int subclass; a manifest saying "params": true is still wrong.
        if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
            raise self.fail(name, f"must be {_kind_name(kind)}, got {value!r}")
        if not isinstance(value, kind):
            raise self.fail(name, f"must be {_kind_name(kind)}, got {type(value).__name__}")
        return value

    def number(self, obj: dict[str, Any], key: str, prefix: str = "") -> float:
        return float(self.get(obj, key, (int, float), prefix))


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {int: "an integer", float: "a number", str: "a string", dict: "an object", list: "a list"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _parse(root: Path, manifest: Any, f: _Fields) -> Bundle:
    if not isinstance(manifest, dict):
        raise BfmError(f"{f.where}: expected a JSON object; re-export the bundle with bfm-export")
    if f.get(manifest, "format", str) != FORMAT:
        raise f.fail("format", f"must be '{FORMAT}', got {manifest['format']!r}")
    version = f.get(manifest, "format_version", int)
    if version != FORMAT_VERSION:
        raise BfmError(
            f"{f.where}: format_version {version} is not supported (this bfm reads version {FORMAT_VERSION}); "
            "re-export the bundle with this version of bfm-export"
        )
    name = f.get(manifest, "name", str)
    contract = _parse_input(f.get(manifest, "input", dict), f)
    embedding_size = f.get(manifest, "embedding_size", int)
    if embedding_size <= 0:
        raise f.fail("embedding_size", "must be positive")
    metric = f.get(manifest, "metric", str)
    if metric != "cosine":
        raise f.fail("metric", f"must be 'cosine', got {metric!r}")
    thresholds = _parse_thresholds(f.get(manifest, "thresholds", dict), f)
    models = _parse_models(root, f.get(manifest, "models", dict), f)
    f.get(manifest, "source", dict)
    f.get(manifest, "tools", dict)
    weights = None
    if "weights" in manifest:
        entry = f.get(manifest, "weights", dict)
        weights = root / _plain_file_name(f.get(entry, "file", str, "weights."), "weights.file", f)
        _check_sha(f.get(entry, "sha256", str, "weights."), "weights.sha256", f)
    detector = _parse_detector(root, f.get(manifest, "detector", dict), f) if "detector" in manifest else None
    mask_threshold = None
    if "mask_threshold" in manifest:
        entry = f.get(manifest, "mask_threshold", dict)
        value = f.number(entry, "value", "mask_threshold.")
        if not 0.0 < value < 1.0:
            raise f.fail("mask_threshold.value", f"must be a probability in (0, 1), got {value}")
        mask_threshold = Threshold(value, f.get(entry, "calibration", str, "mask_threshold."))
    return Bundle(root, name, manifest, contract, embedding_size, metric, thresholds, models, weights, detector,
                  mask_threshold)


def _parse_detector(root: Path, obj: dict[str, Any], f: _Fields) -> DetectorSpec:
    p = "detector."
    size = f.get(obj, "input_size", list, p)
    if len(size) != 2 or size[0] != size[1] or not all(isinstance(v, int) and not isinstance(v, bool) for v in size):
        raise f.fail(p + "input_size", f"must be [side, side] (a square letterbox), got {size!r}")
    outputs = f.get(obj, "outputs", list, p)
    if not outputs or not all(isinstance(o, str) and o for o in outputs):
        raise f.fail(p + "outputs", "must be a list of output tensor names")
    norm = f.get(obj, "normalisation", dict, p)
    fallback = f.get(obj, "fallback", list, p) if "fallback" in obj else []
    if not all(isinstance(step, str) for step in fallback):
        raise f.fail(p + "fallback", "must be a list of step names such as \"pad:0.25\"")
    try:
        return DetectorSpec(
            file=root / _plain_file_name(f.get(obj, "file", str, p), p + "file", f),
            architecture=f.get(obj, "architecture", str, p),
            decoding=f.get(obj, "decoding", str, p),
            input_name=f.get(obj, "input", str, p),
            output_names=tuple(outputs),
            input_size=size[0],
            mean=f.number(norm, "mean", p + "normalisation."),
            std=f.number(norm, "std", p + "normalisation."),
            channel_order=f.get(obj, "channel_order", str, p),
            score_threshold=f.number(obj, "score_threshold", p),
            nms_threshold=f.number(obj, "nms_threshold", p),
            sha256=_check_sha(f.get(obj, "sha256", str, p), p + "sha256", f),
            licence=f.get(obj, "licence", str, p),
            source=f.get(obj, "source", str, p),
            fallback=parse_chain(fallback),
        )
    except BfmError as exc:
        raise BfmError(f"{f.where}: {exc}; re-export the bundle with bfm-export") from None


def detector_entry(spec: DetectorSpec, params: int) -> dict[str, Any]:
    """The manifest's ``detector`` entry for ``spec`` (its file already in the bundle folder)."""
    return {
        "file": spec.file.name,
        "architecture": spec.architecture,
        "decoding": spec.decoding,
        "input": spec.input_name,
        "outputs": list(spec.output_names),
        "input_size": [spec.input_size, spec.input_size],
        "channel_order": spec.channel_order,
        "normalisation": {"mean": spec.mean, "std": spec.std},
        "score_threshold": spec.score_threshold,
        "nms_threshold": spec.nms_threshold,
        "params": params,
        "sha256": sha256_file(spec.file),
        "licence": spec.licence,
        "source": spec.source,
        **({"fallback": [str(step) for step in spec.fallback]} if spec.fallback else {}),
    }


def _parse_input(obj: dict[str, Any], f: _Fields) -> InputContract:
    p = "input."
    size = f.get(obj, "size", list, p)
    if len(size) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size):
        raise f.fail("input.size", f"must be [height, width], got {size!r}")
    expected = {"layout": "NCHW", "channel_order": "RGB", "dtype": "float32"}
    for key, value in expected.items():
        if f.get(obj, key, str, p) != value:
            raise f.fail(p + key, f"must be '{value}' (the only contract this runtime implements), got {obj[key]!r}")
    norm = f.get(obj, "normalisation", dict, p)
    mean = f.number(norm, "mean", "input.normalisation.")
    std = f.number(norm, "std", "input.normalisation.")
    if std <= 0:
        raise f.fail("input.normalisation.std", "must be positive")
    alignment = f.get(obj, "alignment", dict, p)
    method = f.get(alignment, "method", str, "input.alignment.")
    template = f.get(alignment, "template", list, "input.alignment.")
    try:
        points = tuple((float(x), float(y)) for x, y in template)
    except (TypeError, ValueError):
        raise f.fail("input.alignment.template", "must be a list of [x, y] points") from None
    if len(points) != 5:
        raise f.fail("input.alignment.template", f"must hold 5 points, got {len(points)}")
    return InputContract((size[0], size[1]), "NCHW", "RGB", "float32", mean, std, method, points)


def _parse_thresholds(obj: dict[str, Any], f: _Fields) -> dict[str, Threshold]:
    thresholds = {}
    for route in ROUTES:
        p = f"thresholds.{route}."
        entry = f.get(obj, route, dict, "thresholds.")
        value = f.number(entry, "value", p)
        if not -1.0 <= value <= 1.0:
            raise f.fail(p + "value", f"must be a cosine similarity in [-1, 1], got {value}")
        thresholds[route] = Threshold(value, f.get(entry, "calibration", str, p))
    return thresholds


def _parse_models(root: Path, obj: dict[str, Any], f: _Fields) -> dict[Network, ModelEntry]:
    models: dict[Network, ModelEntry] = {}
    for network in NETWORKS:
        p = f"models.{network}."
        entry = f.get(obj, network, dict, "models.")
        file = _plain_file_name(f.get(entry, "file", str, p), p + "file", f)
        params = f.get(entry, "params", int, p)
        macs = f.get(entry, "macs", int, p)
        models[network] = ModelEntry(
            network=network,
            file=root / file,
            architecture=f.get(entry, "architecture", str, p),
            params=params,
            macs=macs,
            sha256=_check_sha(f.get(entry, "sha256", str, p), p + "sha256", f),
            input_name=f.get(entry, "input", str, p),
            output_name=f.get(entry, "output", str, p),
        )
    return models


def _plain_file_name(name: str, key: str, f: _Fields) -> str:
    # A manifest must not point outside its own folder.
    if not name or Path(name).name != name or name in (".", ".."):
        raise f.fail(key, f"must be a file name inside the bundle, got {name!r}")
    return name


def _check_sha(value: str, key: str, f: _Fields) -> str:
    if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise f.fail(key, "must be a lowercase hex sha256")
    return value

"""A model bundle on disk (``engines/<name>/``): its manifest (schema: ``manifest.py``) and file integrity.

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

from .atomic import recover
from .manifest import FORMAT as FORMAT
from .manifest import FORMAT_VERSION as FORMAT_VERSION
from .manifest import MANIFEST as MANIFEST
from .manifest import InputContract as InputContract
from .manifest import Manifest as Manifest
from .manifest import ModelEntry as ModelEntry
from .manifest import Threshold as Threshold
# re-exported as part of the bundle API (one definition, in contract)
from .contract import MIN_OPSET as MIN_OPSET
from .contract import NETWORKS as NETWORKS
from .contract import ROUTES as ROUTES
from .contract import Network as Network
from .contract import sha256_file as sha256_file
from .detect.spec import DetectorSpec
from .errors import BfmError
from .onnx_graph import FLOAT, GraphInfo, TensorInfo, read_graph_info
from .routing import DEFAULT_MASK_THRESHOLD

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
class Bundle:
    """A validated bundle: paths of the three ONNX graphs, thresholds per route and the input contract."""

    root: Path
    name: str
    manifest: Manifest  # the whole manifest.json, typed; the fields below are its parts the runtime uses
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
        bundle = cls.of(root, Manifest.from_dict(manifest, str(manifest_path), root))
        if verify_files:
            bundle.verify_files()
        return bundle

    @classmethod
    def of(cls, root: Path, manifest: Manifest) -> Bundle:
        """The bundle in folder ``root`` that ``manifest`` describes (its files not checked yet)."""
        weights = None if manifest.weights is None else manifest.weights.file
        return cls(root, manifest.name, manifest, manifest.input, manifest.embedding_size, manifest.metric,
                   manifest.thresholds, manifest.models, weights, manifest.detector, manifest.mask_threshold)

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
        expected = "" if self.manifest.weights is None else self.manifest.weights.sha256
        if sha256_file(self.weights) != expected:  # streamed: it can be large
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

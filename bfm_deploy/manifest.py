"""The bundle manifest (``manifest.json``) as typed dataclasses: one schema for reading and writing it.

Each part has ``from_dict(obj, where)``, which refuses a missing or mistyped field with a one-line ``BfmError``
naming its dotted path, and ``to_dict()``, which gives the JSON object back: ``Manifest.from_dict(d).to_dict()
== d`` for every manifest bfm-export writes, key order included, so a bundle rewritten unchanged is
byte-identical. Keys this version does not read are kept in each part's ``extra`` and written back after the
known ones. File names are resolved against the bundle folder ``root`` (a manifest never points outside it).
The layout is described in ARCHITECTURE.md ("Model bundle").
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .alignment import ARCFACE_TEMPLATE
from .contract import CROP_SIZE, FACE_MEAN, FACE_STD, NETWORKS, ROUTES, Network
from .detect.spec import DetectorSpec
from .errors import BfmError
from .json_fields import REEXPORT, Fields, Where

MANIFEST = "manifest.json"
FORMAT = "bfm-bundle"
FORMAT_VERSION = 1
# The one input contract this runtime implements (``input.layout`` etc. must say so).
LAYOUT, CHANNEL_ORDER, DTYPE = "NCHW", "RGB", "float32"
METRIC = "cosine"  # the one score the runtime computes
ALIGNMENT_METHOD = "similarity-5pt"  # five landmarks onto ARCFACE_TEMPLATE (bfm_deploy.alignment)


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
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def default(cls) -> InputContract:
        """The contract of ``bfm_deploy.contract`` and ``alignment``: what bfm-export writes into every bundle."""
        return cls((CROP_SIZE, CROP_SIZE), LAYOUT, CHANNEL_ORDER, DTYPE, FACE_MEAN, FACE_STD, ALIGNMENT_METHOD,
                   tuple((x, y) for x, y in ARCFACE_TEMPLATE.tolist()))

    @classmethod
    def from_dict(cls, obj: Any, where: Where) -> InputContract:
        f = Fields.of(obj, where)
        size = f.get("size", list)
        if len(size) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size):
            raise f.fail("size", f"must be [height, width], got {size!r}")
        for key, value in {"layout": LAYOUT, "channel_order": CHANNEL_ORDER, "dtype": DTYPE}.items():
            if f.text(key) != value:
                raise f.fail(key, f"must be '{value}' (the only contract this runtime implements), got {obj[key]!r}")
        norm = f.child("normalisation")
        mean, std = norm.number("mean"), norm.number("std")
        if std <= 0:
            raise norm.fail("std", "must be positive")
        alignment = f.child("alignment")
        method = alignment.text("method")
        template = alignment.get("template", list)
        if not all(isinstance(p, list) and len(p) == 2 and all(_is_number(v) for v in p) for p in template):
            raise alignment.fail("template", "must be a list of [x, y] points")
        if len(template) != 5:
            raise alignment.fail("template", f"must hold 5 points, got {len(template)}")
        # Extra keys of the nested objects would be lost on writing: refuse them rather than drop them.
        for part in (norm, alignment):
            _no_rest(part)
        return cls((size[0], size[1]), LAYOUT, CHANNEL_ORDER, DTYPE, mean, std, method,
                   tuple((x, y) for x, y in template), f.rest())

    def to_dict(self) -> dict[str, Any]:
        return {
            "size": list(self.size),
            "layout": self.layout,
            "channel_order": self.channel_order,
            "dtype": self.dtype,
            "normalisation": {"mean": self.mean, "std": self.std},
            "alignment": {"method": self.alignment_method, "template": [list(p) for p in self.template]},
            **copy.deepcopy(self.extra),
        }


@dataclass(frozen=True)
class Threshold:
    """A calibrated threshold: its value and how it was found (shown by the tools)."""

    value: float
    calibration: str
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, obj: Any, where: Where, low: float, high: float, what: str, open_range: bool = False) -> Threshold:
        """The entry at ``where``, its value in [low, high] (``open_range``: in (low, high)), described as ``what``."""
        f = Fields.of(obj, where)
        value = f.number("value")
        inside = low < value < high if open_range else low <= value <= high
        if not inside:
            interval = f"({low:g}, {high:g})" if open_range else f"[{low:g}, {high:g}]"
            raise f.fail("value", f"must be {what} in {interval}, got {value}")
        return cls(value, f.text("calibration"), f.rest())

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "calibration": self.calibration, **copy.deepcopy(self.extra)}


@dataclass(frozen=True)
class Parity:
    """How closely an ONNX graph matched its torch network at export, on real faces."""

    max_abs_diff: float
    min_cosine: float

    @classmethod
    def from_dict(cls, obj: Any, where: Where) -> Parity:
        f = Fields.of(obj, where)
        parity = cls(f.number("max_abs_diff"), f.number("min_cosine"))
        _no_rest(f)
        return parity

    def to_dict(self) -> dict[str, Any]:
        return {"max_abs_diff": self.max_abs_diff, "min_cosine": self.min_cosine}


@dataclass(frozen=True)
class ModelEntry:
    """One of the three networks: its ONNX file, size and tensor names (``models.<network>``)."""

    network: Network
    file: Path  # inside the bundle folder
    architecture: str
    params: int
    macs: int
    sha256: str
    input_name: str
    output_name: str
    parity: Parity | None = None  # absent from hand-made bundles
    note: str | None = None  # where a network came from, when export says more than ``source``
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, obj: Any, where: Where, root: Path, network: Network) -> ModelEntry:
        f = Fields.of(obj, where)
        file = root / f.file_name("file")
        params, macs = f.integer("params"), f.integer("macs")
        parity = Parity.from_dict(f.get("parity", dict), f.at("parity")) if f.has("parity") else None
        return cls(network, file, f.text("architecture"), params, macs, f.sha256("sha256"), f.text("input"),
                   f.text("output"), parity, f.optional("note", str), f.rest())

    def to_dict(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "file": self.file.name,
            "architecture": self.architecture,
            "params": self.params,
            "macs": self.macs,
            "sha256": self.sha256,
            "input": self.input_name,
            "output": self.output_name,
        }
        if self.parity is not None:
            entry["parity"] = self.parity.to_dict()
        if self.note is not None:
            entry["note"] = self.note
        return {**entry, **copy.deepcopy(self.extra)}


@dataclass(frozen=True)
class WeightsEntry:
    """The optional ``weights.safetensors`` of the torch backend (``weights``)."""

    file: Path
    sha256: str
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, obj: Any, where: Where, root: Path) -> WeightsEntry:
        f = Fields.of(obj, where)
        return cls(root / f.file_name("file"), f.sha256("sha256"), f.rest())

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file.name, "sha256": self.sha256, **copy.deepcopy(self.extra)}


@dataclass(frozen=True)
class Manifest:
    """A whole ``manifest.json``. ``source`` and ``tools`` are provenance, free-form objects kept as written."""

    name: str
    input: InputContract
    embedding_size: int
    metric: str
    thresholds: dict[str, Threshold]  # one per route, in ``ROUTES`` order
    models: dict[Network, ModelEntry]  # one per network, in ``NETWORKS`` order
    source: dict[str, Any]
    tools: dict[str, Any]
    created: str | None = None
    licence: str | None = None
    detector: DetectorSpec | None = None
    mask_threshold: Threshold | None = None  # the classifier probability that counts as masked; None: 0.5
    weights: WeightsEntry | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    format: str = FORMAT
    format_version: int = FORMAT_VERSION

    @classmethod
    def from_dict(cls, obj: Any, where: str = MANIFEST, root: Path = Path()) -> Manifest:
        """The manifest ``obj`` read from the file ``where`` of the bundle folder ``root``."""
        if not isinstance(obj, dict):
            raise BfmError(f"{where}: expected a JSON object; {REEXPORT}")
        f = Fields(obj, Where(where))
        if f.text("format") != FORMAT:
            raise f.fail("format", f"must be '{FORMAT}', got {obj['format']!r}")
        version = f.integer("format_version")
        if version != FORMAT_VERSION:
            raise BfmError(f"{where}: format_version {version} is not supported (this bfm reads version "
                           f"{FORMAT_VERSION}); re-export the bundle with this version of bfm-export")
        name = f.text("name")
        created = f.optional("created", str)
        contract = InputContract.from_dict(f.get("input", dict), f.at("input"))
        embedding_size = f.integer("embedding_size")
        if embedding_size <= 0:
            raise f.fail("embedding_size", "must be positive")
        metric = f.text("metric")
        if metric != METRIC:
            raise f.fail("metric", f"must be '{METRIC}', got {metric!r}")
        routes = f.child("thresholds")
        thresholds = {route: Threshold.from_dict(routes.get(route, dict), routes.at(route), -1.0, 1.0,
                                                 "a cosine similarity") for route in ROUTES}
        _no_rest(routes)
        networks = f.child("models")
        models = {network: ModelEntry.from_dict(networks.get(network, dict), networks.at(network), root, network)
                  for network in NETWORKS}
        _no_rest(networks)
        source, tools = f.get("source", dict), f.get("tools", dict)
        licence = f.optional("licence", str)
        detector = (DetectorSpec.from_dict(f.get("detector", dict), f.at("detector"), root)
                    if f.has("detector") else None)
        mask_threshold = (Threshold.from_dict(f.get("mask_threshold", dict), f.at("mask_threshold"), 0.0, 1.0,
                                              "a probability", open_range=True)
                          if f.has("mask_threshold") else None)
        weights = WeightsEntry.from_dict(f.get("weights", dict), f.at("weights"), root) if f.has("weights") else None
        return cls(name, contract, embedding_size, metric, thresholds, models, source, tools, created, licence,
                   detector, mask_threshold, weights, f.rest())

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of ``manifest.json``, keys in the order bfm-export writes them."""
        data: dict[str, Any] = {"format": self.format, "format_version": self.format_version, "name": self.name}
        if self.created is not None:
            data["created"] = self.created
        data |= {
            "input": self.input.to_dict(),
            "embedding_size": self.embedding_size,
            "metric": self.metric,
            "thresholds": {route: t.to_dict() for route, t in self.thresholds.items()},
            "models": {network: m.to_dict() for network, m in self.models.items()},
            "source": copy.deepcopy(self.source),  # a fresh object: editing it leaves this manifest alone
            "tools": copy.deepcopy(self.tools),
        }
        optional = {"licence": self.licence, "detector": self.detector, "mask_threshold": self.mask_threshold,
                    "weights": self.weights}
        for key, value in optional.items():
            if value is not None:
                data[key] = value if isinstance(value, str) else value.to_dict()
        return {**data, **copy.deepcopy(self.extra)}

    def to_json(self) -> str:
        """The text of ``manifest.json`` as bfm-export writes it: ``to_dict`` indented by 2, a final newline."""
        return json.dumps(self.to_dict(), indent=2) + "\n"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _no_rest(f: Fields) -> None:
    """Refuse keys of an object whose schema keeps none (a route or network this bfm does not know)."""
    unknown = f.rest()
    if unknown:
        raise f.fail(next(iter(unknown)), "is not a field this bfm knows")

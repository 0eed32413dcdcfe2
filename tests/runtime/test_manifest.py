"""The manifest schema: from_dict/to_dict round-trip byte for byte; bad fields are named by their dotted path."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from bfm_deploy.bundle import Bundle
from bfm_deploy.detect.spec import DetectorSpec
from bfm_deploy.errors import BfmError
from bfm_deploy.json_fields import Where
from bfm_deploy.manifest import Manifest

DEMO_MANIFEST = Path(__file__).resolve().parents[2] / "engines" / "demo" / "manifest.json"


def _dumped(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2) + "\n"  # as bfm-export and --update write manifest.json


def _demo() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DEMO_MANIFEST.read_text(encoding="utf-8"))
    return data


@pytest.mark.parametrize("which", ["demo", "export"])
def test_round_trip_is_byte_identical(which: str, mbf_bundle: Path) -> None:
    path = DEMO_MANIFEST if which == "demo" else mbf_bundle / "manifest.json"
    text = path.read_text(encoding="utf-8")
    manifest = Manifest.from_dict(json.loads(text), str(path), path.parent)
    assert manifest.to_dict() == json.loads(text)
    assert _dumped(manifest.to_dict()) == text


def test_parts_are_typed() -> None:
    manifest = Manifest.from_dict(_demo(), root=Path("/b"))
    assert manifest.input.size == (112, 112) and manifest.input.template[2] == (56.0252, 71.7366)
    assert manifest.models["full"].file == Path("/b/full.onnx") and manifest.models["full"].parity is not None
    assert manifest.thresholds["partial"].value == 0.246096
    assert manifest.detector is not None and str(manifest.detector.fallback[2]) == "detector:yunet+pad:0.25"
    assert manifest.detector.params == 626372 and manifest.detector.file == Path("/b/detector.onnx")
    assert manifest.mask_threshold is not None and manifest.mask_threshold.value == 0.207056
    assert manifest.weights is None and manifest.extra == {}


def test_unknown_keys_are_kept_after_the_known_ones() -> None:
    data = _demo()
    data["models"]["full"] = {"comment": "kept", **data["models"]["full"]}
    data["future"] = {"x": 1}
    data["detector"]["anchors"] = 2
    out = Manifest.from_dict(data).to_dict()
    assert out == data
    assert list(out["models"]["full"])[-1] == "comment" and list(out)[-1] == "future"


def test_json_numbers_keep_their_type() -> None:
    data = _demo()
    data["detector"]["normalisation"]["std"] = 128
    data["thresholds"]["full"]["value"] = 0
    assert _dumped(Manifest.from_dict(data).to_dict()) == _dumped(data)


def test_to_dict_is_a_fresh_object() -> None:
    manifest = Manifest.from_dict(_demo())
    out = manifest.to_dict()
    out["source"]["classifier"] = "edited"
    out["tools"].clear()
    assert "which had it from step-" in manifest.source["classifier"] and manifest.tools["opset"] == 17


def test_optional_parts_absent_stay_absent() -> None:
    data = _demo()
    for key in ("detector", "mask_threshold", "created", "licence"):
        del data[key]
    del data["models"]["classifier"]["parity"]
    manifest = Manifest.from_dict(data)
    assert manifest.detector is None and manifest.mask_threshold is None and manifest.created is None
    assert _dumped(manifest.to_dict()) == _dumped(data)


def test_detector_spec_round_trip_without_params_or_chain() -> None:
    entry = _demo()["detector"]
    del entry["params"], entry["fallback"]
    spec = DetectorSpec.from_dict(entry, Where("m.json", "detector"), Path("/b"))
    assert spec.params is None and spec.fallback == ()
    assert spec.to_dict() == entry and list(spec.to_dict()) == list(entry)


def _edited(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    data = copy.deepcopy(_demo())
    obj = data
    for key in path[:-1]:
        obj = obj[key]
    obj[path[-1]] = value
    return data


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("thresholds", "masked"), {"value": 0.1, "calibration": ""}, "field 'thresholds.masked' is not a field"),
        (("models", "extra"), {}, "field 'models.extra' is not a field"),
        (("models", "full", "parity", "min_cosine"), "1", "field 'models.full.parity.min_cosine' must be an integer or a number, got str"),
        (("models", "full", "note"), 3, "field 'models.full.note' must be a string, got int"),
        (("input", "alignment", "template"), [[1, 2]] * 4, "field 'input.alignment.template' must hold 5 points"),
        (("input", "alignment", "template"), [["1", 2]] * 5, "must be a list of [x, y] points"),
        (("input", "normalisation", "std"), 0, "field 'input.normalisation.std' must be positive"),
        (("weights",), {"file": "w.safetensors", "sha256": "x"}, "field 'weights.sha256' must be a lowercase hex"),
        (("mask_threshold", "value"), 1, "field 'mask_threshold.value' must be a probability in (0, 1), got 1"),
        (("detector", "normalisation"), [], "field 'detector.normalisation' must be an object, got list"),
        (("detector", "params"), 1.5, "field 'detector.params' must be an integer, got float"),
        (("detector", "fallback"), ["pad:9"], "m.json: detector fallback step"),
        (("created",), None, "field 'created' must be a string, got NoneType"),
    ],
)
def test_bad_field_is_named_by_its_path(path: tuple[str, ...], value: Any, message: str) -> None:
    with pytest.raises(BfmError) as info:
        Manifest.from_dict(_edited(path, value), "m.json")
    assert message in str(info.value) and str(info.value).startswith("m.json: ") and "\n" not in str(info.value)
    assert str(info.value).endswith("re-export the bundle with bfm-export")


def test_bundle_holds_the_typed_manifest(mbf_bundle: Path) -> None:
    bundle = Bundle.load(mbf_bundle, verify_files=False)
    assert isinstance(bundle.manifest, Manifest)
    assert bundle.models is bundle.manifest.models and bundle.detector == bundle.manifest.detector
    assert bundle.weights == mbf_bundle / "weights.safetensors" == bundle.manifest.weights.file  # type: ignore[union-attr]

"""bfm-export --update BUNDLE --int8 PAIRS and the openvino-int8 backend: NNCF quantization behind its gate."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("openvino")
pytest.importorskip("nncf")

from bfm_deploy.backends import create_backend  # noqa: E402
from bfm_deploy.bundle import Bundle, sha256_file  # noqa: E402
from bfm_deploy.errors import BfmError  # noqa: E402
from bfm_deploy.manifest import Manifest  # noqa: E402
from bfm_deploy.verifier import Verifier  # noqa: E402
from bfm_train.export import int8 as int8_module  # noqa: E402
from bfm_train.export.calibrate import read_labelled_pairs  # noqa: E402
from bfm_train.export.update import UpdateOptions, update_bundle  # noqa: E402
from tests.conftest import DARKEN  # noqa: E402

QUIET = {"log": lambda _m: None}


@pytest.fixture(autouse=True)
def _openvino_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BFM_OPENVINO_CACHE", str(tmp_path / "openvino-cache"))  # not the user's cache


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory, data_dir: Path) -> Path:
    """LFW fold 1 (training identities) as bright pairs (full for the test classifier) and darkened twins
    (masked for it: partial), interleaved so that both halves of the file hold both routes."""
    root = tmp_path_factory.mktemp("int8_pairs")
    lfw = read_labelled_pairs(data_dir / "lfw" / "pairs.txt")
    lines = []
    for p in lfw[:30] + lfw[300:330]:
        lines.append(f"{p.left}\t{p.right}\t{int(p.same)}")
        dark = []
        for image in (p.left, p.right):
            target = root / f"{image.stem}.png"
            cv2.imwrite(str(target), (cv2.imread(str(image)).astype(np.float32) * DARKEN).astype(np.uint8))
            dark.append(target)
        lines.append(f"{dark[0]}\t{dark[1]}\t{int(p.same)}")
    order = np.random.default_rng(0).permutation(len(lines))
    path = root / "pairs.tsv"
    path.write_text("\n".join(lines[i] for i in order) + "\n")
    return path


@pytest.fixture(scope="module")
def int8_bundle(tmp_path_factory, mbf_bundle: Path, pairs_file: Path) -> Path:
    copy = tmp_path_factory.mktemp("int8") / "bundle"
    shutil.copytree(mbf_bundle, copy)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(int8_module, "MIN_CHECK_PAIRS", 20)  # a test-sized file: about 30 check pairs a route
        update_bundle(copy, UpdateOptions(int8=pairs_file), **QUIET)
    return copy


def test_update_writes_int8_extractors_with_hashes_and_the_gate(int8_bundle: Path, mbf_bundle: Path) -> None:
    bundle = Bundle.load(int8_bundle)
    variant = bundle.manifest.int8
    assert variant is not None and set(variant.graphs) == {"full", "partial"}
    for graph in variant.graphs.values():
        assert sha256_file(graph.file) == graph.sha256 and sha256_file(graph.weights_file) == graph.weights_sha256
    for route in ("full", "partial"):
        report = variant.gate[route]
        assert report["check_pairs"] >= 20 and report["agreement"] >= int8_module.MIN_AGREEMENT
    assert variant.gate["full"]["check_pairs"] + variant.gate["partial"]["check_pairs"] == 60  # the second half
    # nothing else changed: the FP32 graphs and the thresholds are the bundle's
    before = Bundle.load(mbf_bundle)
    assert {n: m.sha256 for n, m in bundle.models.items()} == {n: m.sha256 for n, m in before.models.items()}
    assert bundle.thresholds == before.thresholds
    data = json.loads((int8_bundle / "manifest.json").read_text())
    assert Manifest.from_dict(data, root=int8_bundle).to_dict() == data


def test_int8_backend_decides_as_ort_on_real_pairs(int8_bundle: Path, data_dir: Path) -> None:
    lfw = read_labelled_pairs(data_dir / "lfw" / "pairs.txt")
    chosen = [(p.left, p.right) for p in lfw[:20] + lfw[300:320]]
    with Verifier(int8_bundle, "ort") as ort, Verifier(int8_bundle, "openvino-int8") as int8:
        want = list(ort.verify_many(chosen, aligned=True))
        got = list(int8.verify_many(chosen, aligned=True))
        assert int8.backend.describe()["precision"] == "int8"
    assert sum(a.same == b.same for a, b in zip(want, got)) >= len(chosen) - 1
    assert max(abs(a.score - b.score) for a, b in zip(want, got)) < 0.1
    assert any(abs(a.score - b.score) > 1e-4 for a, b in zip(want, got))  # the INT8 graphs, not the FP32 ones


def test_a_gate_that_fails_leaves_the_bundle_unchanged(tmp_path: Path, mbf_bundle: Path, pairs_file: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    copy = tmp_path / "bundle"
    shutil.copytree(mbf_bundle, copy)
    before = {p.name: p.read_bytes() for p in copy.iterdir() if p.is_file()}
    monkeypatch.setattr(int8_module, "MIN_CHECK_PAIRS", 20)
    monkeypatch.setattr(int8_module, "MIN_AGREEMENT", 1.01)  # no INT8 graph decides as FP32 on 101% of pairs
    with pytest.raises(BfmError, match="fails the gate"):
        update_bundle(copy, UpdateOptions(int8=pairs_file), **QUIET)
    assert {p.name: p.read_bytes() for p in copy.iterdir() if p.is_file()} == before


def test_too_few_pairs_for_the_gate_is_one_line(tmp_path: Path, mbf_bundle: Path, pairs_file: Path) -> None:
    copy = tmp_path / "bundle"
    shutil.copytree(mbf_bundle, copy)
    with pytest.raises(BfmError, match=r"the gate needs .* >= 100 in the second"):
        update_bundle(copy, UpdateOptions(int8=pairs_file), **QUIET)


def test_int8_backend_refuses_a_bundle_without_them_and_a_changed_file(tmp_path: Path, mbf_bundle: Path,
                                                                       int8_bundle: Path) -> None:
    with pytest.raises(BfmError, match=r"has no INT8 extractors: make them with bfm-export --update .* --int8"):
        create_backend("openvino-int8", Bundle.load(mbf_bundle), cache_dir=tmp_path / "cache")
    copy = tmp_path / "bundle"
    shutil.copytree(int8_bundle, copy)
    weights = copy / "full.int8.bin"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(BfmError, match="full.int8.bin does not match the sha256"):
        create_backend("openvino-int8", Bundle.load(copy), cache_dir=tmp_path / "cache")


def test_a_new_classifier_threshold_drops_the_stale_int8(tmp_path: Path, int8_bundle: Path, data_dir: Path) -> None:
    """The gate was passed on the old routing: a recalibrated mask threshold removes the variant and its files."""
    copy = tmp_path / "bundle"
    shutil.copytree(int8_bundle, copy)
    calibration = tmp_path / "mask.tsv"
    faces = sorted((data_dir / "lfw" / "aligned112").glob("A*/*.jpg"))[:12]
    lines = []
    for face in faces:
        dark = tmp_path / f"{face.stem}_dark.png"
        cv2.imwrite(str(dark), (cv2.imread(str(face)).astype(np.float32) * DARKEN).astype(np.uint8))
        lines += [f"{face}\t0", f"{dark}\t1"]
    calibration.write_text("\n".join(lines) + "\n")
    update_bundle(copy, UpdateOptions(mask_calibration=calibration), **QUIET)
    bundle = Bundle.load(copy)
    assert bundle.manifest.int8 is None and bundle.mask_threshold_entry is not None
    assert not list(copy.glob("*.int8.*"))


def test_auto_never_picks_int8() -> None:
    from bfm_deploy.backends.openvino_backend import resolve_precision

    for flags in (frozenset(), frozenset({"avx512f", "avx512_bf16"}), frozenset({"amx_bf16", "amx_tile"})):
        assert resolve_precision("auto", flags) in ("f32", "bf16")
    assert resolve_precision("int8", frozenset()) == "int8"

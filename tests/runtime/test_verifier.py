"""Verifier: preprocessing, mask routing (cases 1-3), batching, backends agreeing on real LFW pairs."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from tests.conftest import BUNDLE_THRESHOLDS, DARKEN

from bfm_deploy.backends import Backend, create_backend
from bfm_deploy.bundle import Bundle
from bfm_deploy.datasets import read_lfw_pairs
from bfm_deploy.errors import BfmError
from bfm_deploy.tensor import preprocess
from bfm_deploy.verifier import PairError, Verifier


@pytest.fixture(scope="module")
def ort_verifier(runtime_bundle: Path):
    with Verifier(runtime_bundle, backend="ort") as verifier:
        yield verifier


@pytest.fixture(scope="module")
def lfw_pairs(data_dir: Path):
    """Fold 1 of LFW View 2: the first 10 same and the first 10 different pairs."""
    pairs = read_lfw_pairs(data_dir / "lfw" / "pairs.txt", data_dir / "lfw" / "aligned112")
    return pairs[:10] + pairs[300:310]


def dark(path: Path) -> np.ndarray:
    """The face scaled towards black: the test bundle's classifier calls such a face masked."""
    return (cv2.imread(str(path)).astype(np.float32) * DARKEN).astype(np.uint8)


def test_preprocess_follows_the_tensor_contract() -> None:
    crop = np.zeros((112, 112, 3), np.uint8)
    crop[..., 0], crop[..., 1], crop[..., 2] = 0, 127, 255  # B, G, R
    batch = preprocess([crop, crop])
    assert batch.shape == (2, 3, 112, 112) and batch.dtype == np.float32 and batch.flags.c_contiguous
    assert batch[0, :, 5, 5] == pytest.approx([1.0, (127 - 127.5) / 127.5, -1.0])  # R, G, B


def test_ort_and_torch_agree_on_real_pairs(runtime_bundle: Path, ort_verifier: Verifier, lfw_pairs) -> None:
    pytest.importorskip("torch")
    items = [(p.left, p.right) for p in lfw_pairs]
    by_ort = list(ort_verifier.verify_many(items, aligned=True))
    with Verifier(runtime_bundle, backend="torch") as torch_verifier:
        assert torch_verifier.backend.name == "torch"
        by_torch = list(torch_verifier.verify_many(items, aligned=True))
    assert [r.same for r in by_ort] == [r.same for r in by_torch]
    assert np.allclose([r.score for r in by_ort], [r.score for r in by_torch], atol=1e-4)
    # And the decisions are right: w600k_mbf verifies LFW at ~99.5%.
    correct = sum(r.same == p.same for r, p in zip(by_ort, lfw_pairs))
    assert correct >= 19
    assert all(r.case == 1 and r.route == "full" for r in by_ort)  # real faces are unmasked here


def test_routing_cases_thresholds_and_extractors(ort_verifier: Verifier, lfw_pairs) -> None:
    same = lfw_pairs[0]
    a, b = same.left, same.right
    results = list(ort_verifier.verify_many([(a, b), (dark(a), b), (a, dark(b)), (dark(a), dark(b))], aligned=True))
    assert [r.case for r in results] == [1, 2, 2, 3]
    assert [r.route for r in results] == ["full", "partial", "partial", "partial"]
    assert [r.threshold for r in results] == [BUNDLE_THRESHOLDS["full"]] + [BUNDLE_THRESHOLDS["partial"]] * 3
    assert results[0].mask_probability[0] < 0.01 and results[1].mask_probability[0] > 0.99
    assert results[1].mask_probability[1] < 0.01 and results[3].mask_probability[1] > 0.99
    # Each route's score is the cosine of that route's extractor (E_F and E_P differ in this bundle).
    for result, (x, y) in zip(results, [(a, b), (dark(a), b), (a, dark(b)), (dark(a), dark(b))]):
        emb = ort_verifier.embed([x, y], route=result.route, aligned=True)
        other = ort_verifier.embed([x, y], route="full" if result.route == "partial" else "partial", aligned=True)
        assert result.score == pytest.approx(float(emb[0] @ emb[1]), abs=1e-5)
        assert abs(result.score - float(other[0] @ other[1])) > 1e-3


class RecordingBackend(Backend):
    """Stands in for a real backend: mask logits from the image itself, records every call."""

    name = "recording"

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []
        self.concurrent: list[dict[str, int]] = []

    def infer(self, network, batch):  # noqa: ANN001, ANN201
        self.calls.append((network, len(batch)))
        if network == "classifier":
            masked = batch.mean(axis=(1, 2, 3)) < -0.5  # dark images
            return np.stack([np.where(masked, 0.0, 5.0), np.where(masked, 5.0, 0.0)], 1).astype(np.float32)
        rng = np.random.default_rng(int(abs(batch.sum()) * 1000) % 2**32)
        return rng.normal(size=(len(batch), 512)).astype(np.float32)

    def infer_concurrent(self, jobs):  # noqa: ANN001, ANN201
        self.concurrent.append({k: len(v) for k, v in jobs.items()})
        return super().infer_concurrent(jobs)


def test_batches_are_classified_once_and_split_by_route(runtime_bundle: Path) -> None:
    backend = RecordingBackend()
    light = np.full((112, 112, 3), 200, np.uint8)
    black = np.zeros((112, 112, 3), np.uint8)
    pairs = [(light, light), (black, light), (light, light), (black, black), (light, black)]
    verifier = Verifier(Bundle.load(runtime_bundle, verify_files=False), backend=backend, batch_size=6)
    results = list(verifier.verify_many(pairs, aligned=True))
    assert [r.case for r in results] == [1, 2, 1, 3, 2]
    # batch_size 6 -> 3 pairs per batch: one classifier call of 6 faces, then 4 and 2 faces per route.
    assert [c for c in backend.calls if c[0] == "classifier"] == [("classifier", 6), ("classifier", 4)]
    assert backend.concurrent == [{"full": 4, "partial": 2}, {"partial": 4}]


def test_verify_many_matches_verify_and_keeps_order(ort_verifier: Verifier, lfw_pairs) -> None:
    items = [(p.left, p.right) for p in lfw_pairs[8:13]]
    small = Verifier(ort_verifier.bundle, backend=ort_verifier.backend, batch_size=4)  # 2 pairs per batch
    batched = list(small.verify_many(items, aligned=True))
    single = [ort_verifier.verify(a, b, aligned=True) for a, b in items]
    assert [r.same for r in batched] == [r.same for r in single]
    assert np.allclose([r.score for r in batched], [r.score for r in single], atol=1e-5)


def test_bad_pair_is_collected_not_fatal(ort_verifier: Verifier, lfw_pairs, tmp_path: Path) -> None:
    good = (lfw_pairs[0].left, lfw_pairs[0].right)
    bad = (lfw_pairs[1].left, tmp_path / "missing.jpg")
    results = list(ort_verifier.verify_many([good, bad, good], aligned=True, errors="collect"))
    assert isinstance(results[1], PairError) and "missing.jpg" in results[1].message
    assert results[0] == results[2] and results[0].same
    with pytest.raises(BfmError, match="missing.jpg"):
        list(ort_verifier.verify_many([good, bad], aligned=True))


def test_embed_and_mask_probability(ort_verifier: Verifier, lfw_pairs) -> None:
    images = [lfw_pairs[0].left, dark(lfw_pairs[0].left), lfw_pairs[12].right]
    emb = ort_verifier.embed(images, route="partial", aligned=True)
    assert emb.shape == (3, 512) and emb.dtype == np.float32
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    probs = ort_verifier.mask_probability(images, aligned=True)
    assert probs.shape == (3,) and probs[1] > 0.99 and probs[0] < 0.01 and probs[2] < 0.01
    with pytest.raises(BfmError, match="route"):
        ort_verifier.embed(images, route="both", aligned=True)  # type: ignore[arg-type]


def test_aligned_input_must_be_112(ort_verifier: Verifier) -> None:
    with pytest.raises(BfmError, match="112x112.*drop --aligned"):
        ort_verifier.embed([np.zeros((100, 120, 3), np.uint8)], aligned=True)


def test_detection_path_on_raw_lfw_photos(ort_verifier: Verifier, data_dir: Path) -> None:
    raw = data_dir / "lfw" / "raw-fold1"
    same = sorted((raw / "Abel_Pacheco").glob("*.jpg"))[:2]
    other = sorted((raw / "Abdul_Rahman").glob("*.jpg"))[:1]
    if len(same) < 2 or not other:
        pytest.skip("raw LFW photos of the expected identities are absent")
    assert ort_verifier.verify(same[0], same[1]).same
    assert not ort_verifier.verify(same[0], other[0]).same


def test_backend_choice(runtime_bundle: Path) -> None:
    bundle = Bundle.load(runtime_bundle)
    with create_backend("auto", bundle) as backend:  # no GPU here: auto ends at openvino (AVX-512) or ort on CPU
        assert backend.name in ("trt", "ort", "torch", "openvino-f32", "openvino-bf16")
        if backend.name == "ort":
            assert backend.device in ("cpu", "cuda")  # type: ignore[attr-defined]
    with pytest.raises(BfmError, match="unknown backend"):
        create_backend("tensorflow", bundle)
    with pytest.raises(BfmError, match="takes no options"):
        create_backend("auto", bundle, device="cpu")
    with pytest.raises(BfmError):
        Verifier(bundle, batch_size=1)


def test_malformed_pairs_are_collected_in_order_or_raised(ort_verifier: Verifier, lfw_pairs) -> None:
    a, b = lfw_pairs[0].left, lfw_pairs[0].right
    results = list(ort_verifier.verify_many([(a, b), "ab", (a,), (a, b, b), (a, b)], aligned=True, errors="collect"))
    assert [type(r).__name__ for r in results] == ["VerifyResult", "PairError", "PairError", "PairError", "VerifyResult"]
    assert "a pair must be two images" in results[2].message and "of 1" in results[2].message  # type: ignore[union-attr]
    assert results[0] == results[4]
    with pytest.raises(BfmError, match="a pair must be two images"):
        list(ort_verifier.verify_many([(a, b), 42], aligned=True))  # type: ignore[list-item]

"""bfm_deploy.matching: the batched 1:N search is the per-probe one, and both follow the balanced matching rule.

The rule, written out here independently of the implementation: an unmasked probe's E_F against unmasked
templates, its E_P against masked ones; a masked probe's E_P against every template; margin = score - the route's
verification threshold; ranked by margin - the route's open-set threshold, ties by the lower face id; one
candidate per identity, its best template.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bfm_deploy.bundle import Bundle
from bfm_deploy.gallery import FaceFeatures, Gallery
from bfm_deploy.matching import ExactIndex

SIZE = 512


def unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)


def random_gallery(rng: np.random.Generator, people: int) -> list[tuple[str, list[FaceFeatures]]]:
    """Identities of 1-3 faces around a centre, about a third masked; some templates exactly repeated (within an
    identity and across two), so that scores tie and the face id decides."""
    enrolled = []
    for i in range(people):
        centre_full, centre_partial = rng.standard_normal((2, SIZE))
        faces = []
        for _ in range(int(rng.integers(1, 4))):
            masked = bool(rng.random() < 0.35)
            faces.append(FaceFeatures(0.9 if masked else 0.1, masked,
                                      unit(centre_full + 0.8 * rng.standard_normal(SIZE)),
                                      unit(centre_partial + 0.8 * rng.standard_normal(SIZE))))
        if i % 5 == 0:
            faces.append(faces[0])  # the same template twice
        enrolled.append((f"p{i:03d}", faces))
    enrolled.append(("twin", [enrolled[3][1][0]]))  # another identity's template: ties across identities
    return enrolled


def random_probes(rng: np.random.Generator, gallery: list[tuple[str, list[FaceFeatures]]], n: int) -> list[FaceFeatures]:
    probes = []
    for i in range(n):
        _, faces = gallery[int(rng.integers(len(gallery)))]
        face = faces[int(rng.integers(len(faces)))]
        if i % 7 == 0:
            probes.append(face)  # an enrolled template itself: it ties with its copies
            continue
        masked = bool(rng.random() < 0.5)
        probes.append(FaceFeatures(0.8 if masked else 0.2, masked, unit(face.full + 0.7 * rng.standard_normal(SIZE)),
                                   unit(face.partial + 0.7 * rng.standard_normal(SIZE))))
    return probes


def reference(gallery: list[tuple[str, list[FaceFeatures]]], probe: FaceFeatures, thresholds: dict[str, float],
              open_set: dict[str, float], top_k: int) -> list[tuple[str, int, str, float]]:
    """The rule over every template at once: (identity, face id, route, key) of the best top_k identities."""
    rows = []
    face_id = 0
    for name, faces in gallery:
        for face in faces:
            face_id += 1
            route = "full" if not probe.masked and not face.masked else "partial"
            query, template = (probe.full, face.full) if route == "full" else (probe.partial, face.partial)
            score = float(np.dot(unit(query.astype(np.float64)), unit(template.astype(np.float64))))
            rows.append((score - thresholds[route] - open_set[route], face_id, name, route))
    rows.sort(key=lambda row: (-row[0], row[1]))
    best: dict[str, tuple[str, int, str, float]] = {}
    for key, face_id, name, route in rows:
        best.setdefault(name, (name, face_id, route, key))
    return list(best.values())[:top_k]


def enrol(folder: Path, bundle: Bundle, gallery: list[tuple[str, list[FaceFeatures]]]) -> Gallery:
    opened = Gallery.open(folder, bundle, create=True)
    for name, faces in gallery:
        opened.add(name, faces)
    return opened


@pytest.mark.parametrize("seed", [0, 1])
def test_a_batch_of_probes_gets_bit_for_bit_what_each_probe_alone_gets(tmp_path: Path, demo: Bundle, seed: int) -> None:
    rng = np.random.default_rng(seed)
    gallery = random_gallery(rng, 120)
    probes = random_probes(rng, gallery, 150)
    with enrol(tmp_path / "g", demo, gallery) as g:
        g.set_open_set(0.03, 0.07, 0.01, "test")
        for top_k, margin in ((1, None), (3, None), (5, -0.2)):
            batch = g.identify_many(probes, top_k=top_k, margin=margin)
            alone = [g.identify(p, top_k=top_k, margin=margin) for p in probes]
            assert batch == alone  # dataclass equality: every identity, face id, route, score and margin exactly
            assert all(len(r.candidates) == top_k for r in batch)
        assert g.identify_many([]) == []


def test_batch_and_probe_follow_the_rule_ties_by_face_id(tmp_path: Path, demo: Bundle) -> None:
    rng = np.random.default_rng(7)
    gallery = random_gallery(rng, 80)
    probes = random_probes(rng, gallery, 90)
    thresholds = {route: demo.threshold(route) for route in ("full", "partial")}
    open_set = {"full": 0.05, "partial": 0.1}
    with enrol(tmp_path / "g", demo, gallery) as g:
        g.set_open_set(open_set["full"], open_set["partial"], 0.01, "test")
        for top_k in (1, 3):
            for probe, result in zip(probes, g.identify_many(probes, top_k=top_k)):
                want = reference(gallery, probe, thresholds, open_set, top_k)
                got = [(c.identity, c.face_id, c.route, c.over_open_set) for c in result.candidates]
                # ids and routes exactly; keys to float32 rounding (the reference sums in float64)
                assert [w[:3] for w in want] == [g_[:3] for g_ in got]
                assert [w[3] for w in want] == pytest.approx([g_[3] for g_ in got], abs=1e-5)
                if abs(want[0][3]) > 1e-5:
                    assert result.identity == (want[0][0] if want[0][3] >= 0 else None)
        # a probe that is p003's first template ties with its copy enrolled later as "twin": p003 wins
        shared = gallery[3][1][0]
        assert [c.identity for c in g.identify(shared, top_k=2).candidates][0] == "p003"
        assert "twin" in [c.identity for c in g.identify(shared, top_k=2).candidates]


def test_an_identity_with_many_faces_makes_the_search_look_further(tmp_path: Path, demo: Bundle) -> None:
    # 80 near copies of one face outrank everyone: the first k = 4 top_k + 16 templates are all "crowd"
    rng = np.random.default_rng(3)
    centre = unit(rng.standard_normal(SIZE))
    crowd = [FaceFeatures(0.1, False, unit(centre + 0.01 * rng.standard_normal(SIZE)), centre) for _ in range(80)]
    others = [(f"o{i}", [FaceFeatures(0.1, False, unit(centre + 2.0 * rng.standard_normal(SIZE)), centre)])
              for i in range(10)]
    with enrol(tmp_path / "g", demo, [("crowd", crowd), *others]) as g:
        probes = [FaceFeatures(0.1, False, centre, centre), FaceFeatures(0.1, False, crowd[5].full, centre)]
        batch = g.identify_many(probes, top_k=4)
        assert batch == [g.identify(p, top_k=4) for p in probes]
        assert [len(r.candidates) for r in batch] == [4, 4] and batch[0].candidates[0].identity == "crowd"
        assert len({c.identity for c in batch[0].candidates}) == 4
        assert len(g.identify(probes[0], top_k=50).candidates) == 11  # every identity, when asked for more


def test_exact_index_rows_equal_single_queries_and_break_ties_by_id() -> None:
    rng = np.random.default_rng(5)
    vectors = unit(rng.standard_normal((300, SIZE)))
    vectors[100:110] = vectors[7]  # ten copies of one template
    index = ExactIndex(SIZE)
    ids = rng.permutation(1000)[:300].astype(np.int64)
    index.add(ids[:200], vectors[:200])
    index.add(ids[200:], vectors[200:])
    queries = np.concatenate([unit(rng.standard_normal((40, SIZE))), vectors[[7, 100]]])
    stored_ids, stored_vectors = index.vectors()
    stored = dict(zip(stored_ids.tolist(), stored_vectors))
    for k in (1, 5, 12, 300, 400):
        scores, found = index.search_many(queries, k)
        assert scores.shape == found.shape == (len(queries), min(k, 300))
        for row, query in enumerate(queries):
            alone_scores, alone_ids = index.search_many(query[None], k)
            assert np.array_equal(alone_scores[0], scores[row]) and np.array_equal(alone_ids[0], found[row])
            # each score is the single query's dot product (einsum), the order by score then id
            assert np.array_equal(scores[row], np.einsum("ij,j->i", np.stack([stored[i] for i in found[row]]), query))
            assert all((a, -i) >= (b, -j) for a, b, i, j in zip(scores[row], scores[row][1:], found[row], found[row][1:]))
        # the copies tie: the lower face ids come first
        copies = np.sort(ids[[7, *range(100, 110)]])
        assert np.array_equal(found[-1][: min(k, 11)], copies[: min(k, 11)])
    index.remove(ids[:150])
    scores, found = index.search_many(queries, 20)
    assert not np.isin(found, ids[:150]).any() and (found >= 0).all()
    assert ExactIndex(SIZE).search_many(queries, 5)[1].shape == (len(queries), 0)


def test_the_lfw_evaluation_ranks_as_the_gallery_does(tmp_path: Path, demo: Bundle) -> None:
    from bfm_deploy.eval.identification import _search

    rng = np.random.default_rng(11)
    gallery = [(name, faces[0]) for name, faces in random_gallery(rng, 60)]
    probes = random_probes(rng, [(n, [f]) for n, f in gallery], 100)
    open_set = {"full": 0.04, "partial": 0.09, "fpir": 0.01}
    with enrol(tmp_path / "g", demo, [(n, [f]) for n, f in gallery]) as g:
        for calibrated in (None, open_set):
            if calibrated is not None:
                g.set_open_set(calibrated["full"], calibrated["partial"], calibrated["fpir"], "test")
            names, margins = _search(demo, [n for n, _ in gallery], [f for _, f in gallery], probes, calibrated)
            best = [g.identify(p, top_k=1).candidates[0] for p in probes]
            assert names == [c.identity for c in best]
            assert np.array_equal(margins, np.array([c.over_open_set for c in best], np.float32))


def test_a_batch_finds_the_same_best_among_templates_closer_than_blas_rounding() -> None:
    # 200 templates whose scores differ by less than the rounding of a BLAS product: the batch's matrix product
    # orders them otherwise than the single query's einsum, and its candidates must still hold the einsum's best
    rng = np.random.default_rng(0)
    base = rng.standard_normal(SIZE)
    vectors = unit(base + 3e-7 * rng.standard_normal((200, SIZE)) * np.abs(base))
    queries = unit(rng.standard_normal((64, SIZE)))
    index = ExactIndex(SIZE)
    index.add(np.arange(200), vectors)
    for k in (1, 3, 20):
        scores, found = index.search_many(queries, k)
        for row, query in enumerate(queries):
            alone_scores, alone_ids = index.search_many(query[None], k)
            assert np.array_equal(alone_ids[0], found[row]) and np.array_equal(alone_scores[0], scores[row])


def test_imports_go_one_way_gallery_above_eval_above_matching() -> None:
    # the gallery's calibrate runs eval's LFW protocol; eval ranks with the rule both share, never with the gallery
    import subprocess
    import sys

    code = ("import sys, bfm_deploy.eval.identification, bfm_deploy.eval.api, bfm_deploy.matching; "
            "print(sorted(m for m in sys.modules if m.startswith('bfm_deploy.gallery')))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "[]"
    code = "import sys, bfm_deploy.gallery; print(sorted(m for m in sys.modules if m.startswith('bfm_deploy.eval')))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"

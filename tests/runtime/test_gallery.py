"""bfm_deploy.gallery and bfm-gallery: balanced 1:N matching, persistence, crash safety, bad input."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from bfm_deploy.bundle import Bundle
from tests.fixtures.bundles import DEMO_BUNDLE
from bfm_deploy.errors import BfmError
from bfm_deploy.gallery import FaceFeatures, Gallery
from bfm_deploy.gallery.cli import main as gallery_cli

SIZE = 512


def unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v)).astype(np.float32)


def face(full: np.ndarray, partial: np.ndarray, masked: bool) -> FaceFeatures:
    return FaceFeatures(0.9 if masked else 0.1, masked, unit(full), unit(partial))


def axis(i: int) -> np.ndarray:
    v = np.zeros(SIZE, np.float32)
    v[i] = 1
    return v


def test_balanced_matching_routes_each_template_like_a_verified_pair(tmp_path: Path, demo: Bundle) -> None:
    # Each identity's E_F and E_P point different ways, so the route a score came from is visible in it.
    with Gallery.open(tmp_path / "g", demo, create=True) as gallery:
        gallery.add("bare", [face(axis(0), axis(1), masked=False)])
        gallery.add("masked", [face(axis(2), axis(3), masked=True)])
        # unmasked probe: E_F against the unmasked template, E_P against the masked one
        probe = face(axis(0) + axis(3), axis(1) * 0 + axis(5), masked=False)
        got = {c.identity: c for c in gallery.identify(probe, top_k=2).candidates}
        assert got["bare"].route == "full" and got["bare"].score == pytest.approx(1 / np.sqrt(2), abs=1e-6)
        assert got["masked"].route == "partial" and got["masked"].score == pytest.approx(0.0, abs=1e-6)
        # masked probe: E_P against every template, its E_F is never used
        probe = face(axis(0), axis(3), masked=True)
        got = {c.identity: c for c in gallery.identify(probe, top_k=2).candidates}
        assert {c.route for c in got.values()} == {"partial"}
        assert got["bare"].score == pytest.approx(0.0, abs=1e-6) and got["masked"].score == pytest.approx(1.0, abs=1e-6)
        # margins are over each route's own threshold, and decide unknown
        assert got["masked"].margin == pytest.approx(1.0 - demo.threshold("partial"), abs=1e-6)
        assert gallery.identify(probe).identity == "masked"
        assert gallery.identify(face(axis(7), axis(8), masked=True)).identity is None


def test_identify_real_mfr2_faces_and_survive_a_restart(tmp_path: Path, data_dir: Path, demo: Bundle) -> None:
    from bfm_deploy.verifier import Verifier

    mfr2 = data_dir / "mfr2"
    people = sorted(p for p in mfr2.iterdir() if p.is_dir() and len(list(p.glob("*.png"))) >= 3)[:12]
    with Verifier(demo, backend="ort") as verifier:
        def features(paths: list[Path]) -> list[FaceFeatures]:
            return verifier.features([verifier.prepare(p) for p in paths])

        with Gallery.open(tmp_path / "g", demo, create=True) as gallery:
            for person in people:
                gallery.add(person.name, features(sorted(person.glob("*.png"))[:1]))
        probes = [(person.name, p) for person in people for p in sorted(person.glob("*.png"))[1:]]
        probe_features = features([p for _, p in probes])
    with Gallery.open(tmp_path / "g", demo) as gallery:  # a new process would see the same
        assert len(gallery) == len(people)
        results = [gallery.identify(f) for f in probe_features]
        right = sum(r.candidates[0].identity == name for (name, _), r in zip(probes, results))
        assert right >= 0.8 * len(probes), f"rank-1 {right}/{len(probes)}"
        assert any(r.masked for r in results) and any(not r.masked for r in results)
        gallery.remove(people[0].name)
        assert people[0].name not in {name for name, _, _ in gallery.identities()}
    with Gallery.open(tmp_path / "g", demo) as gallery:
        assert len(gallery) == len(people) - 1


def test_kill_9_during_enrolment_loses_at_most_the_face_being_enrolled(tmp_path: Path) -> None:
    pytest.importorskip("faiss", reason="an IVF index needs the gallery extra")
    folder = tmp_path / "g"
    script = textwrap.dedent(f"""
        import sys, numpy as np
        from bfm_deploy.bundle import Bundle
        from bfm_deploy.gallery import FaceFeatures, Gallery
        g = Gallery.open({str(folder)!r}, Bundle.load({str(DEMO_BUNDLE)!r}), create=True, exact_limit=20)
        rng = np.random.default_rng(0)
        for i in range(100000):
            v = rng.standard_normal((2, 512)).astype(np.float32)
            g.add(f"p{{i}}", [FaceFeatures(0.2, False, v[0], v[1]), FaceFeatures(0.8, True, v[1], v[0])])
            if i % 7 == 0:  # the IVF index (past 20 templates) is searched and saved as enrolment goes on
                g.identify(FaceFeatures(0.2, False, v[0], v[1]))
                g.save_index()
            print(i, flush=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    done = -1
    deadline = time.monotonic() + 60
    while done < 30 and time.monotonic() < deadline:
        done = int(proc.stdout.readline())
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert done >= 30
    done = max([done, *(int(line) for line in proc.stdout.read().split())])  # what it printed before dying
    with Gallery.open(folder, Bundle.load(DEMO_BUNDLE), exact_limit=20) as gallery:
        people = gallery.identities()
        # every enrolment that returned is there, at most the one in progress beyond it, and each is whole
        assert done + 1 <= len(people) <= done + 2
        assert all(faces == 2 and masked == 1 for _, faces, masked in people)
        assert gallery.index_kinds()["full_unmasked"] == "ivf"
        rng = np.random.default_rng(0)
        for i in range(len(people)):  # the index (saved some enrolments back, caught up) finds every face
            v = rng.standard_normal((2, 512)).astype(np.float32)
            assert gallery.identify(FaceFeatures(0.2, False, v[0], v[1]), margin=0.5).identity == f"p{i}"


def test_bad_input_gets_one_line_errors_and_loses_nothing(tmp_path: Path, demo: Bundle) -> None:
    folder = tmp_path / "g"
    with Gallery.open(folder, demo, create=True) as gallery:
        gallery.add("alice", [face(axis(0), axis(1), False)])
        with pytest.raises(BfmError, match="already enrolled"):
            gallery.add("alice", [face(axis(2), axis(3), False)])
        with pytest.raises(BfmError, match="512 values"):
            gallery.add("bob", [FaceFeatures(0.1, False, np.ones(128, np.float32), np.ones(512, np.float32))])
        with pytest.raises(BfmError, match="NaN"):
            gallery.add("bob", [FaceFeatures(0.1, False, np.full(512, np.nan, np.float32), axis(1))])
        with pytest.raises(BfmError, match="not enrolled"):
            gallery.remove("nobody")
        assert [name for name, _, _ in gallery.identities()] == ["alice"]
    with pytest.raises(BfmError, match="no gallery here"):
        Gallery.open(tmp_path / "missing", demo)
    # another bundle's embeddings
    db = sqlite3.connect(folder / "gallery.sqlite")
    db.execute("UPDATE meta SET value = 'beef' WHERE key = 'sha256_partial'")
    db.commit()
    db.close()
    with pytest.raises(BfmError, match="partial differs"):
        Gallery.open(folder, demo)
    # a damaged database file
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "gallery.sqlite").write_bytes(b"not a database" * 100)
    with pytest.raises(BfmError, match="not a readable gallery database"):
        Gallery.open(broken, demo)


def _people_folder(tmp_path: Path, data_dir: Path, names: tuple[str, ...]) -> Path:
    """tmp_path/people/NAME/ with two aligned LFW crops of each name (an enroll --folder input)."""
    people = tmp_path / "people"
    for name in names:
        (people / name).mkdir(parents=True)
        for image in sorted((data_dir / "lfw" / "aligned112" / name).glob("*.jpg"))[:2]:
            (people / name / image.name).write_bytes(image.read_bytes())
    return people


def test_cli_round_trip_export_import_and_errors(tmp_path: Path, data_dir: Path) -> None:
    runner = CliRunner()
    people = _people_folder(tmp_path, data_dir, ("Aaron_Peirsol", "Abdullah_Gul"))
    gallery = str(tmp_path / "g")
    common = ["--bundle", str(DEMO_BUNDLE), "--backend", "ort"]
    result = runner.invoke(gallery_cli, ["enroll", gallery, "--folder", str(people), "--aligned", "--quiet", *common])
    assert result.exit_code == 0, result.output
    probe = sorted((data_dir / "lfw" / "aligned112" / "Abdullah_Gul").glob("*.jpg"))[2]
    result = runner.invoke(gallery_cli, ["identify", gallery, str(probe), "--aligned", *common])
    assert result.exit_code == 0 and "Abdullah_Gul (best Abdullah_Gul" in result.output, result.output
    stranger = sorted((data_dir / "lfw" / "aligned112" / "Colin_Powell").glob("*.jpg"))[0]
    result = runner.invoke(gallery_cli, ["identify", gallery, str(stranger), "--aligned", *common])
    assert result.exit_code == 1 and "unknown" in result.output, result.output
    result = runner.invoke(gallery_cli, ["enroll", gallery, "Aaron_Peirsol", str(probe), "--aligned", *common])
    assert result.exit_code == 2 and result.output.strip().count("\n") == 0 and "already enrolled" in result.output
    export = tmp_path / "g.npz"
    assert runner.invoke(gallery_cli, ["export", gallery, str(export), *common[:2]]).exit_code == 0
    copy = str(tmp_path / "copy")
    assert runner.invoke(gallery_cli, ["import", copy, str(export), *common[:2]]).exit_code == 0
    listed = [runner.invoke(gallery_cli, ["list", g, *common[:2]]).output for g in (gallery, copy)]
    assert listed[0] == listed[1] and "Aaron_Peirsol\t2 face(s)" in listed[0]
    with np.load(export) as data:
        arrays = {key: data[key] for key in data.files}
    uneven = tmp_path / "uneven.npz"
    np.savez(uneven, **{**arrays, "partial": arrays["partial"][:1]})  # fewer E_P rows than faces
    result = runner.invoke(gallery_cli, ["import", str(tmp_path / "third"), str(uneven), *common[:2]])
    assert result.exit_code == 2 and "'partial' does not hold one entry per face" in result.output, result.output
    export.write_bytes(b"garbage")
    result = runner.invoke(gallery_cli, ["import", copy, str(export), *common[:2]])
    assert result.exit_code == 2 and "not a gallery export (not an npz archive of arrays)" in result.output
    assert "allow_pickle" not in result.output  # numpy's advice to load it unsafely is not passed on


def test_cli_folder_enrolment_skips_bad_photos_and_refuses_a_rerun_whole(tmp_path: Path, data_dir: Path) -> None:
    runner = CliRunner()
    people = _people_folder(tmp_path, data_dir, ("Aaron_Peirsol", "Abdullah_Gul"))
    (people / "Abdullah_Gul" / "broken.jpg").write_bytes(b"not a jpeg")
    (people / "Nobody").mkdir()
    (people / "Nobody" / "empty.png").write_bytes(b"")
    gallery, report = str(tmp_path / "g"), tmp_path / "enrol.json"
    common = ["--bundle", str(DEMO_BUNDLE), "--backend", "ort", "--aligned"]
    result = runner.invoke(gallery_cli, ["enroll", gallery, "--folder", str(people), "--json-out", str(report), *common])
    assert result.exit_code == 1, result.output
    assert "skipped" in result.output and "broken.jpg" in result.output and "Traceback" not in result.output
    written = json.loads(report.read_text())
    assert [e["identity"] for e in written["enrolled"]] == ["Aaron_Peirsol", "Abdullah_Gul"]
    assert [len(e["face_ids"]) for e in written["enrolled"]] == [2, 2] and written["faces"] == 4
    assert sorted(Path(s["image"]).name for s in written["skipped"]) == ["broken.jpg", "empty.png"]
    # a second run names what is enrolled already and stores nothing, not a half of the folder
    _people_folder(tmp_path, data_dir, ("Colin_Powell",))
    result = runner.invoke(gallery_cli, ["enroll", gallery, "--folder", str(people), "--quiet", *common])
    assert result.exit_code == 2 and "Aaron_Peirsol and 1 more already enrolled" in result.output, result.output
    listed = runner.invoke(gallery_cli, ["list", gallery, *common[:2]]).output
    assert "Colin_Powell" not in listed and "Abdullah_Gul\t2 face(s)" in listed


def test_det_curve_and_tpir_at_fpir_on_hand_counted_scores() -> None:
    from bfm_deploy.eval.identification import det_curve, tpir_at_fpir

    mated = np.array([0.9, 0.8, 0.5, 0.1])
    correct = np.array([True, True, False, True])
    non_mated = np.array([0.7, 0.2, 0.0, -0.1, -0.2, -0.3, -0.4, -0.5, -0.6, -0.7])
    thresholds, fpir, fnir = det_curve(mated, correct, non_mated)
    at = {float(t): (f, n) for t, f, n in zip(thresholds, fpir, fnir)}
    assert at[0.5] == pytest.approx((0.1, 0.5))  # 1 of 10 non-mated >= 0.5; 2 of 4 mated right and >= 0.5
    assert at[0.8] == pytest.approx((0.0, 0.5))
    tpir, threshold = tpir_at_fpir(mated, correct, non_mated, target=0.1)
    assert threshold == pytest.approx(0.5) and tpir == pytest.approx(0.5)
    tpir, threshold = tpir_at_fpir(mated, correct, non_mated, target=0.0)
    assert threshold == pytest.approx(0.8) and tpir == pytest.approx(0.5)  # the next margin above 0.7


def test_lfw_identification_protocol_and_evaluation_on_a_few_identities(data_dir: Path, demo: Bundle) -> None:
    from bfm_deploy.eval.identification import IdentificationProtocol, evaluate_identification, lfw_identification
    from bfm_deploy.verifier import Verifier

    full = lfw_identification(data_dir)
    enrolled = {name for name, _ in full.gallery}
    assert all(name in enrolled for name, _ in full.mated)
    assert not enrolled & {p.parent.name for p in full.non_mated}  # non-mated probes are never enrolled
    assert not {p for _, p in full.gallery} & {p for _, p in full.mated}
    small = IdentificationProtocol(full.gallery[:8], [m for m in full.mated if m[0] in {n for n, _ in full.gallery[:8]}][:16],
                                   full.non_mated[:8], full.folds)
    # "masked" twins: the same crops, so that E_F alone must score the masked-probe condition as the unmasked one
    images = [p for _, p in small.gallery] + [p for _, p in small.mated] + small.non_mated
    with Verifier(demo, backend="ort") as verifier:
        report = evaluate_identification(verifier, small, {p: p for p in images})
    results = report["conditions"]
    assert set(results) == {"unmasked probes", "masked probes", "masked gallery"}
    unmasked = results["unmasked probes"]["methods"]
    assert unmasked["E_F alone"]["rank1"] >= 0.8 and unmasked["routed"]["rank1"] >= 0.8
    assert results["masked probes"]["methods"]["E_F alone"] == unmasked["E_F alone"]


def test_feature_cache_embeds_once_per_bundle_and_survives_damage(tmp_path: Path, data_dir: Path, demo: Bundle) -> None:
    import shutil

    from bfm_deploy.eval.feature_cache import FeatureCache
    from bfm_deploy.eval.protocols import load_aligned
    from bfm_deploy.verifier import Verifier

    images = sorted((data_dir / "lfw" / "aligned112").glob("A*/*.jpg"))[:12]
    with Verifier(demo, backend="ort") as verifier:
        first = FeatureCache(tmp_path, verifier)
        want = first.features(images, load_aligned)
        assert first.path is not None and not first.path.is_file()  # written by save(), once a run
        first.save()
        assert (first.hits, first.misses) == (0, 12) and first.path.is_file()
        again = FeatureCache(tmp_path, verifier)
        got = again.features(images[3:], load_aligned)
        assert (again.hits, again.misses) == (9, 0)  # read back, nothing embedded
        for a, b in zip(want[3:], got):
            assert a.masked == b.masked and np.array_equal(a.full, b.full) and np.array_equal(a.partial, b.partial)
        first.path.write_bytes(b"PK\x03\x04 damaged")
        rebuilt = FeatureCache(tmp_path, verifier)
        rebuilt.features(images[:2], load_aligned)
        assert rebuilt.misses == 2  # a damaged file is embedded again, never trusted
        rebuilt.save()
        assert FeatureCache(tmp_path, verifier).features(images[:2], load_aligned) and len(np.load(first.path)["keys"]) == 2
    # Another bundle (here: the same networks with another mask threshold) is another file.
    other = tmp_path / "other"
    shutil.copytree(DEMO_BUNDLE, other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["mask_threshold"]["value"] = 0.9
    (other / "manifest.json").write_text(json.dumps(manifest))
    with Verifier(Bundle.load(other), backend="ort") as verifier:
        changed = FeatureCache(tmp_path, verifier)
        changed.features(images[:1], load_aligned)
        assert changed.path != first.path
        assert changed.misses == 1


def clustered(n_people: int, per_person: int, seed: int = 0, noise: float = 0.6) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic embeddings with identity structure: unit vectors around one random centre per person."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_people, SIZE)).astype(np.float32)
    faces = np.repeat(centres, per_person, axis=0) + noise * rng.standard_normal((n_people * per_person, SIZE)).astype(np.float32)
    return centres, faces / np.linalg.norm(faces, axis=1, keepdims=True)


def test_ivf_index_above_the_exact_limit_persists_catches_up_and_survives_corruption(tmp_path: Path, demo: Bundle) -> None:
    pytest.importorskip("faiss", reason="an IVF index needs the gallery extra")
    centres, faces = clustered(400, 2)
    folder = tmp_path / "g"
    with Gallery.open(folder, demo, create=True, exact_limit=300) as gallery:
        for i in range(400):  # 800 unmasked faces; E_P = E_F here, enough for the structure under test
            gallery.add(f"p{i}", [face(faces[2 * i], faces[2 * i], False), face(faces[2 * i + 1], faces[2 * i + 1], False)])
        assert gallery.index_kinds() == {"full_unmasked": "ivf", "partial_unmasked": "ivf", "partial_masked": "exact"}
        probes = [face(c, c, False) for c in centres[:50]]
        assert [gallery.identify(p).identity for p in probes] == [f"p{i}" for i in range(50)]
        assert gallery.identify_many(probes, top_k=3) == [gallery.identify(p, top_k=3) for p in probes]
    files = sorted(p.name for p in (folder / "index").iterdir())
    assert "index.json" in files and len([f for f in files if f.endswith(".faiss")]) == 2
    # another writer (no index loaded) removes and enrols; the saved index catches up on the next open
    with Gallery.open(folder, demo) as writer:
        writer.remove("p0")
        writer.add("late", [face(centres[0], centres[0], False)])  # it never searched: its close saves no index
    with Gallery.open(folder, demo, exact_limit=300) as gallery:
        assert gallery.index_kinds()["full_unmasked"] == "ivf" and not gallery.notes
        assert gallery.identify(probes[0]).identity == "late"
        assert "p0" not in {c.identity for c in gallery.identify(probes[0], top_k=20).candidates}
    # a damaged index file: rebuilt from the database, with a note, and no face lost
    for index_file in (folder / "index").glob("*.faiss"):
        index_file.write_bytes(b"\0garbage" * 50)
    with Gallery.open(folder, demo, exact_limit=300) as gallery:
        assert gallery.identify(probes[1]).identity == "p1"
        assert len(gallery.notes) == 1 and "rebuilt from the database, nothing lost" in gallery.notes[0]
        assert len(gallery) == 800 - 2 + 1
    (folder / "index" / "index.json").write_text("{not json")
    with Gallery.open(folder, demo, exact_limit=300) as gallery:
        assert gallery.identify(probes[2]).identity == "p2" and gallery.notes
    # a state naming a file outside its folder, or a mistyped field: refused by the schema, named, rebuilt
    saved = json.loads((folder / "index" / "index.json").read_text())
    for field, value, problem in (("files", {"full_unmasked": "../../g.sqlite"}, "field 'files.full_unmasked' must be a file name"),
                                  ("face_id", "12", "field 'face_id' must be an integer"),
                                  ("files", {"elsewhere": "x.faiss"}, "field 'files.elsewhere' is not a search structure")):
        (folder / "index" / "index.json").write_text(json.dumps({**saved, field: value}))
        with Gallery.open(folder, demo, exact_limit=300) as gallery:
            assert gallery.identify(probes[3]).identity == "p3"
            assert len(gallery.notes) == 1 and problem in gallery.notes[0], gallery.notes
            assert gallery.notes[0].endswith("; rebuilt from the database, nothing lost")


def test_open_set_thresholds_per_route_decide_unknown_and_rank(tmp_path: Path, demo: Bundle) -> None:
    from bfm_deploy.eval.identification import open_set_thresholds

    methods = lambda ef, ep: {"E_F alone": {"margin_at_target": ef}, "E_P alone": {"margin_at_target": ep}}  # noqa: E731
    report = {"folds": [1, 2, 3, 4, 5], "bundle": "demo", "target_fpir": 0.01, "open_set": None, "conditions": {
        "unmasked probes": {"gallery": 900, "methods": methods(0.10, 0.5)},
        "masked probes": {"gallery": 900, "methods": methods(0.3, 0.15)},
        "masked gallery": {"gallery": 900, "methods": methods(0.3, 0.20)}}}
    thresholds = open_set_thresholds(report)
    assert (thresholds["full"], thresholds["partial"]) == (0.10, 0.20)  # E_F from unmasked; E_P the larger
    with pytest.raises(BfmError, match="test folds"):
        open_set_thresholds({**report, "folds": [5, 6]})
    t_full, t_part = demo.threshold("full"), demo.threshold("partial")
    with Gallery.open(tmp_path / "g", demo, create=True) as gallery:
        gallery.add("bare", [face(axis(0), axis(1), masked=False)])
        gallery.add("masked", [face(axis(2), axis(3), masked=True)])
        # an unmasked probe with margin 0.15 on E_F (bare) and 0.17 on E_P (masked)
        probe = FaceFeatures(0.1, False, axis(0) * (t_full + 0.15) + axis(9) * np.sqrt(1 - (t_full + 0.15) ** 2),
                             axis(3) * (t_part + 0.17) + axis(8) * np.sqrt(1 - (t_part + 0.17) ** 2))
        assert gallery.identify(probe).identity == "masked"  # uncalibrated: the larger margin wins
        gallery.set_open_set(thresholds["full"], thresholds["partial"], 0.01, "test")
        result = gallery.identify(probe)  # 0.15 - 0.10 over E_F's threshold beats 0.17 - 0.20 on E_P
        assert result.identity == "bare" and result.candidates[0].over_open_set == pytest.approx(0.05, abs=1e-5)
        assert result.candidates[1].over_open_set == pytest.approx(-0.03, abs=1e-5)
        gallery.remove("bare")
        assert gallery.identify(probe).identity is None  # masked's 0.17 is under E_P's 0.20
        assert gallery.identify(probe, margin=0.1).identity == "masked"  # --margin: one threshold for both
    with Gallery.open(tmp_path / "g", demo) as gallery:
        assert gallery.open_set()["partial"] == 0.20


@pytest.fixture(scope="module")
def postgres() -> object:
    from tests.fixtures.pg_server import CannotStart, postgres_with_pgvector

    try:
        with postgres_with_pgvector() as dsn:
            yield dsn
    except CannotStart as exc:
        pytest.skip(f"no PostgreSQL server with pgvector could start here: {exc}")


def test_pgvector_and_embedded_stores_return_the_same_top_k(tmp_path: Path, demo: Bundle, postgres: str) -> None:
    centres, faces = clustered(150, 2, seed=1)
    rng = np.random.default_rng(2)
    masked = rng.random(len(faces)) < 0.3
    partial = clustered(150, 2, seed=3)[1]
    with Gallery.open(tmp_path / "g", demo, create=True) as embedded, Gallery.open(postgres, demo, create=True) as pg:
        for gallery in (embedded, pg):
            for i in range(150):
                gallery.add(f"p{i}", [FaceFeatures(0.9 if masked[j] else 0.1, bool(masked[j]), faces[j], partial[j])
                                      for j in (2 * i, 2 * i + 1)])
            gallery.set_open_set(0.05, 0.1, 0.01, "test")
        assert pg.index_kinds() == dict.fromkeys(pg.index_kinds(), "pgvector")
        probes = [FaceFeatures(0.1, False, c, p) for c, p in zip(centres[:20], partial[:40:2])]
        probes += [FaceFeatures(0.9, True, c, p) for c, p in zip(centres[20:40], partial[40:80:2])]
        for probe in probes:
            a, b = embedded.identify(probe, top_k=5), pg.identify(probe, top_k=5)
            assert [(c.identity, c.route, c.face_id) for c in a.candidates] == \
                   [(c.identity, c.route, c.face_id) for c in b.candidates]
            assert [c.score for c in a.candidates] == pytest.approx([c.score for c in b.candidates], abs=1e-5)
            assert a.identity == b.identity
        assert pg.identify_many(probes, top_k=5) == [pg.identify(p, top_k=5) for p in probes]
        # the shared gallery: a second connection (another replica) sees an enrolment and a removal at once
        with Gallery.open(postgres, demo) as replica:
            replica.remove("p0")
            with pytest.raises(BfmError, match="already enrolled"):
                replica.add("p1", [FaceFeatures(0.1, False, faces[0], partial[0])])
        assert "p0" not in {c.identity for c in pg.identify(probes[0], top_k=10).candidates}
        assert len(pg) == len(embedded) - 2 and pg.open_set()["partial"] == 0.1
        with pytest.raises(BfmError, match="512 values"):
            pg.add("q", [FaceFeatures(0.1, False, np.ones(128, np.float32), np.ones(512, np.float32))])
        assert [n for n, _, _ in pg.identities()] == [n for n, _, _ in embedded.identities() if n != "p0"]
        # past the exact limit the database searches through HNSW indexes: the true identity still comes first
        with Gallery.open(postgres, demo, exact_limit=50) as approximate:
            found = [approximate.identify(p, top_k=1).candidates[0].identity for p in probes[1:]]
            indexes = {row[0] for row in approximate.store._db.execute("SELECT indexname FROM pg_indexes")}
        assert {"bfm_faces_full_unmasked", "bfm_faces_partial_masked"} <= indexes
        assert found == [c.identity for p in probes[1:] for c in embedded.identify(p, top_k=1).candidates]


def test_cli_calibrate_from_a_report_and_refuse_test_folds(tmp_path: Path, demo: Bundle) -> None:
    import json

    methods = lambda ef, ep: {"E_F alone": {"margin_at_target": ef}, "E_P alone": {"margin_at_target": ep}}  # noqa: E731
    report = {"dataset": "lfw-identification", "folds": [1, 2, 3, 4, 5], "bundle": "demo", "target_fpir": 0.01,
              "open_set": None, "conditions": {"unmasked probes": {"gallery": 900, "methods": methods(0.12, 0.3)},
                                               "masked probes": {"gallery": 900, "methods": methods(0.3, 0.18)},
                                               "masked gallery": {"gallery": 900, "methods": methods(0.3, 0.19)}}}
    good, bad = tmp_path / "r.json", tmp_path / "bad.json"
    good.write_text(json.dumps(report))
    bad.write_text(json.dumps({**report, "folds": [6, 7]}))
    folder = str(tmp_path / "g")
    with Gallery.open(folder, demo, create=True) as gallery:
        gallery.add("alice", [face(axis(0), axis(1), False)])
    runner = CliRunner()
    result = runner.invoke(gallery_cli, ["calibrate", folder, "--open-set", str(bad), "--bundle", str(DEMO_BUNDLE)])
    assert result.exit_code == 2 and "test folds" in result.output and result.output.count("\n") == 1
    result = runner.invoke(gallery_cli, ["calibrate", folder, "--open-set", str(good), "--bundle", str(DEMO_BUNDLE), "--json"])
    assert result.exit_code == 0, result.output
    with Gallery.open(folder, demo) as gallery:
        assert (gallery.open_set()["full"], gallery.open_set()["partial"]) == (0.12, 0.19)
        assert "folds 1,2,3,4,5" in gallery.open_set()["calibration"]
    listed = runner.invoke(gallery_cli, ["list", folder, "--bundle", str(DEMO_BUNDLE), "--json"])
    assert json.loads(listed.stdout)["open_set"]["partial"] == 0.19


def test_gallery_bench_measures_exact_and_ivf_on_a_small_gallery(tmp_path: Path) -> None:
    pytest.importorskip("faiss", reason="an IVF index needs the gallery extra")
    from bfm_deploy.bench.gallery_scale import GalleryBenchOptions, format_gallery_table, plot_gallery, run_gallery_bench

    report = run_gallery_bench(GalleryBenchOptions(bundle=DEMO_BUNDLE, sizes=(1200,), queries=20, single_enrolments=5))
    (row,) = report["sizes"]
    assert row["templates"] == 1200 and row["probes"] == 20
    assert row["exact"]["rank1"] == 1.0  # a probe is a fresh view of an enrolled identity: exact search finds it
    assert row["ivf"]["kinds"]["full_unmasked"] == "ivf" and row["ivf"]["recall_at_1"] >= 0.9
    assert 4 * 512 * 2 < row["bytes_per_template"]["database_on_disk"] < 4 * 512 * 4  # both embeddings, and little more
    assert "1,200" in format_gallery_table(report)
    plot_gallery(report, tmp_path / "g.png")
    assert (tmp_path / "g.png").read_bytes()[:4] == b"\x89PNG"

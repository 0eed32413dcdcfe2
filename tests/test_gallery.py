"""bfm_deploy.gallery and bfm-gallery: balanced 1:N matching, persistence, crash safety, bad input."""

from __future__ import annotations

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
from bfm_deploy.errors import BfmError
from bfm_deploy.gallery import FaceFeatures, Gallery
from bfm_deploy.gallery.cli import main as gallery_cli

DEMO = Path(__file__).resolve().parents[1] / "engines" / "demo"
SIZE = 512


@pytest.fixture(scope="module")
def demo() -> Bundle:
    return Bundle.load(DEMO)


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
    folder = tmp_path / "g"
    script = textwrap.dedent(f"""
        import sys, numpy as np
        from bfm_deploy.bundle import Bundle
        from bfm_deploy.gallery import FaceFeatures, Gallery
        g = Gallery.open({str(folder)!r}, Bundle.load({str(DEMO)!r}), create=True)
        rng = np.random.default_rng(0)
        for i in range(100000):
            v = rng.standard_normal((2, 512)).astype(np.float32)
            g.add(f"p{{i}}", [FaceFeatures(0.2, False, v[0], v[1]), FaceFeatures(0.8, True, v[1], v[0])])
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
    with Gallery.open(folder, Bundle.load(DEMO)) as gallery:
        people = gallery.identities()
        # every enrolment that returned is there, at most the one in progress beyond it, and each is whole
        assert done + 1 <= len(people) <= done + 2
        assert all(faces == 2 and masked == 1 for _, faces, masked in people)


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


def test_cli_round_trip_export_import_and_errors(tmp_path: Path, data_dir: Path) -> None:
    runner = CliRunner()
    people = tmp_path / "people"
    for name in ("Aaron_Peirsol", "Abdullah_Gul"):
        (people / name).mkdir(parents=True)
        for image in sorted((data_dir / "lfw" / "aligned112" / name).glob("*.jpg"))[:2]:
            (people / name / image.name).write_bytes(image.read_bytes())
    gallery = str(tmp_path / "g")
    common = ["--bundle", str(DEMO), "--backend", "ort"]
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
    export.write_bytes(b"garbage")
    result = runner.invoke(gallery_cli, ["import", copy, str(export), *common[:2]])
    assert result.exit_code == 2 and "not a gallery export" in result.output


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

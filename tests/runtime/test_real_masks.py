"""Real masked photos: the detector's fallback chain, the bfm-real-masks builder and its split, C's training on
real crops. Samples: ``tests/samples/face_mask_detection`` (raw photos from chandrikadeb7/Face-Mask-Detection,
MIT) and ``tests/samples/real_masks`` (aligned crops of its train and validation splits, as the builder writes)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from bfm_deploy.bundle import Bundle
from bfm_deploy.detect import FIRST_PASS, FallbackStep, NoFaceError, open_aligner, parse_chain
from bfm_deploy.detect.fallback import DEFAULT_CHAIN, pad_image, parse_chain_option
from bfm_deploy.errors import BfmError
from bfm_deploy.images import load_image
from bfm_deploy.real_masks import SPLIT_NAME, build, format_split, read_split, split_of, split_rows, read_source

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "engines" / "demo"
SOURCE = REPO / "tests" / "samples" / "face_mask_detection"
CROPS = REPO / "tests" / "samples" / "real_masks"
SPLIT_FILE = REPO / "configs" / "face_mask_detection_split.tsv"
CLOSE_UP = SOURCE / "dataset" / "with_mask" / "246.jpg"  # a masked face filling its 52x64 frame


def _with_chain(bundle: Bundle, chain: str) -> Bundle:
    assert bundle.detector is not None
    return dataclasses.replace(bundle, detector=dataclasses.replace(bundle.detector, fallback=parse_chain_option(chain)))


def _no_face_photo() -> np.ndarray:
    """A smooth colour gradient with mild noise: nothing in it looks like a face to any detector."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:240, 0:320]
    image = np.stack([x * 0.7, y * 0.9, (x + y) * 0.4], axis=-1) + rng.normal(0, 4, (240, 320, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


# ---- the chain's grammar --------------------------------------------------------------------------------------


def test_fallback_steps_parse_and_spell_back() -> None:
    steps = parse_chain(list(DEFAULT_CHAIN))
    assert [str(s) for s in steps] == list(DEFAULT_CHAIN)
    assert FallbackStep.parse("pad:0.25+detector:yunet") == FallbackStep(pad=0.25, detector="yunet")
    assert str(FallbackStep.parse("pad:0.5+score:0.3")) == "score:0.3+pad:0.5"  # one spelling per step
    assert parse_chain_option("none") == ()


@pytest.mark.parametrize("bad, message", [
    ("blur:3", "is not one of"), ("pad", "is not one of"), ("pad:0", "border must be in"), ("pad:x", "not a number"),
    ("letterbox:650", "multiple of 32"), ("score:0.05", "score threshold must be in"), ("detector:retina", "must be one of"),
    ("pad:0.2+pad:0.3", "names pad twice"), ("detector:yunet+score:0.3", "not another one"),
])
def test_bad_fallback_steps_are_refused(bad: str, message: str) -> None:
    with pytest.raises(BfmError, match=message):
        FallbackStep.parse(bad)


def test_a_repeated_step_is_refused() -> None:
    with pytest.raises(BfmError, match="appears twice"):
        parse_chain(["pad:0.25", "pad:0.25"])


@pytest.mark.parametrize("fallback, message", [
    (["pad:0.25", "warp:2"], "is not one of"), ("pad:0.25", "must be a list"), ([0.25], "must be a list of step names"),
])
def test_the_manifest_chain_is_validated_on_load(tmp_path: Path, fallback: object, message: str) -> None:
    bundle = tmp_path / "b"
    bundle.mkdir()
    for item in DEMO.iterdir():
        if item.is_file():
            (bundle / item.name).symlink_to(item)
    manifest = json.loads((DEMO / "manifest.json").read_text())
    manifest["detector"]["fallback"] = fallback
    (bundle / "manifest.json").unlink()
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BfmError, match=message):
        Bundle.load(bundle)


def test_the_demo_bundle_carries_the_default_chain() -> None:
    detector = Bundle.load(DEMO).detector
    assert detector is not None and [str(s) for s in detector.fallback] == list(DEFAULT_CHAIN)


# ---- the chain at work ----------------------------------------------------------------------------------------


def test_a_close_up_is_found_only_by_the_padded_retry() -> None:
    demo = Bundle.load(DEMO)
    with open_aligner("auto", _with_chain(demo, "none")) as plain:
        (missed,) = plain.align_many([CLOSE_UP])
    assert isinstance(missed, NoFaceError)  # the bundle's detector alone finds nothing in the close-up
    with open_aligner("auto", _with_chain(demo, "pad:0.25,detector:yunet")) as chained:
        (found,) = chained.align_many([CLOSE_UP])
    assert not isinstance(found, BfmError) and found.found_by == "pad:0.25"
    # Mapped back to the photo's pixels: the eyes lie inside the frame, the landmarks in their order.
    height, width = load_image(CLOSE_UP).shape[:2]
    eyes, nose, mouth = found.face.landmarks[:2], found.face.landmarks[2], found.face.landmarks[3:]
    assert ((eyes >= 0) & (eyes < [width, height])).all()
    assert eyes[0, 0] < eyes[1, 0] and eyes[:, 1].max() < nose[1] < mouth[:, 1].min()
    # The crop is the one aligning on the padded photo itself gives: the border is the alignment's black.
    padded, border = pad_image(load_image(CLOSE_UP), 0.25)
    with open_aligner("auto", _with_chain(demo, "none")) as plain:
        (on_padded,) = plain.align_many([padded])
    assert not isinstance(on_padded, BfmError)
    np.testing.assert_allclose(on_padded.face.landmarks - border, found.face.landmarks, atol=1e-3)
    assert np.abs(on_padded.crop.astype(int) - found.crop).max() <= 1


def test_photos_found_at_once_never_meet_the_chain(data_dir: Path) -> None:
    photos = sorted((data_dir / "mfr2").glob("*/*.png"))[::40]
    with open_aligner("auto", Bundle.load(DEMO)) as aligner:
        items = aligner.align_many(photos)
        assert aligner.fallback is not None and not aligner.fallback.opened  # no retry detector was even opened
    assert all(not isinstance(i, BfmError) and i.found_by == FIRST_PASS for i in items)


def test_a_photo_nothing_finds_stays_a_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "wall.png"
    assert cv2.imwrite(str(path), _no_face_photo())
    with open_aligner("auto", Bundle.load(DEMO)) as aligner:
        (item,) = aligner.align_many([path])
    assert isinstance(item, NoFaceError)
    assert str(item).startswith(f"no face found in {path} (retried: pad:0.25, ") and "\n" not in str(item)
    result = subprocess.run([sys.executable, "-m", "bfm_deploy.verify_cli", "--bundle", str(REPO / "engines" / "demo"), str(path), str(CLOSE_UP)],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.startswith("error: no face found in") and "Traceback" not in result.stderr


def test_bfm_verify_json_names_the_step_that_found_each_face(tmp_path: Path) -> None:
    bare = SOURCE / "dataset" / "without_mask" / "1_0_anhu_0171.jpg"
    result = subprocess.run([sys.executable, "-m", "bfm_deploy.verify_cli", "--bundle", str(REPO / "engines" / "demo"), str(bare), str(CLOSE_UP), "--json"],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode in (0, 1), result.stderr
    record = json.loads(result.stdout)
    assert record["found_by"] == ["detector", "pad:0.25"]
    text = subprocess.run([sys.executable, "-m", "bfm_deploy.verify_cli", "--bundle", str(REPO / "engines" / "demo"), str(bare), str(CLOSE_UP)],
                          capture_output=True, text=True, cwd=tmp_path).stdout
    assert "found on a retry of the detector: image 2 by pad:0.25" in text


# ---- the builder and its split --------------------------------------------------------------------------------


def test_the_split_follows_the_bytes_and_the_committed_file_is_consistent() -> None:
    rows = read_split(SPLIT_FILE)  # checks every row's split against its hash
    assert len(rows) > 3900 and len({r.sha256 for r in rows}) == len(rows)
    counts = {s: sum(r.split == s for r in rows) / len(rows) for s in ("train", "val", "test")}
    assert 0.65 < counts["train"] < 0.75 and 0.12 < counts["val"] < 0.18 and 0.12 < counts["test"] < 0.18
    assert split_of("0" * 64) == "train" and split_of("0000000e" + "0" * 56) == "val" and split_of("00000011" + "0" * 56) == "test"


def test_the_builder_writes_crops_and_the_committed_split(tmp_path: Path) -> None:
    out = tmp_path / "real"
    with open_aligner("auto", Bundle.load(DEMO)) as aligner:
        report = build(SOURCE, out, aligner)
    committed = {r.sha256: r for r in read_split(SPLIT_FILE)}
    built = read_split(out / SPLIT_NAME)
    assert len(built) == 8 and all(committed[r.sha256] == r for r in built)  # same bytes, same row as the full set's
    photos, _ = read_source(SOURCE)
    assert format_split(split_rows(photos)) == (out / SPLIT_NAME).read_text()
    assert report["photos"] == 8 and not report["failures"]
    assert report["found_by"]["pad:0.25"] >= 2  # both close-ups
    for row in built:
        crop = load_image(out / row.split / row.label / f"{row.sha256[:16]}.png")
        assert crop.shape == (112, 112, 3)
    listed = [line.split("\t") for split in ("train", "val", "test") for line in (out / f"{split}.txt").read_text().splitlines()]
    assert len(listed) == 8 and all((out / path).is_file() and label in ("0", "1") for path, label in listed)
    with pytest.raises(BfmError, match="exists; pass --overwrite"):
        build(SOURCE, out, aligner)


def test_a_bare_git_copy_builds_the_same_split(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run(["cp", "-r", str(SOURCE / "dataset"), str(repo)], check=True)
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "sample"], check=True)
    bare = tmp_path / "bare.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(repo), str(bare)], check=True)
    from_git, _ = read_source(bare)
    from_folder, _ = read_source(SOURCE)
    assert format_split(split_rows(from_git)) == format_split(split_rows(from_folder))


def test_bad_sources_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(BfmError, match="neither a Face-Mask-Detection checkout"):
        read_source(tmp_path)
    bad = tmp_path / "split.tsv"
    bad.write_text("split\tlabel\tsha256_16\tname\ntest\twith_mask\t" + "0" * 16 + "\tx.jpg\n")
    with pytest.raises(BfmError, match="its hash puts it in train"):
        read_split(bad)


# ---- C's training on real crops -------------------------------------------------------------------------------


def test_real_pairs_join_the_twins_for_the_classifier_only(data_dir: Path) -> None:
    pytest.importorskip("torch")
    from bfm_train.data.real_masks import NO_IDENTITY, RealMaskPairs
    from bfm_train.train.config import load_config
    from bfm_train.train.dataset import build_dataset

    real = RealMaskPairs(CROPS, "train", repeat=2)
    assert len(real) == 12
    x, x_hat, y = real[(3, True, 7)]
    assert x.shape == x_hat.shape == (3, 112, 112) and y == NO_IDENTITY
    config = load_config(REPO / "configs" / "demo_classifier_v11.yaml", [
        f"data.real_masks={CROPS}", "data.real_repeat=1", "data.exclude_lfw_folds=[1,2,3,4,5,6,7,8,9]",
        f"data.masked_root={data_dir / 'lfw' / 'aligned112'}"])
    joined = build_dataset(config)
    twins = len(joined) - 6
    assert twins > 0 and joined[(twins + 1, False, 5)][2] == NO_IDENTITY and joined[(0, False, 5)][2] >= 0
    frozen_off = load_config(REPO / "configs" / "demo_classifier_v11.yaml", [f"data.real_masks={CROPS}",
                                                                              "model.partial.frozen=false"])
    with pytest.raises(BfmError, match="trains the mask classifier alone"):
        build_dataset(frozen_off)


def test_the_demo_classifier_knows_the_real_sample() -> None:
    from bfm_deploy.real_masks import labelled_crops
    from bfm_deploy.verifier import Verifier

    crops = labelled_crops(CROPS, "train") + labelled_crops(CROPS, "val")
    verifier = Verifier(Bundle.load(DEMO), backend="ort")
    probs = verifier.mask_probability([load_image(p) for p, _ in crops], aligned=True)
    called = probs >= verifier.mask_threshold
    labels = np.array([label for _, label in crops], bool)
    assert (called == labels).mean() >= 0.9, list(zip([p.name for p, _ in crops], probs.round(3)))

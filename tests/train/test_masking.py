"""Synthetic masks on real LFW faces: coverage of nose and mouth, bare eyes, determinism, templates, bfm-mask."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from bfm_deploy.alignment import ARCFACE_TEMPLATE
from bfm_deploy.errors import BfmError
from bfm_deploy.images import load_image
from bfm_train.masking import DRAWN_TYPES, MaskConfig, Masker, MaskResult, NoFaceError
from bfm_train.masking.cli import main
from bfm_train.masking.dataset import REPORT_NAME, MaskJob, RunConfig, run
from bfm_train.masking.templates import read_templates

ALIGNED = [
    "Aaron_Eckhart/Aaron_Eckhart_0001.jpg",
    "Angelina_Jolie/Angelina_Jolie_0001.jpg",
    "Colin_Powell/Colin_Powell_0001.jpg",
    "Serena_Williams/Serena_Williams_0001.jpg",
    "Edward_Egan/Edward_Egan_0001.jpg",  # head turned: nose towards the image's left
    "Bill_Doba/Bill_Doba_0001.jpg",  # head turned: nose towards the image's right
]
RAW_IDENTITIES = ["Abel_Pacheco", "Alanis_Morissette", "Robert_Downey_Jr"]
EYES = list(range(36, 48))
NOSE_AND_MOUTH = [30, 33, 48, 51, 54, 57]
ALL_TYPES = DRAWN_TYPES
TEMPLATE_TYPES = ("surgical", "n95", "kn95", "cloth", "gas")


@pytest.fixture(scope="module")
def aligned(data_dir: Path) -> dict[str, np.ndarray]:
    root = data_dir / "lfw" / "aligned112"
    return {rel: load_image(root / rel) for rel in ALIGNED}


@pytest.fixture(scope="module")
def raw(data_dir: Path) -> dict[str, np.ndarray]:
    root = data_dir / "lfw" / "raw-fold1"
    paths = [sorted((root / name).glob("*.jpg"))[0] for name in RAW_IDENTITIES]
    return {f"{p.parent.name}/{p.name}": load_image(p) for p in paths}


@pytest.fixture(scope="module")
def maskers() -> dict[str, Masker]:
    """One masker per drawn type (they share dlib's model, loaded once per process)."""
    return {t: Masker(MaskConfig(types=(t,), seed=0)) for t in ALL_TYPES}


def _coverage_at(result: MaskResult, points: np.ndarray) -> np.ndarray:
    xy = np.rint(points).astype(int)
    return result.coverage_mask[xy[:, 1], xy[:, 0]]


def _assert_eyes_bare(original: np.ndarray, result: MaskResult, eye_points: np.ndarray, label: str) -> None:
    assert np.all(_coverage_at(result, eye_points) == 0), f"{label}: mask covers an eye landmark"
    for x, y in np.rint(eye_points).astype(int):
        patch = np.s_[max(y - 2, 0) : y + 3, max(x - 2, 0) : x + 3]
        assert np.array_equal(original[patch], result.image[patch]), f"{label}: pixels around the eye changed"


def test_aligned_crops_cover_nose_and_mouth_not_eyes(aligned, maskers) -> None:
    template = ARCFACE_TEMPLATE
    for mask_type, masker in maskers.items():
        for rel, image in aligned.items():
            label = f"{mask_type} on {rel}"
            result = masker.apply(image, aligned=True, rel_key=rel)
            assert result.mask_type == mask_type and result.source == "drawn"
            assert result.image.shape == image.shape and result.image.dtype == np.uint8
            assert np.all(_coverage_at(result, template[2:5]) >= 128), f"{label}: nose or mouth uncovered"
            assert np.all(_coverage_at(result, result.landmarks[NOSE_AND_MOUTH]) >= 128), label
            _assert_eyes_bare(image, result, np.vstack([template[:2], result.landmarks[EYES]]), label)
            covered = (result.coverage_mask >= 128).mean()
            assert 0.12 < covered < 0.6, f"{label}: mask covers {covered:.0%} of the crop"
            # Outside the coverage the crop is untouched.
            untouched = result.coverage_mask == 0
            assert np.array_equal(image[untouched], result.image[untouched]), label


def test_raw_photos_use_detected_landmarks(raw, maskers) -> None:
    for mask_type, masker in maskers.items():
        for rel, image in raw.items():
            label = f"{mask_type} on raw {rel}"
            result = masker.apply(image, aligned=False, rel_key=rel)
            face = result.landmarks
            # The detected face is the photo's subject: LFW centres it.
            assert np.linalg.norm(face[30] - np.array([125, 125])) < 40, label
            assert np.all(_coverage_at(result, face[NOSE_AND_MOUTH]) >= 128), f"{label}: nose or mouth uncovered"
            _assert_eyes_bare(image, result, face[EYES], label)


def test_landmarks_on_aligned_crop_match_the_template(aligned, maskers) -> None:
    """The fixed face box on aligned crops must put the landmarks where the alignment put the face."""
    masker = maskers["surgical"]
    # Frontal faces only: on a turned head dlib's nose tip and the five-point detector's nose differ by design.
    for rel in ALIGNED[:4]:
        points = masker.landmarks(aligned[rel], aligned=True)
        five = np.array(
            [points[36:42].mean(0), points[42:48].mean(0), points[30], points[48], points[54]]
        )
        error = np.linalg.norm(five - ARCFACE_TEMPLATE, axis=1)
        assert error.max() < 8.0, f"{rel}: landmarks {error.round(1)} px from the template"


def test_same_seed_same_pixels_other_seed_other_pixels(aligned) -> None:
    rel = ALIGNED[0]
    image = aligned[rel]
    first = Masker(MaskConfig(seed=7)).apply(image, aligned=True, rel_key=rel)
    again = Masker(MaskConfig(seed=7)).apply(image.copy(), aligned=True, rel_key=rel)
    assert np.array_equal(first.image, again.image)
    assert np.array_equal(first.coverage_mask, again.coverage_mask)
    assert (first.mask_type, first.style) == (again.mask_type, again.style)
    other = Masker(MaskConfig(seed=8)).apply(image, aligned=True, rel_key=rel)
    assert not np.array_equal(first.image, other.image)
    # The image's key is part of its seed: the same face under another name gets another mask.
    renamed = Masker(MaskConfig(seed=7)).apply(image, aligned=True, rel_key="someone/else.jpg")
    assert not np.array_equal(first.image, renamed.image)
    # Without a key the pixels seed it: still deterministic.
    keyless = [Masker(MaskConfig(seed=7)).apply(image, aligned=True).image for _ in range(2)]
    assert np.array_equal(keyless[0], keyless[1])


def test_types_and_styles_vary_across_images(aligned) -> None:
    masker = Masker(MaskConfig(seed=0))
    results = [
        masker.apply(image, aligned=True, rel_key=f"{i}/{rel}") for i in range(4) for rel, image in aligned.items()
    ]
    assert {r.mask_type for r in results} == set(ALL_TYPES)
    assert len({r.style for r in results}) >= 8


def test_side_follows_head_yaw(aligned, maskers) -> None:
    masker = maskers["surgical"]
    left = masker.apply(aligned["Edward_Egan/Edward_Egan_0001.jpg"], aligned=True, rel_key="a")
    right = masker.apply(aligned["Bill_Doba/Bill_Doba_0001.jpg"], aligned=True, rel_key="a")
    front = masker.apply(aligned["Aaron_Eckhart/Aaron_Eckhart_0001.jpg"], aligned=True, rel_key="a")
    assert (left.side, right.side, front.side) == ("left", "right", "front")
    # Mirroring the photo mirrors the estimate.
    mirrored = masker.apply(np.ascontiguousarray(aligned["Edward_Egan/Edward_Egan_0001.jpg"][:, ::-1]),
                            aligned=True, rel_key="a")
    assert mirrored.side == "right" and abs(mirrored.yaw + left.yaw) < 0.15


def test_explicit_landmarks_skip_detection(aligned, maskers) -> None:
    rel, image = ALIGNED[1], aligned[ALIGNED[1]]
    detected = maskers["kn95"].apply(image, aligned=True, rel_key=rel)
    given = Masker(MaskConfig(types=("kn95",), seed=0)).apply(image, rel_key=rel, landmarks=detected.landmarks)
    assert np.array_equal(detected.image, given.image)
    with pytest.raises(BfmError, match="68x2"):
        maskers["kn95"].apply(image, landmarks=np.zeros((5, 2)))


def test_template_masks(data_dir: Path, aligned, raw) -> None:
    folder = data_dir / "masktheface"
    templates = read_templates(folder)
    assert len(templates) == 21
    assert {t.mask_type for t in templates} == set(TEMPLATE_TYPES)
    assert {t.side for t in templates if t.name.endswith("_left")} == {"left"}
    for mask_type in TEMPLATE_TYPES:
        masker = Masker(MaskConfig(types=(mask_type,), template_dir=folder, template_share=1.0))
        for rel, image in [*aligned.items(), *raw.items()]:
            label = f"{mask_type} template on {rel}"
            result = masker.apply(image, rel_key=rel)  # size decides: crops aligned, photos raw
            assert result.source == "template" and result.mask_type == mask_type, label
            assert result.style in {t.name for t in templates if t.mask_type == mask_type}
            points = result.landmarks
            assert np.all(_coverage_at(result, points[[30, 51, 57]]) >= 128), f"{label}: nose or mouth uncovered"
            _assert_eyes_bare(image, result, points[EYES], label)
    # A turned head gets the turned template.
    masker = Masker(MaskConfig(types=("surgical",), template_dir=folder, template_share=1.0))
    assert masker.apply(aligned["Edward_Egan/Edward_Egan_0001.jpg"], rel_key="x").style.endswith("_left")


def test_template_share_mixes_sources(data_dir: Path, aligned) -> None:
    masker = Masker(MaskConfig(template_dir=data_dir / "masktheface", template_share=0.5))
    sources = {masker.apply(img, rel_key=f"{i}/{rel}").source for i in range(3) for rel, img in aligned.items()}
    assert sources == {"drawn", "template"}


def test_bad_input_is_a_bfm_error(aligned) -> None:
    with pytest.raises(BfmError, match="unknown mask type gas"):
        Masker(MaskConfig(types=("gas",)))
    with pytest.raises(BfmError):
        MaskConfig(types=())
    blank = np.full((250, 250, 3), 128, dtype=np.uint8)
    with pytest.raises(NoFaceError):
        Masker().apply(blank, aligned=False)
    assert issubclass(NoFaceError, BfmError)
    with pytest.raises(BfmError, match="square"):
        Masker().apply(np.zeros((112, 100, 3), dtype=np.uint8), aligned=True)
    with pytest.raises(BfmError, match="BGR uint8"):
        Masker().apply(np.zeros((112, 112), dtype=np.float32))


# ---- bfm-mask -------------------------------------------------------------------------------------------------


def _tiny_dataset(data_dir: Path, root: Path) -> Path:
    """Two identities x two aligned crops (one saved as PNG) plus a face-less raw photo."""
    src = root / "src"
    pairs = {
        "Colin_Powell": ["Colin_Powell_0001.jpg", "Colin_Powell_0002.jpg"],
        "Serena_Williams": ["Serena_Williams_0001.jpg", "Serena_Williams_0002.jpg"],
    }
    for identity, names in pairs.items():
        (src / identity).mkdir(parents=True)
        for name in names:
            shutil.copy(data_dir / "lfw" / "aligned112" / identity / name, src / identity / name)
    png = src / "Serena_Williams" / "Serena_Williams_0002.png"
    cv2.imwrite(str(png), load_image(src / "Serena_Williams" / "Serena_Williams_0002.jpg"))
    (src / "Serena_Williams" / "Serena_Williams_0002.jpg").unlink()
    cv2.imwrite(str(src / "Colin_Powell" / "blank.jpg"), np.full((200, 200, 3), 90, dtype=np.uint8))
    return src


def _run(*args: str) -> tuple[int, dict, str]:
    result = CliRunner().invoke(main, [*args, "--quiet"])
    summary = json.loads(result.stdout) if result.exit_code == 0 else {}
    return result.exit_code, summary, result.output


def test_cli_masks_a_folder_resumably(data_dir: Path, tmp_path: Path) -> None:
    src = _tiny_dataset(data_dir, tmp_path)
    dst = tmp_path / "dst"
    preview = tmp_path / "sheet.png"
    code, summary, output = _run(str(src), str(dst), "--seed", "3", "--workers", "2", "--preview", str(preview))
    assert code == 0, output
    faces = sorted(str(p.relative_to(src)) for p in src.rglob("*") if p.is_file() and p.name != "blank.jpg")
    assert sorted(str(p.relative_to(dst)) for p in dst.rglob("*") if p.is_file() and p.suffix != ".json") == faces
    png_out = dst / "Serena_Williams" / "Serena_Williams_0002.png"
    assert png_out.read_bytes().startswith(b"\x89PNG")
    report = json.loads((dst / "mask_report.json").read_text())
    assert report["masked"] == 4 and sum(report["counts"].values()) == 4
    assert report["no_face"] == ["Colin_Powell/blank.jpg"] and report["errors"] == []
    assert set(report["images"]) == set(faces) and report["complete"]
    assert summary["this_run"]["processed"] == 5
    sheet = cv2.imread(str(preview))
    assert sheet is not None and sheet.shape[0] >= 112 and sheet.shape[1] >= 4 * 224
    assert not np.array_equal(load_image(dst / faces[0]), load_image(src / faces[0]))

    # Rerun: nothing to do, same report.
    code, summary, output = _run(str(src), str(dst), "--seed", "3", "--workers", "2")
    assert code == 0, output
    assert summary["this_run"]["processed"] == 0 and summary["masked"] == 4
    assert json.loads((dst / "mask_report.json").read_text())["counts"] == report["counts"]

    # An output lost mid-write: its temporary file is not a finished image; the rerun redoes it, and the
    # pixels match the first run (seeds come from the relative path, not the process or order).
    lost = dst / faces[1]
    first_bytes = lost.read_bytes()
    lost.unlink()
    stale = lost.parent / f".{lost.name}.k2j4x9.tmp"
    stale.write_bytes(first_bytes[:100])
    code, summary, output = _run(str(src), str(dst), "--seed", "3", "--workers", "1")
    assert code == 0, output
    assert summary["this_run"]["processed"] == 1 and summary["this_run"]["skipped_done"] == 4
    assert lost.read_bytes() == first_bytes and not stale.exists()
    assert json.loads((dst / "mask_report.json").read_text())["counts"] == report["counts"]


def test_interrupted_run_resumes(data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = _tiny_dataset(data_dir, tmp_path)
    dst = tmp_path / "dst"
    cfg = RunConfig(src=src, dst=dst, mask=MaskConfig(seed=1), workers=1, progress=False)
    real_call = MaskJob.__call__
    calls = []

    def interrupted_on_third(self: MaskJob, rel: str) -> dict:
        calls.append(rel)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_call(self, rel)

    monkeypatch.setattr(MaskJob, "__call__", interrupted_on_third)
    with pytest.raises(KeyboardInterrupt):
        run(cfg)
    report = json.loads((dst / REPORT_NAME).read_text())
    assert not report["finished"] and report["this_run"]["processed"] == 2
    assert len(report["images"]) + len(report["no_face"]) == 2
    monkeypatch.setattr(MaskJob, "__call__", real_call)
    report = run(cfg)
    assert report["complete"] and report["this_run"]["processed"] == 3 and report["masked"] == 4
    assert sum(report["counts"].values()) == 4 and not report["unrecorded"]


def test_cli_refuses_mixed_settings_and_bad_options(data_dir: Path, tmp_path: Path) -> None:
    src = _tiny_dataset(data_dir, tmp_path)
    dst = tmp_path / "dst"
    code, _, output = _run(str(src), str(dst), "--types", "cloth", "--workers", "1")
    assert code == 0, output
    code, _, output = _run(str(src), str(dst), "--types", "surgical", "--workers", "1")
    assert code == 2 and "other settings" in output and "Traceback" not in output
    code, _, output = _run(str(src), str(tmp_path / "x"), "--types", "gas", "--workers", "1")
    assert code == 2 and "unknown mask type gas" in output
    code, _, output = _run(str(src), str(tmp_path / "y"), "--preview", str(tmp_path / "p.gif"))
    assert code == 2 and "preview" in output and not (tmp_path / "y").exists()
    code, _, output = _run(str(src), str(src / "inside"))
    assert code == 2 and "must not be the source" in output


# ---- printed fabrics and masks worn low ---------------------------------------------------------------------


def test_fabric_tiles_wrap_without_a_seam(data_dir: Path) -> None:
    from bfm_train.masking.textures import FabricLibrary

    fabrics = FabricLibrary(data_dir / "masktheface" / "textures")
    assert len(fabrics.tiles) == 27 and "floral_floral_1" in fabrics.names
    for name, tile in zip(fabrics.names, fabrics.tiles):
        height, width = tile.shape[:2]
        # Step across the wrap-around edge vs. an ordinary step inside the tile: alike for a seamless tile.
        wrap_x = np.abs(tile[:, 0] - tile[:, -1]).mean()
        wrap_y = np.abs(tile[0] - tile[-1]).mean()
        inner_x = np.abs(tile[:, width // 4] - tile[:, width // 4 + 1]).mean()
        inner_y = np.abs(tile[height // 4] - tile[height // 4 + 1]).mean()
        assert wrap_x <= inner_x + 1e-3 and wrap_y <= inner_y + 1e-3, name
    # A raw texture photo does not wrap: its opposite edges differ far more than neighbouring pixels.
    raw = cv2.imread(str(data_dir / "masktheface" / "textures" / "floral" / "floral_1.png")).astype(np.float32)
    assert np.abs(raw[:, 0] - raw[:, -1]).mean() > 2 * np.abs(raw[:, 10] - raw[:, 11]).mean()


def test_fabric_and_low_masks_are_deterministic_and_cover_what_they_should(data_dir: Path, aligned) -> None:
    config = MaskConfig(types=("cloth",), seed=3, fabric_dir=data_dir / "masktheface" / "textures",
                        fabric_share=1.0, low_share=1.0)
    results = {}
    for rel, image in aligned.items():
        first = Masker(config).apply(image, aligned=True, rel_key=rel)
        again = Masker(config).apply(image.copy(), aligned=True, rel_key=rel)
        assert np.array_equal(first.image, again.image) and first.style == again.style
        assert first.style.startswith("cloth_fabric_") and first.style.endswith("_low"), first.style
        points = first.landmarks
        assert np.all(_coverage_at(first, points[[48, 54, 57]]) >= 128), f"{rel}: mouth uncovered"
        assert np.all(_coverage_at(first, points[[27, 28]]) == 0), f"{rel}: a low mask covers the nose bridge"
        results[rel] = first
    assert len({r.style for r in results.values()}) > 1  # fabrics vary across images
    # The fabric draw comes after a mask's colour draws, so a fabric folder with share 0 keeps every style.
    rel = ALIGNED[0]
    plain = Masker(MaskConfig(types=("cloth",), seed=3)).apply(aligned[rel], aligned=True, rel_key=rel)
    zero = Masker(MaskConfig(types=("cloth",), seed=3, fabric_dir=data_dir / "masktheface" / "textures",
                             fabric_share=0.0)).apply(aligned[rel], aligned=True, rel_key=rel)
    assert plain.style == zero.style
    with pytest.raises(BfmError, match="low share must be in 0..1"):
        MaskConfig(low_share=1.5)
    with pytest.raises(BfmError, match="no fabric images"):
        Masker(MaskConfig(fabric_dir=data_dir / "mfr2" / "missing-folder-xyz"))


def test_random_prints_are_seeded_seamless_and_drawn_on_the_mask(aligned) -> None:
    from bfm_train.masking.textures import random_print

    first, again = random_print(np.random.default_rng(7)), random_print(np.random.default_rng(7))
    assert np.array_equal(first, again) and not np.array_equal(first, random_print(np.random.default_rng(8)))
    for seed in range(6):  # periodic: the wrap-around step is no larger than the steps inside the tile
        tile = random_print(np.random.default_rng(seed))
        for axis in (0, 1):
            steps = np.abs(np.diff(tile, axis=axis)).mean(axis=(1 - axis, 2))
            wrap = np.abs(tile.take(0, axis=axis) - tile.take(-1, axis=axis)).mean()
            assert wrap <= steps.max() + 1e-3, (seed, axis)
    rel = ALIGNED[0]
    config = MaskConfig(types=("cloth",), seed=3, print_share=1.0)
    printed = Masker(config).apply(aligned[rel], aligned=True, rel_key=rel)
    assert printed.style == "cloth_print"
    assert np.array_equal(printed.image, Masker(config).apply(aligned[rel].copy(), aligned=True, rel_key=rel).image)
    plain = Masker(MaskConfig(types=("cloth",), seed=3)).apply(aligned[rel], aligned=True, rel_key=rel)
    covered = _coverage_at(printed, printed.landmarks[[48, 54, 57]])
    assert np.all(covered >= 128)  # the print is on the mask, which still covers the mouth
    assert not np.array_equal(printed.image, plain.image)
    outside = printed.landmarks[[36, 45]].round().astype(int)  # eye corners: never painted
    for x, y in outside:
        assert np.array_equal(printed.image[y, x], aligned[rel][y, x])
    with pytest.raises(BfmError, match="print share must be in 0..1"):
        MaskConfig(print_share=-0.1)


def test_cli_exits_2_when_images_could_not_be_masked(data_dir: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Raw photos without dlib: every image fails, and the run says so (exit 2), never a quiet exit 0."""
    import bfm_train.masking.landmarks as landmarks

    def no_dlib(*_args: object, **_kwargs: object) -> None:
        raise BfmError("dlib is not installed: pip install dlib-bin")

    monkeypatch.setattr(landmarks.LandmarkDetector, "__init__", no_dlib)
    src = tmp_path / "src" / "Abel_Pacheco"
    src.mkdir(parents=True)
    for photo in sorted((data_dir / "lfw" / "raw-fold1" / "Abel_Pacheco").glob("*.jpg"))[:2]:
        shutil.copy(photo, src / photo.name)
    result = CliRunner().invoke(main, [str(tmp_path / "src"), str(tmp_path / "dst"), "--raw", "--workers", "1", "--quiet"])
    assert result.exit_code == 2
    assert result.stderr.strip().startswith("error: 2 of 2 images could not be masked") and "dlib" in result.stderr
    assert json.loads((tmp_path / "dst" / "mask_report.json").read_text())["complete"] is False


def test_cli_limit_masks_the_first_images_and_a_rerun_goes_on(data_dir: Path, tmp_path: Path) -> None:
    src = _tiny_dataset(data_dir, tmp_path)
    dst = tmp_path / "dst"
    code, summary, _ = _run(str(src), str(dst), "--limit", "3", "--workers", "1")
    everything = sorted(str(p.relative_to(src)) for p in src.glob("*/*") if p.is_file())
    assert code == 0 and summary["total_images"] == 3
    written = sorted(str(p.relative_to(dst)) for p in dst.glob("*/*"))
    assert set(written) == set(everything[:3]) - set(summary["no_face"])  # the first three, less a faceless one
    code, summary, _ = _run(str(src), str(dst), "--workers", "1")
    assert summary["this_run"]["skipped_done"] == 3 and summary["total_images"] == len(everything)  # faceless: done too

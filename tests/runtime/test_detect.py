from __future__ import annotations

import dataclasses
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from bfm_deploy.bundle import Bundle
from bfm_deploy.detect import (
    FaceAligner,
    MtcnnConfig,
    MtcnnDetector,
    NetworkDetector,
    NoFaceError,
    OnnxRunner,
    check_choice,
    letterbox,
    open_detector,
)
from bfm_deploy.detect.boxes import crop_patches, nms, to_square
from bfm_deploy.detect.scrfd import decode_scrfd
from bfm_deploy.detect.yunet import DEFAULT_MODEL as YUNET_MODEL
from bfm_deploy.eval.landmarks import read_reference
from bfm_deploy.errors import BfmError
from bfm_deploy.images import load_image


@pytest.fixture(scope="module")
def aligner() -> FaceAligner:
    return FaceAligner(MtcnnDetector())


def _reference_landmarks(data_dir: Path) -> dict[str, np.ndarray]:
    return read_reference(data_dir / "lfw" / "landmarks5.txt")


def _lfw_sample(data_dir: Path, count: int) -> list[Path]:
    photos = sorted((data_dir / "lfw" / "raw-fold1").glob("*/*.jpg"))
    return photos[:: max(1, len(photos) // count)][:count]


# ---- box arithmetic -------------------------------------------------------------------------------------------


def test_nms_keeps_the_best_of_overlapping_boxes() -> None:
    boxes = np.array([[0, 0, 9, 9], [1, 1, 10, 10], [50, 50, 59, 59], [2, 2, 5, 5]], dtype=np.float64)
    scores = np.array([0.8, 0.9, 0.7, 0.95])
    assert nms(boxes, scores, 0.5).tolist() == [3, 1, 2]  # box 0 overlaps box 1 by IoU 0.68
    assert nms(boxes, scores, 0.5, mode="min").tolist() == [3, 2]  # box 3 lies inside 0 and 1
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.5).size == 0


def test_to_square_and_padded_crops() -> None:
    square = to_square(np.array([[10.0, 20.0, 19.0, 59.0]]))  # 10 wide, 40 high
    np.testing.assert_allclose(square, [[-5.0, 20.0, 34.0, 59.0]])
    image = np.full((30, 30, 3), 200, dtype=np.uint8)
    patches, used = crop_patches(image, np.array([[-10.0, -10.0, 9.0, 9.0]]), 4)
    np.testing.assert_array_equal(used, [[-10, -10, 9, 9]])
    assert patches.shape == (1, 4, 4, 3)
    assert patches[0, 0, 0, 0] == 0 and patches[0, 3, 3, 0] == 200  # zero padding outside the image


def test_config_and_input_validation(tmp_path: Path) -> None:
    with pytest.raises(BfmError, match="min_face_size"):
        MtcnnConfig(min_face_size=8)
    with pytest.raises(BfmError, match="MTCNN model not found"):
        MtcnnDetector(MtcnnConfig(model_dir=tmp_path))


def test_detector_rejects_non_bgr_input(aligner: FaceAligner) -> None:
    with pytest.raises(BfmError, match="BGR uint8"):
        aligner.detector.detect(np.zeros((50, 50), np.uint8))
    with pytest.raises(BfmError, match="BGR uint8"):
        aligner.detector.detect(np.zeros((50, 50, 3), np.float32))


def test_shipped_models_have_the_expected_interface() -> None:
    import onnxruntime as ort

    from bfm_deploy.detect.mtcnn import DEFAULT_MODEL_DIR

    expected = {
        "pnet": (["batch", 3, "height", "width"], ["reg", "prob"]),
        "rnet": (["batch", 3, 24, 24], ["reg", "prob"]),
        "onet": (["batch", 3, 48, 48], ["reg", "landmarks", "prob"]),
    }
    for name, (shape, outputs) in expected.items():
        session = ort.InferenceSession(str(DEFAULT_MODEL_DIR / f"{name}.onnx"), providers=["CPUExecutionProvider"])
        (model_input,) = session.get_inputs()
        assert (model_input.name, model_input.shape) == ("input", shape)
        assert [o.name for o in session.get_outputs()] == outputs
    assert "MIT License" in (DEFAULT_MODEL_DIR / "LICENSE").read_text()


def test_runtime_modules_do_not_import_torch() -> None:
    code = "import sys, bfm_deploy.detect, bfm_deploy.images; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


# ---- real photos ----------------------------------------------------------------------------------------------


def test_no_face_raises(aligner: FaceAligner) -> None:
    gray = np.full((250, 250, 3), 128, dtype=np.uint8)
    noise = np.random.default_rng(0).integers(0, 256, (250, 250, 3), dtype=np.uint8)
    for image, name in ((gray, "gray.png"), (noise, "noise.png")):
        with pytest.raises(NoFaceError, match=f"no face found in {name}"):
            aligner.detect_and_align(image, name)
    assert issubclass(NoFaceError, BfmError)


def test_lfw_landmarks_and_crops_match_the_reference(data_dir: Path, aligner: FaceAligner) -> None:
    refs = _reference_landmarks(data_dir)
    errors, own_diffs, other_diffs, times = [], [], [], []
    photos = _lfw_sample(data_dir, 20)
    shipped = [load_image(data_dir / "lfw" / "aligned112" / p.relative_to(p.parents[1])) for p in photos]
    for i, path in enumerate(photos):
        image = load_image(path)
        start = time.perf_counter()
        info = aligner.detect_and_align(image, path.name)
        crop = info.crop
        times.append(time.perf_counter() - start)
        key = path.relative_to(path.parents[1]).as_posix()
        errors.append(np.linalg.norm(info.face.landmarks - refs[key], axis=1).mean())
        assert crop.shape == (112, 112, 3) and crop.dtype == np.uint8
        own_diffs.append(np.abs(crop.astype(np.float64) - shipped[i]).mean())
        other_diffs.append(np.abs(crop.astype(np.float64) - shipped[i - 1]).mean())
    print(f"\nLFW: median landmark error {np.median(errors):.2f} px, median crop |diff| {np.median(own_diffs):.1f} "
          f"(other person's crop {np.median(other_diffs):.1f}), detect+align {np.median(times) * 1e3:.1f} ms/image")
    assert np.median(errors) < 4.0
    assert max(errors) < 10.0
    assert np.median(own_diffs) < 15.0
    assert np.median(own_diffs) < 0.5 * np.median(other_diffs)
    assert np.median(times) < 0.5  # generous: the machine is shared; typical is ~20 ms on one core


def test_mfr2_masked_faces_are_found(data_dir: Path, aligner: FaceAligner) -> None:
    photos = sorted((data_dir / "mfr2").glob("*/*.png"))[::5]
    found = 0
    for path in photos:
        item = aligner.align_many([path])[0]
        if isinstance(item, NoFaceError):
            continue
        assert not isinstance(item, BfmError) and item.crop.shape == (112, 112, 3)
        found += 1
    assert found >= 0.95 * len(photos), f"faces found in {found} of {len(photos)} MFR2 images"


@pytest.mark.parametrize("larger_first", [True, False])
def test_two_faces_picks_the_larger(data_dir: Path, aligner: FaceAligner, larger_first: bool) -> None:
    small_path, large_path = _lfw_sample(data_dir, 2)
    small = load_image(small_path)
    large = cv2.resize(load_image(large_path), (375, 375), interpolation=cv2.INTER_LINEAR)
    small = cv2.copyMakeBorder(small, 0, 125, 0, 0, cv2.BORDER_CONSTANT, value=(0, 0, 0))
    canvas = np.hstack([large, small] if larger_first else [small, large])
    info = aligner.detect_and_align(canvas, "pair.jpg")
    crop = info.crop
    assert info.num_faces >= 2 and info.multiple_faces
    assert info.note == f"{info.num_faces} faces found in pair.jpg, using the largest centred one"
    centre_x = info.face.centre[0]
    assert (centre_x < 375) if larger_first else (centre_x >= 250)
    # The crop shows the larger photo's face: compare with the crop of that photo alone.
    alone = aligner.detect_and_align(large).crop
    assert np.abs(crop.astype(np.float64) - alone).mean() < 10.0


def test_single_face_has_no_note_and_file_errors_name_the_file(
    data_dir: Path, aligner: FaceAligner, tmp_path: Path
) -> None:
    path = data_dir / "lfw" / "raw-fold1" / "Abel_Pacheco" / "Abel_Pacheco_0001.jpg"
    flat = tmp_path / "flat.png"
    assert cv2.imwrite(str(flat), np.full((120, 160), 90, dtype=np.uint8))
    info, no_face, unreadable = aligner.align_many([path, flat, tmp_path / "missing.jpg"])
    assert not isinstance(info, BfmError) and info.num_faces == 1 and info.note is None
    assert isinstance(no_face, NoFaceError) and str(no_face) == f"no face found in {flat}"
    assert isinstance(unreadable, BfmError) and "missing.jpg" in str(unreadable)


def test_large_images_are_shrunk_for_detection_and_mapped_back(data_dir: Path, aligner: FaceAligner) -> None:
    path = data_dir / "lfw" / "raw-fold1" / "Abel_Pacheco" / "Abel_Pacheco_0001.jpg"
    image = load_image(path)
    (reference,) = aligner.detector.detect(image)
    big = cv2.resize(image, (750, 750), interpolation=cv2.INTER_CUBIC)
    (face,) = MtcnnDetector(MtcnnConfig(max_side=250)).detect(big)
    # Detected at 250x250 again and mapped to 3x: landmarks at 3x the original ones (pixel centres scaled).
    np.testing.assert_allclose(face.landmarks, (reference.landmarks + 0.5) * 3 - 0.5, atol=3.0)
    assert face.width == pytest.approx(reference.width * 3, rel=0.05)


# ---- SCRFD (the bundle's detector) and YuNet ------------------------------------------------------------------

DEMO = Path(__file__).resolve().parents[2] / "engines" / "demo"


@pytest.fixture(scope="module")
def bundle_detector() -> NetworkDetector:
    detector = open_detector("bundle", Bundle.load(DEMO))
    assert isinstance(detector, NetworkDetector)
    return detector


def _direct_scrfd(outputs: list[np.ndarray], size: int, threshold: float) -> list[tuple[float, np.ndarray, np.ndarray]]:
    """insightface's decoding written out anchor by anchor, the straightforward way."""
    found = []
    for level, stride in enumerate((8, 16, 32)):
        cells = size // stride
        scores, boxes, points = outputs[level], outputs[level + 3], outputs[level + 6]
        for index in range(cells * cells * 2):
            if scores[index, 0] < threshold:
                continue
            row, col = divmod(index // 2, cells)
            cx, cy = col * stride, row * stride
            left, top, right, bottom = boxes[index] * stride
            marks = np.array([[cx + points[index, 2 * k] * stride, cy + points[index, 2 * k + 1] * stride] for k in range(5)])
            found.append((float(scores[index, 0]), np.array([cx - left, cy - top, cx + right, cy + bottom]), marks))
    return found


def test_scrfd_decoding_matches_a_direct_implementation_on_real_photos(data_dir: Path, bundle_detector: NetworkDetector) -> None:
    spec = bundle_detector.spec
    photos = _lfw_sample(data_dir, 4) + sorted((data_dir / "mfr2").glob("*/*.png"))[:4:2]
    canvases = [letterbox(load_image(p), spec.input_size)[0] for p in photos]
    outputs = OnnxRunner(spec.file, spec.input_name, spec.output_names)(bundle_detector.blob(canvases))
    for i in range(len(photos)):
        mine = decode_scrfd([o[i] for o in outputs], spec.input_size, spec.score_threshold)
        direct = sorted(_direct_scrfd([o[i] for o in outputs], spec.input_size, spec.score_threshold), key=lambda f: -f[0])
        order = np.argsort(-mine[1], kind="stable")
        assert len(direct) == len(order) > 0
        np.testing.assert_allclose(mine[1][order], [f[0] for f in direct], rtol=1e-6)
        np.testing.assert_allclose(mine[0][order], [f[1] for f in direct], atol=1e-3)
        np.testing.assert_allclose(mine[2][order], [f[2] for f in direct], atol=1e-3)


def test_batched_detection_equals_one_image_at_a_time(data_dir: Path, bundle_detector: NetworkDetector) -> None:
    images = [load_image(p) for p in _lfw_sample(data_dir, 6)]
    images.append(np.full((90, 300, 3), 128, np.uint8))  # no face, and another aspect ratio
    batched = bundle_detector.detect_batch(images)
    for image, faces in zip(images, batched):
        alone = bundle_detector.detect(image)
        assert len(alone) == len(faces)
        for a, b in zip(alone, faces):
            np.testing.assert_allclose(a.landmarks, b.landmarks, atol=1e-3)
    assert batched[-1] == []


def test_letterbox_maps_back_by_one_scale() -> None:
    image = np.zeros((100, 200, 3), np.uint8)
    image[40:60, 150:170] = 255
    canvas, scale = letterbox(image, 320)
    assert canvas.shape == (320, 320, 3) and scale == pytest.approx(1.6)
    assert canvas[160:, :].max() == 0  # the padding is below the image
    ys, xs = np.nonzero(canvas[:, :, 0] > 128)
    assert xs.min() / scale == pytest.approx(150, abs=1.0) and ys.min() / scale == pytest.approx(40, abs=1.0)


@pytest.mark.parametrize("choice", ["bundle", "yunet", "mtcnn"])
def test_every_detector_finds_lfw_faces_with_landmarks_near_the_reference(data_dir: Path, choice: str) -> None:
    refs = _reference_landmarks(data_dir)
    photos = _lfw_sample(data_dir, 12)
    with FaceAligner(open_detector(choice, Bundle.load(DEMO))) as aligner:
        items = aligner.align_many(photos)
    errors = []
    for path, item in zip(photos, items):
        assert not isinstance(item, BfmError), f"{choice}: {item}"
        reference = refs[path.relative_to(path.parents[1]).as_posix()]
        errors.append(np.linalg.norm(item.face.landmarks - reference, axis=1).mean())
    assert np.median(errors) < 5.0 and max(errors) < 12.0, (choice, errors)


@pytest.mark.parametrize("choice", ["bundle", "yunet"])
def test_masked_faces_are_found_with_landmarks_in_order(data_dir: Path, choice: str) -> None:
    photos = sorted((data_dir / "mfr2").glob("*/*.png"))[::9]
    with FaceAligner(open_detector(choice, Bundle.load(DEMO))) as aligner:
        items = aligner.align_many(photos)
    for path, item in zip(photos, items):
        assert not isinstance(item, BfmError), f"{choice}: {item}"  # both find every sampled masked face
        eyes, nose, mouth = item.face.landmarks[:2], item.face.landmarks[2], item.face.landmarks[3:]
        assert eyes[0, 0] < eyes[1, 0] and mouth[0, 0] < mouth[1, 0], path.name  # left = image-left
        assert eyes[:, 1].max() < nose[1] < mouth[:, 1].min(), path.name  # eyes above nose above mouth


def test_a_huge_photo_is_decoded_small_and_still_aligned(data_dir: Path, tmp_path: Path,
                                                         bundle_detector: NetworkDetector) -> None:
    path = data_dir / "lfw" / "raw-fold1" / "Abel_Pacheco" / "Abel_Pacheco_0001.jpg"
    small = load_image(path)
    huge = cv2.resize(small, (6000, 6000), interpolation=cv2.INTER_CUBIC)
    big_file = tmp_path / "huge.jpg"
    assert cv2.imwrite(str(big_file), huge, [cv2.IMWRITE_JPEG_QUALITY, 90])
    decoded = load_image(big_file, max_side=1280)
    assert max(decoded.shape[:2]) == 1280  # libjpeg decoded at 1/4, then shrunk: never 36 Mpx of pixels
    with FaceAligner(bundle_detector) as aligner:
        (item,), (reference,) = aligner.align_many([big_file]), aligner.align_many([path])
    assert not isinstance(item, BfmError) and not isinstance(reference, BfmError)
    assert np.abs(item.crop.astype(np.float64) - reference.crop).mean() < 12.0


def test_detector_choice_grammar(tmp_path: Path) -> None:
    with pytest.raises(BfmError, match="unknown detector 'retina'"):
        check_choice("retina")
    with pytest.raises(BfmError, match="not found"):
        check_choice(str(tmp_path / "missing.onnx"))
    no_detector = Bundle.load(DEMO)
    no_detector = dataclasses.replace(no_detector, detector=None)
    with pytest.raises(BfmError, match="has no detector.onnx"):
        open_detector("bundle", no_detector)
    assert isinstance(open_detector("auto", no_detector), MtcnnDetector)  # documented: auto without one is MTCNN
    assert open_detector(str(DEMO / "detector.onnx")).name == "scrfd:detector.onnx"  # a path to an SCRFD graph
    assert open_detector(str(YUNET_MODEL)).name == "yunet"

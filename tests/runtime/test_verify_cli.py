"""bfm-verify: decisions and exit codes, JSON output, --pairs streaming, and every bad input -> exit 2, one line."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner, Result

from bfm_deploy.verify_cli import main

@pytest.fixture(scope="module")
def faces(data_dir: Path) -> dict[str, Path]:
    root = data_dir / "lfw" / "aligned112"
    return {
        "a1": root / "Aaron_Peirsol" / "Aaron_Peirsol_0001.jpg",
        "a2": root / "Aaron_Peirsol" / "Aaron_Peirsol_0002.jpg",
        "b": root / "Abel_Pacheco" / "Abel_Pacheco_0001.jpg",
    }


def run(*args: str | Path) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_one_line_error(result: Result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    for fragment in fragments:
        assert fragment in lines[0]


def test_same_person_exits_0(runtime_bundle: Path, faces: dict[str, Path]) -> None:
    result = run(faces["a1"], faces["a2"], "--bundle", runtime_bundle, "--aligned")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("same person (score ")
    assert "route: full, case 1 (both unmasked)" in result.stdout and "mask probability: " in result.stdout


def test_different_people_exit_1_with_json(runtime_bundle: Path, faces: dict[str, Path]) -> None:
    result = run(faces["a1"], faces["b"], "--bundle", runtime_bundle, "--aligned", "--json", "--backend", "ort")
    assert result.exit_code == 1, result.output
    record = json.loads(result.stdout)
    assert record["same"] is False and record["score"] < record["threshold"] == 0.30
    assert record["route"] == "full" and record["case"] == 1 and len(record["mask_probability"]) == 2
    assert record["a"] == str(faces["a1"])


def _png_header_only(path: Path, width: int, height: int) -> Path:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", 13) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    iend = struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND"))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk + iend)
    return path


@pytest.fixture()
def bad_images(tmp_path: Path, faces: dict[str, Path]) -> dict[str, Path]:
    jpeg = faces["a1"].read_bytes()
    (tmp_path / "folder.jpg").mkdir()
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (tmp_path / "text.jpg").write_text("<html>not found</html>\n")
    return {
        "missing": tmp_path / "missing.jpg",
        "directory": tmp_path / "folder.jpg",
        "zero-byte": tmp_path / "empty.jpg",
        "truncated": tmp_path / "truncated.jpg",
        "text": tmp_path / "text.jpg",
        "too-large": _png_header_only(tmp_path / "huge.png", 100_000, 100_000),
    }


@pytest.mark.parametrize(
    ("kind", "fragment"),
    [("missing", "not found"), ("directory", "directory"), ("zero-byte", "empty"), ("truncated", "truncated"),
     ("text", "not a JPEG"), ("too-large", "too large")],
)
def test_bad_image_exits_2_in_one_line(runtime_bundle: Path, faces: dict[str, Path], bad_images: dict[str, Path],
                                       kind: str, fragment: str) -> None:
    result = run(faces["a1"], bad_images[kind], "--bundle", runtime_bundle, "--aligned")
    assert_one_line_error(result, fragment, bad_images[kind].name)


@pytest.mark.parametrize("kind", ["missing", "directory", "zero-byte", "truncated", "text", "too-large"])
def test_bad_image_on_the_detection_path_exits_2_in_one_line(runtime_bundle: Path, faces: dict[str, Path],
                                                             bad_images: dict[str, Path], kind: str) -> None:
    result = run(bad_images[kind], faces["a1"], "--bundle", runtime_bundle)  # photos are decoded on a thread pool
    assert_one_line_error(result, bad_images[kind].name)


def test_detector_option_is_checked_and_used(runtime_bundle: Path, data_dir: Path, tmp_path: Path) -> None:
    photo = data_dir / "lfw" / "raw-fold1" / "Abel_Pacheco" / "Abel_Pacheco_0001.jpg"
    other = data_dir / "lfw" / "raw-fold1" / "Abel_Pacheco" / "Abel_Pacheco_0004.jpg"
    assert_one_line_error(run(photo, other, "--bundle", runtime_bundle, "--detector", "retina"), "unknown detector 'retina'")
    for detector in ("auto", "yunet", "mtcnn"):
        result = run(photo, other, "--bundle", runtime_bundle, "--detector", detector, "--json")
        assert result.exit_code == 0, (detector, result.output)


def test_truncated_jpeg_in_a_real_process(runtime_bundle: Path, faces: dict[str, Path], bad_images: dict[str, Path]) -> None:
    """No traceback and no decoder chatter (libjpeg warnings go straight to stderr, past click)."""
    proc = subprocess.run([sys.executable, "-m", "bfm_deploy.verify_cli", str(faces["a1"]), str(bad_images["truncated"]),
                           "--bundle", str(runtime_bundle), "--aligned", "--backend", "ort"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: ") and "truncated" in proc.stderr
    assert proc.stdout == ""


@pytest.mark.parametrize("conversion", ["gray", "rgba", "16-bit"])
def test_unusual_pngs_are_converted(runtime_bundle: Path, faces: dict[str, Path], tmp_path: Path, conversion: str) -> None:
    bgr = cv2.imread(str(faces["a2"]))
    if conversion == "gray":
        image = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    elif conversion == "rgba":
        image = np.dstack([bgr, np.full(bgr.shape[:2], 255, np.uint8)])
    else:
        image = bgr.astype(np.uint16) * 257
    path = tmp_path / f"{conversion}.png"
    cv2.imwrite(str(path), image)
    result = run(faces["a1"], path, "--bundle", runtime_bundle, "--aligned", "--json")
    assert result.exit_code == 0, result.output  # still the same person
    if conversion != "gray":  # opaque alpha and 16-bit scaling are lossless: the very same crop
        direct = json.loads(run(faces["a1"], faces["a2"], "--bundle", runtime_bundle, "--aligned", "--json").stdout)
        assert json.loads(result.stdout)["score"] == pytest.approx(direct["score"], abs=1e-5)


def test_no_face_exits_2(runtime_bundle: Path, faces: dict[str, Path], tmp_path: Path) -> None:
    blank = tmp_path / "wall.png"
    cv2.imwrite(str(blank), np.full((240, 320, 3), 180, np.uint8))
    assert_one_line_error(run(faces["a1"], blank, "--bundle", runtime_bundle), "no face")


def test_wrong_size_for_aligned_exits_2(runtime_bundle: Path, faces: dict[str, Path], tmp_path: Path) -> None:
    photo = tmp_path / "photo.png"
    cv2.imwrite(str(photo), np.full((240, 320, 3), 180, np.uint8))
    assert_one_line_error(run(faces["a1"], photo, "--bundle", runtime_bundle, "--aligned"), "drop --aligned")


def _bundle_copy(runtime_bundle: Path, dest: Path) -> Path:
    dest.mkdir()
    for file in runtime_bundle.iterdir():
        if file.name == "manifest.json":
            shutil.copy(file, dest / file.name)
        else:
            (dest / file.name).symlink_to(file)
    return dest


def test_corrupt_and_edited_manifest_exit_2(runtime_bundle: Path, faces: dict[str, Path], tmp_path: Path) -> None:
    bundle = _bundle_copy(runtime_bundle, tmp_path / "b")
    manifest = bundle / "manifest.json"
    good = manifest.read_text()
    manifest.write_text(good[:100])
    assert_one_line_error(run(faces["a1"], faces["a2"], "--bundle", bundle, "--aligned"), "not valid JSON")
    edited = json.loads(good)
    del edited["thresholds"]["full"]
    manifest.write_text(json.dumps(edited))
    assert_one_line_error(run(faces["a1"], faces["a2"], "--bundle", bundle, "--aligned"), "thresholds.full")


def test_onnx_sha256_mismatch_exits_2(runtime_bundle: Path, faces: dict[str, Path], tmp_path: Path) -> None:
    bundle = _bundle_copy(runtime_bundle, tmp_path / "b")
    (bundle / "partial.onnx").unlink()
    (bundle / "partial.onnx").write_bytes((runtime_bundle / "full.onnx").read_bytes())  # a swapped graph
    assert_one_line_error(run(faces["a1"], faces["a2"], "--bundle", bundle, "--aligned"), "partial.onnx", "sha256")


def test_default_bundle_lookup(faces: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bfm_deploy.bundle import default_bundle

    monkeypatch.delenv("BFM_BUNDLE", raising=False)
    monkeypatch.chdir(tmp_path)  # from a checkout, its engines/demo whatever the working directory
    assert Path(default_bundle()) == Path(__file__).resolve().parents[2] / "engines" / "demo"
    monkeypatch.setenv("BFM_BUNDLE", str(tmp_path / "nowhere"))  # $BFM_BUNDLE first; a missing one is named
    assert default_bundle() == str(tmp_path / "nowhere")
    assert_one_line_error(run(faces["a1"], faces["a2"]), "nowhere", "--bundle", "BFM_BUNDLE")


def test_unavailable_backend_exits_2(runtime_bundle: Path, faces: dict[str, Path]) -> None:
    from bfm_deploy.backends import nvidia_gpu_present

    if nvidia_gpu_present():
        pytest.skip("a GPU is present: TensorRT may well be available")
    result = run(faces["a1"], faces["a2"], "--bundle", runtime_bundle, "--aligned", "--backend", "trt")
    assert_one_line_error(result, "TensorRT")


def test_usage_errors_exit_2(runtime_bundle: Path, faces: dict[str, Path]) -> None:
    assert_one_line_error(run(faces["a1"], "--bundle", runtime_bundle), "expected two images")
    assert_one_line_error(run(faces["a1"], faces["a2"], "--pairs", "x.txt", "--bundle", runtime_bundle), "not both")


def test_pairs_stream_json_lines_and_out_file(runtime_bundle: Path, faces: dict[str, Path], tmp_path: Path) -> None:
    pairs = tmp_path / "pairs.txt"
    pairs.write_text(f"# a comment\n{faces['a1']} {faces['a2']}\n\n{faces['a1']}\t{faces['b']}\n")
    result = run("--pairs", pairs, "--bundle", runtime_bundle, "--aligned", "--batch-size", "2")
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["same"] for r in records] == [True, False]
    assert records[1]["b"] == str(faces["b"])
    out = tmp_path / "results.jsonl"
    result = run("--pairs", pairs, "--bundle", runtime_bundle, "--aligned", "--out", out)
    assert result.exit_code == 0 and result.stdout == ""
    assert [json.loads(line) for line in out.read_text().splitlines()] == records
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pairs.txt", "results.jsonl"]  # no temp file left


def test_pairs_with_a_bad_image_report_it_and_exit_2(runtime_bundle: Path, faces: dict[str, Path], tmp_path: Path) -> None:
    (tmp_path / "imgs").mkdir()
    shutil.copy(faces["a1"], tmp_path / "imgs" / "x.jpg")
    pairs = tmp_path / "pairs.txt"
    pairs.write_text(f"imgs/x.jpg {faces['a2']}\nimgs/x.jpg imgs/none.jpg\n")  # relative to the pairs file
    result = run("--pairs", pairs, "--bundle", runtime_bundle, "--aligned")
    assert_one_line_error(result, "1 of 2 pairs")
    first, second = (json.loads(line) for line in result.stdout.splitlines())
    assert first["same"] is True and "none.jpg" in second["error"]
    pairs.write_text("only-one-field\n")
    assert_one_line_error(run("--pairs", pairs, "--bundle", runtime_bundle), "pairs.txt:1", "expected 'img1 img2 [same", "got 1 field(s)")


def test_an_unexpected_error_is_one_line_and_exit_2_not_1(runtime_bundle: Path, faces: dict[str, Path],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from bfm_deploy import verifier

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("onnxruntime said no\nsecond line")

    monkeypatch.setattr(verifier.Verifier, "verify", broken)
    result = run(faces["a1"], faces["a2"], "--bundle", runtime_bundle, "--aligned")
    assert_one_line_error(result, "unexpected error (RuntimeError: onnxruntime said no)", "--debug")
    result = run(faces["a1"], faces["a2"], "--bundle", runtime_bundle, "--aligned", "--debug")
    assert result.exit_code == 2 and "Traceback" in result.stderr and result.stderr.strip().endswith("report it")
    os.environ.pop("BFM_DEBUG")  # --debug set it for its process, which here is the test run's
    monkeypatch.setenv("BFM_DEBUG", "1")  # and this one is undone after the test
    result = run(faces["a1"], faces["a2"], "--bundle", runtime_bundle, "--aligned")
    assert result.exit_code == 2 and "Traceback" in result.stderr


def test_interrupted_pairs_keep_finished_lines_and_resume(runtime_bundle: Path, faces: dict[str, Path], tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from bfm_deploy import verifier

    pairs = tmp_path / "pairs.txt"
    rows = [(faces["a1"], faces["a2"]), (faces["a1"], faces["b"]), (faces["a2"], faces["b"]), (faces["b"], faces["a1"])]
    pairs.write_text("".join(f"{a}\t{b}\n" for a, b in rows))
    reference = tmp_path / "reference.jsonl"
    assert run("--pairs", pairs, "--bundle", runtime_bundle, "--aligned", "--out", reference).exit_code == 0

    original = verifier.Verifier.verify_many
    seen: list[int] = []

    def interrupted_after_two(self, todo, **kwargs):  # type: ignore[no-untyped-def]
        todo = list(todo)
        seen.append(len(todo))
        for i, result in enumerate(original(self, todo, **kwargs)):
            if i == 2:
                raise KeyboardInterrupt
            yield result

    monkeypatch.setattr(verifier.Verifier, "verify_many", interrupted_after_two)
    out = tmp_path / "results.jsonl"
    assert_one_line_error(run("--pairs", pairs, "--bundle", runtime_bundle, "--aligned", "--out", out), "interrupted")
    partial = tmp_path / "results.jsonl.partial"
    assert not out.exists() and len(partial.read_text().splitlines()) == 2  # the finished work is kept
    with open(partial, "a") as fh:
        fh.write('{"a": "half a line')  # what a kill in mid-write leaves
    assert_one_line_error(run("--pairs", pairs, "--bundle", runtime_bundle, "--aligned", "--out", out),
                          "pass --resume to continue it")
    monkeypatch.setattr(verifier.Verifier, "verify_many", lambda self, todo, **kw: (seen.append(len(list(todo))) or
                                                                                     original(self, rows[2:], **kw)))
    result = run("--pairs", pairs, "--bundle", runtime_bundle, "--aligned", "--out", out, "--resume")
    assert result.exit_code == 0, result.output
    assert seen == [4, 2]  # the resumed run verified only the two pairs not yet done
    assert out.read_text() == reference.read_text() and not partial.exists()
    other = tmp_path / "other.txt"
    other.write_text(f"{faces['b']}\t{faces['b']}\n" * 4)
    partial.write_text(reference.read_text().splitlines()[0] + "\n")
    assert_one_line_error(run("--pairs", other, "--bundle", runtime_bundle, "--aligned", "--out", out, "--resume"),
                          "belongs to another run")
    assert_one_line_error(run("--pairs", pairs, "--bundle", runtime_bundle, "--aligned", "--resume"), "--resume continues")


def test_stale_temporaries_and_an_interrupted_overwrite_are_cleaned_up(runtime_bundle: Path, tmp_path: Path) -> None:
    import shutil

    from bfm_deploy.atomic import atomic_write_text, remove_stale_temporaries
    from bfm_deploy.bundle import Bundle

    target = tmp_path / "report.json"
    dead = tmp_path / ".report.json.999999999.abcd.tmp"  # no such process
    live = tmp_path / f".report.json.{os.getpid()}.efgh.tmp"  # this process: a writer still at work
    dead.write_text("x")
    live.write_text("x")
    atomic_write_text(target, "{}")
    assert not dead.exists() and live.exists() and target.read_text() == "{}"
    assert remove_stale_temporaries(target) == []
    # an export killed between "old bundle aside" and "new bundle in place": the next load restores the old one
    bundle = tmp_path / "b"
    shutil.copytree(runtime_bundle, tmp_path / ".b.old")
    assert Bundle.load(bundle).name == Bundle.load(runtime_bundle).name and not (tmp_path / ".b.old").exists()

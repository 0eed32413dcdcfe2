from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from bfm_deploy.errors import BfmError
from bfm_deploy.images import ImageLimits, load_image, to_bgr_uint8


def _gradient(height: int = 80, width: int = 100) -> np.ndarray:
    """A BGR uint8 test picture with distinct channels."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 255 // width, y * 255 // height, (x + y) % 256], axis=2).astype(np.uint8)


def _write(path: Path, image: np.ndarray, params: list[int] | None = None) -> Path:
    ok, encoded = cv2.imencode(path.suffix, image, params or [])
    assert ok
    path.write_bytes(encoded.tobytes())
    return path


def test_jpeg_and_png_round_trip(tmp_path: Path) -> None:
    image = _gradient()
    png = load_image(_write(tmp_path / "a.png", image))
    assert png.dtype == np.uint8 and png.shape == (80, 100, 3) and png.flags.c_contiguous
    np.testing.assert_array_equal(png, image)
    jpeg = load_image(_write(tmp_path / "a.jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95]))
    assert jpeg.shape == (80, 100, 3)
    assert np.abs(jpeg.astype(int) - image).mean() < 3
    progressive = load_image(_write(tmp_path / "p.jpg", image, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]))
    assert progressive.shape == (80, 100, 3)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "missing.jpg", "image not found"),
        (lambda d: d, "is a directory"),
        (lambda d: _touch(d / "empty.jpg", b""), "empty file"),
        (lambda d: Path("/dev/zero"), "is not a regular file"),  # endless: never read
        (lambda d: _touch(d / "notes.jpg", b"this is a text file\n" * 20), "is not a JPEG file"),
        (lambda d: _touch(d / "page.png", b"<html>404 not found</html>"), "is not a PNG file"),
        (lambda d: _touch(d / "junk.bmp", b"BM" + bytes(100)), "corrupt or truncated BMP header"),
        (lambda d: _touch(d / "picture.hdr", b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 10 +X 10\n"), "not an image format"),
    ],
)
def test_bad_files_raise_one_line_errors(tmp_path: Path, make, message: str) -> None:
    with pytest.raises(BfmError, match=message) as info:
        load_image(make(tmp_path))
    assert "\n" not in str(info.value)


def _touch(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_truncated_jpeg_is_refused(tmp_path: Path) -> None:
    data = _write(tmp_path / "full.jpg", _gradient()).read_bytes()
    for cut in (len(data) - 2, len(data) // 2):  # loses only EOI / half of the scan
        with pytest.raises(BfmError, match="truncated JPEG"):
            load_image(_touch(tmp_path / "cut.jpg", data[:cut]))
    with pytest.raises(BfmError, match="truncated JPEG"):
        load_image(_touch(tmp_path / "header.jpg", data[:40]))


def test_truncated_jpeg_with_eoi_in_a_header_segment_is_refused(tmp_path: Path) -> None:
    # An EXIF thumbnail carries its own FF D9 before the main scan; it must not pass for the image's end.
    data = _write(tmp_path / "full.jpg", _gradient()).read_bytes()
    comment = b"\xff\xfe\x00\x06" + b"\xff\xd9\x00\x00"
    with_comment = data[:2] + comment + data[2:]
    assert load_image(_touch(tmp_path / "ok.jpg", with_comment)).shape == (80, 100, 3)
    with pytest.raises(BfmError, match="truncated JPEG"):
        load_image(_touch(tmp_path / "cut.jpg", with_comment[: len(with_comment) // 2]))


def test_truncated_png_is_refused(tmp_path: Path) -> None:
    data = _write(tmp_path / "full.png", _gradient()).read_bytes()
    with pytest.raises(BfmError, match="truncated"):
        load_image(_touch(tmp_path / "cut.png", data[: len(data) // 2]))
    with pytest.raises(BfmError, match="truncated"):
        load_image(_touch(tmp_path / "tiny.png", data[:20]))


def _no_decoding(*args, **kwargs):
    raise AssertionError("decoded an image that should have been refused from its header")


def test_too_large_png_is_refused_from_its_header(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = bytearray(_write(tmp_path / "small.png", _gradient()).read_bytes())
    data[16:24] = (100_000).to_bytes(4, "big") + (50_000).to_bytes(4, "big")  # IHDR width, height
    monkeypatch.setattr(cv2, "imdecode", _no_decoding)
    with pytest.raises(BfmError, match="100000x50000 image is too large"):
        load_image(_touch(tmp_path / "bomb.png", bytes(data)))


def test_jpeg_size_is_read_from_the_frame_header(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(tmp_path / "a.jpg", _gradient(height=80, width=100))
    monkeypatch.setattr(cv2, "imdecode", _no_decoding)
    with pytest.raises(BfmError, match="100x80 image is too large .*0.005 megapixels"):
        load_image(path, ImageLimits(max_pixels=5000))


def test_every_format_is_also_limited_by_file_size(tmp_path: Path) -> None:
    path = _write(tmp_path / "a.bmp", _gradient())
    np.testing.assert_array_equal(load_image(path), _gradient())
    with pytest.raises(BfmError, match="too large to decode safely"):
        load_image(path, ImageLimits(max_file_bytes=1000))


def test_gray_rgba_and_16_bit_files_are_converted(tmp_path: Path) -> None:
    gray = _gradient()[:, :, 0]
    out = load_image(_write(tmp_path / "gray.png", gray))
    assert out.shape == (80, 100, 3)
    for channel in range(3):
        np.testing.assert_array_equal(out[:, :, channel], gray)
    assert load_image(_write(tmp_path / "gray.jpg", gray)).shape == (80, 100, 3)

    bgra = np.zeros((2, 2, 4), dtype=np.uint8)
    bgra[0, 0] = (10, 20, 30, 255)  # opaque: kept
    bgra[0, 1] = (10, 20, 30, 0)  # transparent: white
    bgra[1, 0] = (0, 0, 0, 128)  # half transparent black on white: mid gray
    out = load_image(_write(tmp_path / "rgba.png", bgra))
    assert out.shape == (2, 2, 3)
    assert out[0, 0].tolist() == [10, 20, 30]
    assert out[0, 1].tolist() == [255, 255, 255]
    assert out[1, 0].tolist() == [127, 127, 127]

    deep = (_gradient().astype(np.uint16) * 257) + 100
    out = load_image(_write(tmp_path / "deep.png", deep))
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, _gradient())
    out = load_image(_write(tmp_path / "deep_gray.png", deep[:, :, 1]))
    np.testing.assert_array_equal(out[:, :, 2], _gradient()[:, :, 1])


def test_arrays_are_accepted_and_converted() -> None:
    bgr = _gradient()
    out = load_image(bgr)
    np.testing.assert_array_equal(out, bgr)
    np.testing.assert_array_equal(load_image(bgr[:, :, 1])[:, :, 0], bgr[:, :, 1])
    np.testing.assert_array_equal(load_image(bgr[:, :, :1])[:, :, 2], bgr[:, :, 0])
    opaque = np.concatenate([bgr, np.full((80, 100, 1), 255, np.uint8)], axis=2)
    np.testing.assert_array_equal(load_image(opaque), bgr)
    np.testing.assert_array_equal(load_image(bgr.astype(np.uint16) * 257), bgr)
    assert load_image(bgr[:, ::-1]).flags.c_contiguous  # views come back contiguous


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros((8, 8, 3), np.float32), "dtype float32"),
        (np.zeros((8, 8, 3), np.int16), "dtype int16"),
        (np.zeros((8, 8, 2), np.uint8), "shape"),
        (np.zeros((1, 8, 8, 3), np.uint8), "shape"),
        (np.zeros(8, np.uint8), "shape"),
        (np.zeros((0, 8, 3), np.uint8), "empty"),
    ],
)
def test_bad_arrays_raise(array: np.ndarray, message: str) -> None:
    with pytest.raises(BfmError, match=message):
        to_bgr_uint8(array)


def test_other_sources_raise() -> None:
    with pytest.raises(BfmError, match="expected an image path or a numpy array"):
        load_image([[1, 2], [3, 4]])  # type: ignore[arg-type]


def test_real_lfw_photo(data_dir: Path) -> None:
    path = next((data_dir / "lfw" / "raw-fold1").glob("*/*.jpg"))
    assert load_image(path).shape == (250, 250, 3)


# ---- decompression bombs: every accepted format is sized from its header before decoding --------------------

BOMB = 20_000  # a side of 20000 pixels: 400 megapixels, 1.2 GB as BGR


def _bombs() -> dict[str, bytes]:
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", BOMB, BOMB, 8, 2, 0, 0, 0)
    png = (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
           + struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND")))
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, BOMB, BOMB, 1) + b"\x01\x11\x00"
    sos = b"\xff\xda" + struct.pack(">HB", 8, 1) + b"\x01\x00\x00\x3f\x00"
    jpeg = b"\xff\xd8" + sof + sos + b"\x00" * 16 + b"\xff\xd9"
    # RLE8 BMP: 1 KB of run-length data that would expand to 20000 x 20000 pixels
    bmp = (b"BM" + struct.pack("<IHHI", 1078 + 1024, 0, 0, 1078)
           + struct.pack("<IiiHHIIiiII", 40, BOMB, BOMB, 1, 8, 1, 1024, 0, 0, 256, 0) + bytes(1024) + bytes(1024))
    gif = b"GIF89a" + struct.pack("<HHBBB", BOMB, BOMB, 0, 0, 0) + b"\x3b"  # 35 bytes or so
    # A GIF whose screen is small but whose frame declares the bomb size
    frame_gif = (b"GIF89a" + struct.pack("<HHBBB", 10, 10, 0, 0, 0)
                 + b"\x2c" + struct.pack("<HHHHB", 0, 0, BOMB, BOMB, 0) + b"\x02\x02\x44\x01\x00\x3b")
    tiff = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 2) + struct.pack("<HHII", 256, 4, 1, BOMB) \
        + struct.pack("<HHII", 257, 4, 1, BOMB) + struct.pack("<I", 0)
    webp = b"RIFF" + struct.pack("<I", 22) + b"WEBPVP8X" + struct.pack("<I", 10) + bytes(4) \
        + (BOMB - 1).to_bytes(3, "little") + (BOMB - 1).to_bytes(3, "little")
    pnm = f"P6\n# a comment\n{BOMB} {BOMB}\n255\n".encode() + bytes(64)
    pam = f"P7\nWIDTH {BOMB}\nHEIGHT {BOMB}\nDEPTH 3\nMAXVAL 255\nTUPLTYPE RGB\nENDHDR\n".encode() + bytes(64)
    return {"a.png": png, "a.jpg": jpeg, "a.bmp": bmp, "a.gif": gif, "frame.gif": frame_gif, "a.tif": tiff,
            "a.webp": webp, "a.ppm": pnm, "a.pam": pam}


def test_a_bomb_of_every_accepted_format_is_refused_fast_and_small(tmp_path: Path) -> None:
    """In a fresh process, so that its peak memory is the bombs' and not the test suite's."""
    import json
    import subprocess
    import sys

    for name, data in _bombs().items():
        (tmp_path / name).write_bytes(data)
    code = f"""
import json, sys, time
from pathlib import Path
from bfm_deploy.errors import BfmError
from bfm_deploy.images import load_image
out = {{}}
for path in sorted(Path({str(tmp_path)!r}).iterdir()):
    start = time.perf_counter()
    try:
        load_image(path)
        out[path.name] = ["decoded", 0.0]
    except BfmError as exc:
        out[path.name] = [str(exc), time.perf_counter() - start]
# VmHWM, not ru_maxrss: Linux keeps ru_maxrss across exec, so it would count the forking test runner.
out["peak_mb"] = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM")) / 1024
print(json.dumps(out))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    report = json.loads(result.stdout)
    assert report.pop("peak_mb") < 300
    assert set(report) == set(_bombs())
    for name, (message, seconds) in report.items():
        assert "20000x20000 image is too large" in message, (name, message)
        assert seconds < 1.0, (name, seconds)


@pytest.mark.parametrize("ext", [".bmp", ".gif", ".tiff", ".webp", ".ppm", ".pam"])
def test_every_accepted_format_decodes_and_is_sized_from_its_header(tmp_path: Path, ext: str,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    image = _gradient(height=40, width=30)
    ok, data = cv2.imencode(ext, image)
    assert ok
    path = _touch(tmp_path / f"a{ext}", data.tobytes())
    decoded = load_image(path)
    assert decoded.shape == (40, 30, 3)
    if ext != ".gif":  # GIF quantises colours to a palette
        np.testing.assert_array_equal(decoded, image)
    monkeypatch.setattr(cv2, "imdecode", _no_decoding)
    with pytest.raises(BfmError, match="30x40 image is too large"):
        load_image(path, ImageLimits(max_pixels=1000))

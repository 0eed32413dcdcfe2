"""Safe image decoding: every image enters the runtime as a BGR uint8 HxWx3 array.

Files are checked before they are decoded: the dimensions are read from the PNG IHDR chunk or the JPEG frame
header (SOFn) and an image above ``ImageLimits.max_pixels`` is refused without allocating it; other formats
(BMP, TIFF, WebP, ...) are limited by file size instead. A truncated JPEG (libjpeg pads it with gray and only
warns) or PNG is refused rather than decoded into a half-gray picture.

Conversions, not refusals: gray -> BGR; 16-bit -> 8-bit (x / 257, rounded); an alpha channel is composited on
a white background (transparent areas become white, as image viewers show them, instead of whatever colour
the invisible pixels happen to hold). JPEGs are decoded with their EXIF orientation applied.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .errors import BfmError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SIGNATURE = b"\xff\xd8\xff"
JPEG_EOI = b"\xff\xd9"
# SOFn markers carry the frame size; C4 (DHT), C8 (reserved) and CC (DAC) share the range but are not frames.
JPEG_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Markers that stand alone, without a length field: TEM, RST0-7, SOI, EOI.
JPEG_STANDALONE_MARKERS = frozenset([0x01, *range(0xD0, 0xDA)])
JPEG_SOS = 0xDA


@dataclass(frozen=True)
class ImageLimits:
    """What ``load_image`` agrees to decode."""

    max_pixels: int = 40_000_000  # width * height from the header, for PNG and JPEG
    max_file_bytes: int = 64 * 1024 * 1024  # for formats whose header is not parsed (and an outer bound for all)


@dataclass(frozen=True)
class _Header:
    kind: str  # "png", "jpeg" or "other"
    width: int = 0
    height: int = 0


def load_image(source: str | os.PathLike[str] | np.ndarray, limits: ImageLimits | None = None,
               max_side: int | None = None) -> np.ndarray:
    """Return ``source`` (a path or an array) as a contiguous BGR uint8 HxWx3 array, or raise ``BfmError``.

    ``max_side``: shrink the image so that its longer side is at most this (face detection needs no more:
    a 6000x4000 photo then costs about what a small one does). A large JPEG is decoded at 1/2, 1/4 or 1/8
    scale by libjpeg itself, which skips most of the decoding work.
    """
    limits = limits or ImageLimits()
    if isinstance(source, np.ndarray):
        return shrink_to(to_bgr_uint8(source, "array"), max_side)
    if not isinstance(source, (str, os.PathLike)):
        raise BfmError(f"expected an image path or a numpy array, got {type(source).__name__}")
    path = Path(source)
    data = _read_file(path, limits)
    header = _parse_header(data, path)
    if header.kind != "other" and header.width * header.height > limits.max_pixels:
        raise BfmError(
            f"{path}: {header.width}x{header.height} image is too large to decode safely "
            f"(limit {limits.max_pixels / 1e6:g} megapixels)"
        )
    buffer = np.frombuffer(data, dtype=np.uint8)
    # JPEG is always 8-bit: IMREAD_COLOR applies its EXIF orientation (IMREAD_UNCHANGED would ignore it).
    # Elsewhere IMREAD_UNCHANGED keeps 16-bit depth and alpha so that they are converted, not mangled.
    flags = cv2.IMREAD_COLOR if header.kind == "jpeg" else cv2.IMREAD_UNCHANGED
    if header.kind == "jpeg" and max_side is not None:
        flags = _reduced_jpeg_flag(max(header.width, header.height), max_side)
    try:
        image = cv2.imdecode(buffer, flags)
    except cv2.error as exc:
        raise BfmError(f"{path}: cannot decode image ({str(exc).strip().splitlines()[-1]})") from None
    if image is None:
        raise BfmError(f"{path}: cannot decode image (corrupt or unsupported format)")
    return shrink_to(to_bgr_uint8(image, str(path)), max_side)


# libjpeg's DCT scaling, largest factor first; each still applies the EXIF orientation like IMREAD_COLOR.
_JPEG_REDUCTIONS = ((8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4), (2, cv2.IMREAD_REDUCED_COLOR_2))


def _reduced_jpeg_flag(longer_side: int, max_side: int) -> int:
    for factor, flag in _JPEG_REDUCTIONS:
        if longer_side // factor >= max_side:
            return flag
    return cv2.IMREAD_COLOR


def shrink_to(image: np.ndarray, max_side: int | None) -> np.ndarray:
    """``image`` scaled down (pixel area averaging) so that its longer side is at most ``max_side``."""
    height, width = image.shape[:2]
    if max_side is None or max(height, width) <= max_side:
        return image
    scale = max_side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.ascontiguousarray(cv2.resize(image, size, interpolation=cv2.INTER_AREA))


def to_bgr_uint8(image: np.ndarray, name: str = "array") -> np.ndarray:
    """Convert an HxW gray, HxWx3 BGR or HxWx4 BGRA array of uint8 or uint16 to contiguous BGR uint8."""
    if image.dtype not in (np.uint8, np.uint16):
        raise BfmError(f"{name}: image dtype {image.dtype} is not supported (expected uint8 or uint16)")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (3, 4))):
        raise BfmError(f"{name}: image shape {image.shape} is not HxW, HxWx3 or HxWx4")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise BfmError(f"{name}: image is empty ({image.shape[0]}x{image.shape[1]})")
    full_scale = 255.0 if image.dtype == np.uint8 else 65535.0
    if image.ndim == 3 and image.shape[2] == 4:
        colour = image[:, :, :3].astype(np.float32)
        alpha = image[:, :, 3:].astype(np.float32) / full_scale
        composited = colour * alpha + full_scale * (1.0 - alpha)  # on white
        return np.ascontiguousarray(np.clip(np.rint(composited * (255.0 / full_scale)), 0, 255).astype(np.uint8))
    if image.dtype == np.uint16:
        image = ((image.astype(np.uint32) + 128) // 257).astype(np.uint8)
    if image.ndim == 2:
        image = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_GRAY2BGR)
    return np.ascontiguousarray(image)


def _read_file(path: Path, limits: ImageLimits) -> bytes:
    if not path.exists():
        raise BfmError(f"image not found: {path}")
    if path.is_dir():
        raise BfmError(f"{path} is a directory, not an image")
    try:
        size = path.stat().st_size
        if size == 0:
            raise BfmError(f"{path} is an empty file (0 bytes)")
        if size > limits.max_file_bytes:
            raise BfmError(
                f"{path}: file of {size / 2**20:.1f} MiB is too large to decode safely "
                f"(limit {limits.max_file_bytes / 2**20:g} MiB)"
            )
        return path.read_bytes()
    except OSError as exc:
        raise BfmError(f"cannot read {path}: {exc.strerror or exc}") from None


def _parse_header(data: bytes, path: Path) -> _Header:
    if data.startswith(PNG_SIGNATURE):
        return _png_header(data, path)
    if data.startswith(JPEG_SIGNATURE):
        return _jpeg_header(data, path)
    if path.suffix.lower() in (".jpg", ".jpeg", ".png"):
        # A wrong extension on a real image of another format would still decode; refusing here gives a clearer
        # message for the common case (an HTML error page or a text file saved under an image name).
        kind = "PNG" if path.suffix.lower() == ".png" else "JPEG"
        raise BfmError(f"{path} is not a {kind} file (its content does not start with a {kind} signature)")
    return _Header("other")


def _png_header(data: bytes, path: Path) -> _Header:
    # Signature (8), then the IHDR chunk: length (4) = 13, b"IHDR", width (4), height (4), ...
    if len(data) < 33 or data[12:16] != b"IHDR":
        raise BfmError(f"{path}: truncated or corrupt PNG (no IHDR header)")
    width, height = struct.unpack(">II", data[16:24])
    if width == 0 or height == 0:
        raise BfmError(f"{path}: corrupt PNG header ({width}x{height})")
    # The last chunk is IEND (length 0, type, CRC: 12 bytes); anything cut short lacks it.
    if data.rfind(b"IEND", max(0, len(data) - 64)) < 0:
        raise BfmError(f"{path}: truncated PNG (no IEND chunk at the end)")
    return _Header("png", width, height)


def _jpeg_header(data: bytes, path: Path) -> _Header:
    """Walk the marker segments up to the first scan; the frame header (SOFn) gives the size."""
    pos = 2
    size: tuple[int, int] | None = None
    while True:
        while pos < len(data) and data[pos] == 0xFF and pos + 1 < len(data) and data[pos + 1] == 0xFF:
            pos += 1  # fill bytes
        if pos + 4 > len(data):
            raise BfmError(f"{path}: truncated JPEG (ends inside its header)")
        if data[pos] != 0xFF:
            raise BfmError(f"{path}: corrupt JPEG header (no marker at byte {pos})")
        marker = data[pos + 1]
        if marker in JPEG_STANDALONE_MARKERS:
            pos += 2
            continue
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if length < 2 or pos + 2 + length > len(data):
            raise BfmError(f"{path}: truncated JPEG (segment runs past the end of the file)")
        if marker in JPEG_SOF_MARKERS:
            if length < 8:
                raise BfmError(f"{path}: corrupt JPEG frame header")
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            size = (width, height)
        if marker == JPEG_SOS:
            break
        pos += 2 + length
    if size is None:
        raise BfmError(f"{path}: corrupt JPEG (no frame header before the image data)")
    width, height = size
    if width == 0 or height == 0:
        # Height 0 defers the size to a DNL marker after the scan: too rare to support, and unbounded.
        raise BfmError(f"{path}: JPEG without its size in the frame header ({width}x{height}) is not supported")
    # The entropy-coded data cannot contain FF D9 (FF is byte-stuffed), so the first EOI after the first scan
    # ends the image; a file cut short has none. (An EXIF thumbnail's EOI lies before the scan, in APP1.)
    if data.find(JPEG_EOI, pos) < 0:
        raise BfmError(f"{path}: truncated JPEG (no end-of-image marker)")
    return _Header("jpeg", width, height)

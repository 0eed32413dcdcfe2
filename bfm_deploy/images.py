"""Safe image decoding: every image enters the runtime as a BGR uint8 HxWx3 array.

Files are checked before they are decoded: the dimensions are read from the header of every accepted format
(PNG IHDR, JPEG SOFn, BMP, GIF screen and frames, TIFF first directory, WebP VP8/VP8L/VP8X, PNM/PAM) and an
image above ``ImageLimits.max_pixels`` is refused without allocating it; any other format is refused. A
truncated JPEG (libjpeg pads it with gray and only
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

# What every folder-walking tool (bfm-mask, bfm-gallery enroll --folder, bfm-real-masks) picks up: the types
# load_image decodes, by their usual suffixes.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".dib", ".gif", ".tif", ".tiff", ".webp", ".pbm", ".pgm",
                  ".ppm", ".pnm", ".pam")


@dataclass(frozen=True)
class ImageLimits:
    """What ``load_image`` agrees to decode."""

    max_pixels: int = 40_000_000  # width * height from the header, for every accepted format
    max_file_bytes: int = 64 * 1024 * 1024  # an outer bound on what is read at all


@dataclass(frozen=True)
class _Header:
    kind: str  # "png", "jpeg", or the name of another accepted format
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
    return decode_image(_read_file(path, limits), path, limits, max_side)


def decode_image(data: bytes, name: str | os.PathLike[str], limits: ImageLimits | None = None,
                 max_side: int | None = None) -> np.ndarray:
    """Encoded bytes (named ``name`` in errors) -> BGR uint8 HxWx3, by the same gate and decoder as files:
    the one decoding path of the runtime and of training (record files hold encoded bytes)."""
    limits = limits or ImageLimits()
    path = Path(name)
    if not data:
        raise BfmError(f"{path} is empty (0 bytes)")
    if len(data) > limits.max_file_bytes:
        raise BfmError(f"{path}: {len(data) / 2**20:.1f} MiB is too large to decode safely "
                       f"(limit {limits.max_file_bytes / 2**20:g} MiB)")
    header = _parse_header(data, path)
    if header.width * header.height > limits.max_pixels:
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


def encoded_size(data: bytes, name: str | os.PathLike[str]) -> tuple[int, int]:
    """(width, height) that encoded image bytes declare in their header, as stored (before any EXIF rotation)."""
    header = _parse_header(data, Path(name))
    return header.width, header.height


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
    if not path.is_file():  # a device or a pipe: its size says nothing (/dev/zero never ends)
        raise BfmError(f"{path} is not a regular file, not an image")
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


ACCEPTED_FORMATS = "JPEG, PNG, BMP, GIF, TIFF, WebP, PNM (PBM/PGM/PPM/PAM)"


def _parse_header(data: bytes, path: Path) -> _Header:
    """The format and pixel size from the file's header, before any pixel is decoded: the one gate every
    format passes, so that a few bytes declaring 20000x20000 pixels are refused, not allocated."""
    if data.startswith(PNG_SIGNATURE):
        return _png_header(data, path)
    if data.startswith(JPEG_SIGNATURE):
        return _jpeg_header(data, path)
    if path.suffix.lower() in (".jpg", ".jpeg", ".png"):
        # A wrong extension on a real image of another format would still decode; refusing here gives a clearer
        # message for the common case (an HTML error page or a text file saved under an image name).
        kind = "PNG" if path.suffix.lower() == ".png" else "JPEG"
        raise BfmError(f"{path} is not a {kind} file (its content does not start with a {kind} signature)")
    for signatures, parse in _OTHER_FORMATS:
        if any(data.startswith(signature) for signature in signatures):
            kind, width, height = parse(data)
            if width <= 0 or height <= 0:
                raise BfmError(f"{path}: corrupt or truncated {kind} header (size {width}x{height})")
            return _Header(kind, width, height)
    raise BfmError(f"{path}: not an image format bfm decodes ({ACCEPTED_FORMATS})")


def _u16le(data: bytes, at: int) -> int:
    return struct.unpack_from("<H", data, at)[0] if len(data) >= at + 2 else 0


def _bmp(data: bytes) -> tuple[str, int, int]:
    # File header (14 bytes), then the DIB header: 12-byte OS/2 core headers hold 16-bit sizes, the others
    # 32-bit ones (height negative for top-down bitmaps).
    if len(data) < 26:
        return "BMP", 0, 0
    if struct.unpack_from("<I", data, 14)[0] == 12:
        return "BMP", _u16le(data, 18), _u16le(data, 20)
    width, height = struct.unpack_from("<ii", data, 18)
    return "BMP", width, abs(height)


def _gif(data: bytes) -> tuple[str, int, int]:
    """The logical screen, grown to cover every image descriptor (a frame may declare more than the screen)."""
    width, height = _u16le(data, 6), _u16le(data, 8)
    pos = 13
    if len(data) > 10 and data[10] & 0x80:
        pos += 3 << ((data[10] & 0x07) + 1)  # global colour table
    while pos < len(data):
        block = data[pos]
        if block == 0x2C and pos + 10 <= len(data):  # image descriptor
            left, top, w, h = struct.unpack_from("<HHHH", data, pos + 1)
            width, height = max(width, left + w), max(height, top + h)
            flags = data[pos + 9]
            pos += 10 + ((3 << ((flags & 0x07) + 1)) if flags & 0x80 else 0) + 1  # + local table + LZW size
            pos = _skip_sub_blocks(data, pos)
        elif block == 0x21 and pos + 2 <= len(data):  # extension
            pos = _skip_sub_blocks(data, pos + 2)
        else:
            break  # trailer (0x3B) or garbage: OpenCV stops there too
    return "GIF", width, height


def _skip_sub_blocks(data: bytes, pos: int) -> int:
    while pos < len(data) and data[pos]:
        pos += data[pos] + 1
    return pos + 1


def _webp(data: bytes) -> tuple[str, int, int]:
    if len(data) < 30 or data[8:12] != b"WEBP":
        return "WebP", 0, 0
    chunk = data[12:16]
    if chunk == b"VP8 ":  # lossy: frame tag (3), start code (3), then 14-bit width and height
        return "WebP", _u16le(data, 26) & 0x3FFF, _u16le(data, 28) & 0x3FFF
    if chunk == b"VP8L":  # lossless: signature byte, then 14 bits of width - 1 and 14 of height - 1
        bits = struct.unpack_from("<I", data, 21)[0]
        return "WebP", (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":  # extended: 24-bit canvas width - 1 and height - 1
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        return "WebP", width, height
    return "WebP", 0, 0


def _tiff(data: bytes) -> tuple[str, int, int]:
    """ImageWidth (256) and ImageLength (257) of the first image file directory (the page OpenCV decodes)."""
    endian = "<" if data.startswith(b"II") else ">"
    if len(data) < 8:
        return "TIFF", 0, 0
    offset = struct.unpack_from(endian + "I", data, 4)[0]
    if offset + 2 > len(data):
        return "TIFF", 0, 0
    (count,) = struct.unpack_from(endian + "H", data, offset)
    size = {256: 0, 257: 0}
    for i in range(count):
        at = offset + 2 + 12 * i
        if at + 12 > len(data):
            break
        tag, kind = struct.unpack_from(endian + "HH", data, at)
        if tag in size:
            value = struct.unpack_from(endian + ("H" if kind == 3 else "I"), data, at + 8)[0]
            size[tag] = value
    return "TIFF", size[256], size[257]


def _pnm(data: bytes) -> tuple[str, int, int]:
    """PBM/PGM/PPM (P1-P6): width and height are the first two numbers after the magic, comments skipped;
    PAM (P7): the WIDTH and HEIGHT lines."""
    head = data[:4096].decode("latin-1")
    if head.startswith("P7"):
        fields = dict(line.split(None, 1) for line in head.splitlines()[1:] if " " in line.strip())
        try:
            return "PAM", int(fields.get("WIDTH", "0")), int(fields.get("HEIGHT", "0"))
        except ValueError:
            return "PAM", 0, 0
    tokens = []
    for line in head[2:].splitlines():
        tokens += line.split("#", 1)[0].split()
        if len(tokens) >= 2:
            break
    try:
        return "PNM", int(tokens[0]), int(tokens[1])
    except (IndexError, ValueError):
        return "PNM", 0, 0


_OTHER_FORMATS = (
    ((b"BM",), _bmp),
    ((b"GIF87a", b"GIF89a"), _gif),
    ((b"RIFF",), _webp),
    ((b"II*\x00", b"MM\x00*"), _tiff),
    (tuple(f"P{i}".encode() for i in range(1, 8)), _pnm),
)


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

"""Colours, fabric patterns and noise for the masks we draw ourselves.

Every random choice draws from the per-image generator passed in, in a fixed order, so a seed fixes the
pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from bfm_deploy.errors import BfmError

BGR = tuple[int, int, int]

# Named colours per mask type, BGR. Surgical masks come in the few hospital colours; respirators are mostly
# white; cloth masks in anything.
PALETTES: dict[str, dict[str, BGR]] = {
    "surgical": {
        "blue": (222, 196, 142),
        "lightblue": (235, 214, 170),
        "green": (180, 200, 150),
        "white": (236, 238, 238),
        "pink": (205, 190, 240),
        "black": (46, 44, 44),
    },
    "n95": {
        "white": (232, 236, 238),
        "offwhite": (212, 226, 232),
        "grey": (190, 192, 192),
        "blue": (215, 170, 120),
    },
    "kn95": {
        "white": (238, 240, 240),
        "black": (40, 40, 42),
        "grey": (165, 165, 168),
        "pink": (200, 185, 238),
        "lightblue": (232, 205, 160),
    },
    "cloth": {
        "black": (36, 36, 38),
        "navy": (92, 50, 30),
        "grey": (120, 118, 115),
        "red": (48, 40, 170),
        "maroon": (50, 30, 100),
        "beige": (150, 190, 215),
        "denim": (140, 95, 60),
        "olive": (60, 110, 100),
        "white": (225, 228, 230),
        "yellow": (60, 190, 230),
    },
}
PATTERNS = ("solid", "stripes", "dots", "checks")
STRAP_COLOURS: dict[str, BGR] = {"white": (235, 238, 238), "yellow": (60, 200, 235), "blue": (200, 140, 70)}


@dataclass(frozen=True)
class Style:
    """How a drawn mask looks: ``name`` is what the report records (e.g. ``surgical_blue``, ``cloth_red_dots``)."""

    name: str
    colour: BGR
    pattern: str = "solid"
    second: BGR = (0, 0, 0)
    period: float = 0.1  # pattern period as a fraction of the face width
    angle: float = 0.0  # pattern angle in radians, relative to the face
    strap: BGR = (235, 238, 238)
    grain: float = 0.03  # amplitude of the noise texture (fraction of brightness)
    valve: bool = False
    fabric: np.ndarray | None = None  # a seamless printed-fabric tile (BGR float32) instead of colour/pattern


class FabricLibrary:
    """Printed fabrics (MaskTheFace's plaid, floral, fruit, polka and heart textures) as seamless tiles.

    A photo of fabric does not tile: its left and right edges differ. Mirroring it into a 2x2 block makes
    every edge meet its own reflection, so the tile wraps without a seam in both directions.
    """

    SUFFIXES = (".png", ".jpg", ".jpeg")

    def __init__(self, folder: Path, max_side: int = 256) -> None:
        files = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in self.SUFFIXES)
        if not files:
            raise BfmError(f"no fabric images (.png/.jpg) under {folder}")
        self.names: list[str] = []
        self.tiles: list[np.ndarray] = []
        for path in files:
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is None:
                raise BfmError(f"{path}: cannot decode fabric image")
            scale = max_side / max(image.shape[:2])
            if scale < 1.0:
                image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            self.names.append(path.relative_to(folder).with_suffix("").as_posix().replace("/", "_"))
            self.tiles.append(seamless_tile(image))

    def choose(self, rng: np.random.Generator) -> tuple[str, np.ndarray]:
        index = int(rng.integers(len(self.tiles)))
        return self.names[index], self.tiles[index]


def random_print(rng: np.random.Generator, size: int = 128) -> np.ndarray:
    """A random printed fabric (BGR float32, seamless): 2 to 4 colours laid out as blobs of smooth noise
    (camouflage, floral, batik-like), with scattered dots in one of them half the time. Blurring with a
    Gaussian in the frequency domain (a circular convolution) makes the noise, and so the tile, periodic."""
    count = int(rng.integers(2, 5))
    hsv = np.stack([rng.uniform(0, 180, count), rng.uniform(40, 255, count), rng.uniform(30, 255, count)], axis=1)
    colours = cv2.cvtColor(hsv.astype(np.uint8)[None], cv2.COLOR_HSV2BGR)[0].astype(np.float32)
    noise = rng.standard_normal((size, size))
    sigma = float(rng.uniform(2.0, 9.0))
    freq = np.fft.fftfreq(size)
    gaussian = np.exp(-2 * (np.pi * sigma) ** 2 * (freq[:, None] ** 2 + freq[None, :] ** 2))
    smooth = np.fft.ifft2(np.fft.fft2(noise) * gaussian).real
    levels = np.quantile(smooth, np.linspace(0, 1, count + 1)[1:-1])
    index = np.digitize(smooth, levels)
    tile = colours[index]
    if rng.random() < 0.5:
        ys, xs = rng.integers(0, size, (2, int(rng.integers(10, 60))))
        radius = int(rng.integers(2, 6))
        dots = np.zeros((size, size), np.uint8)
        for dy in (-size, 0, size):  # drawn three times over so dots at an edge wrap around
            for dx in (-size, 0, size):
                for x, y in zip(xs, ys):
                    cv2.circle(dots, (int(x) + dx, int(y) + dy), radius, 255, -1, cv2.LINE_AA)
        tile = tile + (dots[..., None].astype(np.float32) / 255.0) * (colours[-1] * 0.3 + 170.0 - tile)
    return np.ascontiguousarray(tile.astype(np.float32))


def seamless_tile(image: np.ndarray) -> np.ndarray:
    """``image`` mirrored into a 2x2 block (float32): wraps around continuously at every edge."""
    top = np.hstack([image, image[:, ::-1]])
    return np.ascontiguousarray(np.vstack([top, top[::-1]]).astype(np.float32))


def sample_style(mask_type: str, rng: np.random.Generator, fabrics: FabricLibrary | None = None,
                 fabric_share: float = 0.0, print_share: float = 0.0) -> Style:
    """A random look for ``mask_type``; with ``fabrics``, ``fabric_share`` of cloth masks are that printed
    fabric, and ``print_share`` of cloth masks get a randomly generated print (``random_print``). These draws
    come after all others, so a run without them keeps the looks of earlier versions."""
    style = _sample_plain_style(mask_type, rng)
    if mask_type != "cloth":
        return style
    if fabrics is not None and rng.random() < fabric_share:
        name, tile = fabrics.choose(rng)
        return replace(style, name=f"cloth_fabric_{name}", fabric=tile, period=float(rng.uniform(0.5, 1.2)),
                       angle=float(rng.uniform(-0.3, 0.3)))
    if print_share > 0 and rng.random() < print_share:
        return replace(style, name="cloth_print", fabric=random_print(rng), period=float(rng.uniform(0.4, 1.0)),
                       angle=float(rng.uniform(-0.3, 0.3)))
    return style


def _sample_plain_style(mask_type: str, rng: np.random.Generator) -> Style:
    palette = PALETTES[mask_type]
    colour_name = str(rng.choice(sorted(palette)))
    colour = palette[colour_name]
    if mask_type == "cloth":
        pattern = str(rng.choice(PATTERNS))
        others = [c for c in sorted(PALETTES["cloth"]) if c != colour_name]
        second = PALETTES["cloth"][str(rng.choice(others))]
        period = float(rng.uniform(0.06, 0.16))
        angle = float(rng.choice([0.0, np.pi / 2, np.pi / 4, -np.pi / 4]))
        name = f"cloth_{colour_name}" + ("" if pattern == "solid" else f"_{pattern}")
        # Ear loops of cloth masks are usually the mask's own fabric.
        return Style(name, colour, pattern, second, period, angle, strap=_shade(colour, 0.9), grain=0.04)
    if mask_type == "n95":
        strap_name = str(rng.choice(sorted(STRAP_COLOURS)))
        return Style(f"n95_{colour_name}", colour, strap=STRAP_COLOURS[strap_name], grain=0.02,
                     valve=bool(rng.random() < 0.3))
    strap = _shade(colour, 0.95) if colour_name in ("black", "grey") else STRAP_COLOURS["white"]
    return Style(f"{mask_type}_{colour_name}", colour, strap=strap, grain=0.015)


def _shade(colour: BGR, factor: float) -> BGR:
    return (int(colour[0] * factor), int(colour[1] * factor), int(colour[2] * factor))


def fill_colour(style: Style, u: np.ndarray, v: np.ndarray, face_width: float) -> np.ndarray:
    """HxWx3 float32 base colour at face-frame coordinates ``u``, ``v`` (pixels, HxW each)."""
    if style.fabric is not None:
        return _fabric(style, u, v, face_width)
    base = np.asarray(style.colour, dtype=np.float32)
    out = np.empty(u.shape + (3,), dtype=np.float32)
    out[:] = base
    if style.pattern == "solid":
        return out
    c, s = np.cos(style.angle), np.sin(style.angle)
    period = max(style.period * face_width, 2.0)
    a = (u * c + v * s) / period
    b = (-u * s + v * c) / period
    if style.pattern == "stripes":
        weight = _soft_step(np.abs(a - np.floor(a) - 0.5) - 0.25)
    elif style.pattern == "dots":
        da, db = a - np.round(a), b - np.round(b)
        weight = _soft_step(0.28 - np.sqrt(da * da + db * db), 0.05)
    else:  # checks: two crossing half-transparent stripe sets, like a plaid
        sa = _soft_step(np.abs(a - np.floor(a) - 0.5) - 0.3)
        sb = _soft_step(np.abs(b - np.floor(b) - 0.5) - 0.3)
        weight = 0.5 * (sa + sb)
    second = np.asarray(style.second, dtype=np.float32)
    return out + weight[..., None].astype(np.float32) * (second - base)


def _fabric(style: Style, u: np.ndarray, v: np.ndarray, face_width: float) -> np.ndarray:
    """The fabric tile laid on the face frame: ``style.period`` face widths per tile, turned by ``style.angle``,
    wrapping around (the tile is seamless)."""
    assert style.fabric is not None
    tile = style.fabric
    c, s = np.cos(style.angle), np.sin(style.angle)
    pixels_per_tile = max(style.period * face_width, 4.0)
    scale = tile.shape[1] / pixels_per_tile
    map_x = ((u * c + v * s) * scale).astype(np.float32)
    map_y = ((-u * s + v * c) * scale).astype(np.float32)
    map_x %= np.float32(tile.shape[1])
    map_y %= np.float32(tile.shape[0])
    return np.asarray(cv2.remap(tile, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP), dtype=np.float32)


def _soft_step(x: np.ndarray, width: float = 0.04) -> np.ndarray:
    """0 below -width, 1 above +width, linear between: anti-aliased pattern edges."""
    return np.clip(0.5 + x / (2 * width), 0.0, 1.0)


def grain(shape: tuple[int, int], amplitude: float, rng: np.random.Generator, blur: float = 0.0) -> np.ndarray:
    """Multiplicative noise texture around 1.0 (non-woven or fabric grain)."""
    noise = rng.standard_normal(shape).astype(np.float32)
    if blur > 0:
        blurred = np.asarray(cv2.GaussianBlur(noise, (0, 0), blur), dtype=np.float32)
        noise = blurred / np.float32(max(float(blurred.std()), 1e-6))
    return 1.0 + amplitude * noise

"""Outlines and surface details of the masks we draw: polygons anchored to the jaw, chin and nose bridge.

Each mask is a top edge from one cheek over the nose bridge to the other cheek, and a bottom edge that follows
the jaw contour pushed outwards (more at the chin than at the cheeks, since a mask hangs under the chin).
The top edge is pushed under the eyes wherever it would cover them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .geometry import FaceGeometry, resample, smooth_curve

DRAWN_TYPES = ("surgical", "n95", "kn95", "cloth")


@dataclass(frozen=True)
class Line:
    points: np.ndarray
    weight: float  # how strongly it darkens (dark lines) or brightens (light lines) the surface
    width: float  # pixels


@dataclass(frozen=True)
class Valve:
    centre: np.ndarray
    radius: float


@dataclass
class MaskShape:
    outline: np.ndarray  # closed polygon, Nx2 image pixels
    origin: np.ndarray  # the top of the mask on the nose bridge: the shading frame's origin
    chin: np.ndarray  # the bottom of the mask under the chin
    dark: list[Line] = field(default_factory=list)
    light: list[Line] = field(default_factory=list)
    straps: list[np.ndarray] = field(default_factory=list)
    strap_width: float = 1.0
    fold: np.ndarray | None = None  # KN95: the centre fold (two points) whose halves are shaded apart
    valve: Valve | None = None


@dataclass(frozen=True)
class _Params:
    top_t: float  # nose bridge height of the top edge (0 between the eyes, 1 at the nose tip)
    corner_drop: float  # how far below the bridge point the top corners sit, in face heights
    side_k: float  # jaw expansion at the cheeks (fraction of the distance from the nose tip)
    chin_k: float  # jaw expansion at the chin
    sag: float  # top edge sag between the bridge and the corners, in face heights (negative: arches up)


_PARAMS = {
    "surgical": _Params(top_t=0.40, corner_drop=0.05, side_k=0.04, chin_k=0.08, sag=0.02),
    "n95": _Params(top_t=0.30, corner_drop=0.16, side_k=-0.05, chin_k=0.11, sag=-0.03),
    "kn95": _Params(top_t=0.34, corner_drop=0.08, side_k=0.01, chin_k=0.10, sag=0.0),
    "cloth": _Params(top_t=0.42, corner_drop=0.02, side_k=0.06, chin_k=0.12, sag=0.01),
}


# A mask worn low rests under the nose: its top edge between the nose tip (1.0) and a little below it.
LOW_TOP_T = (1.0, 1.18)


def build_shape(mask_type: str, geom: FaceGeometry, rng: np.random.Generator, straps: bool, valve: bool,
                low: bool = False) -> MaskShape:
    base = _PARAMS[mask_type]
    # Small random fit differences: how high on the nose and how low under the chin each mask is worn.
    p = _Params(
        top_t=base.top_t + float(rng.uniform(-0.04, 0.04)),
        corner_drop=base.corner_drop + float(rng.uniform(-0.02, 0.02)),
        side_k=base.side_k + float(rng.uniform(-0.015, 0.015)),
        chin_k=base.chin_k + float(rng.uniform(-0.02, 0.02)),
        sag=base.sag,
    )
    if low:  # drawn after the fit draws, so that masks worn normally keep their looks for a seed
        p = _Params(top_t=float(rng.uniform(*LOW_TOP_T)), corner_drop=p.corner_drop + 0.04, side_k=p.side_k,
                    chin_k=p.chin_k, sag=p.sag)
    top, bottom = _edges(mask_type, geom, p)
    outline = np.vstack([top, bottom[::-1]])
    origin = geom.bridge(p.top_t)
    chin = geom.expand(geom.points[8], p.chin_k)
    shape = MaskShape(outline=outline, origin=origin, chin=chin, strap_width=max(1.0, 0.018 * geom.face_width))
    _details(mask_type, geom, shape, top, bottom, valve, rng)
    if straps:
        shape.straps.extend(_straps(mask_type, geom, top, bottom))
    return shape


def _edges(mask_type: str, geom: FaceGeometry, p: _Params) -> tuple[np.ndarray, np.ndarray]:
    """Top edge (left to right) and bottom edge (left to right, down the jaw and under the chin)."""
    bridge = geom.bridge(p.top_t)
    corner_level = bridge + p.corner_drop * geom.face_height * geom.dn
    i_left = geom.jaw_index_at_level(corner_level, "left")
    i_right = geom.jaw_index_at_level(corner_level, "right")
    # Never start the mask at the temple: a mask's corner sits at or below the ear's lower half.
    i_left, i_right = max(i_left, 0.8), min(i_right, 15.2)

    def jaw_point(index: float | np.ndarray) -> np.ndarray:
        # Expansion grows from the cheeks to the chin.
        toward_chin = 1.0 - np.abs(np.asarray(index, dtype=np.float64) - 8.0) / 8.0
        amount = p.side_k + (p.chin_k - p.side_k) * toward_chin**2
        return geom.expand(geom.jaw(index), np.asarray(amount)[..., None])

    left, right = jaw_point(i_left), jaw_point(i_right)
    sag = p.sag * geom.face_height * geom.dn
    top_control = np.array(
        [left, 0.5 * (left + bridge) + sag, bridge, 0.5 * (right + bridge) + sag, right]
    )
    top = geom.clamp_below_eyes(smooth_curve(top_control))
    if mask_type == "kn95":
        # A flat-fold respirator: straight panels meeting in a point under the chin.
        bottom = np.vstack(
            [
                jaw_point(np.linspace(i_left, 4.0, 6)),
                geom.expand(geom.points[8], p.chin_k)[None],
                jaw_point(np.linspace(12.0, i_right, 6)),
            ]
        )
    else:
        bottom = smooth_curve(jaw_point(np.linspace(i_left, i_right, 25)), samples=2)
    return top, bottom


def _details(
    mask_type: str,
    geom: FaceGeometry,
    shape: MaskShape,
    top: np.ndarray,
    bottom: np.ndarray,
    valve: bool,
    rng: np.random.Generator,
) -> None:
    w = geom.face_width
    step = 0.012 * geom.face_height * geom.dn  # a highlight sits just under its crease
    top_r, bottom_r = resample(top, 32), resample(bottom, 32)
    # Every mask's edge has some thickness: a faint dark line inside the outline.
    shape.dark.append(Line(np.vstack([shape.outline, shape.outline[:1]]), 0.18, 1.0))
    if mask_type == "surgical":
        for f in (0.3, 0.5, 0.7):
            f += float(rng.uniform(-0.03, 0.03))
            crease = top_r * (1 - f) + bottom_r * f
            shape.dark.append(Line(crease, 0.28, max(1.0, 0.012 * w)))
            shape.light.append(Line(crease + step, 0.14, max(1.0, 0.015 * w)))
        # The nose wire under the top hem.
        wire = resample(top, 32)[10:22] + 0.03 * geom.face_height * geom.dn
        shape.light.append(Line(wire, 0.10, max(1.0, 0.02 * w)))
    elif mask_type == "n95":
        shape.dark.append(Line(np.vstack([shape.outline, shape.outline[:1]]), 0.16, max(1.5, 0.05 * w)))
        seam = top_r * 0.55 + bottom_r * 0.45
        shape.dark.append(Line(seam, 0.10, max(1.0, 0.01 * w)))
        shape.light.append(Line(seam + step, 0.08, max(1.0, 0.012 * w)))
        if valve:
            side = 1.0 if rng.random() < 0.5 else -1.0
            centre = geom.points[30] + side * 0.22 * w * geom.ex + 0.35 * geom.face_height * geom.dn
            shape.valve = Valve(centre, 0.1 * w)
    elif mask_type == "kn95":
        seam = smooth_curve(
            np.array([shape.origin, geom.points[30], 0.5 * (geom.points[57] + geom.points[8]), shape.chin])
        )
        shape.dark.append(Line(seam, 0.30, max(1.0, 0.01 * w)))
        shape.light.append(Line(seam + 0.01 * w * geom.ex, 0.12, max(1.0, 0.012 * w)))
        # The welded hems along the top and bottom edges.
        inset = 0.05 * geom.face_height * geom.dn
        shape.dark.append(Line(top_r[2:-2] + inset, 0.12, 1.0))
        shape.dark.append(Line(bottom_r[2:-2] - inset, 0.12, 1.0))
        shape.fold = np.array([shape.origin, shape.chin])
    elif mask_type == "cloth" and rng.random() < 0.5:
        # Two-panel cloth masks have a centre seam over the nose and chin.
        seam = smooth_curve(np.array([shape.origin, geom.points[30], geom.points[57], shape.chin]))
        shape.dark.append(Line(seam, 0.18, max(1.0, 0.008 * w)))


def _straps(mask_type: str, geom: FaceGeometry, top: np.ndarray, bottom: np.ndarray) -> list[np.ndarray]:
    """Ear loops (head straps for N95) on the sides whose ear is visible."""
    out = []
    sides = []
    if geom.side != "left":  # the image-left ear is hidden when the nose points left
        sides.append(("left", top[0], bottom[len(bottom) // 4], 0, 2))
    if geom.side != "right":
        sides.append(("right", top[-1], bottom[3 * len(bottom) // 4], 16, 14))
    for side, upper, lower, ear_top_idx, ear_low_idx in sides:
        outward = -geom.ex if side == "left" else geom.ex
        if mask_type == "n95":
            # Head straps run back around the head, roughly level.
            for start in (upper + 0.25 * (lower - upper), lower):
                end = start + 0.3 * geom.face_width * outward - 0.05 * geom.face_height * geom.dn
                middle = 0.5 * (start + end) + 0.02 * geom.face_height * geom.dn
                out.append(smooth_curve(np.array([start, middle, end])))
            continue
        ear_top = geom.expand(geom.points[ear_top_idx], 0.12) - 0.04 * geom.face_height * geom.dn
        ear_low = geom.expand(geom.points[ear_low_idx], 0.15)
        # Loops bow outwards on their way round the ear.
        for start, end, bow in ((upper, ear_top, 0.02), (lower, ear_low, 0.03)):
            middle = 0.5 * (start + end) + bow * geom.face_width * outward
            out.append(smooth_curve(np.array([start, middle, end])))
    return out

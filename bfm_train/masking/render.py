"""Rasterising a mask: anti-aliased coverage, shading that follows the face, compositing onto the photo.

All work happens inside the mask's bounding box, so the cost depends on the face size, not the photo size.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .geometry import FIXED_SHIFT, FaceGeometry, fixed_point
from .shapes import Line, MaskShape
from .textures import Style, fill_colour, grain


@dataclass(frozen=True)
class Box:
    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def offset(self) -> np.ndarray:
        return np.array([self.x0, self.y0], dtype=np.float64)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.y1 - self.y0, self.x1 - self.x0)

    @classmethod
    def around(cls, points: np.ndarray, image_shape: tuple[int, ...], pad: int = 3) -> Box | None:
        """Bounding box of ``points`` clipped to the image; None when it lies outside."""
        height, width = image_shape[:2]
        lo = np.floor(points.min(0)).astype(int) - pad
        hi = np.ceil(points.max(0)).astype(int) + pad
        x0, y0 = max(int(lo[0]), 0), max(int(lo[1]), 0)
        x1, y1 = min(int(hi[0]), width), min(int(hi[1]), height)
        if x1 <= x0 or y1 <= y0:
            return None
        return cls(x0, y0, x1, y1)


def face_coordinates(geom: FaceGeometry, box: Box, origin: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per pixel of ``box``: (u, v) in pixels along the face's across and down axes from ``origin``."""
    ys, xs = np.mgrid[box.y0 : box.y1, box.x0 : box.x1].astype(np.float32)
    xs -= np.float32(origin[0])
    ys -= np.float32(origin[1])
    u = xs * np.float32(geom.ex[0]) + ys * np.float32(geom.ex[1])
    v = xs * np.float32(geom.dn[0]) + ys * np.float32(geom.dn[1])
    return u, v


def surface_shading(
    geom: FaceGeometry, image: np.ndarray, u: np.ndarray, v: np.ndarray, depth: float, form: bool = True
) -> np.ndarray:
    """Brightness of a mask surface: the photo's own light (its exposure, and which cheek is brighter) and,
    with ``form``, the mask's shape: a horizontal cylinder turned with the head and a top-to-bottom gradient
    (templates bring their own form shading)."""
    half = geom.face_width / 2.0
    across = np.clip(u / np.float32(half) - np.float32(0.5 * geom.yaw), -1.3, 1.3)
    left, right, exposure = _scene_light(geom, image)
    shade = np.interp(np.clip(across, -1, 1), [-1.0, 1.0], [left, right]).astype(np.float32) * np.float32(exposure)
    if form:
        down = np.clip(v / np.float32(max(depth, 1.0)), 0.0, 1.2)
        shade *= (1.0 - 0.28 * across * across) * (1.05 - 0.14 * down)
    return shade.astype(np.float32)


def _scene_light(geom: FaceGeometry, image: np.ndarray) -> tuple[float, float, float]:
    """Relative brightness of the two cheeks and the overall exposure of the face."""
    pts = geom.points
    radius = max(1, int(round(0.05 * geom.face_width)))
    gray = image if image.ndim == 2 else None
    values = []
    for jaw_idx in (3, 13):
        centre = pts[30] + 0.55 * (pts[jaw_idx] - pts[30])
        x, y = int(round(centre[0])), int(round(centre[1]))
        y0, y1 = max(y - radius, 0), min(y + radius + 1, image.shape[0])
        x0, x1 = max(x - radius, 0), min(x + radius + 1, image.shape[1])
        if y1 <= y0 or x1 <= x0:
            values.append(128.0)
            continue
        patch = (gray if gray is not None else image)[y0:y1, x0:x1]
        # Rec. 601 luma from BGR.
        luma = patch if patch.ndim == 2 else patch[..., 0] * 0.114 + patch[..., 1] * 0.587 + patch[..., 2] * 0.299
        values.append(float(np.mean(luma)))
    mean = max((values[0] + values[1]) / 2.0, 1.0)
    left = float(np.clip(values[0] / mean, 0.8, 1.2))
    right = float(np.clip(values[1] / mean, 0.8, 1.2))
    exposure = float(np.clip((mean / 150.0) ** 0.4, 0.55, 1.1))
    return left, right, exposure


def composite(image: np.ndarray, box: Box, colour: np.ndarray, alpha: np.ndarray) -> None:
    """Blend ``colour`` (float, box-sized, BGR) over ``image`` in place with ``alpha`` in 0..1."""
    roi = image[box.y0 : box.y1, box.x0 : box.x1].astype(np.float32)
    a = alpha[..., None]
    roi += a * (colour - roi)
    image[box.y0 : box.y1, box.x0 : box.x1] = np.clip(np.rint(roi), 0, 255).astype(np.uint8)


def _line_canvas(lines: list[Line], box: Box) -> np.ndarray:
    canvas = np.zeros(box.shape, dtype=np.uint8)
    for line in lines:
        pts = fixed_point(line.points - box.offset)
        value = int(round(255 * line.weight))
        cv2.polylines(canvas, [pts], False, value, max(1, int(round(line.width))), cv2.LINE_AA, FIXED_SHIFT)
    return canvas


def render_drawn(
    image: np.ndarray, geom: FaceGeometry, shape: MaskShape, style: Style, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``shape`` in ``style`` onto a copy of ``image``; returns it and the coverage (uint8 0..255)."""
    out = image.copy()
    coverage = np.zeros(image.shape[:2], dtype=np.uint8)
    strap_width = max(1, int(round(shape.strap_width)))
    everything = np.vstack([shape.outline, *shape.straps]) if shape.straps else shape.outline
    box = Box.around(everything, image.shape, pad=strap_width + 2)
    if box is None:
        return out, coverage

    body = np.zeros(box.shape, dtype=np.uint8)
    cv2.fillPoly(body, [fixed_point(shape.outline - box.offset)], 255, cv2.LINE_AA, FIXED_SHIFT)
    geom.clear_eyes(body, box.offset)
    straps = np.zeros(box.shape, dtype=np.uint8)
    for strap in shape.straps:
        cv2.polylines(straps, [fixed_point(strap - box.offset)], False, 255, strap_width, cv2.LINE_AA, FIXED_SHIFT)
    geom.clear_eyes(straps, box.offset)

    u, v = face_coordinates(geom, box, shape.origin)
    depth = float(np.dot(shape.chin - shape.origin, geom.dn))
    light = surface_shading(geom, image, u, v, depth)
    colour = _mask_surface(geom, shape, style, box, u, v, light, rng)
    if shape.straps:
        strap_colour = np.empty(box.shape + (3,), dtype=np.float32)
        strap_colour[:] = np.asarray(style.strap, dtype=np.float32)
        strap_colour *= light[..., None]
        composite(out, box, strap_colour, straps.astype(np.float32) / 255.0)
    composite(out, box, colour, body.astype(np.float32) / 255.0)
    coverage[box.y0 : box.y1, box.x0 : box.x1] = np.maximum(body, straps)
    return out, coverage


def _mask_surface(
    geom: FaceGeometry,
    shape: MaskShape,
    style: Style,
    box: Box,
    u: np.ndarray,
    v: np.ndarray,
    light: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """The mask's colour over ``box``: fabric colour or pattern, light, grain, folds, creases and seams."""
    colour = fill_colour(style, u, v, geom.face_width)
    # Woven cloth has a coarser grain than the non-woven fabric of medical masks.
    shade = light * grain(box.shape, style.grain, rng, blur=0.9 if style.name.startswith("cloth") else 0.5)
    if shape.fold is not None:
        # The two panels of a folded respirator face different ways: the one turned away is darker.
        top, bottom = shape.fold
        right_of_fold = _cross_side(box, top, bottom - top)
        tilt = 0.05 + 0.25 * abs(geom.yaw)
        # yaw < 0 (nose to the image's left): the left panel turns away. Frontal: either, at random.
        brighter_right = geom.yaw < 0 if geom.yaw != 0 else rng.random() < 0.5
        shade *= 1.0 + np.float32(tilt / 2 * (1.0 if brighter_right else -1.0)) * right_of_fold
    if shape.valve is not None:
        # An exhalation valve: a slightly darker disc with a dark rim.
        centre = tuple(int(c) for c in fixed_point(shape.valve.centre - box.offset).reshape(2))
        radius = int(round(shape.valve.radius * (1 << FIXED_SHIFT)))
        disc = np.zeros(box.shape, dtype=np.uint8)
        cv2.circle(disc, centre, radius, 255, -1, cv2.LINE_AA, FIXED_SHIFT)
        colour *= (1.0 - 0.18 * disc.astype(np.float32) / 255.0)[..., None]
        rim = np.zeros(box.shape, dtype=np.uint8)
        cv2.circle(rim, centre, radius, 90, max(1, int(0.02 * geom.face_width)), cv2.LINE_AA, FIXED_SHIFT)
        shade *= 1.0 - rim.astype(np.float32) / 255.0
    dark = _line_canvas(shape.dark, box).astype(np.float32) / 255.0
    bright = _line_canvas(shape.light, box).astype(np.float32) / 255.0
    shade *= (1.0 - dark) * (1.0 + bright)
    colour *= shade[..., None]
    return colour


def _cross_side(box: Box, top: np.ndarray, axis: np.ndarray) -> np.ndarray:
    """+1 right of the line through ``top`` along ``axis`` (in image terms), -1 left of it."""
    ys, xs = np.mgrid[box.y0 : box.y1, box.x0 : box.x1].astype(np.float32)
    cross = (xs - np.float32(top[0])) * np.float32(axis[1]) - (ys - np.float32(top[1])) * np.float32(axis[0])
    # With y pointing down and the axis pointing down the face, a positive cross product lies image-right.
    return np.sign(cross).astype(np.float32)

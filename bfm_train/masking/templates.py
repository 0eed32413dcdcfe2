"""Mask templates in MaskTheFace's format: ``masks.cfg`` (INI) plus RGBA PNGs.

Each section names a template image and six anchor points on it (``mask_a`` .. ``mask_f``): a and c the top
corners at the ears, b the top on the nose bridge, d and f the sides half-way down, e the bottom under the
chin. A section ``<variant>_left`` / ``_right`` is the variant for a head turned so that the nose points to
the image's left / right. Sections without a ``template`` key (MaskTheFace's ``empty`` and ``inpaint``) are
not masks and are skipped. We fit each template to the face with a perspective warp of its six anchors onto
the matching face points (``FaceGeometry.template_anchors``).
"""

from __future__ import annotations

import configparser
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from bfm_deploy.errors import BfmError

from .geometry import FaceGeometry
from .render import Box, composite, face_coordinates, surface_shading
from .textures import grain

CONFIG_NAME = "masks.cfg"
ANCHOR_KEYS = tuple(f"mask_{k}" for k in "abcdef")
# How far (in face heights) the top anchors may be lowered to keep a template off the eyes, tried in order.
TEMPLATE_DROPS = (0.0, 0.03, 0.06, 0.09, 0.12, 0.15)


@dataclass(frozen=True)
class MaskTemplate:
    name: str  # the section name, e.g. surgical_blue_left
    mask_type: str  # surgical, n95, kn95, cloth, gas, ...
    side: str  # front, left or right
    path: Path
    anchors: np.ndarray  # 6x2, template pixels, a..f


def read_templates(template_dir: Path) -> list[MaskTemplate]:
    """Parse ``template_dir/masks.cfg``; image paths are resolved against the folder (MaskTheFace's own
    ``masks/templates/x.png`` form too)."""
    template_dir = Path(template_dir)
    cfg_path = template_dir / CONFIG_NAME
    if not cfg_path.is_file():
        raise BfmError(f"no {CONFIG_NAME} in template folder {template_dir}")
    parser = configparser.ConfigParser()
    try:
        parser.read(cfg_path, encoding="utf-8")
    except configparser.Error as exc:
        raise BfmError(f"{cfg_path}: not a valid INI file ({exc.message.splitlines()[0]})") from None
    templates = []
    for section in parser.sections():
        entry = parser[section]
        if "template" not in entry:
            continue
        missing = [k for k in ANCHOR_KEYS if k not in entry]
        if missing:
            raise BfmError(f"{cfg_path} [{section}]: missing {', '.join(missing)}")
        try:
            anchors = np.array([[float(v) for v in entry[k].split(",")] for k in ANCHOR_KEYS])
        except ValueError:
            raise BfmError(f"{cfg_path} [{section}]: anchors must be 'x, y' numbers") from None
        if anchors.shape != (6, 2):
            raise BfmError(f"{cfg_path} [{section}]: anchors must be 'x, y' pairs")
        name = section.strip()
        variant, side = name, "front"
        for suffix in ("left", "right"):
            if name.lower().endswith(f"_{suffix}"):
                variant, side = name[: -len(suffix) - 1], suffix
        mask_type = variant.split("_")[0].lower()
        templates.append(MaskTemplate(name, mask_type, side, _resolve(template_dir, entry["template"]), anchors))
    if not templates:
        raise BfmError(f"{cfg_path}: no mask templates in it")
    return templates


def _resolve(template_dir: Path, value: str) -> Path:
    relative = Path(value.strip())
    candidates = (template_dir / relative, template_dir / "templates" / relative.name, template_dir / relative.name)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise BfmError(f"template image {value.strip()} not found under {template_dir}")


class TemplateLibrary:
    """The templates of one folder, images decoded on first use and kept."""

    def __init__(self, template_dir: Path) -> None:
        self.templates = read_templates(template_dir)
        self._images: dict[str, np.ndarray] = {}
        # Premultiplied float copies halved ``level`` times, made when first needed: a face is usually 5-10x
        # smaller than a template, and premultiplying and shrinking the full template per face would cost
        # more than the rest of the masking.
        self._levels: dict[tuple[str, int], np.ndarray] = {}

    @property
    def types(self) -> set[str]:
        return {t.mask_type for t in self.templates}

    def choose(self, mask_type: str, side: str, rng: np.random.Generator) -> MaskTemplate:
        """A template of ``mask_type`` for the head's side; a frontal one when the side has none."""
        of_type = [t for t in self.templates if t.mask_type == mask_type]
        if not of_type:
            raise BfmError(f"no {mask_type} template")
        candidates = [t for t in of_type if t.side == side] or [t for t in of_type if t.side == "front"] or of_type
        return candidates[int(rng.integers(len(candidates)))]

    def image(self, template: MaskTemplate) -> np.ndarray:
        if template.name not in self._images:
            rgba = cv2.imread(str(template.path), cv2.IMREAD_UNCHANGED)
            if rgba is None or rgba.ndim != 3 or rgba.shape[2] != 4 or rgba.dtype != np.uint8:
                raise BfmError(f"{template.path}: a mask template must be an 8-bit RGBA PNG")
            self._images[template.name] = rgba
        return self._images[template.name]

    def premultiplied(self, template: MaskTemplate, level: int) -> np.ndarray:
        key = (template.name, level)
        if key not in self._levels:
            image = _premultiply(self.image(template))
            height, width = image.shape[:2]
            if level > 0:
                size = (max(2, width >> level), max(2, height >> level))
                image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
            self._levels[key] = image
        return self._levels[key]

    def render(
        self, image: np.ndarray, geom: FaceGeometry, template: MaskTemplate, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Warp ``template`` onto the face in a copy of ``image``; returns it and the coverage (uint8 0..255)."""
        out = image.copy()
        coverage = np.zeros(image.shape[:2], dtype=np.uint8)
        src = template.anchors.copy()
        dst = geom.template_anchors()
        # Shrink the template to about its final size first: a perspective warp that downsamples 5-10x in one
        # step aliases (it samples, it does not average).
        scale = float(np.linalg.norm(dst[2] - dst[0])) / max(float(np.linalg.norm(src[2] - src[0])), 1e-6)
        level = max(0, int(np.floor(np.log2(1.0 / scale)))) if scale > 0 else 0
        full_height, full_width = self.image(template).shape[:2]
        premultiplied = self.premultiplied(template, level)
        height, width = premultiplied.shape[:2]
        rest = scale * full_width / width  # what is left to shrink after the cached level
        if rest < 0.9:
            size = (max(2, int(round(width * rest))), max(2, int(round(height * rest))))
            premultiplied = cv2.resize(premultiplied, size, interpolation=cv2.INTER_AREA)
            height, width = size[1], size[0]
        src *= np.array([width / full_width, height / full_height])
        fitted = None
        # A template's top edge may bulge above its a-b-c anchors and over the eyes; then wear it lower on the
        # nose (top anchors moved down) rather than cutting a notch into it.
        for drop in TEMPLATE_DROPS:
            lowered = dst.copy()
            lowered[:3] += drop * geom.face_height * geom.dn
            fitted = _warp(premultiplied, src, lowered, image.shape)
            if fitted is None:
                return out, coverage
            box, warped = fitted
            keep = np.full(box.shape, 255, dtype=np.uint8)
            geom.clear_eyes(keep, box.offset)
            if not np.any(warped[..., 3][keep == 0] > 0.1):
                break
        keep_f = keep.astype(np.float32) / 255.0
        alpha = np.clip(warped[..., 3] * keep_f, 0.0, 1.0)
        colour = warped[..., :3] / np.maximum(warped[..., 3:], 1e-4)
        # The photo's light on the template's own shading, a little brightness variation and grain.
        u, v = face_coordinates(geom, box, dst[1])
        light = surface_shading(geom, image, u, v, 1.0, form=False)
        light *= np.float32(rng.uniform(0.92, 1.06)) * grain(box.shape, 0.02, rng)
        colour *= light[..., None]
        composite(out, box, colour, alpha)
        coverage[box.y0 : box.y1, box.x0 : box.x1] = np.rint(alpha * 255).astype(np.uint8)
        return out, coverage


def _warp(
    premultiplied: np.ndarray, src: np.ndarray, dst: np.ndarray, image_shape: tuple[int, ...]
) -> tuple[Box, np.ndarray] | None:
    """The template warped onto the image, cut to its bounding box there (None when it falls outside)."""
    height, width = premultiplied.shape[:2]
    matrix = fit_warp(src, dst, width, height)
    corners = cv2.perspectiveTransform(
        np.array([[[0, 0], [width, 0], [width, height], [0, height]]], dtype=np.float64), matrix
    )[0]
    box = Box.around(corners, image_shape, pad=1)
    if box is None:
        return None
    shift = np.array([[1, 0, -box.x0], [0, 1, -box.y0], [0, 0, 1]], dtype=np.float64)
    warped = cv2.warpPerspective(
        premultiplied, shift @ matrix, (box.shape[1], box.shape[0]), flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0, 0),
    )
    return box, warped


def _premultiply(rgba: np.ndarray) -> np.ndarray:
    """float32 BGRA with colour multiplied by alpha (alpha in 0..1), so resampling does not bleed the
    invisible pixels' colour into the edges."""
    out = rgba.astype(np.float32)
    out[..., 3] /= 255.0
    out[..., :3] *= out[..., 3:]
    return out


def fit_warp(src: np.ndarray, dst: np.ndarray, width: int, height: int) -> np.ndarray:
    """3x3 least-squares homography of the six anchors; an affine fit when the homography folds or flips the
    template (nearly collinear anchors on a strongly turned head)."""
    matrix, _ = cv2.findHomography(src.astype(np.float64), dst.astype(np.float64), 0)
    if matrix is not None and _keeps_shape(matrix, width, height):
        return matrix
    design = np.hstack([src, np.ones((len(src), 1))])
    solution, *_ = np.linalg.lstsq(design, dst, rcond=None)
    return np.vstack([solution.T, [0.0, 0.0, 1.0]])


def _keeps_shape(matrix: np.ndarray, width: int, height: int) -> bool:
    corners = np.array([[0, 0, 1], [width, 0, 1], [width, height, 1], [0, height, 1]], dtype=np.float64)
    projected = corners @ matrix.T
    if np.any(projected[:, 2] <= 1e-6):  # a corner at or behind the horizon
        return False
    pts = projected[:, :2] / projected[:, 2:]
    edges = np.roll(pts, -1, axis=0) - pts
    turns = edges[:, 0] * np.roll(edges, -1, axis=0)[:, 1] - edges[:, 1] * np.roll(edges, -1, axis=0)[:, 0]
    return bool(np.all(turns > 0))  # convex and not mirrored (image y points down: clockwise is positive)

"""``Masker``: put a synthetic mask on the face in a photo or an aligned crop (the paper's MaskTheFace step)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path, PurePath

import numpy as np

from bfm_deploy.alignment import CROP_SIZE
from bfm_deploy.errors import BfmError

from .geometry import FaceGeometry
from .landmarks import LandmarkDetector, check_landmarks
from .render import render_drawn
from .shapes import DRAWN_TYPES, build_shape
from .templates import TemplateLibrary
from .textures import FabricLibrary, sample_style


@dataclass(frozen=True)
class MaskConfig:
    """What masks to put on.

    ``types``: drawn types are surgical, n95, kn95 and cloth; with ``template_dir`` any type its ``masks.cfg``
    has (e.g. gas) too. ``template_share``: with templates, the share of masks taken from a template instead
    of drawn, for types that have both. ``seed``: with the image's key, fixes every pixel.
    """

    types: tuple[str, ...] = DRAWN_TYPES
    seed: int = 0
    template_dir: Path | None = None
    template_share: float = 0.5
    straps: bool = True
    predictor_path: Path | None = None
    # Printed fabrics for cloth masks (a folder of images, e.g. MaskTheFace's textures) and the share of cloth
    # masks printed with one: real patterned cloth is what a classifier trained on plain masks misses.
    fabric_dir: Path | None = None
    fabric_share: float = 0.5
    # Share of (the remaining) drawn cloth masks with a randomly generated print: more variety than any
    # folder of fabric photos, so that a classifier cannot learn the few prints it was shown.
    print_share: float = 0.0
    # Share of drawn masks worn low, under the nose (the nose tip and nostrils show).
    low_share: float = 0.0

    def __post_init__(self) -> None:
        if not self.types:
            raise BfmError("no mask types given")
        if len(set(self.types)) != len(self.types):
            raise BfmError(f"mask types repeat: {', '.join(self.types)}")
        if not 0.0 <= self.template_share <= 1.0:
            raise BfmError(f"template share must be in 0..1, got {self.template_share}")
        if self.seed < 0:
            raise BfmError(f"seed must be >= 0, got {self.seed}")
        for name in ("fabric_share", "print_share", "low_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise BfmError(f"{name.replace('_', ' ')} must be in 0..1, got {getattr(self, name)}")


@dataclass(frozen=True)
class MaskResult:
    image: np.ndarray  # BGR uint8, same size as the input
    mask_type: str
    side: str  # front, left or right: the head's turn, see geometry.py
    landmarks: np.ndarray  # 68x2 dlib landmarks in image pixels
    coverage_mask: np.ndarray  # HxW uint8: 255 where the mask (or a strap) replaced the face, 0 untouched
    source: str  # "drawn" or "template"
    style: str  # colour/pattern (drawn) or template name
    yaw: float


def image_seed(seed: int, key: str) -> int:
    """A per-image seed from the global seed and the image's key, independent of process and order."""
    digest = hashlib.blake2b(f"{seed}\0{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


class Masker:
    def __init__(self, config: MaskConfig | None = None, detector: LandmarkDetector | None = None) -> None:
        self.config = config or MaskConfig()
        self.templates = TemplateLibrary(self.config.template_dir) if self.config.template_dir else None
        self.fabrics = FabricLibrary(self.config.fabric_dir) if self.config.fabric_dir else None
        available = set(DRAWN_TYPES) | (self.templates.types if self.templates else set())
        unknown = [t for t in self.config.types if t not in available]
        if unknown:
            hint = "" if self.templates else " (other types need --templates)"
            raise BfmError(f"unknown mask type {', '.join(unknown)}; choose from {', '.join(sorted(available))}{hint}")
        self._detector = detector
        # Loaded on first use: a Masker given landmarks never needs dlib's 100 MB model.
        self._predictor_path = self.config.predictor_path

    @property
    def detector(self) -> LandmarkDetector:
        if self._detector is None:
            self._detector = LandmarkDetector(self._predictor_path)
        return self._detector

    def landmarks(self, image: np.ndarray, aligned: bool | None = None) -> np.ndarray:
        image = _check_image(image)
        return self.detector.landmarks(image, _is_aligned(image, aligned))

    def apply(
        self,
        image: np.ndarray,
        aligned: bool | None = None,
        rel_key: str | None = None,
        landmarks: np.ndarray | None = None,
    ) -> MaskResult:
        """Mask the face in ``image`` (BGR uint8).

        ``aligned``: True for a crop aligned to the ArcFace template (the face box is known), False for a photo
        (HOG detection), None to decide by size (a 112x112 image is a crop). ``rel_key``: the image's name
        for its seed (a data set's relative path); without it the seed comes from the pixels. ``landmarks``:
        68x2 dlib-order points, to skip detection. Raises ``NoFaceError`` when no face is found.
        """
        image = _check_image(image)
        if landmarks is None:
            points = self.detector.landmarks(image, _is_aligned(image, aligned))
        else:
            points = check_landmarks(landmarks)
        key = PurePath(rel_key).as_posix() if rel_key is not None else hashlib.sha1(image.tobytes()).hexdigest()
        rng = np.random.default_rng(image_seed(self.config.seed, key))
        geom = FaceGeometry.from_landmarks(points)
        mask_type = self.config.types[int(rng.integers(len(self.config.types)))]
        if self.templates is not None and self._use_template(mask_type, rng):
            template = self.templates.choose(mask_type, geom.side, rng)
            out, coverage = self.templates.render(image, geom, template, rng)
            source, style_name = "template", template.name
        else:
            style = sample_style(mask_type, rng, self.fabrics, self.config.fabric_share, self.config.print_share)
            low = self.config.low_share > 0 and bool(rng.random() < self.config.low_share)
            shape = build_shape(mask_type, geom, rng, straps=self.config.straps, valve=style.valve, low=low)
            out, coverage = render_drawn(image, geom, shape, style, rng)
            source, style_name = "drawn", style.name
            style_name += "_low" if low else ""
        return MaskResult(out, mask_type, geom.side, points, coverage, source, style_name, geom.yaw)

    def _use_template(self, mask_type: str, rng: np.random.Generator) -> bool:
        """Template-only types (gas) always; types we can also draw with probability ``template_share``."""
        if self.templates is None or mask_type not in self.templates.types:
            return False
        if mask_type not in DRAWN_TYPES:
            return True
        return bool(rng.random() < self.config.template_share)


def _check_image(image: np.ndarray) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, "shape", None)
        raise BfmError(f"expected a BGR uint8 HxWx3 image, got {type(image).__name__} {shape}")
    if min(image.shape[:2]) < 32:
        raise BfmError(f"image of {image.shape[1]}x{image.shape[0]} is too small to mask")
    return image


def _is_aligned(image: np.ndarray, aligned: bool | None) -> bool:
    if aligned is not None:
        return aligned
    return image.shape[0] == image.shape[1] == CROP_SIZE

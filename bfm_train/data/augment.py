"""Training-time image effects that real photos have and clean aligned crops do not.

Real faces reach the networks through a detector whose landmarks are noisy (more so on masked faces), from
photos that are blurred, JPEG-compressed, noisy and unevenly lit. ``Augmenter`` reproduces both on aligned
112x112 crops: the crop is re-aligned from template landmarks moved by Gaussian noise (the misalignment a
detector with that landmark error causes), then each effect is applied with its probability. ``mask_restyle``
gives a masked twin's mask a new look (``restyle_mask``) before all that, so a classifier sees a fresh colour
and print on every epoch instead of the one look ``bfm-mask`` drew. Every draw comes
from the generator passed in, which the sampler seeds per (seed, epoch, sample), so runs stay bit-identical
across resumption. A face and its masked twin share the geometry (the guided loss compares them pixel-aligned)
and get their own photometric effects (so that neither class is the blurry one).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from bfm_deploy.contract import CROP_SIZE
from bfm_deploy.alignment import ARCFACE_TEMPLATE, similarity_transform
from bfm_deploy.errors import BfmError
from bfm_train.masking.textures import FabricLibrary, random_print


@dataclass
class AugmentConfig:
    # Standard deviation (crop pixels) of each landmark's displacement. SCRFD's measured error on raw LFW
    # photos is about 2 px per landmark at crop scale, about 3.7 px on the same photos masked.
    landmark_noise: float = 0.0
    blur: float = 0.0  # probability of a Gaussian blur, sigma 0.4 to 1.4 px
    jpeg: float = 0.0  # probability of JPEG re-encoding at quality 25 to 90
    noise: float = 0.0  # probability of Gaussian pixel noise, sigma 2 to 8 grey levels
    light: float = 0.0  # probability of a brightness, contrast and gamma change
    # Probability of a colour change of the whole crop: grey (a quarter of them) or a hue turn and saturation
    # scale. A mask classifier that sees skin colour change cannot take a dark or grey lower face for a mask.
    colour: float = 0.0
    # Probability that a masked twin's mask is restyled (new hue, a random print, or a dark or light solid
    # colour, keeping the rendered shading): real cloth masks come in far more looks than bfm-mask draws.
    mask_restyle: float = 0.0
    # A folder of printed-fabric photos (e.g. ${BFM_DATA}/masktheface/textures) that restyling also draws
    # from, laid at a fine scale: small dense prints average to skin-like colours at the classifier's 4x4
    # stride, which is how held-out fabric masks are missed.
    restyle_fabrics: str = ""
    # Probability that an unmasked face gets a non-mask object over part of its mouth and chin (``occlude``: a
    # hand, a microphone, a medal, a glove), staying labelled unmasked. Such faces are most of the bare faces a
    # classifier calls masked; the object is smaller than a mask and leaves the nose bare, so shape tells them
    # apart. For a classifier: an extractor's guided loss would compare the occluded face with a twin without it.
    occluder: float = 0.0
    # Probability of a strong darkening of the whole crop (gain 0.35-0.7, gamma 1.1-1.8), on both classes: a
    # classifier that takes a dark lower face for a dark cloth mask calls dark-skinned or underexposed faces masked.
    dark: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.landmark_noise <= 10.0:
            raise BfmError(f"augment.landmark_noise must be in 0..10 pixels, got {self.landmark_noise}")
        for name in ("blur", "jpeg", "noise", "light", "colour", "mask_restyle", "occluder", "dark"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise BfmError(f"augment.{name} is a probability in 0..1, got {getattr(self, name)}")

    @property
    def enabled(self) -> bool:
        return any((self.landmark_noise, self.blur, self.jpeg, self.noise, self.light, self.colour,
                    self.mask_restyle, self.occluder, self.dark))


class Augmenter:
    def __init__(self, config: AugmentConfig) -> None:
        self.config = config
        self._fabrics: FabricLibrary | None = None  # loaded on first use, in the worker that uses it

    @property
    def fabrics(self) -> FabricLibrary | None:
        if self.config.restyle_fabrics and self._fabrics is None:
            self._fabrics = FabricLibrary(Path(self.config.restyle_fabrics))
        return self._fabrics

    def geometry(self, rng: np.random.Generator) -> np.ndarray | None:
        """A 2x3 warp that re-aligns a crop from noisy landmarks, or None without landmark noise."""
        if not self.config.landmark_noise:
            return None
        noisy = ARCFACE_TEMPLATE + rng.normal(0.0, self.config.landmark_noise, ARCFACE_TEMPLATE.shape)
        return similarity_transform(noisy, ARCFACE_TEMPLATE)

    def apply(self, bgr: np.ndarray, warp: np.ndarray | None, rng: np.random.Generator) -> np.ndarray:
        """``bgr`` (HxWx3 uint8) warped by ``warp`` and given the photometric effects; a new array."""
        c = self.config
        out = bgr
        if warp is not None:
            size = (bgr.shape[1], bgr.shape[0])
            out = cv2.warpAffine(bgr, warp, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
        # Each probability is drawn whatever the outcome, so one effect's setting never shifts another's draws.
        draws = rng.random(4)
        if draws[0] < c.light:
            gain, bias, gamma = rng.uniform(0.7, 1.3), rng.uniform(-25, 25), rng.uniform(0.7, 1.4)
            lut = np.clip(255.0 * (np.arange(256) / 255.0) ** gamma * gain + bias, 0, 255).astype(np.uint8)
            out = cv2.LUT(np.ascontiguousarray(out), lut)
        if draws[1] < c.blur:
            out = cv2.GaussianBlur(out, (0, 0), float(rng.uniform(0.4, 1.4)))
        if draws[2] < c.noise:
            sigma = float(rng.uniform(2.0, 8.0))
            out = np.clip(out + rng.normal(0.0, sigma, out.shape), 0, 255).astype(np.uint8)
        if draws[3] < c.jpeg:  # BGR, as libjpeg's colour transform expects
            quality = [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(25, 91))]
            ok, data = cv2.imencode(".jpg", np.ascontiguousarray(out), quality)
            decoded = cv2.imdecode(data, cv2.IMREAD_COLOR) if ok else None
            if decoded is not None:
                out = decoded
        if c.colour and rng.random() < c.colour:  # drawn only when on: older configs keep their draws
            out = _recolour(np.ascontiguousarray(out), rng)
        if c.dark and rng.random() < c.dark:  # drawn only when on, as colour
            gain, gamma = rng.uniform(0.35, 0.7), rng.uniform(1.1, 1.8)
            lut = np.clip(255.0 * (np.arange(256) / 255.0) ** gamma * gain, 0, 255).astype(np.uint8)
            out = cv2.LUT(np.ascontiguousarray(out), lut)
        return np.ascontiguousarray(out)


def augmented_pair(augmenter: Augmenter | None, seed: int | None, x: np.ndarray,
                   x_hat: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """A face and its masked twin (or None) with one shared geometry and their own photometric effects."""
    if augmenter is None or seed is None:
        return x, x_hat
    rng = np.random.default_rng(seed)
    warp = augmenter.geometry(rng)
    if x_hat is not None and augmenter.config.mask_restyle > 0:
        # Its own stream, so that turning restyling on leaves every other effect's draws as they were.
        restyle_rng = np.random.default_rng([seed, _RESTYLE_STREAM])
        if restyle_rng.random() < augmenter.config.mask_restyle:
            x_hat = restyle_mask(x, x_hat, restyle_rng, augmenter.fabrics)
    if augmenter.config.occluder > 0:
        occluder_rng = np.random.default_rng([seed, _OCCLUDER_STREAM])  # its own stream, as restyling's
        if occluder_rng.random() < augmenter.config.occluder:
            x = occlude(x, occluder_rng)
    return augmenter.apply(x, warp, rng), None if x_hat is None else augmenter.apply(x_hat, warp, rng)


def _hsv_to_bgr(hue: float, saturation: float, value: float) -> np.ndarray:
    """One OpenCV HSV colour (hue 0-180; each truncated to uint8) as BGR float32, shape (3,)."""
    hsv = np.array([[[hue, saturation, value]]], dtype=np.float64).astype(np.uint8)
    return np.asarray(cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR), np.float32)[0, 0]


def _recolour(bgr: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if rng.random() < 0.25:
        return np.ascontiguousarray(np.repeat(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)[..., None], 3, axis=2))
    hsv = cv2.cvtColor(bgr, cv2.COLOR_BGR2HSV).astype(np.float32)
    hsv[..., 0] = (hsv[..., 0] + rng.uniform(-12, 12)) % 180
    hsv[..., 1] = np.clip(hsv[..., 1] * rng.uniform(0.4, 1.4), 0, 255)
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2BGR)


_RESTYLE_STREAM = 0x2E57
_OCCLUDER_STREAM = 0x0CC1
_MIN_MASK_SHARE = 0.05  # a twin whose mask covers less than this share of the crop is left alone
# OpenCV hues (0-180) away from skin's reds and oranges: a mask restyled to skin colour would be a face
# labelled masked that looks unmasked, teaching the classifier to call bare skin a mask.
_NON_SKIN_HUES = (30.0, 160.0)


def _lay_tile(tile: np.ndarray, shape: tuple[int, ...], scale: float, dx: float, dy: float) -> np.ndarray:
    """A seamless ``tile`` laid over an image of ``shape``: ``scale`` tile pixels per image pixel, shifted by
    ``dx``, ``dy`` tile pixels, wrapping around."""
    ys, xs = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32)
    height, width = np.float32(tile.shape[0]), np.float32(tile.shape[1])
    map_x = (xs * np.float32(scale) + np.float32(dx)) % width
    map_y = (ys * np.float32(scale) + np.float32(dy)) % height
    return np.asarray(cv2.remap(tile, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP), np.float32)


def mask_region(face: np.ndarray, twin: np.ndarray) -> np.ndarray:
    """Where ``twin`` differs from ``face`` (HxW float32 in 0..1): the mask and its straps. The threshold
    sits above JPEG re-encoding noise; opening removes the specks that noise still leaves."""
    diff = np.abs(face.astype(np.int16) - twin.astype(np.int16)).max(axis=2)
    region = (diff > 16).astype(np.uint8)
    kernel = np.ones((3, 3), np.uint8)
    region = cv2.morphologyEx(region, cv2.MORPH_OPEN, kernel)
    region = cv2.morphologyEx(region, cv2.MORPH_CLOSE, kernel)
    return region.astype(np.float32)


def restyle_mask(face: np.ndarray, twin: np.ndarray, rng: np.random.Generator,
                 fabrics: FabricLibrary | None = None) -> np.ndarray:
    """``twin`` with its mask given a new look, one of: its hue turned (to a hue away from skin's) and
    saturation and brightness scaled; a random print (``bfm_train.masking.textures.random_print``); a dark
    or light solid colour; with ``fabrics``, also one of them at a fine scale. The mask's
    rendered brightness (folds, light) is kept as shading, and the edge is feathered by a pixel. A twin
    without a visible mask is returned as it is."""
    region = mask_region(face, twin)
    if region.mean() < _MIN_MASK_SHARE:
        return twin
    pixels = twin.astype(np.float32)
    grey = pixels.mean(axis=2)
    inside = region > 0
    shading = np.clip(grey / max(float(grey[inside].mean()), 1.0), 0.4, 1.6)[..., None]
    kind = int(rng.integers(3 if fabrics is None else 4))
    if kind == 0:
        hsv = cv2.cvtColor(twin, cv2.COLOR_BGR2HSV).astype(np.float32)
        target = rng.uniform(*_NON_SKIN_HUES)
        hsv[..., 0] = (hsv[..., 0] + target - float(np.median(hsv[..., 0][inside]))) % 180
        hsv[..., 1] = np.clip(hsv[..., 1] * rng.uniform(0.3, 1.8) + rng.uniform(0, 60), 0, 255)
        hsv[..., 2] = np.clip(hsv[..., 2] * rng.uniform(0.3, 1.3), 0, 255)
        colour = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2BGR).astype(np.float32)
    elif kind == 1:
        tile = random_print(rng, size=64)
        scale, (dx, dy) = rng.uniform(0.5, 2.0), rng.uniform(0, 64, 2)
        colour = _lay_tile(tile, twin.shape[:2], scale, dx, dy) * shading
    elif kind == 3:
        assert fabrics is not None
        _, tile = fabrics.choose(rng)
        scale = tile.shape[1] / (rng.uniform(0.15, 0.6) * twin.shape[1])
        dx, dy = rng.uniform(0, tile.shape[1]), rng.uniform(0, tile.shape[0])
        colour = _lay_tile(tile, twin.shape[:2], scale, dx, dy) * shading
    else:
        value = rng.uniform(10, 60) if rng.random() < 0.5 else rng.uniform(170, 250)
        colour = _hsv_to_bgr(rng.uniform(*_NON_SKIN_HUES), rng.uniform(0, 120), value) * shading
    alpha = cv2.GaussianBlur(region, (0, 0), 0.8)[..., None]
    out = pixels * (1 - alpha) + np.clip(colour, 0, 255) * alpha
    return np.ascontiguousarray(np.clip(out + 0.5, 0, 255).astype(np.uint8))


# Where an occluder sits, in 112x112 ArcFace-template pixels: its centre anywhere between the mouth corners'
# columns widened by a third and from the mouth (y 92) -8 to +12; the nose tip is at y 72.
_OCCLUDER_CENTRE_X = (34.0, 78.0)
_OCCLUDER_CENTRE_Y = (84.0, 104.0)


def occlude(face: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``face`` (an unmasked aligned crop, BGR uint8) with one object over part of its mouth and chin: a blob
    (hand, glove, food), a tilted plate (medal, trophy, phone) or a bar with a head half the time (microphone,
    racket handle, cigarette), filled with the face's own cheek colour (a hand), a solid colour (metal, plastic)
    or a random print, shaded by a linear gradient and feathered by a pixel. Every object covers at most about
    a tenth of the crop, a third of what a mask covers, and its centre stays below the nose."""
    height, width = face.shape[:2]
    scale = width / CROP_SIZE
    centre = (rng.uniform(*_OCCLUDER_CENTRE_X) * scale, rng.uniform(*_OCCLUDER_CENTRE_Y) * scale)
    angle = rng.uniform(0.0, 180.0)
    shape = np.zeros((height, width), np.uint8)
    kind = int(rng.integers(3))
    if kind == 0:
        axes = (int(rng.uniform(10, 24) * scale), int(rng.uniform(8, 18) * scale))
        cv2.ellipse(shape, (int(centre[0]), int(centre[1])), axes, angle, 0, 360, 1, -1)
    elif kind == 1:
        size = (rng.uniform(12, 38) * scale, rng.uniform(10, 30) * scale)
        corners = cv2.boxPoints((centre, size, angle)).astype(np.int32)
        cv2.fillPoly(shape, [corners], 1)
    else:
        length, thickness = rng.uniform(30, 70) * scale, int(rng.uniform(5, 13) * scale)
        direction = np.array([np.cos(np.radians(angle)), np.sin(np.radians(angle))])
        end = np.asarray(centre) + direction * length
        cv2.line(shape, (int(centre[0]), int(centre[1])), (int(end[0]), int(end[1])), 1, max(thickness, 1))
        if rng.random() < 0.5:
            cv2.circle(shape, (int(centre[0]), int(centre[1])), int(rng.uniform(6, 11) * scale), 1, -1)
    fill = int(rng.integers(3))
    if fill == 0:  # skin: the median colour of both cheeks, lightened or darkened
        cheeks = np.concatenate([face[int(70 * scale):int(84 * scale), int(18 * scale):int(32 * scale)].reshape(-1, 3),
                                 face[int(70 * scale):int(84 * scale), int(80 * scale):int(94 * scale)].reshape(-1, 3)])
        layer = np.median(cheeks, axis=0).astype(np.float32) * rng.uniform(0.8, 1.2)  # one BGR colour
    elif fill == 1:
        layer = _hsv_to_bgr(rng.uniform(0, 180), rng.uniform(0, 255), rng.uniform(15, 250))
    else:
        tile = random_print(rng, size=64)
        layer = _lay_tile(tile, face.shape[:2], rng.uniform(0.5, 2.0), *rng.uniform(0, 64, 2))
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    turn = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(turn) * (xs - centre[0]) + np.sin(turn) * (ys - centre[1])) / (20.0 * scale)
    shading = np.clip(1.0 + rng.uniform(0.1, 0.3) * ramp, 0.6, 1.4)[..., None]
    alpha = cv2.GaussianBlur(shape.astype(np.float32), (0, 0), 0.8)[..., None]
    out = face.astype(np.float32) * (1 - alpha) + np.clip(layer * shading, 0, 255) * alpha
    return np.ascontiguousarray(np.clip(out + 0.5, 0, 255).astype(np.uint8))

"""Training-time image effects that real photos have and clean aligned crops do not.

Real faces reach the networks through a detector whose landmarks are noisy (more so on masked faces), from
photos that are blurred, JPEG-compressed, noisy and unevenly lit. ``Augmenter`` reproduces both on aligned
112x112 crops: the crop is re-aligned from template landmarks moved by Gaussian noise (the misalignment a
detector with that landmark error causes), then each effect is applied with its probability. Every draw comes
from the generator passed in, which the sampler seeds per (seed, epoch, sample), so runs stay bit-identical
across resumption. A face and its masked twin share the geometry (the guided loss compares them pixel-aligned)
and get their own photometric effects (so that neither class is the blurry one).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from bfm_deploy.alignment import ARCFACE_TEMPLATE, similarity_transform
from bfm_deploy.errors import BfmError


@dataclass
class AugmentConfig:
    # Standard deviation (crop pixels) of each landmark's displacement. SCRFD's measured error on raw LFW
    # photos is about 2 px per landmark at crop scale, about 3.7 px on the same photos masked.
    landmark_noise: float = 0.0
    blur: float = 0.0  # probability of a Gaussian blur, sigma 0.4 to 1.4 px
    jpeg: float = 0.0  # probability of JPEG re-encoding at quality 25 to 90
    noise: float = 0.0  # probability of Gaussian pixel noise, sigma 2 to 8 grey levels
    light: float = 0.0  # probability of a brightness, contrast and gamma change

    def __post_init__(self) -> None:
        if not 0.0 <= self.landmark_noise <= 10.0:
            raise BfmError(f"augment.landmark_noise must be in 0..10 pixels, got {self.landmark_noise}")
        for name in ("blur", "jpeg", "noise", "light"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise BfmError(f"augment.{name} is a probability in 0..1, got {getattr(self, name)}")

    @property
    def enabled(self) -> bool:
        return any((self.landmark_noise, self.blur, self.jpeg, self.noise, self.light))


class Augmenter:
    def __init__(self, config: AugmentConfig) -> None:
        self.config = config

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
        return np.ascontiguousarray(out)


def augmented_pair(augmenter: Augmenter | None, seed: int | None, x: np.ndarray,
                   x_hat: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """A face and its masked twin (or None) with one shared geometry and their own photometric effects."""
    if augmenter is None or seed is None:
        return x, x_hat
    rng = np.random.default_rng(seed)
    warp = augmenter.geometry(rng)
    return augmenter.apply(x, warp, rng), None if x_hat is None else augmenter.apply(x_hat, warp, rng)

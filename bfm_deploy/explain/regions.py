"""Where saliency falls on an aligned face: the share of a map's mass in the mask region.

The mask region of an aligned crop is everything below the nose line: the row of the ArcFace template's nose
tip (y = 71.7 of 112). A mask drawn from landmarks covers the nose from about that line down and the mouth and
chin below it, so a map whose mass sits there looks at what a mask hides; the eyes and brows lie above it.
"""

from __future__ import annotations

import numpy as np

from ..alignment import ARCFACE_TEMPLATE, CROP_SIZE

NOSE = 2  # the template's landmarks: left eye, right eye, nose, left and right mouth corners


def nose_row(height: int = CROP_SIZE) -> int:
    """The first pixel row of the mask region in a crop of ``height`` rows: the first whose centre lies at or
    below the template's nose tip."""
    nose_y = float(ARCFACE_TEMPLATE[NOSE, 1]) * height / CROP_SIZE
    return int(np.ceil(nose_y - 0.5))


def mask_region_share(maps: np.ndarray) -> np.ndarray:
    """Per map (``H x W`` or ``N x H x W``, non-negative) the share of its mass at or below the nose line; a map
    that is all zero has share 0."""
    stack = np.asarray(maps, np.float64)
    single = stack.ndim == 2
    stack = stack[None] if single else stack
    if stack.ndim != 3 or (stack < 0).any():
        raise ValueError("expected non-negative H x W maps")
    total = stack.sum(axis=(1, 2))
    below = stack[:, nose_row(stack.shape[1]):, :].sum(axis=(1, 2))
    share = np.divide(below, total, out=np.zeros_like(total), where=total > 0)
    return share[0] if single else share

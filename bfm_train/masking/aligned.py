"""The masker of ``bfm-eval --dataset masked-lfw``: registered as the ``bfm.maskers`` entry point (setup.cfg),
through which the runtime finds it without importing the training side."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from .masker import MaskConfig, Masker


def mask_function(seed: int, template_dir: Path | None) -> Callable[[np.ndarray, str], np.ndarray]:
    """(aligned BGR crop, path key) -> the crop with a synthetic mask, the same for the same seed and key."""
    masker = Masker(MaskConfig(seed=seed, template_dir=template_dir))

    def mask(bgr: np.ndarray, key: str) -> np.ndarray:
        return masker.apply(bgr, aligned=True, rel_key=key).image

    return mask

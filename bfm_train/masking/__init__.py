"""Synthetic face masks (the paper's MaskTheFace preprocessing) and the ``bfm-mask`` tool.

``Masker(MaskConfig(...)).apply(bgr, aligned=..., rel_key=...)`` returns a ``MaskResult``; see masker.py.
Needs dlib (``dlib-bin``) and ``face-recognition-models`` for landmarks, not torch.
"""

from .landmarks import NoFaceError
from .masker import MaskConfig, Masker, MaskResult, image_seed
from .shapes import DRAWN_TYPES

__all__ = ["DRAWN_TYPES", "MaskConfig", "MaskResult", "Masker", "NoFaceError", "image_seed"]

"""Why a pair was decided so: guided-backpropagation maps of the extractors over the aligned crops.

``explain(img_a, img_b, bundle=..., compare=[...])`` returns a ``PairExplanation`` per method; ``bfm-explain``
is its command line; ``regions.mask_region_share`` measures how much of a map falls where a mask sits.
torch is needed (the ``explain`` or ``train`` extra); without it the first call says which extra to install.
"""

from .explainer import Explainer, FaceExplanation, PairExplanation, aligned_crops, explain
from .regions import mask_region_share, nose_row

__all__ = ["Explainer", "FaceExplanation", "PairExplanation", "aligned_crops", "explain", "mask_region_share",
           "nose_row"]

"""Real photos with and without masks (a ``bfm-real-masks`` folder) as extra items of the mask classifier's loss.

The real photos are unpaired: there is no masked twin of a bare face. Each item is a bare real face and a masked
real face of other people, ``(x, x_hat, -1)``, so that Eq. 1's loss (class 0 on ``x``, class 1 on ``x_hat``)
takes them as it takes a twin pair. That is right for C alone: the extractors' losses need the twin of the same
face and the identity label, so ``data.real_masks`` is refused unless E_F and E_P are frozen (the label -1 would
also stop any ArcFace head that met it).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import Dataset

from bfm_deploy.errors import BfmError
from bfm_deploy.real_masks import labelled_crops

from .augment import AugmentConfig, Augmenter, augmented_pair
from .folders import Item, split_item
from .images import load_face, to_tensor

NO_IDENTITY = -1

Triple = tuple[torch.Tensor, torch.Tensor, int]


class RealMaskPairs(Dataset[Triple]):
    """``repeat`` x max(bare, masked) items a pass; item i pairs bare face i and masked face i (each cycled).

    Each face gets its own augmentation draw (the two are different photos): seeds ``2 * seed`` and ``2 * seed + 1``.
    """

    def __init__(self, root: str | Path, split: str = "train", repeat: int = 1,
                 augment: AugmentConfig | None = None) -> None:
        if repeat < 1:
            raise BfmError(f"data.real_repeat must be at least 1, got {repeat}")
        crops = labelled_crops(Path(root), split)
        self.masked = [path for path, label in crops if label == 1]
        self.bare = [path for path, label in crops if label == 0]
        if not self.masked or not self.bare:
            raise BfmError(f"{root}/{split} needs crops of both classes (with_mask and without_mask)")
        self.repeat = repeat
        self.augmenter = Augmenter(augment) if augment is not None and augment.enabled else None

    def __len__(self) -> int:
        return self.repeat * max(len(self.masked), len(self.bare))

    def __getitem__(self, item: Item) -> Triple:
        index, flip, seed = split_item(item)
        bare, _ = augmented_pair(self.augmenter, None if seed is None else seed * 2,
                                 load_face(self.bare[index % len(self.bare)]), None)
        masked, _ = augmented_pair(self.augmenter, None if seed is None else seed * 2 + 1,
                                   load_face(self.masked[index % len(self.masked)]), None)
        return to_tensor(bare, flip), to_tensor(masked, flip), NO_IDENTITY


class JoinedPairs(Dataset[Triple]):
    """The twin pairs, then the real pairs, under one index (a sampler item keeps its flip and seed)."""

    def __init__(self, twins: Dataset[Triple], real: RealMaskPairs) -> None:
        self.twins, self.real = twins, real
        self.num_classes = int(getattr(twins, "num_classes"))  # a Dataset attribute torch does not declare
        self._split = len(twins)  # type: ignore[arg-type]

    def __len__(self) -> int:
        return self._split + len(self.real)

    def __getitem__(self, item: Item) -> Triple:
        index, flip, seed = split_item(item)
        part, index = (self.twins, index) if index < self._split else (self.real, index - self._split)
        return part[(index, flip) if seed is None else (index, flip, seed)]  # type: ignore[index]

"""A DistributedSampler whose order and flips depend only on (seed, epoch) and that can start mid-epoch.

Resuming after a crash must replay exactly the batches an uninterrupted run would have seen, so the shuffle comes
from DistributedSampler's (seed + epoch) generator and the horizontal flip of each sample from a second generator
seeded the same way; ``start_batch`` skips the batches this rank already trained on.
"""

from __future__ import annotations

from collections.abc import Iterator, Sized

import torch
from torch.utils.data import DistributedSampler

_FLIP_STREAM = 0x5EED_F11F  # keeps the flip generator's stream apart from the shuffle generator's
_AUGMENT_STREAM = 0xA06_5EED  # and the augmentation seeds' stream apart from both


class ResumableSampler(DistributedSampler[int]):
    """Yields ``(index, flip, augment_seed)`` items for ``PairedFolderDataset`` / ``RecordDataset``."""

    def __init__(
        self,
        dataset: Sized,
        *,
        num_replicas: int = 1,
        rank: int = 0,
        seed: int = 0,
        batch_size: int = 1,
        flip: bool = True,
    ) -> None:
        # drop_last=True: every rank gets the same number of samples, no rank repeats another's padding.
        super().__init__(
            dataset,  # type: ignore[arg-type]
            num_replicas=num_replicas,
            rank=rank,
            shuffle=True,
            seed=seed,
            drop_last=True,
        )
        self.batch_size = batch_size
        self.flip = flip
        self.start_batch = 0

    @property
    def batches_per_epoch(self) -> int:
        return self.num_samples // self.batch_size

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        super().set_epoch(epoch)
        self.start_batch = start_batch

    def __iter__(self) -> Iterator[tuple[int, bool, int]]:  # type: ignore[override]
        indices: list[int] = list(super().__iter__())
        generator = torch.Generator()
        generator.manual_seed(self.seed * 1_000_003 + self.epoch + _FLIP_STREAM)
        total = len(self.dataset)  # type: ignore[arg-type]
        flips = torch.randint(0, 2, (total,), generator=generator).tolist() if self.flip else [0] * total
        augment = torch.Generator()
        augment.manual_seed(self.seed * 1_000_003 + self.epoch + _AUGMENT_STREAM)
        seeds = torch.randint(0, 2**62, (total,), generator=augment).tolist()
        # Only whole batches: the DataLoader drops the last partial one too.
        usable = self.batches_per_epoch * self.batch_size
        for index in indices[self.start_batch * self.batch_size : usable]:
            yield index, bool(flips[index]), int(seeds[index])

    def __len__(self) -> int:
        return max(0, (self.batches_per_epoch - self.start_batch) * self.batch_size)

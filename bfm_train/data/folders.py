"""Identity-folder data sets (``root/<identity>/<image>``, as CASIA-WebFace and LFW are unpacked).

Each unmasked image is paired with its synthetically masked twin under ``masked_root`` at the same relative
path (``bfm-mask`` keeps the folder layout; a twin with another image extension is accepted too).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset

from bfm_deploy.errors import BfmError

from .augment import AugmentConfig, Augmenter, augmented_pair
from .images import load_face, to_tensor

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")

Item = int | tuple[int, bool] | tuple[int, bool, int]  # index, flip, augmentation seed


@dataclass(frozen=True)
class Sample:
    relpath: str  # "<identity>/<file>", relative to the data set root
    label: int
    masked: Path | None  # the masked twin, when a masked root is used


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def scan_identities(
    root: Path,
    include: Collection[str] | None = None,
    exclude: Collection[str] = (),
    min_images: int = 1,
) -> dict[str, list[Path]]:
    """Identity name -> sorted image paths, after the include/exclude lists and the image-count floor.

    Sorted names and files make the label assignment identical on every rank and every run.
    """
    root = Path(root)
    if not root.is_dir():
        raise BfmError(f"data root {root} is not a folder")
    if include is not None:
        missing = sorted(set(include) - {p.name for p in root.iterdir() if p.is_dir()})
        if missing:
            raise BfmError(f"{len(missing)} included identities are not in {root}, e.g. {missing[0]}")
    excluded = set(exclude)
    wanted = None if include is None else set(include)
    identities: dict[str, list[Path]] = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        if folder.name in excluded or (wanted is not None and folder.name not in wanted):
            continue
        images = _images_in(folder)
        if len(images) >= max(1, min_images):
            identities[folder.name] = images
    if not identities:
        raise BfmError(f"no identity folder in {root} is left after the include/exclude/min_images filters")
    return identities


def _find_twin(masked_dir: Path, listing: dict[str, Path], image: Path) -> Path | None:
    """The masked twin of ``image``: same file name, else same stem with another image extension."""
    if image.name in listing:
        return listing[image.name]
    for ext in IMAGE_EXTENSIONS:
        candidate = listing.get(image.stem + ext)
        if candidate is not None:
            return candidate
    return None


class PairedFolderDataset(Dataset[tuple[torch.Tensor, torch.Tensor, int]]):
    """Yields ``(x, x_hat, y)``: the face, its masked twin (an empty tensor without a masked root), the label.

    An item may be an index or ``(index, flip)``; the sampler decides the flip so that augmentation depends
    only on the seed and the epoch (bit-identical resumption), and the same flip is applied to both images.
    """

    def __init__(
        self,
        root: str | Path,
        masked_root: str | Path | None = None,
        *,
        include: Collection[str] | None = None,
        exclude: Iterable[str] = (),
        min_images: int = 1,
        missing_masked: str = "skip",
        augment: AugmentConfig | None = None,
    ) -> None:
        if missing_masked not in ("skip", "error"):
            raise BfmError(f"missing_masked must be 'skip' or 'error', not {missing_masked!r}")
        self.root = Path(root)
        self.augmenter = Augmenter(augment) if augment is not None and augment.enabled else None
        self.masked_root = None if masked_root is None else Path(masked_root)
        if self.masked_root is not None and not self.masked_root.is_dir():
            raise BfmError(f"masked root {self.masked_root} is not a folder (build it with bfm-mask)")
        identities = scan_identities(self.root, include, tuple(exclude), min_images)
        self.identities = list(identities)
        self.samples: list[Sample] = []
        self.skipped = 0  # images without a masked twin (MaskTheFace-style tools skip faces they cannot fit)
        for label, (name, images) in enumerate(identities.items()):
            listing: dict[str, Path] = {}
            if self.masked_root is not None and (self.masked_root / name).is_dir():
                listing = {p.name: p for p in _images_in(self.masked_root / name)}
            for image in images:
                twin = None
                if self.masked_root is not None:
                    twin = _find_twin(self.masked_root / name, listing, image)
                    if twin is None:
                        if missing_masked == "error":
                            raise BfmError(f"{image}: no masked twin under {self.masked_root / name}")
                        self.skipped += 1
                        continue
                self.samples.append(Sample(f"{name}/{image.name}", label, twin))
        if not self.samples:
            raise BfmError(f"no image of {self.root} has a masked twin under {self.masked_root}")

    @property
    def num_classes(self) -> int:
        return len(self.identities)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, item: Item) -> tuple[torch.Tensor, torch.Tensor, int]:
        index, flip, seed = split_item(item)
        sample = self.samples[index]
        face, twin = augmented_pair(self.augmenter, seed, load_face(self.root / sample.relpath),
                                    None if sample.masked is None else load_face(sample.masked))
        x = to_tensor(face, flip)
        x_hat = torch.empty(0) if twin is None else to_tensor(twin, flip)
        return x, x_hat, sample.label


def split_item(item: Item) -> tuple[int, bool, int | None]:
    """``(index, flip, augmentation seed or None)`` from a bare index or a sampler item."""
    if isinstance(item, int):
        return item, False, None
    if len(item) == 2:
        return item[0], item[1], None
    return item[0], item[1], item[2]  # type: ignore[misc]

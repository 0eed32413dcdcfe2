"""Evaluation sets: labelled pairs with folds and matching cases, and how to get each image as an aligned crop.

Every image is identified by its file path (the key embeddings are cached under), and an ``EvalSet``'s
``load`` turns that key into a 112x112 BGR crop aligned to the ArcFace template, so the networks are always
run on aligned crops however the set was stored (pre-aligned files, loose crops that need detection).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ..datasets import MASK_FREE_LABEL, Pair, read_lfw_pairs, read_mfr2_labels, read_mfr2_pairs, read_pairs_file
from ..errors import BfmError
from ..images import load_image
from ..metrics import DEFAULT_FOLDS, contiguous_folds

from ..contract import CROP_SIZE
ImageLoader = Callable[[Path], np.ndarray]


@dataclass(frozen=True)
class EvalPair:
    left: Path
    right: Path
    same: bool
    fold: int  # 0-based
    index: int  # position in the protocol's full pair list (stable under fold selection)


@dataclass
class EvalSet:
    """One list of pairs evaluated as a unit, e.g. ``lfw`` or ``masked-lfw/case2``."""

    name: str
    pairs: list[EvalPair]
    load: ImageLoader
    masked: dict[Path, bool] = field(default_factory=dict)  # ground-truth mask label per image, where known
    notes: list[str] = field(default_factory=list)  # e.g. pairs dropped, shown under the table

    @property
    def images(self) -> list[Path]:
        """Unique images in first-use order."""
        return list(dict.fromkeys(p for pair in self.pairs for p in (pair.left, pair.right)))

    def cases(self) -> np.ndarray | None:
        """Matching case per pair (1 + number of masked faces), or None unless every image is labelled."""
        if not all(p.left in self.masked and p.right in self.masked for p in self.pairs):
            return None
        return np.array([1 + self.masked[p.left] + self.masked[p.right] for p in self.pairs])

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """``same`` and ``fold`` per pair."""
        return (np.array([p.same for p in self.pairs], dtype=bool), np.array([p.fold for p in self.pairs]))


def load_aligned(path: Path) -> np.ndarray:
    """A pre-aligned crop from disk; anything but 112x112 means the set was not aligned for this model."""
    image = load_image(path)
    if image.shape[:2] != (CROP_SIZE, CROP_SIZE):
        raise BfmError(
            f"{path}: {image.shape[1]}x{image.shape[0]} is not an aligned {CROP_SIZE}x{CROP_SIZE} crop "
            "(use a detecting data set such as mfr2, or --detect for a generic pairs file)"
        )
    return image


def to_eval_pairs(pairs: list[Pair], folds: np.ndarray | None = None) -> list[EvalPair]:
    """Number the pairs and give each a fold: the protocol's own, else ``folds``, else 10 contiguous folds."""
    if folds is None:
        if all(p.fold >= 0 for p in pairs):
            folds = np.array([p.fold for p in pairs])
        else:
            folds = contiguous_folds(len(pairs), DEFAULT_FOLDS)
    return [EvalPair(p.left, p.right, p.same, int(f), i) for i, (p, f) in enumerate(zip(pairs, folds))]


def fold_count(pairs: list[EvalPair]) -> int:
    return max(p.fold for p in pairs) + 1


def select_folds(evalset: EvalSet, folds: list[int] | None) -> EvalSet:
    """Keep only the pairs of ``folds`` (0-based); None keeps everything."""
    if folds is None:
        return evalset
    wanted = set(folds)
    return replace(evalset, pairs=[p for p in evalset.pairs if p.fold in wanted])


def first_pairs_per_fold(evalset: EvalSet, per_label: int) -> EvalSet:
    """A quick subset: the first ``per_label`` same and ``per_label`` different pairs of every fold."""
    kept: list[EvalPair] = []
    taken: dict[tuple[int, bool], int] = {}
    for pair in evalset.pairs:
        key = (pair.fold, pair.same)
        if taken.get(key, 0) < per_label:
            taken[key] = taken.get(key, 0) + 1
            kept.append(pair)
    return replace(evalset, pairs=kept)


def require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise BfmError(f"{what} not found: {path}")
    return path


def lfw(data_dir: Path) -> EvalSet:
    """LFW View 2 on the pre-aligned crops: 6,000 pairs in their own 10 folds, every face unmasked."""
    root = data_dir / "lfw"
    pairs = read_lfw_pairs(require_file(root / "pairs.txt", "LFW pairs file"), root / "aligned112")
    evalset = EvalSet("lfw", to_eval_pairs(pairs), load_aligned)
    evalset.masked = {image: False for image in evalset.images}
    return evalset


def mfr2(data_dir: Path, load: ImageLoader) -> EvalSet:
    """MFR2: 848 pairs of loose crops (``load`` detects and aligns them), mask labels from mfr2_labels.txt.

    The pairs file has no folds, so they are cut into 10 contiguous folds as insightface does.
    """
    root = data_dir / "mfr2"
    pairs = read_mfr2_pairs(require_file(root / "pairs.txt", "MFR2 pairs file"), root)
    labels = read_mfr2_labels(require_file(root / "mfr2_labels.txt", "MFR2 labels file"), root)
    evalset = EvalSet("mfr2", to_eval_pairs(pairs), load)
    evalset.masked = {image: labels[image] != MASK_FREE_LABEL for image in evalset.images if image in labels}
    missing = len(evalset.images) - len(evalset.masked)
    if missing:
        evalset.notes.append(f"{missing} MFR2 images have no mask label: matching cases are not reported")
    return evalset


def read_generic_pairs(pairs_file: Path) -> tuple[list[Pair], dict[Path, bool]]:
    """A pairs file with a label on every line (``bfm_deploy.datasets.read_pairs_file``) and, optionally, each
    image's mask label (the ground truth of Table III)."""
    pairs: list[Pair] = []
    masked: dict[Path, bool] = {}
    for line in read_pairs_file(pairs_file, need_labels=True):
        pairs.append(Pair(line.left, line.right, bool(line.same), -1))
        for image, flag in zip((line.left, line.right), line.masked or ()):
            if masked.get(image, flag) != flag:
                raise BfmError(f"{pairs_file}:{line.line}: {image} is labelled both masked and unmasked")
            masked[image] = flag
    if len(pairs) < DEFAULT_FOLDS:
        raise BfmError(f"{pairs_file}: {len(pairs)} pairs, at least {DEFAULT_FOLDS} are needed for 10 folds")
    return pairs, masked


def generic(pairs_file: Path, load: ImageLoader) -> EvalSet:
    pairs, masked = read_generic_pairs(require_file(pairs_file, "pairs file"))
    evalset = EvalSet("pairs", to_eval_pairs(pairs), load)
    evalset.masked = masked
    return evalset

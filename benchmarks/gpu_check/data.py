"""The real faces the GPU check runs on: LFW pairs (aligned crops and raw fold-1 photos) and MFR2 pairs.

Parity must be shown on real faces, so missing data is an error (one line), never a silent switch to random
pixels. A GPU machine may not have the shared data: ``pack`` copies just what the check reads (about 27 MB:
fold 1's aligned crops, the raw fold-1 photos, MFR2) into a folder that can travel with the working tree.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bfm_deploy.datasets import Pair, read_lfw_pairs, read_mfr2_pairs
from bfm_deploy.errors import BfmError
from bfm_deploy.images import load_image

LFW_FOLD = 600  # pairs of LFW's first fold (300 same, 300 different), whose raw photos are raw-fold1


@dataclass(frozen=True)
class PairSets:
    """Pairs by name: ``lfw-aligned`` (112x112 crops), ``lfw-raw`` and ``mfr2`` (photos, detected)."""

    lfw_aligned: list[Pair]
    lfw_raw: list[Pair]
    mfr2: list[Pair]

    def named(self) -> dict[str, tuple[list[Pair], bool]]:
        """name -> (pairs, aligned)"""
        return {"lfw-aligned": (self.lfw_aligned, True), "lfw-raw": (self.lfw_raw, False), "mfr2": (self.mfr2, False)}


def _spread(pairs: list[Pair], count: int) -> list[Pair]:
    """``count`` pairs spread over the list (same and different pairs alike), all of them when count is 0."""
    if count <= 0 or count >= len(pairs):
        return pairs
    return [pairs[i] for i in np.linspace(0, len(pairs) - 1, count).round().astype(int)]


def _need(path: Path, what: str) -> Path:
    if not path.exists():
        raise BfmError(f"{what} not found at {path}: set BFM_DATA (or --data-dir) to the shared data, or pack it "
                       "with --pack-data DIR on a machine that has it")
    return path


def load_pairs(data_dir: Path, lfw_count: int, raw_count: int, mfr2_count: int) -> PairSets:
    lfw = _need(data_dir / "lfw" / "pairs.txt", "LFW pairs.txt")
    aligned = read_lfw_pairs(lfw, _need(data_dir / "lfw" / "aligned112", "LFW aligned crops"))[:LFW_FOLD]
    raw = read_lfw_pairs(lfw, _need(data_dir / "lfw" / "raw-fold1", "LFW raw fold-1 photos"))[:LFW_FOLD]
    mfr2 = read_mfr2_pairs(_need(data_dir / "mfr2" / "pairs.txt", "MFR2 pairs.txt"), data_dir / "mfr2")
    sets = PairSets(_spread(aligned, lfw_count), _spread(raw, raw_count), _spread(mfr2, mfr2_count))
    for name, (pairs, _) in sets.named().items():
        missing = [p for pair in pairs for p in (pair.left, pair.right) if not p.is_file()]
        if missing:
            raise BfmError(f"{name}: {len(missing)} images missing, e.g. {missing[0]}")
    return sets


def aligned_crops(pairs: list[Pair], count: int) -> np.ndarray:
    """``count`` aligned BGR uint8 crops (N x 112 x 112 x 3) from the pairs' images, repeated as needed."""
    paths = list(dict.fromkeys(p for pair in pairs for p in (pair.left, pair.right)))
    crops = np.stack([load_image(p) for p in paths])
    return crops[np.arange(count) % len(crops)]


def pack(data_dir: Path, target: Path) -> int:
    """Copy what the check reads (LFW fold 1 aligned and raw, MFR2) to ``target``; the number of files copied."""
    sets = load_pairs(data_dir, 0, 0, 0)
    files = {data_dir / "lfw" / "pairs.txt", data_dir / "mfr2" / "pairs.txt"}
    files |= {p for pairs, _ in sets.named().values() for pair in pairs for p in (pair.left, pair.right)}
    for src in sorted(files):
        dst = target / src.relative_to(data_dir)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)
    return len(files)

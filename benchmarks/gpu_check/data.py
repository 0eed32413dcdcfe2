"""The real faces the GPU check runs on: LFW pairs (aligned crops and raw fold-1 photos) and MFR2 pairs.

Parity must be shown on real faces, so missing data is an error (one line), never a silent switch to random
pixels. A GPU machine may not have the shared data: ``pack`` copies just what the check reads (the spread pairs of
fold 1's aligned crops, the raw fold-1 photos and MFR2) into a folder that can travel with the working tree.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from bfm_deploy.datasets import Pair, read_lfw_pairs, read_mfr2_pairs
from bfm_deploy.errors import BfmError
from bfm_deploy.images import load_image

LFW_FOLD = 600  # pairs of LFW's first fold (300 same, 300 different), whose raw photos are raw-fold1
# The most pairs a run reads, spread over each set: what ``pack`` carries (as JPEG 90 where that is smaller),
# sized to fit the device tool's 64 MiB with the working tree (see the pack test).
PACKED_PAIRS = {"lfw_pairs": 64, "raw_pairs": 24, "mfr2_pairs": 24}


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
    """``count`` pairs spread over the list (same and different pairs alike), all of them when count is 0 or
    more than the list holds."""
    if count <= 0 or count >= len(pairs):
        return pairs
    return [pairs[i] for i in np.linspace(0, len(pairs) - 1, count).round().astype(int)]


def _need(path: Path, what: str) -> Path:
    if not path.exists():
        raise BfmError(f"{what} not found at {path}: set BFM_DATA (or --data-dir) to the shared data, or pack it "
                       "with --pack-data DIR on a machine that has it")
    return path


def load_pairs(data_dir: Path, lfw_pairs: int, raw_pairs: int, mfr2_pairs: int) -> PairSets:
    """The pairs the check runs on: each count spread over the packed pairs of its set (``PACKED_PAIRS``), so
    that a run of any size finds its faces in a pack."""
    lfw = _need(data_dir / "lfw" / "pairs.txt", "LFW pairs.txt")
    aligned = read_lfw_pairs(lfw, _need(data_dir / "lfw" / "aligned112", "LFW aligned crops"))[:LFW_FOLD]
    raw = read_lfw_pairs(lfw, _need(data_dir / "lfw" / "raw-fold1", "LFW raw fold-1 photos"))[:LFW_FOLD]
    mfr2 = read_mfr2_pairs(_need(data_dir / "mfr2" / "pairs.txt", "MFR2 pairs.txt"), data_dir / "mfr2")
    packed = PACKED_PAIRS
    sets = PairSets(_spread(_spread(aligned, packed["lfw_pairs"]), lfw_pairs),
                    _spread(_spread(raw, packed["raw_pairs"]), raw_pairs),
                    _spread(_spread(mfr2, packed["mfr2_pairs"]), mfr2_pairs))
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


SERVICE_PAIRS = 16  # the aligned LFW pairs the service part cycles through


def sets_lfw_head(data_dir: Path, count: int) -> list[Pair]:
    return read_lfw_pairs(data_dir / "lfw" / "pairs.txt", data_dir / "lfw" / "aligned112")[:count]


def pack(data_dir: Path, target: Path) -> tuple[int, int]:
    """Copy what the check reads (``PACKED_PAIRS``) to ``target``: the number of files and their bytes.

    Every photo travels as JPEG at quality 90 (MFR2's PNGs, LFW's crops saved at 95) under its own name (the
    decoder reads the content, not the suffix), or as it is where its file is smaller: the pack then fits the
    device tool's limit beside the tree, and the device and CPU paths of the check compare each other on the
    same bytes either way. LFW's pairs.txt is cut to its first fold, the only one the check reads."""
    sets = load_pairs(data_dir, **PACKED_PAIRS)
    files = {data_dir / "lfw" / "pairs.txt", data_dir / "mfr2" / "pairs.txt"}
    files |= {p for pairs, _ in sets.named().values() for pair in pairs for p in (pair.left, pair.right)}
    # the service part sends the first pairs of pairs.txt, as bfm-bench --serve does
    files |= {p for pair in sets_lfw_head(data_dir, SERVICE_PAIRS) for p in (pair.left, pair.right)}
    size = 0
    lfw_pairs = data_dir / "lfw" / "pairs.txt"
    for src in sorted(files):
        dst = target / src.relative_to(data_dir)
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src == lfw_pairs:  # the check reads only the first fold: 15 KB of it instead of 155 KB
            lines = src.read_text().splitlines()
            dst.write_text("\n".join([f"1 {LFW_FOLD // 2}", *lines[1 : 1 + LFW_FOLD]]) + "\n")
        elif src.suffix.lower() == ".txt":
            shutil.copy2(src, dst)
        else:  # every photo as JPEG at quality 90, or as it is where that is smaller
            ok, encoded = cv2.imencode(".jpg", load_image(src), [cv2.IMWRITE_JPEG_QUALITY, 90])
            if not ok:
                raise BfmError(f"cannot encode {src} as JPEG")
            if encoded.size < src.stat().st_size:
                dst.write_bytes(encoded.tobytes())
            else:
                shutil.copy2(src, dst)
        size += dst.stat().st_size
    return len(files), size

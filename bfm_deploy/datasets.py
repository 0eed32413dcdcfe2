"""Readers for the verification protocols we evaluate on (LFW pairs.txt, MFR2) and the shared data folder."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .errors import BfmError

MASK_FREE_LABEL = "no-mask"


def default_data_dir() -> Path:
    """``$BFM_DATA``; else ``../shared/data`` beside the source checkout bfm runs from (where the project's data
    lives); else ``$XDG_DATA_HOME/bfm/data`` (``~/.local/share/bfm/data``) for bfm installed without the repository."""
    env = os.environ.get("BFM_DATA")
    if env:
        return Path(env)
    checkout = Path(__file__).resolve().parents[1]
    if (checkout / "setup.cfg").is_file():
        return checkout.parent / "shared" / "data"
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "bfm" / "data"


@dataclass(frozen=True)
class Pair:
    left: Path
    right: Path
    same: bool
    fold: int  # 0-based fold index; -1 where the protocol has no folds


def _lfw_image(root: Path, name: str, index: str) -> Path:
    return root / name / f"{name}_{int(index):04d}.jpg"


def read_lfw_pairs(pairs_file: Path, image_root: Path) -> list[Pair]:
    """LFW View 2 ``pairs.txt``: a ``folds per_fold`` header, then per fold ``per_fold`` same and different pairs."""
    lines = Path(pairs_file).read_text().splitlines()
    try:
        folds, per_fold = (int(v) for v in lines[0].split())
    except (ValueError, IndexError):
        raise BfmError(f"{pairs_file}: first line must be '<folds> <pairs per fold>'") from None
    pairs: list[Pair] = []
    for number, line in enumerate(lines[1:], start=2):
        fields = line.split()
        if not fields:
            continue
        fold = (len(pairs)) // (2 * per_fold)
        if len(fields) == 3:
            name, i, j = fields
            pairs.append(Pair(_lfw_image(image_root, name, i), _lfw_image(image_root, name, j), True, fold))
        elif len(fields) == 4:
            n1, i, n2, j = fields
            pairs.append(Pair(_lfw_image(image_root, n1, i), _lfw_image(image_root, n2, j), False, fold))
        else:
            raise BfmError(f"{pairs_file}:{number}: expected 3 or 4 fields, got {len(fields)}")
    if len(pairs) != folds * 2 * per_fold:
        raise BfmError(f"{pairs_file}: header promises {folds * 2 * per_fold} pairs, found {len(pairs)}")
    return pairs


def lfw_identities_in_folds(pairs: list[Pair], folds: set[int]) -> set[str]:
    """Identity names (folder names) used by the given 0-based folds."""
    return {p.parent.name for pair in pairs if pair.fold in folds for p in (pair.left, pair.right)}


def read_mfr2_pairs(pairs_file: Path, image_root: Path) -> list[Pair]:
    """MFR2 ``pairs.txt``: ``Name i j`` / ``Name1 i Name2 j``, PNG images, no folds."""
    pairs: list[Pair] = []
    for number, line in enumerate(Path(pairs_file).read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) == 3:
            name, i, j = fields
            left, right, same = (name, i), (name, j), True
        elif len(fields) == 4:
            left, right, same = (fields[0], fields[1]), (fields[2], fields[3]), False
        else:
            raise BfmError(f"{pairs_file}:{number}: expected 3 or 4 fields, got {len(fields)}")
        paths = [image_root / n / f"{n}_{int(k):04d}.png" for n, k in (left, right)]
        pairs.append(Pair(paths[0], paths[1], same, -1))
    return pairs


def read_mfr2_labels(labels_file: Path, image_root: Path) -> dict[Path, str]:
    """MFR2 ``mfr2_labels.txt``: ``Name, i, label`` -> {image path: label} (``no-mask`` or a mask type)."""
    labels: dict[Path, str] = {}
    for line in Path(labels_file).read_text().splitlines():
        fields = [f.strip() for f in line.split(",")]
        if len(fields) != 3:
            continue
        name, index, label = fields
        labels[image_root / name / f"{name}_{int(index):04d}.png"] = label
    return labels


# ---- the one pairs-file grammar (bfm-verify --pairs, bfm-export --calibrate, bfm-eval --dataset pairs) --------

TRUE_WORDS = frozenset({"1", "true", "same", "yes"})
FALSE_WORDS = frozenset({"0", "false", "different", "no"})
PAIRS_GRAMMAR = "'img1 img2 [same [masked1 masked2]]' (same: 1/0 or same/different; masked: 1/0)"


@dataclass(frozen=True)
class PairLine:
    left: Path
    right: Path
    same: bool | None  # None: the line gives no label
    masked: tuple[bool, bool] | None  # per image, where the line says
    line: int


def _flag(word: str, allowed: frozenset[str] = TRUE_WORDS | FALSE_WORDS) -> bool | None:
    word = word.lower()
    return None if word not in allowed else word in TRUE_WORDS


def read_pairs_file(path: Path, need_labels: bool = False) -> list[PairLine]:
    """Every pair of a pairs file: ``img1 img2 [same [masked1 masked2]]`` per line, tab-separated when the line
    has a tab (so paths may hold spaces), else split on whitespace; blank lines and ``#`` comments skipped;
    relative paths relative to the file's folder. ``need_labels``: every line must say same or different."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BfmError(f"pairs file not found: {path}") from None
    except IsADirectoryError:
        raise BfmError(f"pairs file {path} is a directory") from None
    except UnicodeDecodeError:
        raise BfmError(f"pairs file {path} is not UTF-8 text") from None
    pairs = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = [f.strip() for f in line.split("\t")] if "\t" in line else line.split()
        same = _flag(fields[2]) if len(fields) >= 3 else None
        masked = tuple(_flag(f, frozenset({"0", "1"})) for f in fields[3:5]) if len(fields) == 5 else None
        if (len(fields) not in (2, 3, 5) or not all(fields) or (len(fields) >= 3 and same is None)
                or (masked is not None and None in masked) or (need_labels and same is None)):
            raise BfmError(f"{path}:{number}: expected {PAIRS_GRAMMAR}, got {len(fields)} field(s)")
        left, right = (Path(f) if Path(f).is_absolute() else path.parent / f for f in fields[:2])
        pairs.append(PairLine(left, right, same, masked, number))  # type: ignore[arg-type]
    if not pairs:
        raise BfmError(f"pairs file {path} lists no pairs")
    return pairs

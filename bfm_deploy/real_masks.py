"""Real photos with and without masks as aligned crops for the mask classifier: the ``bfm-real-masks`` builder.

The source is a copy of ``chandrikadeb7/Face-Mask-Detection`` (MIT): ``dataset/with_mask`` and
``dataset/without_mask`` photos, a checked-out folder or a bare git directory (the blobs are read with
``git cat-file``; unreadable ones are counted and skipped). OUT also gets ``train.txt``, ``val.txt`` and
``test.txt``: each split as a mask calibration list (``image<TAB>0|1``) for ``bfm-export --mask-calibration``
and ``tools/mask_heldout.py``. Every photo goes through the runtime's own
detection, fallback chain and alignment (``open_aligner``), so that C learns the crops it will be shown.

The split is fixed by the bytes of each file: ``sha256`` -> bucket ``int(sha[:8], 16) % 20``, 0-13 train,
14-16 validation, 17-19 test. It does not depend on file names, listing order or the detector, so the split file
the builder writes (``split.tsv``: split, label, sha256[:16], name) is the same on every machine; a file whose bytes
occur in both classes is left out (its label is unknown), and a repeated file counts once.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .atomic import atomic_dir, atomic_write_text
from .errors import BfmError
from .images import IMAGE_SUFFIXES, decode_image
from .progress import progress

LABELS = ("with_mask", "without_mask")  # the source's folder names; with_mask is C's class 1
SPLITS = ("train", "val", "test")
SPLIT_HEADER = "split\tlabel\tsha256_16\tname"
HASH_CHARS = 16  # the split file keeps sha256[:16]: 64 bits tell 4,000 files apart, and the bucket needs 8 hex
REPORT_NAME = "report.json"
SPLIT_NAME = "split.tsv"
BATCH = 32


def split_of(sha256: str) -> str:
    """The split a file with these bytes belongs to (70 / 15 / 15)."""
    bucket = int(sha256[:8], 16) % 20
    return "train" if bucket < 14 else "val" if bucket < 17 else "test"


@dataclass(frozen=True)
class SourcePhoto:
    label: str  # with_mask | without_mask
    name: str  # file name in the source's label folder
    sha256: str
    data: bytes

    @property
    def split(self) -> str:
        return split_of(self.sha256)


@dataclass(frozen=True)
class SplitRow:
    split: str
    label: str
    sha256: str  # its first HASH_CHARS hex digits
    name: str

    def line(self) -> str:
        return f"{self.split}\t{self.label}\t{self.sha256}\t{self.name}"


def _is_git_dir(path: Path) -> bool:
    return (path / "objects").is_dir() and (path / "HEAD").is_file()


def _git_files(git_dir: Path) -> Iterator[tuple[str, str, bytes | None]]:
    """(label, name, bytes or None when the blob cannot be read) for each source photo of a bare repository."""
    listing = subprocess.run(["git", f"--git-dir={git_dir}", "ls-tree", "-r", "-z", "HEAD", "dataset"],
                             capture_output=True, check=False)
    if listing.returncode != 0:
        raise BfmError(f"{git_dir}: git ls-tree failed: {listing.stderr.decode(errors='replace').strip()[:200]}")
    for record in listing.stdout.split(b"\0"):
        if not record:
            continue
        meta, _, raw_path = record.partition(b"\t")
        parts = raw_path.decode("utf-8", "surrogateescape").split("/")
        if len(parts) != 3 or parts[1] not in LABELS or Path(parts[2]).suffix.lower() not in IMAGE_SUFFIXES:
            continue
        blob = subprocess.run(["git", f"--git-dir={git_dir}", "cat-file", "blob", meta.split()[2].decode()],
                              capture_output=True, check=False)
        yield parts[1], parts[2], blob.stdout if blob.returncode == 0 else None


def _folder_files(root: Path) -> Iterator[tuple[str, str, bytes | None]]:
    for label in LABELS:
        for path in sorted((root / "dataset" / label).iterdir()):
            if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
                try:
                    yield label, path.name, path.read_bytes()
                except OSError:
                    yield label, path.name, None


def read_source(source: Path) -> tuple[list[SourcePhoto], dict[str, int]]:
    """The source's photos, deduplicated by their bytes, and counts of what was left out."""
    if _is_git_dir(source):
        files = _git_files(source)
    elif all((source / "dataset" / label).is_dir() for label in LABELS):
        files = _folder_files(source)
    else:
        raise BfmError(f"{source} is neither a Face-Mask-Detection checkout (dataset/with_mask, dataset/without_mask) "
                       "nor its bare git directory")
    skipped: Counter[str] = Counter()
    by_sha: dict[str, SourcePhoto] = {}
    labels_of: dict[str, set[str]] = {}
    for label, name, data in files:
        if data is None:
            skipped["unreadable"] += 1
            continue
        sha = hashlib.sha256(data).hexdigest()
        labels_of.setdefault(sha, set()).add(label)
        if sha in by_sha:
            skipped["duplicate"] += 1
            continue
        by_sha[sha] = SourcePhoto(label, name, sha, data)
    both = {sha for sha, labels in labels_of.items() if len(labels) > 1}
    skipped["in_both_classes"] = len(both)
    photos = sorted((p for sha, p in by_sha.items() if sha not in both), key=lambda p: (p.label, p.name))
    if not photos:
        raise BfmError(f"no photos found in {source}")
    return photos, dict(skipped)


def split_rows(photos: Sequence[SourcePhoto]) -> list[SplitRow]:
    return [SplitRow(p.split, p.label, p.sha256[:HASH_CHARS], p.name)
            for p in sorted(photos, key=lambda p: (p.label, p.name))]


def format_split(rows: Sequence[SplitRow]) -> str:
    return "\n".join([SPLIT_HEADER, *(row.line() for row in rows)]) + "\n"


def read_split(path: Path) -> list[SplitRow]:
    """A split file, checked: its header, four fields a line, known splits and labels, and each row's split
    the one its hash gives."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise BfmError(f"cannot read split file {path}: {exc}") from None
    if not lines or lines[0] != SPLIT_HEADER:
        raise BfmError(f"{path}: the first line must be {SPLIT_HEADER!r}")
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        fields = line.split("\t")
        if (len(fields) != 4 or fields[0] not in SPLITS or fields[1] not in LABELS or len(fields[2]) != HASH_CHARS
                or any(c not in "0123456789abcdef" for c in fields[2])):
            raise BfmError(f"{path}:{number}: expected split, label, sha256[:{HASH_CHARS}] and name separated by tabs")
        row = SplitRow(*fields)
        if split_of(row.sha256) != row.split:
            raise BfmError(f"{path}:{number}: {row.name} is in {row.split}, its hash puts it in {split_of(row.sha256)}")
        rows.append(row)
    return rows


def crop_path(root: Path, row: SplitRow | SourcePhoto) -> Path:
    """Where the builder puts a photo's aligned crop: ``root/<split>/<label>/<sha256[:16]>.png``."""
    return root / split_of(row.sha256) / row.label / f"{row.sha256[:16]}.png"


def build(source: Path, out: Path, aligner: Any, overwrite: bool = False) -> dict[str, Any]:
    """Detect, align and write every source photo's crop under ``out`` (atomically, as one folder), with
    ``split.tsv`` and ``report.json``; returns the report."""
    from .detect.fallback import FIRST_PASS

    if out.exists() and not overwrite:
        raise BfmError(f"{out} exists; pass --overwrite to rebuild it")
    photos, skipped = read_source(source)
    found_by: Counter[str] = Counter()
    counts: dict[str, dict[str, dict[str, int]]] = {s: {label: {"photos": 0, "faces": 0} for label in LABELS}
                                                    for s in SPLITS}
    failures: list[dict[str, str]] = []
    with atomic_dir(out, overwrite=overwrite) as tmp:
        for split in SPLITS:
            for label in LABELS:
                (tmp / split / label).mkdir(parents=True)
        bar = progress(total=len(photos), desc="real masks", unit="photo")
        for start in range(0, len(photos), BATCH):
            chunk = photos[start : start + BATCH]
            images: list[np.ndarray | BfmError] = []
            for photo in chunk:
                try:
                    images.append(decode_image(photo.data, f"{photo.label}/{photo.name}",
                                               max_side=aligner.config.work_side))
                except BfmError as exc:
                    images.append(exc)
            decoded = [image for image in images if not isinstance(image, BfmError)]
            aligned = iter(aligner.align_many(decoded) if decoded else [])
            for photo, image in zip(chunk, images):
                counts[photo.split][photo.label]["photos"] += 1
                result = image if isinstance(image, BfmError) else next(aligned)
                if isinstance(result, BfmError):
                    failures.append({"split": photo.split, "label": photo.label, "name": photo.name,
                                     "sha256": photo.sha256, "error": str(result).replace(" in image", f" in {photo.label}/{photo.name}", 1)})
                    continue
                counts[photo.split][photo.label]["faces"] += 1
                found_by[result.found_by] += 1
                if not cv2.imwrite(str(crop_path(tmp, photo)), result.crop):
                    raise BfmError(f"cannot write {crop_path(tmp, photo)}")
            bar.update(len(chunk))
        bar.close()
        atomic_write_text(tmp / SPLIT_NAME, format_split(split_rows(photos)))
        for split in SPLITS:  # each split as a mask calibration list ('image<TAB>0|1', relative to OUT)
            lines = [f"{path.relative_to(tmp)}\t{label}" for path, label in labelled_crops(tmp, split)]
            atomic_write_text(tmp / f"{split}.txt", "".join(line + "\n" for line in lines))
        report = {
            "format": "bfm-real-masks/1",
            "source": str(source),
            "detector": aligner.detector.name,
            "fallback": [str(step) for step in aligner.fallback.steps] if aligner.fallback else [],
            "photos": len(photos),
            "skipped": skipped,
            "counts": counts,
            "found_by": {FIRST_PASS: found_by.pop(FIRST_PASS, 0), **dict(sorted(found_by.items()))},
            "failures": failures,
        }
        atomic_write_text(tmp / REPORT_NAME, json.dumps(report, indent=2) + "\n")
    return report


def labelled_crops(root: Path, split: str) -> list[tuple[Path, int]]:
    """The crops of one split of a built set, as (path, label) with label 1 for with_mask."""
    if split not in SPLITS:
        raise BfmError(f"unknown split {split!r} (choose {', '.join(SPLITS)})")
    folder = root / split
    if not folder.is_dir():
        raise BfmError(f"{folder} is not a folder: build the set with bfm-real-masks")
    return [(path, int(label == "with_mask")) for label in LABELS
            for path in sorted((folder / label).glob("*.png"))]

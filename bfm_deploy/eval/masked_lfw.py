"""Masked LFW: the LFW pair images masked by our own masker, deterministically, cached on disk.

The paper's Masked LFW was made with MaskTheFace; ours comes from ``bfm_train.masking`` (the same
template-based approach) with a fixed seed and the image's path as the key, so every run and every
machine gets the same masks. Masked crops are written as lossless PNGs, one atomic write per image, so an
interrupted run leaves only complete files and a repeat run masks nothing twice. An image the masker
refuses is remembered (a ``.failed`` file holding the reason) and its pairs are left out of both cases.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np

from ..atomic import atomic_write_bytes, atomic_write_text
from ..errors import BfmError
from ..optional import install_hint
from ..progress import progress, stage
from .protocols import EvalPair, EvalSet, load_aligned

MaskFunction = Callable[[np.ndarray, str], np.ndarray]  # (aligned BGR crop, path key) -> masked crop
SETTINGS_FILE = "masker.json"


@dataclass(frozen=True)
class MaskSettings:
    """What decides every masked pixel; recorded in the cache so a cache made otherwise is never mixed in."""

    seed: int = 0
    template_dir: Path | None = None  # MaskTheFace-format templates, mixed with drawn masks; None: drawn only

    def to_json(self) -> str:
        # The template folder's location does not change the masks, so only its use is recorded.
        return json.dumps({"seed": self.seed, "templates": self.template_dir is not None}, sort_keys=True)


MASKER_GROUP = "bfm.maskers"  # entry-point group: the synthetic masker that bfm's train extra provides


def default_mask_function(settings: MaskSettings) -> MaskFunction:
    """The synthetic masker, found through the ``bfm.maskers`` entry point (``bfm_train.masking``: dlib and the
    mask templates, no torch). A plugin and not an import: the runtime never imports the training side."""
    from importlib.metadata import entry_points

    found = sorted(entry_points(group=MASKER_GROUP), key=lambda point: point.name)
    if not found:
        raise BfmError(f"masked-lfw masks faces with bfm's synthetic masker, which is not installed: {install_hint('train')}")
    make: Callable[[int, Path | None], MaskFunction] = found[0].load()
    return make(settings.seed, settings.template_dir)


@dataclass
class MaskedImageCache:
    """``root/<name>/<file>.png`` for each image under ``source_root``; masked on first request."""

    root: Path
    source_root: Path
    settings: MaskSettings
    mask_function: MaskFunction | None = None  # None: bfm_train.masking with ``settings``, created when needed
    failures: dict[Path, str] = field(default_factory=dict)

    def target(self, image: Path) -> Path:
        return self.root / self._key(image).with_suffix(".png")

    def _key(self, image: Path) -> Path:
        try:
            return image.relative_to(self.source_root)
        except ValueError:
            raise BfmError(f"{image} is not under {self.source_root}") from None

    def ensure(self, images: list[Path]) -> dict[Path, Path]:
        """Masked path per image, masking what the cache lacks; images the masker refused are left out."""
        self._check_settings()
        masked: dict[Path, Path] = {}
        todo: list[Path] = []
        for image in images:
            target = self.target(image)
            failed = target.with_suffix(".failed")
            if target.is_file():
                masked[image] = target
            elif failed.is_file():
                self.failures[image] = failed.read_text(encoding="utf-8").strip()
            else:
                todo.append(image)
        stage(f"masked LFW: {len(masked)} of {len(images)} faces cached in {self.root}"
              + (f", masking {len(todo)}" if todo else ""))
        if todo:
            mask = self.mask_function or default_mask_function(self.settings)
            for image in progress(todo, desc=f"masking LFW (seed {self.settings.seed})", unit="img"):
                target = self.target(image)
                try:
                    result = mask(load_aligned(image), self._key(image).as_posix())
                except BfmError as exc:
                    self.failures[image] = str(exc)
                    atomic_write_text(target.with_suffix(".failed"), f"{exc}\n")
                    continue
                ok, encoded = cv2.imencode(".png", result)
                if not ok:
                    raise BfmError(f"cannot encode the masked version of {image}")
                atomic_write_bytes(target, encoded.tobytes())
                masked[image] = target
        return masked


    def _check_settings(self) -> None:
        recorded = self.root / SETTINGS_FILE
        if not recorded.is_file():
            atomic_write_text(recorded, self.settings.to_json() + "\n")
        elif recorded.read_text(encoding="utf-8").strip() != self.settings.to_json():
            raise BfmError(
                f"{self.root} holds masks made with other settings ({recorded.read_text().strip()}); "
                "choose another --cache-dir or delete it"
            )


def masked_lfw_sets(base: EvalSet, cache: MaskedImageCache) -> list[EvalSet]:
    """``masked-lfw/case3`` (both faces masked) and ``masked-lfw/case2`` (one face masked, the left one on
    even pair indices and the right one on odd, so both sides of the pair list get masks).

    Both sets keep the same pairs: a pair with an image the masker refused is left out of both.
    """
    masked = cache.ensure(base.images)
    kept = [p for p in base.pairs if p.left in masked and p.right in masked]
    notes = []
    if len(kept) < len(base.pairs):
        notes.append(
            f"masked-lfw: {len(base.pairs) - len(kept)} of {len(base.pairs)} pairs left out: the masker "
            f"refused {len(cache.failures)} images (e.g. {next(iter(cache.failures.values()), '')})"
        )
    case3 = [replace(p, left=masked[p.left], right=masked[p.right]) for p in kept]
    case2 = [_one_side_masked(p, masked) for p in kept]
    masked_files = set(masked.values())
    sets = []
    for name, pairs in (("masked-lfw/case3", case3), ("masked-lfw/case2", case2)):
        labels = {path: path in masked_files for pair in pairs for path in (pair.left, pair.right)}
        sets.append(EvalSet(name, pairs, load_aligned, labels, list(notes)))
    sets[1].notes = []  # say it once
    return sets


def _one_side_masked(pair: EvalPair, masked: dict[Path, Path]) -> EvalPair:
    if pair.index % 2 == 0:
        return replace(pair, left=masked[pair.left])
    return replace(pair, right=masked[pair.right])

"""Faces' features (mask probability, routing decision, E_F and E_P embeddings) kept on disk per bundle.

``bfm-gallery calibrate`` and ``bfm-eval --dataset lfw-identification`` embed thousands of aligned LFW faces
with the same bundle every time; the cache makes every run after the first read them instead. One ``.npz``
per (bundle, backend): the key is the bundle's manifest digest (which names every file's sha256 and the mask
threshold) and the backend's name, so a re-exported bundle or another backend never meets stale features.
Written atomically by ``save`` (once a run, after every set is embedded); a damaged file is rebuilt, never
trusted. Without a folder the cache lives in memory only: the same batching, nothing kept.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ..atomic import atomic_write_bytes
from ..verifier import Face, FaceFeatures, Verifier

FORMAT = 1


class FeatureCache:
    def __init__(self, root: Path | None, verifier: Verifier) -> None:
        self.path = None if root is None else (
            Path(root) / f"features-v{FORMAT}-{verifier.bundle.digest[:16]}-{verifier.backend.name}.npz")
        self.verifier = verifier
        self._known: dict[str, FaceFeatures] = self._read()
        self._changed = False
        self.hits = 0
        self.misses = 0

    def _read(self) -> dict[str, FaceFeatures]:
        if self.path is None or not self.path.is_file():
            return {}
        try:
            with np.load(self.path, allow_pickle=False) as data:
                keys, probs, masked, full, partial = (data[k] for k in ("keys", "probs", "masked", "full", "partial"))
        except (OSError, ValueError, KeyError, zipfile.BadZipFile):
            return {}  # damaged or from another layout: embed again
        return {str(k): FaceFeatures(float(p), bool(m), f, q) for k, p, m, f, q in zip(keys, probs, masked, full, partial)}

    def features(self, paths: Sequence[Path], load: Callable[[Path], np.ndarray],
                 batch: int = 256, on_batch: Callable[[int], None] | None = None) -> list[FaceFeatures]:
        """Each image's features: from the cache, else embedded (a batch at a time, ``on_batch(n)`` after each);
        ``on_batch`` also hears of the cached ones, so that a progress bar reaches its total."""
        keys = _keys(paths)
        todo = [i for i, key in enumerate(keys) if key not in self._known]
        self.hits += len(paths) - len(todo)
        self.misses += len(todo)
        self._changed |= bool(todo)
        if on_batch is not None and len(paths) > len(todo):
            on_batch(len(paths) - len(todo))
        for start in range(0, len(todo), batch):
            chunk = todo[start : start + batch]
            for i, features in zip(chunk, self.verifier.features([Face(load(paths[i])) for i in chunk])):
                self._known[keys[i]] = features
            if on_batch is not None:
                on_batch(len(chunk))
        return [self._known[key] for key in keys]

    def save(self) -> None:
        """Write what was embedded since the file was read (nothing when nothing was, or without a folder)."""
        if self.path is None or not self._changed:
            return
        items = sorted(self._known.items())
        buffer = io.BytesIO()
        np.savez(buffer, keys=np.array([k for k, _ in items]),
                 probs=np.array([f.mask_probability for _, f in items], np.float32),
                 masked=np.array([f.masked for _, f in items], bool),
                 full=np.stack([f.full for _, f in items]).astype(np.float32),
                 partial=np.stack([f.partial for _, f in items]).astype(np.float32))
        atomic_write_bytes(self.path, buffer.getvalue())
        self._changed = False


def _keys(paths: Sequence[Path]) -> list[str]:
    """Each image's absolute path with its folders' links resolved, as the cache's key. A folder is resolved
    once, not once per image: resolving every one of 8,762 LFW paths took a second of a cached run."""
    folders: dict[Path, Path] = {}
    keys = []
    for path in map(Path, paths):
        folder = folders.get(path.parent)
        if folder is None:
            folder = folders[path.parent] = path.parent.resolve()
        keys.append(str(folder / path.name))
    return keys

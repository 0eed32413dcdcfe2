"""A gallery's faces as one ``.npz`` (``bfm-gallery export`` / ``import``): arrays and strings only, so that it
loads without pickle. Arrays: ``identity``, ``source``, ``mask_probability``, ``masked``, ``full``, ``partial``
(float32 embeddings), and the gallery's meta as ``meta_keys`` / ``meta_values``.
"""

from __future__ import annotations

import os

import numpy as np

from ..atomic import atomic_path
from ..errors import BfmError
from ..matching import unit
from .store_protocol import FaceRow, GalleryStore

ARRAYS = ("identity", "source", "mask_probability", "masked", "full", "partial", "meta_keys", "meta_values")


def export_faces(store: GalleryStore, path: str | os.PathLike[str], embedding_size: int) -> int:
    """Write every face of ``store`` to ``path`` (atomically); returns the count."""
    faces = list(store.faces())
    meta = store.meta()
    empty = np.zeros((0, embedding_size), np.float32)
    arrays = {
        "identity": np.array([f.identity for f in faces], dtype=str),
        "source": np.array([f.source for f in faces], dtype=str),
        "mask_probability": np.array([f.mask_probability for f in faces], np.float32),
        "masked": np.array([f.masked for f in faces], bool),
        "full": np.stack([f.full for f in faces]) if faces else empty,
        "partial": np.stack([f.partial for f in faces]) if faces else empty,
        "meta_keys": np.array(list(meta), dtype=str), "meta_values": np.array(list(meta.values()), dtype=str),
    }
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)  # type: ignore[arg-type]
    return len(faces)


def read_export(path: str | os.PathLike[str], embedding_size: int, meta: dict[str, str]) -> list[FaceRow]:
    """The faces of an export, as rows to store in a gallery whose meta is ``meta``; refused whole (a one-line
    error) when it is not an export, comes from another bundle or holds a malformed embedding."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError, KeyError) as exc:
        # numpy's own words for a pickle suggest loading it unsafely: never say that to a user
        reason = "not an npz archive of arrays" if "pickle" in str(exc) else str(exc).splitlines()[0][:160]
        raise BfmError(f"{path}: not a gallery export ({reason})") from None
    missing = [key for key in ARRAYS if key not in arrays]
    if missing:
        raise BfmError(f"{path}: not a gallery export (no {missing[0]!r} array)")
    faces = len(arrays["identity"])
    uneven = [key for key in ARRAYS[1:6] if arrays[key].ndim == 0 or len(arrays[key]) != faces]
    if uneven:
        raise BfmError(f"{path}: not a gallery export ({uneven[0]!r} does not hold one entry per face)")
    theirs = dict(zip(arrays["meta_keys"].tolist(), arrays["meta_values"].tolist()))
    if theirs.get("sha256_full") != meta.get("sha256_full") or theirs.get("sha256_partial") != meta.get("sha256_partial"):
        raise BfmError(f"{path}: exported from a gallery of another bundle ({theirs.get('bundle_name')!r}); its "
                       "embeddings cannot be compared with this gallery's")
    rows = []
    for i, name in enumerate(arrays["identity"].tolist()):
        full, partial = arrays["full"][i], arrays["partial"][i]
        for vector in (full, partial):
            if np.shape(vector) != (embedding_size,) or not np.all(np.isfinite(vector)):
                raise BfmError(f"{path}: face {i} ({name}) has a malformed embedding; nothing imported")
        rows.append((name, str(arrays["source"][i]), float(arrays["mask_probability"][i]),
                     bool(arrays["masked"][i]), unit(full), unit(partial)))
    return rows

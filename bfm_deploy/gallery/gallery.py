"""1:N identification with the paper's balanced matching.

Every enrolled face keeps both embeddings, E_F and E_P, and its mask state. A probe is compared with each
template the way a verified pair would be (``bfm_deploy.verifier``): both unmasked -> E_F scores, either
masked -> E_P scores, so a masked face is always matched partial-to-partial. The two routes' cosine scores
are not on one scale (each has its own calibrated threshold), so a template's score is reported as its
**margin** over its route's threshold: 0 is the verification decision boundary in both routes, and margins
of E_F and E_P matches can be ranked together. An identity's score is its best template's margin; the probe
is "unknown" when the best identity's margin is below the open-set threshold (``margin``, default 0: the
verification threshold of the route that matched).

Search is exact (one matrix product per route over every template, in memory): the matrices are built from
the database when the gallery opens.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..bundle import Bundle
from ..errors import BfmError
from ..verifier import FaceFeatures
from .store import SqliteStore

UNKNOWN = None


@dataclass(frozen=True)
class Candidate:
    identity: str
    margin: float  # score - threshold of the route: comparable across routes
    score: float  # cosine similarity on the route
    route: str  # "full" or "partial"
    face_id: int

    def to_dict(self) -> dict[str, Any]:
        return {"identity": self.identity, "margin": round(self.margin, 6), "score": round(self.score, 6),
                "route": self.route, "face_id": self.face_id}


@dataclass(frozen=True)
class Identification:
    identity: str | None  # None: unknown (best margin below the open-set threshold, or an empty gallery)
    candidates: list[Candidate] = field(default_factory=list)  # best first, one per identity
    masked: bool = False
    mask_probability: float = 0.0
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data = {"identity": self.identity, "masked": self.masked,
                "mask_probability": round(self.mask_probability, 6),
                "candidates": [c.to_dict() for c in self.candidates]}
        if self.note:
            data["note"] = self.note
        return data


def bundle_fingerprint(bundle: Bundle) -> dict[str, str]:
    """What a gallery's embeddings depend on: both extractors' files and the classifier's (mask states)."""
    return {"bundle_name": bundle.name, "embedding_size": str(bundle.embedding_size),
            **{f"sha256_{network}": bundle.models[network].sha256 for network in ("classifier", "full", "partial")}}


class Gallery:
    """An enrolled set of faces in a folder::

        with Gallery.open("people", bundle) as gallery:          # create=True makes a new one
            gallery.add("alice", features)                        # FaceFeatures of one or more faces
            result = gallery.identify(probe_features, top_k=5)
    """

    def __init__(self, store: SqliteStore, thresholds: dict[str, float], embedding_size: int) -> None:
        self.store = store
        self.thresholds = thresholds
        self.embedding_size = embedding_size
        self._stale = True  # the search matrices are rebuilt from the database on the next search

    @classmethod
    def open(cls, folder: str | os.PathLike[str], bundle: Bundle, create: bool = False) -> Gallery:
        store = SqliteStore(folder, create=create)
        expected = bundle_fingerprint(bundle)
        meta = store.meta()
        if "sha256_full" not in meta:
            store.set_meta(expected)
        else:
            differ = [key for key, value in expected.items() if key != "bundle_name" and meta.get(key) != value]
            if differ:
                store.close()
                raise BfmError(f"{Path(folder)}: enrolled with bundle {meta.get('bundle_name')!r}, whose "
                               f"{differ[0].removeprefix('sha256_')} differs from {bundle.name!r}'s; its embeddings "
                               "cannot be compared (enrol again with this bundle, or pass --bundle of the gallery's)")
        return cls(store, {route: bundle.threshold(route) for route in ("full", "partial")}, bundle.embedding_size)

    # -- contents ----------------------------------------------------------------------------------------

    def _load(self) -> None:
        if not self._stale:
            return
        self._stale = False
        faces = list(self.store.faces())
        size = self.embedding_size
        self._ids = np.array([f.id for f in faces], np.int64)
        self._names = [f.identity for f in faces]
        self._masked = np.array([f.masked for f in faces], bool)
        self._full = np.stack([f.full for f in faces]) if faces else np.zeros((0, size), np.float32)
        self._partial = np.stack([f.partial for f in faces]) if faces else np.zeros((0, size), np.float32)

    def __len__(self) -> int:
        return self.store.count()

    def identities(self) -> list[tuple[str, int, int]]:
        return self.store.identities()

    def add(self, identity: str, faces: Sequence[FaceFeatures], sources: Sequence[str] | None = None,
            extend: bool = False) -> list[int]:
        """Enrol ``faces`` of ``identity`` in one transaction; returns their face ids. An identity already in
        the gallery is refused unless ``extend`` (more faces of the same person)."""
        identity = identity.strip()
        if not identity:
            raise BfmError("an identity must be a non-empty name")
        if not faces:
            raise BfmError(f"{identity}: no faces to enrol")
        if not extend and self.store.has_identity(identity):
            raise BfmError(f"{identity} is already enrolled (add faces with --extend, or remove it first)")
        sources = list(sources) if sources is not None else [""] * len(faces)
        rows = []
        for face, source in zip(faces, sources):
            for name, vector in (("full", face.full), ("partial", face.partial)):
                if np.shape(vector) != (self.embedding_size,):
                    raise BfmError(f"{identity}: a {name} embedding must have {self.embedding_size} values, "
                                   f"got shape {np.shape(vector)}")
                if not np.all(np.isfinite(vector)):
                    raise BfmError(f"{identity}: a {name} embedding holds NaN or infinity")
            rows.append((identity, source, face.mask_probability, face.masked, _unit(face.full), _unit(face.partial)))
        ids = self.store.add(rows)
        self._stale = True
        return ids

    def remove(self, identity: str) -> int:
        """Remove every face of ``identity``; returns how many."""
        removed = self.store.remove_identity(identity)
        if not removed:
            raise BfmError(f"{identity} is not enrolled")
        self._stale = True
        return removed

    # -- search ------------------------------------------------------------------------------------------

    def margins(self, probe: FaceFeatures) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every template's (margin, cosine score, E_P-route flag) against ``probe``, balanced as in
        verification: a template is compared on E_P when it or the probe is masked."""
        self._load()
        partial = self._masked | probe.masked
        scores = np.where(partial, self._partial @ _unit(probe.partial), self._full @ _unit(probe.full))
        thresholds = np.where(partial, self.thresholds["partial"], self.thresholds["full"])
        return (scores - thresholds).astype(np.float32), scores.astype(np.float32), partial

    def identify(self, probe: FaceFeatures, top_k: int = 5, margin: float = 0.0, note: str | None = None) -> Identification:
        """The ``top_k`` best identities for ``probe`` (one candidate each, its best template), and the
        decision: the best identity when its margin reaches ``margin``, else unknown."""
        if top_k < 1:
            raise BfmError(f"top_k must be at least 1, got {top_k}")
        margins, scores, partial = self.margins(probe)
        if not len(margins):
            return Identification(UNKNOWN, [], probe.masked, probe.mask_probability, note)
        order = np.argsort(-margins, kind="stable")
        candidates: list[Candidate] = []
        seen: set[str] = set()
        for i in order:
            name = self._names[i]
            if name in seen:
                continue
            seen.add(name)
            candidates.append(Candidate(name, float(margins[i]), float(scores[i]),
                                        "partial" if partial[i] else "full", int(self._ids[i])))
            if len(candidates) == top_k:
                break
        best = candidates[0]
        identity = best.identity if best.margin >= margin else UNKNOWN
        return Identification(identity, candidates, probe.masked, probe.mask_probability, note)

    # -- export / import ---------------------------------------------------------------------------------

    def export(self, path: str | os.PathLike[str]) -> int:
        """Write every face to a ``.npz`` (arrays and strings only: it loads without pickle); returns the count."""
        from ..atomic import atomic_path

        faces = list(self.store.faces())
        meta = self.store.meta()
        size = self.embedding_size
        arrays = {
            "identity": np.array([f.identity for f in faces], dtype=str),
            "source": np.array([f.source for f in faces], dtype=str),
            "mask_probability": np.array([f.mask_probability for f in faces], np.float32),
            "masked": np.array([f.masked for f in faces], bool),
            "full": np.stack([f.full for f in faces]) if faces else np.zeros((0, size), np.float32),
            "partial": np.stack([f.partial for f in faces]) if faces else np.zeros((0, size), np.float32),
            "meta_keys": np.array(list(meta), dtype=str), "meta_values": np.array(list(meta.values()), dtype=str),
        }
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, **arrays)
        return len(faces)

    def import_(self, path: str | os.PathLike[str]) -> int:
        """Add the faces of an exported ``.npz`` in one transaction (identities already here are refused)."""
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {key: data[key] for key in data.files}
        except (OSError, ValueError, KeyError) as exc:
            raise BfmError(f"{path}: not a gallery export ({exc})") from None
        needed = ("identity", "source", "mask_probability", "masked", "full", "partial", "meta_keys", "meta_values")
        missing = [key for key in needed if key not in arrays]
        if missing:
            raise BfmError(f"{path}: not a gallery export (no {missing[0]!r} array)")
        meta = dict(zip(arrays["meta_keys"].tolist(), arrays["meta_values"].tolist()))
        mine = self.store.meta()
        if meta.get("sha256_full") != mine.get("sha256_full") or meta.get("sha256_partial") != mine.get("sha256_partial"):
            raise BfmError(f"{path}: exported from a gallery of another bundle ({meta.get('bundle_name')!r}); its "
                           "embeddings cannot be compared with this gallery's")
        names = arrays["identity"].tolist()
        clash = sorted({n for n in names if self.store.has_identity(n)})
        if clash:
            raise BfmError(f"{path}: {clash[0]} is already enrolled here ({len(clash)} identities clash); nothing imported")
        rows = []
        for i, name in enumerate(names):
            face = FaceFeatures(float(arrays["mask_probability"][i]), bool(arrays["masked"][i]),
                                arrays["full"][i], arrays["partial"][i])
            for vector in (face.full, face.partial):
                if np.shape(vector) != (self.embedding_size,) or not np.all(np.isfinite(vector)):
                    raise BfmError(f"{path}: face {i} ({name}) has a malformed embedding; nothing imported")
            rows.append((name, str(arrays["source"][i]), face.mask_probability, face.masked,
                         _unit(face.full), _unit(face.partial)))
        self.store.add(rows)
        self._stale = True
        return len(rows)

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Gallery:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _unit(vector: np.ndarray) -> np.ndarray:
    v = np.asarray(vector, np.float32)
    return (v / max(float(np.linalg.norm(v)), 1e-12)).astype(np.float32)

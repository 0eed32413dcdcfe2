"""1:N identification with the paper's balanced matching.

Every enrolled face keeps both embeddings, E_F and E_P, and its mask state. A probe is compared with each
template the way a verified pair would be (``bfm_deploy.verifier``): both unmasked -> E_F scores, either
masked -> E_P scores, so a masked face is always matched partial-to-partial. The two routes' cosine scores
are not on one scale, so a template's score is reported as its **margin** over its route's verification
threshold (the bundle's, calibrated per route on labelled pairs): 0 is the verification decision boundary in
both routes.

**Open set.** The probe is "unknown" when its best candidate's margin is below the open-set threshold of
that candidate's route. ``bfm-gallery calibrate`` sets one per route at a target false positive
identification rate, measured with identities of LFW folds 1-5 (never the test folds 6-10): on E_F alone
for unmasked faces, on E_P alone for masked probes and a masked gallery (the larger of the two). Per route,
because the margins are not exchangeable: at FPIR 1% on folds 1-5 the E_P margin sits ~0.05 above the E_F
one. Candidates are ranked by their margin over their route's open-set threshold, so ranking and decision
agree. Uncalibrated, the open-set threshold is 0 (the verification threshold of each route).

**Search**: the rule is ``bfm_deploy.matching`` (also what the LFW identification evaluation ranks with): three
structures, one per way a template is matched (E_F of unmasked faces, E_P of unmasked faces, E_P of masked
faces); an unmasked probe searches the first and the third, a masked probe the last two. Each is exact up to
``EXACT_LIMIT`` templates and a FAISS IVF index above it (``index_cache.py``: saved in ``FOLDER/index/``,
brought up to date from the database before each search), or in PostgreSQL the database's own search.

The parts: the store (``store_protocol.GalleryStore``: ``SqliteStore``, ``PgStore``), its search structures
(``index_cache.py``) and the ``.npz`` export (``npz_io.py``); ``Gallery`` ties them to a bundle.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..bundle import Bundle
from ..errors import BfmError
from ..matching import ROUTES, Searcher, match, unit
from ..verifier import FaceFeatures
from .index import EXACT_LIMIT
from .index_cache import DatabaseSearch, IndexCache
from .npz_io import export_faces, read_export
from .store import NotEnrolled, SqliteStore
from .store_protocol import EmbeddedStore, GalleryStore, SearchingStore

UNKNOWN = None
OPEN_SET_KEYS = ("open_set_full", "open_set_partial", "open_set_fpir", "open_set_calibration")


@dataclass(frozen=True)
class Candidate:
    identity: str
    margin: float  # score - threshold of the route: comparable across routes
    score: float  # cosine similarity on the route
    route: str  # "full" or "partial"
    face_id: int
    over_open_set: float = 0.0  # margin - the route's open-set threshold: >= 0 is a match; the ranking key

    def to_dict(self) -> dict[str, Any]:
        return {"identity": self.identity, "margin": round(self.margin, 6), "score": round(self.score, 6),
                "route": self.route, "face_id": self.face_id, "over_open_set": round(self.over_open_set, 6)}


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



MAX_IDENTITY_LENGTH = 256


def check_identity(name: str) -> str:
    """An identity name as every front end (Python, ``bfm-gallery``, ``bfm-serve``) enrols it: stripped, and
    refused unless it can be stored, printed and removed again everywhere. So no control characters (a NUL
    ends a C string), no lone surrogates (not UTF-8: the stores cannot encode them), not ``.`` or ``..`` (an URL
    path normalises them away, so ``DELETE /v1/gallery/identities/..`` could never reach them)."""
    if not isinstance(name, str):
        raise BfmError(f"an identity must be a string, got {type(name).__name__}")
    name = name.strip()
    if not name:
        raise BfmError("an identity must be a non-empty name")
    if len(name) > MAX_IDENTITY_LENGTH:
        raise BfmError(f"an identity name has at most {MAX_IDENTITY_LENGTH} characters, got {len(name)}")
    if name in (".", ".."):
        raise BfmError(f"{name!r} cannot be an identity name (URL paths drop it)")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise BfmError(f"identity {name.encode('unicode_escape').decode()!r} holds a control character")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise BfmError(f"identity {name.encode('utf-8', 'backslashreplace').decode()!r} is not valid Unicode "
                       "(a lone surrogate)") from None
    return name



class Gallery:
    """An enrolled set of faces in a folder::

        with Gallery.open("people", bundle) as gallery:          # create=True makes a new one
            gallery.add("alice", features)                        # FaceFeatures of one or more faces
            result = gallery.identify(probe_features, top_k=5)
    """

    def __init__(self, store: GalleryStore, thresholds: dict[str, float], embedding_size: int,
                 exact_limit: int = EXACT_LIMIT) -> None:
        self.store = store
        self.thresholds = thresholds
        self.embedding_size = embedding_size
        self.notes: list[str] = []  # what opening the gallery had to repair (an index rebuilt), for the caller
        self._search: IndexCache | DatabaseSearch
        if isinstance(store, SearchingStore):
            self._search = DatabaseSearch(store, exact_limit)
        elif isinstance(store, EmbeddedStore):
            self._search = IndexCache(store, embedding_size, exact_limit, self.notes)
        else:
            raise TypeError(f"{type(store).__name__} is not a gallery store")

    @classmethod
    def open(cls, folder: str | os.PathLike[str], bundle: Bundle, create: bool = False,
             exact_limit: int = EXACT_LIMIT) -> Gallery:
        """``folder``: the embedded store's folder, or a PostgreSQL connection string (``postgresql://...``)."""
        from .pg import PgStore, is_dsn

        store: GalleryStore = (PgStore(str(folder), bundle.embedding_size, create=create) if is_dsn(folder)
                               else SqliteStore(folder, create=create))
        expected = bundle_fingerprint(bundle)
        meta = store.meta()
        if "sha256_full" not in meta:
            store.set_meta(expected)
        else:
            differ = [key for key, value in expected.items() if key != "bundle_name" and meta.get(key) != value]
            if differ:
                store.close()
                raise BfmError(f"{store.location}: enrolled with bundle {meta.get('bundle_name')!r}, whose "
                               f"{differ[0].removeprefix('sha256_')} differs from {bundle.name!r}'s; its embeddings "
                               "cannot be compared (enrol again with this bundle, or pass --bundle of the gallery's)")
        return cls(store, {route: bundle.threshold(route) for route in ROUTES}, bundle.embedding_size, exact_limit)

    # -- open-set thresholds -----------------------------------------------------------------------------

    def open_set(self) -> dict[str, Any]:
        """Per route, the open-set threshold on the margin (0 when uncalibrated), and how it was set."""
        meta = self.store.meta()
        if "open_set_full" not in meta:
            return {"full": 0.0, "partial": 0.0, "fpir": None, "calibration": "none: the verification thresholds"}
        return {"full": float(meta["open_set_full"]), "partial": float(meta["open_set_partial"]),
                "fpir": float(meta["open_set_fpir"]), "calibration": meta["open_set_calibration"]}

    def set_open_set(self, full: float, partial: float, fpir: float, calibration: str) -> None:
        for name, value in (("full", full), ("partial", partial), ("fpir", fpir)):
            if not np.isfinite(value):
                raise BfmError(f"open-set {name} must be a finite number, got {value}")
        self.store.set_meta({"open_set_full": repr(float(full)), "open_set_partial": repr(float(partial)),
                             "open_set_fpir": repr(float(fpir)), "open_set_calibration": calibration})

    # -- contents ----------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return self.store.count()

    def identities(self) -> list[tuple[str, int, int]]:
        return self.store.identities()

    def add(self, identity: str, faces: Sequence[FaceFeatures], sources: Sequence[str] | None = None,
            extend: bool = False) -> list[int]:
        """Enrol ``faces`` of ``identity`` in one transaction; returns their face ids. An identity already in
        the gallery is refused unless ``extend`` (more faces of the same person)."""
        identity = check_identity(identity)
        if not faces:
            raise BfmError(f"{identity}: no faces to enrol")
        sources = list(sources) if sources is not None else [""] * len(faces)
        rows = []
        for face, source in zip(faces, sources):
            self._check_embeddings(identity, face)
            rows.append((identity, source, face.mask_probability, face.masked, unit(face.full), unit(face.partial)))
        return self.store.add(rows, refuse_enrolled=not extend)  # the search catches up before the next search

    def _check_embeddings(self, what: str, face: FaceFeatures) -> None:
        for name, vector in (("full", face.full), ("partial", face.partial)):
            if np.shape(vector) != (self.embedding_size,):
                raise BfmError(f"{what}: a {name} embedding must have {self.embedding_size} values, "
                               f"got shape {np.shape(vector)}")
            if not np.all(np.isfinite(vector)):
                raise BfmError(f"{what}: a {name} embedding holds NaN or infinity")

    def remove(self, identity: str) -> int:
        """Remove every face of ``identity``; returns how many."""
        try:
            identity = check_identity(identity)
        except BfmError:
            raise NotEnrolled(f"{identity!r} is not enrolled (no such name can be)") from None
        removed = self.store.remove_identity(identity)
        if not removed:
            raise NotEnrolled(f"{identity} is not enrolled")
        return removed

    # -- search structures -------------------------------------------------------------------------------

    @property
    def exact_limit(self) -> int:
        """Templates a structure searches exactly; above it, an approximate index."""
        return self._search.exact_limit

    def _sync(self) -> Mapping[str, Searcher]:
        """The search structures, up to date with the store (``bfm-bench --gallery-scale`` sizes them)."""
        return self._search.structures()

    def reset_search(self, exact_limit: int | None = None) -> None:
        """Drop the search structures (rebuilt on the next search, from the saved index or the database)."""
        self._search.reset(exact_limit)

    def index_kinds(self) -> dict[str, str]:
        """Each structure's search: ``exact``, ``ivf`` or ``pgvector``."""
        return {name: s.kind for name, s in self._sync().items()}

    def save_index(self) -> None:
        """Write the IVF indexes when they hold more than the saved ones (``index_cache.IndexCache.save``)."""
        self._search.save()

    # -- search ------------------------------------------------------------------------------------------

    def identify(self, probe: FaceFeatures, top_k: int = 5, margin: float | None = None,
                 note: str | None = None) -> Identification:
        """The ``top_k`` best identities for ``probe`` (one candidate each, its best template) and the decision:
        the best identity when its margin reaches the open-set threshold of its route (the calibrated ones;
        ``margin`` sets one for both routes), else unknown."""
        return self.identify_many([probe], top_k, margin, [note])[0]

    def identify_many(self, probes: Sequence[FaceFeatures], top_k: int = 5, margin: float | None = None,
                      notes: Sequence[str | None] | None = None) -> list[Identification]:
        """``identify`` of each probe, searched as one batch: the same answers, probe for probe."""
        if top_k < 1:
            raise BfmError(f"top_k must be at least 1, got {top_k}")
        structures = self._sync()
        if margin is None:
            calibrated = self.open_set()
            open_set = {route: calibrated[route] for route in ROUTES}
        else:
            open_set = {route: float(margin) for route in ROUTES}
        if not probes:
            return []
        for i, probe in enumerate(probes):
            self._check_embeddings(f"probe {i}", probe)
        found = match(unit(np.stack([p.full for p in probes])), unit(np.stack([p.partial for p in probes])),
                      np.array([p.masked for p in probes], bool), structures, self.store.names, self.thresholds,
                      open_set, top_k)
        results = []
        for i, probe in enumerate(probes):
            candidates = [Candidate(found.identity[i, j], float(found.margin[i, j]), float(found.score[i, j]),
                                    ROUTES[found.route[i, j]], int(found.face_id[i, j]), float(found.over_open_set[i, j]))
                          for j in range(found.count[i])]
            best = candidates[0] if candidates else None
            identity = best.identity if best is not None and best.over_open_set >= 0 else UNKNOWN
            results.append(Identification(identity, candidates, probe.masked, probe.mask_probability,
                                          notes[i] if notes is not None else None))
        return results

    # -- export / import ---------------------------------------------------------------------------------

    def export(self, path: str | os.PathLike[str]) -> int:
        """Write every face to a ``.npz`` (``npz_io``: it loads without pickle); returns the count."""
        return export_faces(self.store, path, self.embedding_size)

    def import_(self, path: str | os.PathLike[str]) -> int:
        """Add the faces of an exported ``.npz`` in one transaction (identities already here are refused)."""
        rows = read_export(path, self.embedding_size, self.store.meta())
        self.store.add(rows, refuse_enrolled=True)
        return len(rows)

    def close(self) -> None:
        try:
            self._search.close()
        finally:
            self.store.close()

    def __enter__(self) -> Gallery:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

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

**Search** (``index.py``): three structures, one per way a template is matched (E_F of unmasked faces, E_P
of unmasked faces, E_P of masked faces): an unmasked probe searches the first and the third, a masked probe
the last two. Each is exact up to ``EXACT_LIMIT`` templates and a FAISS IVF index above it, saved in
``FOLDER/index/`` and brought up to date from the database (new faces, logged removals) before each search.
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
from ..verifier import FaceFeatures, l2_normalise
from .index import EXACT_LIMIT, ExactIndex, IvfIndex
from .store import STRUCTURES, NotEnrolled, SqliteStore

UNKNOWN = None
ROUTES = ("full", "partial")
INDEX_DIR, INDEX_STATE, INDEX_FORMAT = "index", "index.json", "bfm-gallery-index/1"
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

    def __init__(self, store: Any, thresholds: dict[str, float], embedding_size: int,
                 exact_limit: int = EXACT_LIMIT) -> None:
        self.store = store
        self.thresholds = thresholds
        self.embedding_size = embedding_size
        self.exact_limit = exact_limit
        self.notes: list[str] = []  # what opening the gallery had to repair (an index rebuilt), for the caller
        self._structures: dict[str, ExactIndex | IvfIndex] | None = None
        self._covered = (0, 0)  # (last face id, last removal) the structures hold
        self._saved: tuple[int, int] | None = None  # what the saved index files cover

    @classmethod
    def open(cls, folder: str | os.PathLike[str], bundle: Bundle, create: bool = False,
             exact_limit: int = EXACT_LIMIT) -> Gallery:
        """``folder``: the embedded store's folder, or a PostgreSQL connection string (``postgresql://...``)."""
        from .pg import PgStore, is_dsn

        store: Any = (PgStore(str(folder), bundle.embedding_size, create=create) if is_dsn(folder)
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
            for name, vector in (("full", face.full), ("partial", face.partial)):
                if np.shape(vector) != (self.embedding_size,):
                    raise BfmError(f"{identity}: a {name} embedding must have {self.embedding_size} values, "
                                   f"got shape {np.shape(vector)}")
                if not np.all(np.isfinite(vector)):
                    raise BfmError(f"{identity}: a {name} embedding holds NaN or infinity")
            rows.append((identity, source, face.mask_probability, face.masked, _unit(face.full), _unit(face.partial)))
        return self.store.add(rows, refuse_enrolled=not extend)  # the search catches up before the next search

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

    def _index_dir(self) -> Path:
        return self.store.folder / INDEX_DIR

    def _load_saved(self) -> dict[str, ExactIndex | IvfIndex] | None:
        """The saved IVF indexes (and exact structures refilled to the same point), or None without any."""
        import json

        state_path = self._index_dir() / INDEX_STATE
        if not state_path.is_file():
            return None
        try:
            state = json.loads(state_path.read_text())
            if state.get("format") != INDEX_FORMAT:
                raise BfmError(f"format {state.get('format')!r}")
            covered = (int(state["face_id"]), int(state["removed"]))
            files = dict(state["files"])
            structures: dict[str, ExactIndex | IvfIndex] = {}
            for name in STRUCTURES:
                if name in files:
                    structures[name] = IvfIndex.read(self._index_dir() / files[name], self.embedding_size)
        except (OSError, ValueError, KeyError, TypeError, BfmError) as exc:
            self.notes.append(f"{state_path.parent}: index unreadable ({str(exc).splitlines()[0][:160]}); "
                              "rebuilt from the database, nothing lost")
            return None
        if covered[0] > self.store.position()[0]:
            self.notes.append(f"{state_path.parent}: index ahead of the database; rebuilt from it")
            return None
        removed = self.store.removed_after(0)
        for name, (route, masked) in STRUCTURES.items():
            if name not in structures:  # exact: refilled from the database to the saved point
                exact = structures[name] = ExactIndex(self.embedding_size)
                for ids, vectors in self.store.vectors_after(0, covered[0], route, masked):
                    exact.add(ids, vectors)
                exact.remove(removed)
        self._covered = self._saved = covered
        return structures

    def _sync(self) -> dict[str, ExactIndex | IvfIndex]:
        """Bring the structures up to the database: faces enrolled and removed since they were built (by this
        process or another), then an IVF index for a structure past ``exact_limit``."""
        if self.store.searches_itself:
            return self.store.structures(self.exact_limit)  # type: ignore[no-any-return]
        if self._structures is None:
            self._structures = self._load_saved() or {name: ExactIndex(self.embedding_size) for name in STRUCTURES}
        position = self.store.position()
        if position == self._covered:
            return self._structures
        last_id, last_removed = self._covered
        removed = self.store.removed_after(last_removed)
        for name, (route, masked) in STRUCTURES.items():
            structure = self._structures[name]
            for ids, vectors in self.store.vectors_after(last_id, position[0], route, masked):
                structure.add(ids, vectors)
            structure.remove(removed)
            if isinstance(structure, ExactIndex) and len(structure) > self.exact_limit:
                self._structures[name] = IvfIndex.train(*structure.vectors())
        self._covered = position
        return self._structures

    def reset_search(self, exact_limit: int | None = None) -> None:
        """Drop the search structures (rebuilt on the next search, from the saved index or the database)."""
        self._structures, self._covered, self._saved = None, (0, 0), None
        if exact_limit is not None:
            self.exact_limit = exact_limit

    def index_kinds(self) -> dict[str, str]:
        """Each structure's search: ``exact`` or ``ivf``."""
        return {name: s.kind for name, s in self._sync().items()}

    def save_index(self) -> None:
        """Write the IVF indexes (new files, then ``index.json`` naming them: the rename is the commit) when
        they hold more than the saved ones; exact structures need no file."""
        import json
        import secrets

        from ..atomic import atomic_write_text

        structures = self._sync()
        ivf = {name: s for name, s in structures.items() if isinstance(s, IvfIndex)}
        if not ivf or self._saved == self._covered:
            return
        folder = self._index_dir()
        folder.mkdir(exist_ok=True)
        tag = secrets.token_hex(4)
        files = {name: f"{name}.{tag}.faiss" for name in ivf}
        for name, index in ivf.items():
            index.write(folder / files[name])
        atomic_write_text(folder / INDEX_STATE, json.dumps(
            {"format": INDEX_FORMAT, "face_id": self._covered[0], "removed": self._covered[1], "files": files}, indent=1))
        for old in folder.glob("*.faiss"):
            if old.name not in files.values():
                old.unlink(missing_ok=True)
        self._saved = self._covered

    # -- search ------------------------------------------------------------------------------------------

    def _searches(self, probe: FaceFeatures) -> list[tuple[str, str, np.ndarray]]:
        """(structure, route, query) pairs for ``probe``: balanced as in verification."""
        partial = _unit(probe.partial)
        if probe.masked:
            return [("partial_unmasked", "partial", partial), ("partial_masked", "partial", partial)]
        return [("full_unmasked", "full", _unit(probe.full)), ("partial_masked", "partial", partial)]

    def identify(self, probe: FaceFeatures, top_k: int = 5, margin: float | None = None,
                 note: str | None = None) -> Identification:
        """The ``top_k`` best identities for ``probe`` (one candidate each, its best template) and the decision:
        the best identity when its margin reaches the open-set threshold of its route (the calibrated ones;
        ``margin`` sets one for both routes), else unknown."""
        if top_k < 1:
            raise BfmError(f"top_k must be at least 1, got {top_k}")
        structures = self._sync()
        if margin is None:
            calibrated = self.open_set()
            open_set = {route: calibrated[route] for route in ROUTES}
        else:
            open_set = {route: float(margin) for route in ROUTES}
        searches = self._searches(probe)
        # the templates the searches hold are counted (a query per structure in PostgreSQL) only when the first
        # round leaves the list short
        total: int | None = None
        k = 4 * top_k + 16
        while True:
            found: list[tuple[float, float, float, str, int]] = []  # (key, margin, score, route, id)
            for name, route, query in searches:
                scores, ids = structures[name].search(query, k)
                for score, face_id in zip(scores.tolist(), ids.tolist()):
                    m = score - self.thresholds[route]
                    found.append((m - open_set[route], m, score, route, face_id))
            found.sort(key=lambda row: (-row[0], row[4]))
            names = self.store.names([row[4] for row in found])
            candidates: list[Candidate] = []
            seen: set[str] = set()
            for key, m, score, route, face_id in found:
                name = names.get(face_id)
                if name is None or name in seen:
                    continue
                seen.add(name)
                candidates.append(Candidate(name, float(m), float(score), route, int(face_id), float(key)))
                if len(candidates) == top_k:
                    break
            if len(candidates) == top_k:
                break
            if total is None:
                total = sum(len(structures[name]) for name, _, _ in searches)
            if k >= total:
                break
            k = min(total, 4 * k)  # identities with many faces filled the list: look further
        if not candidates:
            return Identification(UNKNOWN, [], probe.masked, probe.mask_probability, note)
        best = candidates[0]
        identity = best.identity if best.over_open_set >= 0 else UNKNOWN
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
                np.savez(fh, **arrays)  # type: ignore[arg-type]
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
        rows = []
        for i, name in enumerate(names):
            face = FaceFeatures(float(arrays["mask_probability"][i]), bool(arrays["masked"][i]),
                                arrays["full"][i], arrays["partial"][i])
            for vector in (face.full, face.partial):
                if np.shape(vector) != (self.embedding_size,) or not np.all(np.isfinite(vector)):
                    raise BfmError(f"{path}: face {i} ({name}) has a malformed embedding; nothing imported")
            rows.append((name, str(arrays["source"][i]), face.mask_probability, face.masked,
                         _unit(face.full), _unit(face.partial)))
        self.store.add(rows, refuse_enrolled=True)
        return len(rows)

    def close(self) -> None:
        try:
            if self._structures is not None:
                self.save_index()
        finally:
            self.store.close()

    def __enter__(self) -> Gallery:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _unit(vector: np.ndarray) -> np.ndarray:
    return l2_normalise(np.asarray(vector, np.float32)[None])[0]

"""A gallery's search structures (``matching.STRUCTURES``), kept up to date with its store.

Embedded (``IndexCache``): each structure is exact up to ``exact_limit`` templates and a FAISS IVF index above it
(``index.py``). The IVF indexes are saved in ``FOLDER/index/`` (new files, then ``index.json`` naming them and
the last face id and removal they cover: the rename is the commit); the database is the gallery and they are a
cache of it, brought up to date from it (new faces, logged removals) before each search and rebuilt from it when
unreadable or ahead of it. In PostgreSQL (``DatabaseSearch``) the database searches itself.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_text
from ..errors import BfmError
from ..json_fields import Fields, Where
from ..matching import STRUCTURES, ExactIndex, Searcher
from .index import IvfIndex
from .store_protocol import EmbeddedStore, SearchingStore

INDEX_DIR, INDEX_STATE, INDEX_FORMAT = "index", "index.json", "bfm-gallery-index/1"
REBUILT = "rebuilt from the database, nothing lost"


@dataclass(frozen=True)
class IndexState:
    """``index/index.json``: which saved IVF file holds each structure, and the last face id and removal they
    cover (the schema of ``manifest.py``'s kind: ``from_dict`` refuses a missing or mistyped field in one line)."""

    face_id: int
    removed: int
    files: dict[str, str]  # structure name -> file name inside the index folder

    @classmethod
    def from_dict(cls, obj: Any, source: str) -> IndexState:
        f = Fields.of(obj, Where(source, remedy=REBUILT))
        if f.text("format") != INDEX_FORMAT:
            raise f.fail("format", f"must be '{INDEX_FORMAT}', got {obj['format']!r}")
        files = f.child("files")
        names = {name: files.file_name(name) for name in STRUCTURES if files.has(name)}
        if files.rest():
            raise files.fail(next(iter(files.rest())), "is not a search structure")
        return cls(f.integer("face_id"), f.integer("removed"), names)

    def to_dict(self) -> dict[str, Any]:
        return {"format": INDEX_FORMAT, "face_id": self.face_id, "removed": self.removed, "files": dict(self.files)}


class IndexCache:
    def __init__(self, store: EmbeddedStore, embedding_size: int, exact_limit: int, notes: list[str]) -> None:
        self.store = store
        self.embedding_size = embedding_size
        self.exact_limit = exact_limit
        self.notes = notes  # the gallery's: what had to be repaired (an index rebuilt), for the caller
        self._structures: dict[str, ExactIndex | IvfIndex] | None = None
        self._covered = (0, 0)  # (last face id, last removal) the structures hold
        self._saved: tuple[int, int] | None = None  # what the saved index files cover

    @property
    def folder(self) -> Path:
        return self.store.folder / INDEX_DIR

    def structures(self) -> Mapping[str, Searcher]:
        """The structures, brought up to the database: faces enrolled and removed since they were built (by
        this process or another), then an IVF index for a structure past ``exact_limit``."""
        return self._sync()

    def _sync(self) -> dict[str, ExactIndex | IvfIndex]:
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

    def _load_saved(self) -> dict[str, ExactIndex | IvfIndex] | None:
        """The saved IVF indexes (and exact structures refilled to the same point), or None without any."""
        state_path = self.folder / INDEX_STATE
        if not state_path.is_file():
            return None
        try:
            state = IndexState.from_dict(json.loads(state_path.read_text()), INDEX_STATE)
            covered = (state.face_id, state.removed)
            structures: dict[str, ExactIndex | IvfIndex] = {
                name: IvfIndex.read(self.folder / file, self.embedding_size) for name, file in state.files.items()}
        except (OSError, ValueError, BfmError) as exc:
            reason = str(exc).splitlines()[0].removesuffix(f"; {REBUILT}")[:160]
            self.notes.append(f"{state_path.parent}: index unreadable ({reason}); {REBUILT}")
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

    def reset(self, exact_limit: int | None = None) -> None:
        """Drop the structures (rebuilt on the next search, from the saved index or the database)."""
        self._structures, self._covered, self._saved = None, (0, 0), None
        if exact_limit is not None:
            self.exact_limit = exact_limit

    def save(self) -> None:
        """Write the IVF indexes when they hold more than the saved ones; exact structures need no file."""
        structures = self._sync()
        ivf = {name: s for name, s in structures.items() if isinstance(s, IvfIndex)}
        if not ivf or self._saved == self._covered:
            return
        folder = self.folder
        folder.mkdir(exist_ok=True)
        tag = secrets.token_hex(4)
        files = {name: f"{name}.{tag}.faiss" for name in ivf}
        for name, index in ivf.items():
            index.write(folder / files[name])
        state = IndexState(self._covered[0], self._covered[1], files)
        atomic_write_text(folder / INDEX_STATE, json.dumps(state.to_dict(), indent=1))
        for old in folder.glob("*.faiss"):
            if old.name not in files.values():
                old.unlink(missing_ok=True)
        self._saved = self._covered

    def close(self) -> None:
        """Save what a search built (nothing when nothing searched)."""
        if self._structures is not None:
            self.save()


class DatabaseSearch:
    """The structures of a store that searches itself: nothing kept here, nothing to save."""

    def __init__(self, store: SearchingStore, exact_limit: int) -> None:
        self.store = store
        self.exact_limit = exact_limit

    def structures(self) -> Mapping[str, Searcher]:
        return self.store.structures(self.exact_limit)

    def reset(self, exact_limit: int | None = None) -> None:
        if exact_limit is not None:
            self.exact_limit = exact_limit

    def save(self) -> None:
        pass

    def close(self) -> None:
        pass

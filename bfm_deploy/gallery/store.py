"""The gallery's storage: one SQLite file holding every enrolled face, its two embeddings and its mask state.

SQLite in WAL mode with one transaction per enrolment: a process killed mid-enrol (kill -9, power loss) leaves
the database as it was before that enrolment began, and the next open sees every enrolment that returned. The
embeddings live beside their metadata as float32 blobs, so the file is the whole gallery; the search matrices
are built from it when the gallery opens.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BfmError

SCHEMA_VERSION = 1
DATABASE_NAME = "gallery.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS faces (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    identity TEXT NOT NULL,
    source TEXT NOT NULL,
    mask_probability REAL NOT NULL,
    masked INTEGER NOT NULL,
    full BLOB NOT NULL,
    partial BLOB NOT NULL,
    enrolled REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS faces_identity ON faces (identity);
CREATE TABLE IF NOT EXISTS removed (seq INTEGER PRIMARY KEY AUTOINCREMENT, face_id INTEGER NOT NULL);
"""


@dataclass(frozen=True)
class StoredFace:
    id: int
    identity: str
    source: str
    mask_probability: float
    masked: bool
    full: np.ndarray
    partial: np.ndarray


class SqliteStore:
    """Faces in ``FOLDER/gallery.sqlite``. ``meta`` holds what the gallery was built with (the bundle's
    extractors, the embedding size): a gallery's embeddings mean nothing to another bundle."""

    searches_itself = False  # the gallery keeps search structures built from it (PgStore searches in the database)

    def __init__(self, folder: str | os.PathLike[str], create: bool = False) -> None:
        self.folder = Path(folder)
        self.location = str(self.folder)
        self.path = self.folder / DATABASE_NAME
        if not self.path.is_file():
            if not create:
                raise BfmError(f"{self.folder}: no gallery here (enrol a face to create one)")
            self.folder.mkdir(parents=True, exist_ok=True)
        try:
            # isolation_level=None: transactions are opened explicitly (BEGIN IMMEDIATE) where a write happens
            self._db = sqlite3.connect(self.path, isolation_level=None, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")  # an enrolment that returned survives power loss
            self._db.executescript(_SCHEMA)
            self._db.execute("SELECT count(*) FROM faces").fetchone()
            integrity = self._db.execute("PRAGMA quick_check").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            raise BfmError(f"{self.path}: not a readable gallery database ({exc})") from None
        if integrity != "ok":
            raise BfmError(f"{self.path}: the gallery database is damaged ({integrity})")
        version = self.meta().get("schema_version")
        if version is None:
            self.set_meta({"schema_version": str(SCHEMA_VERSION)})
        elif version != str(SCHEMA_VERSION):
            raise BfmError(f"{self.path}: gallery schema {version}, this bfm reads {SCHEMA_VERSION}")

    def meta(self) -> dict[str, str]:
        return dict(self._db.execute("SELECT key, value FROM meta").fetchall())

    def set_meta(self, values: dict[str, str]) -> None:
        with self._transaction():
            self._db.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", values.items())

    def add(self, rows: list[tuple[str, str, float, bool, np.ndarray, np.ndarray]], refuse_enrolled: bool = False) -> list[int]:
        """Insert faces ``(identity, source, mask_probability, masked, full, partial)`` in one transaction and
        return their ids: all of them are stored, or (on any failure) none. ``refuse_enrolled``: fail when an
        identity is already enrolled (checked inside the transaction: two writers cannot both enrol a name)."""
        ids = []
        now = time.time()
        with self._transaction():
            if refuse_enrolled:
                refuse_clashes(sorted({row[0] for row in rows}), self.has_identity)
            for identity, source, probability, masked, full, partial in rows:
                cursor = self._db.execute(
                    "INSERT INTO faces (identity, source, mask_probability, masked, full, partial, enrolled) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (identity, source, float(probability), int(masked), _blob(full), _blob(partial), now))
                assert cursor.lastrowid is not None
                ids.append(int(cursor.lastrowid))
        return ids

    def remove_identity(self, identity: str) -> int:
        """Delete every face of ``identity``; each removal is logged in ``removed`` (in the same transaction),
        so that a search index saved before it can be brought up to date."""
        with self._transaction():
            self._db.execute("INSERT INTO removed (face_id) SELECT id FROM faces WHERE identity = ?", (identity,))
            return self._db.execute("DELETE FROM faces WHERE identity = ?", (identity,)).rowcount

    def position(self) -> tuple[int, int]:
        """(the last face id ever enrolled, the last removal's sequence number): what an index covers."""
        row = self._db.execute("SELECT (SELECT coalesce(max(seq), 0) FROM sqlite_sequence WHERE name = 'faces'), "
                               "(SELECT coalesce(max(seq), 0) FROM removed)").fetchone()
        return int(row[0]), int(row[1])

    def removed_after(self, seq: int) -> np.ndarray:
        return np.array([r[0] for r in self._db.execute("SELECT face_id FROM removed WHERE seq > ?", (seq,))], np.int64)

    def vectors_after(self, face_id: int, upto: int, route: str, masked: bool | None = None,
                      chunk: int = 50_000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``(ids, route embeddings)`` of the faces with ``face_id < id <= upto`` (of one mask state), in chunks."""
        column = {"full": "full", "partial": "partial"}[route]
        where = "id > ? AND id <= ?" + ("" if masked is None else f" AND masked = {int(masked)}")
        cursor = self._db.execute(f"SELECT id, {column} FROM faces WHERE {where} ORDER BY id", (face_id, upto))
        while rows := cursor.fetchmany(chunk):
            yield (np.array([r[0] for r in rows], np.int64),
                   np.frombuffer(b"".join(r[1] for r in rows), np.float32).reshape(len(rows), -1))

    def names(self, ids: list[int]) -> dict[int, str]:
        found: dict[int, str] = {}
        for start in range(0, len(ids), 500):
            part = ids[start : start + 500]
            found.update(self._db.execute(f"SELECT id, identity FROM faces WHERE id IN ({','.join('?' * len(part))})",
                                          part).fetchall())
        return found

    def has_identity(self, identity: str) -> bool:
        return self._db.execute("SELECT 1 FROM faces WHERE identity = ? LIMIT 1", (identity,)).fetchone() is not None

    def identities(self) -> list[tuple[str, int, int]]:
        """``(identity, faces, masked faces)`` for every enrolled identity, sorted by name."""
        return [(name, int(n), int(m)) for name, n, m in self._db.execute(
            "SELECT identity, count(*), sum(masked) FROM faces GROUP BY identity ORDER BY identity")]

    def faces(self, identity: str | None = None) -> Iterator[StoredFace]:
        query = "SELECT id, identity, source, mask_probability, masked, full, partial FROM faces"
        args: tuple[str, ...] = ()
        if identity is not None:
            query, args = query + " WHERE identity = ?", (identity,)
        for face_id, name, source, probability, masked, full, partial in self._db.execute(query + " ORDER BY id", args):
            yield StoredFace(int(face_id), name, source, float(probability), bool(masked),
                             np.frombuffer(full, np.float32), np.frombuffer(partial, np.float32))

    def count(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM faces").fetchone()[0])

    def close(self) -> None:
        self._db.close()

    class _Txn:
        def __init__(self, db: sqlite3.Connection) -> None:
            self.db = db

        def __enter__(self) -> None:
            self.db.execute("BEGIN IMMEDIATE")  # take the write lock now: another writer waits, never interleaves

        def __exit__(self, exc_type: object, *rest: object) -> None:
            self.db.execute("ROLLBACK" if exc_type is not None else "COMMIT")

    def _transaction(self) -> SqliteStore._Txn:
        return SqliteStore._Txn(self._db)


class AlreadyEnrolled(BfmError):
    """An enrolment of an identity the gallery holds (without ``extend``): nothing was stored."""


class NotEnrolled(BfmError):
    """A removal of an identity the gallery does not hold."""


def refuse_clashes(names: list[str], enrolled: Any) -> None:
    """Raise ``AlreadyEnrolled`` when any of ``names`` is ``enrolled`` (both stores call it in their transaction)."""
    clash = [n for n in names if enrolled(n)]
    if clash:
        more = f" ({len(clash)} identities clash)" if len(clash) > 1 else ""
        raise AlreadyEnrolled(f"{clash[0]} is already enrolled{more} (add faces with --extend, or remove it first); nothing enrolled")


def _blob(vector: np.ndarray) -> bytes:
    return np.ascontiguousarray(vector, dtype=np.float32).tobytes()

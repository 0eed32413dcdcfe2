"""The gallery in PostgreSQL with pgvector, for many replicas sharing one gallery (``bfm-serve --ray``).

``Gallery.open("postgresql://...")`` (or ``postgres://``, or a libpq ``host=... dbname=...`` string) keeps
every face in one table with both embeddings as ``vector(N)`` columns; the database searches them itself
(``ORDER BY embedding <#> probe``: inner product of unit vectors, the cosine), so every replica sees every
enrolment the moment it commits. Exact (a sequential scan) up to the gallery's exact limit, and through
pgvector HNSW indexes (partial indexes, one per matched structure) above it. The same three structures as the
embedded store (``matching.STRUCTURES``), so both stores rank the same templates the same way.

psycopg 3 is imported only here (the ``gallery`` extra). Enrolment is one transaction that takes an advisory
lock per identity, so two replicas enrolling the same name cannot both succeed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from ..errors import BfmError
from ..matching import STRUCTURES
from .store import StoredFace, refuse_clashes

DSN_PREFIXES = ("postgresql://", "postgres://")
SCHEMA_VERSION = 1


def is_dsn(location: object) -> bool:
    text = str(location)
    return text.startswith(DSN_PREFIXES) or ("dbname=" in text and "host=" in text)


def _vector(v: np.ndarray) -> str:
    return "[" + ",".join(f"{x:.8g}" for x in np.asarray(v, np.float32).tolist()) + "]"


def _array(text: str) -> np.ndarray:
    return np.array(text[1:-1].split(","), np.float32)


def _redact(dsn: str) -> str:
    import re

    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", re.sub(r"password=\S+", "password=***", dsn))


class PgSearch:
    kind = "pgvector"

    def __init__(self, store: PgStore, route: str, masked: bool) -> None:
        self.store, self.route, self.masked = store, route, masked

    def __len__(self) -> int:
        return int(self.store._one(f"SELECT count(*) FROM bfm_faces WHERE masked = {self.masked}")[0])

    def search_many(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """A query per probe (the database ranks them); a row's width is what the fullest row found."""
        column = '"full"' if self.route == "full" else "partial"
        found = []
        for query in queries if k > 0 else []:
            with self.store._db.transaction():
                self.store._db.execute(f"SET LOCAL hnsw.ef_search = {max(40, int(k))}")
                found.append(self.store._db.execute(
                    f"SELECT id, -({column} <#> %s::vector) FROM bfm_faces WHERE masked = {self.masked} "
                    f"ORDER BY {column} <#> %s::vector LIMIT %s", (_vector(query), _vector(query), int(k))).fetchall())
        width = max((len(rows) for rows in found), default=0)
        scores = np.zeros((len(queries), width), np.float32)
        ids = np.full((len(queries), width), -1, np.int64)
        for i, rows in enumerate(found):
            scores[i, : len(rows)] = [r[1] for r in rows]
            ids[i, : len(rows)] = [r[0] for r in rows]
        return scores, ids


class PgStore:
    """The store interface of ``SqliteStore`` over PostgreSQL; ``structures()`` searches in the database."""

    searches_itself = True

    def __init__(self, dsn: str, embedding_size: int, create: bool = False) -> None:
        try:
            import psycopg
        except ImportError:
            raise BfmError("a PostgreSQL gallery needs psycopg: pip install 'bfm[gallery]'") from None
        self.folder = None
        self.location = _redact(dsn)
        self.embedding_size = embedding_size
        self._hnsw = False  # whether this connection has made sure of the HNSW indexes (ensure_hnsw)
        try:
            self._db = psycopg.connect(dsn, autocommit=True, connect_timeout=10)
        except psycopg.Error as exc:
            raise BfmError(f"{self.location}: cannot connect ({str(exc).strip().splitlines()[0][:160]})") from None
        try:
            exists = self._one("SELECT to_regclass('bfm_faces') IS NOT NULL")[0]
            if not exists:
                if not create:
                    raise BfmError(f"{self.location}: no gallery here (enrol a face to create one)")
                with self._db.transaction():
                    self._db.execute("SELECT pg_advisory_xact_lock(hashtext('bfm_gallery_schema'))")
                    self._db.execute("CREATE EXTENSION IF NOT EXISTS vector")
                    self._db.execute("CREATE TABLE IF NOT EXISTS bfm_meta (key text PRIMARY KEY, value text NOT NULL)")
                    self._db.execute(
                        "CREATE TABLE IF NOT EXISTS bfm_faces (id bigserial PRIMARY KEY, identity text NOT NULL, "
                        "source text NOT NULL, mask_probability real NOT NULL, masked boolean NOT NULL, "
                        f'"full" vector({embedding_size}) NOT NULL, partial vector({embedding_size}) NOT NULL, '
                        "enrolled timestamptz NOT NULL DEFAULT now())")
                    self._db.execute("CREATE INDEX IF NOT EXISTS bfm_faces_identity ON bfm_faces (identity)")
                    self._db.execute("CREATE TABLE IF NOT EXISTS bfm_removed (seq bigserial PRIMARY KEY, face_id bigint NOT NULL)")
                    self._db.execute("INSERT INTO bfm_meta VALUES ('schema_version', %s), ('embedding_size', %s) "
                                     "ON CONFLICT DO NOTHING", (str(SCHEMA_VERSION), str(embedding_size)))
        except psycopg.Error as exc:
            self._db.close()
            raise BfmError(f"{self.location}: {str(exc).strip().splitlines()[0][:200]}") from None
        except BfmError:
            self._db.close()
            raise
        meta = self.meta()
        if meta.get("schema_version") != str(SCHEMA_VERSION) or meta.get("embedding_size") != str(embedding_size):
            self._db.close()
            raise BfmError(f"{self.location}: gallery schema {meta.get('schema_version')} of "
                           f"{meta.get('embedding_size')}-value embeddings; this bfm reads schema {SCHEMA_VERSION} "
                           f"of {embedding_size}")

    def _one(self, query: str, args: tuple[Any, ...] = ()) -> tuple[Any, ...]:
        row = self._db.execute(query, args).fetchone()
        assert row is not None
        return tuple(row)

    def meta(self) -> dict[str, str]:
        return dict(self._db.execute("SELECT key, value FROM bfm_meta").fetchall())

    def set_meta(self, values: dict[str, str]) -> None:
        with self._db.transaction():
            for key, value in values.items():
                self._db.execute("INSERT INTO bfm_meta VALUES (%s, %s) ON CONFLICT (key) DO UPDATE SET value = "
                                 "EXCLUDED.value", (key, value))

    def add(self, rows: list[tuple[str, str, float, bool, np.ndarray, np.ndarray]], refuse_enrolled: bool = False) -> list[int]:
        ids = []
        with self._db.transaction():
            names = sorted({row[0] for row in rows})
            for name in names:  # the same order in every replica: no deadlock
                self._db.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (name,))
            if refuse_enrolled:
                refuse_clashes(names, self.has_identity)
            for identity, source, probability, masked, full, partial in rows:
                ids.append(int(self._one(
                    'INSERT INTO bfm_faces (identity, source, mask_probability, masked, "full", partial) '
                    "VALUES (%s, %s, %s, %s, %s::vector, %s::vector) RETURNING id",
                    (identity, source, float(probability), bool(masked), _vector(full), _vector(partial)))[0]))
        return ids

    def remove_identity(self, identity: str) -> int:
        with self._db.transaction():
            self._db.execute("INSERT INTO bfm_removed (face_id) SELECT id FROM bfm_faces WHERE identity = %s", (identity,))
            return self._db.execute("DELETE FROM bfm_faces WHERE identity = %s", (identity,)).rowcount

    def has_identity(self, identity: str) -> bool:
        return self._db.execute("SELECT 1 FROM bfm_faces WHERE identity = %s LIMIT 1", (identity,)).fetchone() is not None

    def identities(self) -> list[tuple[str, int, int]]:
        return [(name, int(n), int(m)) for name, n, m in self._db.execute(
            "SELECT identity, count(*), count(*) FILTER (WHERE masked) FROM bfm_faces GROUP BY identity "
            "ORDER BY identity COLLATE \"C\"")]

    def faces(self, identity: str | None = None) -> Iterator[StoredFace]:
        query = 'SELECT id, identity, source, mask_probability, masked, "full"::text, partial::text FROM bfm_faces'
        args: tuple[str, ...] = ()
        if identity is not None:
            query, args = query + " WHERE identity = %s", (identity,)
        for face_id, name, source, probability, masked, full, partial in self._db.execute(query + " ORDER BY id", args).fetchall():
            yield StoredFace(int(face_id), name, source, float(probability), bool(masked), _array(full), _array(partial))

    def count(self) -> int:
        return int(self._one("SELECT count(*) FROM bfm_faces")[0])

    def position(self) -> tuple[int, int]:
        row = self._one("SELECT (SELECT coalesce(max(id), 0) FROM bfm_faces), (SELECT coalesce(max(seq), 0) FROM bfm_removed)")
        return int(row[0]), int(row[1])

    def names(self, ids: list[int]) -> dict[int, str]:
        if not ids:
            return {}
        return dict(self._db.execute("SELECT id, identity FROM bfm_faces WHERE id = ANY(%s)", (ids,)).fetchall())

    def structures(self, exact_limit: int) -> dict[str, PgSearch]:
        """The three structures, searched by the database; HNSW indexes once the gallery outgrows exact search."""
        if not self._hnsw and self.count() > exact_limit:  # once per connection: the indexes stay
            self.ensure_hnsw()
        return {name: PgSearch(self, route, masked) for name, (route, masked) in STRUCTURES.items()}

    def ensure_hnsw(self) -> None:
        with self._db.transaction():
            self._db.execute("SELECT pg_advisory_xact_lock(hashtext('bfm_gallery_schema'))")
            for name, (route, masked) in STRUCTURES.items():
                column = '"full"' if route == "full" else "partial"
                self._db.execute(f"CREATE INDEX IF NOT EXISTS bfm_faces_{name} ON bfm_faces USING hnsw "
                                 f"({column} vector_ip_ops) WHERE masked = {masked}")
        self._hnsw = True

    def close(self) -> None:
        self._db.close()

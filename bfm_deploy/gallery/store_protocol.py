"""What a gallery's storage offers ``Gallery``: ``SqliteStore`` (``store.py``) and ``PgStore`` (``pg.py``) both are
a ``GalleryStore``. An embedded one (SQLite) hands its templates to the gallery, which searches them in memory
(``index_cache.py``); a searching one (PostgreSQL, pgvector) searches them in the database.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from ..matching import Searcher
from .store import StoredFace

# a face to store: (identity, source name, mask probability, masked, unit E_F embedding, unit E_P embedding)
FaceRow = tuple[str, str, float, bool, np.ndarray, np.ndarray]


class GalleryStore(Protocol):
    location: str  # where it is, to name in messages (a password redacted)

    def meta(self) -> dict[str, str]: ...

    def set_meta(self, values: dict[str, str]) -> None: ...

    def add(self, rows: list[FaceRow], refuse_enrolled: bool = False) -> list[int]:
        """Store every row in one transaction (all or none) and return their face ids, ascending."""
        ...

    def remove_identity(self, identity: str) -> int: ...

    def position(self) -> tuple[int, int]:
        """(the last face id enrolled, the last removal's sequence number)."""
        ...

    def names(self, ids: list[int]) -> dict[int, str]: ...

    def has_identity(self, identity: str) -> bool: ...

    def identities(self) -> list[tuple[str, int, int]]: ...

    def faces(self, identity: str | None = None) -> Iterator[StoredFace]: ...

    def count(self) -> int: ...

    def close(self) -> None: ...


@runtime_checkable
class EmbeddedStore(GalleryStore, Protocol):
    """A store whose templates the gallery searches: read in id order, every removal logged."""

    folder: Path  # where the gallery keeps its saved search indexes (``index/``)

    def removed_after(self, seq: int) -> np.ndarray: ...

    def vectors_after(self, face_id: int, upto: int, route: str, masked: bool | None = None,
                      chunk: int = 50_000) -> Iterator[tuple[np.ndarray, np.ndarray]]: ...


@runtime_checkable
class SearchingStore(GalleryStore, Protocol):
    """A store that searches its templates itself."""

    def structures(self, exact_limit: int) -> Mapping[str, Searcher]: ...


if TYPE_CHECKING:  # mypy checks that each store satisfies its protocol
    from .pg import PgStore
    from .store import SqliteStore

    _EMBEDDED: type[EmbeddedStore] = SqliteStore
    _SEARCHING: type[SearchingStore] = PgStore

"""The 1:N balanced matching rule, once: ``Gallery.identify`` and the LFW identification evaluation
(``bfm_deploy.eval.identification``) both rank with ``match``, so what the evaluation measures is the gallery.

Templates are kept in three structures, one per way a template is matched (``STRUCTURES``). A probe is compared
with each template the way a verified pair would be (``bfm_deploy.routing``): an unmasked probe's E_F with the E_F
of unmasked templates and its E_P with the E_P of masked ones; a masked probe's E_P with every template's E_P. A
template's **margin** is its cosine score minus its route's verification threshold, and it ranks by the margin
minus its route's open-set threshold (ties: the lower face id first), each identity by its best template.

Each structure gives its best ``k = 4 top_k + 16`` templates; when identities with many faces leave fewer than
``top_k`` identities among them, ``k`` grows (x4) up to every template. A batch of probes is one matrix product
per exact structure, yet each row is bit for bit what that probe alone gets (``ExactIndex.search_many``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from .contract import ROUTES as ROUTES
from .tensor import l2_normalise

# the search structures, one per way a template is matched: name -> (route, mask state of its templates)
STRUCTURES = {"full_unmasked": ("full", False), "partial_unmasked": ("partial", False), "partial_masked": ("partial", True)}
# what a probe searches, by its mask state: (structure, route) pairs
PROBE_SEARCHES = {False: (("full_unmasked", "full"), ("partial_masked", "partial")),
                  True: (("partial_unmasked", "partial"), ("partial_masked", "partial"))}
_UNIT_ROUNDOFF = 2.0**-24  # float32
_BATCH_ELEMENTS = 1 << 24  # scores of a batch computed at once (64 MB of float32)


class Searcher(Protocol):
    """A structure of one route's templates (exact, FAISS IVF, pgvector)."""

    kind: str

    def __len__(self) -> int: ...

    def search_many(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Each query row's best ``min(k, len)`` templates: ``(scores float32, face ids int64)``, both
        ``(rows, min(k, len))``, best first; an id of -1 (score 0) where a row found fewer."""
        ...


def unit(vectors: np.ndarray) -> np.ndarray:
    """Rows (or one vector) scaled to unit length, float32: how templates are stored and probes compared."""
    array = np.asarray(vectors, np.float32)
    return l2_normalise(array[None])[0] if array.ndim == 1 else l2_normalise(array)


class ExactIndex:
    """Every template in one matrix, searched exactly; faces are added in batches and removed by id."""

    kind = "exact"

    def __init__(self, size: int) -> None:
        self.size = size
        self._vectors = np.zeros((0, size), np.float32)
        self._ids = np.zeros(0, np.int64)
        self._pending: list[tuple[np.ndarray, np.ndarray]] = []
        self._max_norm = 0.0  # of the stored vectors: bounds the rounding error of a score

    def __len__(self) -> int:
        return len(self._ids) + sum(len(ids) for ids, _ in self._pending)

    def _flush(self) -> None:
        if self._pending:
            self._ids = np.concatenate([self._ids, *(ids for ids, _ in self._pending)])
            self._vectors = np.concatenate([self._vectors, *(v for _, v in self._pending)])
            self._pending = []
            self._max_norm = float(np.linalg.norm(self._vectors, axis=1).max(initial=0.0))

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids):
            self._pending.append((np.asarray(ids, np.int64), np.asarray(vectors, np.float32)))

    def remove(self, ids: np.ndarray) -> None:
        self._flush()
        keep = ~np.isin(self._ids, ids)
        self._ids, self._vectors = self._ids[keep], self._vectors[keep]

    def vectors(self) -> tuple[np.ndarray, np.ndarray]:
        self._flush()
        return self._ids, self._vectors

    def search_many(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The best ``k`` by score, ties by face id. Every score is the one dot product a single query gets
        (einsum, one thread: OpenBLAS's threaded gemv was 10x slower on 2 CPU cores shared with a server's
        threads); a batch picks its candidates with one BLAS matrix product first, widened by twice the bound on
        its rounding error, so the candidates always hold the best ``k``, and rescores only them."""
        self._flush()
        queries = np.asarray(queries, np.float32)
        k = min(k, len(self._ids))
        scores = np.zeros((len(queries), k), np.float32)
        ids = np.full((len(queries), k), -1, np.int64)
        if k == 0:
            return scores, ids
        step = max(1, _BATCH_ELEMENTS // len(self._ids))
        for start in range(0, len(queries), step):
            rows = slice(start, start + step)
            scores[rows], ids[rows] = self._top_k(queries[rows], k)
        return scores, ids

    def _pair_scores(self, queries: np.ndarray, row: np.ndarray, col: np.ndarray) -> np.ndarray:
        """The dot product of each (query row, template) pair as a single query's einsum computes it."""
        score = np.empty(len(row), np.float32)
        step = max(1, _BATCH_ELEMENTS // (2 * self.size))
        for start in range(0, len(row), step):
            part = slice(start, start + step)
            score[part] = np.einsum("kj,kj->k", queries[row[part]], self._vectors[col[part]])
        return score

    def _top_k(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        n = len(self._ids)
        if len(queries) == 1:
            approx = np.einsum("ij,j->i", self._vectors, queries[0])[None]
            slack = np.zeros(1)  # these are the exact scores
        else:
            approx = queries @ self._vectors.T
            # |fl(q.v) - q.v| <= gamma_d |q| |v| in any summation order (BLAS, einsum alike), so a template whose
            # product lies within twice that below the k-th best product may still be in the exact best k
            d = self.size
            gamma = d * _UNIT_ROUNDOFF / (1 - d * _UNIT_ROUNDOFF)
            slack = 2.02 * gamma * np.linalg.norm(queries, axis=1).astype(np.float64) * self._max_norm + 1e-30
        if k < n:
            kth = np.partition(approx, n - k, axis=1)[:, n - k].astype(np.float64)
            row, col = np.nonzero(approx >= (kth - slack)[:, None])
        else:
            row, col = np.divmod(np.arange(approx.size), n)
        score = approx[row, col] if len(queries) == 1 else self._pair_scores(queries, row, col)
        order = np.lexsort((self._ids[col], -score, row))
        row, col, score = row[order], col[order], score[order]
        rank = np.arange(len(row)) - np.searchsorted(row, row, side="left")
        keep = rank < k
        top_scores = np.zeros((len(queries), k), np.float32)
        top_ids = np.full((len(queries), k), -1, np.int64)
        top_scores[row[keep], rank[keep]] = score[keep]
        top_ids[row[keep], rank[keep]] = self._ids[col[keep]]
        return top_scores, top_ids


def exact_structures(full: np.ndarray, partial: np.ndarray, masked: np.ndarray) -> dict[str, ExactIndex]:
    """The three structures of faces enrolled in this order (unit ``full`` and ``partial`` rows, their mask
    states), as a gallery numbers them: face ids 1, 2, ..."""
    masked = np.asarray(masked, bool)
    ids = np.arange(1, len(masked) + 1, dtype=np.int64)
    structures = {}
    for name, (route, state) in STRUCTURES.items():
        structure = structures[name] = ExactIndex(full.shape[1])
        keep = masked == state
        structure.add(ids[keep], (full if route == "full" else partial)[keep])
    return structures


@dataclass(frozen=True)
class Matches:
    """Each probe's best identities (rows), best first; columns past a row's ``count`` are padding."""

    identity: np.ndarray  # (probes, top_k) object: names, None as padding
    face_id: np.ndarray  # int64, -1 as padding: the identity's best template
    score: np.ndarray  # float32: its cosine score on the route
    margin: np.ndarray  # float64: score - the route's verification threshold
    over_open_set: np.ndarray  # float64: margin - the route's open-set threshold, the ranking key
    route: np.ndarray  # int8: index into ROUTES (-1 as padding)
    count: np.ndarray  # int64: candidates in each row


def match(full: np.ndarray, partial: np.ndarray, masked: np.ndarray, structures: Mapping[str, Searcher],
          names: Callable[[list[int]], Mapping[int, str]], thresholds: Mapping[str, float],
          open_set: Mapping[str, float], top_k: int) -> Matches:
    """The ``top_k`` best identities of each probe: ``full`` and ``partial`` its unit E_F and E_P rows,
    ``masked`` its mask state; ``names`` gives the identity of face ids (ids it does not know are skipped:
    faces removed meanwhile)."""
    probes = len(masked)
    masked = np.asarray(masked, bool)
    out = Matches(np.full((probes, top_k), None, object), np.full((probes, top_k), -1, np.int64),
                  np.zeros((probes, top_k), np.float32), np.zeros((probes, top_k)), np.zeros((probes, top_k)),
                  np.full((probes, top_k), -1, np.int8), np.zeros(probes, np.int64))
    for state, searches in PROBE_SEARCHES.items():
        todo = np.flatnonzero(masked == state)
        total: int | None = None  # templates the searches hold: counted (a query in PostgreSQL) only when needed
        k = 4 * top_k + 16
        while len(todo):
            found = [_found(structures[name], (full if route == "full" else partial)[todo], k, route,
                            thresholds[route], open_set[route]) for name, route in searches]
            short = _best_identities(out, todo, [np.concatenate(column, axis=1) for column in zip(*found)], names,
                                     top_k)
            if short.any() and total is None:
                total = sum(len(structures[name]) for name, _ in searches)
            if total is None or k >= total:
                break
            todo, k = todo[short], min(total, 4 * k)  # identities with many faces filled the lists: look further
    return out


def _found(structure: Searcher, queries: np.ndarray, k: int, route: str, threshold: float,
           open_set: float) -> tuple[np.ndarray, ...]:
    """(key, margin, score, route index, face id) of each query's best ``k`` in ``structure``; key -inf where none."""
    scores, ids = structure.search_many(queries, k)
    margin = scores.astype(np.float64) - threshold
    key = np.where(ids >= 0, margin - open_set, -np.inf)
    return key, margin, scores, np.full(ids.shape, ROUTES.index(route), np.int8), ids


def _best_identities(out: Matches, rows: np.ndarray, found: list[np.ndarray],
                     names: Callable[[list[int]], Mapping[int, str]], top_k: int) -> np.ndarray:
    """Write each row's best ``top_k`` identities into ``out`` at ``rows``; True where a row has fewer."""
    key, margin, score, route, ids = found
    order = np.lexsort((ids, -key))  # per row: key descending, then face id; padding (-inf) last
    key, margin, score, route, ids = (np.take_along_axis(a, order, axis=1) for a in (key, margin, score, route, ids))
    valid = ids >= 0
    unique_ids, which = np.unique(ids[valid], return_inverse=True)
    known = names(unique_ids.tolist())
    identities = np.array([None, *(known.get(i) for i in unique_ids.tolist())], object)
    codes: dict[str, int] = {}
    code_of_id = np.array([-1, *(-1 if n is None else codes.setdefault(n, len(codes)) for n in identities[1:])],
                          np.int64)
    slot = np.zeros(ids.shape, np.int64)  # 0: no template; i + 1: unique_ids[i]
    slot[valid] = which.reshape(-1) + 1
    code = code_of_id[slot]
    row, column = np.nonzero(code >= 0)  # row-major: each row's templates best first
    _, first = np.unique(row * (len(codes) + 1) + code[row, column], return_index=True)  # an identity's best
    first.sort()
    row, column = row[first], column[first]
    rank = np.arange(len(row)) - np.searchsorted(row, row, side="left")
    keep = rank < top_k
    row, column, rank = row[keep], column[keep], rank[keep]
    target = rows[row]
    for name, padding in (("identity", None), ("face_id", -1), ("score", 0), ("margin", 0), ("over_open_set", 0),
                          ("route", -1)):
        getattr(out, name)[rows] = padding  # a row searched again is written anew
    out.identity[target, rank] = identities[slot[row, column]]
    out.face_id[target, rank] = ids[row, column]
    out.score[target, rank] = score[row, column]
    out.margin[target, rank] = margin[row, column]
    out.over_open_set[target, rank] = key[row, column]
    out.route[target, rank] = route[row, column]
    count = np.bincount(row, minlength=len(rows))
    out.count[rows] = count
    return np.asarray(count < top_k)

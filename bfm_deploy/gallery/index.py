"""Search structures over one route's templates: exact (``matching.ExactIndex``, numpy, in memory) or approximate
(a FAISS IVF index, here).

A gallery keeps three of them, one per way a template can be matched (``matching.STRUCTURES``): the E_F
embeddings of unmasked faces, the E_P embeddings of unmasked faces and the E_P embeddings of masked faces. Each
answers ``search_many(queries, k) -> (cosine scores, face ids)``, best first. The database is the gallery; these are caches
built from it: an approximate index is saved beside the database (temp + rename) with the last face id and
removal it covers, caught up from the database when it is opened, and rebuilt when its file is missing or
unreadable.

Exact search is used up to ``EXACT_LIMIT`` templates a structure (``bfm-bench --gallery-scale`` on 2 shared CPU
cores: exact 19 ms a probe at 100k templates, 70k in the largest structure, IVF 8 ms with recall@1 0.993; at 1M
exact 1.2 s, IVF 0.11 s), an IVF index (inner product, ``nlist`` ~ sqrt(N) lists, ``nprobe``
lists searched, at least 1/16 of them) above it. FAISS (the ``gallery`` extra, ``faiss-cpu``) is imported only for such an index.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..errors import BfmError
from ..matching import ExactIndex as ExactIndex

EXACT_LIMIT = 50_000  # templates a structure searches exactly; above it, IVF (see bfm-bench --gallery-scale)
NPROBE = 32
TRAIN_SAMPLE = 100_000
TRAIN_PER_LIST = 64  # k-means sample per inverted list


def _faiss():  # type: ignore[no-untyped-def]
    try:
        import faiss
    except ImportError:
        raise BfmError("a gallery this large needs an approximate index: pip install faiss-cpu "
                       "(the gallery extra: pip install 'bfm[gallery]')") from None
    return faiss


class IvfIndex:
    """``faiss.IndexIVFFlat`` on inner product (the embeddings are unit vectors: cosine), ids = face ids."""

    kind = "ivf"

    def __init__(self, index: object, nprobe: int = NPROBE) -> None:
        self.index = index
        self.index.nprobe = max(nprobe, int(index.nlist) // 16)  # type: ignore[attr-defined]

    @classmethod
    def train(cls, ids: np.ndarray, vectors: np.ndarray, nprobe: int = NPROBE, seed: int = 0) -> IvfIndex:
        faiss = _faiss()
        n, size = vectors.shape
        nlist = int(min(max(16, math.sqrt(n)), max(16, n // 39)))
        quantizer = faiss.IndexFlatIP(size)
        index = faiss.IndexIVFFlat(quantizer, size, nlist, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(seed)
        cap = min(TRAIN_SAMPLE, TRAIN_PER_LIST * nlist)
        sample = vectors if n <= cap else vectors[np.sort(rng.choice(n, cap, replace=False))]
        index.cp.seed = seed
        index.train(np.ascontiguousarray(sample, np.float32))
        self = cls(index, nprobe)
        self.add(ids, vectors)
        return self

    @classmethod
    def read(cls, path: Path, size: int, nprobe: int = NPROBE) -> IvfIndex:
        faiss = _faiss()
        try:
            index = faiss.read_index(str(path))
        except RuntimeError as exc:
            raise BfmError(f"{path}: unreadable index ({str(exc).splitlines()[0][:120]})") from None
        if getattr(index, "d", None) != size or not hasattr(index, "nprobe"):
            raise BfmError(f"{path}: not an IVF index of {size}-value embeddings")
        return cls(index, nprobe)

    def write(self, path: Path) -> None:
        from ..atomic import atomic_path

        with atomic_path(path) as tmp:
            _faiss().write_index(self.index, str(tmp))

    def __len__(self) -> int:
        return int(self.index.ntotal)  # type: ignore[attr-defined]

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids):
            self.index.add_with_ids(np.ascontiguousarray(vectors, np.float32),  # type: ignore[attr-defined]
                                    np.ascontiguousarray(ids, np.int64))

    def remove(self, ids: np.ndarray) -> None:
        if len(ids):
            self.index.remove_ids(np.ascontiguousarray(ids, np.int64))  # type: ignore[attr-defined]

    def search_many(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """One query at a time: FAISS assigns a batch of 20 or more to its lists with BLAS, whose rounding can
        probe other lists than a single query's (a row must be what that probe alone gets)."""
        k = min(k, len(self))
        scores = np.zeros((len(queries), k), np.float32)
        ids = np.full((len(queries), k), -1, np.int64)
        for i, query in enumerate(queries):
            if k:
                found, which = self.index.search(np.ascontiguousarray(query[None], np.float32), k)  # type: ignore[attr-defined]
                keep = which[0] >= 0  # FAISS pads with -1 where the probed lists hold fewer
                count = int(keep.sum())
                scores[i, :count], ids[i, :count] = found[0][keep], which[0][keep]
        return scores, ids

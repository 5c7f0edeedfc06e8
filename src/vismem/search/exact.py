"""Exact search: FAISS's flat inner-product index, with removal in O(dim).

Rows live in a `faiss.IndexFlatIP`, whose buffer grows by doubling, so adding never
copies everything. Removal moves the last row into the hole and shrinks the index by
one, so it is O(dim), leaves no tombstone and frees the row at once. A search within a
selection is FAISS's own flat search with an ID selector, or exact search over a copy of
a small selection's vectors (restrict.py), derived once per selection key.
"""

from __future__ import annotations

import faiss
import numpy as np

from .base import MISSING_ID, SearchResult, Selection, VectorIndex, pad_result
from .calls import byte_view, faiss_search, flat_search, reserve_bytes, selected
from .restrict import Restriction, Restrictions, restriction


class ExactIndex(VectorIndex):
    kind = "exact"

    def __init__(self, dim: int, capacity: int = 1024) -> None:
        super().__init__(dim)
        self._flat = faiss.IndexFlatIP(dim)
        self._ids = np.empty(capacity, dtype=np.int64)
        self._row_of: dict[int, int] = {}
        self._restrictions = Restrictions()

    def __len__(self) -> int:
        return self._flat.ntotal

    def nbytes(self) -> int:
        return len(self) * (self.dim * 4 + 8)

    def _matrix(self) -> np.ndarray:
        """A writable float32 (rows, dim) view of the stored vectors."""
        return byte_view(self._flat.codes, self.dim * 4).view(np.float32)

    def reserve(self, rows: int) -> None:
        if rows > len(self._ids):
            self._ids = np.resize(self._ids, rows)
        reserve_bytes(self._flat.codes, rows * self.dim * 4)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        ids = np.asarray(ids, dtype=np.int64).ravel()
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, self.dim)
        known = np.fromiter((i in self._row_of for i in ids.tolist()), bool, len(ids))
        if known.any():  # catching up from the edit log may replay adds
            ids, vectors = ids[~known], vectors[~known]
        n, m = len(self), len(ids)
        if m == 0:
            return
        if n + m > len(self._ids):
            self._ids = np.resize(self._ids, max(2 * len(self._ids), n + m))
        self._restrictions.clear()
        self._flat.add(vectors)
        self._ids[n : n + m] = ids
        self._row_of.update(zip(ids.tolist(), range(n, n + m), strict=True))

    def remove(self, ids: np.ndarray) -> None:
        known = [i for i in np.asarray(ids, dtype=np.int64).tolist() if i in self._row_of]
        if not known:
            return
        self._restrictions.clear()
        matrix = self._matrix()
        for item_id in known:
            row = self._row_of.pop(item_id, None)
            if row is None:  # the same id twice
                continue
            last = self._flat.ntotal - 1
            if row != last:  # the last row moves into the hole
                moved = int(self._ids[last])
                matrix[row] = matrix[last]
                self._ids[row] = moved
                self._row_of[moved] = row
            matrix[last] = 0  # no copy of the removed vector stays in the buffer
            self._flat.ntotal = last
        self._flat.codes.resize(self._flat.ntotal * self.dim * 4)

    def missing(self, item_id: int) -> bool:
        return int(item_id) not in self._row_of

    def live_ids(self) -> np.ndarray:
        return self._ids[: len(self)].copy()

    def search_exact(self, queries: np.ndarray, k: int) -> SearchResult:
        return self.search(queries, k)

    def search(
        self, queries: np.ndarray, k: int, *, allowed_ids: Selection | np.ndarray | None = None
    ) -> SearchResult:
        queries = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.dim)
        if allowed_ids is None:
            want = min(k, len(self))
            sims, rows = faiss_search(self._flat, queries, want) if want else _nothing(queries)
        else:
            within = self._restrictions.of(allowed_ids, self._restrict)
            want = min(k, within.count)
            if want == 0:
                sims, rows = _nothing(queries)
            elif within.ids is not None:  # a small selection: exact search over a copy of it
                sims, found = flat_search(within.exact, queries, want)
                return pad_result(sims, within.ids.take(found), k)
            else:
                if within.params is None:
                    within.params = selected(within.selector)
                sims, rows = faiss_search(self._flat, queries, want, within.params)
        ids = np.where(rows >= 0, self._ids[np.maximum(rows, 0)], MISSING_ID)
        return pad_result(sims, ids, k)

    def _restrict(self, selection: Selection) -> Restriction:
        allowed = np.isin(self._ids[: len(self)], selection.ids, invert=selection.exclude)
        return restriction(allowed, self.dim, lambda rows: (self._ids[rows], self._matrix()[rows]))


def _nothing(queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.empty((len(queries), 0), np.float32), np.empty((len(queries), 0), np.int64)

"""Exact search: a dense matrix and FAISS's BLAS inner-product kNN.

Rows live in a matrix that grows by doubling, so adding never copies everything.
Removal moves the last row into the hole, so it is O(dim), leaves no tombstone and
frees the row at once.
"""

from __future__ import annotations

import faiss
import numpy as np

from .base import MISSING_ID, SearchResult, Selection, VectorIndex, pad_result


class ExactIndex(VectorIndex):
    kind = "exact"

    def __init__(self, dim: int, capacity: int = 1024) -> None:
        super().__init__(dim)
        self._matrix = np.empty((capacity, dim), dtype=np.float32)
        self._ids = np.empty(capacity, dtype=np.int64)
        self._row_of: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self._row_of)

    def nbytes(self) -> int:
        return len(self) * (self.dim * 4 + 8)

    def reserve(self, rows: int) -> None:
        if rows > len(self._ids):
            self._resize(rows)

    def _grow(self, needed: int) -> None:
        capacity = len(self._ids)
        if needed <= capacity:
            return
        while capacity < needed:
            capacity *= 2
        self._resize(capacity)

    def _resize(self, capacity: int) -> None:
        matrix = np.empty((capacity, self.dim), dtype=np.float32)
        ids = np.empty(capacity, dtype=np.int64)
        n = len(self)
        matrix[:n] = self._matrix[:n]
        ids[:n] = self._ids[:n]
        self._matrix, self._ids = matrix, ids

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        ids = np.asarray(ids, dtype=np.int64)
        n = len(self)
        if n == 0 and len(ids) > len(self._ids):
            # Bulk load into an empty index: adopt the caller's matrix rather than copy it.
            self._matrix = np.ascontiguousarray(vectors, dtype=np.float32)
            self._ids = ids.copy()
            self._row_of = dict(zip(ids.tolist(), range(len(ids))))
            return
        self._grow(n + len(ids))
        self._matrix[n : n + len(ids)] = vectors
        self._ids[n : n + len(ids)] = ids
        for offset, item_id in enumerate(ids.tolist()):
            self._row_of[item_id] = n + offset

    def remove(self, ids: np.ndarray) -> None:
        for item_id in np.asarray(ids, dtype=np.int64).tolist():
            row = self._row_of.pop(item_id, None)
            if row is None:
                continue
            last = len(self._row_of)  # index of the last live row, now that one is gone
            if row != last:
                moved = int(self._ids[last])
                self._matrix[row] = self._matrix[last]
                self._ids[row] = moved
                self._row_of[moved] = row

    def missing(self, item_id: int) -> bool:
        return int(item_id) not in self._row_of

    def live_ids(self) -> np.ndarray:
        return self._ids[: len(self)].copy()

    def vectors_of(self, ids: np.ndarray) -> np.ndarray:
        return self._matrix[[self._row_of[int(i)] for i in ids]]

    def search_exact(self, queries: np.ndarray, k: int) -> SearchResult:
        return self.search(queries, k)

    def search(
        self, queries: np.ndarray, k: int, *, allowed_ids: Selection | np.ndarray | None = None
    ) -> SearchResult:
        queries = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.dim)
        n = len(self)
        base, base_ids = self._matrix[:n], self._ids[:n]
        if allowed_ids is not None:
            within = allowed_ids if isinstance(allowed_ids, Selection) else Selection.of(allowed_ids)
            keep = np.isin(base_ids, within.ids, assume_unique=True, invert=within.exclude)
            base, base_ids = base[keep], base_ids[keep]
        found = min(k, len(base_ids))
        if found == 0:
            return pad_result(
                np.empty((len(queries), 0), np.float32), np.empty((len(queries), 0), np.int64), k
            )
        similarities, rows = faiss.knn(queries, base, found, metric=faiss.METRIC_INNER_PRODUCT)
        ids = np.where(rows >= 0, base_ids[np.maximum(rows, 0)], MISSING_ID)
        return pad_result(similarities, ids, k)

"""HNSW: a FAISS HNSW graph over float32 (or float16) vectors, cosine similarity.

New items are inserted into the graph; a removed item's node keeps its links (walks
still pass through it) but its vector is zeroed at once, until compaction rebuilds the
graph from the live rows (rows.py).

Why FAISS HNSW over hnswlib: measured here it built and searched faster, and hnswlib has
no wheel for this Python (see docs/search.md).
"""

from __future__ import annotations

from typing import Any

import faiss
import numpy as np

from .calls import faiss_search
from .rows import RowIndex


class HNSWIndex(RowIndex):
    """FAISS HNSW graph over float32 (or float16) vectors, cosine similarity."""

    kind = "hnsw"
    tune_param = "ef_search"
    tune_values = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024)

    def __init__(self, dim: int, *, m: int = 32, ef_construction: int = 80,
                 ef_search: int = 64, float16: bool = False, exhaustive: bool = False) -> None:
        super().__init__(dim, exhaustive)
        self.m, self.ef_construction, self.ef_search, self.float16 = m, ef_construction, ef_search, float16
        self._faiss = self._new_faiss()
        self._applied: int | None = None  # search setting last written into the FAISS object

    def _new_faiss(self) -> Any:
        index: Any
        if self.float16:  # (mypy sees one of SWIG's overloads only: hence the ignore)
            index = faiss.IndexHNSWSQ(self.dim, faiss.ScalarQuantizer.QT_fp16, self.m,  # type: ignore[arg-type]
                                      faiss.METRIC_INNER_PRODUCT)
        else:
            index = faiss.IndexHNSWFlat(self.dim, self.m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = self.ef_construction
        return index

    @property
    def params(self) -> dict[str, Any]:
        return {"m": self.m, "ef_construction": self.ef_construction,
                "ef_search": self.ef_search, "float16": self.float16, "exhaustive": self.exhaustive}

    def _empty_like(self) -> HNSWIndex:
        return HNSWIndex(self.dim, **self.params)

    def _storage(self):
        return faiss.downcast_index(self._faiss.storage)

    def _add_rows(self, vectors: np.ndarray, rows: np.ndarray) -> None:
        self._faiss.add(vectors)

    def _forget_rows(self, rows: np.ndarray) -> None:
        # The graph keeps the dead node's links (so walks still pass through it), but its
        # vector is zeroed now: the removed bytes do not linger until compaction.
        self._codes()[rows] = 0

    def _search_plain(self, queries, k):
        ef = max(self.ef_search, k)
        if self._applied != ef:  # a SWIG attribute write costs as much as a small search
            self._faiss.hnsw.efSearch = self._applied = ef
        return faiss_search(self._faiss, queries, k)

    def _tuned_effort(self) -> int:
        return self.ef_search

    def _effort_in(self, params: dict[str, Any]) -> int:
        return int(params.get("ef_search", self.ef_search))

    def _restricted_index(self):
        return self._faiss

    def _restricted_params(self, selector, k, selectivity):
        params = faiss.SearchParametersHNSW()  # type: ignore[attr-defined]  # (loaded by SWIG)
        # A filter hides part of the graph; widen the beam so k matches are still found.
        params.efSearch = int(min(max(self.ef_search, k) / max(selectivity, 0.05), 4096))
        params.sel = selector
        return params

    def nbytes(self) -> int:
        hnsw = self._faiss.hnsw
        graph = hnsw.neighbors.size() * 4 + hnsw.offsets.size() * 8 + hnsw.levels.size() * 4
        return int(self._codes().nbytes + graph + self._n_rows * 9)

    def _restore(self, loaded: Any, meta: dict) -> None:
        self._faiss = loaded
        self._applied = None
        if self._faiss.ntotal != meta["rows"]:
            raise ValueError("row count does not match")

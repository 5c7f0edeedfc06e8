"""Lean calls into FAISS that the indexes share: search through the C entry point, exact
search of a few queries on one thread, search parameters for a selection of rows, and
reserving a FAISS byte vector's capacity."""

from __future__ import annotations

from typing import Any

import faiss
import numpy as np

from .runtime import one_faiss_thread

FEW_QUERIES = 20  # FAISS's own threshold for exact search: BLAS at or above it


def faiss_search(index, queries: np.ndarray, k: int,
                 params: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """`index.search(queries, k, params=params)` through FAISS's C entry point. FAISS's
    Python wrapper would re-check and re-convert queries the caller has just checked
    (float32, C-contiguous, (n, dim)); for a single query that repeated work is a few
    percent."""
    n = len(queries)
    sims = np.empty((n, k), dtype=np.float32)
    rows = np.empty((n, k), dtype=np.int64)
    index.search_c(n, faiss.swig_ptr(queries), k, faiss.swig_ptr(sims), faiss.swig_ptr(rows),
                   params)
    return sims, rows


def selected(selector: Any) -> Any:
    """FAISS's plain search parameters that let a flat search see only what `selector`
    (a FAISS ID selector) allows."""
    params = faiss.SearchParameters()
    params.sel = selector
    return params


def flat_search(index, queries: np.ndarray, k: int,
                params: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """`faiss_search` on a flat (exact) index: a few queries run on one thread, where
    OpenMP would only stall on busy cores (runtime.py); at FEW_QUERIES and more FAISS
    uses BLAS, which pays for its threads."""
    if len(queries) >= FEW_QUERIES or len(queries) == 1:  # FAISS runs one query on one thread
        return faiss_search(index, queries, k, params)
    with one_faiss_thread():
        return faiss_search(index, queries, k, params)


def reserve_bytes(vector, size: int) -> None:
    """Give a FAISS byte vector capacity for `size` bytes, keeping its contents.

    SWIG offers no `reserve`, but std::vector never gives capacity back on a shrinking
    `resize`, so growing to `size` and back leaves it reserved (its pages are touched now,
    which the filled index would do anyway)."""
    used = vector.size()
    if size > used and vector.is_owned:
        vector.resize(size)
        vector.resize(used)


def byte_view(vector, width: int) -> np.ndarray:
    """A writable uint8 (rows, width) view of a FAISS byte vector (codes of a flat index)."""
    flat = faiss.rev_swig_ptr(vector.data(), vector.size())
    return flat.reshape(-1, width)

"""Search backends behind one contract (the protocols of base.py): the memory never knows which.

    base.py      the contract: SearchResult and the protocols Searchable, Compactable,
                 Persistent, Tunable; VectorIndex, a base for in-process backends
    exact.py     exact search (FAISS BLAS kNN over a matrix)
    rows.py      RowIndex: rows, deletion, filtered search and compaction of FAISS indexes
    hnsw.py      HNSW graph
    ivfpq.py     IVF-PQ with float16 re-ranking
    saved.py     the saved files of an index: format, checksums, in-place scrubbing
    runtime.py   process-wide FAISS thread and C-heap settings
    quality.py   recall against exact search, intrinsic dimension, tuning
    lifecycle.py ManagedIndex: an index kept in step with its store
"""

from typing import Any

from .base import (
    EXHAUSTIVE,
    MISSING_ID,
    Compactable,
    ExactlySearchable,
    HoldsOut,
    Persistent,
    Searchable,
    SearchResult,
    Selection,
    Tunable,
    VectorIndex,
)
from .exact import ExactIndex
from .hnsw import HNSWIndex
from .ivfpq import IVFPQIndex
from .rows import RowIndex
from .saved import IndexFileError

INDEX_TYPES: dict[str, type[Searchable]] = {
    ExactIndex.kind: ExactIndex,
    HNSWIndex.kind: HNSWIndex,
    IVFPQIndex.kind: IVFPQIndex,
}
INDEX_CHOICES = ("auto", *INDEX_TYPES)


def make_index(kind: str, dim: int, **params: Any) -> Searchable:
    from ..errors import InvalidInputError

    if kind not in INDEX_TYPES:
        raise InvalidInputError(f"unknown index type {kind!r}; choose from {', '.join(INDEX_CHOICES)}")
    return INDEX_TYPES[kind](dim, **params)


__all__ = [
    "EXHAUSTIVE",
    "INDEX_CHOICES",
    "INDEX_TYPES",
    "MISSING_ID",
    "Compactable",
    "ExactIndex",
    "ExactlySearchable",
    "HNSWIndex",
    "HoldsOut",
    "IVFPQIndex",
    "IndexFileError",
    "Persistent",
    "RowIndex",
    "SearchResult",
    "Searchable",
    "Selection",
    "Tunable",
    "VectorIndex",
    "make_index",
]

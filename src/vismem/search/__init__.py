"""Search backends behind one contract (the protocols of base.py): the memory never knows which.

    base.py      the contract: protocols Searchable, Compactable, Persistent, Tunable,
                 ExactlySearchable, HoldsOut; SearchResult; Selection (a keyed subset);
                 VectorIndex, a base for in-process backends
    exact.py     exact search: a FAISS flat index, O(dim) removal
    rows.py      RowIndex: what the FAISS indexes share: rows, deletion, compaction
    row_ids.py   the item id of each row and the row of each id
    hnsw.py      HNSW graph
    ivfpq.py     IVF-PQ with float16 re-ranking, re-clustering as it grows
    restrict.py  searching within a Selection: bitmap selector or exact subset, cached
    saved.py     the saved files of an index: format, checksums, in-place scrubbing
    calls.py     lean FAISS calls (C entry point, one thread for a few exact queries)
    runtime.py   process-wide FAISS thread and C-heap settings
    choice.py    which kind `auto` picks: a pure function
    quality.py   the recall record, exact ground truth, recall@k, intrinsic dimension
    tuning.py    recall on unseen queries: per-effort measures, intervals, ledger, reservoir
    tuner.py     Tuner: measures and tunes the live index on unseen vectors
    lifecycle.py ManagedIndex: an index kept in step with its store"""

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

"""Search backends behind one interface (`VectorIndex`): the memory never knows which."""

from typing import Any

from .approx import HNSWIndex, IndexFileError, IVFPQIndex, RowIndex
from .base import MISSING_ID, SearchResult, VectorIndex
from .exact import ExactIndex

INDEX_TYPES: dict[str, type[VectorIndex]] = {
    ExactIndex.kind: ExactIndex,
    HNSWIndex.kind: HNSWIndex,
    IVFPQIndex.kind: IVFPQIndex,
}
INDEX_CHOICES = ("auto", *INDEX_TYPES)


def make_index(kind: str, dim: int, **params: Any) -> VectorIndex:
    from ..errors import InvalidInputError

    if kind not in INDEX_TYPES:
        raise InvalidInputError(f"unknown index type {kind!r}; choose from {', '.join(INDEX_CHOICES)}")
    return INDEX_TYPES[kind](dim, **params)


__all__ = ["INDEX_CHOICES", "INDEX_TYPES", "MISSING_ID", "ExactIndex", "HNSWIndex", "IVFPQIndex",
           "IndexFileError", "RowIndex", "SearchResult", "VectorIndex", "make_index"]

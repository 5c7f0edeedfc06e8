"""Search backends behind one interface (`VectorIndex`): the memory never knows which."""

from .base import MISSING_ID, SearchResult, VectorIndex
from .exact import ExactIndex

INDEX_TYPES: dict[str, type[VectorIndex]] = {ExactIndex.kind: ExactIndex}


def make_index(kind: str, dim: int) -> VectorIndex:
    from ..errors import InvalidInputError

    if kind not in INDEX_TYPES:
        raise InvalidInputError(f"unknown index type {kind!r}; choose from {', '.join(INDEX_TYPES)}")
    return INDEX_TYPES[kind](dim)


__all__ = ["INDEX_TYPES", "MISSING_ID", "ExactIndex", "SearchResult", "VectorIndex", "make_index"]

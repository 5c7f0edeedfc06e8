"""The search interface every index backend implements.

Similarity is the inner product of L2-normalised vectors, i.e. cosine similarity.
An index is derived data: the store is the truth, and any index can be rebuilt from it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, Hashable

import numpy as np

MISSING_ID = -1


@dataclass(frozen=True)
class SearchResult:
    """Nearest neighbours of a batch of queries, best first.

    `similarities` float32 (n_queries, k) and `ids` int64 (n_queries, k). Where fewer
    than k items were searchable, the row ends with id -1 and similarity -inf.
    """

    similarities: np.ndarray
    ids: np.ndarray


@dataclass(frozen=True, eq=False)
class Selection:
    """A subset of items to search among: sorted unique int64 `ids`, and a `key` such that
    equal keys mean equal ids, under which an index may cache what it derives (a row
    bitmap, a FAISS ID selector) until its own rows change."""

    ids: np.ndarray
    key: Hashable


class VectorIndex(ABC):
    """Maps item ids to vectors and finds the nearest ones by cosine similarity."""

    kind: ClassVar[str]
    persistent: ClassVar[bool] = False  # saved beside the store (else rebuilt at open)

    def __init__(self, dim: int) -> None:
        self.dim = dim

    @abstractmethod
    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add vectors float32 (n, dim) under ids int64 (n,)."""

    @abstractmethod
    def remove(self, ids: np.ndarray) -> None:
        """Forget ids; unknown ids are ignored. A removed id is never returned again."""

    @abstractmethod
    def search(
        self, queries: np.ndarray, k: int, *, allowed_ids: np.ndarray | None = None
    ) -> SearchResult:
        """k nearest ids for each query; with `allowed_ids`, only among those ids."""

    @abstractmethod
    def __len__(self) -> int:
        """Number of live (searchable) vectors."""

    def nbytes(self) -> int:
        """Memory the index holds, in bytes."""
        return 0

    @abstractmethod
    def missing(self, item_id: int) -> bool:
        """True if the id was never added (removed ids count as present)."""

    def reserve(self, rows: int) -> None:
        """Make room for `rows` items in all when that is known ahead (a build from the
        store): growing to it then never holds an outgrown copy beside the new one."""

    def scrub_saved(self, directory) -> None:
        """Zero removed items' bytes in the saved files (indexes that save them)."""

    @property
    def tombstones(self) -> int:
        """Removed items whose slots are not yet reclaimed."""
        return 0

    def needs_compaction(self) -> bool:
        return False

    def compact(self) -> None:
        """Reclaim the slots of removed items."""

    def describe(self) -> dict:
        size = len(self)
        return {"type": self.kind, "size": size, "rows": size, "tombstones": self.tombstones,
                "bytes": self.nbytes(), "bytes_per_vector": round(self.nbytes() / max(size, 1), 1),
                "params": {}}


def pad_result(similarities: np.ndarray, ids: np.ndarray, k: int) -> SearchResult:
    """Widen (n, m<=k) results to (n, k) with the documented -1 / -inf padding."""
    n, found = ids.shape
    if found == k:
        return SearchResult(similarities, ids)
    out_s = np.full((n, k), -np.inf, dtype=np.float32)
    out_i = np.full((n, k), MISSING_ID, dtype=np.int64)
    out_s[:, :found] = similarities
    out_i[:, :found] = ids
    return SearchResult(out_s, out_i)

"""The contract every search backend implements, as typed protocols.

Similarity is the inner product of L2-normalised vectors, i.e. cosine similarity.
An index is derived data: the store is the truth, and any index can be rebuilt from it.

A backend implements `Searchable`, and whichever of the others it supports:

    Searchable   add / remove / search / len / missing / live_ids / reserve / describe
    Compactable  removed items leave tombstones, reclaimed by `compact`
    Persistent   saved beside the store (`save`, `load`, `scrub_saved`, `held_bytes`), else
                 rebuilt at open
    Tunable      a search-effort knob: `tune_values` by rising cost, `set_param`, `params`
    ExactlySearchable  `search_exact` over its own vectors: the truth tuning measures against
    HoldsOut     `held_out(ids)`: items out for a while, to be measured as unseen queries

A search may be restricted to a `Selection` of items (a filter, or everything but the
hard-pruned items).

`ManagedIndex` (lifecycle.py) keeps any such backend in step with the store, checking
at run time which of the optional protocols it implements. `VectorIndex` is a base for
in-process backends that implements the optional parts trivially.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Hashable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

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
    """The items a search is restricted to: `ids` int64, sorted and unique, named by `key`.

    Equal keys mean equal selections, so an index may cache what it derives from one (a
    row bitmap and FAISS ID selector, or the vectors of a small subset) under its key,
    until the index's own rows change. A catalog builds one per (filter, catalog
    version); `key=None` is never cached. With `exclude`, the selection is every item
    *except* `ids`: hard-pruned items are a few ids that stand for almost all the items.

        >>> Selection.of([7, 3, 3], key=("label", "cat", 12)).ids
        array([3, 7])
    """

    ids: np.ndarray
    key: Hashable | None = None
    exclude: bool = False

    def __post_init__(self) -> None:
        ids = np.asarray(self.ids)
        if ids.dtype != np.int64 or ids.ndim != 1:
            raise TypeError("Selection ids must be a 1-d int64 array (Selection.of converts)")
        if len(ids) > 1 and not (ids[1:] > ids[:-1]).all():
            raise ValueError("Selection ids must be sorted and unique (Selection.of sorts)")

    @classmethod
    def of(cls, ids: Iterable[int] | np.ndarray, key: Hashable | None = None, *,
           exclude: bool = False) -> Selection:
        """A selection of any ids (sorted and deduplicated here)."""
        return cls(np.unique(np.fromiter(ids, np.int64) if not isinstance(ids, np.ndarray)
                             else ids.astype(np.int64, copy=False)), key, exclude)


@runtime_checkable
class Searchable(Protocol):
    """Maps item ids to vectors and finds the nearest ones by cosine similarity."""

    kind: ClassVar[str]  # the name `--index` selects it by
    dim: int

    def __init__(self, dim: int, **params: Any) -> None:
        """An empty index for `dim`-d vectors; `params` are those `describe` reports."""

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add vectors float32 (n, dim) under unique ids int64 (n,), usually increasing
        (the store assigns them so). Ids the index already holds (an edit-log replay)
        are skipped."""

    def remove(self, ids: np.ndarray) -> None:
        """Forget ids; unknown ids are ignored. A removed id is never returned again."""

    def search(self, queries: np.ndarray, k: int, *,
               allowed_ids: Selection | np.ndarray | None = None) -> SearchResult:
        """k nearest live ids for each query (n, dim); with `allowed_ids`, only among
        those (a `Selection`, or plain ids). A row holds k ids whenever k items are
        searchable."""
        ...

    def __len__(self) -> int:
        """Number of live (searchable) vectors."""
        ...

    def missing(self, item_id: int) -> bool:
        """True if the id was never added (removed ids count as present)."""
        ...

    def live_ids(self) -> np.ndarray:
        """The live ids, int64, in any order: checked against the store's at open."""
        ...

    def reserve(self, rows: int) -> None:
        """Make room for `rows` items in all when that is known ahead (a build from the
        store), so growing to it never holds an outgrown copy beside the new one; a
        backend without growable buffers does nothing."""

    def describe(self) -> dict[str, Any]:
        """type, size, rows, tombstones, bytes, bytes_per_vector and params, for `info`."""
        ...


@runtime_checkable
class Compactable(Protocol):
    """Removed items leave tombstones (slots still held) until `compact` reclaims them."""

    @property
    def tombstones(self) -> int:
        """Removed items whose slots are not yet reclaimed."""
        ...

    def needs_compaction(self) -> bool:
        """True when tombstones have piled up enough to cost search time or memory."""
        ...

    def compact(self, progress: Callable[[int], None] | None = None) -> None:
        """Reclaim the slots of removed items (the saved files, if any, are stale after);
        `progress(n)` as n more live items are in the compacted index."""


@runtime_checkable
class Persistent(Protocol):
    """Saved beside the store in a directory of its own, reloaded at open."""

    def save(self, directory: Path, extra: dict[str, Any]) -> None:
        """Write the index crash-safely, with `extra` (JSON) returned by `load`."""

    @classmethod
    def load(cls, directory: Path, dim: int, meta: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        """(index, extra and format fields); raises `IndexFileError` (saved.py) if the
        files are missing, damaged or of another kind. `meta`: the saved meta.json, when
        the caller has read it (`saved.saved_meta`) under the same hold of the lock."""
        ...

    def scrub_saved(self, directory: Path) -> bool:
        """Zero, in the saved files, the bytes of items removed since the last save; False
        when the files are not the ones this index wrote (another process saved since)."""
        ...

    def held_bytes(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(the ids it holds of these, their vectors' bytes as its saved files keep them:
        uint8 (n, bytes per vector)): what a removal's check looks for (remnants.py)."""
        ...


EXHAUSTIVE = "exhaustive"  # the effort past every `tune_values`: search every vector exactly


@runtime_checkable
class Tunable(Protocol):
    """Search effort that trades speed for recall, set to the least reaching the target."""

    tune_values: ClassVar[tuple[Any, ...]]  # effort settings by rising cost

    def set_param(self, value: Any) -> None:
        """Search with effort `value` (one of `tune_values`, or `EXHAUSTIVE`: exact search
        over the stored vectors, the fallback when no effort reaches the target)."""

    @property
    def effort(self) -> Any:
        """The effort searches use now (what `set_param` last set)."""
        ...

    def effort_in(self, params: dict[str, Any]) -> Any:
        """The effort an index with these `params` (as `params` gives them) searches with."""
        ...

    @property
    def params(self) -> dict[str, Any]:
        """Build and search parameters (JSON): enough to construct the same index."""
        ...


@runtime_checkable
class ExactlySearchable(Protocol):
    """Can search its own vectors exactly: the ground truth recall is measured against
    (else the store's vectors are streamed for it)."""

    def search_exact(self, queries: np.ndarray, k: int) -> SearchResult:
        """k nearest live ids by exact search over the vectors as the index stores them."""
        ...


@runtime_checkable
class HoldsOut(Protocol):
    """Can take items out for a while as if they had never been added, so that they can
    be measured as unseen queries, and put them back."""

    def held_out(self, ids: np.ndarray) -> AbstractContextManager[None]:
        """Within the context the items are out of the index; after it, back in."""
        ...


class VectorIndex(ABC):
    """Base for in-process backends: the abstract parts of `Searchable`, and `describe`."""

    kind: ClassVar[str]

    def __init__(self, dim: int) -> None:
        self.dim = dim

    @abstractmethod
    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None: ...

    @abstractmethod
    def remove(self, ids: np.ndarray) -> None: ...

    @abstractmethod
    def search(self, queries: np.ndarray, k: int, *,
               allowed_ids: Selection | np.ndarray | None = None) -> SearchResult: ...

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def missing(self, item_id: int) -> bool: ...

    @abstractmethod
    def live_ids(self) -> np.ndarray: ...

    @abstractmethod
    def reserve(self, rows: int) -> None: ...

    def nbytes(self) -> int:
        """Memory the index holds, in bytes."""
        return 0

    def describe(self) -> dict[str, Any]:
        size = len(self)
        return {"type": self.kind, "size": size, "rows": size, "tombstones": 0,
                "bytes": self.nbytes(), "bytes_per_vector": round(self.nbytes() / max(size, 1), 1),
                "params": {}}


def padded(rows: np.ndarray) -> bool:
    """Whether FAISS left a slot empty (-1) in some row (n, k) of rows or ids: it puts them
    last in a row. A numpy min costs ~3 us after a search, so a single query reads its
    last entry alone."""
    return rows.item(-1) < 0 if len(rows) == 1 else bool(rows[:, -1].min(initial=0) < 0)


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


def ascending_ids(items: Collection[int] | np.ndarray) -> np.ndarray:
    """`items` as an ascending int64 array. An array, or a store's live ids (which offer
    `__array__`), converts without a Python loop: 1M ids through `sorted` took ~130 ms
    of every open."""
    if isinstance(items, np.ndarray) or hasattr(items, "__array__"):
        return np.sort(np.asarray(items, dtype=np.int64))
    return np.fromiter(sorted(items), np.int64, count=len(items))

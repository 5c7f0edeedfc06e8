"""Searching within a `Selection` (base.py): what an index derives from one, cached by key.

An index restricts a search in one of two ways: exact search over a copy of a small
selection's vectors, or its own search with a FAISS ID selector, a bitmap over its rows,
that skips the other rows. Deriving either costs O(rows), so it is done once per
selection key and kept (the newest `RESTRICTIONS_KEPT`) until the index's rows change.
The search that follows is the FAISS search with that selector, as a caller would make it
bare; the exact copy serves selections small enough that scanning them beats walking an
index that hides almost all of its rows.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, TypeVar

import faiss
import numpy as np

from .base import Selection

# A selection is searched exactly, over a copy of its vectors, when that is the cheaper:
# exact costs rows x dim, a graph walk hiding all but a share s of its rows about dim / s,
# so exact wins below about C * sqrt(rows in the index). Measured at 1M 64-d (HNSW at
# ef 16): exact 0.6 ms vs 1.1 ms with the selector at 2%, 1.7 vs 1.4 ms at 5%, 5.6 vs
# 0.7 ms at 10%, and the selector's recall was 0.65-0.9 below 2%: C = 40. Always for a
# copy of at most EXACT_FLOATS_ALWAYS floats, never beyond EXACT_FLOATS_MAX (256 MB).
EXACT_ROWS_PER_ROOT = 40
EXACT_FLOATS_ALWAYS = 4096 * 512
EXACT_FLOATS_MAX = 64 << 20
RESTRICTIONS_KEPT = 8  # selections whose derived bitmaps/subsets are kept, newest last
_S = TypeVar("_S")  # what derive takes: a selection, or None for "every live row"


@dataclass(eq=False)
class Restriction:
    """What a search within some rows needs, derived once per selection.

    Either `exact` (a FAISS flat index over the vectors of a small selection, whose
    result i is item `ids[i]`) or `bits`, a bitmap over all rows that `selector` (a FAISS
    ID selector) reads, with the index's search `params` built for `params_for`.
    """

    count: int                      # allowed rows
    rows: np.ndarray | None = None  # of `bits`, listed when a search needs them (all_rows)
    exact: Any = None
    ids: np.ndarray | None = None
    bits: np.ndarray | None = None
    selector: Any = None
    params: Any = None
    params_for: Any = None

    def all_rows(self) -> np.ndarray:
        if self.rows is None:
            assert self.bits is not None
            self.rows = np.flatnonzero(np.unpackbits(self.bits, bitorder="little"))
        return self.rows


def restriction(allowed: np.ndarray, dim: int,
                subset_of: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]] | None) -> Restriction:
    """The restriction to the rows where `allowed` (bool, one per row) holds: an exact
    copy of their vectors when few (`subset_of(rows)` gives their ids and vectors), else a
    bitmap selector (always, without `subset_of`: "every live row" is searched as the
    index searches)."""
    count = int(allowed.sum())
    if subset_of is not None and exact_is_cheaper(count, len(allowed), dim):
        rows = np.flatnonzero(allowed)
        exact, ids = faiss.IndexFlatIP(dim), np.empty(0, np.int64)
        if count:
            ids, vectors = subset_of(rows)
            exact.add(np.ascontiguousarray(vectors, dtype=np.float32))
        # the ids kept beside the copy: a search names its results with one gather
        return Restriction(count, exact=exact, ids=np.ascontiguousarray(ids, dtype=np.int64))
    bits = np.packbits(allowed, bitorder="little")
    return Restriction(count, bits=bits,
                       selector=faiss.IDSelectorBitmap(len(allowed), faiss.swig_ptr(bits)))


def exact_is_cheaper(count: int, rows: int, dim: int) -> bool:
    """Whether `count` of an index's `rows` are better searched exactly (see above).

        >>> exact_is_cheaper(20_000, 1_000_000, 64), exact_is_cheaper(100_000, 1_000_000, 64)
        (True, False)
    """
    floats = count * dim
    return floats <= EXACT_FLOATS_ALWAYS or (
        floats <= EXACT_FLOATS_MAX and count <= EXACT_ROWS_PER_ROOT * math.sqrt(rows))


class Restrictions:
    """Restrictions by selection key, the newest `RESTRICTIONS_KEPT`; `clear` it whenever
    the index's rows change (add, remove, compaction)."""

    def __init__(self) -> None:
        self._kept: dict[Hashable, Restriction] = {}
        self._last: tuple[Selection, Restriction] | None = None  # the last keyed selection asked for

    def __len__(self) -> int:
        return len(self._kept)

    def __getitem__(self, key: Hashable) -> Restriction:
        return self._kept[key]

    def clear(self) -> None:
        self._kept.clear()
        self._last = None

    def of(self, allowed: Selection | np.ndarray, derive: Callable[[Selection], Restriction]) -> Restriction:
        """The restriction to `allowed`, derived at most once per key. A catalog hands out
        the same selection object for a filter until its next edit, so the one asked for
        last is known by identity, without hashing its key (a filter) on every search."""
        last = self._last
        if last is not None and last[0] is allowed:
            return last[1]
        selection, key = as_selection(allowed)
        found = self.get(key, derive, selection)
        if key is not None:
            self._last = (selection, found)
        return found

    def get(self, key: Hashable | None, derive: Callable[[_S], Restriction], selection: _S) -> Restriction:
        """The restriction kept under `key`, else `derive(selection)` (kept, unless key is None)."""
        found = self._kept.get(key) if key is not None else None
        if found is None:
            found = derive(selection)
            if key is not None:
                if len(self._kept) >= RESTRICTIONS_KEPT:
                    del self._kept[next(iter(self._kept))]  # the oldest
                self._kept[key] = found
        return found


def as_selection(allowed: Selection | np.ndarray) -> tuple[Selection, Hashable | None]:
    """(the selection, its cache key): plain ids make an unkeyed selection, never kept."""
    if isinstance(allowed, Selection):
        return allowed, (allowed.key, allowed.exclude) if allowed.key is not None else None
    return Selection.of(allowed), None

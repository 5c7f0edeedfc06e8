"""`RowIndex`: what FAISS indexes in vismem share: rows, deletion, filtered search,
compaction and their saved files.

Both FAISS backends (hnsw.py, ivfpq.py) keep FAISS rows 0..n-1 in the order items were
added, plus the item id of each row (row_ids.py) and whether the row is live. That gives:

- deletion in O(1): the row is marked dead and its vector bytes are zeroed at once, in
  RAM and in the saved files; searches skip dead rows with a FAISS ID selector, so a
  removed item is never returned, and the result is refilled exactly if a row comes back
  short, so a query still gets k live items whenever k exist;
- growth without rebuild: new rows are appended;
- compaction: when dead rows pass `COMPACT_FRACTION`, the live rows are rebuilt into a
  fresh index, freeing the memory the dead ones held.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, ClassVar

import faiss
import numpy as np

from . import saved
from .base import EXHAUSTIVE, SearchResult, Selection, VectorIndex, pad_result, padded
from .calls import byte_view, faiss_search, flat_search, reserve_bytes, selected
from .restrict import Restriction, Restrictions, restriction
from .row_ids import RowIds
from .runtime import release_freed_memory
from .saved import IndexFileError

COMPACT_FRACTION = 0.2   # compact when more than this share of rows are dead
_LIVE = ("live rows",)   # the cache key of "every live row", when some rows are dead
# Adds at least this large hand freed heap back to the OS afterwards (see release_freed_memory).
RELEASE_AFTER_ROWS = 1024


class RowIndex(VectorIndex):
    """Shared row bookkeeping, deletion, filtering and persistence for FAISS indexes:
    `Searchable`, `Compactable`, `Persistent` and `Tunable` (base.py)."""

    tune_param: ClassVar[str]
    tune_values: ClassVar[tuple[Any, ...]]
    _faiss: Any  # the FAISS object that is saved

    def __init__(self, dim: int, exhaustive: bool = False) -> None:
        super().__init__(dim)
        self.exhaustive = exhaustive  # search every vector exactly (see set_param)
        self._row_ids = RowIds()
        self._live = np.zeros(1024, dtype=bool)
        self._n_rows = 0
        self._n_live = 0
        self._saved: saved.SavedLayout | None = None  # layout of the files last written
        self._dead_since_save: list[int] = []
        self._restrictions = Restrictions()  # derived from selections; cleared when rows change

    # ---- backend hooks ---------------------------------------------------------------

    def _add_rows(self, vectors: np.ndarray, rows: np.ndarray) -> None:
        raise NotImplementedError

    def _search_plain(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Search every row at the tuned effort (no selector): the common case."""
        raise NotImplementedError

    def _tuned_effort(self) -> Any:
        """The one of `tune_values` searches use now (hashable), unless exhaustive."""
        raise NotImplementedError

    def _effort_in(self, params: dict[str, Any]) -> Any:
        """The one of `tune_values` that `params` set."""
        raise NotImplementedError

    def _restricted_index(self) -> Any:
        """The FAISS index a restricted search runs on."""
        raise NotImplementedError

    def _restricted_params(self, selector: Any, k: int, selectivity: float) -> Any:
        """FAISS search parameters for k results among a `selectivity` share of the
        rows, which `selector` picks: the effort widened so that k are still found."""
        raise NotImplementedError

    def _storage(self):
        """The FAISS flat-codes index holding row r's vector as code r."""
        raise NotImplementedError

    def _forget_rows(self, rows: np.ndarray) -> None:
        """Zero (or drop) the stored bytes of dead rows."""
        raise NotImplementedError

    def _empty_like(self) -> RowIndex:
        raise NotImplementedError

    def _restore(self, loaded: Any, meta: dict) -> None:
        """Take the FAISS object read from the saved files."""
        raise NotImplementedError

    @property
    def params(self) -> dict[str, Any]:
        raise NotImplementedError

    def _set_effort(self, value: Any) -> None:
        """Search with this one of `tune_values` from now on."""
        setattr(self, self.tune_param, int(value))

    @property
    def effort(self) -> Any:
        return EXHAUSTIVE if self.exhaustive else self._tuned_effort()

    def effort_in(self, params: dict[str, Any]) -> Any:
        return EXHAUSTIVE if params.get("exhaustive") else self._effort_in(params)

    def set_param(self, value: Any) -> None:
        """Search with effort `value` from now on: one of `tune_values`, or `EXHAUSTIVE`
        (exact search over the stored vectors, where no effort reaches the target)."""
        self.exhaustive = value == EXHAUSTIVE
        if not self.exhaustive:
            self._set_effort(value)

    # ---- stored vectors --------------------------------------------------------------

    def _codes(self) -> np.ndarray:
        """A writable uint8 (rows, code_size) view of the stored vectors."""
        storage = self._storage()
        return byte_view(storage.codes, storage.code_size)

    def _vectors(self, rows: np.ndarray) -> np.ndarray:
        """float32 vectors of rows, as stored (exact for float32 storage)."""
        return self._storage().sa_decode(np.ascontiguousarray(self._codes()[rows]))

    def reserve(self, rows: int) -> None:
        """Size the growable buffers for `rows` rows in all, when that is known ahead (a
        build from the store, compaction): growing to it then never doubles a buffer, which
        would hold the old and new copies at once."""
        self._row_ids.reserve(rows)
        if rows > len(self._live):
            self._live = np.resize(self._live, rows)
        reserve_bytes(self._storage().codes, rows * self._storage().code_size)

    # ---- bookkeeping -----------------------------------------------------------------

    def __len__(self) -> int:
        return self._n_live

    @property
    def n_rows(self) -> int:
        return self._n_rows

    @property
    def tombstones(self) -> int:
        return self._n_rows - self._n_live

    def needs_compaction(self) -> bool:
        return self.tombstones > COMPACT_FRACTION * max(self._n_rows, 1)

    def missing(self, item_id: int) -> bool:
        return not self._row_ids.known(np.array([item_id], dtype=np.int64))[0]

    def live_ids(self) -> np.ndarray:
        """Live ids in row order: ascending unless items were added out of order."""
        return self._row_ids.ids[self._live[: self._n_rows]]

    def _rows_of(self, ids: np.ndarray) -> np.ndarray:
        """Rows of the given item ids that are live (unknown or dead ids are dropped)."""
        rows, found = self._row_ids.find(ids)
        return rows[found & self._live[rows]]

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        ids = np.asarray(ids, dtype=np.int64).ravel()
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, self.dim)
        ids, vectors = self._new_only(ids, vectors)
        if len(ids) == 0:
            return
        n, m = self._n_rows, len(ids)
        if n + m > len(self._live):
            self._live = np.resize(self._live, max(len(self._live) * 2, n + m))
        rows = np.arange(n, n + m, dtype=np.int64)
        self._restrictions.clear()
        self._add_rows(vectors, rows)
        self._row_ids.append(ids)
        self._live[n : n + m] = True
        self._n_rows += m
        self._n_live += m
        if m >= RELEASE_AFTER_ROWS:
            release_freed_memory()

    def _new_only(self, ids: np.ndarray, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The batch without the ids the index already holds (catching up from the edit
        log may replay adds); a replayed prefix is cut off as a view, without a copy."""
        ascending = len(ids) < 2 or bool((ids[1:] > ids[:-1]).all())
        if not ascending and len(np.unique(ids)) != len(ids):
            raise ValueError("ids of one add must be unique")
        if self._n_rows == 0:
            return ids, vectors
        if ascending:  # ids past the largest held are new: only a prefix can be known
            cut = int(np.searchsorted(ids, self._row_ids.max_id(), side="right"))
            if self._row_ids.known(ids[:cut]).all():
                return ids[cut:], vectors[cut:]
        new = ~self._row_ids.known(ids)
        return (ids, vectors) if new.all() else (ids[new], vectors[new])

    def remove(self, ids: np.ndarray) -> None:
        rows = self._rows_of(ids)
        if len(rows) == 0:
            return
        self._restrictions.clear()
        self._live[rows] = False
        self._n_live -= len(rows)
        self._forget_rows(rows)
        self._dead_since_save += rows.tolist()

    def compact(self, progress: Callable[[int], None] | None = None) -> None:
        """Rebuild from the live rows only: dead rows' memory is freed and rows renumbered
        (in id order); `progress(n)` as n more rows are in."""
        ids = self._row_ids.ids
        live_rows = np.flatnonzero(self._live[: self._n_rows])
        if not self._row_ids.ascending:
            live_rows = live_rows[np.argsort(ids[live_rows], kind="stable")]
        fresh = self._empty_like()
        fresh.reserve(len(live_rows))
        for start in range(0, len(live_rows), 65536):  # bounded extra memory while rebuilding
            chunk = live_rows[start : start + 65536]
            fresh.add(ids[chunk], self._vectors(chunk))
            if progress:
                progress(len(chunk))
        self.__dict__.update(fresh.__dict__)  # the saved files are stale now: save next
        release_freed_memory()

    # ---- search ----------------------------------------------------------------------

    def search(
        self, queries: np.ndarray, k: int, *, allowed_ids: Selection | np.ndarray | None = None
    ) -> SearchResult:
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            queries = queries.reshape(-1, self.dim)
        n = self._n_rows
        if allowed_ids is None and self._n_live == n >= k:
            # The common case, kept lean (a single query costs ~100 us of FAISS work, and
            # each numpy call here ~1 us): no filter, no removed rows, enough items.
            sims, rows = (self._search_plain(queries, k) if not self.exhaustive
                          else flat_search(self._storage(), queries, k))
            if not padded(rows):
                return SearchResult(sims, self._row_ids.of_rows(rows))
        within = self._restriction(allowed_ids)
        want = min(k, self._n_live if within is None else within.count)
        if want == 0:
            return pad_result(np.empty((len(queries), 0), np.float32),
                              np.empty((len(queries), 0), np.int64), k)
        if within is None:
            sims, rows = (self._search_plain(queries, want) if not self.exhaustive
                          else flat_search(self._storage(), queries, want))
        elif within.ids is not None:  # a small selection: exact search over a copy of it
            sims, found = flat_search(within.exact, queries, want)
            ids = within.ids.take(found)  # want <= count: every slot is found
            return SearchResult(sims, ids) if want == k else pad_result(sims, ids, k)
        elif self.exhaustive:
            if within.params_for != EXHAUSTIVE:
                within.params, within.params_for = selected(within.selector), EXHAUSTIVE
            sims, rows = flat_search(self._storage(), queries, want, within.params)
        else:
            if within.params_for != (self._tuned_effort(), want):
                within.params = self._restricted_params(within.selector, want,
                                                        within.count / n)
                within.params_for = (self._tuned_effort(), want)
            sims, rows = faiss_search(self._restricted_index(), queries, want, within.params)
        if padded(rows):
            # a walk that found too few (FAISS pads a row with -1): refill such rows exactly
            short = np.flatnonzero(rows[:, -1] < 0)
            pool = within.all_rows() if within is not None else np.flatnonzero(self._live[:n])
            sims[short], rows[short] = self._exact_rows(queries[short], want, pool)
        ids = self._row_ids.of_rows(rows)
        return SearchResult(sims, ids) if want == k else pad_result(sims, ids, k)

    def _restriction(self, allowed: Selection | np.ndarray | None) -> Restriction | None:
        """What searching within `allowed` needs, kept under the selection's key (and for
        the live rows, when some are dead) until the rows change. None: every row."""
        if allowed is None:
            if self._n_live == self._n_rows:
                return None
            return self._restrictions.get(_LIVE, self._restrict, None)
        return self._restrictions.of(allowed, self._restrict)

    def _restrict(self, selection: Selection | None) -> Restriction:
        n = self._n_rows
        live = self._live[:n]
        if selection is None:
            allowed = live
        elif selection.exclude:
            allowed = live.copy()
            allowed[self._rows_of(selection.ids)] = False
        else:
            allowed = np.zeros(n, dtype=bool)
            allowed[self._rows_of(selection.ids)] = True
        # every live row (some are dead) is searched as an unrestricted search would be,
        # so that what recall measures is what searches get once the dead rows are gone
        return restriction(allowed, self.dim, self._subset if selection is not None else None)

    def _subset(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self._row_ids.of_rows(rows), self._vectors(rows)

    def search_exact(self, queries: np.ndarray, k: int) -> SearchResult:
        """k nearest live ids by exact search over the stored vectors, whatever the effort."""
        exhaustive, self.exhaustive = self.exhaustive, True
        try:
            return self.search(queries, k)
        finally:
            self.exhaustive = exhaustive

    def _exact_rows(self, queries: np.ndarray, k: int, rows: np.ndarray):
        sims, found = faiss.knn(queries, self._vectors(rows), k, metric=faiss.METRIC_INNER_PRODUCT)
        return sims, np.where(found >= 0, rows[np.maximum(found, 0)], -1)

    # ---- reporting -------------------------------------------------------------------

    def bytes_per_vector(self) -> float:
        return self.nbytes() / max(self._n_live, 1)

    def describe(self) -> dict:
        return {
            "type": self.kind,
            "size": len(self),
            "rows": self._n_rows,
            "tombstones": self.tombstones,
            "bytes": self.nbytes(),
            "bytes_per_vector": round(self.bytes_per_vector(), 1),
            "params": self.params,
        }

    # ---- saved files (format: saved.py) ----------------------------------------------

    def save(self, directory: Path, extra: dict[str, Any]) -> None:
        """Write the index to `directory` (crash-safe: meta.json is written last)."""
        n = self._n_rows
        self._saved = saved.write(
            directory, write_index=self._write_faiss, codes=self._codes(),
            ids=self._row_ids.ids, live=self._live[:n],
            meta={"kind": self.kind, "dim": self.dim, "params": self.params,
                  "live": self._n_live, **extra})
        self._dead_since_save = []

    def _write_faiss(self, file: BinaryIO) -> None:
        # streamed a MiB at a time: no copy of the index in RAM (see saved.write)
        writer = faiss.PyCallbackIOWriter(file.write)  # type: ignore[attr-defined]  # (loaded by SWIG)
        faiss.write_index(self._faiss, writer)

    @staticmethod
    def _read_faiss(file: BinaryIO) -> Any:
        # read a MiB at a time from the file saved.read checked: no copy of the index in RAM
        reader = faiss.PyCallbackIOReader(file.read)  # type: ignore[attr-defined]  # (loaded by SWIG)
        return faiss.read_index(reader)

    def held_bytes(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(live ids among these, their stored codes as the saved files keep them)."""
        rows = self._rows_of(np.asarray(ids, dtype=np.int64))
        return self._row_ids.of_rows(rows), self._codes()[rows]

    def scrub_saved(self, directory: Path) -> bool:
        """Zero, in the saved files, the bytes of rows removed since the last save; False
        (nothing done) when another process has saved since: save this index instead."""
        if self._dead_since_save:
            if self._saved is None or not saved.written_by(directory, self._saved):
                return False
            saved.scrub(directory, self._saved, np.asarray(self._dead_since_save, dtype=np.int64))
        self._dead_since_save = []
        return True

    @classmethod
    def load(cls, directory: Path, dim: int, meta: dict | None = None) -> tuple[RowIndex, dict]:
        """Read a saved index (`meta`: its meta.json, already read under the same lock);
        raises IndexFileError if it is missing or damaged."""
        found = saved.read(directory, kind=cls.kind, dim=dim, read_index=cls._read_faiss, meta=meta)
        try:
            index = cls(dim, **found.meta["params"])
            index._restore(found.index, found.meta)
            index._row_ids = RowIds(found.ids)
        except (RuntimeError, ValueError, KeyError, TypeError) as exc:
            raise IndexFileError(f"index data is damaged: {exc}") from exc
        index._live = found.live
        index._n_rows, index._n_live = found.layout.rows, int(found.live.sum())
        index._saved = found.layout
        return index, found.meta

"""The catalog: every live item's vote metadata as numpy columns, in id order.

The search index finds neighbours by vector; the catalog answers everything else a
query needs without touching disk: which items a filter allows (array operations,
never a loop over items), each neighbour's label, source, weight and pruning count,
class counts and pages of a listing. It is derived from the store, kept in step by
every edit, and rebuilt from the store at open.

Rows are kept in id order (the store hands out increasing ids), and dense tables
indexed by id give an id's row, label and source in one lookup each. A removed item's
row is marked dead and reclaimed in bulk later, so a single removal costs O(1), not a
copy of every column.

>>> c = Catalog()
>>> c.add([1, 2, 3], ["cat", "dog", "cat"], ["a", "a", "b"], [1.0, 1.0, 0.0])
>>> c.ids(Filter.of(labels=["cat"])).tolist()
[1, 3]
>>> c.remove([1]); c.class_counts()
{'cat': 1, 'dog': 1}
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator, Mapping, Protocol, Sequence

import numpy as np

from ..search.base import Selection
from .base import Filter, meta_value_key

COMPACT_DEAD_FRACTION = 0.2  # reclaim dead rows once they are this share of all rows


class MetaSource(Protocol):
    """Where the catalog reads item metadata from (the store's database)."""

    def meta_values(self, key: str) -> Iterable[tuple[int, Any]]: ...
    def meta_values_of(self, key: str, ids: Sequence[int]) -> Iterable[tuple[int, Any]]: ...


class Codes:
    """Strings as small integer codes (labels, sources, metadata values)."""

    def __init__(self) -> None:
        self.names: list[Any] = []
        self._code: dict[Any, int] = {}

    def code(self, name: Any) -> int:
        found = self._code.get(name)
        if found is None:
            found = self._code[name] = len(self.names)
            self.names.append(name)
        return found

    def codes(self, names: Iterable[Any]) -> np.ndarray:
        return np.fromiter((self.code(n) for n in names), dtype=np.int32)

    def known(self, names: Iterable[Any]) -> np.ndarray:
        """Codes of the names seen so far (unknown names match nothing)."""
        return np.asarray([self._code[n] for n in names if n in self._code], dtype=np.int32)


class Catalog:
    """Vote metadata of a memory's live items as columns. `version` changes on every edit."""

    def __init__(self, meta_source: MetaSource | None = None) -> None:
        self._meta_source = meta_source
        self.labels = Codes()
        self.sources = Codes()
        self._n = 0        # rows in use (live and dead)
        self._dead = 0
        self._ids = np.empty(0, np.int64)
        self._live = np.empty(0, bool)
        self._label = np.empty(0, np.int32)
        self._source = np.empty(0, np.int32)
        self._weight = np.empty(0, np.float64)
        self._prune = np.empty(0, np.int32)
        # row of id i at [i], -1 for none: the store hands out ids 1, 2, 3..., so a dense
        # table finds a neighbour's row with one memory access where a binary search over 1M
        # ids makes ~20 cache misses. Its first entry (id 0, never handed out) answers every
        # negative id, FAISS's padding -1 among them, and its last (always -1) any id past
        # the end, so a lookup is one clipped `take` with no arithmetic first.
        self._row_of = np.full(1024, -1, np.intp)
        # a live id's (label code, source code), indexed the same way (-1: none), so that a
        # search names its neighbours in one gather, without their rows or a liveness check
        self._codes_of = np.full((1024, 2), -1, np.int32)
        self._meta: dict[str, tuple[Codes, np.ndarray]] = {}  # key -> (value codes, code per row)
        self.relabelled: dict[int, str] = {}
        self._name_tables: dict[int, tuple[list[str | None], np.ndarray]] = {}
        self.version = 0
        self._selections: dict[Filter | None, Selection | None] = {}
        self._last_selection: tuple[Filter | None, Selection | None] | None = None
        self._live_ids: np.ndarray | None = None  # every live id, for listing; until the next edit

    # ---- size ------------------------------------------------------------------------

    def __len__(self) -> int:
        return self._n - self._dead

    def __contains__(self, item_id: int) -> bool:
        row = self._row(int(item_id))
        return row is not None

    def _columns(self) -> tuple[str, ...]:
        return ("_ids", "_live", "_label", "_source", "_weight", "_prune")

    def _reserve(self, rows: int) -> None:
        if rows <= len(self._ids):
            return
        capacity = max(rows, 2 * len(self._ids), 1024)
        for name in self._columns():
            old = getattr(self, name)
            grown = np.zeros(capacity, dtype=old.dtype)
            grown[: self._n] = old[: self._n]
            setattr(self, name, grown)
        for key, (codes, column) in self._meta.items():
            grown = np.full(capacity, -1, dtype=np.int32)
            grown[: self._n] = column[: self._n]
            self._meta[key] = (codes, grown)

    def _changed(self) -> None:
        self.version += 1
        self._selections.clear()
        self._last_selection = None
        self._live_ids = None

    # ---- edits -----------------------------------------------------------------------

    def add(self, ids: Sequence[int], labels: Sequence[str], sources: Sequence[str],
            weights: Sequence[float], metas: Sequence[Mapping[str, Any]] | None = None) -> None:
        """Append items with ids above every id held (as the store assigns them)."""
        new_ids = np.asarray(ids, dtype=np.int64)
        if len(new_ids) == 0:
            return
        if (self._n and new_ids[0] <= self._ids[self._n - 1]) or np.any(np.diff(new_ids) <= 0):
            raise ValueError("catalog ids must be added in increasing order")
        if new_ids[0] < 1:  # id 0's entry in the tables by id stands for "none"
            raise ValueError(f"catalog ids start at 1, got {int(new_ids[0])}")
        n, m = self._n, len(new_ids)
        self._reserve(n + m)
        self._ids[n : n + m] = new_ids
        self._index_rows(new_ids, np.arange(n, n + m, dtype=np.int32))
        self._live[n : n + m] = True
        self._label[n : n + m] = self._codes_of[new_ids, 0] = self.labels.codes(labels)
        self._source[n : n + m] = self._codes_of[new_ids, 1] = self.sources.codes(sources)
        self._weight[n : n + m] = np.asarray(weights, dtype=np.float64)
        self._prune[n : n + m] = 0
        self._n += m
        for key, (codes, column) in self._meta.items():
            if metas is not None:  # an item without the key: not even `where key=null` matches it
                column[n : n + m] = [codes.code(meta_value_key(meta[key])) if key in meta else -1 for meta in metas]
            else:  # values unknown here: read them from the store
                column[n : n + m] = -1
                self._fill_meta(key, new_ids, (codes, column))
        self._changed()

    def remove(self, ids: Iterable[int]) -> None:
        rows = self.rows(ids)
        if len(rows) == 0:
            return
        self._live[rows] = False
        self._dead += len(rows)
        gone = self._ids[rows]
        self._codes_of[gone] = -1
        for item_id in gone.tolist():
            self.relabelled.pop(item_id, None)
        if self._dead > COMPACT_DEAD_FRACTION * self._n and self._n > 1024:
            self._compact()
        self._changed()

    def update(self, ids: Iterable[int], *, label: str | None = None, weight: float | None = None,
               relabelled: Mapping[int, str] | None = None) -> None:
        """Set the label and/or weight of items; `relabelled` their original labels now."""
        rows = self.rows(ids)
        if label is not None:
            self._label[rows] = self._codes_of[self._ids[rows], 0] = self.labels.code(label)
        if weight is not None:
            self._weight[rows] = weight
        if relabelled is not None:
            for item_id in self._ids[rows].tolist():
                self.relabelled.pop(item_id, None)
            self.relabelled.update(relabelled)
        self._changed()

    def set_prune_counts(self, counts: Mapping[int, int]) -> None:
        self._prune[: self._n] = 0
        if counts:
            ids = np.fromiter(counts.keys(), dtype=np.int64, count=len(counts))
            values = np.fromiter(counts.values(), dtype=np.int32, count=len(counts))
            rows, found = self._rows_found(ids)
            self._prune[rows[found]] = values[found]
        self._changed()

    def _compact(self) -> None:
        keep = np.flatnonzero(self._live[: self._n])
        for name in self._columns():
            setattr(self, name, getattr(self, name)[keep].copy())
        for key, (codes, column) in self._meta.items():
            self._meta[key] = (codes, column[keep].copy())
        self._n, self._dead = len(keep), 0
        self._row_of[:] = -1
        self._index_rows(self._ids[: self._n], np.arange(self._n, dtype=np.int32))

    def _index_rows(self, ids: np.ndarray, rows: np.ndarray) -> None:
        if len(ids) and ids[-1] + 1 >= len(self._row_of):  # ids ascend; the last entry stays -1
            size = max(int(ids[-1]) + 2, 2 * len(self._row_of))
            for name in ("_row_of", "_codes_of"):  # the tables by id
                old = getattr(self, name)
                grown = np.full((size, *old.shape[1:]), -1, old.dtype)
                grown[: len(old)] = old
                setattr(self, name, grown)
        self._row_of[ids] = rows

    # ---- rows ------------------------------------------------------------------------

    def _rows_found(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row of each id, whether it is live here); rows of ids not found are -1."""
        ids = np.asarray(ids, dtype=np.int64).ravel()
        if self._n == 0:
            return np.full(len(ids), -1, np.intp), np.zeros(len(ids), bool)
        # negative ids clip to the entry of id 0 and ids past the end to the last: both read -1
        rows = self._row_of.take(ids, mode="clip")
        found = rows >= 0
        found &= self._live[rows]  # a row -1 reads the last flag, masked by `found` already
        return rows, found

    def rows(self, ids: Iterable[int]) -> np.ndarray:
        """Rows of the given ids that are live (others left out)."""
        rows, found = self._rows_found(np.fromiter((int(i) for i in ids), dtype=np.int64))
        return rows[found]

    def _row(self, item_id: int) -> int | None:
        rows, found = self._rows_found(np.array([item_id]))
        return int(rows[0]) if found[0] else None

    # ---- filters ---------------------------------------------------------------------

    def mask(self, where: Filter | None) -> np.ndarray:
        """bool (rows,): the live rows a filter allows. Array operations only."""
        allowed = self._live[: self._n].copy()
        if where is None:
            return allowed
        if where.labels is not None:
            allowed &= np.isin(self._label[: self._n], self.labels.known(where.labels))
        if where.sources is not None:
            allowed &= np.isin(self._source[: self._n], self.sources.known(where.sources))
        for key, value in where.where or ():
            codes, column = self._meta_column(key)
            wanted = codes.known([value])
            allowed &= column[: self._n] == wanted[0] if len(wanted) else False
        if where.max_prune_count is not None:
            allowed &= self._prune[: self._n] < where.max_prune_count
        return allowed

    def ids(self, where: Filter | None = None) -> np.ndarray:
        """Ids of live items a filter allows, ascending."""
        return self._ids[: self._n][self.mask(where)]

    def selection(self, where: Filter | None) -> Selection | None:
        """What a search may return, as a `Selection` cached until the next edit; None
        when the filter allows every live item (the plain, fastest search)."""
        # Every search asks. Filter.of hands out the same object for the same arguments, so
        # the filter asked for last is known by identity, before hashing it for the cache.
        last = self._last_selection
        if last is not None and last[0] is where:
            return last[1]
        found: Selection | None
        try:
            found = self._selections[where]
        except KeyError:
            if where is None or where.is_everything:
                found = None
            else:
                ids = self.ids(where)
                found = None if len(ids) == len(self) else Selection(ids, (where, self.version))
            self._selections[where] = found
        self._last_selection = (where, found)
        return found

    def _meta_column(self, key: str) -> tuple[Codes, np.ndarray]:
        found = self._meta.get(key)
        if found is None:
            # Filled before it is shared: readers run at once (the service's read lock), and
            # one that met a column still being filled matched nothing.
            found = (Codes(), np.full(len(self._ids), -1, dtype=np.int32))
            self._fill_meta(key, None, found)
            self._meta[key] = found
        return found

    def _fill_meta(self, key: str, ids: np.ndarray | None, column_of: tuple[Codes, np.ndarray]) -> None:
        """Read metadata `key` from the store for all rows (ids None) or these ids; rows
        whose item lacks the key keep -1, which no filter value matches."""
        if self._meta_source is None:
            raise ValueError("this catalog cannot read metadata: it has no store")
        codes, column = column_of
        source = self._meta_source
        found = list(source.meta_values(key) if ids is None else source.meta_values_of(key, ids.tolist()))
        if not found:
            return
        item_ids = np.fromiter((i for i, _ in found), dtype=np.int64, count=len(found))
        rows, ok = self._rows_found(item_ids)
        values = codes.codes(meta_value_key(v) for _, v in found)
        column[rows[ok]] = values[ok]

    # ---- reading ---------------------------------------------------------------------

    def names(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For ids (any shape, -1 = none): labels and sources (object, None where missing)."""
        # Negative ids (FAISS pads with -1) clip to the entry of id 0 and ids past the end
        # to the last: both read codes -1, which pick the None kept at the end of each
        # names table, as the codes of a removed id do.
        codes = self._codes_of.take(ids, axis=0, mode="clip")
        # (`take`: a third less than indexing an object array with [])
        return (self._names(self.labels)[1].take(codes[..., 0]),
                self._names(self.sources)[1].take(codes[..., 1]))

    def name_lists(self, ids: np.ndarray) -> tuple[list[str | None], list[str | None]]:
        """`names` of flat ids, as lists. Every search pays this for its k neighbours: one
        gather of both codes by id, then each name picked by a list's own `__getitem__`
        (no numpy call per column and no object array, which cost single queries ~4 us
        once FAISS has evicted the caches)."""
        label_codes, source_codes = self._codes_of.take(ids, axis=0, mode="clip").T.tolist()
        return (list(map(self._names(self.labels)[0].__getitem__, label_codes)),
                list(map(self._names(self.sources)[0].__getitem__, source_codes)))

    def columns(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """For ids (any shape, -1 = none): labels, sources (object, None where missing),
        weights float64, prune counts int, relabelled-from (object)."""
        labels, sources = self.names(ids)
        rows, found = self._rows_found(ids)
        if self._n == 0:
            weights, prune = np.zeros(len(rows)), np.zeros(len(rows), np.int32)
        elif found.all():  # the usual case: every neighbour is live
            weights, prune = self._weight[rows], self._prune[rows]
        else:
            weights, prune = np.where(found, self._weight[rows], 0.0), np.where(found, self._prune[rows], 0)
        if self.relabelled:
            history = np.asarray([self.relabelled.get(i) if live else None
                                  for i, live in zip(np.ravel(ids).tolist(), found.tolist(), strict=True)],
                                 dtype=object)
        else:
            history = np.full(len(rows), None, dtype=object)
        shape = labels.shape
        return labels, sources, weights.reshape(shape), prune.reshape(shape), history.reshape(shape)

    def _names(self, codes: Codes) -> tuple[list[str | None], np.ndarray]:
        """The names of `codes` as a list and an object array, each ending in None (code
        -1), kept while none is new."""
        cached = self._name_tables.get(id(codes))
        if cached is None or len(cached[0]) != len(codes.names) + 1:
            listed = [*codes.names, None]
            cached = self._name_tables[id(codes)] = (listed, np.asarray(listed, dtype=object))
        return cached

    def arrays(self, where: Filter | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(ids, labels (object), weights, prune counts) of the items a filter allows."""
        mask = self.mask(where)
        names = np.asarray(self.labels.names, dtype=object)
        return (self._ids[: self._n][mask], names[self._label[: self._n][mask]],
                self._weight[: self._n][mask].copy(), self._prune[: self._n][mask].copy())

    def class_counts(self) -> dict[str, int]:
        live = self._live[: self._n]
        counts = np.bincount(self._label[: self._n][live], minlength=len(self.labels.names))
        return {name: int(c) for name, c in sorted(zip(self.labels.names, counts.tolist(), strict=True)) if c}

    def page(self, where: Filter | None, offset: int, limit: int) -> tuple[int, np.ndarray]:
        """(how many items match, the ids of matches offset..offset+limit), oldest first.

        O(limit) for every page but the first after an edit: the matches are the search's
        cached selection, and with no filter and nothing removed, rows are positions.
        """
        selection = self.selection(where)
        if selection is not None:
            chosen = selection.ids
        elif self._dead == 0:
            chosen = self._ids[: self._n]
        else:
            chosen = self.selection_of_live()
        return len(chosen), chosen[offset : offset + limit].copy()

    def selection_of_live(self) -> np.ndarray:
        """Ids of every live item, ascending, cached until the next edit."""
        if self._live_ids is None:
            self._live_ids = self.ids(None)
        return self._live_ids

    def live_ids(self) -> Iterator[int]:
        return iter(self.ids(None).tolist())

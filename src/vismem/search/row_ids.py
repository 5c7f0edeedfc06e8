"""`RowIds`: the item id of each row of an index, and the row of each id.

Rows are numbered in the order items were added. Ids are unique and usually arrive in
increasing order (the store assigns them so); then the rows are themselves sorted by
id and a lookup is one binary search over them. Items inserted out of order (a sample
held out of a build to measure recall, then added) make it keep a sorted copy of the
rows up to then (the head); rows added in order after that (the tail) need no copy, so
a lookup searches both.
"""

from __future__ import annotations

import numpy as np


class RowIds:
    def __init__(self, ids: np.ndarray | None = None, capacity: int = 1024) -> None:
        ids = np.empty(0, dtype=np.int64) if ids is None else np.asarray(ids, dtype=np.int64)
        self._n = len(ids)
        self._ids = np.empty(max(capacity, self._n), dtype=np.int64)
        self._ids[: self._n] = ids
        self._head = 0  # rows [0, head) are looked up through a sorted copy
        self._sorted: np.ndarray | None = None  # ids of the head, ascending (None: to sort)
        self._order: np.ndarray | None = None   # the row of each of them
        if self._n > 1 and not (ids[1:] > ids[:-1]).all():
            if len(np.unique(ids)) != self._n:
                raise ValueError("row ids are not unique")
            self._head = self._n

    def __len__(self) -> int:
        return self._n

    @property
    def ids(self) -> np.ndarray:
        """The id of each row, int64 (rows,): a view, valid until the next append."""
        return self._ids[: self._n]

    def of_rows(self, rows: np.ndarray) -> np.ndarray:
        """The ids of `rows` (any shape, each in 0..len-1): every search maps its results
        so, and `take` on the whole buffer spares making a view first."""
        return self._ids.take(rows)

    @property
    def ascending(self) -> bool:
        """Whether rows are in id order (as when every item was added in order)."""
        return self._head == 0

    def reserve(self, rows: int) -> None:
        if rows > len(self._ids):
            self._ids = np.resize(self._ids, rows)

    def append(self, ids: np.ndarray) -> None:
        """Give the next rows these ids: unique, and not already held (see `known`)."""
        n, m = self._n, len(ids)
        if m == 0:
            return
        in_order = (m < 2 or bool((ids[1:] > ids[:-1]).all())) and ids[0] > self.max_id()
        if n + m > len(self._ids):
            self.reserve(max(2 * len(self._ids), n + m))
        self._ids[n : n + m] = ids
        self._n += m
        if not in_order:  # the head now covers every row; sorted when next looked up
            self._head, self._sorted, self._order = self._n, None, None

    def max_id(self) -> int:
        if self._n == 0:
            return -1
        if self._head < self._n:  # the tail holds the largest ids
            return int(self._ids[self._n - 1])
        return int(self._head_sorted()[0][-1])

    def _head_sorted(self) -> tuple[np.ndarray, np.ndarray]:
        if self._sorted is None or self._order is None:
            self._order = np.argsort(self._ids[: self._head], kind="stable")
            self._sorted = self._ids[: self._head][self._order]
        return self._sorted, self._order

    def find(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row of each id, whether it was found); rows of ids not found are meaningless."""
        ids = np.asarray(ids, dtype=np.int64).ravel()
        rows = np.zeros(len(ids), dtype=np.int64)
        found = np.zeros(len(ids), dtype=bool)
        if self._n == 0 or len(ids) == 0:
            return rows, found
        if self._head < self._n:
            tail = self._ids[self._head : self._n]
            at = np.minimum(np.searchsorted(tail, ids), len(tail) - 1)
            found = tail[at] == ids
            rows = at + self._head
        if self._head:
            head, order = self._head_sorted()
            at = np.minimum(np.searchsorted(head, ids), len(head) - 1)
            in_head = head[at] == ids
            rows = np.where(in_head, order[at], rows)
            found |= in_head
        return rows, found

    def known(self, ids: np.ndarray) -> np.ndarray:
        """Whether each id has a row (live or not)."""
        return self.find(ids)[1]

"""Recall on queries the index has never seen, and the search effort that reaches a target.

A query the index already holds is the easiest one a graph can get: the walk goes
straight to its own node, whose links are its nearest neighbours. Measured on 100k
256-d vectors of local intrinsic dimension ~16, HNSW read 0.995 on its own vectors and
0.917 on fresh ones (leaving the query's own node out still read 0.99). So recall is
measured, and effort tuned, on vectors that are not in the index when they are searched:

    fresh adds        a sample of each add batch, searched before it is inserted
    held-out sample   a random sample left out of a build or compaction, then inserted
    given queries     the user's own (`vismem tune-index --queries`)
    recorded queries  real queries the user chose to keep
    own vectors       the memory's own vectors: optimistic, the last resort
    exact search      the exact index: recall 1 by definition

Each query is searched at every effort of the index's ladder (`tune_values`, then
`EXHAUSTIVE`) against exact search; the least effort whose mean recall reaches the
target is chosen. The interval is Wilson's 95% score interval over queries: a query's
recall lies in [0, 1], so it varies no more than a coin with the same mean, which makes
the interval conservative. Pure functions over numpy arrays; lifecycle.py calls them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..maintenance import no_progress
from .base import EXHAUSTIVE, Searchable, Tunable

FRESH_ADDS = "fresh adds"
HELD_OUT = "held-out sample"
GIVEN = "given queries"
RECORDED = "recorded queries"
OWN = "own vectors"
EXACT = "exact search"  # the exact index: recall 1 by definition, nothing to measure
SOURCES = (FRESH_ADDS, HELD_OUT, GIVEN, RECORDED, OWN, EXACT)
LEDGER_QUERIES = 400    # fresh-add queries remembered (the newest)
MIN_QUERIES = 50        # fewer fresh-add queries than this do not retune the index


def wilson(mean: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a proportion `mean` observed over `n` trials.

        >>> [round(v, 3) for v in wilson(1.0, 200)]
        [0.981, 1.0]
    """
    if n == 0:
        return 0.0, 1.0
    centre = mean + z * z / (2 * n)
    spread = z * np.sqrt(mean * (1 - mean) / n + z * z / (4 * n * n))
    scale = 1 + z * z / n
    return float(max(0.0, (centre - spread) / scale)), float(min(1.0, (centre + spread) / scale))


@dataclass(frozen=True)
class RecallEstimate:
    """Mean recall@k over `queries` unseen queries, with its 95% interval [low, high]."""

    recall: float
    queries: int
    low: float
    high: float
    measured_on: str

    @classmethod
    def of(cls, per_query: np.ndarray, measured_on: str) -> RecallEstimate:
        mean = float(np.mean(per_query)) if len(per_query) else 0.0
        low, high = wilson(mean, len(per_query))
        return cls(round(mean, 4), len(per_query), round(low, 4), round(high, 4), measured_on)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def per_query_recall(found: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """For each query, the share of its true neighbours (ids >= 0 in `truth` (n, k))
    that `found` (n, k') holds; 1.0 for a query with no true neighbours."""
    truth = np.asarray(truth)
    valid = truth >= 0
    hits = np.array([np.isin(t[v], f).sum() for f, t, v in zip(found, truth, valid, strict=True)],
                    dtype=float)
    totals = valid.sum(axis=1)
    return np.where(totals > 0, hits / np.maximum(totals, 1), 1.0)


def ladder(index: Searchable) -> tuple[Any, ...]:
    """The efforts tuning may choose, by rising cost: `EXHAUSTIVE` last."""
    return (*index.tune_values, EXHAUSTIVE) if isinstance(index, Tunable) else ()


def measure_efforts(index: Searchable, queries: np.ndarray, truth: np.ndarray, k: int,
                    values: Sequence[Any], own_ids: np.ndarray | None = None,
                    progress: Callable[[int], None] | None = None) -> np.ndarray:
    """Per-query recall@k (n_queries, len(values)) of `index` at each effort in `values`
    (rising), against `truth` ids (n_queries, k). The index's effort is left as it was.
    With `own_ids`, the queries are items of the index: each one's own id is dropped
    from what is found (and must not be in `truth`). `progress(n)` as n more efforts
    are done (len(values) in all).

    Once every query finds all its true neighbours, the larger efforts are credited with
    that result without searching: more effort only widens the search."""
    def recalls() -> np.ndarray:
        if own_ids is None:
            return per_query_recall(index.search(queries, k).ids, truth)
        found = index.search(queries, k + 1).ids
        return per_query_recall(np.where(found == own_ids[:, None], -1, found), truth)

    advance = progress or no_progress
    out = np.ones((len(queries), max(len(values), 1)), dtype=np.float32)
    if not isinstance(index, Tunable) or len(queries) == 0:
        out[:] = recalls()[:, None]
        advance(len(values))
        return out
    before = index.effort
    try:
        for j, value in enumerate(values):
            index.set_param(value)
            out[:, j] = recalls()
            if out[:, j].min() >= 1.0:
                advance(len(values) - j)
                break
            advance(1)
    finally:
        index.set_param(before)
    return out


def least_effort(recalls: np.ndarray, target: float) -> int:
    """Column of the least effort whose mean recall reaches `target`; the last (the most
    effort) when none does."""
    means = recalls.mean(axis=0) if len(recalls) else np.zeros(recalls.shape[1])
    reached = np.flatnonzero(means >= target)
    return int(reached[0]) if len(reached) else recalls.shape[1] - 1


def fresh_sample(batch: int, index_size: int, rng: np.random.Generator, *,
                 per_growth: int = 200, growth: float = 0.25, group: int = 20) -> np.ndarray:
    """Positions in an add batch of `batch` vectors to measure as fresh queries, for an
    index of `index_size` vectors once the batch is in.

    Aims at `per_growth` queries while the index grows by `growth` (the same effort as
    re-measuring 200 queries at each 25% of growth), so the cost per added vector stays
    flat as the index grows. Small batches are measured rarely but `group` at a time:
    exact search over all the vectors costs about the same for 1 query as for 20."""
    if batch == 0 or index_size == 0:
        return np.empty(0, dtype=np.int64)
    # at most a quarter of a batch: the first batch into an empty index is mostly inserted
    expected = min(batch * per_growth / (growth * index_size), per_growth, batch / 4)
    size = min(batch, group)
    if expected >= size:
        size = min(batch, round(expected))
    elif rng.random() >= expected / size:
        return np.empty(0, dtype=np.int64)
    return np.sort(rng.choice(batch, size=size, replace=False))


class FreshLedger:
    """Per-effort recall of the newest `capacity` fresh queries, measured before their
    batch was inserted: a running estimate for the index as it is now."""

    def __init__(self, values: Sequence[Any], capacity: int = LEDGER_QUERIES) -> None:
        self.values = [_jsonable(v) for v in values]
        self.recalls = np.zeros((capacity, len(self.values)), dtype=np.float32)
        # each query's inverse intrinsic-dimension estimate (quality.inverse_lid), or NaN
        self.inverse_lid = np.full(capacity, np.nan)
        self.count = 0  # queries held (up to capacity)
        self._next = 0

    def record(self, recalls: np.ndarray, inverse_lid: np.ndarray | None = None) -> None:
        """Add queries' recalls (n, len(values)) and, if known, their inverse LIDs (n,)."""
        if inverse_lid is not None and len(inverse_lid) != len(recalls):
            raise ValueError(f"{len(recalls)} queries' recalls but {len(inverse_lid)} inverse LIDs")
        for i, row in enumerate(recalls):
            self.recalls[self._next] = row
            self.inverse_lid[self._next] = np.nan if inverse_lid is None else inverse_lid[i]
            self._next = (self._next + 1) % len(self.recalls)
            self.count = min(self.count + 1, len(self.recalls))

    def held(self) -> np.ndarray:
        """Recalls (count, len(values)) of the queries held (in ring order)."""
        return self.recalls[: self.count]

    def inverse_lids(self) -> np.ndarray:
        known = self.inverse_lid[: self.count]
        return known[np.isfinite(known)]

    def estimate(self, value: Any) -> RecallEstimate | None:
        """Recall at effort `value` over the queries held; None if none, or unknown."""
        value = _jsonable(value)
        if self.count == 0 or value not in self.values:
            return None
        return RecallEstimate.of(self.held()[:, self.values.index(value)], FRESH_ADDS)

    def to_dict(self) -> dict[str, Any]:
        order = (np.arange(self.count) + (self._next if self.count == len(self.recalls) else 0)) \
            % len(self.recalls)  # oldest first
        inverse = self.inverse_lid[order]
        return {"values": self.values, "recalls": np.round(self.recalls[order], 4).tolist(),
                "inverse_lid": [None if not np.isfinite(v) else round(float(v), 5) for v in inverse]}

    @classmethod
    def from_dict(cls, found: dict[str, Any] | None, values: Sequence[Any]) -> FreshLedger:
        """A ledger as saved, or an empty one if it was measured over other efforts."""
        ledger = cls(values)
        if found and found.get("values") == ledger.values and found.get("recalls"):
            recalls = np.asarray(found["recalls"], dtype=np.float32).reshape(-1, len(values))
            inverse = np.array([np.nan if v is None else v
                                for v in found.get("inverse_lid") or [None] * len(recalls)])
            ledger.record(recalls, inverse)
        return ledger


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


# ---- real queries, kept (opt-in) to tune on ---------------------------------------------

def reservoir_slots(positions: np.ndarray, capacity: int, rng: np.random.Generator) -> np.ndarray:
    """Algorithm R: the slot of a `capacity`-slot reservoir that each arrival takes (-1:
    not kept), given its 1-based position in the stream. Later arrivals overwrite earlier
    ones in the same slot, so apply them in order; the reservoir stays a uniform sample.

        >>> reservoir_slots(np.arange(1, 4), 5, np.random.default_rng(0)).tolist()
        [0, 1, 2]
    """
    positions = np.asarray(positions, dtype=np.int64)
    drawn = np.floor(rng.random(len(positions)) * positions).astype(np.int64)  # uniform in [0, pos)
    slots = np.where(positions <= capacity, positions - 1, drawn)
    return np.where(slots < capacity, slots, -1)


def merge_slots(seen: int, capacity: int, sample: int, offered: int,
                rng: np.random.Generator) -> np.ndarray:
    """Where each of `sample` queries, a uniform sample of `offered` new ones, goes in a
    reservoir of `capacity` that holds a uniform sample of the `seen` before them (-1:
    left out), so that it then holds a uniform sample of all `seen + offered`.

        >>> sorted(merge_slots(0, 5, 3, 3, np.random.default_rng(0)).tolist())
        [0, 1, 2]
    """
    held = min(seen, capacity)
    want = min(capacity, seen + offered)
    new = rng.hypergeometric(offered, seen, want) if seen else want  # how many of the new stay
    slots = np.full(sample, -1, dtype=np.int64)
    empty = np.arange(held, want)  # the new fill empty slots first, then replace old ones
    replaced = rng.choice(held, size=new - len(empty), replace=False)
    slots[rng.choice(sample, size=new, replace=False)] = np.concatenate([empty, replaced])
    return slots


class QuerySample:
    """A uniform sample of at most `capacity` of the queries offered (Algorithm R), and
    how many were offered: recorded queries wait here until the store writes them."""

    def __init__(self, capacity: int, dim: int, epoch: int = 0) -> None:
        self.capacity = capacity
        self.epoch = epoch  # the store's count of clearings when recording began
        self.vectors = np.empty((0, dim), dtype=np.float32)
        self.seen = 0

    def __len__(self) -> int:
        return len(self.vectors)

    def absorb(self, later: QuerySample, rng: np.random.Generator) -> None:
        """Take in `later`, a sample of the queries offered after these (a write of these
        failed meanwhile): then this is a uniform sample of both, as the store merges one."""
        slots = merge_slots(self.seen, self.capacity, len(later), later.seen, rng)
        grown = np.empty((min(self.capacity, self.seen + later.seen), self.vectors.shape[1]), dtype=np.float32)
        grown[: len(self)] = self.vectors
        kept = slots >= 0
        grown[slots[kept]] = later.vectors[kept]
        self.vectors, self.seen = grown, self.seen + later.seen

    def offer(self, queries: np.ndarray, rng: np.random.Generator) -> None:
        positions = self.seen + np.arange(1, len(queries) + 1)
        self.seen += len(queries)
        for query, slot in zip(queries, reservoir_slots(positions, self.capacity, rng), strict=True):
            if slot == len(self.vectors):
                self.vectors = np.vstack([self.vectors, query[None]])
            elif slot >= 0:
                self.vectors[slot] = query

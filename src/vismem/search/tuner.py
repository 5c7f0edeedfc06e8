"""`Tuner`: measures a memory's search index on queries it has never seen, sets the
search effort that reaches the target recall, and records the figure in the store.

    add batch ─sample─► searched before it goes in ─► FreshLedger (running, per effort)
    build / compaction ─► random sample held out, measured, then inserted
    IVF-PQ re-clustered / grown ─► items held out of its lists for a while
    the user's queries (given or recorded) ─► measured directly
    none of these at hand ─► the memory's own vectors (optimistic, and marked so)

The pure parts (per-effort recall, intervals, the ledger, sampling) are in tuning.py;
`ManagedIndex` (lifecycle.py) calls this as it keeps the index in step with the store.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

import numpy as np

from ..maintenance import maintenance
from . import quality as q
from . import tuning as t
from .base import ExactlySearchable, HoldsOut, Searchable, Tunable, ascending_ids

if TYPE_CHECKING:
    from ..store.embedded import EmbeddedStore

MIN_HELD_OUT = 20  # a smaller sample (of a tiny memory) is not held out
NO_IDS = np.empty(0, dtype=np.int64)
log = logging.getLogger("vismem")


class Tuner:
    """Recall measurement and tuning for the index of one store; `ledger` holds the
    recall of recent fresh adds at each search effort."""

    def __init__(self, store: EmbeddedStore) -> None:
        self.store = store
        self.ledger = t.FreshLedger(())
        self._rng = np.random.default_rng()

    @property
    def target(self) -> float:
        return float(self.store.settings().target_recall)

    @property
    def quality(self) -> q.Quality | None:
        """Recall (and on what it was measured) and intrinsic dimension, last recorded."""
        found = self.store.state("index_quality")
        return q.Quality.from_dict(found) if found else None

    def start(self, index: Searchable, saved: dict[str, Any] | None = None) -> None:
        """A new (or reloaded) index: the fresh-add ledger as saved with it, else empty."""
        self.ledger = t.FreshLedger.from_dict(saved, t.ladder(index))

    def follow(self, index: Searchable) -> None:
        """Search with the effort last recorded for this kind of index: another process
        (`vismem tune-index`) may have tuned it since this one loaded it."""
        quality = self.quality
        if isinstance(index, Tunable) and quality is not None and quality.type == index.kind:
            effort = index.effort_in(quality.params)
            if effort != index.effort:
                index.set_param(effort)

    def fresh_estimate(self, index: Searchable) -> dict[str, Any] | None:
        """The fresh adds' running recall at the index's current effort."""
        if not isinstance(index, Tunable):
            return None
        estimate = self.ledger.estimate(index.effort)
        return estimate.to_dict() if estimate else None

    def hold_out_sample(self, ids: Collection[int] | np.ndarray) -> np.ndarray:
        """A random sample of ids to measure as unseen queries: q.SAMPLE, at most a
        quarter of the memory; none from a memory too small for one."""
        ids = np.fromiter(ids, dtype=np.int64) if not isinstance(ids, np.ndarray) else ids
        size = min(q.SAMPLE, len(ids) // 4)
        if size < MIN_HELD_OUT:
            return NO_IDS
        return np.sort(self._rng.choice(ids, size=size, replace=False))

    # ---- adding, measured -----------------------------------------------------------

    def insert(self, index: Searchable, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add to the index, first measuring a sample of the batch as fresh queries: the
        rest goes in, the sample is searched (it is not in the index), then it goes in.
        When IVF-PQ trains or re-clusters meanwhile, it is re-measured on held-out items."""
        if not isinstance(index, Tunable):
            index.add(ids, vectors)
            return
        layout = _layout(index)
        # IVF-PQ searching exactly until it trains (maybe in this add): nothing to measure yet
        untrained = getattr(index, "trained", True) is False
        pick = t.fresh_sample(len(ids), len(index) + len(ids), self._rng) if not untrained else NO_IDS
        if len(pick) and len(index) + len(ids) - len(pick) >= q.RECALL_K:
            rest = np.ones(len(ids), dtype=bool)
            rest[pick] = False
            index.add(ids[rest], vectors[rest])
            if _layout(index) == layout:
                self._measure_fresh(index, np.ascontiguousarray(vectors[pick], dtype=np.float32))
            index.add(ids[pick], vectors[pick])
        else:
            index.add(ids, vectors)
        if _layout(index) != layout:  # IVF-PQ trained or re-clustered: measure it anew
            self.start(index)
            self.retune(index, index.live_ids())

    def put_back(self, index: Searchable, ids: np.ndarray, vectors: np.ndarray,
                 items: Collection[int] | np.ndarray) -> q.Quality | None:
        """Insert a sample held out of a build or compaction once it has been measured.
        When IVF-PQ trains as it goes in (the build without it stayed below `train_min`),
        the effort was tuned on exact search: it is measured anew, trained; returns that."""
        layout = _layout(index)
        index.add(ids, vectors)
        if _layout(index) == layout:
            return None
        self.start(index)
        return self.retune(index, items)

    def _measure_fresh(self, index: Searchable, queries: np.ndarray) -> None:
        truth, sims = self._exact(index, queries, q.LID_K)
        recalls = t.measure_efforts(index, queries, truth[:, : q.RECALL_K], q.RECALL_K, t.ladder(index))
        self.ledger.record(recalls, _inverse_lids(sims))

    # ---- tuning ---------------------------------------------------------------------

    def retune(self, index: Searchable, items: Collection[int] | np.ndarray) -> q.Quality | None:
        """Re-tune on the cheapest unseen queries at hand: a held-out sample where the
        index can hold items out (IVF-PQ), else the fresh adds' running estimate, else
        (too few of them) the memory's own vectors, an optimistic last resort."""
        if isinstance(index, Tunable) and isinstance(index, HoldsOut):
            held = self.hold_out_sample(items)
            if len(held):
                _, queries = self.store.searched_vectors(held.tolist())
                with index.held_out(held):
                    return self.tune(index, queries, t.HELD_OUT, items)
        if isinstance(index, Tunable) and self.ledger.count >= t.MIN_QUERIES:
            values = t.ladder(index)
            chosen = t.least_effort(self.ledger.held(), self.target)
            index.set_param(values[chosen])
            estimate = self.ledger.estimate(values[chosen])
            assert estimate is not None
            return self._record(index, estimate, items, q.lid_from_inverses(self.ledger.inverse_lids()))
        return self.own_vectors(index, items)

    def tune(self, index: Searchable, queries: np.ndarray, measured_on: str,
             items: Collection[int] | np.ndarray) -> q.Quality:
        """Set the least effort reaching the target on `queries` (not in the index), in a
        memory that holds `items`."""
        assert isinstance(index, Tunable)
        values = t.ladder(index)
        # the exact neighbours, then a search at each effort: the steps shown
        with maintenance(f"measuring recall on {len(queries):,} queries", 1 + len(values)) as advance:
            truth, sims = self._exact(index, queries, q.LID_K)
            if advance:
                advance(1)
            recalls = t.measure_efforts(index, queries, truth[:, : q.RECALL_K], q.RECALL_K, values, progress=advance)
        return self._least_effort(index, values, recalls, measured_on, items,
                                  q.lid_from_inverses(_inverse_lids(sims)))

    def own_vectors(self, index: Searchable, items: Collection[int]) -> q.Quality | None:
        """The intrinsic dimension, from a sample of the memory's own vectors, and recall:
        1 for exact search (by definition, ties among equal vectors aside); for an
        approximate index with no unseen queries at hand, tuned on those own vectors (each
        query's own item left out), an optimistic figure."""
        ids = ascending_ids(items)
        if len(ids) < 2:
            return None
        sample_ids, queries = self.store.searched_vectors(ids[q.sample_rows(len(ids))].tolist())
        depth = min(max(q.RECALL_K, q.LID_K) + 1, len(ids))
        near_ids, near_sims = q.exact_top(queries, self.store.searched_chunks(), depth)
        lid = q.lid_from_inverses(_inverse_lids(near_sims[:, 1:])) if depth > 2 else None
        if not isinstance(index, Tunable):
            return self._record(index, t.RecallEstimate(1.0, 0, 1.0, 1.0, t.EXACT), ids, lid)
        truth = q.drop_self(near_ids, sample_ids, q.RECALL_K)
        values = t.ladder(index)
        recalls = t.measure_efforts(index, queries, truth, q.RECALL_K, values, own_ids=sample_ids)
        return self._least_effort(index, values, recalls, t.OWN, ids, lid)

    def _least_effort(self, index: Searchable, values: tuple[Any, ...], recalls: np.ndarray, measured_on: str,
                      items: Collection[int] | np.ndarray, lid: float | None) -> q.Quality:
        """Set the least of `values` whose recall (`recalls`, one column each) reaches the
        target, and record that recall as measured on `measured_on`."""
        assert isinstance(index, Tunable)
        chosen = t.least_effort(recalls, self.target)
        index.set_param(values[chosen])
        return self._record(index, t.RecallEstimate.of(recalls[:, chosen], measured_on), items, lid)

    def _exact(self, index: Searchable, queries: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact (ids, similarities) of the `depth` nearest live items in the index:
        searched by the index over its own vectors where it can, else over the store's
        vectors of the items the index holds."""
        depth = min(depth, len(index))
        if isinstance(index, ExactlySearchable):
            found = index.search_exact(queries, depth)
            return found.ids, found.similarities
        live = np.sort(index.live_ids())
        chunks = ((ids[keep], vectors[keep]) for ids, vectors in self.store.searched_chunks()
                  for keep in [np.isin(ids, live, assume_unique=True)])
        return q.exact_top(queries, chunks, depth)

    def _record(self, index: Searchable, estimate: t.RecallEstimate, items: Collection[int] | np.ndarray,
                lid: float | None) -> q.Quality:
        """Record a measure made in a memory that holds `items`, and which items they were
        (`last_id`). A measure that gave no intrinsic dimension records none: the last
        one, made on other items, would pass for one made on these."""
        ids = ascending_ids(items)
        found = q.Quality(type=index.kind, recall=estimate.recall, k=q.RECALL_K,
                          sample=estimate.queries, size=len(ids),
                          params=index.describe().get("params", {}),
                          lid=round(float(lid), 2) if lid is not None and np.isfinite(lid) else None,
                          target=self.target, measured_on=estimate.measured_on, low=estimate.low,
                          high=estimate.high, last_id=int(ids[-1]) if len(ids) else None)
        self.store.set_state("index_quality", found.to_dict())
        if found.warning():
            log.warning("%s: %s", self.store.path, found.warning())
        return found


def _layout(index: Searchable) -> tuple[Any, ...]:
    """What an index's effort is tuned for: IVF-PQ trains and re-clusters (more lists)
    inside an add, after which its effort no longer means the same."""
    return getattr(index, "nlist", None), getattr(index, "trained", True)


def _inverse_lids(similarities: np.ndarray) -> np.ndarray:
    """Each query's inverse intrinsic-dimension estimate from its nearest similarities
    (NaN where it has none: a duplicate, or too few items)."""
    return q.inverse_lid(np.maximum(2.0 - 2.0 * similarities, 0.0))

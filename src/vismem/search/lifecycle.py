"""`ManagedIndex`: the life of a memory's search index, from the store to disk and back.

    store (truth + edit log) --build / catch up--> index in RAM --save--> MEMDIR/index/

It decides which kind of index to use (`auto`), opens a saved index and checks it
against the store, rebuilds it (saying why, on stderr) when it is unusable, replays
the store's edits it has not seen, saves it, measures recall and tunes it, switches
kind as the memory grows, compacts it, and scrubs removed items from its saved files.
The index is derived data: whatever goes wrong here, it can be rebuilt from the store.

Recall is measured on vectors the index has not seen (tuning.py): a sample of each add
batch before it is inserted (a running estimate), a random sample held out of each
build, compaction and IVF-PQ re-clustering, or the user's own queries.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import INDEX_TYPES, IndexFileError, make_index
from . import quality as q
from . import tuning as t
from .base import (
    Compactable,
    ExactlySearchable,
    HoldsOut,
    Persistent,
    Searchable,
    Tunable,
)
from .choice import AUTO_APPROX_MIN, choose_kind, physical_ram

if TYPE_CHECKING:
    from ..store.embedded import EmbeddedStore

INDEX_DIR = "index"          # the saved search index lives in MEMDIR/index/
REMEASURE_GROWTH = 1.25      # re-measure recall (and re-tune) after growing by 25%
MIN_HELD_OUT = 20            # a smaller sample (of a tiny memory) is not held out
log = logging.getLogger("vismem")


class ManagedIndex:
    """The search index of one memory, kept in step with its store.

    `index` is the backend itself (search it directly), typed by the protocols of
    base.py: any `Searchable`, saved when `Persistent`, compacted when `Compactable`,
    tuned when `Tunable`. `seq` is the last store edit it reflects. `ledger` holds the
    recall of recent fresh adds at each search effort. `items` arguments are the ids the
    store holds, as the caller knows them. The store's settings say which index to keep;
    what the index measures (recall, history of the `auto` choice) goes to the store's
    state.
    """

    def __init__(self, store: EmbeddedStore) -> None:
        self.store = store
        self.index: Searchable
        self.ledger = t.FreshLedger(())
        self.seq = 0
        self.dirty = False      # changed since it was last saved
        self.unpurged = False   # the saved files may still hold removed items' vectors
        self._rng = np.random.default_rng()

    @property
    def directory(self) -> Path:
        return self.store.path / INDEX_DIR

    @property
    def persistent(self) -> bool:
        """Whether the index is saved beside the store (else it is rebuilt at open)."""
        return isinstance(self.index, Persistent)

    @property
    def target(self) -> float:
        return float(self.store.settings().target_recall)

    # ---- which index ---------------------------------------------------------------------

    def kind_for(self, count: int) -> str:
        """The kind of index the memory's setting asks for when it holds `count` items."""
        return choose_kind(self.store.settings().index, count=count, dim=self.store.dim,
                           ram_bytes=physical_ram(),
                           exact_below=int(self.store.state("auto_exact_below") or 0),
                           approx_min=AUTO_APPROX_MIN)

    def _params(self, kind: str) -> dict[str, Any]:
        return {"float16": self.store.settings().float16} if kind == "hnsw" else {}

    # ---- open, build, catch up, save -------------------------------------------------------

    def open(self, items: Collection[int]) -> None:
        """Load the saved index and replay the store's edits since it was saved; rebuild
        it (saying why, on stderr) when it is missing, damaged or does not match."""
        kind = self.kind_for(len(items))
        self.dirty = False
        backend = INDEX_TYPES[kind]
        if not issubclass(backend, Persistent):
            self._drop_saved()  # no stale copies of vectors
            self._build(kind)
            self.after_growth(items)
            return
        try:
            index, meta = backend.load(self.directory, self.store.dim)
            if meta.get("store_created_at") != self.store.created_at:
                raise IndexFileError("it belongs to another memory")
            if meta.get("seq", -1) > self.store.last_edit():
                raise IndexFileError("it is newer than the store")
            self.index, self.seq = index, int(meta["seq"])
            self.ledger = t.FreshLedger.from_dict(meta.get("fresh"), t.ladder(index))
            replayed = self.sync()
            if not np.array_equal(np.sort(self.index.live_ids()),
                                  np.fromiter(sorted(items), np.int64)):
                raise IndexFileError("its items differ from the store's")
            if replayed:
                log.info("index of %s caught up %d edits", self.store.path, replayed)
        except IndexFileError as exc:
            if items or self.directory.exists():
                log.warning("rebuilding the %s index of %s: saved index unusable (%s)",
                            kind, self.store.path, exc)
            self._rebuild(kind, items)
            self._save()

    def catch_up(self, items: Collection[int]) -> None:
        """After another process committed: reopen if the kind should change, else replay."""
        if self.kind_for(len(items)) != self.index.kind:
            self.open(items)
        else:
            self.sync()

    def _build(self, kind: str, items: Collection[int] = ()) -> np.ndarray:
        """Build the index from the store. When it is tunable, a random sample of `items`
        is held out of it; returns the held-out ids (sorted) for the caller to measure
        and insert."""
        self.seq = self.store.last_edit()
        self.index = make_index(kind, self.store.dim, **self._params(kind))
        self.index.reserve(self.store.count())
        self.ledger = t.FreshLedger(t.ladder(self.index))
        held = self._hold_out_sample(items) if isinstance(self.index, Tunable) else _NONE
        for ids, vectors in self.store.vector_chunks():
            if len(held):
                keep = ~np.isin(ids, held, assume_unique=True)
                ids, vectors = ids[keep], vectors[keep]
            self.index.add(ids, vectors)
        return held

    def _rebuild(self, kind: str, items: Collection[int]) -> q.Quality | None:
        """Build from the store holding out a random sample, tune on it as unseen
        queries, then insert it (the exact index: measured on own vectors)."""
        held = self._build(kind, items)
        if not len(held):
            return self._measure(items)
        found, queries = self.store.vectors(held.tolist())
        quality = self._tune(queries, t.HELD_OUT, size=len(items))
        self.index.add(found, queries)
        return quality

    def _hold_out_sample(self, ids: Collection[int] | np.ndarray) -> np.ndarray:
        """A random sample of ids to measure as unseen queries: q.SAMPLE, at most a
        quarter of the memory; none from a memory too small for one."""
        ids = np.fromiter(ids, dtype=np.int64) if not isinstance(ids, np.ndarray) else ids
        size = min(q.SAMPLE, len(ids) // 4)
        if size < MIN_HELD_OUT:
            return _NONE
        return np.sort(self._rng.choice(ids, size=size, replace=False))

    def sync(self) -> int:
        """Apply adds and removals from the store's log that the index has not seen (other
        edits do not move vectors); returns how many."""
        replayed, adds = 0, []
        for seq, op, ids in self.store.edits_since(self.seq):
            if op == "add":
                adds += ids
            elif op == "remove":
                self._add_from_store(adds)
                adds = []
                self.index.remove(np.asarray(ids, dtype=np.int64))
            self.seq = seq
            replayed += op in ("add", "remove")
        self._add_from_store(adds)
        if replayed and self.persistent:
            self.dirty = True
            self.unpurged = True  # the saved index still holds what was removed elsewhere
        return replayed

    def _add_from_store(self, ids: list[int]) -> None:
        missing = [i for i in ids if self.index.missing(i)]
        if missing:
            found, vectors = self.store.vectors(missing)
            self._insert(found, vectors)

    def _drop_saved(self) -> None:
        if not self.store.read_only:  # on read-only media the saved files stay as they are
            shutil.rmtree(self.directory, ignore_errors=True)

    def _save(self) -> None:
        if not isinstance(self.index, Persistent) or self.store.read_only:
            return
        self.sync()
        self.index.save(self.directory, {"seq": self.seq, "store_created_at": self.store.created_at,
                                         "fresh": self.ledger.to_dict()})
        self.dirty = False

    def save_if_dirty(self) -> None:
        if self.dirty:
            self._save()

    # ---- edits made through this process -----------------------------------------------------

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add items the caller has just committed to the store."""
        self._insert(np.asarray(ids, dtype=np.int64), vectors)
        self.dirty = self.persistent

    def _insert(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add to the index, first measuring a sample of the batch as fresh queries: the
        rest goes in, the sample is searched (it is not in the index), then it goes in."""
        index = self.index
        if not isinstance(index, Tunable) or getattr(index, "trained", True) is False:
            index.add(ids, vectors)  # exact, or IVF-PQ searching exactly until it trains
            return
        layout = _layout(index)
        pick = t.fresh_sample(len(ids), len(index) + len(ids), self._rng)
        if len(pick) and len(index) + len(ids) - len(pick) >= q.RECALL_K:
            rest = np.ones(len(ids), dtype=bool)
            rest[pick] = False
            index.add(ids[rest], vectors[rest])
            if _layout(index) == layout:
                self._measure_fresh(np.ascontiguousarray(vectors[pick], dtype=np.float32))
            index.add(ids[pick], vectors[pick])
        else:
            index.add(ids, vectors)
        if _layout(index) != layout:  # IVF-PQ trained or re-clustered: measure it anew
            self.ledger = t.FreshLedger(t.ladder(index))
            self._retune(index.live_ids())

    def _measure_fresh(self, queries: np.ndarray) -> None:
        truth, sims = self._exact(queries, q.LID_K)
        recalls = t.measure_efforts(self.index, queries, truth[:, : q.RECALL_K], q.RECALL_K,
                                    t.ladder(self.index))
        self.ledger.record(recalls, _inverse_lids(sims))

    def remove(self, ids: np.ndarray) -> None:
        """Forget items the caller has just deleted from the store; `scrub` purges the
        saved copies."""
        self.index.remove(ids)
        if self.persistent:
            self.dirty = self.unpurged = True

    def scrub(self) -> None:
        """Zero removed items' bytes in the saved index files (the store purges its own)."""
        if isinstance(self.index, Persistent):
            self.index.scrub_saved(self.directory)
        self.unpurged = False

    def compact(self, items: Collection[int]) -> int:
        """Reclaim removed items' slots, re-measure recall, and rewrite the saved index
        from live rows only; call it after purging the store. Returns the slots reclaimed."""
        reclaimed = self._compact(items)
        self.unpurged = False
        return reclaimed

    def compact_if_needed(self, items: Collection[int]) -> bool:
        """Compact when removed slots have piled up; True if it did (then purge the store)."""
        index = self.index
        if not (self.persistent and isinstance(index, Compactable) and index.needs_compaction()):
            return False
        log.info("compacting the index of %s (%d removed slots)", self.store.path,
                 index.tombstones)
        self._compact(items)
        return True

    def _compact(self, items: Collection[int]) -> int:
        """Compact holding out a random sample, tune on it as unseen queries, insert it."""
        index = self.index
        if not isinstance(index, Compactable):
            return 0
        reclaimed = index.tombstones
        held = self._hold_out_sample(index.live_ids()) if isinstance(index, Tunable) else _NONE
        index.remove(held)
        index.compact()
        self.ledger = t.FreshLedger(t.ladder(index))
        if len(held):
            found, queries = self.store.vectors(held.tolist())
            self._tune(queries, t.HELD_OUT, size=len(items))
            index.add(found, queries)
        if self.persistent:
            self._save()  # rewrites the saved index from live rows only
        return reclaimed

    # ---- recall: measure, tune, switch kind as the memory grows ---------------------------------

    @property
    def quality(self) -> q.Quality | None:
        """Recall (and on what it was measured) and intrinsic dimension, last measured."""
        found = self.store.state("index_quality")
        return q.Quality.from_dict(found) if found else None

    def after_growth(self, items: Collection[int]) -> None:
        """Switch `auto` to an approximate index, or re-tune, when the memory has grown."""
        count = len(items)
        kind = self.kind_for(count)
        if kind != self.index.kind:
            log.warning("%s now holds %d items: building a %s index", self.store.path, count, kind)
            found = self._rebuild(kind, items)
            if self.store.settings().index == "auto" and kind == "hnsw" and found \
                    and (found.recall < found.target or found.params.get("exhaustive")):
                # `auto` honours the target recall: exact search until the memory doubles
                log.warning("%s: no search effort of hnsw reaches recall %s; auto keeps exact "
                            "search until %d items", self.store.path, found.target, 2 * count)
                self.store.set_state("auto_exact_below", 2 * count)
                self._drop_saved()
                self._build("exact")
                self._measure(items)
                return
            self._save()
            return
        last = self.quality
        if count >= 2 and (last is None or last.type != kind or count >= REMEASURE_GROWTH * last.size):
            self._retune(items)
            self._save()

    def tune(self, queries: np.ndarray, measured_on: str = t.GIVEN) -> q.Quality | None:
        """Tune the search effort on these queries (the user's own: not in the index) and
        record their recall; returns it (None for an index without a search effort)."""
        queries = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.store.dim)
        if not isinstance(self.index, Tunable) or len(queries) == 0:
            return None
        quality = self._tune(queries, measured_on, size=len(self.index))
        self.dirty = self.persistent
        self._save()
        return quality

    def _retune(self, items: Collection[int] | np.ndarray) -> q.Quality | None:
        """Re-tune on the cheapest unseen queries at hand: a held-out sample where the
        index can hold items out (IVF-PQ), else the fresh adds' running estimate, else
        (too few of them) the memory's own vectors, an optimistic last resort."""
        index = self.index
        if isinstance(index, Tunable) and isinstance(index, HoldsOut):
            held = self._hold_out_sample(items)
            if len(held):
                _, queries = self.store.vectors(held.tolist())
                with index.held_out(held):
                    return self._tune(queries, t.HELD_OUT, size=len(items))
        if isinstance(index, Tunable) and self.ledger.count >= t.MIN_QUERIES:
            values = t.ladder(index)
            chosen = t.least_effort(self.ledger.held(), self.target)
            index.set_param(values[chosen])
            estimate = self.ledger.estimate(values[chosen])
            assert estimate is not None
            return self._record(estimate, len(items), q.lid_from_inverses(self.ledger.inverse_lids()))
        return self._measure(items)

    def _tune(self, queries: np.ndarray, measured_on: str, size: int) -> q.Quality:
        """Set the least effort reaching the target on `queries` (not in the index)."""
        truth, sims = self._exact(queries, q.LID_K)
        values = t.ladder(self.index)
        recalls = t.measure_efforts(self.index, queries, truth[:, : q.RECALL_K], q.RECALL_K,
                                    values)
        chosen = t.least_effort(recalls, self.target)
        assert isinstance(self.index, Tunable)
        self.index.set_param(values[chosen])
        return self._record(t.RecallEstimate.of(recalls[:, chosen], measured_on), size,
                            q.lid_from_inverses(_inverse_lids(sims)))

    def _measure(self, items: Collection[int]) -> q.Quality | None:
        """The intrinsic dimension, from a sample of the memory's own vectors, and recall:
        1 for exact search (by definition, ties among equal vectors aside); for an
        approximate index with no unseen queries at hand, tuned on those own vectors (each
        query's own item left out), an optimistic figure."""
        ids = np.fromiter(sorted(items), dtype=np.int64)
        if len(ids) < 2:
            return None
        sample_ids, queries = self.store.vectors(ids[q.sample_rows(len(ids))].tolist())
        depth = min(max(q.RECALL_K, q.LID_K) + 1, len(ids))
        near_ids, near_sims = q.exact_top(queries, self.store.vector_chunks(), depth)
        lid = q.levina_bickel(np.maximum(2.0 - 2.0 * near_sims[:, 1:], 0.0)) if depth > 2 else None
        if not isinstance(self.index, Tunable):
            return self._record(t.RecallEstimate(1.0, 0, 1.0, 1.0, t.EXACT), len(ids), lid)
        truth = q.drop_self(near_ids, sample_ids, q.RECALL_K)
        values = t.ladder(self.index)
        recalls = t.measure_efforts(self.index, queries, truth, q.RECALL_K, values,
                                    own_ids=sample_ids)
        chosen = t.least_effort(recalls, self.target)
        self.index.set_param(values[chosen])
        return self._record(t.RecallEstimate.of(recalls[:, chosen], t.OWN), len(ids), lid)

    def _exact(self, queries: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact (ids, similarities) of the `depth` nearest live items in the index:
        searched by the index over its own vectors where it can, else over the store's
        vectors of the items the index holds."""
        depth = min(depth, len(self.index))
        if isinstance(self.index, ExactlySearchable):
            found = self.index.search_exact(queries, depth)
            return found.ids, found.similarities
        live = np.sort(self.index.live_ids())
        chunks = ((ids[keep], vectors[keep]) for ids, vectors in self.store.vector_chunks()
                  for keep in [np.isin(ids, live, assume_unique=True)])
        return q.exact_top(queries, chunks, depth)

    def _record(self, estimate: t.RecallEstimate, size: int, lid: float | None) -> q.Quality:
        if lid is None or not np.isfinite(lid):
            last = self.quality
            lid = last.lid if last is not None else None
        found = q.Quality(type=self.index.kind, recall=estimate.recall, k=q.RECALL_K,
                          sample=estimate.queries, size=size,
                          params=self.index.describe().get("params", {}),
                          lid=None if lid is None else round(float(lid), 2), target=self.target,
                          measured_on=estimate.measured_on, low=estimate.low, high=estimate.high)
        self.store.set_state("index_quality", found.to_dict())
        if found.warning():
            log.warning("%s: %s", self.store.path, found.warning())
        return found

    def rebuild(self, items: Collection[int]) -> None:
        """After the index settings changed: rebuilt from the store, measured and saved."""
        self._drop_saved()
        self.dirty = False
        self._rebuild(self.kind_for(len(items)), items)
        self._save()

    def describe(self) -> dict[str, Any]:
        """The index as `vismem info` shows it: size and parameters, the setting, the
        last measured recall (what it was measured on, with its interval; a warning when
        below target) and the running recall of fresh adds at the current effort."""
        settings = self.store.settings()
        quality = self.quality
        fresh = None
        if isinstance(self.index, Tunable):
            estimate = self.ledger.estimate(self.index.effort)
            fresh = estimate.to_dict() if estimate else None
        return {**self.index.describe(), "setting": settings.index,
                "target_recall": settings.target_recall, "float16": settings.float16,
                "quality": quality.to_dict() if quality else None,
                "fresh_adds": fresh,
                "warning": quality.warning() if quality else None}


_NONE = np.empty(0, dtype=np.int64)


def _layout(index: Searchable) -> tuple[Any, ...]:
    """What an index's effort is tuned for: IVF-PQ trains and re-clusters (more lists)
    inside an add, after which its effort no longer means the same."""
    return getattr(index, "nlist", None), getattr(index, "trained", True)


def _inverse_lids(similarities: np.ndarray) -> np.ndarray:
    """Inverse intrinsic-dimension estimates from each query's nearest similarities."""
    if similarities.shape[1] < 2:
        return np.empty(0)
    return q.inverse_lid(np.maximum(2.0 - 2.0 * similarities, 0.0))

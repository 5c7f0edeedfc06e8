"""`ManagedIndex`: the life of a memory's search index, from the store to disk and back.

    store (truth + edit log) --build / catch up--> index in RAM --save--> MEMDIR/index/

It decides which kind of index to use (`auto`), opens a saved index and checks it
against the store, rebuilds it (saying why, on stderr) when it is unusable, replays
the store's edits it has not seen, saves it, measures recall and tunes it, switches
kind as the memory grows, compacts it, and scrubs removed items from its saved files.
The index is derived data: whatever goes wrong here, it can be rebuilt from the store.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Collection

import numpy as np

from . import INDEX_TYPES, IndexFileError, VectorIndex, make_index
from . import quality as q

if TYPE_CHECKING:
    from ..store.embedded import EmbeddedStore

INDEX_DIR = "index"          # the saved search index lives in MEMDIR/index/
AUTO_APPROX_MIN = 50_000     # `auto` uses exact search below this many items
REMEASURE_GROWTH = 1.25      # re-measure recall (and re-tune) after growing by 25%
log = logging.getLogger("vismem")


class ManagedIndex:
    """The search index of one memory, kept in step with its store.

    `index` is the `VectorIndex` itself (search it directly); `seq` is the last store
    edit it reflects. `items` arguments are the ids the store holds, as the caller
    knows them. The store's settings say which index to keep; what the index measures
    (recall, history of the `auto` choice) goes to the store's state.
    """

    def __init__(self, store: EmbeddedStore) -> None:
        self.store = store
        self.index: VectorIndex
        self.seq = 0
        self.dirty = False      # changed since it was last saved
        self.unpurged = False   # the saved files may still hold removed items' vectors

    @property
    def directory(self) -> Path:
        return self.store.path / INDEX_DIR

    # ---- which index ---------------------------------------------------------------------

    def kind_for(self, count: int) -> str:
        """The kind of index the memory's setting asks for when it holds `count` items."""
        setting = self.store.settings().index
        if setting != "auto":
            return setting
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        if count * self.store.dim * 4 > ram // 2:
            return "ivfpq"  # float32 vectors would not fit: exact and HNSW are out
        # below the size where approximate search pays, or where it last missed the target
        if count < max(AUTO_APPROX_MIN, int(self.store.state("auto_exact_below") or 0)):
            return "exact"
        return "hnsw"

    def _params(self, kind: str) -> dict[str, Any]:
        return {"float16": self.store.settings().float16} if kind == "hnsw" else {}

    # ---- open, build, catch up, save -------------------------------------------------------

    def open(self, items: Collection[int]) -> None:
        """Load the saved index and replay the store's edits since it was saved; rebuild
        it (saying why, on stderr) when it is missing, damaged or does not match."""
        kind = self.kind_for(len(items))
        self.dirty = False
        if not INDEX_TYPES[kind].persistent:
            self._drop_saved()  # no stale copies of vectors
            self._build(kind)
            self.after_growth(items)
            return
        try:
            index, meta = INDEX_TYPES[kind].load(self.directory, self.store.dim)
            if meta.get("store_created_at") != self.store.created_at:
                raise IndexFileError("it belongs to another memory")
            if meta.get("seq", -1) > self.store.last_edit():
                raise IndexFileError("it is newer than the store")
            self.index, self.seq = index, int(meta["seq"])
            replayed = self.sync()
            if not np.array_equal(self.index.live_ids(), np.fromiter(sorted(items), np.int64)):
                raise IndexFileError("its items differ from the store's")
            if replayed:
                log.info("index of %s caught up %d edits", self.store.path, replayed)
        except IndexFileError as exc:
            if items or self.directory.exists():
                log.warning("rebuilding the %s index of %s: saved index unusable (%s)",
                            kind, self.store.path, exc)
            self._build(kind)
            self._measure(items)
            self._save()

    def catch_up(self, items: Collection[int]) -> None:
        """After another process committed: reopen if the kind should change, else replay."""
        if self.kind_for(len(items)) != self.index.kind:
            self.open(items)
        else:
            self.sync()

    def _build(self, kind: str) -> None:
        self.seq = self.store.last_edit()
        self.index = make_index(kind, self.store.dim, **self._params(kind))
        self.index.reserve(self.store.count())
        for ids, vectors in self.store.vector_chunks():
            self.index.add(ids, vectors)

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
        if replayed and self.index.persistent:
            self.dirty = True
            self.unpurged = True  # the saved index still holds what was removed elsewhere
        return replayed

    def _add_from_store(self, ids: list[int]) -> None:
        missing = [i for i in ids if self.index.missing(i)]
        if missing:
            found, vectors = self.store.vectors(missing)
            self.index.add(found, vectors)

    def _drop_saved(self) -> None:
        if not self.store.read_only:  # on read-only media the saved files stay as they are
            shutil.rmtree(self.directory, ignore_errors=True)

    def _save(self) -> None:
        if not self.index.persistent or self.store.read_only:
            return
        self.sync()
        self.index.save(self.directory, {"seq": self.seq,
                                         "store_created_at": self.store.created_at})
        self.dirty = False

    def save_if_dirty(self) -> None:
        if self.dirty:
            self._save()

    # ---- edits made through this process -----------------------------------------------------

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add items the caller has just committed to the store."""
        self.index.add(ids, vectors)
        self.dirty = self.index.persistent

    def remove(self, ids: np.ndarray) -> None:
        """Forget items the caller has just deleted from the store; `scrub` purges the
        saved copies."""
        self.index.remove(ids)
        if self.index.persistent:
            self.dirty = self.unpurged = True

    def scrub(self) -> None:
        """Zero removed items' bytes in the saved index files (the store purges its own)."""
        if self.index.persistent:
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
        if not (self.index.persistent and self.index.needs_compaction()):
            return False
        log.info("compacting the index of %s (%d removed slots)", self.store.path,
                 self.index.tombstones)
        self._compact(items)
        return True

    def _compact(self, items: Collection[int]) -> int:
        reclaimed = self.index.tombstones
        self.index.compact()
        if self.index.persistent:
            self._measure(items)
            self._save()  # rewrites the saved index from live rows only
        return reclaimed

    # ---- recall: measure, tune, switch kind as the memory grows ---------------------------------

    @property
    def quality(self) -> q.Quality | None:
        """Recall and intrinsic dimension last measured on this memory's own vectors."""
        found = self.store.state("index_quality")
        return q.Quality(**found) if found else None

    def after_growth(self, items: Collection[int]) -> None:
        """Switch `auto` to an approximate index, or re-measure, when the memory has grown."""
        count = len(items)
        kind = self.kind_for(count)
        if kind != self.index.kind:
            log.warning("%s now holds %d items: building a %s index", self.store.path, count, kind)
            self._build(kind)
            found = self._measure(items)
            if self.store.settings().index == "auto" and kind == "hnsw" and found \
                    and found.recall < found.target:
                # `auto` honours the target recall: exact search until the memory doubles
                log.warning("%s: hnsw reached recall %.3f < %s; auto keeps exact search "
                            "until %d items", self.store.path, found.recall, found.target, 2 * count)
                self.store.set_state("auto_exact_below", 2 * count)
                self._drop_saved()
                self._build("exact")
                self._measure(items)
                return
            self._save()
            return
        last = self.quality
        if count >= 2 and (last is None or last.type != kind or count >= REMEASURE_GROWTH * last.size):
            self._measure(items)
            if self.index.persistent:
                self._save()

    def _measure(self, items: Collection[int]) -> q.Quality | None:
        """Measure recall@k against exact search (tuning the index to the target recall)
        and the local intrinsic dimension, on a sample of the memory's own vectors."""
        ids = np.fromiter(sorted(items), dtype=np.int64)
        if len(ids) < 2:
            return None
        sample_ids, queries = self.store.vectors(ids[q.sample_rows(len(ids))].tolist())
        depth = min(max(q.RECALL_K, q.LID_K) + 1, len(ids))
        near_ids, near_sims = q.exact_top(queries, self.store.vector_chunks(), depth)
        truth = q.drop_self(near_ids, sample_ids, q.RECALL_K)
        lid = q.levina_bickel(np.maximum(2.0 - 2.0 * near_sims[:, 1:], 0.0)) if depth > 2 else None
        target = float(self.store.settings().target_recall)
        # exact search finds the true neighbours by definition (ties among equal vectors aside)
        recall = 1.0 if self.index.kind == "exact" else q.tune(self.index, queries, sample_ids, truth,
                                                                q.RECALL_K, target)
        found = q.Quality(type=self.index.kind, recall=round(recall, 4), k=q.RECALL_K,
                          sample=len(sample_ids), size=len(ids),
                          params=self.index.describe().get("params", {}),
                          lid=None if lid is None or not np.isfinite(lid) else round(lid, 2),
                          target=target)
        self.store.set_state("index_quality", found.to_dict())
        if found.recall < target:
            log.warning("%s: %s", self.store.path, found.warning())
        return found

    def rebuild(self, items: Collection[int]) -> None:
        """After the index settings changed: rebuilt from the store, measured and saved."""
        self._drop_saved()
        self.dirty = False
        self._build(self.kind_for(len(items)))
        self._measure(items)
        self._save()

    def describe(self) -> dict[str, Any]:
        """The index as `vismem info` shows it: size and parameters, the setting, and
        the last measured recall (with a warning when it is below target)."""
        settings = self.store.settings()
        quality = self.quality
        return {**self.index.describe(), "setting": settings.index,
                "target_recall": settings.target_recall, "float16": settings.float16,
                "quality": quality.to_dict() if quality else None,
                "warning": quality.warning() if quality else None}

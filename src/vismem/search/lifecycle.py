"""`ManagedIndex`: the life of a memory's search index, from the store to disk and back.

    store (truth + edit log) --build / catch up--> index in RAM --save--> MEMDIR/index/

It decides which kind of index to use (`auto`), opens a saved index and checks it
against the store, rebuilds it (saying why, on stderr) when it is unusable, replays
the store's edits it has not seen, saves it, has it measured and tuned (tuner.py: on
vectors it has never seen), switches kind as the memory grows, compacts it, and scrubs
removed items from its saved files. The index is derived data: whatever goes wrong
here, it can be rebuilt from the store.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import shutil
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import PurgeUnfinishedError
from ..maintenance import maintenance
from . import INDEX_TYPES, IndexFileError, make_index
from . import quality as q
from . import saved
from . import tuning as t
from .base import Compactable, Persistent, Searchable, Tunable, ascending_ids
from .choice import AUTO_APPROX_MIN, choose_kind, physical_ram
from .tuner import NO_IDS, Tuner

if TYPE_CHECKING:
    from ..store.embedded import EmbeddedStore

INDEX_DIR = "index"          # the saved search index lives in MEMDIR/index/
REMEASURE_GROWTH = 1.25      # re-measure recall (and re-tune) after growing by 25%
BUILT_KIND = "index_kind"    # the store's state: the kind of index last built
log = logging.getLogger("vismem")
# why a saved index may not be written: a full disk or quota, read-only media, no permission
UNWRITABLE = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


class RebuiltElsewhere(Exception):
    """The saved index was unusable because another process was rebuilding it, through
    settings it committed after the caller read them: read them again and open anew."""


class ManagedIndex:
    """The search index of one memory, kept in step with its store.

    `index` is the backend itself (search it directly), typed by the protocols of
    base.py: any `Searchable`, saved when `Persistent`, compacted when `Compactable`,
    tuned when `Tunable`. `seq` is the last store edit it reflects. `items` arguments
    are the ids the store holds, as the caller knows them. The store's settings say
    which index to keep; what the index measures (recall, history of the `auto` choice)
    goes to the store's state.
    """

    def __init__(self, store: EmbeddedStore) -> None:
        self.store = store
        self.index: Searchable
        self.tuner = Tuner(store)
        self.seq = 0
        self.dirty = False      # changed since it was last saved
        self.unpurged = False   # the saved files may still hold removed items' vectors
        self._building = False  # within `rebuilding`
        self._told_in_the_way = False  # warned that a file stands where the saved index goes

    @property
    def directory(self) -> Path:
        return self.store.path / INDEX_DIR

    @property
    def persistent(self) -> bool:
        """Whether the index is saved beside the store (else it is rebuilt at open)."""
        return isinstance(self.index, Persistent)

    @property
    def quality(self) -> q.Quality | None:
        """Recall (and on what it was measured) and intrinsic dimension, last measured."""
        return self.tuner.quality

    # ---- which index ---------------------------------------------------------------------

    def kind_for(self, count: int, current: str | None = None) -> str:
        """The kind of index the memory's setting asks for when it holds `count` items and
        uses a `current` kind of index (None: the one loaded). Every process decides from the
        kind it holds, saved (else last built) or loaded alike, so they agree and `auto` keeps HNSW when
        the memory shrinks a little (choice.py)."""
        current = self.index.kind if current is None else current
        return choose_kind(self.store.settings().index, count=count, dim=self.store.search_dim,
                           ram_bytes=physical_ram(),
                           exact_below=int(self.store.state("auto_exact_below") or 0),
                           approx_min=AUTO_APPROX_MIN, approximate=current not in ("", "exact"))

    def _last_built_kind(self) -> str:
        """The kind of index last built for this memory, as the store's state keeps it ("":
        none recorded). What `open` decides from when no index is saved: a save that could
        not be made (a full disk, a file where the folder goes) leaves none, and without it
        `auto` went back to exact search below AUTO_APPROX_MIN although the HNSW index it
        replaced was kept down to AUTO_APPROX_KEEP."""
        found = self.store.state(BUILT_KIND)
        return found if isinstance(found, str) and found in INDEX_TYPES else ""

    def _params(self, kind: str) -> dict[str, Any]:
        return {"float16": self.store.settings().float16} if kind == "hnsw" else {}

    # ---- open, build, catch up, save -------------------------------------------------------

    def open(self, items: Collection[int], until: int | None = None) -> None:
        """Load the saved index and replay the store's edits since it was saved, up to edit
        `until` (the one `items` reflect; None: the last); rebuild it (saying why, on
        stderr) when it is missing, damaged or does not match."""
        kind, loaded = self._open_saved(len(items))
        if not kind:
            if self.wait_for_rebuild():  # (never under the lock: the builder takes it to save)
                # its files dropped for one that another process builds: the kind it saves decides
                raise RebuiltElsewhere("no saved index")
            kind = self.kind_for(len(items), self._last_built_kind())
        self.dirty = False
        backend = INDEX_TYPES[kind]
        if not issubclass(backend, Persistent):
            self._drop_saved()  # no stale copies of vectors
            self._build(kind)
            self.after_growth(items)
            return
        try:
            index, meta = self._loaded(backend, loaded)
            self.index, self.seq = index, int(meta["seq"])
            self.tuner.start(index, meta.get("fresh"))
            replayed = self.sync(until)
            expected = ascending_ids(items)
            held = self._holds(expected, until)
            if not held and until is not None:
                # An item that others added and then removed (and purged) since the
                # caller read `items` has no vector left to replay, or the saved index is
                # newer than `items`: the index goes on to the newest edit, and the caller's
                # catalog follows it (to `seq`) instead of the index being rebuilt.
                replayed += self.sync()
                held = self._holds(expected, until)
            if not held:
                raise IndexFileError("its items differ from the store's")
            if replayed:
                log.info("index of %s caught up %d edits", self.store.path, replayed)
        except IndexFileError as exc:
            if self.wait_for_rebuild():
                raise RebuiltElsewhere(str(exc)) from exc
            if items or self.directory.exists():
                log.warning("rebuilding the %s index of %s: saved index unusable (%s)",
                            kind, self.store.path, exc)
            with maintenance(f"rebuilding the {kind} index", len(items)) as advance:
                self._rebuild(kind, items, advance)
            self._save()

    def _open_saved(self, count: int) -> tuple[str, tuple[Any, dict[str, Any]] | IndexFileError | None]:
        """(the kind for `count` items given the saved index's, what loading it gave when that
        kind is saved: the index and its meta, or why not), reading meta.json once, under one
        hold of the lock: for its kind, then for the files. ("", None): none saved."""
        with saved.locked(self.directory, shared=True):  # not half-way through another's save
            found = saved.saved_meta(self.directory)
            current = saved.saved_kind(found)
            if not current:
                return "", None
            kind = self.kind_for(count, current)
            backend = INDEX_TYPES[kind]
            if not issubclass(backend, Persistent):
                return kind, None
            try:
                return kind, backend.load(self.directory, self.store.search_dim, found)
            except IndexFileError as exc:  # (rebuilt once the lock is let go)
                return kind, exc

    def _loaded(self, backend: type[Persistent],
                loaded: tuple[Any, dict[str, Any]] | IndexFileError | None) -> tuple[Any, dict[str, Any]]:
        """The saved index and its meta as `_open_saved` loaded them (None: none was saved
        when it looked, one may be now: loaded here), checked against the store; raises
        IndexFileError when it cannot be used."""
        if isinstance(loaded, IndexFileError):
            raise loaded
        if loaded is None:
            with saved.locked(self.directory, shared=True):  # not while another process saves
                loaded = backend.load(self.directory, self.store.search_dim)
        meta = loaded[1]
        if meta.get("store_created_at") != self.store.created_at:
            raise IndexFileError("it belongs to another memory")
        if meta.get("transform", "none") != self.store.transform().key:
            raise IndexFileError("it was built through another feature transform")
        if meta.get("seq", -1) > self.store.last_edit():
            raise IndexFileError("it is newer than the store")
        return loaded

    @contextmanager
    def rebuilding(self) -> Iterator[None]:
        """Hold around committing a change the index must be rebuilt for (a feature
        transform, an index setting) and the rebuild: a process that opens the memory
        meanwhile waits for the new index instead of building one of its own. Nested, it
        holds nothing more (a second flock of this process would wait for its first)."""
        if self._building:
            yield
            return
        with saved.building(self.directory):
            self._building = True
            try:
                yield
            finally:
                self._building = False

    def wait_for_rebuild(self) -> bool:
        """Wait while another process rebuilds the saved index; True if it did. Never inside
        a transaction of the store, which that process may be waiting to write through: a
        write that can begin again is told to let go first (`saved.BuildUnderway`), any
        other goes on without waiting (False)."""
        if self._building:
            return False
        if self.store.in_transaction:
            if self.store.write_can_restart and saved.wait_for_build(self.directory, block=False):
                raise saved.BuildUnderway(self.directory)
            return False
        return saved.wait_for_build(self.directory)

    def _holds(self, items: np.ndarray, at: int | None) -> bool:
        """Whether the index holds exactly `items` (ascending: the store's items at edit
        `at`, None: the last) as the logged edits after `at`, up to the index's, change them."""
        if at is not None and self.seq > at:
            for _, op, ids in self.store.edits_since(at, self.seq):
                if op == "add":
                    items = np.union1d(items, np.asarray(ids, dtype=np.int64))
                elif op == "remove":
                    items = np.setdiff1d(items, np.asarray(ids, dtype=np.int64))
        return np.array_equal(np.sort(self.index.live_ids()), items)

    def catch_up(self, items: Collection[int], until: int | None = None) -> None:
        """After another process committed: reopen if the kind should change, else replay
        its edits up to `until` (as `open`) and take the search effort it tuned, if it did."""
        if self.kind_for(len(items)) != self.index.kind:
            self.open(items, until)
        else:
            self.sync(until)
            self.tuner.follow(self.index)

    def _build(self, kind: str, items: Collection[int] = (),
               progress: Callable[[int], None] | None = None) -> np.ndarray:
        """Build the index from the store (`progress(n)` as n more items are in). When it
        is tunable, a random sample of `items` is held out of it; returns the held-out ids
        (sorted) for the caller to measure and insert. It holds exactly the items of edit
        `seq`: what other processes commit meanwhile is replayed after."""
        if self.store.state(BUILT_KIND) != kind:  # (written when the kind changes, not at each open)
            self.store.set_state(BUILT_KIND, kind)
        self.index = make_index(kind, self.store.search_dim, **self._params(kind))
        self.index.reserve(self.store.count())
        self.tuner.start(self.index)
        held = self.tuner.hold_out_sample(items) if isinstance(self.index, Tunable) else NO_IDS
        with self.store.snapshot():
            self.seq = self.store.last_edit()
            for ids, vectors in self.store.searched_chunks():
                if len(held):
                    keep = ~np.isin(ids, held, assume_unique=True)
                    ids, vectors = ids[keep], vectors[keep]
                self.index.add(ids, vectors)
                if progress:
                    progress(len(ids))
        return held

    def _rebuild(self, kind: str, items: Collection[int],
                 progress: Callable[[int], None] | None = None) -> q.Quality | None:
        """Build from the store holding out a random sample, tune on it as unseen
        queries, then insert it (the exact index: measured on own vectors)."""
        held = self._build(kind, items, progress)
        if not len(held):
            return self.tuner.own_vectors(self.index, items)
        found, queries = self.store.searched_vectors(held.tolist())
        quality = self.tuner.tune(self.index, queries, t.HELD_OUT, items)
        quality = self.tuner.put_back(self.index, found, queries, items) or quality
        if progress:
            progress(len(found))
        return quality

    def sync(self, until: int | None = None) -> int:
        """Apply adds and removals from the store's log that the index has not seen, up to
        edit `until` (None: the last; other edits do not move vectors); returns how many."""
        replayed, adds = 0, []
        for seq, op, ids in self.store.edits_since(self.seq, until):
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
            found, vectors = self.store.searched_vectors(missing)
            self.tuner.insert(self.index, found, vectors)

    def _drop_saved(self) -> None:
        if not self.store.read_only:  # on read-only media the saved files stay as they are
            with saved.locked(self.directory):
                shutil.rmtree(self.directory, ignore_errors=True)

    def _save(self, *, purging: bool = False) -> None:
        """`purging`: the save is to leave no removed item's bytes (a compaction): one that
        cannot take the lock says so, where a plain save only warns."""
        if not isinstance(self.index, Persistent) or self.store.read_only:
            return
        try:
            with saved.locked(self.directory):
                self._write_saved(self.index)
        except saved.HolderSilent as exc:
            if purging:
                raise self._not_purged(exc) from None
            # Derived state, as below: the saved files stay as the last save left them (one
            # cut short is refused by its checksums), and the next open replays the log
            # since their edit, or rebuilds (no longer dirty: close does not wait to save it again).
            self.dirty = False
            log.warning("%s: did not save the search index (%s); it catches up with the memory's items when the "
                        "memory is next opened", self.directory, exc)
        except OSError as exc:
            if self._in_the_way():
                self.dirty = False  # (nothing was written: the folder could not be made)
                return
            if exc.errno not in UNWRITABLE:
                raise
            # The index is derived state: a save that cannot be made is no error of the edit
            # already committed. The half-written files go, with the stale ones they were to
            # replace (which may hold removed items), and the next open rebuilds it.
            with contextlib.suppress(OSError):
                self._drop_saved()
            self.dirty = False
            log.warning("%s: could not save the search index (%s); it is rebuilt when the memory is next opened",
                        self.directory, exc.strerror or exc)

    def _in_the_way(self) -> bool:
        """Whether something other than a folder (a file, a link to one or to nothing)
        stands where the saved index goes: not ours to remove. Says so, once: each later
        save meets it again."""
        where = self.directory
        if where.is_dir() or not (where.is_symlink() or where.exists()):
            return False
        if not self._told_in_the_way:
            self._told_in_the_way = True
            log.warning("%s: could not save the search index: that path is a file, not a folder; move or remove "
                        "it (until then the index is rebuilt each time the memory is opened)", where)
        return True

    def _write_saved(self, index: Persistent) -> None:
        """Save, holding the lock: the edits are replayed first, inside it, so a removal
        another process commits and scrubs meanwhile is either in this copy or finds it
        written by another process and replaces it (`scrub`)."""
        self.sync()
        index.save(self.directory, {"seq": self.seq, "store_created_at": self.store.created_at,
                                    "transform": self.store.transform().key,
                                    "fresh": self.tuner.ledger.to_dict()})
        self.dirty = False

    def save_if_dirty(self) -> None:
        if self.dirty:
            self._save()

    # ---- edits made through this process -----------------------------------------------------

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add items the caller has just committed to the store (vectors as stored; a
        sample of them is first measured as fresh queries)."""
        self.tuner.insert(self.index, np.asarray(ids, dtype=np.int64), self.store.to_search_space(vectors))
        self.dirty = self.persistent

    def remove(self, ids: np.ndarray) -> None:
        """Forget items the caller has just deleted from the store; `scrub` purges the
        saved copies."""
        self.index.remove(ids)
        if self.persistent:
            self.dirty = self.unpurged = True

    def scrub(self) -> None:
        """Zero removed items' bytes in the saved index files (the store purges its own).
        Files another process saved since hold its rows, not ours: this index, which holds
        no removed item's bytes, is saved over them instead."""
        index = self.index
        # (with a file where the folder goes, nothing of this index is saved there)
        if isinstance(index, Persistent) and not self.store.read_only and not self._in_the_way():
            try:
                with saved.locked(self.directory):
                    if not index.scrub_saved(self.directory):
                        self._write_saved(index)
            except saved.HolderSilent as exc:
                raise self._not_purged(exc) from None
        self.unpurged = False

    def _not_purged(self, exc: saved.HolderSilent) -> PurgeUnfinishedError:
        """What a scrub or a compaction that could not take the lock leaves: the files as
        they were, the removals committed (the next open replays them from the log)."""
        return PurgeUnfinishedError(
            f"memory at {self.store.path}: removed items are gone from the store and every search, but their "
            f"vectors stay in its saved index's files: {exc.silent}, holding {exc.lock}; {exc.resume}, then run "
            f"`vismem compact {self.store.path}` to purge them")

    def compact(self, items: Collection[int], progress: Callable[[int], None] | None = None) -> int:
        """Reclaim removed items' slots, re-measure recall, and rewrite the saved index
        from live rows only; call it after purging the store. Returns the slots reclaimed
        (`progress(n)` as n more live items are in the compacted index)."""
        reclaimed = self._compact(items, progress)
        if not self._measured_on(items):  # an exact index compacts nothing; a small one holds no sample out
            self.tuner.own_vectors(self.index, items)
            self.dirty = self.persistent
        self.unpurged = False
        return reclaimed

    def _measured_on(self, items: Collection[int]) -> bool:
        """Whether recall and intrinsic dimension were last measured on exactly `items`: as
        many, the newest the same (an item added since has a newer id, one removed is missing)."""
        quality, ids = self.quality, ascending_ids(items)
        return quality is not None and quality.size == len(ids) and len(ids) > 0 and quality.last_id == ids[-1]

    def compact_if_needed(self, items: Collection[int]) -> bool:
        """Compact when removed slots have piled up; True if it did (then purge the store)."""
        index = self.index
        if not (self.persistent and isinstance(index, Compactable) and index.needs_compaction()):
            return False
        log.info("compacting the index of %s (%d removed slots)", self.store.path,
                 index.tombstones)
        with maintenance("compacting the index", len(items)) as advance:
            self._compact(items, advance)
        return True

    def _compact(self, items: Collection[int], progress: Callable[[int], None] | None = None) -> int:
        """Compact holding out a random sample, tune on it as unseen queries, insert it."""
        index = self.index
        if not isinstance(index, Compactable):
            return 0
        reclaimed = index.tombstones
        held = self.tuner.hold_out_sample(index.live_ids()) if isinstance(index, Tunable) else NO_IDS
        index.remove(held)
        index.compact(progress)
        self.tuner.start(index)
        if len(held):
            found, queries = self.store.searched_vectors(held.tolist())
            self.tuner.tune(index, queries, t.HELD_OUT, items)
            self.tuner.put_back(index, found, queries, items)
            if progress:
                progress(len(found))
        if self.persistent:
            self._save(purging=True)  # rewrites the saved index from live rows only
        return reclaimed

    # ---- recall: re-tune and switch kind as the memory grows, tune on given queries -----------

    def after_growth(self, items: Collection[int]) -> None:
        """Switch `auto` to an approximate index, or re-tune, when the memory has grown."""
        count = len(items)
        kind = self.kind_for(count)
        if kind != self.index.kind:
            log.warning("%s now holds %d items: building a %s index", self.store.path, count, kind)
            with maintenance(f"building a {kind} index", count) as advance:
                found = self._rebuild(kind, items, advance)
            if self.store.settings().index == "auto" and kind == "hnsw" and found \
                    and (found.recall < found.target or found.params.get("exhaustive")):
                # `auto` honours the target recall: exact search until the memory doubles
                log.warning("%s: no search effort of hnsw reaches recall %s; auto keeps exact "
                            "search until %d items", self.store.path, found.target, 2 * count)
                self.store.set_state("auto_exact_below", 2 * count)
                self._drop_saved()
                self._build("exact")
                self.tuner.own_vectors(self.index, items)
                return
            self._save()
            return
        last = self.quality
        if count >= 2 and (last is None or last.type != kind or count >= REMEASURE_GROWTH * last.size):
            self.tuner.retune(self.index, items)
            self._save()

    def tune(self, queries: np.ndarray, measured_on: str = t.GIVEN) -> q.Quality | None:
        """Tune the search effort on these queries (the user's own: not in the index) and
        record their recall; returns it (None for an index without a search effort)."""
        queries = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.store.search_dim)
        if not isinstance(self.index, Tunable) or len(queries) == 0:
            return None
        quality = self.tuner.tune(self.index, queries, measured_on, self.index.live_ids())
        self.dirty = self.persistent
        self._save()
        return quality

    def rebuild(self, items: Collection[int], progress: Callable[[int], None] | None = None) -> None:
        """After the index settings or the feature transform changed: rebuilt from the
        store, measured and saved (`progress(n)` as n more items are in)."""
        self._drop_saved()
        self.dirty = False
        self._rebuild(self.kind_for(len(items)), items, progress)
        self._save()

    def describe(self) -> dict[str, Any]:
        """The index as `vismem info` shows it: size and parameters, the setting, the
        last measured recall (what it was measured on, with its interval; a warning when
        below target) and the running recall of fresh adds at the current effort."""
        settings = self.store.settings()
        quality = self.quality
        return {**self.index.describe(), "setting": settings.index,
                "target_recall": settings.target_recall, "float16": settings.float16,
                "quality": quality.to_dict() if quality else None,
                "fresh_adds": self.tuner.fresh_estimate(self.index),
                "warning": quality.warning() if quality else None}

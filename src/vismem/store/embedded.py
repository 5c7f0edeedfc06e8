"""`EmbeddedStore`: a memory in one directory, with no server.

    MEMDIR/memory.sqlite  the truth (Database): items, vectors, settings, edit log
    catalog (RAM)         vote metadata as numpy columns, for filters and neighbours
    MEMDIR/index/         the search index (ManagedIndex), derived and rebuildable

Every write goes to the database first, inside one transaction that first catches up
with what other processes committed (so edits apply in commit order), then to the
catalog and the index. Reads see other processes' commits after `refresh()`.

The feature transform (`settings.transform`, see `transform.py`) is derived state like
the index: fitted on the live items, kept in the database's config with the newest id
and the edit it saw, applied to every vector entering the index and to every query. The
stored vectors stay raw. Adding or removing items does not refit it; purging removals of
items it was fitted on does (a fitted mean keeps a share of each item it saw), and
rebuilds the index through the new fit. An import installs the fit it brings instead
(`install_transform`), so it searches exactly as the memory it came from.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import json
import logging
import os
import shutil
import threading
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from ..errors import (DiskFullError, InvalidInputError, MemoryBusyError, MemoryExistsError, MemoryNotFoundError,
                      VismemError, commit_watch, committed, committed_since)
from ..maintenance import maintenance
from ..prune import PruneSettings
from ..search.base import Persistent, SearchResult
from ..search.lifecycle import ManagedIndex, RebuiltElsewhere
from ..search.saved import BuildUnderway, sync_directory
from ..search.tuning import GIVEN, RECORDED, QuerySample
from ..settings import EncoderIdentity, MemorySettings
from ..transform import FeatureTransform, TransformSpec, fit_transform_chunks, identity
from ..vectors import vector_hashes
from .base import Capabilities, Filter, InsertResult, Item, Nearest, Neighbours, NewItem, Page, canonical
from .catalog import Catalog
from .checkpoints import Checkpoint, RollbackReport
from .migrate import READABLE_AS_IS, upgrade
from .sqlite import DB_NAME, FORMAT_VERSION, Database

log = logging.getLogger("vismem")

INDEX_SETTINGS = ("index", "target_recall", "float16")
# The data version seen after a catch-up let go midway (SQLite's are never negative): the
# next catch-up loads everything anew.
LET_GO = -1
# Space held back on disk so that a removal can still commit when the disk is full (the
# removal must log its change first): released on a full disk, re-made when room returns.
# 8 MiB: since vector items keep content hashes, a removal also logs the pages of the two
# hash indexes it deletes from (2,000 of 20,000 items no longer fit in 4 MiB).
RESERVE_NAME = "space-reserve"
RESERVE_BYTES = 8 * 2**20


class EmbeddedStore:
    """SQLite + catalog + search index of one memory directory (see the module docstring)."""

    capabilities = Capabilities(thumbnails=True, verifiable_purge=True, local_files=True, feature_transforms=True)

    def __init__(self, db: Database) -> None:
        self.db = db
        self.path = db.directory
        self.location = str(db.directory)
        config = db.config()
        self.identity = EncoderIdentity(**config["encoder"])
        self.created_at = config["created_at"]
        self._config = config
        self._transform = self._stored_transform()
        self._settings: MemorySettings  # these two are read by _load, below
        self.catalog: Catalog
        self._index = ManagedIndex(self)
        self._unpurged = False
        self._recorded: QuerySample | None = None  # queries recorded here, not yet written
        self._recording = threading.Lock()  # reader threads record side by side
        self._rng = np.random.default_rng()
        self.catch_ups = 0
        self._load()
        self._keep_reserve()

    # ---- open / create ---------------------------------------------------------------

    @staticmethod
    def check_new(path: Path) -> None:
        """A new memory gets a directory of its own: a new one, an empty one, or one left by
        a create that crashed. Never one that holds other files, which its removal would take."""
        if (path / DB_NAME).exists():
            raise MemoryExistsError(f"a memory already exists at {path}")
        if path.exists() and not path.is_dir():
            raise InvalidInputError(f"{path} exists and is not a directory")
        left = _left_by_stopped_fills(path)  # cleared by the create
        if path.exists() and any(p.name != DB_NAME + ".creating" and not p.name.startswith(FILLING)
                                 and p.name not in left for p in path.iterdir()):
            raise InvalidInputError(f"{path} holds other files; a memory needs a directory of its own: "
                                    "choose a new or empty one")
        # nor one inside another memory's: its files are that memory's (`remove --verify` there
        # would find this one's vectors as remnants, and removing that memory takes this one)
        outer = next((folder for folder in path.resolve().parents if (folder / DB_NAME).exists()), None)
        if outer is not None:
            raise InvalidInputError(f"{path} lies in the folder of the memory at {outer}; a memory needs a directory "
                                    "of its own: choose one outside it")

    @classmethod
    def create(cls, path: str | Path, identity: EncoderIdentity, settings: MemorySettings) -> EmbeddedStore:
        path = Path(path)
        cls.check_new(path)
        _remove_abandoned_fills(path)
        return cls(Database.create(path, {"encoder": identity.to_dict(), "settings": settings.to_dict()}))

    @classmethod
    def create_filled(cls, path: str | Path, identity: EncoderIdentity, settings: MemorySettings,
                      fill: Callable[[EmbeddedStore], None]) -> EmbeddedStore:
        """A new memory at `path`, filled by `fill(store)` in a hidden directory beside it
        and renamed into place when full: an error or a kill midway leaves nothing at
        `path` (a killed fill's directory is removed by the next fill of `path`). Where
        `path` is an empty directory already, the hidden directory is inside it and its
        files are moved out, the database last (`_move_into`): the directory stays itself
        (a mount point cannot be removed, and a shell inside it would be left in a removed
        one), and a move cut short leaves it empty again (killed: at the next fill)."""
        path = Path(os.path.abspath(path))  # a name to hide the work beside, even for "."
        cls.check_new(path)
        _remove_abandoned_fills(path)
        inside = path.is_dir()
        staging = path / f"{FILLING}{os.getpid()}" if inside else path.with_name(f".{path.name}{FILLING}{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        store = cls.create(staging, identity, settings)
        try:
            fill(store)
        except BaseException:
            store.db.close()  # what it wrote goes with its directory: nothing to save or purge
            shutil.rmtree(staging, ignore_errors=True)
            raise
        store.close()
        try:
            if inside:
                _move_into(staging, path)
            else:
                os.rename(staging, path)
        except BaseException as exc:  # refused, or cut short (Ctrl-C, SIGTERM): what it moved in goes too
            _clear_fill(staging, path)
            if isinstance(exc, OSError) and exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                raise MemoryExistsError(f"something was put at {path} meanwhile: choose a new path") from None
            raise
        sync_directory(path if inside else path.parent)
        return cls.open(path)

    @classmethod
    def open(cls, path: str | Path) -> EmbeddedStore:
        if _left_by_stopped_fills(Path(path)):
            raise MemoryNotFoundError(f"no memory at {path}: an import into it was stopped while it moved the memory's "
                                      f"files in, and left some of them there; import again (`vismem import FILE "
                                      f"{path}`): it clears them first")
        db = Database.open(path)
        version = db.format_version()
        if version > FORMAT_VERSION:
            db.close()
            raise VismemError(f"memory at {path} has format version {version}, newer than this vismem "
                              f"supports ({FORMAT_VERSION}); upgrade vismem")
        if version < FORMAT_VERSION and not (db.read_only and version >= READABLE_AS_IS):
            db.close()
            upgrade(Path(path))  # atomic: the old file stays until the new one is complete
            db = Database.open(path)
        return cls(db)

    def _load(self) -> None:
        """(Re)load settings, the catalog and the index from the database."""
        self._index.wait_for_rebuild()  # another process rebuilding the index: read what it commits
        while True:
            self._seen = self.db.data_version()
            # One state of the database: an edit another process commits meanwhile lands
            # after `_seq` and is replayed at the next catch-up, never read twice.
            with self.db.snapshot():
                self._reload_config()
                self._seq = self.db.last_edit()
                catalog = Catalog(self.db)
                rows = list(self.db.item_rows())
                catalog.add([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows],
                            [r[3] for r in rows])
                catalog.set_prune_counts(self.db.all_prune_counts())
                catalog.relabelled = self.db.relabels()
            self.catalog = catalog
            try:
                self._index.open(self._live(), until=self._seq)
                break
            except RebuiltElsewhere:  # began after the wait above: it is done now
                continue
        self._replay(until=self._index.seq)  # a rebuilt index holds a later state: the catalog follows

    def _replay(self, until: int | None = None) -> None:
        """Apply the logged edits after the catalog's to it, up to edit `until` (None: all)."""
        if until is not None and until <= self._seq:  # the usual case after a catch-up: no query
            return
        for seq, op, ids in self.db.edits_since(self._seq, until):
            self._replay_edit(op, ids)
            self._seq = seq

    def _reload_config(self) -> bool:
        """Read the config and settings again; True when the fitted transform changed (it is
        decoded only then: every catch-up after another process's commit comes here)."""
        config = self.db.config()
        changed = _fingerprint(config) != _fingerprint(self._config)
        self._config = config
        self._settings = MemorySettings.from_dict(config.get("settings", {}))
        if changed:
            self._transform = self._stored_transform()
        return changed

    # ---- the feature transform -------------------------------------------------------

    def _stored_transform(self) -> FeatureTransform:
        found = self._config.get("transform")
        return FeatureTransform.from_dict(found["fitted"]) if found else identity(self.identity.dim)

    def transform(self) -> FeatureTransform:
        return self._transform

    @property
    def search_dim(self) -> int:
        """The dimension of vectors as searched (a whitening may keep fewer)."""
        return self._transform.out_dim

    def to_search_space(self, vectors: np.ndarray) -> np.ndarray:
        return self._transform.apply(vectors)

    def searched_vectors(self, ids: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        found, vectors = self.vectors(ids)
        return found, self.to_search_space(vectors)

    def searched_chunks(self, size: int = 65536) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for ids, vectors in self.vector_chunks(size):
            yield ids, self.to_search_space(vectors)

    def _fit(self, spec: TransformSpec, progress: Callable[[int], None] | None = None,
             up_to: int | None = None) -> tuple[FeatureTransform, dict[str, Any] | None]:
        """Fit `spec` on every item (with an id up to `up_to`, if given), in one state of the
        database: the fit, and what the config keeps of it (None for none). Raises
        InvalidInputError when the items cannot be fitted (there are none, or they do not
        vary); nothing is written here."""
        if spec == TransformSpec():
            return identity(self.dim), None
        with self.db.snapshot():
            seq, last = self.db.last_edit(), 0
            if not self.db.count():
                raise InvalidInputError(f"memory at {self.path} is empty: add items before fitting a feature "
                                        "transform")

            def vectors() -> Iterator[np.ndarray]:
                nonlocal last
                for ids, chunk in self.vector_chunks():
                    if up_to is not None and ids[-1] > up_to:
                        ids, chunk = ids[ids <= up_to], chunk[ids <= up_to]
                        if not len(ids):
                            return
                    yield chunk
                    last = int(ids[-1])
                    if progress:
                        progress(len(ids))
            fitted = fit_transform_chunks(vectors(), spec)
        return fitted, {"fitted": fitted.to_dict(), "max_id": last, "seq": seq}

    def install_transform(self, fitted: FeatureTransform, max_id: int,
                          progress: Callable[[int], None] | None = None) -> None:
        """Search through `fitted`, a fit made elsewhere (in the memory an import came
        from), kept exactly (same fingerprint) as if fitted here on the items with ids up
        to `max_id`; its spec becomes `settings().transform` and the index is rebuilt
        through it. Drift since the fit is then counted from `max_id` and this edit."""
        if fitted.dim != self.dim:
            raise InvalidInputError(f"a transform fitted on {fitted.dim}-d vectors cannot search memory at "
                                    f"{self.path}, which holds {self.dim}-d vectors")
        with self._index.rebuilding():
            state = None if fitted.is_identity else {"fitted": fitted.to_dict(), "max_id": int(max_id),
                                                     "seq": self.db.last_edit()}
            self._write_settings({"transform": fitted.spec}, (fitted, state))
            self._index.rebuild(self._live(), progress)
        self._follow_index()

    def _write_settings(self, changes: Mapping[str, Any],
                        fitted: tuple[FeatureTransform, dict[str, Any] | None] | None = None) -> MemorySettings:
        """Commit `changes` over the settings as they are once this write holds the lock
        (it catches up first: what other processes changed meanwhile stays), with a new
        fit of the transform if given; returns the settings it replaced."""
        landed = commit_watch(self.db)
        try:
            with self.db.write("saving settings", before=self._catch_up_locked, undone="nothing was changed"):
                old = self._settings
                new = old.replace(**changes)
                self.db.set_config({"settings": new.to_dict(), **({"transform": fitted[1]} if fitted else {})})
        except KeyboardInterrupt as exc:
            if landed():  # Ctrl-C as its COMMIT returned: saved, so kept here too, and said
                self._settings = new
                if fitted is not None:
                    self._transform, self._config["transform"] = fitted
                if getattr(exc, "done", None) is None:  # (as `errors.committed` marks it)
                    exc.done = new  # type: ignore[attr-defined]
            raise
        self._settings = new
        if fitted is not None:
            self._transform, self._config["transform"] = fitted
        return old

    def _refit_after_removals(self) -> None:
        """Before purging: if items the transform was fitted on were removed since, refit it
        on the items left (and rebuild the index), so nothing of them stays in it. Where
        the items left cannot be fitted (none, or none that vary), the transform goes."""
        state = self._config.get("transform")
        if not state or self.read_only or self._transform.mean is None:  # nothing fitted from the items
            return
        removed = [i for _, op, ids in self.db.edits_since(state["seq"]) if op == "remove"
                   for i in ids if i <= state["max_id"]]
        if not removed:
            return
        spec = self._settings.transform
        log.warning("%s: refitting the %s feature transform on the %d items left (it was fitted on %d items "
                    "since removed) and rebuilding the index", self.path, self._transform.spec.name,
                    len(self.catalog), len(removed))
        with self._index.rebuilding():
            with maintenance(f"refitting the {spec.name} transform", len(self.catalog)) as advance:
                fitted = self._fit_or_drop(spec, "refitted on the items left", advance)
            self._write_settings({} if fitted else {"transform": TransformSpec()}, fitted or (identity(self.dim), None))
            with maintenance("rebuilding the index", len(self.catalog)) as advance:
                self._index.rebuild(self._live(), advance)

    def _fit_or_drop(self, spec: TransformSpec, on: str, progress: Callable[[int], None] | None = None,
                     up_to: int | None = None) -> tuple[FeatureTransform, dict[str, Any] | None] | None:
        """`_fit`, where the transform is to follow items that changed; None, with a warning,
        where they cannot be fitted (none, or none that vary): the transform then goes, and
        the memory searches its vectors as stored."""
        try:
            return self._fit(spec, progress, up_to=up_to)
        except InvalidInputError as exc:
            log.warning("%s: the %s feature transform cannot be %s (%s): it is dropped; fit one again once "
                        "there are items (`vismem tune`)", self.path, spec.name, on, exc)
            return None

    def _live(self) -> _LiveIds:
        return _LiveIds(self.catalog)

    # ---- what ManagedIndex reads -----------------------------------------------------

    @property
    def dim(self) -> int:
        return self.identity.dim

    @property
    def read_only(self) -> bool:
        return self.db.read_only

    def last_edit(self) -> int:
        return self.db.last_edit()

    @property
    def commits(self) -> int:
        """How many write transactions this process committed here (`Database.commits`)."""
        return self.db.commits

    def count(self) -> int:
        return len(self.catalog)

    def snapshot(self) -> contextlib.AbstractContextManager[None]:
        return self.db.snapshot()

    @property
    def in_transaction(self) -> bool:
        return self.db.in_transaction

    @property
    def write_can_restart(self) -> bool:
        """Inside a write's catch-up, which may let go of its transaction and begin again."""
        return self.db.write_can_restart

    def edits_since(self, seq: int, until: int | None = None) -> Iterator[tuple[int, str, list[int]]]:
        return self.db.edits_since(seq, until)

    def vector_chunks(self, size: int = 65536) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        return self.db.vector_chunks(self.dim, size)

    def vectors(self, ids: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        return self.db.vectors(ids, self.dim)

    def state(self, key: str) -> Any:
        """Measured state kept beside the settings (recall, the `auto` choice's history)."""
        return self._config.get(key)

    def set_state(self, key: str, value: Any) -> None:
        """Keep measured state. It is derived (measured again when missing), so where it
        cannot be written, on read-only media or a full disk, this process keeps it alone:
        a full disk must not stop the open that a removal needs to free space."""
        if not self.db.read_only:
            try:
                self.db.set_config({key: value})
            except DiskFullError:
                log.warning("%s: the disk is full: what was just measured (%s) is kept for this process only",
                            self.path, key.replace("_", " "))
        self._config[key] = value

    # ---- settings --------------------------------------------------------------------

    def record_encoder(self, identity: EncoderIdentity) -> None:
        self.db.set_config({"encoder": identity.to_dict()})  # one row, in one transaction
        self.identity = identity

    def settings(self) -> MemorySettings:
        return self._settings

    def save_settings(self, changes: Mapping[str, Any], progress: Callable[[int], None] | None = None) -> None:
        """Change the named settings, over the settings as committed when the write holds
        the lock. A given transform is fitted on the items first (a refit, when it is the
        one in force), so that one which cannot be fitted changes nothing; then the index
        is rebuilt through it. A changed index setting rebuilds the index (measured, saved)."""
        self._settings.replace(**changes)  # a bad name or value fails before any work
        spec = changes.get("transform")
        refit = None if spec is None or (spec == TransformSpec() and self._transform.is_identity) else spec
        rebuild_asked = refit is not None or any(name in changes for name in INDEX_SETTINGS)
        # other processes that open meanwhile wait for the rebuilt index (rather than build their own)
        with self._index.rebuilding() if rebuild_asked else contextlib.nullcontext():
            fitted = None
            if refit is not None:
                if refit == TransformSpec():  # nothing to fit: the vectors searched as stored
                    log.warning("%s: dropping the %s feature transform and rebuilding the index", self.path,
                                self._transform.spec.name)
                else:
                    log.warning("%s: fitting the %s feature transform on %d items and rebuilding the index",
                                self.path, refit.name, len(self.catalog))
                fitted = self._fit(refit, progress)
            old = self._write_settings(changes, fitted)
            with committed(self._settings):  # (Ctrl-C from here on: the settings are saved)
                if fitted or any(getattr(old, name) != getattr(self._settings, name) for name in INDEX_SETTINGS):
                    self._index.rebuild(self._live(), progress)
        with committed(self._settings):
            self._follow_index()
        if "record_queries" in changes:  # kept fewer now: those past it go (from every file), not at the next record
            self.write_recorded_queries()
            self._unpurged = True  # (as in clear_recorded_queries; where none go, the close purges for nothing)
            if self.db.drop_recorded_past(self._settings.record_queries, self._rng):
                self.purge()

    # ---- writes ----------------------------------------------------------------------

    def _catch_up_locked(self) -> None:
        """Inside a write transaction: apply other processes' commits first, so this
        write's edit follows them in the catalog and the index as in the log."""
        self.refresh()

    def insert(self, items: Sequence[NewItem], *, allow_duplicates: bool = False) -> InsertResult:
        # Growth that takes `auto` to another kind of index builds it after the commit:
        # held from before it, so that others who see the commit wait for that index.
        switches = self._index.kind_for(len(self.catalog) + len(items)) != self._index.index.kind
        with self._index.rebuilding() if switches else contextlib.nullcontext():
            with self._followed_if_cut_off(done=_added):
                ids, duplicates = self.db.insert(items, self.dim, allow_duplicates=allow_duplicates,
                                                 before=self._catch_up_locked)
            result = InsertResult(ids, duplicates)
            if ids:
                with committed(result):  # (Ctrl-C from here on: the items are added)
                    refused = {p for p, _ in duplicates}
                    added = [item for position, item in enumerate(items) if position not in refused]
                    self.catalog.add(ids, [i.label for i in added], [i.source for i in added],
                                     [i.weight for i in added], [i.meta for i in added])
                    self._index.add(np.asarray(ids, dtype=np.int64), np.stack([i.vector for i in added]))
                    self._wrote()
                    self._index.after_growth(self._live())
                    self._follow_index()
        return result

    def delete(self, ids: Iterable[int]) -> list[int]:
        ids = list(ids)
        try:
            with self._followed_if_cut_off():
                removed = self.db.delete(ids, before=self._catch_up_locked)
        except DiskFullError:
            if not self._release_reserve():
                raise
            log.warning("%s: the disk is full; released the memory's %d MiB reserve to remove items",
                        self.path, RESERVE_BYTES // 2**20)
            with contextlib.suppress(VismemError):  # with the reserve gone, the log can move
                self.db.purge()  # into the database and shrink; the removal is what matters
            with self._followed_if_cut_off():
                removed = self.db.delete(ids, before=self._catch_up_locked)
        if removed:
            self._forget(removed)
            self._wrote()
            with committed(removed):
                self._compact_if_needed()
            self._follow_index()
        return removed

    @contextlib.contextmanager
    def _followed_if_cut_off(self, done: Callable[[list[tuple[int, str, list[int]]]], Any] | None = None
                             ) -> Iterator[None]:
        """Around a write whose edit the catalog and the index apply after its commit:
        Ctrl-C (or SIGTERM) landing as its COMMIT returned, before that, left the commit
        made and this store unaware of it. Its own commit does not make it stale, and its
        next write skips past it (`_wrote`): a search missed the items added, saw the old
        labels and weights, and a removal was never purged (the removed items' vectors
        stayed in the memory's files). When `commit_watch` says the commit was made, the
        catalog and the index follow the log to its edit, as they would another process's,
        and what it removed is unpurged: the close purges it, as after a removal that returned.
        With `done`, the interrupt is marked as `errors.committed` marks one, with what
        `done` makes of the edits followed (an insert's: the ids it added), as the write
        itself could not return it."""
        landed = commit_watch(self.db)
        try:
            yield
        except BaseException as exc:
            if landed() and self.db.written_seq > self._seq:
                # (failing, it leaves the interrupt as it was: the next open replays the log, and its close purges)
                with contextlib.suppress(Exception):
                    edits = self._follow_own_edits(self.db.written_seq)
                    if done is not None and isinstance(exc, KeyboardInterrupt) and getattr(exc, "done", None) is None:
                        exc.done = done(edits)  # type: ignore[attr-defined]
            raise

    def _follow_own_edits(self, until: int) -> list[tuple[int, str, list[int]]]:
        """The catalog, the settings and the index follow the log to this store's own edit
        `until` (every edit after `_seq` up to it is this store's: its write caught up first);
        returns those edits."""
        edits = list(self.db.edits_since(self._seq, until))
        removed = any(op == "remove" for _, op, _ in edits)
        if self._reload_config():  # (a rollback that refitted the transform: the index follows it)
            self._load()
        else:
            self._replay(until)
            self._index.sync(until)
        self._unpurged = self._unpurged or removed  # (the index marks its own files as it replays a removal)
        self._wrote()
        self.catch_ups += 1  # (a Memory rebuilds its prototypes)
        return edits

    def _forget(self, removed: list[int]) -> None:
        """After a committed removal: the catalog and the index drop the items (the
        database's log still holds older copies of their rows until the next purge)."""
        self._unpurged = True
        self.catalog.remove(removed)
        self._index.remove(np.asarray(removed, dtype=np.int64))

    def _compact_if_needed(self) -> None:
        if self._index.compact_if_needed(self._live()):
            self.purge()  # compaction promises the bytes are gone

    def update(self, ids: Sequence[int], *, label: str | None = None,
               weight: float | None = None) -> list[int]:
        label = canonical(label)  # as the database keeps it
        with self._followed_if_cut_off():
            updated = self.db.update(ids, label=label, weight=weight, before=self._catch_up_locked)
        if updated:
            self.catalog.update(updated, label=label, weight=weight,
                                relabelled=self.db.relabels_of(updated) if label is not None else None)
            if label is not None:  # (the relabel reset their pruning counts)
                self.catalog.set_prune_counts(self.db.all_prune_counts())
            self._wrote()
        return updated

    def set_prune_counts(self, counts: Mapping[int, int]) -> None:
        with self._followed_if_cut_off():
            self.db.set_prune_counts(counts, before=self._catch_up_locked)
        self.catalog.set_prune_counts(self.db.all_prune_counts())
        self._wrote()

    def save_pruning(self, counts: Mapping[int, int], pruning: PruneSettings,
                     remove: Sequence[int] = ()) -> list[int]:
        """A prune's whole decision in one transaction: every item's count v, the removal
        of `remove` (hard pruning's purge) and the pruning setting. Killed or failing
        before the commit, nothing of it stays: never new counts under the old setting."""
        with self._followed_if_cut_off(), \
                self.db.write("saving the pruning", before=self._catch_up_locked,
                              undone="the pruning is as it was"):  # the parts below are savepoints of it
            self.db.set_prune_counts(counts)
            removed = self.db.delete(remove)
            settings = self._settings.replace(pruning=pruning)  # over the settings as committed
            self.db.set_config({"settings": settings.to_dict()})
        with committed(removed):  # (Ctrl-C from here on: the pruning is saved)
            self._settings = settings
            self.catalog.set_prune_counts(self.db.all_prune_counts())
            if removed:
                self._forget(removed)
            self._wrote()
            if removed:
                self._compact_if_needed()
            self._follow_index()
        return removed

    # ---- checkpoints (checkpoints.py) -------------------------------------------------

    def make_checkpoint(self, name: str, *, replace: bool = False) -> Checkpoint:
        return self.db.make_checkpoint(name, replace=replace, before=self._catch_up_locked)

    def checkpoints(self) -> list[Checkpoint]:
        return self.db.checkpoints()

    def at_checkpoint(self, name: str) -> bool:
        return self.db.at_checkpoint(name)

    def delete_checkpoint(self, name: str) -> None:
        self.db.delete_checkpoint(name, before=self._catch_up_locked)

    def rollback(self, name: str, progress: Callable[[int], None] | None = None) -> RollbackReport:
        """Back to checkpoint `name`, in one transaction: the items added since removed, the
        state of its items still here put back (label, weight, pruning count, relabel
        history), its settings restored; its items removed since stay removed. A restored
        transform is fitted first (on the items it keeps; where none is left to fit it on,
        or none that vary, it goes, as a purge drops it, and the report names it in
        `transform_dropped`), a restored index setting rebuilds the index after the commit,
        as a settings change does."""
        found = self.db.checkpoint(name)
        target = MemorySettings.from_dict(found.settings)
        current = self._settings
        refit = target.transform if target.transform != current.transform else None
        rebuild_asked = refit is not None or any(getattr(target, n) != getattr(current, n) for n in INDEX_SETTINGS)
        with self._index.rebuilding() if rebuild_asked else contextlib.nullcontext():
            fitted, dropped = None, None
            if refit is not None:
                log.warning("%s: fitting the %s feature transform of checkpoint %r and rebuilding the index",
                            self.path, refit.name, name)
                fitted = self._fit_or_drop(refit, f"fitted on the items of checkpoint {name!r} still here "
                                           f"({found.kept} of {found.items})", progress, up_to=found.last_id)
                if fitted is None:
                    fitted, dropped = (identity(self.dim), None), refit.name
            report: RollbackReport | None = None
            # Ctrl-C as its COMMIT returns, before `committed` below can mark it, carries the report too
            with committed_since(self.db, lambda _: report), self._followed_if_cut_off(), \
                    self.db.write(f"rolling back to checkpoint {name!r}", before=self._catch_up_locked,
                                  undone="the memory is as it was"):
                again = self.db.checkpoint(name)
                if again.made_at != found.made_at or self._settings.transform != current.transform:
                    raise MemoryBusyError(f"memory at {self.path} changed while rolling back to {name!r} (its "
                                          "checkpoint or its transform was replaced meanwhile); nothing was "
                                          "changed: try again")
                removed, restored = self.db.restore_checkpoint(name, found.last_id)
                before_settings = self._settings
                # Recording users' queries is their consent, not the memory's state: it stays as it is now.
                transform = TransformSpec() if dropped else (target.transform if fitted else before_settings.transform)
                settings = target.replace(transform=transform, record_queries=before_settings.record_queries)
                self.db.set_config({"settings": settings.to_dict(), **({"transform": fitted[1]} if fitted else {})})
                # (the catalog, caught up inside the write, still holds the items it removed)
                report = RollbackReport(name, len(removed), removed, len(restored), restored,
                                        found.items - again.kept, settings != before_settings,
                                        len(self.catalog) - len(removed), dropped)
            with committed(report):  # (Ctrl-C from here on: the rollback is committed)
                self._settings = settings
                if fitted is not None:
                    self._transform, self._config["transform"] = fitted
                if removed:
                    self._forget(removed)
                if restored:
                    self._replay_edit("update", restored)
                    self._replay_edit("prune", [])
                if removed or restored:  # (their edits were logged: a settings change is not)
                    self._wrote()
                if fitted is not None or any(getattr(before_settings, n) != getattr(settings, n)
                                             for n in INDEX_SETTINGS):
                    self._index.rebuild(self._live(), progress)
                elif removed:
                    self._compact_if_needed()
        with committed(report):
            self._follow_index()
        return report

    def _follow_index(self) -> None:
        """The index replays every commit before it is saved or built (a save never writes
        back a removed vector): the catalog follows it to the same edit, so that a search
        names every neighbour (a catch-up, as far as it goes; `refresh` does the rest)."""
        if self._index.seq > self._seq:
            self._replay(until=self._index.seq)
            self.catch_ups += 1

    def _wrote(self) -> None:
        # Our own commit does not change data_version. We caught up inside the write, so
        # the log up to our edit is applied (a later commit by others is replayed later).
        self._seq = self.db.written_seq
        self._index.seq = max(self._index.seq, self._seq)

    # ---- reads -----------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.catalog)

    def ids(self, where: Filter | None = None) -> np.ndarray:
        return self.catalog.ids(where)

    def page(self, where: Filter | None, offset: int, limit: int) -> Page:
        total, ids = self.catalog.page(where, offset, limit)
        return Page(total, offset, self.db.items(ids.tolist()))

    def items(self, ids: Sequence[int]) -> list[Item]:
        return self.db.items(ids)

    def columns(self, where: Filter | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(ids, labels, weights, prune counts) of the items a filter allows, by id."""
        return self.catalog.arrays(where)

    def thumbnail(self, item_id: int) -> bytes | None:
        return self.db.thumbnail(item_id)

    def index_bytes(self, ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        index = self._index.index
        if not isinstance(index, Persistent):  # exact search: nothing of it is saved
            return np.empty(0, np.int64), np.empty((0, 0), np.uint8)
        return index.held_bytes(np.asarray(ids, dtype=np.int64))

    def class_counts(self) -> dict[str, int]:
        return self.catalog.class_counts()

    def known_hashes(self, hashes: Iterable[str]) -> dict[str, int]:
        return self.db.known_hashes(hashes)

    @contextlib.contextmanager
    def hash_lookup(self) -> Iterator[Callable[[Iterable[str]], dict[str, int]]]:
        """Through a connection of its own (`Database.second_connection`), one lookup at a
        time: this store's connection is for the thread that writes."""
        with self.db.second_connection() as other:
            one_at_a_time = threading.Lock()

            def lookup(hashes: Iterable[str]) -> dict[str, int]:
                with one_at_a_time:
                    return other.known_hashes(hashes)
            yield lookup

    def prune_counts(self, ids: np.ndarray) -> np.ndarray:
        return self.catalog.columns(ids)[3]

    # ---- search ----------------------------------------------------------------------

    def search(self, queries: np.ndarray, k: int, where: Filter | None = None) -> Neighbours:
        found = self._found(queries, k, where)
        labels, sources, weights, prune, relabelled = self.catalog.columns(found.ids)
        return Neighbours(found.ids, found.similarities, labels, sources, weights, prune, relabelled)

    def nearest(self, queries: np.ndarray, k: int, where: Filter | None = None) -> Nearest:
        found = self._found(queries, k, where)
        ids = found.ids.ravel()
        return Nearest(k, ids.tolist(), found.similarities.ravel().tolist(), *self.catalog.name_lists(ids))

    def _found(self, queries: np.ndarray, k: int, where: Filter | None) -> SearchResult:
        return self._index.index.search(self.to_search_space(queries), k, allowed_ids=self.catalog.selection(where))

    # ---- lifecycle -------------------------------------------------------------------

    def is_stale(self) -> bool:
        return self.db.data_version() != self._seen

    def wait_for_writers(self) -> None:
        self.db.wait_for_writers()

    def refresh(self) -> bool:
        """Catch up with other processes' commits; True if there were any."""
        if not self.is_stale():
            return False
        self.catch_ups += 1
        let_go = self._seen == LET_GO
        try:
            self._seen = self.db.data_version()
            if self._reload_config() or let_go:  # another process refitted the transform
                self._load()
                return True
            self._replay()
            try:
                self._index.catch_up(self._live(), until=self._seq)  # the index holds what the catalog does
            except RebuiltElsewhere:  # another kind of index, built by another process meanwhile
                self._load()
                return True
            self._replay(until=self._index.seq)  # unless it was rebuilt, at a later state
        except BuildUnderway:  # a write lets go midway to wait for it, then catches up again: from scratch
            self._seen = LET_GO
            raise
        return True

    def _replay_edit(self, op: str, ids: list[int]) -> None:
        """Apply one logged edit to the catalog (the index replays the log itself)."""
        if op == "add":
            rows = self.db.rows_of(ids)
            self.catalog.add([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows],
                             [r[3] for r in rows])
        elif op == "remove":
            self.catalog.remove(ids)
        elif op == "update":
            relabelled = self.db.relabels_of(ids)
            alike: dict[tuple[str, float], list[int]] = {}  # one catalog update per (label, weight)
            for item_id, label, _, weight, _ in self.db.rows_of(ids):
                alike.setdefault((label, weight), []).append(item_id)
            for (label, weight), same in alike.items():
                self.catalog.update(same, label=label, weight=weight, relabelled={})
            self.catalog.relabelled.update(relabelled)
            self.catalog.set_prune_counts(self.db.all_prune_counts())  # a relabel resets counts
        elif op == "prune":
            self.catalog.set_prune_counts(self.db.all_prune_counts())

    # ---- real queries: recorded (opt-in), tuned on --------------------------------------

    def record_queries(self, queries: np.ndarray) -> None:
        """Keep a uniform sample of the queries searched, up to the `record_queries`
        setting (0: none). They wait in RAM, written by `write_recorded_queries` (a server
        calls it every so often), a purge or the close: a search never writes to the
        database."""
        capacity = self._settings.record_queries
        if capacity == 0 or self.read_only:
            return
        with self._recording:
            if self._recorded is None or self._recorded.capacity != capacity:
                self._recorded = QuerySample(capacity, self.dim, self.db.recorded_epoch())
            self._recorded.offer(np.asarray(queries, dtype=np.float32), self._rng)

    def recorded_waiting(self) -> int:
        """How many recorded queries wait in RAM, not yet written."""
        with self._recording:
            return 0 if self._recorded is None else len(self._recorded)

    def write_recorded_queries(self) -> int:
        """Write the recorded queries waiting in RAM into the store; returns how many there
        were. A write that fails keeps them waiting, for the next one (not one cut off by
        Ctrl-C as its COMMIT returned: they are written, and would be counted twice)."""
        with self._recording:
            recorded, self._recorded = self._recorded, None
        capacity = self._settings.record_queries
        if recorded is None or not recorded.seen or not capacity or self.read_only:
            return 0
        landed = commit_watch(self.db)
        try:
            self.db.record_queries(recorded.vectors, recorded.seen, capacity, self._rng, recorded.epoch)
        except BaseException:
            if not landed():
                with self._recording:  # back, with any recorded meanwhile (of the same reservoir)
                    later, self._recorded = self._recorded, recorded
                    if later is not None and (later.epoch, later.capacity) == (recorded.epoch, recorded.capacity):
                        recorded.absorb(later, self._rng)
                    elif later is not None:
                        self._recorded = later
            raise
        return len(recorded)

    def recorded_count(self) -> int:
        """How many recorded queries the store keeps."""
        self.write_recorded_queries()
        return self.db.recorded_count()

    def clear_recorded_queries(self) -> int:
        """Delete the recorded queries, purged from every file; returns how many."""
        with self._recording:
            self._recorded = None
        self._unpurged = True  # (till the purge below has run: Ctrl-C after the commit leaves it to the close)
        found = self.db.clear_recorded_queries()
        self.purge()
        return found

    def tune_index(self, queries: np.ndarray | None) -> dict[str, Any]:
        """Tune the search effort on these unit queries or, None, on the recorded ones;
        returns the index as `describe` shows it, with `held_left_out`: how many queries
        were left out as items of the memory (the same bits as stored: each would find
        itself, and recall on it is 1.0 at any effort)."""
        measured_on, given = GIVEN, "given"
        if queries is None:
            self.write_recorded_queries()
            queries, measured_on, given = self.db.recorded_queries(self.dim), RECORDED, "recorded"
            if len(queries) == 0:
                raise InvalidInputError(
                    f"memory at {self.location} has no recorded queries: give query vectors or images, "
                    f"or record real ones first with `vismem record-queries {self.location} 1000`")
        hashes = vector_hashes(queries)
        held = self.db.known_hashes(hashes)
        unseen = np.array([h not in held for h in hashes], dtype=bool)
        if not unseen.any():
            raise InvalidInputError(f"the memory already holds every {given} query vector ({len(queries)}), and "
                                    "each would find itself: tune on vectors the memory has not seen")
        self._index.tune(self.to_search_space(queries[unseen]), measured_on)
        report = {**self._index.describe(), "held_left_out": int(len(queries) - unseen.sum())}
        with committed(report):  # (Ctrl-C from here on: the effort and its recall are saved)
            self._follow_index()
        return report

    def purge(self) -> None:
        """Drop removed items' older copies from every file of the memory, now (refitting the
        feature transform first when removed items shaped it)."""
        self.write_recorded_queries()
        self._refit_after_removals()
        self.db.purge()
        self._index.scrub()
        self._follow_index()
        self._unpurged = False
        self._keep_reserve()

    def _keep_reserve(self) -> None:
        """Make the free-space reserve if it is missing and the disk has room to spare."""
        reserve = self.path / RESERVE_NAME
        if self.read_only or reserve.exists():
            return
        try:
            if shutil.disk_usage(self.path).free < 2 * RESERVE_BYTES:
                return
            with open(reserve, "wb") as f:
                f.write(bytes(RESERVE_BYTES))
                f.flush()
                os.fsync(f.fileno())
        except OSError:
            reserve.unlink(missing_ok=True)

    def _release_reserve(self) -> bool:
        reserve = self.path / RESERVE_NAME
        if not reserve.exists():
            return False
        reserve.unlink()
        return True

    @property
    def unpurged(self) -> bool:
        return self._unpurged or self._index.unpurged

    def compact(self, progress: Callable[[int], None] | None = None) -> dict[str, Any]:
        """Reclaim removed items' slots in the index and the database; re-measure recall
        (`progress(n)` as n more live items are in the compacted index)."""
        self.refresh()
        self._refit_after_removals()
        self.db.vacuum()  # purges the database
        self._unpurged = False
        reclaimed = self._index.compact(self._live(), progress)
        report = {"reclaimed": reclaimed, **self._index.describe()}  # with the recall it re-measured
        with committed(report):  # (Ctrl-C from here on: the compacted index is saved)
            self._follow_index()
        return report

    def quality(self) -> Any:
        return self._index.quality

    def describe(self) -> dict[str, Any]:
        return {"home": "embedded", "location": self.location, "format_version": self.db.format_version(),
                "read_only": self.read_only, "index": self._index.describe(),
                "transform": self._describe_transform(), "recorded_queries": self.db.recorded_count(),
                "recorded_waiting": self.recorded_waiting(),
                "disk_bytes": self.db.disk_bytes(), "thumbnails": True}

    def _describe_transform(self) -> dict[str, Any]:
        fitted, state = self._transform, self._config.get("transform") or {}
        return {"name": fitted.spec.name, "spec": fitted.spec.to_dict(), "fitted_items": fitted.fitted_items,
                "out_dim": fitted.out_dim, "fingerprint": fitted.fingerprint, "max_id": state.get("max_id")}

    def close(self) -> None:
        try:
            if not self.read_only:
                self._index.save_if_dirty()
                if self.unpurged or self._recorded is not None:
                    self.purge()
        finally:
            self.db.close()


FILLING = ".filling-"  # a fill's hidden directory: beside its memory (.NAME.filling-PID) or inside it
MOVING_IN = "moving-in"  # in a fill's directory inside its memory's: the names of the files it moves out


def _move_into(staging: Path, path: Path) -> None:
    """Move a filled memory's files from `staging` (inside `path`) into `path`, the
    database last: it makes them a memory. Raises ENOTEMPTY if anything but fills came.

    Each rename is atomic, the move is not, and `path` cannot be swapped for a whole
    directory (it must stay itself). So the database, moved last, is the mark that the
    move is done, and the names go first into `staging`'s MOVING_IN, durably: a move cut
    short before the database is in leaves files that `_clear_fill` knows and removes
    (at once on Ctrl-C; after kill -9, at the next fill, and `open` says so meanwhile)."""
    if any(not entry.name.startswith(FILLING) for entry in path.iterdir()):
        raise OSError(errno.ENOTEMPTY, "not empty", str(path))
    entries = sorted(staging.iterdir(), key=lambda entry: entry.name == DB_NAME)
    with open(staging / MOVING_IN, "w") as names:
        names.write("".join(f"{entry.name}\n" for entry in entries))
        names.flush()
        os.fsync(names.fileno())
    sync_directory(staging)
    for entry in entries:
        os.rename(entry, path / entry.name)
    (staging / MOVING_IN).unlink()
    staging.rmdir()


def _clear_fill(staging: Path, path: Path) -> None:
    """Remove a fill's hidden directory and, when it was cut short moving its files into
    `path` (no database there yet: no memory), the ones it had moved: `path` is as before."""
    if not (path / DB_NAME).exists():
        for name in _moving_in(staging):
            target = path / name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    target.unlink()
    shutil.rmtree(staging, ignore_errors=True)


def _moving_in(staging: Path) -> list[str]:
    """The names of the files a fill moves from `staging` into its memory's directory (none
    before it begins); only plain names, whatever the file holds."""
    try:
        names = (staging / MOVING_IN).read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        return []
    return [name for name in names if name not in ("", ".", "..") and "/" not in name
            and not name.startswith(FILLING)]


def _abandoned_fills(path: Path) -> list[Path]:
    """The hidden directories of fills of `path` whose process is gone (killed)."""
    inside = path.glob(f"{FILLING}*") if path.is_dir() else []
    return [staging for staging in [*path.parent.glob(f".{glob.escape(path.name)}{FILLING}*"), *inside]
            if (pid := staging.name.rpartition("-")[2]).isdigit() and not _alive(int(pid))]


def _remove_abandoned_fills(path: Path) -> None:
    """Remove what fills of `path` that were killed left: their hidden directories, and the
    files one killed while moving them into `path` had moved."""
    for staging in _abandoned_fills(path):
        _clear_fill(staging, path)


def _left_by_stopped_fills(path: Path) -> set[str]:
    """The names of the files in `path` that fills killed while moving them in left there."""
    if not path.is_dir() or (path / DB_NAME).exists():
        return set()
    return {name for staging in _abandoned_fills(path) for name in _moving_in(staging) if (path / name).exists()}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


class _LiveIds:
    """The ids the catalog holds, as the index lifecycle reads them (len, iter)."""

    def __init__(self, catalog: Catalog) -> None:
        self._catalog = catalog

    def __len__(self) -> int:
        return len(self._catalog)

    def __iter__(self) -> Iterator[int]:
        return self._catalog.live_ids()

    def __contains__(self, item_id: object) -> bool:
        return isinstance(item_id, (int, np.integer)) and int(item_id) in self._catalog

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        ids = self._catalog.selection_of_live()  # ascending, kept until the next edit
        return ids if dtype is None else ids.astype(dtype, copy=False)


def _added(edits: list[tuple[int, str, list[int]]]) -> InsertResult:
    """What an insert cut off as its COMMIT returned added, from its edits in the log (the
    inputs it refused as duplicates are not logged: none are named)."""
    return InsertResult([item_id for _, op, ids in edits if op == "add" for item_id in ids])


def _fingerprint(config: dict[str, Any]) -> str | None:
    """The stored feature transform's fingerprint (None: no transform), read without
    decoding its arrays."""
    found = config.get("transform")
    if not found:
        return None
    fitted = found["fitted"]
    return fitted.get("fingerprint") or json.dumps(fitted, sort_keys=True)  # (every writer stores one)

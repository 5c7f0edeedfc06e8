"""`EmbeddedStore`: a memory in one directory, with no server.

    MEMDIR/memory.sqlite  the truth (Database): items, vectors, settings, edit log
    catalog (RAM)         vote metadata as numpy columns, for filters and neighbours
    MEMDIR/index/         the search index (ManagedIndex), derived and rebuildable

Every write goes to the database first, inside one transaction that first catches up
with what other processes committed (so edits apply in commit order), then to the
catalog and the index. Reads see other processes' commits after `refresh()`.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

from ..errors import DiskFullError, MemoryExistsError, VismemError
from ..search.lifecycle import ManagedIndex
from ..settings import EncoderIdentity, MemorySettings
from .base import Capabilities, Filter, InsertResult, Item, Neighbours, NewItem, Page
from .catalog import Catalog
from .migrate import upgrade
from .sqlite import DB_NAME, FORMAT_VERSION, Database

log = logging.getLogger("vismem")

INDEX_SETTINGS = ("index", "target_recall", "float16")
# Space held back on disk so that a removal can still commit when the disk is full (the
# removal must log its change first): released on a full disk, re-made when room returns.
RESERVE_NAME = "space-reserve"
RESERVE_BYTES = 4 * 2**20


class EmbeddedStore:
    """SQLite + catalog + search index of one memory directory (see the module docstring)."""

    capabilities = Capabilities(thumbnails=True, verifiable_purge=True, local_files=True)

    def __init__(self, db: Database) -> None:
        self.db = db
        self.path = db.directory
        self.location = str(db.directory)
        config = db.config()
        self.identity = EncoderIdentity(**config["encoder"])
        self.created_at = config["created_at"]
        self._config = config
        self._settings = MemorySettings.from_dict(config.get("settings", {}))
        self.catalog = Catalog(db)
        self._index = ManagedIndex(self)
        self._unpurged = False
        self._load()
        self._keep_reserve()

    # ---- open / create ---------------------------------------------------------------

    @classmethod
    def create(cls, path: str | Path, identity: EncoderIdentity, settings: MemorySettings) -> "EmbeddedStore":
        path = Path(path)
        if (path / DB_NAME).exists():
            raise MemoryExistsError(f"a memory already exists at {path}")
        return cls(Database.create(path, {"encoder": identity.to_dict(), "settings": settings.to_dict()}))

    @classmethod
    def open(cls, path: str | Path) -> "EmbeddedStore":
        db = Database.open(path)
        version = db.format_version()
        if version > FORMAT_VERSION:
            db.close()
            raise VismemError(f"memory at {path} has format version {version}, newer than this vismem "
                              f"supports ({FORMAT_VERSION}); upgrade vismem")
        if version < FORMAT_VERSION:
            db.close()
            upgrade(Path(path))  # atomic: the old file stays until the new one is complete
            db = Database.open(path)
        return cls(db)

    def _load(self) -> None:
        """(Re)load settings, the catalog and the index from the database."""
        self._seen = self.db.data_version()
        self._reload_config()
        self._seq = self.db.last_edit()
        catalog = Catalog(self.db)
        rows = list(self.db.item_rows())
        catalog.add([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], [r[3] for r in rows])
        catalog.set_prune_counts(self.db.all_prune_counts())
        catalog.relabelled = self.db.relabels()
        self.catalog = catalog
        self._index.open(self._live())

    def _reload_config(self) -> None:
        self._config = self.db.config()
        self._settings = MemorySettings.from_dict(self._config.get("settings", {}))

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

    def count(self) -> int:
        return len(self.catalog)

    def edits_since(self, seq: int) -> Iterator[tuple[int, str, list[int]]]:
        return self.db.edits_since(seq)

    def vector_chunks(self, size: int = 65536) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        return self.db.vector_chunks(self.dim, size)

    def vectors(self, ids: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        return self.db.vectors(ids, self.dim)

    def state(self, key: str) -> Any:
        """Measured state kept beside the settings (recall, the `auto` choice's history)."""
        return self._config.get(key)

    def set_state(self, key: str, value: Any) -> None:
        if self.db.read_only:
            self._config[key] = value  # measured here, kept for this process only
            return
        self.db.set_config({key: value})
        self._config[key] = value

    # ---- settings --------------------------------------------------------------------

    def settings(self) -> MemorySettings:
        return self._settings

    def save_settings(self, settings: MemorySettings) -> None:
        """Store new settings; a changed index setting rebuilds the index (measured, saved)."""
        old = self._settings
        self.db.set_config({"settings": settings.to_dict()})
        self._settings = settings
        if any(getattr(old, name) != getattr(settings, name) for name in INDEX_SETTINGS):
            self._index.rebuild(self._live())

    # ---- writes ----------------------------------------------------------------------

    def _catch_up_locked(self) -> None:
        """Inside a write transaction: apply other processes' commits first, so this
        write's edit follows them in the catalog and the index as in the log."""
        self.refresh()

    def insert(self, items: Sequence[NewItem], *, allow_duplicates: bool = False) -> InsertResult:
        ids, duplicates = self.db.insert(items, self.dim, allow_duplicates=allow_duplicates,
                                         before=self._catch_up_locked)
        if ids:
            added = [item for position, item in enumerate(items)
                     if position not in {p for p, _ in duplicates}]
            self.catalog.add(ids, [i.label for i in added], [i.source for i in added],
                             [i.weight for i in added], [i.meta for i in added])
            self._index.add(np.asarray(ids, dtype=np.int64), np.stack([i.vector for i in added]))
            self._wrote()
            self._index.after_growth(self._live())
        return InsertResult(ids, duplicates)

    def delete(self, ids: Iterable[int]) -> list[int]:
        ids = list(ids)
        try:
            removed = self.db.delete(ids, before=self._catch_up_locked)
        except DiskFullError:
            if not self._release_reserve():
                raise
            log.warning("%s: the disk is full; released the memory's %d MiB reserve to remove items",
                        self.path, RESERVE_BYTES // 2**20)
            try:
                self.db.purge()  # with the reserve gone, the log can move into the database and shrink
            except VismemError:
                pass
            removed = self.db.delete(ids, before=self._catch_up_locked)
        if removed:
            self._unpurged = True  # the database's log still holds older copies of the rows
            self.catalog.remove(removed)
            self._index.remove(np.asarray(removed, dtype=np.int64))
            self._wrote()
            if self._index.compact_if_needed(self._live()):
                self.purge()  # compaction promises the bytes are gone
        return removed

    def update(self, ids: Sequence[int], *, label: str | None = None,
               weight: float | None = None) -> list[int]:
        updated = self.db.update(ids, label=label, weight=weight, before=self._catch_up_locked)
        if updated:
            self.catalog.update(updated, label=label, weight=weight,
                                relabelled=self.db.relabels_of(updated) if label is not None else None)
            self._wrote()
        return updated

    def set_prune_counts(self, counts: Mapping[int, int]) -> None:
        self.db.set_prune_counts(counts, before=self._catch_up_locked)
        self.catalog.set_prune_counts(self.db.all_prune_counts())
        self._wrote()

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

    def class_counts(self) -> dict[str, int]:
        return self.catalog.class_counts()

    def known_hashes(self, hashes: Iterable[str]) -> dict[str, int]:
        return self.db.known_hashes(hashes)

    def prune_counts(self, ids: np.ndarray) -> np.ndarray:
        return self.catalog.columns(ids)[3]

    # ---- search ----------------------------------------------------------------------

    def search(self, queries: np.ndarray, k: int, where: Filter | None = None) -> Neighbours:
        selection = self.catalog.selection(where)
        found = self._index.index.search(queries, k, allowed_ids=None if selection is None else selection.ids)
        labels, sources, weights, prune, relabelled = self.catalog.columns(found.ids)
        return Neighbours(found.ids, found.similarities, labels, sources, weights, prune, relabelled)

    # ---- lifecycle -------------------------------------------------------------------

    def is_stale(self) -> bool:
        return self.db.data_version() != self._seen

    def refresh(self) -> bool:
        """Catch up with other processes' commits; True if there were any."""
        if not self.is_stale():
            return False
        self._seen = self.db.data_version()
        self._reload_config()
        for seq, op, ids in self.db.edits_since(self._seq):
            self._replay(op, ids)
            self._seq = seq
        self._index.catch_up(self._live())
        return True

    def _replay(self, op: str, ids: list[int]) -> None:
        """Apply one logged edit to the catalog (the index replays the log itself)."""
        if op == "add":
            rows = self.db.rows_of(ids)
            self.catalog.add([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows],
                             [r[3] for r in rows])
        elif op == "remove":
            self.catalog.remove(ids)
        elif op == "update":
            relabelled = self.db.relabels_of(ids)
            for item_id, label, _, weight, _ in self.db.rows_of(ids):
                self.catalog.update([item_id], label=label, weight=weight, relabelled={})
            self.catalog.relabelled.update(relabelled)
        elif op == "prune":
            self.catalog.set_prune_counts(self.db.all_prune_counts())

    def purge(self) -> None:
        """Drop removed items' older copies from every file of the memory, now."""
        self.db.purge()
        self._index.scrub()
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

    def compact(self) -> dict[str, Any]:
        """Reclaim removed items' slots in the index and the database; re-measure recall."""
        self.refresh()
        self.db.vacuum()  # purges the database
        self._unpurged = False
        self._seen = self.db.data_version()
        reclaimed = self._index.compact(self._live())
        return {"reclaimed": reclaimed, **self._index.index.describe()}

    def quality(self) -> Any:
        return self._index.quality

    def describe(self) -> dict[str, Any]:
        return {"home": "embedded", "location": self.location, "format_version": FORMAT_VERSION,
                "read_only": self.read_only, "index": self._index.describe(),
                "disk_bytes": self.db.disk_bytes(), "thumbnails": True}

    def close(self) -> None:
        try:
            if not self.read_only:
                self._index.save_if_dirty()
                if self.unpurged:
                    self.purge()
        finally:
            self.db.close()


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

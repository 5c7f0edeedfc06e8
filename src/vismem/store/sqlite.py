"""The SQLite database of an embedded memory: the source of truth, in one file.

It holds every item's vector, label, source, weight, metadata and content hash, a
thumbnail of the image it came from, per-item history (first label before a relabel,
pruning counts), the memory's identity and settings, and an edit log that derived
state (the search index, the in-RAM catalog) uses to catch up.

Why SQLite: each edit is one transaction, so after a crash or `kill -9` every
committed edit is present and no partial one is. Writers take the write lock at the
start of the transaction (BEGIN IMMEDIATE), so a check made inside it (is this content
already here?) still holds when it commits, whatever other processes do.
`secure_delete` overwrites removed rows in place, and `purge` (a WAL checkpoint that
truncates the log) then drops the older copies the log still holds, so a removed
vector's bytes survive in no file. A database on read-only media opens read-only.
"""

from __future__ import annotations

import errno
import json
import os
import sqlite3
import threading
import time
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from .. import waits
from ..errors import (DiskFullError, InvalidInputError, clause, MemoryBusyError, MemoryNotFoundError,
                      ReadOnlyMemoryError, VismemError)
from ..search.saved import BuildUnderway
from ..search.tuning import merge_slots
from . import checkpoints
from .base import Filter, Item, NewItem, canonical, check_label, check_meta_key, check_new_items, check_weight
from .checkpoints import Checkpoint
from .wal import CommitWatch

FORMAT_VERSION = 3  # 3: labels and sources in NFC (migrate.py)
DB_NAME = "memory.sqlite"
CHUNK = 500  # ids per `IN (...)` list: far below SQLite's parameter limit
MAX_SEQ = 2**63 - 1  # the edit log's seq is a SQLite integer

SCHEMA = """
CREATE TABLE config (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE items (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- AUTOINCREMENT: a removed id is never reused
    label TEXT NOT NULL,
    source TEXT NOT NULL,
    path TEXT,
    content_hash TEXT,
    copy INTEGER NOT NULL DEFAULT 0,       -- 1: added on purpose beside the same content
    weight REAL NOT NULL DEFAULT 1.0,
    meta TEXT NOT NULL DEFAULT '{}',
    added_at REAL NOT NULL
);
CREATE INDEX items_label ON items(label);
CREATE INDEX items_source ON items(source);
CREATE INDEX items_hash ON items(content_hash);
-- Duplicate detection enforced by the database, whichever process writes.
CREATE UNIQUE INDEX items_content ON items(content_hash) WHERE content_hash IS NOT NULL AND copy = 0;
CREATE TABLE vectors (
    id INTEGER PRIMARY KEY REFERENCES items(id) ON DELETE CASCADE,
    vector BLOB NOT NULL
);
CREATE TABLE thumbnails (
    id INTEGER PRIMARY KEY REFERENCES items(id) ON DELETE CASCADE,
    jpeg BLOB NOT NULL
);
-- An item's label before its first relabel (so explanations can show the change).
CREATE TABLE relabels (
    id INTEGER PRIMARY KEY REFERENCES items(id) ON DELETE CASCADE,
    original TEXT NOT NULL
);
-- Pruning count v per item (absent: 0).
CREATE TABLE prune_counts (
    id INTEGER PRIMARY KEY REFERENCES items(id) ON DELETE CASCADE,
    v INTEGER NOT NULL
);
-- Edit log: derived state records the last seq it reflects and replays the rest.
CREATE TABLE edits (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    op TEXT NOT NULL CHECK (op IN ('add', 'remove', 'update', 'prune')),
    ids TEXT NOT NULL
);
"""
ITEM_COLUMNS = "id, label, source, path, content_hash, weight, meta, added_at"


RECORDED_TABLE = "CREATE TABLE IF NOT EXISTS recorded_queries (slot INTEGER PRIMARY KEY, vector BLOB NOT NULL)"


class Database:
    """One memory's SQLite file: durable items, vectors, settings and the edit log."""

    def __init__(self, path: Path, connection: sqlite3.Connection, *, read_only: bool) -> None:
        self.directory = path
        self._db = connection
        self.read_only = read_only
        self.written_seq = 0  # seq of the last edit this connection logged
        # write transactions this connection committed (`commits`): what a COMMIT makes
        # `_commits`, set before it is sent and taken only once SQLite left the transaction
        self._commits = self._committing = 0
        # data_version() asks SQLite only when the WAL-index header changed (wal.py); the
        # header seen and the version read after it, as one pair for reader threads
        connection.execute("PRAGMA data_version").fetchone()  # a first read: SQLite maps the WAL index
        self._watch = CommitWatch.of(path / DB_NAME)
        self._version: tuple[bytes | None, int] = (None, 0)
        self._watching_thread: int | None = None  # the one thread the watch answers (data_version)
        self._reading = False  # inside `snapshot`'s read transaction
        self.write_can_restart = False  # inside a write's `before`, which may let go and begin again

    # ---- lifecycle -------------------------------------------------------------------

    @classmethod
    def create(cls, path: str | Path, config: Mapping[str, Any]) -> Database:
        """A new database in directory `path`, with these config values."""
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise InvalidInputError(f"{path} exists and is not a directory")
        made_dir = not path.exists()
        tmp = path / (DB_NAME + ".creating")
        db: sqlite3.Connection | None = None
        try:
            path.mkdir(parents=True, exist_ok=True)
            # Built in a temporary file and renamed: a crash never leaves a half-made memory.
            tmp.unlink(missing_ok=True)
            db = sqlite3.connect(tmp)
            # Small pages: a one-item delete commits ~8 dirty pages, so 4 KiB pages write a
            # quarter of what 16 KiB ones do (0.6 vs 1.2 ms per delete); reopening is no slower.
            db.execute("PRAGMA page_size=4096")
            db.executescript(SCHEMA)
            values = {"format_version": FORMAT_VERSION, "created_at": time.time(), **config}
            db.executemany("INSERT INTO config VALUES (?, ?)",
                           [(k, json.dumps(v)) for k, v in values.items()])
            db.commit()
            db.close()
            os.replace(tmp, path / DB_NAME)
        except BaseException as exc:
            # Ctrl-C (or SIGTERM) included: unless the rename was made (then the memory is
            # there, whole), nothing of it stays, nor the directory this made for it
            if not (path / DB_NAME).exists():
                with suppress(Exception):
                    if db is not None:
                        db.close()
                    tmp.unlink(missing_ok=True)
                    if made_dir:
                        path.rmdir()
            if isinstance(exc, sqlite3.OperationalError):
                raise storage_error(exc, path, "creating the memory") from None
            if isinstance(exc, OSError):
                raise os_error(exc, path, "creating the memory") from None
            raise
        return cls.open(path)

    @classmethod
    def open(cls, path: str | Path) -> Database:
        path = Path(path)
        file = path / DB_NAME
        if not file.is_file():
            if path.is_file():
                raise MemoryNotFoundError(f"{path} is a file, not a memory: give the folder that "
                                          "`vismem create` made")
            raise MemoryNotFoundError(f"no memory at {path}: create one with `vismem create {path}`")
        db: sqlite3.Connection | None = None
        # (a database already in WAL mode, its -shm readable, opens for a user who may not
        # write it without an error: only a write would fail, after the work)
        read_only = not (os.access(file, os.W_OK) and os.access(path, os.W_OK))
        try:
            if not read_only:
                try:
                    db = sqlite3.connect(file, timeout=waits.BUSY_SECONDS, check_same_thread=False,
                                         isolation_level=None)
                    db.execute("PRAGMA journal_mode=WAL")
                except sqlite3.OperationalError:  # read-only media, and the like
                    if db is not None:
                        db.close()
                    read_only = True
            if read_only:
                db = _open_read_only(file)
            assert db is not None
            db.execute("PRAGMA synchronous=FULL")  # a returned edit survives power loss too
            db.execute("PRAGMA foreign_keys=ON")
            db.execute("PRAGMA secure_delete=ON")  # removed rows are zeroed, not just unlinked
            db.execute("PRAGMA mmap_size=2147483648")  # reading all vectors at open: ~2x faster
            # The content-hash indexes take rows in random order, so each batch touches most
            # of their pages: with SQLite's 2 MB cache they were read back every batch (100k
            # vectors added 10k at a time: 2.3 s -> 1.8 s in bare SQLite). Pages are taken as used.
            db.execute("PRAGMA cache_size=-32768")
            version = db.execute("SELECT value FROM config WHERE key = 'format_version'").fetchone()  # a memory's?
            if read_only and version is not None and json.loads(version[0]) == 2:  # not upgraded: as if it were
                _read_in_nfc(db)
        except sqlite3.DatabaseError as exc:  # OperationalError too: e.g. "no such table"
            if db is not None:
                db.close()
            if "locked" in str(exc) or "busy" in str(exc):
                raise storage_error(exc, path, "opening the memory", "nothing was changed") from None
            if "unable to open" in str(exc):  # not readable by this user: nothing says it is damaged
                raise VismemError(f"cannot open {file}: {clause(exc)}; check that this user may read it (and the "
                                  "folder, and write both to change the memory)") from None
            raise VismemError(f"{file} is not the database of a vismem memory, or it is damaged ({clause(exc)}): "
                              "restore the folder from a backup, or import an export of it (`vismem import`)"
                              ) from None
        return cls(path, db, read_only=read_only)

    def close(self) -> None:
        watch, self._watch = self._watch, None
        if watch is not None:
            watch.close()  # before the connection: closing it may unmap what the watch reads
        self._db.close()

    def format_version(self) -> int:
        row = self._db.execute("SELECT value FROM config WHERE key = 'format_version'").fetchone()
        return int(json.loads(row[0])) if row else 0

    def check_writable(self) -> None:
        if self.read_only:
            raise ReadOnlyMemoryError(
                f"memory at {self.directory} is read-only (read-only media or permissions): "
                "it can be searched and classified, not changed")

    def write(self, what: str, before: Callable[[], None] | None = None,
              undone: str = "nothing of it was kept") -> _Write:
        """A write transaction: BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any error, with
        SQLite's errors turned into ones that say what to do. `what` names the work and
        `undone` what a failure leaves; `before` runs first inside it, holding the write
        lock (to catch up with others). If `before` finds another process rebuilding the
        saved index (`saved.BuildUnderway`), the write lets go, waits for it, and begins again."""
        self.check_writable()
        if self._reading:  # it would write from an older state, or fail as "busy"
            raise RuntimeError(f"{what}: a write inside a read snapshot")
        return _Write(self, what, before, undone)

    def wait_for_writers(self) -> None:
        """Wait (up to `waits.BUSY_SECONDS`) until no other connection holds the write lock, and
        return without taking it: for a caller whose own readers would queue behind it
        while its write waits for SQLite (the service). Another process may still take the
        lock first; the write then waits as any write does."""
        if self.read_only:
            return
        probe = sqlite3.connect(self.directory / DB_NAME, timeout=waits.BUSY_SECONDS, isolation_level=None)
        try:
            probe.execute("BEGIN IMMEDIATE")
            probe.execute("ROLLBACK")
        except sqlite3.OperationalError as exc:
            raise storage_error(exc, self.directory, "waiting for another process's write",
                                "nothing was changed") from None
        finally:
            probe.close()

    @property
    def commits(self) -> int:
        """How many write transactions this connection has committed, exactly, also when
        Ctrl-C landed as a COMMIT returned (before any code after it ran): SQLite says then
        whether the transaction is over. A caller compares it before and after a call to
        tell whether that call committed anything."""
        sent = self._committing > self._commits and not self._db.in_transaction
        return self._committing if sent else self._commits

    def _log(self, op: str, ids: list[int]) -> None:
        cursor = self._db.execute("INSERT INTO edits (op, ids) VALUES (?, ?)", (op, json.dumps(ids)))
        self.written_seq = int(cursor.lastrowid or 0)

    @property
    def in_transaction(self) -> bool:
        """Whether this connection holds a transaction open (a write, or a snapshot)."""
        return self._db.in_transaction

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """Reads inside see one state of the database, whatever other processes commit
        meanwhile: a read transaction, or the transaction already open."""
        if self._db.in_transaction:
            yield
            return
        self._db.execute("BEGIN")  # deferred: a read transaction from its first read on
        self._reading = True
        try:
            yield
        finally:
            self._reading = False
            self._db.execute("COMMIT")  # it only read: nothing to undo

    @contextmanager
    def second_connection(self) -> Iterator[Database]:
        """Another connection to this database, for another thread to read through while
        this one writes; closed on exit. Its reads see committed states only. A statement
        that another thread left open on *this* connection holds a read transaction on it,
        and a write begun meanwhile, after another process committed, fails at once as
        "database is locked" (SQLite cannot move a write to a newer snapshot)."""
        other = Database.open(self.directory)
        try:
            yield other
        finally:
            other.close()

    def _watch_from_this_thread(self, watch: CommitWatch) -> CommitWatch | None:
        """The watch serves the first thread that asks. Threads sharing a connection (the
        HTTP service's readers) run statements side by side, and a pragma run while another
        thread's statement holds an older snapshot reads an older version; paired with the
        newer header, it would hide that commit until the next one. So once a second thread
        asks, every check asks SQLite, as before the watch."""
        if self._watching_thread is None:
            self._watching_thread = threading.get_ident()
            return watch
        self._watch = None
        watch.close()
        return None

    def data_version(self) -> int:
        """Changes whenever another connection commits: the cue to catch up."""
        watch = self._watch  # once: a close on another thread may clear it
        if watch is not None and self._watching_thread != threading.get_ident():
            watch = self._watch_from_this_thread(watch)
        header = watch.header() if watch is not None else None
        seen, version = self._version
        if header is None or header != seen:
            # the header first: a commit landing between the two reads changes it again
            version = int(self._db.execute("PRAGMA data_version").fetchone()[0])
            self._version = (header, version)
        return version

    # ---- config ----------------------------------------------------------------------

    def config(self) -> dict[str, Any]:
        return {k: json.loads(v) for k, v in self._db.execute("SELECT key, value FROM config")}

    def set_config(self, values: Mapping[str, Any]) -> None:
        with self.write("saving settings"):
            self._db.executemany("INSERT OR REPLACE INTO config VALUES (?, ?)",
                                 [(k, json.dumps(v)) for k, v in values.items()])

    # ---- writes ----------------------------------------------------------------------

    def insert(self, items: Sequence[NewItem], dim: int, *, allow_duplicates: bool = False,
               before: Callable[[], None] | None = None) -> tuple[list[int], list[tuple[int, int]]]:
        """Insert items in one transaction. Returns (new ids in input order, duplicates as
        (position, existing id)); an item whose content a stored item already has, or an
        earlier item of this batch, is a duplicate unless `allow_duplicates`."""
        check_new_items(items, dim)
        if not items:
            return [], []
        now = time.time()
        ids: list[int] = []
        duplicates: list[tuple[int, int]] = []
        with self.write(f"adding {len(items)} items", before, "nothing from the failed batch was kept") as db:
            # asked in chunks of CHUNK, not a statement per row
            held = self.known_hashes(i.content_hash for i in items if i.content_hash is not None)
            for position, item in enumerate(items):
                copy = 0
                if item.content_hash is not None:
                    holder = held.get(item.content_hash)
                    if holder is not None and not allow_duplicates:
                        duplicates.append((position, holder))
                        continue
                    copy = int(holder is not None)
                cursor = db.execute(
                    "INSERT INTO items (label, source, path, content_hash, copy, weight, meta, added_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (item.label, item.source, item.path, item.content_hash, copy, item.weight,
                     # keys unescaped: SQLite's JSON path `$.für` does not match a stored "f\u00fcr"
                     json.dumps(item.meta, ensure_ascii=False), now if item.added_at is None else item.added_at),
                )
                item_id = int(cursor.lastrowid or 0)
                ids.append(item_id)
                if item.content_hash is not None and copy == 0:  # a later item of this batch is its duplicate
                    held[item.content_hash] = item_id
                db.execute("INSERT INTO vectors VALUES (?, ?)",
                           (item_id, np.ascontiguousarray(item.vector, dtype=np.float32).tobytes()))
                if item.thumbnail is not None:
                    db.execute("INSERT INTO thumbnails VALUES (?, ?)", (item_id, item.thumbnail))
            if ids:
                self._log("add", ids)
        return ids, duplicates

    def delete(self, ids: Iterable[int], before: Callable[[], None] | None = None) -> list[int]:
        """Delete items (vectors, thumbnails, history) durably; returns the ids removed.

        The rows are zeroed in place; older copies in the WAL go at the next `purge`.
        """
        wanted = sorted({int(i) for i in ids})
        if not wanted:
            return []
        with self.write(f"removing {len(wanted)} items", before, "nothing was removed") as db:
            present = self._existing(wanted)
            for chunk in _chunks(present):
                db.execute(f"DELETE FROM items WHERE id IN ({_marks(chunk)})", chunk)
            if present:
                self._log("remove", present)
        return present

    def update(self, ids: Sequence[int], *, label: str | None = None, weight: float | None = None,
               before: Callable[[], None] | None = None) -> list[int]:
        """Relabel items and/or set their vote weight; returns the ids that exist. The first
        relabel of an item keeps its original label; relabelling back forgets it. A relabel
        to another label resets the item's pruning count v: it counted the item's votes
        under the old label (hard pruning kept it out of every search for them)."""
        if label is not None:
            label = check_label(label)  # as kept: NFC
        check_weight(weight)
        with self.write(f"updating {len(ids)} items", before, "nothing was changed") as db:
            present = self._existing(ids)
            for chunk in _chunks(present):
                marks = _marks(chunk)
                if label is not None:
                    db.execute(f"DELETE FROM prune_counts WHERE id IN (SELECT id FROM items WHERE label != ? "
                               f"AND id IN ({marks}))", [label, *chunk])
                    db.execute(f"INSERT OR IGNORE INTO relabels SELECT id, label FROM items "
                               f"WHERE id IN ({marks})", chunk)
                    db.execute(f"UPDATE items SET label = ? WHERE id IN ({marks})", [label, *chunk])
                    db.execute(f"DELETE FROM relabels WHERE original = ? AND id IN ({marks})", [label, *chunk])
                if weight is not None:
                    db.execute(f"UPDATE items SET weight = ? WHERE id IN ({marks})", [weight, *chunk])
            if present:
                self._log("update", present)
        return present

    def set_prune_counts(self, counts: Mapping[int, int], before: Callable[[], None] | None = None) -> None:
        """Replace every item's pruning count (absent: 0)."""
        with self.write("saving pruning counts", before) as db:
            db.execute("DELETE FROM prune_counts")
            db.executemany("INSERT INTO prune_counts SELECT ?, ? WHERE EXISTS (SELECT 1 FROM items WHERE id = ?)",
                           [(int(i), int(v), int(i)) for i, v in counts.items() if v])
            self._log("prune", [])

    # ---- checkpoints (see checkpoints.py) --------------------------------------------
    # Their tables are made when the first is: a memory that never checkpoints has none.

    def make_checkpoint(self, name: str, *, replace: bool = False,
                        before: Callable[[], None] | None = None) -> Checkpoint:
        """Record every item's label, weight, pruning count and relabel history, the highest
        id given out and the settings, as checkpoint `name`, in one transaction."""
        with self.write(f"making checkpoint {name!r}", before, "no checkpoint was made") as db:
            checkpoints.make(db, name, replace=replace, location=str(self.directory))
            return checkpoints.find(db, name, str(self.directory))

    def checkpoints(self) -> list[Checkpoint]:
        return checkpoints.listed(self._db)

    def checkpoint(self, name: str) -> Checkpoint:
        return checkpoints.find(self._db, name, str(self.directory))

    def at_checkpoint(self, name: str) -> bool:
        """Whether every item and the settings are as checkpoint `name` has them (its items
        removed since aside, and its transform once none of them is left): no item added
        after it, none whose state differs."""
        with self.snapshot():
            found = checkpoints.find(self._db, name, str(self.directory))
            added = self._db.execute("SELECT 1 FROM items WHERE id > ? LIMIT 1", (found.last_id,)).fetchone()
            fittable = found.kept > 0  # its transform is fitted again on its items still here
            settings = checkpoints.restored_settings(self.config().get("settings", {}), transform=fittable)
            return (added is None and not checkpoints.changed_since(self._db, name)
                    and settings == checkpoints.restored_settings(found.settings, transform=fittable))

    def delete_checkpoint(self, name: str, before: Callable[[], None] | None = None) -> None:
        with self.write(f"deleting checkpoint {name!r}", before, "the checkpoint is kept") as db:
            checkpoints.delete(db, name, str(self.directory))

    def restore_checkpoint(self, name: str, last_id: int) -> tuple[list[int], list[int]]:
        """Inside a write: remove the items added after checkpoint `name` (ids above
        `last_id`) and put back its state of every item of it still present. Logs the
        removal, the updates and the pruning counts, so that other handles replay them.
        Returns (removed ids, restored ids)."""
        with self.write(f"rolling back to checkpoint {name!r}", None, "the memory is as it was") as db:
            added = [r[0] for r in db.execute("SELECT id FROM items WHERE id > ? ORDER BY id", (last_id,))]
            removed = self.delete(added)  # a savepoint of this write; logs the removal
            restored = checkpoints.changed_since(db, name)
            if restored:
                checkpoints.restore(db, name, restored)
                self._log("update", restored)
                self._log("prune", [])
        return removed, restored

    def purge(self) -> None:
        """Move the zeroed pages into the main file and empty the WAL.

        The WAL still holds copies of removed rows from when they were written. The
        checkpoint waits (up to `waits.BUSY_SECONDS`) for other connections' reads. SQLite answers
        "busy" at once, without waiting, while another connection checkpoints (every commit
        may start one), so a busy answer is retried until that time is up.
        """
        if self.read_only:
            return
        deadline = time.monotonic() + waits.BUSY_SECONDS
        pause = 0.001
        while True:
            try:
                busy, _, _ = self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            except sqlite3.OperationalError as exc:
                raise storage_error(exc, self.directory, "purging removed items") from None
            if not busy or time.monotonic() >= deadline:
                break
            time.sleep(pause)
            pause = min(2 * pause, 0.1)
        if busy:
            raise MemoryBusyError(
                f"could not purge {self.directory}: another process kept it busy for {waits.BUSY_SECONDS} s; "
                "run `vismem compact` when it is idle")

    def vacuum(self) -> None:
        """Rewrite the database compactly, returning freed pages to the file system."""
        self.check_writable()
        try:
            self._db.execute("VACUUM")
        except sqlite3.OperationalError as exc:
            raise storage_error(exc, self.directory, "compacting the store") from None
        self.purge()

    # ---- reads -----------------------------------------------------------------------

    def _existing(self, ids: Iterable[int]) -> list[int]:
        found: list[int] = []
        for chunk in _chunks(sorted({int(i) for i in ids})):
            found += [r[0] for r in self._db.execute(f"SELECT id FROM items WHERE id IN ({_marks(chunk)})", chunk)]
        return found

    def count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM items").fetchone()[0])

    def ids_where(self, where: Filter | None = None) -> list[int]:
        """Ids of items matching a filter, ascending."""
        clauses, params = _sql_filter(where)
        return [r[0] for r in self._db.execute(f"SELECT id FROM items WHERE {clauses} ORDER BY id", params)]

    def known_hashes(self, hashes: Iterable[str]) -> dict[str, int]:
        """Content hash -> the oldest item holding it, for the given hashes that are stored."""
        found: dict[str, int] = {}
        wanted = sorted(set(hashes))
        for start in range(0, len(wanted), CHUNK):
            chunk = wanted[start : start + CHUNK]
            for digest, item_id in self._db.execute(
                    f"SELECT content_hash, MIN(id) FROM items WHERE content_hash IN ({_marks(chunk)}) "
                    "GROUP BY content_hash", chunk):
                found[digest] = int(item_id)
        return found

    def items(self, ids: Sequence[int]) -> list[Item]:
        """Items with these ids (missing ones left out), in the order given."""
        rows: dict[int, Item] = {}
        for chunk in _chunks([int(i) for i in ids]):
            marks = _marks(chunk)
            history = dict(self._db.execute(f"SELECT id, original FROM relabels WHERE id IN ({marks})", chunk))
            counts = dict(self._db.execute(f"SELECT id, v FROM prune_counts WHERE id IN ({marks})", chunk))
            for r in self._db.execute(f"SELECT {ITEM_COLUMNS} FROM items WHERE id IN ({marks})", chunk):
                rows[r[0]] = Item(r[0], r[1], r[2], r[3], r[4], r[5], json.loads(r[6]), r[7],
                                  history.get(r[0]), int(counts.get(r[0], 0)))
        return [rows[int(i)] for i in ids if int(i) in rows]

    def item_rows(self, after: int = -1) -> Iterator[tuple[int, str, str, float, str | None]]:
        """(id, label, source, weight, content_hash) of items with id > `after`, ascending."""
        return iter(self._db.execute(
            "SELECT id, label, source, weight, content_hash FROM items WHERE id > ? ORDER BY id", (after,)))

    def rows_of(self, ids: Sequence[int]) -> list[tuple[int, str, str, float, str | None]]:
        found: list[tuple[int, str, str, float, str | None]] = []
        for chunk in _chunks(sorted({int(i) for i in ids})):
            found += self._db.execute(f"SELECT id, label, source, weight, content_hash FROM items "
                                      f"WHERE id IN ({_marks(chunk)}) ORDER BY id", chunk).fetchall()
        return found

    def relabels(self) -> dict[int, str]:
        return dict(self._db.execute("SELECT id, original FROM relabels"))

    def relabels_of(self, ids: Sequence[int]) -> dict[int, str]:
        found: dict[int, str] = {}
        for chunk in _chunks(sorted({int(i) for i in ids})):
            found.update(self._db.execute(f"SELECT id, original FROM relabels WHERE id IN ({_marks(chunk)})", chunk))
        return found

    def all_prune_counts(self) -> dict[int, int]:
        return dict(self._db.execute("SELECT id, v FROM prune_counts"))

    def meta_values(self, key: str) -> Iterator[tuple[int, Any]]:
        """(id, value of metadata `key`) for every item that has the key (its value may be
        null), ascending id: lists and objects decoded (SQLite gives their text with the
        keys in the order stored)."""
        check_meta_key(key)
        rows = self._db.execute(f"SELECT id, json_extract({META}, '$.{key}'), json_type({META}, '$.{key}') "
                                f"FROM items WHERE {_has_key(key)} ORDER BY id")
        return (_meta_value(row) for row in rows)

    def meta_values_of(self, key: str, ids: Sequence[int]) -> list[tuple[int, Any]]:
        check_meta_key(key)
        found: list[tuple[int, Any]] = []
        for chunk in _chunks(sorted({int(i) for i in ids})):
            found += map(_meta_value, self._db.execute(
                f"SELECT id, json_extract({META}, '$.{key}'), json_type({META}, '$.{key}') FROM items "
                f"WHERE id IN ({_marks(chunk)}) AND {_has_key(key)} ORDER BY id", chunk))
        return found

    def vectors(self, ids: Sequence[int] | None = None, dim: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(ids int64 (n,), vectors float32 (n, dim)) ordered by id, for all or given ids."""
        if ids is None:
            rows = self._db.execute("SELECT id, vector FROM vectors ORDER BY id")
            return _fill(rows, self.count(), dim)
        found, matrix = [], []
        for chunk in _chunks(sorted({int(i) for i in ids})):
            rows = self._db.execute(f"SELECT id, vector FROM vectors WHERE id IN ({_marks(chunk)}) ORDER BY id",
                                    chunk)
            chunk_ids, chunk_vectors = _fill(rows, len(chunk), dim)
            found.append(chunk_ids)
            matrix.append(chunk_vectors)
        if not found:
            return np.empty(0, np.int64), np.empty((0, dim), np.float32)
        return np.concatenate(found), np.concatenate(matrix)

    def vector_chunks(self, dim: int, size: int = 65536) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """All (ids, vectors) in id order, `size` rows at a time (bounded memory)."""
        last = -1
        while True:
            rows = self._db.execute("SELECT id, vector FROM vectors WHERE id > ? ORDER BY id LIMIT ?",
                                    (last, size)).fetchall()
            if not rows:
                return
            ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            matrix = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32)
            yield ids, matrix.reshape(len(rows), dim).copy()
            last = int(ids[-1])

    def thumbnail(self, item_id: int) -> bytes | None:
        row = self._db.execute("SELECT jpeg FROM thumbnails WHERE id = ?", (int(item_id),)).fetchone()
        return row[0] if row else None

    def last_edit(self) -> int:
        row = self._db.execute("SELECT MAX(seq) FROM edits").fetchone()
        return int(row[0] or 0)

    def edits_since(self, seq: int, until: int | None = None) -> Iterator[tuple[int, str, list[int]]]:
        """Logged edits after `seq` up to `until` (None: the last), in commit order."""
        last = MAX_SEQ if until is None else until
        for s, op, ids in self._db.execute("SELECT seq, op, ids FROM edits WHERE seq > ? AND seq <= ? ORDER BY seq",
                                           (seq, last)):
            yield s, op, json.loads(ids)

    def disk_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.directory.rglob("*") if p.is_file())

    # ---- recorded queries (opt-in; see search/tuning.py) -----------------------------
    # Their own table, made when first used: a memory that never records has none. Not
    # in the edit log: they are no items, and other processes need not replay them.

    def record_queries(self, vectors: np.ndarray, offered: int, capacity: int,
                       rng: np.random.Generator, epoch: int) -> None:
        """Merge `vectors`, a uniform sample of `offered` queries, into the reservoir of
        `capacity`, which stays a uniform sample of every query recorded; dropped if the
        reservoir was cleared since they were recorded (`epoch`, see `recorded_epoch`)."""
        with self.write("recording queries") as db:
            if self.recorded_epoch() != epoch:
                return
            db.execute(RECORDED_TABLE)
            _shrink_recorded(db, capacity, rng)  # if it was shrunk
            seen, held = self._recorded_seen(), self.recorded_count()
            if held < min(seen, capacity):  # it was enlarged: its past is what it kept
                seen = held
            slots = merge_slots(seen, capacity, len(vectors), offered, rng)
            db.executemany("INSERT OR REPLACE INTO recorded_queries VALUES (?, ?)",
                           [(int(s), v.astype(np.float32).tobytes()) for s, v in zip(slots, vectors, strict=True)
                            if s >= 0])
            db.execute("INSERT OR REPLACE INTO config VALUES ('recorded_seen', ?)", (json.dumps(seen + offered),))

    def recorded_queries(self, dim: int) -> np.ndarray:
        """The recorded query vectors, float32 (n, dim)."""
        if not self._has_recorded():
            return np.empty((0, dim), dtype=np.float32)
        rows = self._db.execute("SELECT vector FROM recorded_queries ORDER BY slot").fetchall()
        return np.frombuffer(b"".join(r[0] for r in rows), dtype=np.float32).reshape(-1, dim).copy()

    def recorded_count(self) -> int:
        if not self._has_recorded():
            return 0
        return int(self._db.execute("SELECT COUNT(*) FROM recorded_queries").fetchone()[0])

    def drop_recorded_past(self, capacity: int, rng: np.random.Generator) -> int:
        """Keep a uniform sample of `capacity` of the recorded queries, now that fewer are to
        be kept (those deleted are zeroed in the file; `purge` then drops the log's copies).
        Returns how many were deleted."""
        if not self._has_recorded():
            return 0
        with self.write("deleting recorded queries") as db:
            return _shrink_recorded(db, capacity, rng)

    def clear_recorded_queries(self) -> int:
        """Delete every recorded query (zeroed in the file: `secure_delete`; `purge` then
        drops the log's copies). Returns how many there were."""
        found = self.recorded_count()
        with self.write("deleting recorded queries") as db:
            if self._has_recorded():
                db.execute("DELETE FROM recorded_queries")
            db.execute("DELETE FROM config WHERE key = 'recorded_seen'")
            db.execute("INSERT OR REPLACE INTO config VALUES ('recorded_epoch', ?)",
                       (json.dumps(self.recorded_epoch() + 1),))
        return found

    def recorded_epoch(self) -> int:
        """Counts the clearings: queries recorded before one are never written after it."""
        row = self._db.execute("SELECT value FROM config WHERE key = 'recorded_epoch'").fetchone()
        return int(json.loads(row[0])) if row else 0

    def _has_recorded(self) -> bool:
        return self._db.execute("SELECT 1 FROM sqlite_master WHERE name = 'recorded_queries'").fetchone() \
            is not None

    def _recorded_seen(self) -> int:
        row = self._db.execute("SELECT value FROM config WHERE key = 'recorded_seen'").fetchone()
        return int(json.loads(row[0])) if row else 0


def _read_in_nfc(db: sqlite3.Connection) -> None:
    """Let a connection that cannot write a format-2 database (which cannot be upgraded: see
    migrate.py) read it as format 3 would keep it: its labels, sources and relabel history
    in NFC, through temporary views named as the tables, which hide them from every query of
    this connection. Nothing is written to the file (temp views live in the connection);
    each row read pays one NFC call per text, and filters by label or source scan."""
    db.create_function("nfc", 1, canonical, deterministic=True)
    db.execute("CREATE TEMP VIEW items AS SELECT id, nfc(label) AS label, nfc(source) AS source, path, "
               "content_hash, copy, weight, meta, added_at FROM main.items")
    # as the upgrade does, a relabel whose original is now its label is forgotten
    db.execute("CREATE TEMP VIEW relabels AS SELECT r.id, nfc(r.original) AS original FROM main.relabels r "
               "JOIN main.items i ON i.id = r.id WHERE nfc(r.original) != nfc(i.label)")
    if db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'checkpoint_items'").fetchone():
        db.execute("CREATE TEMP VIEW checkpoint_items AS SELECT checkpoint, id, nfc(label) AS label, weight, v, "
                   "NULLIF(nfc(original), nfc(label)) AS original FROM main.checkpoint_items")


def _open_read_only(file: Path) -> sqlite3.Connection:
    """Open a database that cannot be written: read-only while its WAL index can still be
    shared, else immutable (SQLite then trusts that nobody writes it)."""
    for query in ("mode=ro", "immutable=1"):
        db = sqlite3.connect(f"{file.resolve().as_uri()}?{query}", uri=True, timeout=waits.BUSY_SECONDS,
                             check_same_thread=False, isolation_level=None)
        try:
            db.execute("SELECT COUNT(*) FROM config").fetchone()
            return db
        except sqlite3.OperationalError:
            db.close()
    raise VismemError(f"cannot open {file}: it is neither writable nor readable as a read-only database")


class _Write:
    """BEGIN IMMEDIATE ... COMMIT; inside another write (a catch-up that rebuilds the index
    records its quality), a savepoint of it, which the outer write has caught up for."""

    def __init__(self, database: Database, what: str, before: Callable[[], None] | None, undone: str) -> None:
        self._database, self._db, self._directory = database, database._db, database.directory
        self._what, self._before, self._undone = what, before, undone
        self._nested = False

    def __enter__(self) -> sqlite3.Connection:
        self._nested = self._db.in_transaction
        self._begin()
        if not self._nested and self._before is not None:
            self._run_before(self._before)
        return self._db

    def _begin(self) -> None:
        try:
            self._db.execute("SAVEPOINT nested_write" if self._nested else "BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise storage_error(exc, self._directory, self._what, self._undone) from None

    def _run_before(self, before: Callable[[], None]) -> None:
        """`before`, holding the write lock. A process rebuilding the saved index may wait
        for this lock (it records its measurements), so a `before` that must wait for it
        lets go first: roll back (nothing is written yet), wait, begin again."""
        while True:
            self._database.write_can_restart = True
            try:
                before()
                return
            except BuildUnderway as underway:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                underway.wait()
                self._begin()
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
            finally:
                self._database.write_can_restart = False

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if self._nested:
            self._leave_savepoint(exc)
            return
        if exc_type is not None:
            if self._db.in_transaction:  # SQLite rolls back by itself on some errors (disk full)
                self._db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.OperationalError):
                raise storage_error(exc, self._directory, self._what, self._undone) from None
            return
        database = self._database
        database._committing = database._commits + 1  # (see `Database.commits`)
        try:
            self._db.execute("COMMIT")
        except sqlite3.OperationalError as error:
            database._committing = database._commits  # not made
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise storage_error(error, self._directory, self._what, self._undone) from None
        except BaseException:  # Ctrl-C: as COMMIT returned (made), or before it was sent (undone here)
            if self._db.in_transaction:
                database._committing = database._commits
                self._db.execute("ROLLBACK")
            raise
        database._commits = database._committing

    def _leave_savepoint(self, exc: BaseException | None) -> None:
        if self._db.in_transaction:  # (SQLite may have rolled the whole transaction back)
            if exc is not None:
                self._db.execute("ROLLBACK TO nested_write")
            self._db.execute("RELEASE nested_write")
        if isinstance(exc, sqlite3.OperationalError):
            raise storage_error(exc, self._directory, self._what, self._undone) from None


def storage_error(exc: sqlite3.Error, directory: Path, what: str,
                  undone: str = "nothing of it was kept") -> VismemError:
    """SQLite's error as one that says what happened to the data and what to do."""
    text = str(exc).lower()
    if "full" in text:
        return DiskFullError(
            f"disk full while {what} in {directory}; {undone}: free space on that disk, or remove "
            "items with `vismem remove` (the memory keeps a small reserve so that removal works on a full disk)")
    if "readonly" in text or "read-only" in text:
        return ReadOnlyMemoryError(f"memory at {directory} is read-only, so nothing could be written ({what})")
    if getattr(exc, "sqlite_errorname", "") == "SQLITE_BUSY_SNAPSHOT":  # at once, not after a wait
        return MemoryBusyError(f"memory at {directory} changed under a read still open on this connection while "
                               f"{what}; {undone}: try again")
    if "locked" in text or "busy" in text:
        return MemoryBusyError(f"memory at {directory} is busy: another process held it for {waits.BUSY_SECONDS} s "
                               f"while {what}; try again when it is idle")
    return VismemError(f"storage error while {what} in {directory}: {exc}")


def os_error(exc: OSError, directory: Path, what: str) -> VismemError:
    if exc.errno == errno.ENOSPC:
        return DiskFullError(f"disk full while {what} in {directory}: free space on that disk")
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return ReadOnlyMemoryError(f"memory at {directory} is read-only, so nothing could be written ({what})")
    return VismemError(f"{what} in {directory} failed: {exc.strerror or exc}")


# An item's metadata as filters read it: NULL where it is not JSON that SQLite reads (NaN,
# written by vismem before 0.2 refused it), so that such an item matches no condition and
# every other item's filters still work (json_extract fails the whole query on it).
META = "(CASE WHEN json_valid(meta) THEN meta END)"


def _has_key(key: str) -> str:
    """A SQL condition: the item's metadata has `key` (json_extract answers NULL alike for a
    missing key and a null value)."""
    return f"json_type({META}, '$.{check_meta_key(key)}') IS NOT NULL"


def _sql_filter(where: Filter | None) -> tuple[str, list[Any]]:
    """A SQL condition and its parameters for a filter (without pruning)."""
    clauses: list[str] = []
    params: list[Any] = []
    if where is not None:
        for column, values in (("label", where.labels), ("source", where.sources)):
            if values is not None:
                chosen = sorted(values)
                clauses.append(f"{column} IN ({_marks(chosen)})" if chosen else "0")
                params += chosen
        for key, value in where.where or ():
            if value is None:  # SQL's NULL equals nothing, and json_extract gives it for a missing key too
                clauses.append(f"json_type({META}, '$.{check_meta_key(key)}') = 'null'")
            else:
                clauses.append(f"json_extract({META}, '$.{check_meta_key(key)}') = ?")
                params.append(value)
        if where.max_prune_count is not None:
            clauses.append("id NOT IN (SELECT id FROM prune_counts WHERE v >= ?)")
            params.append(where.max_prune_count)
    return " AND ".join(clauses) or "1", params


def _meta_value(row: tuple[int, Any, str | None]) -> tuple[int, Any]:
    item_id, value, kind = row
    return item_id, json.loads(value) if kind in ("object", "array") else value


def _fill(rows: Iterable[tuple[int, bytes]], most: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Copy (id, blob) rows straight into one preallocated matrix."""
    ids = np.empty(most, dtype=np.int64)
    matrix = np.empty((most, dim), dtype=np.float32)
    n = 0
    for n, (item_id, blob) in enumerate(rows, start=1):
        ids[n - 1] = item_id
        matrix[n - 1] = np.frombuffer(blob, dtype=np.float32)
    return ids[:n], matrix[:n]


def _marks(values: Sequence[Any]) -> str:
    return ",".join("?" * len(values))


def _chunks(values: Sequence[int]) -> Iterator[list[int]]:
    for start in range(0, len(values), CHUNK):
        yield list(values[start : start + CHUNK])


def _shrink_recorded(db: sqlite3.Connection, capacity: int, rng: np.random.Generator) -> int:
    """Shrink the reservoir of recorded queries to `capacity`: a uniform sample of the slots
    held, renumbered from 0 (empty slots fill in order, so keeping the first `capacity`
    slots would keep the earliest queries). Returns how many were deleted."""
    slots = [slot for (slot,) in db.execute("SELECT slot FROM recorded_queries ORDER BY slot")]
    if len(slots) <= capacity:
        return 0
    keep = sorted(rng.choice(slots, capacity, replace=False).tolist())
    gone = sorted(set(slots) - set(keep))
    db.executemany("DELETE FROM recorded_queries WHERE slot = ?", [(slot,) for slot in gone])
    # renumbered through negative slots: the slot is the key, and 3 -> 1 could meet a 1 still there
    db.executemany("UPDATE recorded_queries SET slot = ? WHERE slot = ?", [(-1 - i, s) for i, s in enumerate(keep)])
    db.execute("UPDATE recorded_queries SET slot = -1 - slot WHERE slot < 0")
    return len(gone)

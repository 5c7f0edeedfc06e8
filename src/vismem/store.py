"""The memory store: one directory, one SQLite database, the source of truth.

It holds every item's vector, label, source, weight and metadata, a thumbnail of the
image it came from, the memory's configuration (encoder, dimension, format version,
decision defaults) and an edit log that derived search indexes use to catch up.

Why SQLite: each edit is one transaction, so after a crash or `kill -9` every
committed edit is present and no partial one is. `secure_delete` overwrites removed
rows in place, and `purge` (a WAL checkpoint that truncates the log) then drops the
older copies the log still holds, so a removed vector's bytes survive in no file of the
directory. Deleting and purging are separate steps so that one delete costs one small
commit; the memory purges at close, at compaction and after each CLI or service edit.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from .errors import InvalidInputError, MemoryExistsError, MemoryNotFoundError, VismemError

FORMAT_VERSION = 1
DB_NAME = "memory.sqlite"

SCHEMA = """
CREATE TABLE config (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE items (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- AUTOINCREMENT: a removed id is never reused
    label TEXT NOT NULL,
    source TEXT NOT NULL,
    path TEXT,
    content_hash TEXT,
    weight REAL NOT NULL DEFAULT 1.0,
    meta TEXT NOT NULL DEFAULT '{}',
    added_at REAL NOT NULL
);
CREATE INDEX items_label ON items(label);
CREATE INDEX items_source ON items(source);
CREATE INDEX items_hash ON items(content_hash);
CREATE TABLE vectors (
    id INTEGER PRIMARY KEY REFERENCES items(id) ON DELETE CASCADE,
    vector BLOB NOT NULL
);
CREATE TABLE thumbnails (
    id INTEGER PRIMARY KEY REFERENCES items(id) ON DELETE CASCADE,
    jpeg BLOB NOT NULL
);
-- Edit log: search indexes record the last seq they reflect and replay the rest.
CREATE TABLE edits (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    op TEXT NOT NULL CHECK (op IN ('add', 'remove')),
    ids TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class Item:
    """One exemplar's metadata (its vector lives in the store and the index)."""

    id: int
    label: str
    source: str
    path: str | None
    content_hash: str | None
    weight: float
    meta: dict[str, Any]
    added_at: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "label": self.label,
            "source": self.source,
            "path": self.path,
            "content_hash": self.content_hash,
            "weight": self.weight,
            "meta": self.meta,
            "added_at": self.added_at,
        }


@dataclass
class NewItem:
    """An item to insert: its vector plus metadata."""

    vector: np.ndarray
    label: str
    source: str
    path: str | None = None
    content_hash: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    thumbnail: bytes | None = None
    weight: float = 1.0


def check_label(label: object) -> str:
    if not isinstance(label, str):
        raise InvalidInputError(
            f"labels must be strings, got {type(label).__name__} {label!r}"
        )
    if not label.strip():
        raise InvalidInputError("labels must not be empty")
    return label


def check_meta_key(key: object) -> str:
    """Metadata keys are what a filter can name: letters, digits and _."""
    if not isinstance(key, str) or not key or not key.replace("_", "").isalnum():
        raise InvalidInputError(f"metadata keys are letters, digits and _, got {key!r}")
    return key


class MemoryStore:
    """Durable items, vectors and configuration of one memory directory."""

    def __init__(self, path: Path, connection: sqlite3.Connection) -> None:
        self.path = path
        self._db = connection
        self.config = self._read_config()
        self.dim: int = int(self.config["dim"])

    # ---- lifecycle -------------------------------------------------------------------

    @classmethod
    def create(cls, path: str | Path, config: dict[str, Any]) -> "MemoryStore":
        path = Path(path)
        if (path / DB_NAME).exists():
            raise MemoryExistsError(f"a memory already exists at {path}")
        if path.exists() and not path.is_dir():
            raise InvalidInputError(f"{path} exists and is not a directory")
        path.mkdir(parents=True, exist_ok=True)
        # Build in a temporary file and rename: a crash never leaves a half-made memory.
        tmp = path / (DB_NAME + ".creating")
        tmp.unlink(missing_ok=True)
        db = sqlite3.connect(tmp)
        # Small pages: a one-item delete commits ~8 dirty pages, so 4 KiB pages write a
        # quarter of what 16 KiB ones do (0.6 vs 1.2 ms per delete); reopening is no slower.
        db.execute("PRAGMA page_size=4096")
        db.executescript(SCHEMA)
        values = {"format_version": FORMAT_VERSION, "created_at": time.time(), **config}
        db.executemany(
            "INSERT INTO config VALUES (?, ?)", [(k, json.dumps(v)) for k, v in values.items()]
        )
        db.commit()
        db.close()
        tmp.rename(path / DB_NAME)
        return cls.open(path)

    @classmethod
    def open(cls, path: str | Path) -> "MemoryStore":
        path = Path(path)
        if not (path / DB_NAME).is_file():
            raise MemoryNotFoundError(
                f"no memory at {path}: create one with `vismem create {path}`"
            )
        db = sqlite3.connect(path / DB_NAME, timeout=30.0, check_same_thread=False,
                             isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")  # a returned edit survives power loss too
        db.execute("PRAGMA foreign_keys=ON")
        db.execute("PRAGMA secure_delete=ON")  # removed rows are zeroed, not just unlinked
        db.execute("PRAGMA mmap_size=2147483648")  # reading all vectors at open: ~2x faster
        store = cls(path, db)
        version = int(store.config.get("format_version", 0))
        if version > FORMAT_VERSION:
            db.close()
            raise VismemError(
                f"memory at {path} has format version {version}, newer than this vismem "
                f"supports ({FORMAT_VERSION}); upgrade vismem"
            )
        return store

    def close(self) -> None:
        self._db.close()

    def _read_config(self) -> dict[str, Any]:
        return {k: json.loads(v) for k, v in self._db.execute("SELECT key, value FROM config")}

    def set_config(self, key: str, value: Any) -> None:
        with self.transaction():
            self._db.execute(
                "INSERT OR REPLACE INTO config VALUES (?, ?)", (key, json.dumps(value))
            )
        self.config[key] = value

    def transaction(self) -> "_Transaction":
        return _Transaction(self._db)

    def data_version(self) -> int:
        """Changes whenever another connection commits: the cue to reload."""
        return int(self._db.execute("PRAGMA data_version").fetchone()[0])

    # ---- writes ----------------------------------------------------------------------

    def insert(self, items: Sequence[NewItem]) -> list[int]:
        """Insert items in one transaction and return their new ids."""
        if not items:
            return []
        for item in items:
            check_label(item.label)
            for key in item.meta:
                check_meta_key(key)
            if item.vector.shape != (self.dim,):
                raise InvalidInputError(
                    f"vector has shape {item.vector.shape}, this memory stores {self.dim}-d vectors"
                )
        now = time.time()
        ids: list[int] = []
        with self.transaction():
            for item in items:
                cursor = self._db.execute(
                    "INSERT INTO items (label, source, path, content_hash, weight, meta, added_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (item.label, item.source, item.path, item.content_hash, item.weight,
                     json.dumps(item.meta), now),
                )
                item_id = int(cursor.lastrowid)
                ids.append(item_id)
                self._db.execute(
                    "INSERT INTO vectors VALUES (?, ?)",
                    (item_id, np.ascontiguousarray(item.vector, dtype=np.float32).tobytes()),
                )
                if item.thumbnail is not None:
                    self._db.execute("INSERT INTO thumbnails VALUES (?, ?)", (item_id, item.thumbnail))
            self._db.execute("INSERT INTO edits (op, ids) VALUES ('add', ?)", (json.dumps(ids),))
        return ids

    def delete(self, ids: Iterable[int]) -> list[int]:
        """Delete items (vectors, thumbnails, metadata) durably; returns the ids removed.

        The rows are zeroed in place; older copies in the WAL go at the next `purge`.
        """
        ids = sorted({int(i) for i in ids})
        if not ids:
            return []
        with self.transaction():
            present = self._existing(ids)
            if present:
                for chunk in _chunks(present, 500):
                    marks = ",".join("?" * len(chunk))
                    self._db.execute(f"DELETE FROM items WHERE id IN ({marks})", chunk)
                self._db.execute(
                    "INSERT INTO edits (op, ids) VALUES ('remove', ?)", (json.dumps(present),)
                )
        return present

    def purge(self) -> None:
        """Move the zeroed pages into the main file and empty the WAL.

        The WAL still holds copies of removed rows from when they were written. The
        checkpoint waits (up to the 30 s busy timeout) for other connections' reads.
        """
        busy, _, _ = self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if busy:
            raise VismemError(
                f"could not purge {self.path}: another process kept it busy for 30 s; "
                "run `vismem compact` when it is idle"
            )

    def update(self, ids: Sequence[int], *, label: str | None = None,
               weight: float | None = None) -> list[int]:
        """Relabel items and/or set their vote weight; returns the ids that exist."""
        if label is not None:
            check_label(label)
        if weight is not None and not (np.isfinite(weight) and weight >= 0):
            raise InvalidInputError(f"weight must be a finite number >= 0, got {weight}")
        with self.transaction():
            present = self._existing(ids)
            for chunk in _chunks(present, 500):
                marks = ",".join("?" * len(chunk))
                if label is not None:
                    self._db.execute(f"UPDATE items SET label = ? WHERE id IN ({marks})", [label, *chunk])
                if weight is not None:
                    self._db.execute(f"UPDATE items SET weight = ? WHERE id IN ({marks})", [weight, *chunk])
        return present

    # ---- reads -----------------------------------------------------------------------

    def _existing(self, ids: Iterable[int]) -> list[int]:
        found: list[int] = []
        for chunk in _chunks(sorted({int(i) for i in ids}), 500):
            marks = ",".join("?" * len(chunk))
            found += [r[0] for r in self._db.execute(f"SELECT id FROM items WHERE id IN ({marks})", chunk)]
        return found

    def count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM items").fetchone()[0])

    def class_counts(self) -> dict[str, int]:
        rows = self._db.execute("SELECT label, COUNT(*) FROM items GROUP BY label ORDER BY label")
        return {label: count for label, count in rows}

    def ids_where(self, *, label: str | None = None, source: str | None = None,
                  meta: dict[str, Any] | None = None) -> list[int]:
        """Ids of items with this label, this source and every given metadata key = value."""
        clauses, params = [], []
        if label is not None:
            clauses.append("label = ?")
            params.append(label)
        if source is not None:
            clauses.append("source = ?")
            params.append(source)
        for key, value in (meta or {}).items():
            check_meta_key(key)
            clauses.append(f"json_extract(meta, '$.{key}') = ?")
            params.append(json.dumps(value) if isinstance(value, (list, dict)) else value)
        where = " AND ".join(clauses) or "1"
        return [r[0] for r in self._db.execute(f"SELECT id FROM items WHERE {where} ORDER BY id", params)]

    def ids_with_hash(self, content_hash: str) -> list[int]:
        rows = self._db.execute("SELECT id FROM items WHERE content_hash = ?", (content_hash,))
        return [r[0] for r in rows]

    def items(self, ids: Sequence[int] | None = None) -> list[Item]:
        query = "SELECT id, label, source, path, content_hash, weight, meta, added_at FROM items"
        if ids is None:
            rows = list(self._db.execute(query + " ORDER BY id"))
        else:
            rows = []
            for chunk in _chunks([int(i) for i in ids], 500):
                marks = ",".join("?" * len(chunk))
                rows += self._db.execute(query + f" WHERE id IN ({marks})", chunk)
        return [Item(r[0], r[1], r[2], r[3], r[4], r[5], json.loads(r[6]), r[7]) for r in rows]

    def vectors(self, ids: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(ids int64 (n,), vectors float32 (n, dim)) ordered by id, for all or given ids."""
        if ids is None:
            rows = self._db.execute("SELECT id, vector FROM vectors ORDER BY id")
            return self._fill(rows, self.count())
        wanted = sorted({int(i) for i in ids})
        found, matrix = [], []
        for chunk in _chunks(wanted, 500):
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(
                f"SELECT id, vector FROM vectors WHERE id IN ({marks}) ORDER BY id", chunk)
            chunk_ids, chunk_vectors = self._fill(rows, len(chunk))
            found.append(chunk_ids)
            matrix.append(chunk_vectors)
        if not found:
            return np.empty(0, np.int64), np.empty((0, self.dim), np.float32)
        return np.concatenate(found), np.concatenate(matrix)

    def _fill(self, rows: Iterable[tuple[int, bytes]], most: int) -> tuple[np.ndarray, np.ndarray]:
        """Copy (id, blob) rows straight into one preallocated matrix."""
        ids = np.empty(most, dtype=np.int64)
        matrix = np.empty((most, self.dim), dtype=np.float32)
        n = 0
        for n, (item_id, blob) in enumerate(rows, start=1):
            ids[n - 1] = item_id
            matrix[n - 1] = np.frombuffer(blob, dtype=np.float32)
        return ids[:n], matrix[:n]

    def vote_metadata(self) -> list[tuple[int, str, str, float, str | None]]:
        """(id, label, source, weight, content_hash) of every item: what search and vote need."""
        return self._db.execute(
            "SELECT id, label, source, weight, content_hash FROM items ORDER BY id").fetchall()

    def vector_chunks(self, size: int = 65536) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """All (ids, vectors) in id order, `size` rows at a time (bounded memory)."""
        last = -1
        while True:
            rows = self._db.execute(
                "SELECT id, vector FROM vectors WHERE id > ? ORDER BY id LIMIT ?", (last, size)
            ).fetchall()
            if not rows:
                return
            ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            matrix = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32)
            yield ids, matrix.reshape(len(rows), self.dim).copy()
            last = int(ids[-1])

    def vacuum(self) -> None:
        """Rewrite the database compactly, returning freed pages to the file system."""
        self._db.execute("VACUUM")
        self.purge()

    def thumbnail(self, item_id: int) -> bytes | None:
        row = self._db.execute("SELECT jpeg FROM thumbnails WHERE id = ?", (int(item_id),)).fetchone()
        return row[0] if row else None

    def last_edit(self) -> int:
        row = self._db.execute("SELECT MAX(seq) FROM edits").fetchone()
        return int(row[0] or 0)

    def edits_since(self, seq: int) -> Iterator[tuple[int, str, list[int]]]:
        for s, op, ids in self._db.execute(
            "SELECT seq, op, ids FROM edits WHERE seq > ? ORDER BY seq", (seq,)
        ):
            yield s, op, json.loads(ids)

    def disk_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file())


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any exception."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> sqlite3.Connection:
        self._db.execute("BEGIN IMMEDIATE")
        return self._db

    def __exit__(self, exc_type, exc, tb) -> None:
        self._db.execute("ROLLBACK" if exc_type else "COMMIT")


def _chunks(values: Sequence[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(values), size):
        yield list(values[start : start + size])

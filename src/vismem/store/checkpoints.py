"""Named checkpoints of a directory-home memory, and the rollback to one.

A checkpoint keeps, in two tables of the memory's database made on first use, its name,
its time, the highest item id given out so far, the settings as committed, and every
item's mutable state then: label, vote weight, pruning count v, and the label before
its first relabel. No vector, thumbnail or metadata: those never change while an item
lives. A checkpoint's row for an item goes with the item (`ON DELETE CASCADE` in the
schema itself, so even a vismem that knows nothing of checkpoints removes it, and
`secure_delete` zeroes it as it zeroes the item): a removal stays exact and final, and a
rollback cannot bring a removed item back. A rollback puts back every setting but
`record_queries`: whether users' queries are kept is their consent, not the memory's state.

The tables need no new store format: a vismem without checkpoints never reads them, and
its removals still empty them (the foreign keys are in the file; the database is opened
with `foreign_keys=ON`).
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from dataclasses import asdict, dataclass
from typing import Any

from ..errors import CheckpointExistsError, CheckpointNotFoundError, InvalidInputError, brief_repr
from ..settings import MemorySettings

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
NAME_RULE = "1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"

TABLES = (
    """CREATE TABLE IF NOT EXISTS checkpoints (
        name TEXT PRIMARY KEY,
        made_at REAL NOT NULL,
        last_id INTEGER NOT NULL,   -- the highest item id given out when it was made
        items INTEGER NOT NULL,     -- how many items it kept the state of
        settings TEXT NOT NULL      -- MemorySettings as committed, JSON
    )""",
    """CREATE TABLE IF NOT EXISTS checkpoint_items (
        checkpoint TEXT NOT NULL REFERENCES checkpoints(name) ON DELETE CASCADE,
        id INTEGER NOT NULL REFERENCES items(id) ON DELETE CASCADE,
        label TEXT NOT NULL,
        weight REAL NOT NULL,
        v INTEGER NOT NULL,
        original TEXT,              -- the label before its first relabel (NULL: never relabelled)
        PRIMARY KEY (checkpoint, id)
    ) WITHOUT ROWID""",
    # an item's removal finds its rows here (the cascade), not by scanning every checkpoint
    "CREATE INDEX IF NOT EXISTS checkpoint_items_id ON checkpoint_items(id)",
)


@dataclass(frozen=True)
class Checkpoint:
    """A named checkpoint: when it was made, the highest item id then, how many items it
    holds the state of (`items`) and how many of them are still in the memory (`kept`)."""

    name: str
    made_at: float
    last_id: int
    items: int
    kept: int
    settings: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RollbackReport:
    """What a rollback did: items added after the checkpoint removed (and purged), items
    whose label, weight, pruning count or relabel history it put back, items of the
    checkpoint removed since (they stay removed: a removal is final), whether the
    settings changed, and how many items the memory holds now. `transform_dropped` names
    the checkpoint's feature transform where it could not be fitted on the items the
    rollback keeps (none of them left, or none that vary): the memory then searches its
    vectors as stored. `calibration_stale`: the abstention threshold the memory has after
    it was measured through another feature transform than the one now in force (one
    dropped or fitted again on other items), so `classify --abstain` refuses it until
    `vismem calibrate` runs again."""

    checkpoint: str
    removed_added: int
    removed_ids: list[int]
    restored: int
    restored_ids: list[int]
    gone_since: int
    settings_restored: bool
    items: int
    transform_dropped: str | None = None
    calibration_stale: bool = False

    __repr__ = brief_repr  # long lists shown by their ends and length

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def restored_settings(settings: dict[str, Any], *, transform: bool = True) -> dict[str, Any]:
    """The part of the settings a rollback puts back: all but `record_queries`, which
    is the users' consent to keeping their queries, not the memory's state (a rollback
    neither turns recording back on nor off); and but the transform when not `transform`:
    with none of the checkpoint's items left to fit it on, a rollback cannot put it back."""
    left_out = {"record_queries"} | (set() if transform else {"transform"})
    # whole, as a rollback writes them: settings as an older vismem wrote them (an upgraded
    # memory's, and its checkpoints') lack the keys added since, and would never compare equal
    whole = MemorySettings.from_dict(settings).to_dict()
    return {key: value for key, value in whole.items() if key not in left_out}


def check_name(name: Any) -> str:
    """A checkpoint name as given, or InvalidInputError saying what a name may be."""
    if not isinstance(name, str) or NAME.fullmatch(name) is None:
        raise InvalidInputError(f"bad checkpoint name {name!r}: use {NAME_RULE}")
    return name


def has_tables(db: sqlite3.Connection) -> bool:
    return db.execute("SELECT 1 FROM sqlite_master WHERE name = 'checkpoints'").fetchone() is not None


def make(db: sqlite3.Connection, name: str, *, replace: bool, location: str) -> None:
    """Inside a write transaction: record checkpoint `name` of the memory as it is."""
    for statement in TABLES:
        db.execute(statement)
    if db.execute("SELECT 1 FROM checkpoints WHERE name = ?", (name,)).fetchone() is not None:
        if not replace:
            raise CheckpointExistsError(f"memory at {location} has a checkpoint named {name!r} already: choose "
                                        "another name, or replace it")  # each face says how
        db.execute("DELETE FROM checkpoints WHERE name = ?", (name,))  # its item rows go with it
    last_id = db.execute("SELECT MAX(COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'items'), 0), "
                         "COALESCE((SELECT MAX(id) FROM items), 0))").fetchone()[0]
    settings = db.execute("SELECT value FROM config WHERE key = 'settings'").fetchone()
    count = int(db.execute("SELECT COUNT(*) FROM items").fetchone()[0])
    db.execute("INSERT INTO checkpoints VALUES (?, ?, ?, ?, ?)",
               (name, time.time(), int(last_id), count, settings[0] if settings else "{}"))
    db.execute("INSERT INTO checkpoint_items SELECT ?, i.id, i.label, i.weight, COALESCE(p.v, 0), r.original "
               "FROM items i LEFT JOIN prune_counts p ON p.id = i.id LEFT JOIN relabels r ON r.id = i.id",
               (name,))


def listed(db: sqlite3.Connection, name: str | None = None) -> list[Checkpoint]:
    """Every checkpoint (or the one named), oldest first."""
    if not has_tables(db):
        return []
    where, params = ("WHERE c.name = ?", (name,)) if name is not None else ("", ())
    rows = db.execute("SELECT c.name, c.made_at, c.last_id, c.items, c.settings, "
                      "(SELECT COUNT(*) FROM checkpoint_items k WHERE k.checkpoint = c.name) "
                      f"FROM checkpoints c {where} ORDER BY c.made_at, c.name", params).fetchall()
    return [Checkpoint(r[0], float(r[1]), int(r[2]), int(r[3]), int(r[5]), json.loads(r[4])) for r in rows]


def find(db: sqlite3.Connection, name: str, location: str) -> Checkpoint:
    found = listed(db, name)
    if not found:
        known = [c.name for c in listed(db)]
        raise CheckpointNotFoundError(f"memory at {location} has no checkpoint named {name!r}; "
                                      + (f"it has: {', '.join(known)}" if known else "it has none (make one with "
                                         f"`vismem checkpoint {location} NAME`)"))
    return found[0]


def delete(db: sqlite3.Connection, name: str, location: str) -> None:
    """Inside a write transaction: delete checkpoint `name` (CheckpointNotFoundError if none)."""
    find(db, name, location)
    db.execute("DELETE FROM checkpoints WHERE name = ?", (name,))


def changed_since(db: sqlite3.Connection, name: str) -> list[int]:
    """Ids of the checkpoint's items (still present) whose state differs from it now."""
    return [r[0] for r in db.execute(
        "SELECT c.id FROM checkpoint_items c JOIN items i ON i.id = c.id "
        "LEFT JOIN prune_counts p ON p.id = c.id LEFT JOIN relabels r ON r.id = c.id "
        "WHERE c.checkpoint = ? AND (i.label IS NOT c.label OR i.weight IS NOT c.weight "
        "OR COALESCE(p.v, 0) != c.v OR r.original IS NOT c.original) ORDER BY c.id", (name,))]


def restore(db: sqlite3.Connection, name: str, ids: list[int]) -> None:
    """Inside a write transaction: put back the checkpoint's state of items `ids`."""
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        marks = ",".join("?" * len(chunk))
        of = "FROM checkpoint_items c WHERE c.checkpoint = ? AND c.id = items.id"
        db.execute(f"UPDATE items SET label = (SELECT c.label {of}), weight = (SELECT c.weight {of}) "
                   f"WHERE id IN ({marks})", [name, name, *chunk])
        db.execute(f"DELETE FROM relabels WHERE id IN ({marks})", chunk)
        db.execute(f"INSERT INTO relabels SELECT id, original FROM checkpoint_items WHERE checkpoint = ? "
                   f"AND original IS NOT NULL AND id IN ({marks})", [name, *chunk])
        db.execute(f"DELETE FROM prune_counts WHERE id IN ({marks})", chunk)
        db.execute(f"INSERT INTO prune_counts SELECT id, v FROM checkpoint_items WHERE checkpoint = ? "
                   f"AND v != 0 AND id IN ({marks})", [name, *chunk])

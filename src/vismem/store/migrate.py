"""Upgrading a memory's database to the current store format, in place and atomically.

Each step runs in one SQLite transaction (DDL included), so a crash or `kill -9` in the
middle leaves the previous format, and the next open simply upgrades again. Item ids
and vectors never change, so a saved search index stays valid across an upgrade.

Format 1 -> 2:
- the untyped config keys become one `settings` unit (`MemorySettings`: the vote
  defaults' `rule` is now `vote`) and one `encoder` identity;
- per-item state moves out of config JSON into tables: `relabelled` into `relabels`,
  pruning counts into `prune_counts`;
- `items.copy` marks items added on purpose beside the same content, and a unique
  index then enforces duplicate detection in the database;
- the edit log also records updates and pruning, so other processes catch up without
  reloading everything.

Format 2 -> 3: every label and source is kept in Unicode NFC. Before, a folder copied from
a Mac gave its NFD name (`Cafe` and a combining accent) and a typed label its NFC one
(`Café`): two labels that print alike and voted as two classes. The step rewrites labels
and sources to NFC in items, relabel history and checkpoints (a relabel whose original
is now its label is forgotten, as relabelling back forgets it), and logs the items it
relabelled as an update, so a process that has the memory open follows. Only text changes:
a memory that cannot be written opens at format 2 (`READABLE_AS_IS`), and its connection
reads those texts in NFC, as this step would keep them (`sqlite._read_in_nfc`).
"""

from __future__ import annotations

import json
import sqlite3
import unicodedata
from pathlib import Path
from typing import Any, Callable

from ..errors import ReadOnlyMemoryError, VismemError
from ..maintenance import Advance, maintenance, no_progress
from .. import waits
from .sqlite import DB_NAME


def upgrade(directory: Path) -> None:
    """Bring the database in `directory` to the current format, one step at a time, each
    shown as maintenance (a few seconds at 1M items) with its statements as progress."""
    db = sqlite3.connect(directory / DB_NAME, timeout=waits.BUSY_SECONDS, isolation_level=None)
    try:
        try:
            db.execute("PRAGMA journal_mode=WAL")
        except sqlite3.OperationalError:
            raise ReadOnlyMemoryError(
                f"memory at {directory} is in an older store format and read-only: open it once "
                "where it can be written (vismem upgrades it in place), then use it anywhere") from None
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA secure_delete=ON")
        while True:
            version = int(json.loads(db.execute(
                "SELECT value FROM config WHERE key = 'format_version'").fetchone()[0]))
            if version not in STEPS:
                return
            step, statements = STEPS[version]
            with maintenance(f"upgrading the store from format {version} to {version + 1}",
                             statements) as advance:
                db.execute("BEGIN IMMEDIATE")
                try:
                    step(db, advance or no_progress)
                    db.execute("UPDATE config SET value = ? WHERE key = 'format_version'",
                               (json.dumps(version + 1),))
                    db.execute("COMMIT")
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
    except sqlite3.DatabaseError as exc:
        raise VismemError(f"cannot upgrade the memory at {directory}: {exc}") from None
    finally:
        db.close()


def _config(db: sqlite3.Connection) -> dict[str, Any]:
    return {k: json.loads(v) for k, v in db.execute("SELECT key, value FROM config")}


# One statement each: executescript would commit the open transaction first. The schema
# is written out here, not taken from sqlite.py, because a step must stay what it was.
FORMAT_2_STATEMENTS = (
    "ALTER TABLE items ADD COLUMN copy INTEGER NOT NULL DEFAULT 0",
    """UPDATE items SET copy = 1 WHERE content_hash IS NOT NULL AND id > (
        SELECT MIN(other.id) FROM items AS other WHERE other.content_hash = items.content_hash)""",
    "CREATE UNIQUE INDEX items_content ON items(content_hash) WHERE content_hash IS NOT NULL AND copy = 0",
    """CREATE TABLE relabels (
        id INTEGER PRIMARY KEY REFERENCES items(id) ON DELETE CASCADE,
        original TEXT NOT NULL)""",
    """CREATE TABLE prune_counts (
        id INTEGER PRIMARY KEY REFERENCES items(id) ON DELETE CASCADE,
        v INTEGER NOT NULL)""",
    """CREATE TABLE edits_2 (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        op TEXT NOT NULL CHECK (op IN ('add', 'remove', 'update', 'prune')),
        ids TEXT NOT NULL)""",
    "INSERT INTO edits_2 (seq, op, ids) SELECT seq, op, ids FROM edits",
    "DROP TABLE edits",
    "ALTER TABLE edits_2 RENAME TO edits",
)


def _format_1_to_2(db: sqlite3.Connection, advance: Advance) -> None:
    config = _config(db)
    identity = {"name": config.get("encoder"), "id": config.get("encoder_id"), "dim": int(config["dim"]),
                "config": config.get("encoder_config"), "weights_path": config.get("weights_path")}
    vote = dict(config.get("defaults") or {})
    if "rule" in vote:
        vote["vote"] = vote.pop("rule")
    pruning = dict(config.get("pruning") or {})
    counts = pruning.pop("counts", {})
    abstain = config.get("abstain")
    settings = {
        "index": config.get("index", "auto"), "target_recall": config.get("target_recall", 0.95),
        "float16": bool(config.get("float16", False)), "vote": vote,
        "prototypes_per_class": int(config.get("prototypes_per_class", 1)),
        "pruning": {key: pruning[key] for key in ("mode", "c", "d", "threshold") if key in pruning},
        "abstention": {key: abstain[key] for key in ("threshold", "k", "prototype_weight", "tpr",
                                                     "achieved_tpr", "held_out") if key in abstain}
        if abstain else None,
    }
    for statement in FORMAT_2_STATEMENTS:
        db.execute(statement)
        advance(1)
    existing = "SELECT ?, ? WHERE EXISTS (SELECT 1 FROM items WHERE id = ?)"
    db.executemany(f"INSERT INTO relabels {existing}",
                   [(int(i), label, int(i)) for i, label in (config.get("relabelled") or {}).items()])
    db.executemany(f"INSERT INTO prune_counts {existing}",
                   [(int(i), int(v), int(i)) for i, v in counts.items() if int(v)])
    old_keys = ("encoder", "encoder_id", "encoder_config", "weights_path", "dim", "index", "target_recall",
                "float16", "defaults", "prototypes_per_class", "pruning", "abstain", "relabelled")
    db.executemany("DELETE FROM config WHERE key = ?", [(key,) for key in old_keys])
    db.executemany("INSERT OR REPLACE INTO config VALUES (?, ?)",
                   [("encoder", json.dumps(identity)), ("settings", json.dumps(settings))])
    advance(1)


def _nfc_texts(db: sqlite3.Connection, table: str, column: str) -> None:
    """Rewrite `table.column` to NFC: each distinct text read once (the column's index
    makes that fast), and only the texts NFC changes written."""
    changed = [(form, text) for (text,) in db.execute(f"SELECT DISTINCT {column} FROM {table}")
               if isinstance(text, str) and (form := unicodedata.normalize("NFC", text)) != text]
    db.executemany(f"UPDATE {table} SET {column} = ? WHERE {column} = ?", changed)


def _format_2_to_3(db: sqlite3.Connection, advance: Advance) -> None:
    holding = "SELECT id FROM items WHERE label = ? UNION SELECT id FROM relabels WHERE original = ?"
    relabelled = sorted({item_id for (label,) in db.execute("SELECT DISTINCT label FROM items UNION "
                                                            "SELECT DISTINCT original FROM relabels")
                         if unicodedata.normalize("NFC", label) != label
                         for (item_id,) in db.execute(holding, (label, label))})
    for table, column in (("items", "label"), ("items", "source"), ("relabels", "original")):
        _nfc_texts(db, table, column)
        advance(1)
    db.execute("DELETE FROM relabels WHERE original = (SELECT label FROM items WHERE items.id = relabels.id)")
    if db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'checkpoint_items'").fetchone():
        _nfc_texts(db, "checkpoint_items", "label")
        _nfc_texts(db, "checkpoint_items", "original")
        db.execute("UPDATE checkpoint_items SET original = NULL WHERE original = label")
    if relabelled:
        db.execute("INSERT INTO edits (op, ids) VALUES ('update', ?)", (json.dumps(relabelled),))
    advance(1)


# The oldest format today's code reads without an upgrade (format 3 only rewrote text):
# one that cannot be written opens as it is, read in NFC.
READABLE_AS_IS = 2

# format -> (the step to the next one, advance(1) after each of its statements; how many it makes)
STEPS: dict[int, tuple[Callable[[sqlite3.Connection, Advance], None], int]] = {
    1: (_format_1_to_2, len(FORMAT_2_STATEMENTS) + 1),
    2: (_format_2_to_3, 4),
}

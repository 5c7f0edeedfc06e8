"""Seeing other processes' commits without asking SQLite each time (store/wal.py): every
commit is still seen, and an unchanged memory costs no pragma."""

import os
import sqlite3
import subprocess
import sys

import numpy as np
from conftest import unit_vectors

from vismem import Memory
from vismem.store import DB_NAME
from vismem.store.wal import HEADER, CommitWatch


def make(memdir, n=30, dim=8):
    memory = Memory.create(memdir, encoder=None, dim=dim)
    ids = memory.add_vectors(unit_vectors(n, dim, 0), [f"c{i % 3}" for i in range(n)])
    return memory, ids


def pragmas_run(memory, calls):
    """How many times SQLite was asked for data_version during `calls()`."""
    asked = []
    connection = memory.store.db._db
    connection.set_trace_callback(lambda sql: asked.append(sql) if "data_version" in sql else None)
    try:
        calls()
    finally:
        connection.set_trace_callback(None)
    return len(asked)


def test_an_unchanged_memory_is_checked_without_sqlite(memdir):
    memory, _ = make(memdir)
    query = unit_vectors(1, 8, 5)
    memory.search(query, k=3)
    assert pragmas_run(memory, lambda: [memory.search(query, k=3) for _ in range(50)]) == 0
    memory.add_vectors(query, ["own"])  # our own commit changes the header: asked once, then quiet
    assert pragmas_run(memory, lambda: [memory.search(query, k=3) for _ in range(50)]) == 1
    memory.close()


def test_every_commit_of_another_connection_is_seen(memdir):
    memory, ids = make(memdir)
    memory.search(unit_vectors(1, 8, 5), k=3)
    other = sqlite3.connect(memdir / DB_NAME, isolation_level=None)
    other.execute("CREATE TABLE probe (x)")  # a table of its own: the memory ignores it
    memory.refresh()
    for round_ in range(20):
        assert not memory.is_stale()
        other.execute("INSERT INTO probe VALUES (?)", (round_,))
        assert memory.is_stale(), f"commit {round_} not seen"
        memory.refresh()
        if round_ % 5 == 4:  # a checkpoint restarts the log: commits after it are seen too
            other.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            memory.refresh()  # SQLite counts the restart as a change: nothing to replay
    other.close()
    memory.close()


def test_an_edit_by_another_process_shows_in_the_next_search(memdir):
    memory, ids = make(memdir)
    vectors = unit_vectors(30, 8, 0)
    assert memory.search(vectors[0], k=1)[0][0].id == ids[0]
    script = ("import sys; from vismem import Memory\n"
              "with Memory.open(sys.argv[1]) as m: m.remove([int(sys.argv[2])])")
    subprocess.run([sys.executable, "-c", script, str(memdir), str(ids[0])], check=True,
                   env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert ids[0] not in [hit.id for hit in memory.search(vectors[0], k=5)[0]]
    memory.close()


def test_no_watch_where_the_header_cannot_be_read(tmp_path):
    (tmp_path / "none.sqlite-shm").write_bytes(b"")
    assert CommitWatch.of(tmp_path / "none.sqlite") is None  # empty: not initialised yet
    assert CommitWatch.of(tmp_path / "missing.sqlite") is None
    header = np.zeros(HEADER // 4, dtype=np.uint32)
    header[0] = 3006999  # a WAL-index format this code does not know
    (tmp_path / "old.sqlite-shm").write_bytes(header.tobytes() * 2)
    assert CommitWatch.of(tmp_path / "old.sqlite") is None


def test_a_header_being_written_reads_as_unknown(tmp_path):
    first = np.zeros(HEADER, dtype=np.uint8)
    first[:4] = np.frombuffer(np.uint32(3007000).tobytes(), np.uint8)
    first[12] = 1  # isInit
    second = first.copy()
    second[16] = 7  # the second copy is written first: mid-commit the two differ
    (tmp_path / "db.sqlite-shm").write_bytes(first.tobytes() + second.tobytes())
    watch = CommitWatch.of(tmp_path / "db.sqlite")
    assert watch is not None and watch.header() is None
    watch.close()
    (tmp_path / "db.sqlite-shm").write_bytes(first.tobytes() * 2)
    watch = CommitWatch.of(tmp_path / "db.sqlite")
    assert watch is not None and watch.header() == first.tobytes()
    watch.close()

"""A memory sees other connections' and processes' commits, and holds SQLite's locks while
it is open."""

import os
import sqlite3
import struct
import subprocess
import sys

import pytest
from conftest import unit_vectors

from vismem import Memory
from vismem.store import DB_NAME

# Asks, from another process, whether anyone holds the WAL index's "DMS" byte (offset 128 of
# the -shm file): every open connection keeps a shared lock on it, and the first process to
# find it free truncates and rebuilds the WAL index.
DMS_FREE = (
    "import fcntl, struct, sys\n"
    "with open(sys.argv[1], 'rb') as f:\n"
    "    want = struct.pack('hhqqi4x', fcntl.F_WRLCK, 0, 128, 1, 0)\n"
    "    print(struct.unpack('hhqqi4x', fcntl.fcntl(f.fileno(), fcntl.F_GETLK, want))[0] == fcntl.F_UNLCK)\n"
)


def make(memdir, n=30, dim=8):
    memory = Memory.create(memdir, encoder=None, dim=dim)
    ids = memory.add_vectors(unit_vectors(n, dim, 0), [f"c{i % 3}" for i in range(n)])
    return memory, ids


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


@pytest.mark.skipif(sys.platform != "linux", reason="the probe packs Linux's struct flock")
def test_an_open_memory_keeps_sqlites_lock_on_the_wal_index(memdir):
    """POSIX drops every lock a process holds on a file when it closes any descriptor of
    that file. So code that opens and closes the database's files beside SQLite (as a
    shortcut once read the WAL-index header did) silently frees SQLite's locks, and another
    process then rebuilds the WAL index under a live reader: a crash by SIGBUS, or worse."""
    assert struct.calcsize("hhqqi4x") == 32  # struct flock on 64-bit Linux
    memory, _ = make(memdir)
    for _ in range(3):
        memory.search(unit_vectors(1, 8, 5), k=3)
    memory.is_stale()

    def dms_free() -> bool:
        found = subprocess.run([sys.executable, "-c", DMS_FREE, str(memdir / (DB_NAME + "-shm"))],
                               capture_output=True, text=True, check=True)
        return found.stdout.strip() == "True"

    assert not dms_free()
    memory.close()
    assert not (memdir / (DB_NAME + "-shm")).exists() or dms_free()  # the last one out lets go

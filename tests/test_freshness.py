"""A memory sees other connections' and processes' commits, and holds SQLite's locks while
it is open. On Linux it notices commits through SQLite's map of the WAL index (store/wal.py)
and asks SQLite only after one. Several processes opening, editing, saving and purging one
memory at once keep it whole: its catalog, its index and the index's saved files."""

import contextlib
import ctypes
import json
import logging
import os
import shutil
import sqlite3
import struct
import subprocess
import sys
import tempfile
import threading

import numpy as np
import pytest
from conftest import HOLD_WRITE_LOCK, unit_vectors

from vismem import Memory
from vismem.errors import MemoryBusyError
from vismem.datasets import write_image_folder
from vismem.remnants import find_remnants, fingerprints
from vismem.search.lifecycle import ManagedIndex
from vismem.store import DB_NAME
from vismem.store.wal import HEADER, WAL_INDEX_VERSION, CommitWatch, mapped_at

linux_only = pytest.mark.skipif(sys.platform != "linux", reason="the watch reads Linux's /proc/self/maps")

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


@linux_only
def test_an_unchanged_memory_is_checked_without_asking_sqlite(memdir):
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


@linux_only
def test_a_second_memory_on_the_same_folder_outlives_the_first(memdir):
    """Both read the one map SQLite keeps for the process; closing the first leaves it to
    the second, which still sees every commit."""
    first, ids = make(memdir)
    second = Memory.open(memdir)
    assert second.store.db._watch is not None
    first.close()
    other = sqlite3.connect(memdir / DB_NAME, isolation_level=None)
    other.execute("CREATE TABLE probe (x)")
    second.refresh()
    for round_ in range(5):
        other.execute("INSERT INTO probe VALUES (?)", (round_,))
        assert second.is_stale(), f"commit {round_} not seen"
        second.refresh()
        assert not second.is_stale()
    other.close()
    assert second.search(unit_vectors(1, 8, 0), k=1)[0][0].id == ids[0]
    second.close()


def header_copies(first: bytes, second: bytes) -> CommitWatch:
    view = (ctypes.c_char * (2 * HEADER)).from_buffer(bytearray(first + second))
    return CommitWatch(view)


def test_a_header_being_written_reads_as_unknown():
    header = struct.pack("=I4xIB", WAL_INDEX_VERSION, 7, 1).ljust(HEADER, b"\0")
    changed = header[:16] + b"\x09" + header[17:]  # the second copy is written first
    assert header_copies(header, changed).header() is None
    watch = header_copies(header, header)
    assert watch.header() == header
    watch.close()
    assert watch.header() is None  # closed: nothing is read any more


def test_the_map_of_the_wal_index_is_found_by_device_and_inode(tmp_path):
    shm = tmp_path / "db.sqlite-shm"
    shm.write_bytes(b"\0" * 32768)
    stat = os.stat(shm)
    device = f"{os.major(stat.st_dev):02x}:{os.minor(stat.st_dev):02x}"
    ino = stat.st_ino

    def line(start, perms="rw-s", offset=0, dev=device, inode=ino, path=str(shm)):
        return f"{start:x}-{start + 0x8000:x} {perms} {offset:08x} {dev} {inode}    {path}"

    others = [line(0x1000, path=str(shm) + " (deleted)"),  # a replaced file
              line(0x2000, inode=ino + 1),                  # another file by the same name
              line(0x3000, offset=0x8000),                  # a later region
              line(0x4000, perms="rw-p"),                   # a private copy
              line(0x5000, path="/elsewhere"), "7ff0-8000 r-xp 00000000 00:00 0"]
    assert mapped_at(str(shm), stat, "\n".join([*others, line(0xA000)])) == 0xA000
    assert mapped_at(str(shm), stat, "\n".join(others)) is None
    assert mapped_at(str(shm), stat, "\n".join([line(0xA000), line(0xB000)])) is None  # ambiguous


def test_no_watch_where_sqlite_has_not_mapped_the_wal_index(tmp_path):
    assert CommitWatch.of(tmp_path / "missing.sqlite") is None
    (tmp_path / "unmapped.sqlite-shm").write_bytes(b"\0" * 32768)
    assert CommitWatch.of(tmp_path / "unmapped.sqlite") is None


def test_reads_in_a_snapshot_see_one_state(memdir):
    memory, ids = make(memdir)
    db = memory.store.db
    other = sqlite3.connect(memdir / DB_NAME, isolation_level=None)
    with db.snapshot():
        last = db.last_edit()
        other.execute("INSERT INTO edits (op, ids) VALUES ('add', '[]')")  # a commit meanwhile
        assert db.last_edit() == last
        assert [seq for seq, _, _ in db.edits_since(0)][-1] == last
    assert db.last_edit() == last + 1
    assert [seq for seq, _, _ in db.edits_since(0, until=last)][-1] == last
    with db.snapshot(), pytest.raises(RuntimeError, match="inside a read snapshot"):
        db.set_config({"probe": 1})  # refused: it would write from an older state
    assert "probe" not in db.config() and not db._db.in_transaction
    other.close()
    memory.close()


WRITER = """
import sys
import numpy as np
from vismem import Memory
rng = np.random.default_rng(int(sys.argv[2]))
for _ in range(int(sys.argv[3])):
    with Memory.open(sys.argv[1]) as memory:  # closing purges the removal: a checkpoint
        ids = memory.add_vectors(rng.standard_normal((3, 8)).astype(np.float32), ["w"] * 3)
        memory.remove(ids[:1])
"""


def test_memories_opened_searched_and_closed_while_other_processes_write(memdir):
    """Opening reads the catalog in one snapshot (an add committed meanwhile was once read
    twice: "catalog ids must be added in increasing order"), and closing purges even while
    another process checkpoints (SQLite answers busy at once; it once failed the close)."""
    memory, _ = make(memdir)
    rounds, processes = 20, 3
    query = unit_vectors(1, 8, 5)
    with contextlib.ExitStack() as files:
        errors = [files.enter_context(tempfile.TemporaryFile("w+")) for _ in range(processes)]  # a pipe could fill
        writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(memdir), str(seed), str(rounds)],
                                    stderr=errors[seed]) for seed in range(processes)]
        while any(writer.poll() is None for writer in writers):
            memory.search(query, k=5)
            with Memory.open(memdir) as beside:
                assert len(beside.search(query, k=5)[0]) == 5
        for error in errors:
            error.seek(0)
        assert [writer.wait() for writer in writers] == [0] * processes, [error.read() for error in errors]
    assert len(memory) == 30 + processes * rounds * 2
    with Memory.open(memdir) as fresh:
        assert sorted(fresh.ids()) == sorted(memory.ids())
    memory.close()


def test_a_write_that_catches_up_through_a_rebuild_keeps_what_the_rebuild_recorded(memdir):
    """Another process refitted the transform and the saved index is gone: the next write
    reloads and rebuilds the index inside its own transaction, and the rebuild records its
    measured recall there (it once failed: "cannot start a transaction within a transaction")."""
    rng = np.random.default_rng(0)
    memory = Memory.create(memdir, encoder=None, dim=16, index="hnsw")
    ids = memory.add_vectors(rng.standard_normal((400, 16)), [f"c{i % 4}" for i in range(400)])
    memory.search(rng.standard_normal(16), k=3)
    with Memory.open(memdir) as other:
        other.set_transform("center")
    shutil.rmtree(memdir / "index")
    memory.auto_refresh = False  # as the service runs: the write itself catches up, under its lock
    memory.set_prune_counts({ids[0]: 3})  # reload, rebuild, record the quality, then write
    assert memory.transform.spec.name == "center"
    assert memory.quality is not None and memory.quality.recall > 0.9
    with Memory.open(memdir) as fresh:
        assert fresh.get(ids[0]).prune_count == 3 and fresh.quality == memory.quality
    memory.close()


def memory_without_sevens(memdir):
    """Digits as unit vectors, their labels, and the positions of the other digits and of
    the 7s; makes a memory at `memdir` of the first 500 others."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.data / np.linalg.norm(digits.data, axis=1, keepdims=True)).astype(np.float32)
    y = digits.target.astype(str)
    old, new = np.flatnonzero(y != "7"), np.flatnonzero(y == "7")
    with Memory.create(memdir, encoder=None, dim=64) as memory:
        memory.add_vectors(x[old[:500]], y[old[:500]])
    return x, y, old, new


def test_prototypes_follow_what_a_write_caught_up_with(memdir):
    """A memory that catches up inside its writes (a server's, `auto_refresh` off) takes in
    another process's new class there: its prototypes decide with that class afterwards,
    as a fresh open does (they once kept the classes they were built from)."""
    x, y, old, new = memory_without_sevens(memdir)
    server = Memory.open(memdir)
    server.auto_refresh = False
    assert "7" not in {d.label for d in server.classify_vectors(x[new[100:120]], vote="prototype")}
    with Memory.open(memdir) as other:
        other.add_vectors(x[new[:100]], y[new[:100]])
    server.add_vectors(x[old[500:501]], y[old[500:501]])  # catches up with the 7s inside
    decided = [d.label for d in server.classify_vectors(x[new[100:120]], vote="prototype")]
    with Memory.open(memdir) as fresh:
        assert decided == [d.label for d in fresh.classify_vectors(x[new[100:120]], vote="prototype")]
    assert decided.count("7") >= 15
    server.close()


def test_a_write_that_fails_after_catching_up_leaves_prototypes_as_a_fresh_open_has_them(memdir, monkeypatch):
    """`compact` catches up (here with another process's new class), then cannot get the
    write lock that a third process holds: it fails, but what it caught up with stays, so the
    prototypes must follow it, as they do after a write that succeeds (they kept the
    classes they were built from)."""
    import vismem.waits

    x, y, old, new = memory_without_sevens(memdir)
    monkeypatch.setattr(vismem.waits, "BUSY_SECONDS", 1)
    server = Memory.open(memdir)
    server.auto_refresh = False
    assert "7" not in {d.label for d in server.classify_vectors(x[new[100:120]], vote="prototype")}
    with Memory.open(memdir) as other:
        other.add_vectors(x[new[:100]], y[new[:100]])
    holder = subprocess.Popen([sys.executable, "-c", HOLD_WRITE_LOCK, str(memdir / DB_NAME)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(MemoryBusyError):
            server.compact()
    finally:
        holder.communicate("")
    decided = [d.label for d in server.classify_vectors(x[new[100:120]], vote="prototype")]
    with Memory.open(memdir) as fresh:
        assert decided == [d.label for d in fresh.classify_vectors(x[new[100:120]], vote="prototype")]
    assert decided.count("7") >= 15
    server.close()


def test_an_add_committed_while_a_memory_compacts_is_caught_up_with(memdir, monkeypatch):
    """Another connection adds while `compact` runs (here: just before its VACUUM; a refit of
    the transform first can take minutes). The compacting memory once marked that commit
    as seen without taking it in, so it never searched those items, not even after its
    own next write."""
    memory, ids = make(memdir)
    memory.remove(ids[:5])
    vacuum = memory.store.db.vacuum
    with Memory.open(memdir) as other:
        def add_then_vacuum() -> None:
            other.add_vectors(unit_vectors(2, 8, 1), ["new", "new"])
            vacuum()
        monkeypatch.setattr(memory.store.db, "vacuum", add_then_vacuum)
        memory.compact()
    assert len(memory) == 27 and memory.class_counts()["new"] == 2
    assert memory.search(unit_vectors(2, 8, 1), k=1)[0][0].label == "new"
    memory.close()


@pytest.mark.parametrize("operation", ["tune_index", "purge", "set_index"])
def test_the_catalog_names_what_the_index_took_in_while_saving(memdir, operation):
    """A memory that does not catch up by itself (a server's) saves its index after
    replaying every commit into it first (so that a removal another process scrubbed is
    never written back). The catalog must follow the index: searches once found the other
    process's items and named them None."""
    memory = Memory.create(memdir, encoder=None, dim=8, index="hnsw")
    vectors = unit_vectors(300, 8, 0)
    ids = memory.add_vectors(vectors, ["old"] * 300)
    memory.auto_refresh = False
    memory.remove([ids[0]])
    new = unit_vectors(3, 8, 1)
    with Memory.open(memdir) as other:
        other.add_vectors(new, ["new"] * 3)
        other.remove([ids[-1]])
    if operation == "tune_index":
        memory.tune_index(unit_vectors(20, 8, 2))
    elif operation == "purge":  # the other process saved since this one's removal: the purge saves
        memory.purge()
    else:
        memory.set_index("hnsw", target_recall=0.9)
    found = memory.search(np.concatenate([new, vectors[-1:]]), k=1)
    assert [hits[0].label for hits in found] == ["new", "new", "new", "old"]
    assert found[3][0].id != ids[-1]
    memory.close()


def test_a_write_inside_a_write_is_a_savepoint_of_it(memdir):
    memory, _ = make(memdir)
    db = memory.store.db
    with db.write("outer") as outer:
        outer.execute("CREATE TABLE probe (x)")
        db.set_config({"probe_a": 1})  # nested: kept with the outer write
        with pytest.raises(ZeroDivisionError), db.write("inner"):
            db.set_config({"probe_b": 2})
            raise ZeroDivisionError  # undoes the inner write only
    assert db.config()["probe_a"] == 1 and "probe_b" not in db.config()
    with pytest.raises(ZeroDivisionError), db.write("outer"):
        db.set_config({"probe_c": 3})
        raise ZeroDivisionError  # undoes both
    assert "probe_c" not in db.config()
    memory.close()


def test_a_removal_is_purged_from_an_index_another_process_saved_since(memdir):
    """Saved rows are where the process that saved put them: after another process
    compacted and saved, scrubbing by this process's rows would zero a live neighbour and
    leave the removed vector. The index is saved whole instead."""
    rng = np.random.default_rng(0)
    with Memory.create(memdir, encoder=None, dim=16, index="hnsw") as memory:
        ids = memory.add_vectors(rng.standard_normal((300, 16)), [f"c{i % 3}" for i in range(300)])
    first, second = Memory.open(memdir), Memory.open(memdir)  # both load the same saved rows
    second.remove(ids[:10])
    second.compact()  # rows shift down by ten, and are saved so
    second.close()
    prints = fingerprints(first, [ids[50]])
    first.remove([ids[50]], purge=True)  # the saved files are not the ones it loaded
    # the index's files only, while `first` is open: opening SQLite's would drop its locks
    remnants, files, _ = find_remnants(memdir / "index", prints)
    assert files == 4 and remnants == []
    first.close()
    with Memory.open(memdir) as reopened:
        _, vectors = reopened.vectors(ids[51:52])
        assert reopened.search(vectors[0], k=1)[0][0].id == ids[51]  # its neighbour's row is intact
        assert len(reopened) == 289


EDITOR = """
import sys
import numpy as np
from vismem import Memory
from vismem.prune import PruneSettings
kind = int(sys.argv[2])
rng = np.random.default_rng(kind)
for i in range(int(sys.argv[3])):
    with Memory.open(sys.argv[1]) as memory:
        ids = memory.add_vectors(rng.standard_normal((3, 16)), [f"c{i % 5}"] * 3, metas=[{"by": kind}] * 3)
        if kind == 0:
            memory.relabel(ids[:1], "renamed")
            memory.set_weight(ids[1:2], 0.0)
        elif kind == 1:
            memory.set_prune_counts({ids[0]: 5})
            memory.update_settings(pruning=PruneSettings(mode="hard" if i % 2 else "off", threshold=2))
            memory.remove(ids[2:])
        elif i % 4 == 0:
            memory.compact()
        elif i % 4 == 2:  # refit the transform: the others reload, and may rebuild their index
            memory.set_transform("center" if i % 8 == 2 else "none")
"""


def test_an_hnsw_memory_read_while_other_processes_edit_it_in_every_way(memdir):
    """Saves of the index never interleave (two once raced on its temporary files), a
    catalog never lags the index it names neighbours for (a rebuild read a later state:
    a hit without a label), and a write's catch-up may rebuild the index."""
    rng = np.random.default_rng(0)
    rounds, processes = 12, 3
    with Memory.create(memdir, encoder=None, dim=16, index="hnsw") as memory:
        memory.add_vectors(rng.standard_normal((400, 16)), [f"c{i % 5}" for i in range(400)])
    memory = Memory.open(memdir)
    queries = rng.standard_normal((3, 16))
    with contextlib.ExitStack() as files:
        errors = [files.enter_context(tempfile.TemporaryFile("w+")) for _ in range(processes)]
        editors = [subprocess.Popen([sys.executable, "-c", EDITOR, str(memdir), str(kind), str(rounds)],
                                    stderr=errors[kind]) for kind in range(processes)]
        while any(editor.poll() is None for editor in editors):
            for hits in (memory.search(queries[0], k=5)[0], memory.search(queries[1], k=5, labels=["c1", "renamed"])[0],
                         memory.search(queries[2], k=5, where={"by": 1})[0]):
                assert all(hit.label is not None for hit in hits), hits
            assert all(decision.label is not None for decision in memory.classify_vectors(queries, k=7))
        for error in errors:
            error.seek(0)
        assert [editor.wait() for editor in editors] == [0] * processes, [error.read()[-3000:] for error in errors]
    memory.refresh()
    with Memory.open(memdir) as fresh:
        assert sorted(fresh.ids()) == sorted(memory.ids()) and len(fresh) == 400 + rounds * (3 + 2 + 3)
        assert [item.label for item in fresh.items(fresh.ids())] == [item.label for item in memory.items(fresh.ids())]
    memory.close()


def test_threads_sharing_a_memory_see_every_commit(memdir):
    """A pragma run while another thread's statement holds an older snapshot reads an older
    version. Paired with the newer WAL-index header, it would hide that commit for good; so
    once a second thread asks, every check asks SQLite (a commit hides only while the
    statement runs, as before the watch)."""
    memory, _ = make(memdir)
    db = memory.store.db
    assert not memory.is_stale()
    reader = threading.Thread(target=memory.is_stale)  # as the service's reader threads ask
    reader.start()
    reader.join()
    assert db._watch is None
    other = sqlite3.connect(memdir / DB_NAME, isolation_level=None)
    other.execute("CREATE TABLE probe (x)")
    memory.refresh()
    pending = db._db.execute("SELECT id FROM items")  # a statement in flight: an older snapshot
    pending.fetchone()
    other.execute("INSERT INTO probe VALUES (1)")
    memory.is_stale()  # asked inside that snapshot
    pending.fetchall()
    assert memory.is_stale()  # asked again now: seen
    other.close()
    memory.close()


@pytest.mark.parametrize("writer_saves", [False, True], ids=["saved-before", "saved-after"])
def test_an_item_added_and_removed_by_others_while_a_memory_opens_costs_no_rebuild(memdir, monkeypatch, caplog,
                                                                                   writer_saves):
    """The opener's catalog holds an item that another process removes, and purges, before
    the opener's index replays the log to the catalog's edit: no vector is left to replay.
    The index goes on to the newest edit and the catalog follows it, where the index was
    once rebuilt from scratch (minutes at 1M items). Whether the saved index is older than
    the catalog or newer (the writer saved it at its purge), the opener loads it."""
    rng = np.random.default_rng(0)
    with Memory.create(memdir, encoder=None, dim=16, index="hnsw") as memory:
        ids = memory.add_vectors(rng.standard_normal((300, 16)), [f"c{i % 3}" for i in range(300)])
    writer = Memory.open(memdir)
    [added] = writer.add_vectors(rng.standard_normal((1, 16)), ["new"])
    opening = ManagedIndex.open

    def open_while_others_remove(index, items, until=None):
        # between the opener's catalog snapshot, which holds `added`, and its index's replay
        if added in items and writer.store.db.last_edit() == until:
            writer.remove([added], purge=True)
            if writer_saves:
                writer.store._index.save_if_dirty()
            else:
                assert json.loads((memdir / "index" / "meta.json").read_text())["seq"] < until
        return opening(index, items, until)

    monkeypatch.setattr(ManagedIndex, "open", open_while_others_remove)
    with caplog.at_level(logging.INFO, logger="vismem"):
        reader = Memory.open(memdir)
    assert "rebuilding" not in caplog.text, caplog.text
    assert "caught up" in caplog.text or writer_saves
    monkeypatch.undo()
    assert added not in reader.ids() and len(reader) == 300 and reader.store.catalog.names([added])[0][0] is None
    _, vectors = reader.vectors(ids[:1])
    assert reader.search(vectors[0], k=1)[0][0].id == ids[0]
    [replacement] = reader.add_vectors(rng.standard_normal((1, 16)), ["next"])
    assert sorted(reader.ids()) == sorted([*ids, replacement])
    reader.close()
    writer.close()
    with Memory.open(memdir) as fresh:
        assert sorted(fresh.ids()) == sorted([*ids, replacement])


def test_adding_images_looks_up_known_content_on_a_connection_of_its_own(tmp_path, digits):
    """The pipeline hashes the next batch's files, and asks which contents are stored, in
    a thread while this one commits. Asked on this thread's connection, that lookup's open
    statement held a read transaction on it: a write begun meanwhile, after another
    process had committed, failed at once as "database is locked", reported as busy for
    120 s (a CLI writer beside the service, once in CI). No other thread may use it."""
    images, labels = digits
    folder = write_image_folder(tmp_path / "images", images, labels, list(range(24)))
    memory = Memory.create(tmp_path / "mem", encoder="pixels")
    main = threading.get_ident()
    elsewhere: list[str] = []
    memory.store.db._db.set_trace_callback(lambda sql: elsewhere.append(sql) if threading.get_ident() != main else None)
    first = memory.add_images([folder], batch_size=4)
    again = memory.add_images([folder], batch_size=4)  # every content known: found by the lookup
    _, kept, _ = memory.embed_images(sorted(folder.rglob("*.png"))[:6])  # reuses stored vectors
    memory.store.db._db.set_trace_callback(None)
    assert len(first.added) == 24 and len(again.added) == 0 and len(again.skipped) == 24 and len(kept) == 6
    assert all(s.reason.startswith("duplicate of item") for s in again.skipped)
    assert elsewhere == [], elsewhere[:3]
    memory.close()


def test_embedding_images_whose_stored_copy_another_process_removes_meanwhile(tmp_path, digits, monkeypatch):
    """Known contents take their stored vectors; one removed between the lookup and the
    read is read and encoded after all (it once took the next image's vector instead)."""
    images, labels = digits
    folder = write_image_folder(tmp_path / "images", images, labels, list(range(6)))
    files = sorted(folder.rglob("*.png"))
    memory = Memory.create(tmp_path / "mem", encoder="pixels")
    memory.add_images([folder])
    stored, _, _ = memory.embed_images(files)
    other = Memory.open(tmp_path / "mem")
    looking_up = memory.store.hash_lookup

    @contextlib.contextmanager
    def lookup_then_others_remove():
        with looking_up() as lookup:
            def answer(hashes):
                found = lookup(hashes)
                other.remove(sorted(found.values())[:3])
                return found
            yield answer

    monkeypatch.setattr(memory.store, "hash_lookup", lookup_then_others_remove)
    vectors, kept, skipped = memory.embed_images(files)
    assert kept == list(range(6)) and skipped == [] and len(memory) == 3
    assert np.allclose(vectors, stored, atol=1e-6)
    other.close()
    memory.close()

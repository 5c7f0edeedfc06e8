"""kill -9 in the middle of `vismem add` never corrupts the memory; removals are durable; an
interrupted `vismem import` into a directory leaves nothing there."""

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import HOLD_WRITE_LOCK, json_lines, run_cli_here, unit_vectors

from vismem import Memory
from vismem.store import DB_NAME


@pytest.mark.slow
def test_kill_9_during_add_keeps_every_committed_batch(tmp_path, digit_folders, cli):
    memdir = tmp_path / "mem"
    train, _ = digit_folders
    cli("create", memdir, "--encoder", "efficientnet_lite0", check=True)
    adding = subprocess.Popen(
        [sys.executable, "-m", "vismem", "add", str(memdir), str(train), "--batch-size", "4", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    committed: list[int] = []
    for line in adding.stdout:
        committed += json.loads(line)["ids"]
        if len(committed) >= 12:
            break
    adding.send_signal(signal.SIGKILL)  # mid-run: later batches are being encoded or written
    adding.wait()
    assert adding.returncode == -signal.SIGKILL

    db = sqlite3.connect(memdir / DB_NAME)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    items = {r[0] for r in db.execute("SELECT id FROM items")}
    vectors = {r[0] for r in db.execute("SELECT id FROM vectors")}
    thumbs = {r[0] for r in db.execute("SELECT id FROM thumbnails")}
    db.close()
    assert set(committed) <= items  # nothing committed is lost
    assert items == vectors == thumbs  # no partial item
    assert len(items) < 80  # the kill really did interrupt the run

    with Memory.open(memdir) as memory:
        ids, stored = memory.vectors()
        nearest = [row[0].id for row in memory.search(stored, k=1)]
        assert nearest == ids.tolist()  # the index agrees with the store
    finished = json.loads(cli("add", memdir, train, "--json", check=True).stdout.splitlines()[-1])
    assert finished["items"] == 80 and finished["added"] == 80 - len(items)


def _files_holding(directory, needle: bytes) -> list[str]:
    return sorted(p.name for p in directory.rglob("*") if p.is_file() and needle in p.read_bytes())


@pytest.mark.parametrize("index", ["exact", "hnsw"])
def test_removal_is_durable_once_it_returns_and_purged_at_the_next_close(tmp_path, index):
    memdir = tmp_path / "mem"
    vectors = unit_vectors(8, 64, seed=3)
    with Memory.create(memdir, encoder=None, dim=64, index=index) as memory:
        ids = memory.add_vectors(vectors, [str(i) for i in range(8)])
        stored = dict(zip(*memory.vectors(), strict=True))
    needles = [stored[i].tobytes() for i in ids[:3]]
    assert _files_holding(memdir, needles[0])  # positive control
    script = textwrap.dedent(f"""
        import os, signal
        from vismem import Memory
        memory = Memory.open({str(memdir)!r})
        memory.remove({ids[:3]!r})
        os.kill(os.getpid(), signal.SIGKILL)  # crash right after remove returns: no close, no purge
    """)
    crashed = subprocess.run([sys.executable, "-c", script])
    assert crashed.returncode == -signal.SIGKILL
    with Memory.open(memdir) as memory:
        assert len(memory) == 5
        assert not set(ids[:3]) & {h.id for h in memory.search(vectors, k=8)[0]}
    for needle in needles:  # the next process to close the memory purged what the crash left
        assert _files_holding(memdir, needle) == []


def _exported(tmp_path, n=600):
    """An export of n items with history (a relabel, a block), and the memory's answers."""
    origin = tmp_path / "origin"
    vectors = unit_vectors(n, 16, seed=5)
    with Memory.create(origin, encoder=None, dim=16) as memory:
        ids = memory.add_vectors(vectors, [str(i % 7) for i in range(n)])
        memory.relabel(ids[:3], "odd")
        memory.set_weight(ids[3:5], 0.0)
        expected = [[(h.label, round(h.distance, 5)) for h in row] for row in memory.search(vectors[:20], 5)]
        memory.export_parquet(tmp_path / "m.parquet")
    return tmp_path / "m.parquet", vectors, expected


def test_an_interrupted_import_into_a_directory_leaves_nothing_there(tmp_path):
    path, vectors, expected = _exported(tmp_path)
    dest = tmp_path / "copy"
    batches = []

    def interrupt(n):  # Ctrl-C after the first batch
        batches.append(n)
        raise KeyboardInterrupt

    from vismem.transfer import import_store

    with pytest.raises(KeyboardInterrupt):
        import_store(path, dest, batch=100, progress=interrupt)
    assert batches == [100]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.parquet", "origin"]  # no DEST, no leftovers

    dest.mkdir()  # an empty directory may be the destination
    with Memory.import_parquet(path, dest) as memory:
        assert len(memory) == 600
        assert [[(h.label, round(h.distance, 5)) for h in row] for row in memory.search(vectors[:20], 5)] == expected
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    from vismem.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="holds other files"):
        Memory.import_parquet(path, tmp_path / "busy")
    assert [p.name for p in (tmp_path / "busy").iterdir()] == ["notes.txt"]


def _kill_9_importing(path, dest) -> None:
    """Import the export at `path` into `dest` in another process, killed (SIGKILL) once
    its first batch of 100 is in."""
    script = textwrap.dedent(f"""
        import time
        from vismem.transfer import import_store

        def stall(n):
            print(n, flush=True)
            time.sleep(60)  # killed here, mid-import

        import_store({str(path)!r}, {str(dest)!r}, batch=100, progress=stall)
    """)
    importing = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert importing.stdout.readline().strip() == "100"
    importing.send_signal(signal.SIGKILL)
    importing.wait()


def test_kill_9_during_import_leaves_no_memory_and_the_next_import_cleans_up(tmp_path):
    path, vectors, expected = _exported(tmp_path)
    dest = tmp_path / "copy"
    _kill_9_importing(path, dest)
    assert not dest.exists()
    abandoned = [p for p in tmp_path.iterdir() if p.name.startswith(".copy.filling-")]
    assert len(abandoned) == 1  # the killed import's work, hidden beside DEST

    imported = run_cli_here("import", path, dest, "--json", check=True)  # the next import, in this process
    assert json.loads(imported.stdout)["imported"] == 600
    assert not abandoned[0].exists()
    with Memory.open(dest) as memory:
        assert [[(h.label, round(h.distance, 5)) for h in row] for row in memory.search(vectors[:20], 5)] == expected


def test_an_import_into_an_empty_directory_keeps_that_directory(tmp_path):
    """An empty DEST was removed and the filled memory renamed in its place: a shell inside
    it (`vismem import m.parquet .`) was left in a removed directory, where `vismem info .`
    found no memory, and a mount point (a container's volume) cannot be removed at all
    (a traceback, after all the work). The work is hidden inside DEST now; killed, it
    leaves no memory there, and the next import cleans it up."""
    path, vectors, expected = _exported(tmp_path)
    dest = tmp_path / "copy"
    dest.mkdir()
    inode = dest.stat().st_ino
    _kill_9_importing(path, dest)
    abandoned = list(dest.iterdir())
    assert [p.name.startswith(".filling-") for p in abandoned] == [True]  # hidden in DEST: no memory there
    assert not (dest / "memory.sqlite").exists()
    import os

    import vismem

    # run inside DEST, as a shell there would: this vismem, whatever PYTHONPATH says relative to here
    inside = {"cwd": dest, "env": {**os.environ, "PYTHONPATH": str(Path(vismem.__file__).parents[1])}}
    imported = subprocess.run([sys.executable, "-m", "vismem", "import", str(path), ".", "--json"],
                              capture_output=True, text=True, check=True, **inside)
    assert json.loads(imported.stdout)["imported"] == 600
    assert dest.stat().st_ino == inode and not abandoned[0].exists()
    assert not [p for p in tmp_path.iterdir() if ".filling-" in p.name]
    info = subprocess.run([sys.executable, "-m", "vismem", "info", ".", "--json"], capture_output=True, text=True,
                          check=True, **inside)
    assert json.loads(info.stdout)["items"] == 600
    with Memory.open(dest) as memory:
        assert [[(h.label, round(h.distance, 5)) for h in row] for row in memory.search(vectors[:20], 5)] == expected


# `vismem` with a real SIGINT (or the signal named in VISMEM_TEST_SIGNAL), sent when the
# first batch is reported (the progress bar's `advance`, as it moves Rich's bar). Caught by
# wrapping that one method, not by a profile hook (sys.setprofile), which ran a Python
# function at every call the command made and took 1-2 s of a 2-4 s run.
INTERRUPTED_AT_FIRST_BATCH = textwrap.dedent("""
    import os, signal, sys
    from rich.progress import Progress
    from vismem.cli import main

    # Ctrl-C reaches a foreground process, whose SIGINT raises KeyboardInterrupt. A shell
    # starts a background job (`pytest &`) with SIGINT ignored, and its children inherit
    # that: these tests then saw the command run to its end and exit 0.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    advance = Progress.advance

    def at_first_batch(self, task, advance_by=1):
        # from vismem's progress callback only, not from any other user of Rich's bars
        if sys._getframe(1).f_globals.get("__name__") == "vismem.progress":
            Progress.advance = advance
            os.kill(os.getpid(), getattr(signal, os.environ.get("VISMEM_TEST_SIGNAL", "SIGINT")))
        return advance(self, task, advance_by)

    Progress.advance = at_first_batch
    main(sys.argv[1:])
""")


def test_ctrl_c_during_an_import_says_nothing_was_made(tmp_path):
    """Ctrl-C said "every batch committed before this point is kept" for every command; an
    import keeps nothing, and an export writes no file."""
    path, _, _ = _exported(tmp_path)
    dest = tmp_path / "copy"
    for args, left in ((["import", str(path), str(dest)], f"nothing: no memory was made at {dest}"),
                       (["export", str(tmp_path / "origin"), str(tmp_path / "again.parquet")],
                        f"nothing: {tmp_path / 'again.parquet'} was not written")):
        run = subprocess.run([sys.executable, "-c", INTERRUPTED_AT_FIRST_BATCH, *args], capture_output=True, text=True)
        assert run.returncode == 130 and f"interrupted: {left}" in run.stderr, run.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.parquet", "origin"]


def test_ctrl_c_during_a_reindex_says_first_what_it_most_often_leaves(tmp_path):
    """The setting is committed before the rebuild, which takes nearly all the time, so a
    Ctrl-C mostly leaves the new setting and an index cut short; the message led with "the
    index setting is as it was", the rarer case. It leads with the common one now."""
    with Memory.create(tmp_path / "m", encoder=None, dim=16, index="exact") as memory:
        memory.add_vectors(unit_vectors(600, 16), [f"c{i % 3}" for i in range(600)])
    run = subprocess.run([sys.executable, "-c", INTERRUPTED_AT_FIRST_BATCH, "reindex", str(tmp_path / "m"),
                          "--index", "hnsw"], capture_output=True, text=True)
    assert run.returncode == 130, run.stderr
    assert run.stderr.splitlines()[-1].startswith(
        "interrupted: the new index setting is saved, and the index cut short is built when the memory is next "
        "opened"), run.stderr
    with Memory.open(tmp_path / "m") as memory:  # as it says
        assert memory.settings.index == "hnsw" and memory.info()["index"]["type"] == "hnsw"
        assert len(memory.search(unit_vectors(1, 16, seed=5), 3)[0]) == 3


# `vismem` with a real SIGINT (or VISMEM_TEST_SIGNAL), sent when the import opens the memory
# it has just moved into place (`EmbeddedStore.open` of DEST: the fill built the memory
# with `create`, beside DEST or hidden inside it)
INTERRUPTED_OPENING_DEST = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from vismem.cli import main
    from vismem.store.embedded import EmbeddedStore

    signal.signal(signal.SIGINT, signal.default_int_handler)  # (as INTERRUPTED_AT_FIRST_BATCH)
    dest = Path(sys.argv[-1]).resolve()
    opens = EmbeddedStore.open.__func__

    def opening_dest(cls, path):
        if Path(path).resolve() == dest:
            EmbeddedStore.open = classmethod(opens)
            print("opening", flush=True)
            os.kill(os.getpid(), getattr(signal, os.environ.get("VISMEM_TEST_SIGNAL", "SIGINT")))
        return opens(cls, path)

    EmbeddedStore.open = classmethod(opening_dest)
    main(sys.argv[1:])
""")


@pytest.mark.parametrize("signame, inside", [("SIGINT", False), ("SIGTERM", True)])
def test_an_import_stopped_while_it_opens_the_memory_it_made_says_it_was_made(tmp_path, signame, inside):
    """Stopped (Ctrl-C, SIGTERM) after the filled memory was moved into place, while it was
    being opened, `vismem import` said "nothing: no memory was made" of a memory that was
    there, whole. It says that it was made, and it was."""
    path, vectors, expected = _exported(tmp_path)
    dest = tmp_path / "copy"
    if inside:  # an empty directory: the work is hidden inside it, its files moved out when full
        dest.mkdir()
    run = subprocess.run([sys.executable, "-c", INTERRUPTED_OPENING_DEST, "import", str(path), str(dest)],
                         capture_output=True, text=True, env={**os.environ, "VISMEM_TEST_SIGNAL": signame})
    assert run.stdout.splitlines()[:1] == ["opening"], (run.stdout, run.stderr)
    stopped = "interrupted" if signame == "SIGINT" else "terminated"
    assert run.returncode == (130 if signame == "SIGINT" else 143), run.stderr
    assert run.stderr.splitlines()[-1] == f"{stopped}: the memory at {dest} is made, whole", run.stderr
    assert not [p for p in [*tmp_path.iterdir(), *dest.iterdir()] if ".filling-" in p.name]
    with Memory.open(dest) as memory:
        assert len(memory) == 600
        assert [[(h.label, round(h.distance, 5)) for h in row] for row in memory.search(vectors[:20], 5)] == expected


# `vismem` stopped by the signal named in VISMEM_TEST_SIGNAL (SIGKILL too) as an import
# moves the filled memory's files from its hidden directory into DEST, an empty directory:
# once the first of them is in DEST, before the rest
INTERRUPTED_MOVING_IN = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from vismem.cli import main

    signal.signal(signal.SIGINT, signal.default_int_handler)  # (as INTERRUPTED_AT_FIRST_BATCH)
    dest = Path(sys.argv[-1]).resolve()
    rename = os.rename

    def moving_in(source, target):
        rename(source, target)
        if Path(target).parent == dest and ".filling-" in Path(source).parent.name:
            os.rename = rename
            print("moved", Path(target).name, flush=True)
            os.kill(os.getpid(), getattr(signal, os.environ["VISMEM_TEST_SIGNAL"]))

    os.rename = moving_in
    main(sys.argv[1:])
""")


@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM", "SIGKILL"])
def test_an_import_stopped_while_it_moves_its_files_into_an_empty_directory_leaves_it_empty(tmp_path, signame):
    """Stopped while it moved the filled memory's files into DEST, an empty directory, an
    import left some of them there (no database: no memory, yet not empty), said that no
    memory was made, and the next import refused DEST as holding other files. Ctrl-C or
    SIGTERM there leaves DEST empty again, as it says; after kill -9, opening DEST says what
    happened, and the next import clears what was left and imports."""
    from vismem.errors import MemoryNotFoundError

    path, vectors, expected = _exported(tmp_path)
    dest = tmp_path / "copy"
    dest.mkdir()
    inode = dest.stat().st_ino
    run = subprocess.run([sys.executable, "-c", INTERRUPTED_MOVING_IN, "import", str(path), str(dest)],
                         capture_output=True, text=True, env={**os.environ, "VISMEM_TEST_SIGNAL": signame})
    assert run.stdout.startswith("moved "), (run.stdout, run.stderr)
    assert not (dest / DB_NAME).exists()
    if signame == "SIGKILL":
        assert run.returncode == -signal.SIGKILL
        with pytest.raises(MemoryNotFoundError, match=f"no memory at {dest}: an import into it was stopped"):
            Memory.open(dest)
    else:
        stopped = "interrupted" if signame == "SIGINT" else "terminated"
        assert run.returncode == (130 if signame == "SIGINT" else 143), run.stderr
        assert run.stderr.splitlines()[-1] == f"{stopped}: nothing: no memory was made at {dest}", run.stderr
        assert list(dest.iterdir()) == []  # as it was
    imported = run_cli_here("import", path, dest, "--json")
    assert imported.returncode == 0, imported.stderr
    assert json.loads(imported.stdout)["imported"] == 600
    assert dest.stat().st_ino == inode
    assert not [p for p in [*tmp_path.iterdir(), *dest.iterdir()] if ".filling-" in p.name]
    with Memory.open(dest) as memory:
        assert [[(h.label, round(h.distance, 5)) for h in row] for row in memory.search(vectors[:20], 5)] == expected


def test_ctrl_c_during_a_command_that_only_reads_says_no_item_changed(tmp_path):
    """A read-only command interrupted said that the batches it had committed were kept,
    as if it had written some: it says that it changed no item, and none changed."""
    memdir = tmp_path / "m"
    with Memory.create(memdir, encoder=None, dim=8) as memory:
        ids = memory.add_vectors(unit_vectors(300, 8, seed=3), [f"c{i % 3}" for i in range(300)])
    run = subprocess.run([sys.executable, "-c", INTERRUPTED_AT_FIRST_BATCH, "suspects", str(memdir)],
                         capture_output=True, text=True)
    assert run.returncode == 130, run.stderr
    assert "interrupted: no item was added, removed or changed: `vismem suspects` only reads the memory" \
        in run.stderr, run.stderr
    with Memory.open(memdir) as memory:
        assert memory.ids() == ids and memory.class_counts() == {"c0": 100, "c1": 100, "c2": 100}


def test_eval_protocols_stopped_says_what_it_wrote(tmp_path):
    """`eval-protocols` said "every batch committed before this point is kept", as if it
    had written to a memory: it changes none, and writes its report only at the end."""
    report = tmp_path / "report"
    run = subprocess.run([sys.executable, "-c", INTERRUPTED_AT_FIRST_BATCH, "eval-protocols", "incremental",
                          "--dataset", "digits:pixels", "--cache", str(tmp_path / "cache"), "--out", str(report)],
                         capture_output=True, text=True)
    assert run.returncode == 130, run.stderr
    assert run.stderr.splitlines()[-1] == f"interrupted: nothing: no memory was changed, and no report was " \
                                          f"written to {report}"
    assert not report.exists()
    np.save(tmp_path / "x.npy", unit_vectors(60, 8, seed=3))
    np.save(tmp_path / "y.npy", np.array([f"c{i % 3}" for i in range(60)]))
    closed = _with_stdout_closed("eval-protocols", "incremental", "--embeddings", str(tmp_path / "x.npy"),
                                 "--labels", str(tmp_path / "y.npy"), "--out", str(report), "--json")
    assert closed.returncode == 141, closed.stderr
    assert closed.stderr.splitlines()[-1] == ("stopped: the reader of stdout went away; the report written to "
                                              f"{report}; no memory was changed")
    assert (report / "report.json").exists()


def test_sigterm_stops_a_command_as_ctrl_c_does(tmp_path):
    """SIGTERM (`timeout`, a container's stop) ended the process at once, with no word and
    no cleanup: now the batches committed stay, the memory is closed as usual, and a line
    says so, with exit 143."""
    import os

    memdir = tmp_path / "m"
    np.save(tmp_path / "v.npy", unit_vectors(25_000, 8, seed=3))
    (tmp_path / "labels.txt").write_text("\n".join(f"c{i % 3}" for i in range(25_000)))
    Memory.create(memdir, encoder=None, dim=8).close()
    run = subprocess.run([sys.executable, "-c", INTERRUPTED_AT_FIRST_BATCH, "add-vectors", str(memdir), "--vectors",
                          str(tmp_path / "v.npy"), "--labels", str(tmp_path / "labels.txt")],
                         capture_output=True, text=True, env={**os.environ, "VISMEM_TEST_SIGNAL": "SIGTERM"})
    assert run.returncode == 143, run.stderr
    assert run.stderr.splitlines()[-1] == ("terminated: every batch committed before this point is kept; running "
                                           "the same command again adds only the rows still missing")
    with Memory.open(memdir) as memory:  # the first batch of 10,000, whole
        assert memory.ids() == list(range(1, 10_001))
    # run again as it says: it added every row again, the first 10,000 twice
    again = run_cli_here("add-vectors", str(memdir), "--vectors", str(tmp_path / "v.npy"), "--labels",
                         str(tmp_path / "labels.txt"), "--json", check=True)
    done = json.loads(again.stdout)
    assert done["added"] == 15_000 and done["skipped"] == 10_000 and done["items"] == 25_000
    assert done["skipped_rows"][:2] == [{"row": 0, "duplicate_of": 1}, {"row": 1, "duplicate_of": 2}]
    with Memory.open(memdir) as memory:  # each row held once, in file order
        ids, stored = memory.vectors()
        assert len(ids) == 25_000 and np.allclose(stored, np.load(tmp_path / "v.npy"), atol=1e-6)


def _catches_sigterm_and_sleeps(pid: int) -> tuple[bool, bool]:
    """Whether process `pid` has its SIGTERM handler in place (vismem's `main` sets it), and
    whether its main thread sleeps in the kernel, as SQLite's wait for a lock does (Linux)."""
    with open(f"/proc/{pid}/status") as status:
        caught = next(int(line.split()[1], 16) for line in status if line.startswith("SigCgt:"))
    try:
        with open(f"/proc/{pid}/wchan") as wchan:
            sleeping = "nanosleep" in wchan.read()
    except OSError:
        sleeping = True  # cannot tell: any moment before the commit serves
    return bool(caught & 1 << (signal.SIGTERM - 1)), sleeping


@pytest.mark.skipif(sys.platform != "linux", reason="reads the process's state in /proc")
@pytest.mark.parametrize("args, left", [
    (["remove", "--label", "c1"],
     "nothing: no item was removed (`vismem remove` removes its items in one transaction)"),
    (["relabel", "--id", "1", "--id", "2", "--label", "c9"],
     "nothing: no item was relabelled (`vismem relabel` changes its items in one transaction)"),
    (["block", "--id", "1"], "nothing: no item's weight was changed (it changes for all of them in one transaction)"),
])
def test_an_edit_stopped_before_its_one_transaction_says_nothing_changed(tmp_path, args, left):
    """SIGTERM to `vismem remove` (or relabel, block) while it waits for another process's
    write said "every batch committed before this point is kept", though it commits no
    batches and had changed nothing. It says that nothing changed, and nothing did."""
    memdir = tmp_path / "m"
    with Memory.create(memdir, encoder=None, dim=8) as memory:
        ids = memory.add_vectors(unit_vectors(300, 8, seed=3), [f"c{i % 3}" for i in range(300)])
        before = memory.items(ids)
    holder = subprocess.Popen([sys.executable, "-c", HOLD_WRITE_LOCK, str(memdir / DB_NAME)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        editing = subprocess.Popen([sys.executable, "-m", "vismem", args[0], str(memdir), *args[1:]],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        caught = waiting = False
        while not (caught and waiting) and editing.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
            caught, waiting = _catches_sigterm_and_sleeps(editing.pid)
        assert caught, "the command never set its SIGTERM handler"
        os.kill(editing.pid, signal.SIGTERM)  # it waits for the lock held above: nothing is committed yet
    finally:
        holder.communicate("")  # lets go of the lock: the command goes on, to the interrupt
    _, stderr = editing.communicate(timeout=120)
    assert editing.returncode == 143, stderr
    assert stderr.splitlines()[-1] == f"terminated: {left}"
    with Memory.open(memdir) as memory:
        assert memory.items(ids) == before


def test_a_removal_whose_report_cannot_be_written_says_it_was_committed(tmp_path):
    """The reader of stdout gone when `remove` reports: the removal is committed and purged."""
    memdir = tmp_path / "m"
    with Memory.create(memdir, encoder=None, dim=8) as memory:
        memory.add_vectors(unit_vectors(300, 8, seed=3), [f"c{i % 3}" for i in range(300)])
    removed = _with_stdout_closed("remove", str(memdir), "--label", "c1", "--json")
    assert removed.returncode == 141, removed.stderr
    assert removed.stderr.splitlines() == [
        f"stopped: the reader of stdout went away; the removal is committed; if this cut its purge short, copies "
        f"of the removed items' bytes may stay in {memdir}'s files until `vismem compact {memdir}`"]
    with Memory.open(memdir) as memory:
        assert memory.class_counts() == {"c0": 100, "c2": 100}


def _with_stdout_closed(*args: str) -> subprocess.CompletedProcess:
    """`vismem ARGS | head -0`: the reader of stdout has gone before the first line."""
    process = subprocess.Popen([sys.executable, "-m", "vismem", *args], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    process.stdout.close()
    stderr = process.stderr.read()
    return subprocess.CompletedProcess(args, process.wait(), "", stderr)


def test_a_closed_stdout_stops_the_command_saying_what_stays(tmp_path, digit_folders):
    """Click turned the broken pipe into a silent exit 1 ("error, nothing changed"), even
    after `add` had committed a batch: it is exit 141, as a shell reports SIGPIPE, with a
    line that says what stays, after the memory was closed as usual."""
    memdir = tmp_path / "vectors"
    with Memory.create(memdir, encoder=None, dim=8) as memory:
        ids = memory.add_vectors(unit_vectors(300, 8, seed=3), [f"c{i % 3}" for i in range(300)])
    np.save(tmp_path / "q.npy", unit_vectors(50, 8, seed=4))
    for args in (["search", memdir, "--queries", tmp_path / "q.npy", "--json"],
                 ["search", memdir, "--queries", tmp_path / "q.npy"]):  # Rich's console, too
        searched = _with_stdout_closed(*map(str, args))
        assert searched.returncode == 141 and "Traceback" not in searched.stderr, searched.stderr
        assert searched.stderr.splitlines() == ["stopped: the reader of stdout went away; no item was added, "
                                                "removed or changed: `vismem search` only reads the memory"]
    with Memory.open(memdir) as memory:
        assert memory.ids() == ids

    images = tmp_path / "images"
    Memory.create(images, encoder="pixels").close()
    added = _with_stdout_closed("add", str(images), str(digit_folders[0]), "--json")
    assert added.returncode == 141 and "Traceback" not in added.stderr, added.stderr
    assert added.stderr.splitlines()[-1] == ("stopped: the reader of stdout went away; every batch committed "
                                             "before this point is kept")
    with Memory.open(images) as memory:  # the first batch, reported as committed when the pipe was found closed
        assert 0 < len(memory) <= 80


# A `vismem prune` killed (SIGKILL) at a point of its work: as it writes its pruning setting
# (with the old code, after its counts and its --purge removals had been committed), or
# right after it returned, before the memory closed.
_PRUNE_KILLED = """
import os, signal, sys
from vismem import Memory
from vismem.curate import prune_memory
from vismem.store.sqlite import Database

at = sys.argv[2]
writes_config = Database.set_config
def set_config(self, values):
    if at == "setting" and values.get("settings", {}).get("pruning", {}).get("mode") == "hard":
        os.kill(os.getpid(), signal.SIGKILL)
    writes_config(self, values)
Database.set_config = set_config
memory = Memory.open(sys.argv[1])
prune_memory(memory, "hard", purge=True, count="wrong-decisions")
os.kill(os.getpid(), signal.SIGKILL)
"""


def _pruning_state(memdir, queries):
    """What a prune changes, and the classification that follows from it."""
    with Memory.open(memdir) as memory:
        ids, _, _, _, counts = memory.voting_arrays()
        decided = [(d.label, [n.id for n in d.neighbors]) for d in memory.classify_vectors(queries)]
        return memory.pruning, dict(zip(ids.tolist(), counts.tolist(), strict=True)), decided


@pytest.mark.parametrize("at, left", [("setting", "old"), ("returned", "new")])
def test_a_prune_killed_leaves_the_memory_as_it_was_or_pruned_whole(tmp_path, at, left):
    """`prune --mode hard --purge` committed its counts, its removals and its setting one
    after the other: killed between them, the new counts applied under the old setting (and
    the items were gone). It is one transaction now: killed before its commit, nothing of
    it stays; after it, all of it."""
    from vismem.curate import prune_memory

    rng = np.random.default_rng(7)
    centres = unit_vectors(3, 16, seed=1)
    labels = rng.integers(0, 3, 90)
    vectors = centres[labels] + 0.35 * rng.standard_normal((90, 16)).astype(np.float32)
    noisy = np.where(rng.random(90) < 0.15, (labels + 1) % 3, labels)  # some items mislabelled
    memdir, reference = tmp_path / "m", tmp_path / "reference"
    with Memory.create(memdir, encoder=None, dim=16, index="hnsw") as memory:
        memory.add_vectors(vectors, [f"c{i}" for i in noisy])
    queries = unit_vectors(40, 16, seed=9) + centres[np.arange(40) % 3]
    old = _pruning_state(memdir, queries)
    shutil.copytree(memdir, reference)
    with Memory.open(reference) as memory:  # the same prune, not interrupted
        report = prune_memory(memory, "hard", purge=True, count="wrong-decisions")
    assert 0 < len(report.purged) < 90
    new = _pruning_state(reference, queries)
    assert new != old  # the prune changes what the memory decides

    killed = subprocess.run([sys.executable, "-c", _PRUNE_KILLED, str(memdir), at], capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    db = sqlite3.connect(memdir / DB_NAME)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    db.close()
    assert _pruning_state(memdir, queries) == {"old": old, "new": new}[left]


# `vismem` with a real SIGINT sent from inside the store's write: VISMEM_TEST_AT is
# "METHOD:WHEN:N", e.g. "delete:after:1": once the first `EmbeddedStore.delete` has
# committed and returned to the command, or "insert:before:2": as the second batch's insert
# starts, the first one committed
INTERRUPTED_IN_STORE = textwrap.dedent("""
    import os, signal, sys
    from vismem.cli import main
    from vismem.store.embedded import EmbeddedStore

    signal.signal(signal.SIGINT, signal.default_int_handler)  # (as INTERRUPTED_AT_FIRST_BATCH)
    method, when, nth = os.environ["VISMEM_TEST_AT"].split(":")
    original = getattr(EmbeddedStore, method)
    calls = []

    def interrupted(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == int(nth) and when == "before":
            os.kill(os.getpid(), signal.SIGINT)
        result = original(self, *args, **kwargs)
        if len(calls) == int(nth) and when == "after":
            os.kill(os.getpid(), signal.SIGINT)
        return result

    setattr(EmbeddedStore, method, interrupted)
    main(sys.argv[1:])
""")


def _interrupted_in_store(at: str, *args) -> subprocess.CompletedProcess:
    run = subprocess.run([sys.executable, "-c", INTERRUPTED_IN_STORE, *map(str, args)], capture_output=True, text=True,
                         env={**os.environ, "VISMEM_TEST_AT": at})
    assert run.returncode == 130, (run.stdout, run.stderr)
    return run


@pytest.mark.parametrize("when", ["before", "after"])
def test_with_json_ctrl_c_at_a_removals_commit_says_what_committed(tmp_path, when):
    """Ctrl-C meeting `remove --json`'s commit (or `relabel`'s, `set-weight`'s) exited 130
    with nothing on stdout, where a purge cut off after it printed the report: a script
    could not tell whether the items were gone. One JSON line says what committed, and
    `unfinished` what stays."""
    path = tmp_path / "m"
    with Memory.create(path, encoder=None, dim=8, index="exact") as memory:
        ids = memory.add_vectors(unit_vectors(30, 8), ["a"] * 30)
    asked = [ids[0], ids[1], 999]
    run = _interrupted_in_store(f"delete:{when}:1", "remove", path, *[a for i in asked for a in ("--id", i)],
                                "--json")
    said = [json.loads(line) for line in run.stdout.splitlines()]
    with Memory.open(path) as memory:
        left = len(memory)
    if when == "before":
        assert said == [{"removed": 0, "ids": [], "unfinished": "interrupted: nothing: no item was removed "
                         "(`vismem remove` removes its items in one transaction)"}]
        assert left == 30
    else:
        assert len(said) == 1 and {k: said[0][k] for k in ("removed", "ids", "items")} == \
            {"removed": 2, "ids": ids[:2], "items": 28}
        assert said[0]["unfinished"].startswith("interrupted: the removal is committed")
        assert left == 28
    assert said[0]["unfinished"] in run.stderr

    for command, verb, *option in (("relabel", "relabelled", "--label", "b"), ("block", "blocked")):
        run = _interrupted_in_store(f"update:{when}:1", command, path, "--id", ids[5], "--id", ids[6], "--id", 999,
                                    *option, "--json")
        said = [json.loads(line) for line in run.stdout.splitlines()]
        assert len(said) == 1, run.stdout
        report = {k: v for k, v in said[0].items() if k not in ("unfinished", "weight")}
        assert report == ({verb: 0, "ids": []} if when == "before"
                          else {verb: 2, "ids": [ids[5], ids[6]], "missing": [999]}), said
        assert said[0]["unfinished"].startswith("interrupted: nothing" if when == "before"
                                                else "interrupted: the items")


def test_with_json_ctrl_c_between_batches_says_which_were_added(tmp_path, digit_folders):
    """`add --json` interrupted printed its batches' `committed` lines and stopped, with no
    line saying it was interrupted; `add-vectors --json` printed nothing at all. Each ends
    with a line saying what it committed, and `unfinished`."""
    train, _ = digit_folders
    path = tmp_path / "m"
    run_cli_here("create", path, "--encoder", "pixels", check=True)
    run = _interrupted_in_store("insert:before:2", "add", path, train, "--batch-size", "16", "--json")
    said = [json.loads(line) for line in run.stdout.splitlines()]
    assert [line["event"] for line in said] == ["committed", "interrupted"], run.stdout
    assert said[1]["ids"] == said[0]["ids"] and said[1]["added"] == 16
    assert said[1]["unfinished"] == "interrupted: every batch committed before this point is kept"
    with Memory.open(path) as memory:
        assert len(memory) == 16

    vectors = tmp_path / "x.npy"
    np.save(vectors, unit_vectors(12_000, 8))
    (tmp_path / "labels.txt").write_text("a\n" * 12_000)
    with Memory.create(tmp_path / "v", encoder=None, dim=8, index="exact"):
        pass
    run = _interrupted_in_store("insert:before:2", "add-vectors", tmp_path / "v", "--vectors", vectors,
                                "--labels", tmp_path / "labels.txt", "--json")
    said = [json.loads(line) for line in run.stdout.splitlines()]
    assert len(said) == 1 and said[0]["rows_done"] == 10_000, run.stdout
    assert said[0]["unfinished"].startswith("interrupted: every batch committed before this point is kept")
    with Memory.open(tmp_path / "v") as memory:
        assert len(memory) == 10_000


def test_with_json_add_vectors_cut_at_a_batchs_commit_reports_that_batch(tmp_path, monkeypatch):
    """`add-vectors --json` interrupted as a batch's COMMIT returned said `rows_done`
    without that batch (which "may also have been committed"), and no ids: a script could
    not tell which rows the memory held. The store marks the interrupt with what it added,
    and the report names every row done and every id added."""
    vectors, labels, memdir = tmp_path / "x.npy", tmp_path / "labels.txt", tmp_path / "m"
    np.save(vectors, unit_vectors(12_000, 8))
    labels.write_text("a\n" * 12_000)
    with Memory.create(memdir, encoder=None, dim=8, index="exact"):
        pass
    ignored = signal.signal(signal.SIGINT, signal.default_int_handler)  # (see test_search_index)
    try:
        _ctrl_c_as_commit_returns(monkeypatch, "adding", skip=1)  # at the second batch's commit
        run = run_cli_here("add-vectors", memdir, "--vectors", vectors, "--labels", labels, "--json")
    finally:
        signal.signal(signal.SIGINT, ignored)
    assert run.returncode == 130, run.stderr
    with Memory.open(memdir) as memory:
        held = memory.ids()
    said = json_lines(run)
    assert len(held) == 12_000 and len(said) == 1, run.stdout
    assert (said[0]["rows_done"], said[0]["added"], said[0]["ids"]) == (12_000, 12_000, held)


def test_with_json_an_interrupted_import_says_whether_it_made_the_memory(tmp_path):
    """`import --json` interrupted said nothing on stdout: it says `imported` 0, or every
    item once the memory is in place."""
    path, _, _ = _exported(tmp_path)
    run = subprocess.run([sys.executable, "-c", INTERRUPTED_AT_FIRST_BATCH, "import", str(path),
                          str(tmp_path / "copy"), "--json"], capture_output=True, text=True)
    assert run.returncode == 130, run.stderr
    assert [json.loads(line) for line in run.stdout.splitlines()] == [
        {"imported": 0, "file": str(path), "to": str(tmp_path / "copy"),
         "unfinished": f"interrupted: nothing: no memory was made at {tmp_path / 'copy'}"}]
    run = subprocess.run([sys.executable, "-c", INTERRUPTED_OPENING_DEST, "import", "--json", str(path),
                          str(tmp_path / "copy")], capture_output=True, text=True)
    assert run.returncode == 130, run.stderr
    said = [json.loads(line) for line in run.stdout.splitlines()[1:]]  # (after "opening")
    assert said == [{"imported": 600, "file": str(path), "to": str(tmp_path / "copy"),
                     "unfinished": f"interrupted: the memory at {tmp_path / 'copy'} is made, whole"}]



# INTERRUPTED_IN_STORE for many commands in one process (as `main` can run them, one after
# another), to spare a start of Python each: VISMEM_TEST_RUNS is a JSON list of [AT, ARGS];
# each command's stdout and stderr end with a line "--- EXIT", its exit status. AT's method
# may name its owner, `os.replace`, `Database.create` or `MilvusStore.x` (else EmbeddedStore's), and end with
# ":TEXT": then only calls whose first argument (a write's `_what`, not a nested one's) holds TEXT count
INTERRUPTED_IN_STORE_EACH = textwrap.dedent("""
    import json, os, signal, sys
    from vismem.cli import main
    from vismem.store.embedded import EmbeddedStore
    from vismem.store.milvus import MilvusStore
    from vismem.store.sqlite import Database, _Write

    signal.signal(signal.SIGINT, signal.default_int_handler)  # (as INTERRUPTED_AT_FIRST_BATCH)
    for at, args in json.loads(os.environ["VISMEM_TEST_RUNS"]):
        method, when, nth, *text = at.split(":")
        owner, _, method = method.rpartition(".")
        owner = {"": EmbeddedStore, "os": os, "Database": Database, "_Write": _Write, "MilvusStore": MilvusStore}[owner]
        original = getattr(owner, method)
        calls = []

        def interrupted(self, *a, _original=original, _when=when, _nth=int(nth), _text=text, **kw):
            if _text and (_text[0] not in str(getattr(self, "_what", self)) or getattr(self, "_nested", False)):
                return _original(self, *a, **kw)
            calls.append(1)
            if len(calls) == _nth and _when == "before":
                os.kill(os.getpid(), signal.SIGINT)
            result = _original(self, *a, **kw)
            if len(calls) == _nth and _when == "after":
                os.kill(os.getpid(), signal.SIGINT)
            return result

        setattr(owner, method, interrupted)
        try:
            main(args)
            code = 0
        except SystemExit as exc:
            code = exc.code
        finally:
            setattr(owner, method, original)
        for stream in (sys.stdout, sys.stderr):
            stream.write(f"--- {code}\\n")
            stream.flush()
""")


def _interrupted_in_store_each(*runs: tuple) -> list[dict]:
    """Each of `runs` (AT, ARG...) interrupted as `_interrupted_in_store` does, in one
    process: for each, the one JSON line it printed (its `unfinished` said on its stderr too)."""
    given = [[at, [str(a) for a in args]] for at, *args in runs]
    run = subprocess.run([sys.executable, "-c", INTERRUPTED_IN_STORE_EACH], capture_output=True, text=True,
                         env={**os.environ, "VISMEM_TEST_RUNS": json.dumps(given)})
    assert run.returncode == 0, run.stderr

    def each(text: str) -> list[tuple[list[str], str]]:
        ran, lines = [], []
        for line in text.splitlines():
            if line.startswith("--- "):
                ran.append((lines, line[4:]))
                lines = []
            else:
                lines.append(line)
        return ran

    found = []
    for asked, (out, code), (err, _) in zip(runs, each(run.stdout), each(run.stderr), strict=True):
        assert code == "130", (asked, out, err)
        lines = [json.loads(line) for line in out]
        assert len(lines) == 1 and lines[0]["unfinished"] in "\n".join(err), (asked, out, err)
        found.append(lines[0])
    return found

def test_with_json_ctrl_c_before_or_after_a_one_commit_edit_says_which(tmp_path):
    """`prune` and `rollback` interrupted printed only `unfinished`, and after their commit
    not what they did; `calibrate`, `reindex`, `checkpoint`, `delete-checkpoint` (and `tune`,
    `compact`...) printed no JSON line. Each prints its report as far as it committed:
    `committed` false before its one commit, its report and true after it (a Ctrl-C that
    lands after the store's commit is marked by it, `errors.committed`)."""
    path = tmp_path / "m"
    with Memory.create(path, encoder=None, dim=8, index="exact") as memory:
        memory.add_vectors(unit_vectors(30, 8), ["a"] * 15 + ["b"] * 15)
        memory.checkpoint("start")
        added = memory.add_vectors(unit_vectors(4, 8, seed=3), ["c"] * 4)
    returned = tmp_path / "r"  # (rolled back as the store's call returned, before any step marked it)
    shutil.copytree(path, returned)

    (pruned, pruned_now, calibrated, reindexed, back, back_now, back_returned, made, made_now,
     deleted) = _interrupted_in_store_each(
        ("save_pruning:before:1", "prune", path, "--mode", "soft", "--json"),
        ("_follow_index:before:1", "prune", path, "--mode", "soft", "--json"),
        ("_follow_index:before:1", "calibrate", path, "--k", "3", "--json"),
        ("save_settings:before:1", "reindex", path, "--index", "hnsw", "--json"),
        ("rollback:before:1", "rollback", path, "start", "--json"),
        ("_follow_index:before:1", "rollback", path, "start", "--json"),
        ("rollback:after:1", "rollback", returned, "start", "--json"),
        ("make_checkpoint:before:1", "checkpoint", path, "two", "--json"),
        ("make_checkpoint:after:1", "checkpoint", path, "two", "--json"),
        ("delete_checkpoint:after:1", "delete-checkpoint", path, "two", "--json"))
    assert pruned == {"mode": "soft", "purged": [], "committed": False, "unfinished": pruned["unfinished"]}
    assert pruned["unfinished"].startswith("interrupted: the memory's pruning is as it was")
    assert (pruned_now["committed"], pruned_now["mode"], pruned_now["items"]) == (True, "soft", 34), pruned_now
    assert calibrated["committed"] is True and calibrated["threshold"] > 0, calibrated
    assert calibrated["unfinished"] == "interrupted: the memory's new abstention threshold is saved"
    assert {k: reindexed[k] for k in ("setting", "committed")} == {"setting": "hnsw", "committed": False}
    assert back == {"checkpoint": "start", "removed_added": 0, "removed_ids": [], "restored": 0,
                    "restored_ids": [], "settings_restored": False, "unfinished": back["unfinished"]}
    assert (back_now["removed_ids"], back_now["items"], back_now["settings_restored"]) == (added, 30, True)
    assert back_now["unfinished"].startswith("interrupted: the memory is rolled back to 'start'")
    assert (back_returned["removed_added"], back_returned["removed_ids"], back_returned["items"]) == (4, added, 30)
    assert made == {"name": "two", "committed": False, "unfinished": made["unfinished"]}
    assert (made_now["name"], made_now["items"], made_now["committed"]) == ("two", 30, True), made_now
    assert deleted == {"deleted": "two", "unfinished": "interrupted: checkpoint 'two' is deleted"}
    with Memory.open(path) as memory:
        assert [c.name for c in memory.checkpoints()] == ["start"] and len(memory) == 30
        assert memory.settings.index == "exact"


def test_with_json_an_interrupted_create_says_whether_it_made_the_memory(tmp_path):
    """`create --json` interrupted printed no JSON line, and stopped before its database was
    renamed into place it left the directory it made, holding `memory.db.creating`. It says
    `created` false, leaving nothing, or true once the memory is there."""
    before, after, opening = _interrupted_in_store_each(
        ("os.replace:before:1:.creating", "create", tmp_path / "a", "--encoder", "none", "--dim", 8, "--json"),
        ("os.replace:after:1:.creating", "create", tmp_path / "b", "--encoder", "none", "--dim", 8, "--json"),
        ("Database.open:before:1", "create", tmp_path / "c", "--encoder", "none", "--dim", 8, "--json"))
    assert before == {"created": False, "path": str(tmp_path / "a"),
                      "unfinished": f"interrupted: nothing: no memory was made at {tmp_path / 'a'}"}
    assert not (tmp_path / "a").exists()
    for said, name in ((after, "b"), (opening, "c")):
        assert said == {"created": True, "path": str(tmp_path / name),
                        "unfinished": f"interrupted: the memory at {tmp_path / name} is made, empty"}
        with Memory.open(tmp_path / name) as memory:
            assert len(memory) == 0 and memory.dim == 8


def test_with_json_ctrl_c_as_a_settings_commit_returns_never_says_it_was_not_made(tmp_path):
    """Ctrl-C landing as the settings' COMMIT returned, before the store marked what
    followed it, printed `"committed": false` for a change that was saved. The store now
    tells a commit made (`Database.commits`): `reindex` and `calibrate` say true with their
    report; after the store's call, where no step marks it, a command says "unknown"."""
    path, other = tmp_path / "m", tmp_path / "o"  # (opened after an interrupted reindex, m rebuilds its index)
    for made in (path, other):
        with Memory.create(made, encoder=None, dim=8, index="exact") as memory:
            memory.add_vectors(unit_vectors(60, 8), ["a"] * 30 + ["b"] * 30)
    reindexed, calibrated, returned = _interrupted_in_store_each(
        ("_Write.__exit__:after:1:saving settings", "reindex", path, "--index", "hnsw", "--json"),
        ("_Write.__exit__:after:1:saving settings", "calibrate", other, "--k", "3", "--json"),
        ("save_settings:after:1", "calibrate", other, "--k", "5", "--json"))
    assert {k: reindexed[k] for k in ("setting", "committed")} == {"setting": "hnsw", "committed": True}
    assert calibrated["committed"] is True and calibrated["threshold"] > 0, calibrated
    assert calibrated["unfinished"] == "interrupted: the memory's new abstention threshold is saved"
    assert returned == {"committed": "unknown", "unfinished": returned["unfinished"]}
    assert returned["unfinished"].startswith("interrupted: not known")
    with Memory.open(path) as memory:
        assert memory.settings.index == "hnsw"
    with Memory.open(other) as memory:
        assert memory.settings.abstention.k == 5


def test_with_json_an_interrupted_record_queries_says_its_own_report(tmp_path):
    """`record-queries --json` interrupted after its settings commit printed the memory's
    whole settings (the store's mark), not its `{"keep", "kept"}`; landing as the store's
    call returned, where no step marks it, it said "unknown". It says its report, with
    `committed` true, and false before the commit."""
    path = tmp_path / "m"
    with Memory.create(path, encoder=None, dim=8, index="exact") as memory:
        memory.add_vectors(unit_vectors(20, 8), ["a"] * 10 + ["b"] * 10)
    before, as_committed, after, returned = _interrupted_in_store_each(
        ("save_settings:before:1", "record-queries", path, 50, "--json"),
        ("_Write.__exit__:after:1:saving settings", "record-queries", path, 60, "--json"),
        ("_follow_index:before:1", "record-queries", path, 70, "--json"),
        ("save_settings:after:1", "record-queries", path, 80, "--json"))
    assert {k: v for k, v in before.items() if k != "unfinished"} == {"committed": False}
    for said, keep in ((as_committed, 60), (after, 70), (returned, 80)):
        assert {k: v for k, v in said.items() if k != "unfinished"} == {"keep": keep, "kept": 0, "committed": True}
    with Memory.open(path) as memory:
        assert memory.settings.record_queries == 80


def test_with_json_ctrl_c_after_compact_or_tune_index_committed_says_true(tmp_path):
    """`compact` and `tune-index` marked no Ctrl-C after their commit (the store's call
    returned plain dicts, which the CLI did not carry): one landing there said
    `"committed": "unknown"`. They say true with their report, and false before it."""
    paths = [tmp_path / name for name in ("c", "t")]
    for made in paths:
        with Memory.create(made, encoder=None, dim=8, index="hnsw") as memory:
            ids = memory.add_vectors(unit_vectors(400, 8), ["a"] * 200 + ["b"] * 200)
            memory.remove(ids[:60])
    queries = tmp_path / "q.npy"
    np.save(queries, unit_vectors(50, 8, seed=9))
    compacted_not, compacted, tuned_not, tuned = _interrupted_in_store_each(
        ("compact:before:1", "compact", paths[0], "--json"),
        ("_follow_index:before:1", "compact", paths[0], "--json"),
        ("tune_index:before:1", "tune-index", paths[1], "--queries", queries, "--json"),
        ("_follow_index:before:1", "tune-index", paths[1], "--queries", queries, "--json"))
    for said in (compacted_not, tuned_not):
        assert {k: v for k, v in said.items() if k != "unfinished"} == {"committed": False}
    assert (compacted["committed"], compacted["reclaimed"], compacted["tombstones"]) == (True, 60, 0), compacted
    assert (tuned["committed"], tuned["held_left_out"], tuned["quality"]["sample"]) == (True, 0, 50), tuned
    assert tuned["quality"]["measured_on"] == "given queries"
    assert compacted["unfinished"] == "interrupted: no item was added, removed or changed: the memory is compacted"
    assert tuned["unfinished"].endswith("the search effort is tuned and saved")
    with Memory.open(paths[1]) as memory:
        assert memory.info()["index"]["quality"]["sample"] == 50


def test_with_json_ctrl_c_as_a_prunes_commit_returns_says_what_it_pruned(tmp_path):
    """`prune --json` interrupted as its commit returned (in SQLite's COMMIT, or as the
    store's call returned), before any step marked it, printed `"committed": false` for a
    prune that was saved, its items deleted. It says true with its report, the ids it
    deleted among them."""
    from vismem.curate import prune_memory

    rng = np.random.default_rng(7)  # (as test_a_prune_killed_leaves_the_memory_as_it_was_or_pruned_whole)
    centres = unit_vectors(3, 16, seed=1)
    labels = rng.integers(0, 3, 90)
    vectors = centres[labels] + 0.35 * rng.standard_normal((90, 16)).astype(np.float32)
    noisy = np.where(rng.random(90) < 0.15, (labels + 1) % 3, labels)
    paths = [tmp_path / name for name in ("reference", "a", "b")]
    with Memory.create(paths[0], encoder=None, dim=16, index="hnsw") as memory:
        memory.add_vectors(vectors, [f"c{i}" for i in noisy])
    for copy in paths[1:]:
        shutil.copytree(paths[0], copy)
    with Memory.open(paths[0]) as memory:  # the same prune, not interrupted
        report = prune_memory(memory, "hard", purge=True, count="wrong-decisions")
    assert 0 < len(report.purged) < 90
    options = ("--mode", "hard", "--purge", "--count", "wrong-decisions", "--json")
    committing, returned = _interrupted_in_store_each(
        ("_Write.__exit__:after:1:saving the pruning", "prune", paths[1], *options),
        ("save_pruning:after:1", "prune", paths[2], *options))
    for said, path in ((committing, paths[1]), (returned, paths[2])):
        assert said["committed"] is True, said
        assert {k: said[k] for k in ("mode", "purged", "items", "threshold")} == \
            {"mode": "hard", "purged": report.purged, "items": 90, "threshold": report.threshold}
        with Memory.open(path) as memory:
            assert len(memory) == 90 - len(report.purged) and memory.pruning.mode == "hard"




def test_ctrl_c_as_a_removals_commit_returns_still_purges_every_file(tmp_path):
    """Ctrl-C landing as a removal's COMMIT returned (`remove`, a hard `prune --purge`, a
    `rollback` past added items), before the store took the items out of its catalog and
    index, left it unaware of the removal: its close neither scrubbed the saved index nor
    purged the database, so the removed items' vectors stayed in index.faiss (and, with
    another connection open, in memory.sqlite) until the next purge, and `remove --json`
    said the memory still held them. The store follows a commit it made, and closing purges."""
    from vismem.curate import prune_memory
    from vismem.remnants import find_remnants, fingerprints

    rng = np.random.default_rng(7)  # (as test_with_json_ctrl_c_as_a_prunes_commit_returns_says_what_it_pruned)
    labels = rng.integers(0, 3, 300)
    vectors = unit_vectors(3, 32, seed=1)[labels] + 0.35 * rng.standard_normal((300, 32)).astype(np.float32)
    noisy = np.where(rng.random(300) < 0.15, (labels + 1) % 3, labels)
    paths = [tmp_path / name for name in ("reference", "removed", "pruned", "rolled")]
    with Memory.create(paths[0], encoder=None, dim=32, index="hnsw") as memory:
        ids = memory.add_vectors(vectors, [f"c{i}" for i in noisy])
    for copy in paths[1:]:
        shutil.copytree(paths[0], copy)
    with Memory.open(paths[0]) as memory:  # the prune, not interrupted: which items it deletes
        purged = prune_memory(memory, "hard", purge=True, count="wrong-decisions").purged
    with Memory.open(paths[3]) as memory:
        memory.remove(ids[260:])
        memory.checkpoint("start")
        added = memory.add_vectors(vectors[260:], ["c0"] * 40)
    gone = {paths[1]: ids[:40], paths[2]: purged, paths[3]: added}
    prints = {}
    for path, targets in gone.items():
        with Memory.open(path) as memory:
            prints[path] = fingerprints(memory, targets)
        assert find_remnants(path, prints[path])[0]  # positive control
    # another connection open (a server's, a reader's): the command's close leaves the log to it, unpurged
    holders = [sqlite3.connect(path / DB_NAME) for path in gone]
    for holder in holders:
        holder.execute("SELECT COUNT(*) FROM items").fetchone()  # (a read attaches it to the log)
    try:
        removed, pruned, rolled = _interrupted_in_store_each(
            ("_Write.__exit__:after:1:removing", "remove", paths[1], *[a for i in ids[:40] for a in ("--id", i)],
             "--json"),
            ("_Write.__exit__:after:1:saving the pruning", "prune", paths[2], "--mode", "hard", "--purge",
             "--count", "wrong-decisions", "--json"),
            ("_Write.__exit__:after:1:rolling back", "rollback", paths[3], "start", "--json"))
        for path in gone:  # before any other process opens it
            assert find_remnants(path, prints[path])[0] == [], path
    finally:
        for holder in holders:
            holder.close()
    assert (removed["removed"], removed["ids"], removed["items"]) == (40, ids[:40], 260), removed
    assert pruned["committed"] is True and pruned["purged"] == purged, pruned
    assert rolled["unfinished"].startswith("interrupted: the memory is rolled back to 'start'"), rolled
    # what it did, not the report as it was before its commit (0 removed)
    assert (rolled["removed_added"], rolled["removed_ids"], rolled["items"]) == (40, added, 260), rolled
    for path, targets in gone.items():
        with Memory.open(path) as memory:
            assert len(memory) == 300 - len(targets)
            assert not set(targets) & {h.id for h in memory.search(vectors[:50], k=10)[0]}


def _ctrl_c_as_commit_returns(monkeypatch, what: str, *, skip: int = 0) -> None:
    """The next write whose name holds `what` (after `skip` of them) is interrupted by a
    real SIGINT (Ctrl-C) delivered just after its COMMIT returned, before the store's next
    step. The test sets SIGINT's default handler (pytest may run with it ignored: see
    test_search_index)."""
    from vismem.store.sqlite import _Write

    original = _Write.__exit__
    passed = []

    def exit_then_interrupt(self, *args):
        result = original(self, *args)
        if what in self._what and not self._nested and args[0] is None and len(passed) < skip:
            passed.append(self._what)
        elif what in self._what and not self._nested and args[0] is None:
            monkeypatch.setattr(_Write, "__exit__", original)
            os.kill(os.getpid(), signal.SIGINT)  # as a real Ctrl-C, delivered here
        return result

    monkeypatch.setattr(_Write, "__exit__", exit_then_interrupt)


def test_ctrl_c_as_an_add_or_an_updates_commit_returns_leaves_the_memory_in_step(tmp_path, monkeypatch, caplog):
    """Ctrl-C landing as an add's COMMIT returned (or a relabel's, a block's), before the
    store put the items into its catalog and index, left the Memory object unaware of
    them: a Python user who caught the KeyboardInterrupt and searched on missed the added
    items and saw the old labels, and the next edit skipped past the commit, so the object
    never saw it (its saved index then did not match the store, rebuilt at the next open).
    The store follows a commit it made, as after a removal."""
    def ctrl_c_as_commit_returns(what: str) -> None:
        _ctrl_c_as_commit_returns(monkeypatch, what)

    ignored = signal.signal(signal.SIGINT, signal.default_int_handler)  # (see test_search_index)
    vectors = unit_vectors(40, 16, seed=4)
    path = tmp_path / "m"
    try:
        with Memory.create(path, encoder=None, dim=16, index="hnsw") as memory:
            ids = memory.add_vectors(vectors[:20], ["a"] * 20)
            ctrl_c_as_commit_returns("adding")
            with pytest.raises(KeyboardInterrupt):
                memory.add_vectors(vectors[20:30], ["b"] * 10)
            added = list(range(ids[-1] + 1, ids[-1] + 11))
            assert len(memory) == 30 and memory.ids()[-10:] == added
            assert [row[0].id for row in memory.search(vectors[20:30], k=1)] == added
            ctrl_c_as_commit_returns("updating")
            with pytest.raises(KeyboardInterrupt):
                memory.relabel(ids[:3], "z")
            assert [row[0].label for row in memory.search(vectors[:3], k=1)] == ["z"] * 3
            ctrl_c_as_commit_returns("updating")
            with pytest.raises(KeyboardInterrupt):
                memory.set_weight(added, 0.0)  # blocked: they vote no more
            assert all(d.label != "b" for d in memory.classify_vectors(vectors[20:30], k=3))
            memory.add_vectors(vectors[30:], ["c"] * 10)
            assert len(memory) == 40
    finally:
        signal.signal(signal.SIGINT, ignored)
    caplog.clear()
    with Memory.open(path) as memory:  # nothing to rebuild: the saved index holds what the store does
        assert len(memory) == 40 and "saved index unusable" not in caplog.text
        assert [row[0].label for row in memory.search(vectors[:3], k=1)] == ["z"] * 3
        assert {item.weight for item in memory.items(added)} == {0.0}


def test_ctrl_c_as_set_prune_counts_commit_returns_leaves_the_memory_in_step(tmp_path, monkeypatch):
    """Ctrl-C landing as `Memory.set_prune_counts`'s COMMIT returned, before the store put
    the counts into its catalog, left the Memory object unaware of them: under hard
    pruning a caller who caught the KeyboardInterrupt still found the items the counts
    prune in every search, and went on finding them after the next edit (a weight), which
    skipped past the commit. The store follows the commit, as after an add."""
    from vismem.prune import PruneSettings

    ignored = signal.signal(signal.SIGINT, signal.default_int_handler)  # (see test_search_index)
    vectors = unit_vectors(20, 16, seed=4)
    path = tmp_path / "m"
    try:
        with Memory.create(path, encoder=None, dim=16, index="exact") as memory:
            ids = memory.add_vectors(vectors, ["a"] * 10 + ["b"] * 10)
            memory.update_settings(pruning=PruneSettings(mode="hard", threshold=1))
            _ctrl_c_as_commit_returns(monkeypatch, "pruning counts")
            with pytest.raises(KeyboardInterrupt):
                memory.set_prune_counts({i: 5 for i in ids[:10]})
            found = {hit.id for row in memory.search(vectors, k=3) for hit in row}
            assert found and not found & set(ids[:10])
            memory.set_weight(ids[15:16], 2.0)
            assert not {hit.id for row in memory.search(vectors, k=3) for hit in row} & set(ids[:10])
    finally:
        signal.signal(signal.SIGINT, ignored)
    with Memory.open(path) as memory:
        assert {item.prune_count for item in memory.items(ids[:10])} == {5}
        assert not {hit.id for row in memory.search(vectors, k=3) for hit in row} & set(ids[:10])


def test_ctrl_c_as_recorded_queries_commit_returns_saves_them_once(tmp_path, monkeypatch):
    """Ctrl-C landing as the write of the recorded queries returned from its COMMIT put
    them back in RAM all the same, for the next write: the saved sample held each of them
    twice and counted them twice as seen. Queries go back only where the commit was not made."""
    ignored = signal.signal(signal.SIGINT, signal.default_int_handler)  # (see test_search_index)
    vectors = unit_vectors(35, 16, seed=5)
    path = tmp_path / "m"
    try:
        with Memory.create(path, encoder=None, dim=16, index="exact") as memory:
            memory.add_vectors(vectors[:20], ["a"] * 20)
            memory.record_queries(100)
            memory.search(vectors[20:30], k=3)
            _ctrl_c_as_commit_returns(monkeypatch, "recording queries")
            with pytest.raises(KeyboardInterrupt):
                memory.write_recorded_queries()
            memory.search(vectors[30:], k=3)  # written as the memory closes
    finally:
        signal.signal(signal.SIGINT, ignored)
    with Memory.open(path) as memory:
        kept = memory.store.db.recorded_queries(16)
        assert memory.store.db._recorded_seen() == 15
    assert sorted(np.argmax(kept @ vectors[20:].T, axis=1).tolist()) == list(range(15))  # each once


@pytest.mark.parametrize("deleting", [{"clear": True}, {"keep": 4}], ids=["cleared", "fewer kept"])
def test_ctrl_c_as_deleting_recorded_queries_commits_leaves_their_purge_to_the_close(tmp_path, monkeypatch, deleting):
    """Ctrl-C landing as the deletion of recorded queries (cleared, or fewer kept)
    returned from its COMMIT skipped the purge after it, and the close did not purge: with
    another process's connection open (a server beside), older copies of the deleted
    queries stayed in the database's WAL. The store counts as unpurged until that purge has run."""
    from test_search_recall import files_holding

    ignored = signal.signal(signal.SIGINT, signal.default_int_handler)  # (see test_search_index)
    vectors = unit_vectors(30, 16, seed=6)
    path = tmp_path / "m"
    with Memory.create(path, encoder=None, dim=16, index="exact") as memory:
        memory.add_vectors(vectors[:20], ["a"] * 20)
        memory.record_queries(100)
    with Memory.open(path) as beside:
        try:
            with Memory.open(path) as memory:
                memory.search(vectors[20:], k=3)
                memory.write_recorded_queries()
                asked = memory.store.db.recorded_queries(16)
                assert len(asked) == 10 and files_holding(path, asked)  # (a positive control)
                _ctrl_c_as_commit_returns(monkeypatch, "deleting recorded queries")
                with pytest.raises(KeyboardInterrupt):
                    memory.record_queries(**deleting)
        finally:
            signal.signal(signal.SIGINT, ignored)
        kept = {bytes(v) for v in beside.store.db.recorded_queries(16)}
        deleted = np.array([v for v in asked if bytes(v) not in kept])
        assert len(kept) == deleting.get("keep", 0) and files_holding(path, deleted) == []


def test_with_json_ctrl_c_as_an_adds_batch_commit_returns_reports_that_batch(tmp_path, digit_folders, monkeypatch):
    """`add --json` interrupted as a batch's COMMIT returned, before the store handed its
    ids back, closed with an `interrupted` line whose `ids` left that batch out (and no
    `committed` line named it), although the memory held it: a script that trusted the
    report missed items it had added. The store marks the interrupt with what it added,
    and the batch is reported as committed, as `on_commit` promises."""
    memdir = tmp_path / "m"
    run_cli_here("create", memdir, "--encoder", "pixels", check=True)
    ignored = signal.signal(signal.SIGINT, signal.default_int_handler)  # (see test_search_index)
    try:
        _ctrl_c_as_commit_returns(monkeypatch, "adding", skip=1)  # at the second batch's commit
        added = run_cli_here("add", memdir, digit_folders[0], "--batch-size", "16", "--json")
    finally:
        signal.signal(signal.SIGINT, ignored)
    assert added.returncode == 130, added.stderr
    *batches, last = json_lines(added)
    with Memory.open(memdir) as memory:
        held = memory.ids()
    assert len(held) == 32  # the second batch committed
    assert last["event"] == "interrupted" and (last["added"], last["ids"]) == (32, held), last
    assert [i for batch in batches for i in batch["ids"]] == held

"""What real storage does to a memory: several writers at once, read-only media, a full
disk. Each runs the real CLI in real processes on real files."""

from __future__ import annotations

import json
import logging
import os
import shutil
import sqlite3
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import json_lines, on_terminal, run_cli_unprivileged, unprivileged

from vismem import Memory
from vismem.datasets import load_digits_images, write_image_folder
from vismem.errors import InvalidInputError, MemoryBusyError
from vismem.store.sqlite import storage_error
from vismem.vectors import unit_rows

ROOT = os.geteuid() == 0 if hasattr(os, "geteuid") else False


def _can(*command: str) -> bool:
    try:
        return subprocess.run(command, capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


CAN_MOUNT = ROOT and shutil.which("unshare") is not None and _can("unshare", "-m", "true")
needs_mounts = pytest.mark.skipif(not CAN_MOUNT, reason="needs root and `unshare -m` (private mounts)")


def in_private_mounts(script: str, **variables: object) -> subprocess.CompletedProcess:
    """Run a shell script in a private mount namespace (its mounts vanish with it), with
    $PYTHON and the given variables set."""
    return shell(script, private_mounts=True, **variables)


def shell(script: str, *, private_mounts: bool = False, **variables: object) -> subprocess.CompletedProcess:
    command = ["unshare", "-m", "sh", "-ec", script] if private_mounts else ["sh", "-ec", script]
    env = {**os.environ, "PYTHON": sys.executable, **{k: str(v) for k, v in variables.items()}}
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)


@pytest.fixture(scope="module")
def digit_images(tmp_path_factory) -> Path:
    """300 distinct real digit images, labelled by subfolder."""
    images, labels = load_digits_images()
    root = tmp_path_factory.mktemp("digits300")
    return write_image_folder(root / "all", images, labels, np.arange(300))


def folder_of(source: Path, dest: Path, files: list[Path]) -> Path:
    for f in files:
        target = dest / f.parent.name / f.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(f, target)
    return dest


def live_hashes(memdir: Path) -> list[str]:
    db = sqlite3.connect(memdir / "memory.sqlite")
    try:
        return [row[0] for row in db.execute("SELECT content_hash FROM items")]
    finally:
        db.close()


@pytest.mark.slow
@pytest.mark.parametrize("writers", [2, 4])
def test_concurrent_writers_add_each_image_once(tmp_path, digit_images, cli, writers):
    files = sorted(digit_images.rglob("*.png"))
    first = folder_of(digit_images, tmp_path / "first", files[:200])
    second = folder_of(digit_images, tmp_path / "second", files[100:])  # overlaps the first by 100
    memdir = tmp_path / "mem"
    cli("create", memdir, "--encoder", "pixels", check=True)
    folders = [first, first] if writers == 2 else [first, first, second, second]
    runs = [subprocess.Popen([sys.executable, "-m", "vismem", "add", str(memdir), str(folder), "--batch-size", "16",
                              "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for folder in folders]
    outputs = [run.communicate(timeout=600) for run in runs]
    assert all(run.returncode == 0 for run in runs), [o[1][-500:] for o in outputs]
    distinct = 200 if writers == 2 else 300
    hashes = live_hashes(memdir)
    assert len(hashes) == len(set(hashes)) == distinct  # no duplicate content, nothing lost
    summaries = [json.loads(out.splitlines()[-1]) for out, _ in outputs]
    assert sum(s["added"] for s in summaries) == distinct
    assert all(s["added"] + s["skipped"] == 200 for s in summaries)  # every image accounted for
    assert all(s["items"] >= s["added"] for s in summaries)  # summaries describe the memory after commit
    info = json_lines(cli("info", memdir, "--json", check=True))[0]
    assert info["items"] == distinct and info["index"]["warning"] is None
    assert info["index"]["quality"] is None or info["index"]["quality"]["recall"] == 1.0


def test_vectors_are_stored_as_numpy_normalises_them_one_or_many_at_a_time(tmp_path):
    vectors = np.random.default_rng(3).standard_normal((40, 256)).astype(np.float32)
    expected = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    with Memory.create(tmp_path / "m", encoder=None, dim=256) as memory:
        one_by_one = [memory.add_vectors(v[None], ["a"])[0] for v in vectors]  # the single-row path
        together = memory.add_vectors(vectors, ["a"] * 40)
        for ids in (one_by_one, together):
            _, stored = memory.vectors(ids)
            assert stored.view(np.uint32).tolist() == expected.view(np.uint32).tolist()  # the same bits


def test_one_query_is_searched_as_it_would_be_in_a_batch(tmp_path):
    """A single query's norm is summed by BLAS (its own fast path), a batch's as numpy sums it."""
    rng = np.random.default_rng(4)
    queries = 3 * rng.standard_normal((20, 64)).astype(np.float32)
    with Memory.create(tmp_path / "m", encoder=None, dim=64) as memory:
        memory.add_vectors(rng.standard_normal((300, 64)), [f"c{i % 7}" for i in range(300)])
        together = memory.search(queries, k=5)
        for query, batch_hits in zip(queries, together, strict=True):
            alone = memory.search(query, k=5)[0]
            assert [hit.id for hit in alone] == [hit.id for hit in batch_hits]
            assert [hit.distance for hit in alone] == pytest.approx([hit.distance for hit in batch_hits], abs=1e-6)
            assert np.linalg.norm(unit_rows(query, memory.dim, queries=True)) == pytest.approx(1, abs=1e-6)


def test_vectors_of_any_finite_scale_are_normalised(tmp_path):
    direction = np.array([3.0, 4.0, 0.0, 0.0])
    with Memory.create(tmp_path / "m", encoder=None, dim=4) as memory:
        ids = memory.add_vectors(np.stack([direction * s for s in (1e-30, 1.0, 1e30)]), ["tiny", "one", "huge"])
        _, stored = memory.vectors(ids)
        np.testing.assert_allclose(stored, np.tile([0.6, 0.8, 0.0, 0.0], (3, 1)), rtol=1e-6)
        for scale in (1e-30, 1e30, 1e200):  # their squares underflow or overflow float32
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # and nothing warns of it
                hits = memory.search(direction * scale, k=3)[0]
                # float64 past float32's range: it was cast to inf first ("NaN or infinity", with a warning)
                added = memory.add_vectors(np.stack([direction * scale] * 2), ["scaled"] * 2)
            assert [hit.distance for hit in hits] == pytest.approx([0, 0, 0], abs=1e-6)
            np.testing.assert_allclose(memory.vectors(added)[1], np.tile([0.6, 0.8, 0, 0], (2, 1)), rtol=1e-6)
            memory.remove(added)
        for bad, message in ((np.zeros(4), "all zeros"), (np.array([np.nan, 1.0, 0, 0]), "finite"),
                             (np.array([np.inf, 0, 0, 0]), "finite"), (np.array([-np.inf, 1.0, 0, 0]), "finite")):
            with pytest.raises(InvalidInputError, match=message):  # one query: its own fast path
                memory.search(bad, k=1)


@pytest.mark.parametrize("scale, dtype", [(1e-22, np.float32), (1e-22, np.float64), (1e-40, np.float64),
                                          (1e-300, np.float64)])
def test_vectors_whose_squares_are_subnormal_or_that_underflow_float32_are_normalised(tmp_path, scale, dtype):
    """Rows near 1e-22 have squares below float32's smallest normal number: their norm
    kept a few bits, so they were stored up to 1% off unit length (and an export of the
    memory was refused as damaged). Float64 rows below float32's range became zeros when
    cast ("must not be all zeros"), or subnormals. All are rescaled as huge ones are."""
    rng = np.random.default_rng(5)
    directions = rng.standard_normal((6, 16))
    expected = (directions / np.linalg.norm(directions, axis=1, keepdims=True)).astype(np.float32)
    with Memory.create(tmp_path / "m", encoder=None, dim=16) as memory:
        ids = memory.add_vectors((directions * scale).astype(dtype), [str(i) for i in range(6)])
        _, stored = memory.vectors(ids)
        np.testing.assert_allclose(stored, expected, atol=1e-6)
        for query in (directions[0] * scale, directions[:3] * scale):  # one query, and a batch
            hits = memory.search(np.asarray(query, dtype=dtype), k=1)
            assert [row[0].id for row in hits] == ids[: len(hits)]
            assert [row[0].distance for row in hits] == pytest.approx([0] * len(hits), abs=1e-6)
        memory.export_parquet(tmp_path / "m.parquet")
    with Memory.import_parquet(tmp_path / "m.parquet", tmp_path / "copy") as copy:
        assert len(copy) == 6


def test_a_row_is_stored_with_the_same_bits_beside_a_huge_or_tiny_one(tmp_path):
    """One row of a batch outside float32's comfortable range rescaled every row of the
    batch, so the others were stored with other bits than alone: adding one again was not
    recognised as the same row (its content hash differed)."""
    rows = np.random.default_rng(6).standard_normal((5, 16)).astype(np.float32)
    alone = unit_rows(rows, 16)
    for odd in (rows[:1] * np.float32(1e25), rows[:1] * np.float32(1e-30)):
        beside = unit_rows(np.r_[rows, odd], 16)
        assert beside[:5].view(np.uint32).tolist() == alone.view(np.uint32).tolist()
        np.testing.assert_allclose(beside[5], alone[0], atol=1e-6)
    with Memory.create(tmp_path / "m", encoder=None, dim=16) as memory:
        ids = memory.add_vectors(np.r_[rows, rows[:1] * np.float32(1e25)], ["a"] * 6)
        again = memory.add_vectors(rows[1:2], ["a"], allow_duplicates=False)
        assert again.ids == [] and again.duplicates == [(0, ids[1])]


def test_zero_vectors_are_refused_with_nothing_stored(tmp_path):
    with Memory.create(tmp_path / "m", encoder=None, dim=4) as memory:
        vectors = np.eye(4, dtype=np.float32)
        vectors[2] = 0
        with pytest.raises(InvalidInputError, match="all zeros.*row 2"):
            memory.add_vectors(vectors, ["a"] * 4)
        assert len(memory) == 0


def test_cli_refuses_zero_vectors(tmp_path, cli):
    memdir = tmp_path / "m"
    cli("create", memdir, "--encoder", "none", "--dim", "4", check=True)
    np.save(tmp_path / "x.npy", np.zeros((3, 4), np.float32))
    (tmp_path / "y.txt").write_text("a\nb\nc\n")
    result = cli("add-vectors", memdir, "--vectors", tmp_path / "x.npy", "--labels", tmp_path / "y.txt")
    assert result.returncode == 1 and result.stderr.startswith(
        f"error: --vectors {tmp_path / 'x.npy'}: vectors must not be all zeros")  # the file named
    assert json_lines(cli("info", memdir, "--json", check=True))[0]["items"] == 0


@pytest.fixture
def small_memory(tmp_path, digit_images, cli) -> tuple[Path, Path]:
    """An HNSW memory of 40 digits, closed, and one query image."""
    files = sorted(digit_images.rglob("*.png"))
    images = folder_of(digit_images, tmp_path / "images", files[:40])
    memdir = tmp_path / "mem"
    cli("create", memdir, "--encoder", "pixels", "--index", "hnsw", check=True)
    cli("add", memdir, images, check=True)
    return memdir, files[0]


READS = """
$PYTHON -m vismem info "$M" --json > "$OUT/info.json"
$PYTHON -m vismem classify "$M" "$Q" --json > "$OUT/classify.json"
$PYTHON -m vismem search "$M" "$Q" -k 3 --json > "$OUT/search.json"
$PYTHON -m vismem eval "$M" "$IMAGES" --json > "$OUT/eval.json"
set +e
$PYTHON -m vismem add "$M" "$Q" --label new 2> "$OUT/add.err"; echo $? > "$OUT/add.rc"
$PYTHON -m vismem remove "$M" --label 0 2> "$OUT/remove.err"; echo $? > "$OUT/remove.rc"
"""


def check_read_only_run(out: Path, result: subprocess.CompletedProcess, memdir: Path) -> None:
    assert result.returncode == 0, result.stderr[-2000:]
    info = json.loads((out / "info.json").read_text())
    assert info["items"] == 40 and info["read_only"] is True
    assert json.loads((out / "classify.json").read_text())["label"] is not None
    assert len(json.loads((out / "search.json").read_text())["neighbors"]) == 3
    assert json.loads((out / "eval.json").read_text())["total"] == 40
    for verb in ("add", "remove"):
        assert (out / f"{verb}.rc").read_text().strip() == "1"
        message = (out / f"{verb}.err").read_text()
        assert message.startswith("error: memory at") and "is read-only" in message, message
        assert "Traceback" not in message


@needs_mounts
def test_a_memory_on_a_read_only_mount_reads_and_refuses_writes(tmp_path, small_memory):
    memdir, query = small_memory
    mount, out = tmp_path / "ro", tmp_path / "out"
    mount.mkdir()
    out.mkdir()
    script = f'mount --bind "{memdir}" "{mount}"; mount -o remount,bind,ro "{mount}"\n' + READS
    result = in_private_mounts(script, M=mount, Q=query, OUT=out, IMAGES=memdir.parent / "images")
    check_read_only_run(out, result, memdir)


CHECKPOINTS_READ_ONLY = """
import sys
from vismem import Memory
from vismem.errors import ReadOnlyMemoryError
with Memory.open(sys.argv[1]) as memory:
    print(*[c.name for c in memory.checkpoints()])
    for change in (lambda: memory.checkpoint("v2"), lambda: memory.rollback("v1"),
                   lambda: memory.delete_checkpoint("v1")):
        try:
            change()
        except ReadOnlyMemoryError as exc:
            print("refused:", exc)
"""


@needs_mounts
def test_checkpoints_on_a_read_only_mount_are_listed_and_refuse_changes(tmp_path):
    memdir, mount = tmp_path / "m", tmp_path / "ro"
    mount.mkdir()
    with Memory.create(memdir, encoder=None, dim=8) as memory:
        memory.add_vectors(unit_rows(np.random.default_rng(0).standard_normal((20, 8)), 8), ["a", "b"] * 10)
        memory.checkpoint("v1")
    before = (memdir / "memory.sqlite").read_bytes()
    script = f'mount --bind "{memdir}" "{mount}"; mount -o remount,bind,ro "{mount}"\n"$PYTHON" -c "$CODE" "$M"'
    result = in_private_mounts(script, M=mount, CODE=CHECKPOINTS_READ_ONLY)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "v1"
    assert len(lines) == 4 and all(line.startswith("refused:") and "read-only" in line for line in lines[1:]), lines
    assert (memdir / "memory.sqlite").read_bytes() == before


@needs_mounts
def test_an_immutable_memory_reads_and_refuses_writes(tmp_path, small_memory):
    memdir, query = small_memory
    if not _can("chattr", "+i", str(memdir)):
        pytest.skip("needs chattr +i (a file system with immutable files, and CAP_LINUX_IMMUTABLE)")
    out = tmp_path / "out"
    out.mkdir()
    try:
        subprocess.run(["chattr", "-R", "+i", str(memdir)], check=True)
        result = shell(READS, M=memdir, Q=query, OUT=out, IMAGES=memdir.parent / "images")
    finally:
        subprocess.run(["chattr", "-R", "-i", str(memdir)], check=True)
    check_read_only_run(out, result, memdir)


FILL = """
import sys
import numpy as np
from vismem import Memory
from vismem.errors import DiskFullError
memory = Memory.create(sys.argv[1], encoder=None, dim=1024)
rng = np.random.default_rng(0)
batches = 0
try:
    while True:
        memory.add_vectors(rng.standard_normal((200, 1024)).astype("float32"), [f"c{batches % 5}"] * 200)
        batches += 1
except DiskFullError as exc:
    print(batches, exc, sep="\\n")
memory.close()
"""


@pytest.mark.slow
@needs_mounts
def test_a_full_disk_keeps_committed_batches_and_removal_still_works(tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    (tmp_path / "fill.py").write_text(FILL)
    script = f"""
mount -t tmpfs -o size=20m tmpfs "{mount}"
$PYTHON "{tmp_path}/fill.py" "{mount}/m" > "{tmp_path}/fill.out"
set +e
$PYTHON -m vismem add-vectors "{mount}/m" --vectors "{tmp_path}/more.npy" --labels "{tmp_path}/more.txt" \
    2> "{tmp_path}/add.err"; echo $? > "{tmp_path}/add.rc"
set -e
$PYTHON -m vismem remove "{mount}/m" --label c1 --json > "{tmp_path}/remove.json"
$PYTHON -m vismem info "{mount}/m" --json > "{tmp_path}/info.json"
$PYTHON -c "import sqlite3; db = sqlite3.connect('{mount}/m/memory.sqlite'); \
print(db.execute('pragma integrity_check').fetchone()[0])" > "{tmp_path}/integrity.txt"
"""
    np.save(tmp_path / "more.npy", np.random.default_rng(1).standard_normal((300, 1024)).astype(np.float32))
    (tmp_path / "more.txt").write_text("x\n" * 300)
    result = in_private_mounts(script)
    assert result.returncode == 0, result.stderr[-2000:]
    batches, message = (tmp_path / "fill.out").read_text().splitlines()[:2]
    assert int(batches) >= 5
    assert message.startswith("disk full while adding 200 items")
    assert "nothing from the failed batch was kept" in message
    add_error = (tmp_path / "add.err").read_text()
    assert (tmp_path / "add.rc").read_text().strip() == "1", add_error
    # (its open may first say that the recall it measured could not be saved: derived state)
    assert add_error.splitlines()[-1].startswith("error: disk full while adding 300 items"), add_error
    assert "Traceback" not in add_error
    removed = json.loads((tmp_path / "remove.json").read_text())
    info = json.loads((tmp_path / "info.json").read_text())
    assert removed["removed"] == 200 * sum(b % 5 == 1 for b in range(int(batches)))  # on a full disk
    assert info["items"] == 200 * int(batches) - removed["removed"]  # committed batches all kept
    assert (tmp_path / "integrity.txt").read_text().strip() == "ok"


def test_a_write_refused_at_once_for_an_old_snapshot_is_not_called_a_long_wait(tmp_path):
    """SQLite refuses a write at once (SQLITE_BUSY_SNAPSHOT) when a statement still open on
    the connection reads a state that another connection has committed past; the error
    says so instead of claiming a 120 s wait."""
    mine = sqlite3.connect(tmp_path / "x.db", isolation_level=None, check_same_thread=False)
    mine.execute("PRAGMA journal_mode=WAL")
    mine.execute("CREATE TABLE t (x)")
    mine.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(10)])
    other = sqlite3.connect(tmp_path / "x.db", isolation_level=None)
    reading = mine.execute("SELECT x FROM t")
    reading.fetchone()  # left open, as by another thread's lookup
    other.execute("INSERT INTO t VALUES (10)")
    with pytest.raises(sqlite3.OperationalError) as refused:
        mine.execute("BEGIN IMMEDIATE")
    error = storage_error(refused.value, tmp_path, "adding 2 items")
    assert isinstance(error, MemoryBusyError) and "120 s" not in str(error) and "try again" in str(error), error
    reading.close()
    mine.close()
    other.close()


@pytest.mark.slow
@needs_mounts
def test_a_search_index_that_cannot_be_saved_on_a_full_disk_is_rebuilt_not_a_failure(tmp_path):
    """A removal on a full disk was committed, then its save of the HNSW index failed: a
    traceback and exit 1 ("nothing changed"), a half-written index.faiss.tmp filling the
    disk, the old index.faiss still holding the removed vectors, and every later command
    failing the same way. Now the save is given up with a warning, its files go (they
    are derived state), and the next open rebuilds the index in memory."""
    mount = tmp_path / "small"
    mount.mkdir()
    np.save(tmp_path / "v.npy", np.random.default_rng(2).standard_normal((20_000, 32)).astype(np.float32))
    (tmp_path / "v.txt").write_text("".join(f"c{i % 10}\n" for i in range(20_000)))
    script = f"""
mount -t tmpfs -o size=40m tmpfs "{mount}"
$PYTHON -m vismem create "{mount}/m" --encoder none --dim 32 --index hnsw 2>/dev/null
$PYTHON -m vismem add-vectors "{mount}/m" --vectors "{tmp_path}/v.npy" --labels "{tmp_path}/v.txt" 2>/dev/null
fallocate -l $(( $(df --output=avail -B1 "{mount}" | tail -1) - 65536 )) "{mount}/filler"
set +e
$PYTHON -m vismem remove "{mount}/m" --label c3 --verify --json > "{tmp_path}/remove.json" 2> "{tmp_path}/remove.err"
echo $? > "{tmp_path}/remove.rc"
$PYTHON -m vismem search "{mount}/m" --queries "{tmp_path}/q.npy" -k 3 --json > "{tmp_path}/search.json" \
    2> "{tmp_path}/search.err"
echo $? > "{tmp_path}/search.rc"
ls "{mount}/m/index" > "{tmp_path}/files.txt" 2>&1
"""
    np.save(tmp_path / "q.npy", np.load(tmp_path / "v.npy")[:2])
    result = in_private_mounts(script)
    assert result.returncode == 0, result.stderr[-2000:]
    removed, why = (tmp_path / "remove.json").read_text(), (tmp_path / "remove.err").read_text()
    assert (tmp_path / "remove.rc").read_text().strip() == "0" and "Traceback" not in why, why
    assert "could not save the search index" in why
    report = json.loads(removed)
    assert report["removed"] == 2_000 and report["verified"]["clean"]  # no file keeps a removed vector
    assert (tmp_path / "search.rc").read_text().strip() == "0", (tmp_path / "search.err").read_text()
    hits = [json.loads(line) for line in (tmp_path / "search.json").read_text().splitlines()]
    assert [h["neighbors"][0]["id"] for h in hits] == [1, 2]  # each query finds its own item
    assert ".tmp" not in (tmp_path / "files.txt").read_text()


def test_a_file_where_the_index_folder_goes_is_warned_of_and_left_alone(tmp_path, cli, caplog):
    """MEMDIR/index a file (not a folder): every open rebuilt the index, then its save
    crashed with FileExistsError and a traceback. Now the memory opens and searches, a
    warning names the path and what to do, and the file stays as it was."""
    path = tmp_path / "m"
    vectors = unit_rows(np.random.default_rng(3).standard_normal((300, 16)).astype(np.float32), 16)
    with Memory.create(path, encoder=None, dim=16, index="hnsw") as memory:
        ids = memory.add_vectors(vectors, ["a"] * 150 + ["b"] * 150)
    shutil.rmtree(path / "index")
    (path / "index").write_text("not ours")
    np.save(tmp_path / "q.npy", vectors[:2])
    result = cli("search", path, "--queries", tmp_path / "q.npy", "-k", "3", "--json")
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert f"{path / 'index'}: could not save the search index" in result.stderr
    assert "not a folder" in result.stderr and "move or remove it" in result.stderr
    assert [hit["neighbors"][0]["id"] for hit in json_lines(result)] == ids[:2]
    with caplog.at_level(logging.WARNING, logger="vismem"), Memory.open(path) as memory:
        memory.remove(ids[:1], purge=True)  # (a purge scrubs the saved files)
        memory.compact()
        assert memory.search(vectors[1:2], 1)[0][0].id == ids[1] and len(memory) == 299
    assert "not a folder" in caplog.text
    assert (path / "index").read_text() == "not ours"


def test_a_memory_this_user_cannot_write_is_read_though_its_wal_is_there(tmp_path):
    """After a crash (or beside a running server) the database's -wal and -shm files are
    there; SQLite then opens it for a user who may not write it without an error, so the
    memory was taken for writable, and its close failed saving the index it had caught up
    (PermissionError traceback, no answer). Read-only permissions now read as read-only."""
    memdir = tmp_path / "m"
    vectors = np.random.default_rng(3).standard_normal((2_000, 16)).astype(np.float32)
    np.save(tmp_path / "q.npy", vectors[:1])
    with Memory.create(memdir, encoder=None, dim=16, index="hnsw") as memory:
        memory.add_vectors(vectors, [f"c{i % 4}" for i in range(2_000)])
    crash = ("from vismem import Memory; import os, signal; m = Memory.open(os.environ['M']); "
             "m.remove([2]); os.kill(os.getpid(), signal.SIGKILL)")  # the edit committed, the index unsaved
    subprocess.run([sys.executable, "-c", crash], env={**os.environ, "M": str(memdir)}, timeout=300)
    assert (memdir / "memory.sqlite-wal").exists()
    subprocess.run(["chmod", "-R", "a-w", str(memdir)], check=True)
    try:
        result = run_cli_unprivileged("search", memdir, "--queries", tmp_path / "q.npy", "-k", "3", "--json")
    finally:
        subprocess.run(["chmod", "-R", "u+w", str(memdir)], check=True)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-2000:]
    neighbours = [hit["id"] for hit in json.loads(result.stdout)["neighbors"]]
    assert neighbours[0] == 1 and 2 not in neighbours



KEPT_HNSW = """
import sys
import vismem.search.lifecycle as lifecycle
from vismem import Memory
lifecycle.AUTO_APPROX_MIN = 1000  # (as the test's): HNSW from 1000 items, kept down to 500
with Memory.open(sys.argv[1]) as memory:
    memory.remove(memory.ids()[:300])
with Memory.open(sys.argv[1]) as memory:
    print(memory.info()["index"]["type"], len(memory))
"""


def test_auto_keeps_hnsw_after_a_save_of_it_failed(tmp_path, monkeypatch):
    """The saved index was how `open` learnt that `auto` used HNSW, which it keeps down to half
    the switch size: when a save could not be made (here: no permission; a full disk alike) its
    files were dropped, and the next open chose exact search for a memory that had HNSW, as
    another process holding it still did. The kind last built is kept in the store's state."""
    import vismem.search.lifecycle as lifecycle

    monkeypatch.setattr(lifecycle, "AUTO_APPROX_MIN", 1000)
    memdir = tmp_path / "m"
    vectors = np.random.default_rng(4).standard_normal((1000, 16)).astype(np.float32)
    with Memory.create(memdir, encoder=None, dim=16) as memory:
        memory.add_vectors(vectors, ["a"] * 1000)
        assert memory.info()["index"]["type"] == "hnsw"
    in_the_way = memdir / "index" / "index.faiss.tmp"  # where a save writes first: not this user's to write
    in_the_way.write_bytes(b"")
    in_the_way.chmod(0o444)
    done = subprocess.run(unprivileged([sys.executable, "-c", KEPT_HNSW, str(memdir)]),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "could not save the search index" in done.stderr
    assert done.stdout.split() == ["hnsw", "700"], done.stderr[-2000:]


@pytest.fixture
def unwritable_memory(tmp_path):
    """A memory of 120 vectors (4 labels) that this user may read and not write, and its
    files' bytes as they were made."""
    memdir = tmp_path / "m"
    vectors = np.random.default_rng(4).standard_normal((120, 16)).astype(np.float32)
    with Memory.create(memdir, encoder=None, dim=16) as memory:
        memory.add_vectors(vectors, [f"c{i % 4}" for i in range(120)])
    made = {path.name: path.read_bytes() for path in memdir.iterdir() if path.is_file()}
    subprocess.run(["chmod", "-R", "a-w", str(memdir)], check=True)
    yield memdir, made
    subprocess.run(["chmod", "-R", "u+w", str(memdir)], check=True)


@pytest.mark.parametrize("command, bar", [(["calibrate"], "scoring each item"),
                                          (["prune", "--mode", "soft"], "querying the memory"),
                                          (["prune", "--mode", "hard", "--purge"], "querying the memory"),
                                          (["tune"], "held-out")])
def test_curation_refuses_a_memory_this_user_cannot_write_before_it_computes(unwritable_memory, command, bar):
    """`calibrate`, `prune` and `tune` queried the whole memory against itself (minutes on a
    big one) and only then failed to save what they found. Now each refuses at once, as
    `add` does: the read-only error is the one line on the terminal, no bar was drawn."""
    memdir, made = unwritable_memory
    done, shown = on_terminal(unprivileged([sys.executable, "-m", "vismem", command[0], str(memdir), *command[1:]]))
    said = shown.decode(errors="replace")
    assert done.returncode == 1, said
    assert bar not in said, said  # it never started
    assert said.strip() == f"error: memory at {memdir} is read-only (read-only media or permissions): " \
        "it can be searched and classified, not changed", said
    assert {path.name: path.read_bytes() for path in memdir.iterdir() if path.is_file()} == made


PRUNE_REPORTING = """
import sys
from contextlib import contextmanager
from vismem import Memory
from vismem.curate import prune_memory
from vismem.errors import ReadOnlyMemoryError

@contextmanager
def report(description, total):
    print("opened", description, total, flush=True)
    yield lambda n: None

with Memory.open(sys.argv[1]) as memory:
    try:
        prune_memory(memory, sys.argv[2], purge=sys.argv[2] == "hard", report=report)
    except ReadOnlyMemoryError as e:
        print("refused:", e)
"""


@pytest.mark.parametrize("mode", ["soft", "hard"])
def test_prune_refuses_a_memory_this_user_cannot_write_before_it_opens_its_report(unwritable_memory, mode):
    """`prune_memory` checks that it can write before its `report(description, total)`
    is called (the CLI's bar): the check `vismem prune` made again beside it is gone."""
    memdir, made = unwritable_memory
    done = subprocess.run(unprivileged([sys.executable, "-c", PRUNE_REPORTING, str(memdir), mode]),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"refused: memory at {memdir} is read-only (read-only media or "
                                        "permissions): it can be searched and classified, not changed"], done.stdout
    assert {path.name: path.read_bytes() for path in memdir.iterdir() if path.is_file()} == made


def test_prune_refused_by_its_own_checks_draws_no_bar(tmp_path):
    """`vismem prune` drew its bar before `prune_memory` checked what it was given: `--mode
    soft --purge` (and an empty memory) were refused below a bar at 0. Now the error is
    the one line on the terminal."""
    with Memory.create(tmp_path / "empty", encoder=None, dim=16):
        pass
    with Memory.create(tmp_path / "m", encoder=None, dim=16) as memory:
        memory.add_vectors(np.random.default_rng(4).standard_normal((40, 16)).astype(np.float32),
                           [f"c{i % 4}" for i in range(40)])
    for memdir, given, error in [(tmp_path / "m", ["--purge"], "error: --purge only applies to --mode hard"),
                                 (tmp_path / "empty", [], f"error: memory at {tmp_path / 'empty'} has no items")]:
        done, shown = on_terminal([sys.executable, "-m", "vismem", "prune", str(memdir), "--mode", "soft", *given])
        said = shown.decode(errors="replace")
        assert done.returncode == 1, said
        assert "querying the memory" not in said and said.strip().startswith(error), said
        assert len(said.strip().splitlines()) == 1, said


def test_curation_that_only_reads_runs_on_a_memory_this_user_cannot_write(unwritable_memory):
    memdir, made = unwritable_memory
    dry = run_cli_unprivileged("tune", memdir, "--dry-run", "--transform", "none", "--json")
    assert dry.returncode == 0 and json_lines(dry)[0]["held_out"] > 0, dry.stderr
    assert run_cli_unprivileged("suspects", memdir, "--json").returncode == 0
    assert {path.name: path.read_bytes() for path in memdir.iterdir() if path.is_file()} == made

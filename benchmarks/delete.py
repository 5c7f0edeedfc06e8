"""Per-item delete latency, end to end, next to the bare SQLite operations it is made of.

`Memory.remove([id])` returns once the removal is durable (a SQLite commit with
synchronous=FULL) and the index will never return the item; the older copies of its
bytes leave the files at the next `purge` (run by close, compact, the CLI and the
service). This prints, in one run on the same disk:

- `Memory.remove([id])`: median, p90 and p99 over single deletes;
- `Memory.remove([id], purge=True)`: durable and purged on return;
- a bare SQLite delete + commit with the same settings (WAL, synchronous=FULL,
  secure_delete, 4 KiB pages), a bare `wal_checkpoint(TRUNCATE)` and a bare fsync;
- the ratios ours / bare.

    python benchmarks/delete.py [--index exact|hnsw|ivfpq] [--n 5000] [--dim 512] [--deletes 200]
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import tempfile
import time
from pathlib import Path

import numpy as np

from vismem import Memory


def timed(fn, *args, **kwargs) -> float:
    start = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - start


def ms(times: list[float], q: float = 50) -> float:
    return 1000 * float(np.percentile(times, q))


def bare_sqlite(path: Path, vectors: np.ndarray, deletes: int) -> tuple[list[float], list[float]]:
    """Delete+commit and checkpoint times on a one-table database with our settings."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA page_size=4096")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("PRAGMA secure_delete=ON")
    db.execute("CREATE TABLE v (id INTEGER PRIMARY KEY, vector BLOB)")
    db.execute("BEGIN")
    db.executemany("INSERT INTO v VALUES (?, ?)", ((i, v.tobytes()) for i, v in enumerate(vectors)))
    db.execute("COMMIT")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    commit, checkpoint = [], []
    for i in range(deletes):
        start = time.perf_counter()
        db.execute("BEGIN IMMEDIATE")
        db.execute("DELETE FROM v WHERE id = ?", (i,))
        db.execute("COMMIT")
        commit.append(time.perf_counter() - start)
        if i % 10 == 0:
            checkpoint.append(timed(db.execute, "PRAGMA wal_checkpoint(TRUNCATE)"))
    db.close()
    return commit, checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", default="exact", choices=["exact", "hnsw", "ivfpq"])
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--deletes", type=int, default=200)
    args = parser.parse_args()
    if args.n < 3 * args.deletes:
        parser.error("--n must be at least 3 x --deletes")

    with tempfile.TemporaryDirectory() as tmp:
        vectors = np.random.default_rng(0).standard_normal((args.n, args.dim)).astype(np.float32)
        memory = Memory.create(Path(tmp) / "mem", encoder=None, dim=args.dim, index=args.index)
        ids = memory.add_vectors(vectors, ["a"] * args.n)
        d = args.deletes
        ours = [timed(memory.remove, [i]) for i in ids[:d]]
        purge_once = timed(memory.purge)
        purged = [timed(memory.remove, [i], purge=True) for i in ids[d : 2 * d]]
        batch = timed(memory.remove, ids[2 * d : 3 * d])
        memory.close()
        commit, checkpoint = bare_sqlite(Path(tmp) / "bare.sqlite", vectors, d)
        fd = os.open(Path(tmp) / "fsync", os.O_WRONLY | os.O_CREAT)
        fsyncs = []
        for _ in range(d):
            os.write(fd, b"x" * 4096)
            fsyncs.append(timed(os.fsync, fd))
        os.close(fd)

    print(f"{args.index} index, {args.n} x {args.dim}-d, {d} single deletes each")
    print(f"  vismem Memory.remove([id]) (durable):      median {ms(ours):5.2f} ms"
          f"  p90 {ms(ours, 90):5.2f}  p99 {ms(ours, 99):5.2f}")
    print(f"  then one Memory.purge() of all {d}:        {1000 * purge_once:5.2f} ms")
    print(f"  vismem Memory.remove([id], purge=True):    median {ms(purged):5.2f} ms")
    print(f"  bare SQLite delete + commit (same pragmas): median {ms(commit):5.2f} ms"
          f"  p90 {ms(commit, 90):5.2f}  p99 {ms(commit, 99):5.2f}")
    print(f"  bare SQLite wal_checkpoint(TRUNCATE):       median {ms(checkpoint):5.2f} ms")
    print(f"  bare fsync of 4 KiB:                        median {ms(fsyncs):5.2f} ms")
    print(f"  ratio remove / bare commit:                 {ms(ours) / ms(commit):5.2f}x")
    print(f"  ratio remove(purge=True) / (bare commit + checkpoint): "
          f"{ms(purged) / (ms(commit) + ms(checkpoint)):5.2f}x")
    print(f"  batch of {d} in one remove call: {1000 * batch / d:5.3f} ms per item")


if __name__ == "__main__":
    main()

"""Per-item delete latency, end to end, next to the bare operations it is made of.

`Memory.remove([id])` is durable and purging when it returns: a SQLite commit with
synchronous=FULL, then a WAL checkpoint(TRUNCATE) so no file keeps the removed bytes,
then the index update. This prints its median next to a bare SQLite delete+commit, a
bare checkpoint and a bare fsync on the same disk, in the same run.

    python benchmarks/delete.py [--index exact] [--n 2000] [--dim 512] [--deletes 50]
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


def median_ms(times: list[float]) -> float:
    return 1000 * float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", default="exact", choices=["exact", "hnsw", "ivfpq"])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--deletes", type=int, default=50)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        vectors = np.random.default_rng(0).standard_normal((args.n, args.dim)).astype(np.float32)
        memory = Memory.create(Path(tmp) / "mem", encoder=None, dim=args.dim, index=args.index)
        ids = memory.add_vectors(vectors, ["a"] * args.n)
        ours = []
        for item_id in ids[: args.deletes]:
            start = time.perf_counter()
            memory.remove([item_id])
            ours.append(time.perf_counter() - start)
        start = time.perf_counter()
        memory.remove(ids[args.deletes : 2 * args.deletes])
        batch = time.perf_counter() - start
        memory.close()

        bare = sqlite3.connect(Path(tmp) / "bare.sqlite", isolation_level=None)
        bare.execute("PRAGMA journal_mode=WAL")
        bare.execute("PRAGMA synchronous=FULL")
        bare.execute("CREATE TABLE v (id INTEGER PRIMARY KEY, vector BLOB)")
        bare.executemany("INSERT INTO v VALUES (?, ?)", ((i, vectors[i].tobytes()) for i in range(args.n)))
        commit, checkpoint = [], []
        for i in range(args.deletes):
            start = time.perf_counter()
            bare.execute("BEGIN IMMEDIATE")
            bare.execute("DELETE FROM v WHERE id = ?", (i,))
            bare.execute("COMMIT")
            commit.append(time.perf_counter() - start)
            start = time.perf_counter()
            bare.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            checkpoint.append(time.perf_counter() - start)
        bare.close()

        fd = os.open(Path(tmp) / "fsync", os.O_WRONLY | os.O_CREAT)
        fsyncs = []
        for _ in range(args.deletes):
            os.write(fd, b"x" * 4096)
            start = time.perf_counter()
            os.fsync(fd)
            fsyncs.append(time.perf_counter() - start)
        os.close(fd)

    print(f"{args.index} index, {args.n} x {args.dim}-d, median of {args.deletes} single deletes")
    print(f"  vismem Memory.remove([id]) (durable + purged): {median_ms(ours):6.2f} ms")
    print(f"  bare SQLite delete + commit (synchronous=FULL): {median_ms(commit):6.2f} ms")
    print(f"  bare SQLite wal_checkpoint(TRUNCATE):           {median_ms(checkpoint):6.2f} ms")
    print(f"  bare fsync of 4 KiB:                            {median_ms(fsyncs):6.2f} ms")
    print(f"  ratio ours / (bare commit + checkpoint):        "
          f"{median_ms(ours) / (median_ms(commit) + median_ms(checkpoint)):6.2f}x")
    print(f"  batch of {args.deletes} in one remove call: {1000 * batch / args.deletes:6.2f} ms per item")


if __name__ == "__main__":
    main()

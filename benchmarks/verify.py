"""Verifying a removal (`vismem remove --verify`): the scan of every file of a memory for
the removed items' fingerprints, next to the bare `mmap.find` it could be written with.

The fingerprints of --items random items (float32 and float16 vectors) are taken and the
memory's files scanned for them with `find_remnants`, as `remove --verify` does after a
removal; nothing is removed here, so every fingerprint is found at least once, in the
store, which is also a check of the scan. Bare: `mmap.find` of one fingerprint over the
same files, the floor of a scan for one; looking for every fingerprint so costs it
--items x 2 such passes. Figures are the median of --repeats runs, in GB/s of files read.

    python benchmarks/verify.py [--n 200000] [--dim 64] [--items 1000] [--memory DIR]

--memory scans an existing memory instead (read only), e.g. one that benchmarks/filters.py
cached: --memory /tmp/vismem-filters-bench/hnsw-1000000-64.
"""

from __future__ import annotations

import argparse
import mmap
import statistics
import time
from pathlib import Path

import numpy as np

from vismem import Memory
from vismem.remnants import find_remnants, fingerprints


def build(path: Path, n: int, dim: int) -> None:
    rng = np.random.default_rng(0)
    with Memory.create(path, encoder=None, dim=dim, index="hnsw", float16=True) as memory:
        for start in range(0, n, 100_000):
            vectors = rng.standard_normal((min(100_000, n - start), dim)).astype(np.float32)
            memory.add_vectors(vectors, [f"c{i % 100}" for i in range(len(vectors))])


def bare_find(directory: Path, data: bytes) -> int:
    """Where `data` first occurs in each file under `directory`, by `mmap.find`."""
    found = 0
    for path in sorted(directory.rglob("*")):
        if path.is_file() and path.stat().st_size:
            with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as view:
                found += view.find(data) >= 0
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--items", type=int, default=1000, help="items whose fingerprints are looked for")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory", type=Path, help="scan this memory instead of building one")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/vismem-verify-bench"))
    args = parser.parse_args()
    path = args.memory or args.cache / f"hnsw-fp16-{args.n}-{args.dim}"
    if args.memory is None and not (path / "memory.sqlite").exists():
        build(path, args.n, args.dim)
    with Memory.open(path) as memory:
        ids = np.random.default_rng(1).choice(np.asarray(memory.ids()), args.items, replace=False)
        prints = fingerprints(memory, ids.tolist())
        described = f"{len(memory):,} items, {memory.dim}-d, {memory.info()['index']['type']}"
    size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    ours, bare = [], []
    for _ in range(args.repeats):  # taking turns: both meet the same load and page cache
        start = time.perf_counter()
        remnants, files, scanned = find_remnants(path, prints)
        ours.append(time.perf_counter() - start)
        start = time.perf_counter()
        bare_find(path, prints[0].data)
        bare.append(time.perf_counter() - start)
    found = {r.item_id for r in remnants}
    assert found == set(ids.tolist()), "a fingerprint the store holds was not found"
    ours_s, bare_s = statistics.median(ours), statistics.median(bare)
    print(f"{described}; {files} files, {scanned / 1e9:.2f} GB; {len(prints)} fingerprints of {args.items} items")
    print(f"  find_remnants, every fingerprint: {ours_s:6.2f} s, {size / ours_s / 1e9:5.2f} GB/s "
          f"({len(remnants)} found)")
    print(f"  bare mmap.find, one fingerprint:  {bare_s:6.2f} s, {size / bare_s / 1e9:5.2f} GB/s; "
          f"ratio ours / it {ours_s / bare_s:5.2f}x")
    print(f"  bare mmap.find, every fingerprint (one pass each, estimated): {bare_s * len(prints):8.0f} s; "
          f"ratio ours / it {ours_s / (bare_s * len(prints)):7.4f}x")


if __name__ == "__main__":
    main()

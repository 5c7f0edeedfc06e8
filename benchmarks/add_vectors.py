"""Adding precomputed vectors: what recognising rows already held costs.

`Memory.add_vectors` keeps a 128-bit content hash of every row, so that adding the same
rows again (a re-run of an interrupted `vismem add-vectors`) skips them. This prints, in
one run on the same disk, the time to add n rows to a fresh embedded memory in batches of
10,000 (as `vismem add-vectors` does) and the size of memory.sqlite:

- bare: the same rows through the same commit path with no hash (what `add_vectors`
  did before it kept one);
- ours: `add_vectors(..., allow_duplicates=False)` (the CLI default), and with
  `allow_duplicates=True`;
- the ratios ours / bare.

    python benchmarks/add_vectors.py [--n 100000] [--dim 64] [--repeat 3] [--index exact|auto]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np

from vismem import Memory
from vismem.store import NewItem
from vismem.vectors import unit_rows

BATCH = 10_000  # rows per commit, as `vismem add-vectors`


def bare(memory: Memory, vectors: np.ndarray, labels: list[str]) -> None:
    """The rows through the one commit path without a content hash."""
    for start in range(0, len(vectors), BATCH):
        rows = unit_rows(vectors[start : start + BATCH], memory.dim)
        items = [NewItem(vector=v, label=label, source="vectors")
                 for v, label in zip(rows, labels[start : start + BATCH], strict=True)]
        memory._commit(partial(_insert, items), added=True)  # noqa: SLF001 - the old path, measured


def _insert(items: list[NewItem], store) -> object:  # type: ignore[no-untyped-def]
    return store.insert(items)


def ours(memory: Memory, vectors: np.ndarray, labels: list[str], *, allow_duplicates: bool) -> None:
    memory.add_vectors(vectors, labels, batch_size=BATCH, allow_duplicates=allow_duplicates)


def measure(work, vectors: np.ndarray, labels: list[str], root: Path, index: str) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """(seconds, MB of memory.sqlite) of one fresh memory filled by `work`."""
    path = Path(tempfile.mkdtemp(dir=root))
    memory = Memory.create(path / "m", encoder=None, dim=vectors.shape[1], index=index)
    start = time.perf_counter()
    work(memory, vectors, labels)
    seconds = time.perf_counter() - start
    memory.close()
    return seconds, (path / "m" / "memory.sqlite").stat().st_size / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--index", default="exact",
                        help="exact (default: the store's cost alone) or auto (with the HNSW build at 50,000 items)")
    args = parser.parse_args()
    vectors = np.random.default_rng(0).standard_normal((args.n, args.dim)).astype(np.float32)
    labels = [f"c{i % 10}" for i in range(args.n)]
    runs = {"bare (no hash)": bare,
            "ours, skip held (CLI default)": partial(ours, allow_duplicates=False),
            "ours, allow duplicates": partial(ours, allow_duplicates=True)}
    best: dict[str, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory() as root:
        for _ in range(args.repeat):  # interleaved, so that a slow moment hits every kind alike
            for name, work in runs.items():
                seconds, mb = measure(work, vectors, labels, Path(root), args.index)
                best[name] = (min(seconds, best.get(name, (seconds, mb))[0]), mb)
    base_s, base_mb = best["bare (no hash)"]
    print(f"{args.n:,} rows x {args.dim}-d, batches of {BATCH:,}, index {args.index}, best of {args.repeat}")
    for name, (seconds, mb) in best.items():
        print(f"  {name:28s} {seconds:6.2f} s  x{seconds / base_s:.2f}"
              f"   memory.sqlite {mb:6.1f} MB  x{mb / base_mb:.2f}")


if __name__ == "__main__":
    main()

"""Classify latency and throughput next to bare FAISS `IndexFlatIP` on the same vectors.

100k random unit vectors (dim 1280) in a real memory on disk; queries are fresh random
unit vectors. Ours: `Memory.classify_vectors` (search + vote + Decision objects with
neighbours). Bare: `faiss.IndexFlatIP.search` alone. Goal: overhead <= 1.2x at k=20.

    python benchmarks/classify.py [--n 100000] [--dim 1280] [--k 20]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

from vismem import Memory


def unit(n: int, dim: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def best_of(repeats: int, fn) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=1280)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--batch", type=int, default=256, help="queries per batched call")
    parser.add_argument("--singles", type=int, default=30, help="single-query calls timed")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    base = unit(args.n, args.dim, 0)
    labels = [f"class{i % 1000}" for i in range(args.n)]
    queries = unit(args.batch, args.dim, 1)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        # exact search is what IndexFlatIP does; `auto` would try HNSW above 50k items
        memory = Memory.create(Path(tmp) / "mem", encoder=None, dim=args.dim, index="exact")
        memory.add_vectors(base, labels)
        build = time.perf_counter() - start
        start = time.perf_counter()
        memory.close()
        memory = Memory.open(Path(tmp) / "mem")
        reopen = time.perf_counter() - start

        bare = faiss.IndexFlatIP(args.dim)
        bare.add(base)
        memory.classify_vectors(queries[:2], k=args.k)  # warm-up
        bare.search(queries[:2], args.k)

        # Interleave ours and bare so both see the same machine load.
        ours_batch = bare_batch = ours_single = bare_single = float("inf")
        for _ in range(args.repeats):
            ours_batch = min(ours_batch, best_of(1, lambda: memory.classify_vectors(queries, k=args.k)))
            bare_batch = min(bare_batch, best_of(1, lambda: bare.search(queries, args.k)))
            ours_single = min(ours_single, best_of(1, lambda: [
                memory.classify_vectors(q, k=args.k) for q in queries[: args.singles]]))
            bare_single = min(bare_single, best_of(1, lambda: [
                bare.search(q[None], args.k) for q in queries[: args.singles]]))
        same = (memory.search(queries[:5], k=args.k)[0][0].id - 1 == bare.search(queries[:5], args.k)[1][0][0])
        memory.close()

    print(f"{args.n:,} vectors, dim {args.dim}, k={args.k}, faiss threads {faiss.omp_get_max_threads()}")
    print(f"  memory build (add_vectors, durable): {build:6.1f} s; reopen: {reopen:5.2f} s")
    print(f"  batched ({args.batch} queries/call):")
    print(f"    vismem classify_vectors: {args.batch / ours_batch:8.1f} q/s")
    print(f"    bare IndexFlatIP.search: {args.batch / bare_batch:8.1f} q/s")
    print(f"    overhead ratio:          {ours_batch / bare_batch:8.3f}x")
    print("  single query (latency):")
    print(f"    vismem classify_vectors: {1000 * ours_single / args.singles:8.2f} ms")
    print(f"    bare IndexFlatIP.search: {1000 * bare_single / args.singles:8.2f} ms")
    print(f"    overhead ratio:          {ours_single / bare_single:8.3f}x")
    print(f"  same nearest neighbour as bare FAISS: {bool(same)}")


if __name__ == "__main__":
    main()

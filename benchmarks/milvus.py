"""The Milvus home next to bare pymilvus, on the same server in the same run.

Ours: a vismem memory in a Milvus collection (`Memory.add_vectors`, `classify_vectors`,
`search` with a label filter, `remove`). Bare: pymilvus's MilvusClient doing the same
calls on a collection of the same schema, index (HNSW M=16, efConstruction 200, ef 128)
and consistency (Strong). Ours and bare alternate call by call, so both see the same
machine load. Prints each figure, the ratio ours/bare, and whether it is within 1.2x.

    python benchmarks/milvus.py                   # 100k x 512-d; ~15 min on 2 busy cores
    python benchmarks/milvus.py --n 20000         # quicker
    python benchmarks/milvus.py --tick-ms 20      # the server's time tick (Milvus default 200 ms)
    VISMEM_MILVUS_URI=milvus://HOST:19530 python benchmarks/milvus.py   # a server of your own

Without VISMEM_MILVUS_URI it starts a private Milvus 2.3.5 standalone (PyPI `milvus`
wheel) in a private network namespace (.ci/with-milvus) and stops it afterwards.
Synthetic unit vectors of intrinsic dimension 8 (benchmarks/search.py's), 10 labels.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from search import make_data  # noqa: E402

K = 10
GOAL = 1.2


def median_ms(times: list[float]) -> float:
    return 1000 * statistics.median(times)


def timed(fn, *args, **kwargs) -> float:
    start = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - start


def recall(found: list[list[int]], truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t.tolist())) / K for f, t in zip(found, truth, strict=True)]))


def bare_collection(client, name: str, dim: int):
    """A collection with the Milvus home's schema, index and consistency, made by hand."""
    from vismem.settings import MemorySettings
    from vismem.store.milvus import MilvusStore

    MilvusStore._create_items(client, name, dim, MemorySettings(index="hnsw").index)
    client.load_collection(name)


def wait_indexed(client, name: str, n: int) -> float:
    start = time.perf_counter()
    client.flush(name)
    while client.describe_index(name, "vector").get("indexed_rows", 0) < n:
        time.sleep(0.5)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--batch", type=int, default=5000, help="rows per add call")
    parser.add_argument("--queries", type=int, default=40, help="single queries timed, each (removals: twice)")
    parser.add_argument("--tick-ms", type=int, help="the private server's proxy.timeTickInterval")
    args = parser.parse_args()
    if not os.environ.get("VISMEM_MILVUS_URI"):
        extra = ["--config", f"proxy.timeTickInterval={args.tick_ms}"] if args.tick_ms else []
        os.execv(sys.executable, [sys.executable, str(HERE.parent / ".ci" / "with-milvus"), *extra, "--",
                                  sys.executable, *sys.orig_argv[1:]])

    from pymilvus import MilvusClient

    from vismem import Memory
    from vismem.store.milvus import VOTE_FIELDS
    from vismem.store.milvus_expr import MilvusLocation

    server = os.environ["VISMEM_MILVUS_URI"]
    where = MilvusLocation.parse(f"{server}/x")
    bare = MilvusClient(uri=where.uri, token=where.token or "")
    tag = uuid.uuid4().hex[:8]
    ours_name, bare_name = f"bench_ours_{tag}", f"bench_bare_{tag}"
    print(f"Milvus {bare.get_server_version()} at {where.host}:{where.port}; {args.n:,} x {args.dim}-d, "
          f"k={K}, Strong reads", file=sys.stderr)

    x = make_data(args.n, args.dim, 8, seed=0)
    rng = np.random.default_rng(1)
    labels = [f"c{i % 10}" for i in range(args.n)]
    noise = rng.standard_normal((200, args.dim), dtype=np.float32) / np.sqrt(args.dim)
    queries = x[rng.choice(args.n, 200, replace=False)] + 0.05 * noise
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)

    memory = Memory.create(f"{server}/{ours_name}", encoder=None, dim=args.dim, index="hnsw")
    bare_collection(bare, bare_name, args.dim)
    try:
        rows: dict[str, list[float]] = {}

        # ---- add: alternate batches -------------------------------------------------
        ours_t, bare_t, ours_ids, bare_ids = 0.0, 0.0, [], []
        for start in range(0, args.n, args.batch):
            stop = min(args.n, start + args.batch)
            chunk = x[start:stop]
            begun = time.perf_counter()
            ours_ids += memory.add_vectors(chunk, labels[start:stop], sources="bench",
                                           metas=[{"k": i % 7} for i in range(start, stop)])
            ours_t += time.perf_counter() - begun
            ids = rng.integers(1, 2**53, stop - start).tolist()
            bare_ids += ids
            now = time.time()
            batch = [{"id": ids[j], "vector": chunk[j], "label": labels[start + j], "source": "bench", "path": "",
                      "content_hash": "", "weight": 1.0, "meta": {"k": (start + j) % 7}, "added_at": now,
                      "relabelled_from": "", "prune_count": 0, "thumbnail": ""} for j in range(stop - start)]
            bare_t += timed(bare.insert, bare_name, batch)
            print(f"  added {stop:,}", file=sys.stderr)
        rows["add (rows/s)"] = [args.n / ours_t, args.n / bare_t]
        ours_client = memory.store._client
        index_s = [wait_indexed(ours_client, ours_name, args.n), wait_indexed(bare, bare_name, args.n)]
        print(f"  flushed and indexed in {index_s[0]:.0f} s / {index_s[1]:.0f} s", file=sys.stderr)

        params = {"metric_type": "IP", "params": {"ef": 128}}

        def bare_search(q, **kw):
            """The search, its results read as a caller would (pymilvus builds them lazily)."""
            found = bare.search(bare_name, data=list(q), limit=K, output_fields=VOTE_FIELDS, search_params=params,
                                consistency_level="Strong", **kw)
            return [[(h["id"], h["distance"], *(h["entity"][f] for f in VOTE_FIELDS)) for h in row] for row in found]

        start = time.perf_counter()
        memory.classify_vectors(queries[:1], k=K)   # builds the class prototypes once (a full scan)
        print(f"  first classify (builds prototypes from all vectors): {time.perf_counter() - start:.1f} s",
              file=sys.stderr)

        # ---- classify: single and batched, alternating --------------------------------
        # A Strong read waits for the server's next time tick, so a call's latency depends on
        # where in the tick it lands: a random pause before each call spreads both evenly.
        def pause() -> None:
            time.sleep(float(rng.uniform(0, 0.25)))

        single = ([], [])
        for q in queries[: args.queries]:
            pause()
            single[0].append(timed(memory.classify_vectors, q[None], k=K))
            pause()
            single[1].append(timed(bare_search, q[None]))
        rows["classify, single (ms)"] = [median_ms(single[0]), median_ms(single[1])]
        batched = ([], [])
        for _ in range(3):
            batched[0].append(timed(memory.classify_vectors, queries[:100], k=K))
            batched[1].append(timed(bare_search, queries[:100]))
        rows["classify, 100 batched (ms, best of 3)"] = [1000 * min(batched[0]), 1000 * min(batched[1])]

        # ---- filtered search: recall against exact search and time --------------------
        allowed = np.asarray([label == "c3" for label in labels])
        sims = queries @ x.T
        sims[:, ~allowed] = -np.inf
        truth = np.argsort(-sims, axis=1)[:, :K]
        ours_rows = {i: p for p, i in enumerate(ours_ids)}
        found_ours = [[ours_rows[h.id] for h in row] for row in memory.search(queries, k=K, labels=["c3"])]
        bare_row = {i: p for p, i in enumerate(bare_ids)}
        hits = bare_search(queries, filter='label in ["c3"]')
        found_bare = [[bare_row[int(h[0])] for h in row] for row in hits]
        rows["filtered recall@10 (10% of items)"] = [recall(found_ours, truth), recall(found_bare, truth)]
        filt = ([], [])
        for q in queries[: args.queries]:
            pause()
            filt[0].append(timed(memory.search, q[None], k=K, labels=["c3"]))
            pause()
            filt[1].append(timed(bare_search, q[None], filter='label in ["c3"]'))
        rows["filtered search, single (ms)"] = [median_ms(filt[0]), median_ms(filt[1])]

        # ---- delete one item, alternating ----------------------------------------------
        # `remove` returns the ids that were there; bare pymilvus learns that with a query
        # before its delete (its delete reports every id given), so that is the same work.
        removals = 2 * args.queries
        victims_ours = ours_ids[:removals]

        def bare_remove(item_id: int) -> list[int]:
            there = [r["id"] for r in bare.query(bare_name, filter=f"id in [{item_id}]", output_fields=["id"],
                                                 consistency_level="Session")]
            bare.delete(bare_name, filter=f"id in [{item_id}]")
            return there

        deletes: tuple[list[float], list[float], list[float]] = ([], [], [])
        for k in range(removals):
            deletes[0].append(timed(memory.remove, [victims_ours[k]]))
            deletes[1].append(timed(bare_remove, bare_ids[k]))
            deletes[2].append(timed(bare.delete, bare_name, filter=f"id in [{bare_ids[removals + k]}]"))
        rows["remove one item (ms)"] = [median_ms(deletes[0]), median_ms(deletes[1])]
        print(f"  bare delete call alone (reports nothing): {median_ms(deletes[2]):.2f} ms", file=sys.stderr)
        gone = memory.search(x[:removals], k=K)
        assert not set(victims_ours) & {h.id for row in gone for h in row}, "a removed item came back"
    finally:
        memory.close()
        bare.drop_collection(bare_name)
        bare.drop_collection(ours_name)
        bare.drop_collection(ours_name + "__vismem")
        bare.close()

    print(f"\n{'':38s} {'vismem':>10s} {'bare':>10s} {'ratio':>7s}")
    for name, (ours, base) in rows.items():
        higher_better = "rows/s" in name or "recall" in name
        ratio = base / ours if higher_better else ours / base
        goal = "" if "recall" in name else ("  ok" if ratio <= GOAL else f"  above {GOAL}x")
        print(f"{name:38s} {ours:10.3f} {base:10.3f} {ratio:6.2f}x{goal}")
    print("ratio: how many times slower (or, for recall, lower) vismem is than bare pymilvus")


if __name__ == "__main__":
    main()

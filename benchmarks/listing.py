"""Paged listing at 1M items: `GET /items?offset=...` through the real `vismem serve`, next
to a bare SQLite `SELECT ... ORDER BY id LIMIT ... OFFSET ...` on the same file, same run.

    PYTHONPATH=src nice python benchmarks/listing.py [--items 1000000] [--repeat 30]

The memory (precomputed 8-d vectors, no encoder, exact index; 100 labels, 10 sources) is
built once with `add_vectors` in batches of 100k and cached in /tmp (rebuilt if its size
differs). Each figure is the median of `--repeat` requests on one keep-alive connection,
after a warm-up; the issue's bar is under 20 ms at any offset. Also printed: the same
pages from `Memory.page` in-process (what HTTP adds on top), and with a label filter.

The catalog answers the page's ids by position (the filter is a numpy mask, the offset a
slice), then reads just those rows by primary key; SQLite's OFFSET steps over every
skipped row, so it grows with the offset.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import sys
import time
from pathlib import Path

import httpx
import numpy as np

from serve import AUTH, start_server  # benchmarks/serve.py, beside this script
from vismem import Memory
from vismem.store.sqlite import DB_NAME, ITEM_COLUMNS

CACHE = Path("/tmp/vismem-listing-bench")
LIMIT = 100
BAR_MS = 20.0


def build(items: int) -> Path:
    memdir = CACHE / f"mem-{items}"
    if memdir.exists():
        with Memory.open(memdir) as memory:
            if len(memory) == items:
                return memdir
        import shutil

        shutil.rmtree(memdir)
    CACHE.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    with Memory.create(memdir, encoder=None, dim=8, index="exact") as memory:
        for first in range(0, items, 100_000):
            n = min(100_000, items - first)
            ids = np.arange(first, first + n)
            memory.add_vectors(rng.standard_normal((n, 8)).astype(np.float32),
                               [f"c{i % 100}" for i in ids], sources=[f"s{i % 10}" for i in ids])
            print(f"  built {first + n:,} items", file=sys.stderr)
    print(f"built the memory in {time.perf_counter() - start:.0f} s (cached in {memdir})", file=sys.stderr)
    return memdir


def median_ms(fn, repeat: int) -> float:
    fn()  # warm
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    memdir = build(args.items)
    n = args.items
    offsets = [0, 1_000, n // 10, n // 2, n - LIMIT]
    per_label = n // 100
    label_offsets = [0, per_label // 2, per_label - LIMIT]

    bare = sqlite3.connect(f"file:{memdir / DB_NAME}?mode=ro", uri=True)

    def bare_page(offset: int, label: str | None = None) -> list:
        where, params = ("WHERE label = ?", [label]) if label else ("", [])
        return bare.execute(f"SELECT {ITEM_COLUMNS} FROM items {where} ORDER BY id LIMIT ? OFFSET ?",
                            [*params, LIMIT, offset]).fetchall()

    with Memory.open(memdir) as memory:
        def ours_here(offset: int, label: str | None = None) -> object:
            return memory.page(offset=offset, limit=LIMIT, labels=[label] if label else None)

        here = {(o, None): median_ms(lambda o=o: ours_here(o), args.repeat) for o in offsets}
        here |= {(o, "c7"): median_ms(lambda o=o: ours_here(o, "c7"), args.repeat) for o in label_offsets}
        check = ours_here(n // 2).items
        assert [i.id for i in check] == [r[0] for r in bare_page(n // 2)], "different pages"

    process, url = start_server(memdir)
    try:
        with httpx.Client(base_url=url, timeout=60, headers=AUTH) as http:
            def ours_http(offset: int, label: str | None = None) -> None:
                params: dict = {"offset": offset, "limit": LIMIT}
                if label:
                    params["label"] = label
                response = http.get("/items", params=params)
                assert response.status_code == 200 and len(response.json()["items"]) == LIMIT, response.text

            floor = median_ms(lambda: http.get("/healthz"), args.repeat)
            rows = []
            for o in offsets:
                rows.append((f"offset {o:,}", median_ms(lambda o=o: ours_http(o), args.repeat),
                             here[(o, None)], median_ms(lambda o=o: bare_page(o), args.repeat)))
            for o in label_offsets:
                rows.append((f"label c7, offset {o:,}", median_ms(lambda o=o: ours_http(o, "c7"), args.repeat),
                             here[(o, "c7")], median_ms(lambda o=o: bare_page(o, "c7"), args.repeat)))
    finally:
        process.terminate()
        process.wait(timeout=30)

    print(f"GET /items (limit {LIMIT}) on {n:,} items, median of {args.repeat}; {os.cpu_count()} CPUs; "
          f"an HTTP round trip with no work (GET /healthz) takes {floor:.2f} ms")
    print(f"{'page':<26}{'HTTP ms':>9}{'in-process':>12}{'bare SQLite':>13}{'HTTP/bare':>11}")
    worst = 0.0
    for name, http_ms, here_ms, bare_ms in rows:
        worst = max(worst, http_ms)
        print(f"{name:<26}{http_ms:>9.2f}{here_ms:>12.2f}{bare_ms:>13.2f}{http_ms / bare_ms:>10.2f}x")
    verdict = "under" if worst < BAR_MS else "OVER"
    print(f"slowest page over HTTP: {worst:.2f} ms, {verdict} the {BAR_MS:.0f} ms bar")
    if worst >= BAR_MS:
        raise SystemExit(1)


if __name__ == "__main__":
    main()

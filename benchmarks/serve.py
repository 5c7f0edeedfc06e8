"""Load run against the real `vismem serve` on 127.0.0.1: classify throughput and latency.

    PYTHONPATH=src python benchmarks/serve.py [--encoder efficientnet_lite0|pixels] [--requests N]

Builds a memory of real digit images (scikit-learn) in a temporary directory, measures
the bare baseline in-process (`Memory.classify` on one image file at a time, as a
request does), then starts the server in a subprocess and sends classify requests from
1, 4 and 16 concurrent clients (threads, each its own httpx client), first alone and then while a writer keeps
adding images. Prints requests/s, p50 and p99 latency, failures, and the ratio to the
baseline; then checks that every add the writer was told about is in the memory.
"""

from __future__ import annotations

import argparse
import io
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

os.environ.setdefault("VISMEM_OFFLINE", "1")

from vismem import Memory  # noqa: E402
from vismem.datasets import load_digits_images, split_per_class, write_image_folder  # noqa: E402

TOKEN = "benchmark-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
LEVELS = (1, 4, 16)


def png_bytes(image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(memdir: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "vismem", "serve", str(memdir), "--host", "127.0.0.1",
         "--port", str(port), "--token", TOKEN],
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300  # opening a 1M-item memory takes a while
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit("the server did not start")


def bare_baseline(memdir: Path, query_files: list[Path], repeat: int) -> dict[str, float]:
    """In-process `Memory.classify` throughput, the bare library the server wraps.

    One image file per call (as a request carries), timed on the main thread and on a
    worker thread (the server encodes on one; on a busy machine torch's thread team
    behaves very differently between the two); the better one is the baseline. Also one
    call with a batch of 16 files, the ceiling that batching across requests can reach.
    """
    from concurrent.futures import ThreadPoolExecutor

    with Memory.open(memdir) as memory:
        def singles() -> float:
            memory.classify([query_files[0]])  # warm (and load the encoder) outside the timing
            start = time.perf_counter()
            for i in range(repeat):
                memory.classify([query_files[i % len(query_files)]])
            return repeat / (time.perf_counter() - start)

        def batched() -> float:
            batch = [query_files[i % len(query_files)] for i in range(16)]
            memory.classify(batch)
            start = time.perf_counter()
            rounds = max(1, repeat // 16)
            for _ in range(rounds):
                memory.classify(batch)
            return rounds * 16 / (time.perf_counter() - start)

        main_thread = singles()
        with ThreadPoolExecutor(1) as pool:
            worker = pool.submit(singles).result()
            batch = pool.submit(batched).result()
    return {"main_thread": main_thread, "worker_thread": worker, "batch16": batch,
            "baseline": max(main_thread, worker)}


def classify_load(url: str, queries: list[bytes], clients: int, total: int) -> dict:
    """`total` classify requests from `clients` threads, each its own HTTP client (a user)."""
    latencies: list[float] = []
    failures: list[str] = []
    tickets = iter(range(total))
    take = threading.Lock()

    def client() -> None:
        with httpx.Client(base_url=url, timeout=120) as http:
            while True:
                with take:
                    i = next(tickets, None)
                if i is None:
                    return
                start = time.perf_counter()
                try:
                    response = http.post(
                        "/classify", files={"file": (f"q{i}.png", queries[i % len(queries)], "image/png")}
                    )
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))
                    continue
                if response.status_code != 200:
                    failures.append(f"{response.status_code} {response.text[:100]}")
                    continue
                latencies.append(time.perf_counter() - start)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    lat = np.array(latencies) * 1000
    return {"rps": len(latencies) / elapsed, "p50": float(np.percentile(lat, 50)) if len(lat) else 0.0,
            "p99": float(np.percentile(lat, 99)) if len(lat) else 0.0, "failures": failures}


def with_writer(url: str, queries: list[bytes], clients: int, total: int,
                new_images: list[bytes], added: list[int], failures: list[str]) -> dict:
    """The classify load while one writer adds an image per request, back to back."""
    stop = threading.Event()
    before = len(added)

    def writer() -> None:
        with httpx.Client(base_url=url, headers=AUTH, timeout=120) as http:
            n = 0
            while not stop.is_set():
                data = new_images[n % len(new_images)]  # cycles: duplicates are allowed
                n += 1
                try:
                    response = http.post(
                        "/items", data={"label": "new", "source": "writer", "allow_duplicates": "true"},
                        files=[("files", ("n.png", data, "image/png"))])
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))
                    continue
                if response.status_code != 201:
                    failures.append(f"{response.status_code} {response.text[:100]}")
                else:
                    added.extend(response.json()["ids"])

    thread = threading.Thread(target=writer)
    start = time.perf_counter()
    thread.start()
    result = classify_load(url, queries, clients, total)
    stop.set()
    thread.join()
    result["adds_per_s"] = (len(added) - before) / (time.perf_counter() - start)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", default="efficientnet_lite0")
    parser.add_argument("--per-class", type=int, default=20, help="memory images per digit")
    parser.add_argument("--requests", type=int, default=None,
                        help="classify requests per level [64 for a model, 400 for pixels]")
    args = parser.parse_args()
    total = args.requests or (400 if args.encoder == "pixels" else 64)

    images, labels = load_digits_images()
    train, test, spare = split_per_class(labels, [args.per_class, 4, 10], seed=0)
    work = Path(tempfile.mkdtemp(prefix="vismem-serve-bench-"))
    folder = write_image_folder(work / "train", images, labels, train)
    with Memory.create(work / "mem", encoder=args.encoder) as memory:
        memory.add_images([folder])
        initial = len(memory)
    query_files = []
    for i in test:
        query_files.append(work / f"q{i}.png")
        images[i].save(query_files[-1])
    queries = [f.read_bytes() for f in query_files]
    new_images = [png_bytes(images[i]) for i in spare]

    print(f"memory: {initial} digit images, encoder {args.encoder}; {total} classify requests per level; "
          f"{os.cpu_count()} CPUs")
    bare = bare_baseline(work / "mem", query_files, repeat=max(16, total // 2))
    baseline = bare["baseline"]
    print(f"bare Memory.classify in-process, one image file per call: {bare['main_thread']:.1f}/s on the "
          f"main thread, {bare['worker_thread']:.1f}/s on a worker thread -> baseline {baseline:.1f} req/s")
    print(f"bare Memory.classify in-process, 16 files per call: {bare['batch16']:.1f} images/s "
          f"(what one batched forward pass gives)\n")

    process, url = start_server(work / "mem")
    added: list[int] = []
    write_failures: list[str] = []
    rows = []
    try:
        classify_load(url, queries, 1, 4)  # warm-up
        for clients in LEVELS:
            rows.append(("read only", clients, classify_load(url, queries, clients, total)))
        for clients in LEVELS:
            rows.append(("with writer", clients,
                         with_writer(url, queries, clients, total, new_images, added, write_failures)))
        batches = httpx.get(url + "/healthz").json()["encoder_batches"]
        stats = httpx.get(url + "/stats").json()
        missing = [i for i in added if httpx.get(f"{url}/items/{i}").status_code != 200]
    finally:
        process.terminate()
        process.wait(timeout=30)

    print(f"{'phase':<12}{'clients':>8}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'failed':>8}"
          f"{'adds/s':>8}{'vs bare':>9}")
    failed = 0
    for phase, clients, r in rows:
        failed += len(r["failures"])
        adds = f"{r['adds_per_s']:.1f}" if "adds_per_s" in r else "-"
        print(f"{phase:<12}{clients:>8}{r['rps']:>9.1f}{r['p50']:>9.1f}{r['p99']:>9.1f}"
              f"{len(r['failures']):>8}{adds:>8}{r['rps'] / baseline:>8.2f}x")
    print(f"\nencoder batches in the server: {batches}")
    print(f"writer: {len(added)} adds acknowledged, {len(write_failures)} failed; memory holds "
          f"{stats['items']} = {initial} + {stats['items'] - initial}; acknowledged but missing: {len(missing)}")
    lost = stats["items"] != initial + len(added) or missing
    if failed or write_failures or lost:
        for message in [m for _, _, r in rows for m in r["failures"]][:5] + write_failures[:5]:
            print("  failure:", message)
        raise SystemExit("FAILED: failed requests or lost edits")
    print("no failed requests, no lost edits")


if __name__ == "__main__":
    main()

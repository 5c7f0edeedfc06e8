"""Ray ingestion: vismem's `add --ray` next to a bare Ray Data pipeline doing the same work.

Bare: `ray.data.read_images` (decode) -> `map_batches(actor)` that resizes, crops and runs
the same encoder -> vectors collected on the driver. Ours: vismem's Ray ingestion of the
same files into a new memory (hash and look up on the cluster, read, decode with
thumbnails, encode, commit in batches on the driver). They alternate, best of
`--repeats`. A plain one-process loop is printed too: on one small machine Ray only adds
overhead; it pays off across machines.

    python benchmarks/ray_ingest.py                       # 256 photos, EfficientNet-Lite0, local Ray
    python benchmarks/ray_ingest.py --images 1024 --address ray://head:10001
    python benchmarks/ray_ingest.py --decode      # CPU time to decode one image (sizes decode tiers)

Without --address it starts a local Ray inside a private network namespace
(.ci/with-milvus --no-server), so nothing it opens is reachable from outside.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from encode import write_images  # noqa: E402  (real photos, distinct content)

PHOTO_SIZE = (500, 375)  # about ImageNet's average


def write_photos(folder: Path, count: int, size: tuple[int, int] = PHOTO_SIZE) -> list[Path]:
    write_images(folder, count, size)
    return sorted((folder / "x").iterdir())


class BareEmbed:
    """A Ray Data actor: preprocess decoded images and run the encoder on them."""

    def __init__(self, encoder_name: str) -> None:
        from vismem.encoders import create_encoder

        self.encoder = create_encoder(encoder_name)

    def __call__(self, batch: dict) -> dict:
        from PIL import Image

        prep = self.encoder.preprocessing
        pixels = np.stack([prep.apply(Image.fromarray(image)) for image in batch["image"]])
        return {"path": batch["path"], "vector": self.encoder.embed_preprocessed(pixels)}


def bare_pipeline(paths: list[Path], encoder_name: str, actors: int, batch: int) -> dict[str, np.ndarray]:
    import ray

    ds = ray.data.read_images([str(p) for p in paths], mode="RGB", include_paths=True)
    ds = ds.map_batches(BareEmbed, fn_constructor_args=(encoder_name,), batch_size=batch,
                        compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=1)
    rows = ds.take_all()
    return {os.path.basename(r["path"]): r["vector"] for r in rows}


def ours_pipeline(paths: list[Path], encoder_name: str, actors: int, batch: int, memdir: Path,
                  address: str) -> dict[str, np.ndarray]:
    """vismem's Ray ingestion of the same files into a new memory; its vectors by file name."""
    from vismem import Memory
    from vismem.ingest_ray import add_files_on_ray

    with Memory.create(memdir, encoder=encoder_name) as memory:
        report = add_files_on_ray(memory._ingestor(), paths, address=address, label="photo", batch_size=batch,
                                  actors=actors)
        assert len(report.added) + len(report.duplicates) == len(paths), report.errors
        found, vectors = memory.vectors(report.added)
        names = {i.id: Path(i.path).name for i in memory.items(found.tolist())}
        return {names[int(i)]: v for i, v in zip(found, vectors, strict=True)}


def plain_loop(paths: list[Path], encoder_name: str) -> dict[str, np.ndarray]:
    from vismem.encoders import create_encoder
    from vismem.images import decode_image

    encoder = create_encoder(encoder_name)
    images = [decode_image(p.read_bytes()) for p in paths]
    vectors = encoder.encode(images)
    return {p.name: v for p, v in zip(paths, vectors, strict=True)}


def decode_cost(encoder_name: str, count: int = 60) -> None:
    """CPU seconds per image to decode, resize and crop, on one thread (what a Ray decode
    task spends): photos of ImageNet size as JPEG and PNG, and 12-megapixel JPEGs."""
    from vismem.embed import decode_pixels
    from vismem.encoders import create_encoder

    prep = create_encoder(encoder_name).preprocessing
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_photos(Path(tmp) / "small", count)
        blobs = {"photo JPEG (500x375)": [p.read_bytes() for p in paths if p.suffix == ".jpg"],
                 "photo PNG (500x375)": [p.read_bytes() for p in paths if p.suffix == ".png"],
                 "12 MP JPEG": [p.read_bytes() for p in write_photos(Path(tmp) / "big", 6, (4000, 3000))]}
    for name, data in blobs.items():
        best = math.inf
        for _ in range(3):
            start = time.thread_time()
            for blob in data:
                decode_pixels(blob, prep, False, 10**9)
            best = min(best, (time.thread_time() - start) / len(data))
        print(f"{name:22s} {best * 1000:6.1f} ms CPU per image -> {1 / best:5.0f} img/s per core")


def agree(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    """The least cosine between the two vectors of each image both hold (ours keeps one
    file of identical ones)."""
    return float(min(np.dot(a[k], b[k]) for k in a.keys() & b.keys()))


def timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--encoder", default="efficientnet_lite0")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--actors", type=int, default=1,
                        help="encoder actors (num_cpus=1 each); keep CPUs free for reading and decoding")
    parser.add_argument("--address", help="an existing Ray cluster (default: a local one)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--decode", action="store_true", help="only measure the CPU cost of decoding")
    args = parser.parse_args()
    if args.decode:
        decode_cost(args.encoder)
        return
    if not args.address and os.environ.get("VISMEM_NETNS") != "1":
        script = HERE.parent / ".ci" / "with-milvus"
        os.execv(sys.executable, [sys.executable, str(script), "--no-server", "--",
                                  sys.executable, *sys.orig_argv[1:]])

    import ray

    ray.init(address=args.address, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    for name in ("ray", "ray.data"):  # after importing ray.data, which sets its loggers up
        logging.getLogger(name).setLevel(logging.WARNING)
    address = ray.get_runtime_context().gcs_address
    print(f"Ray {ray.__version__}: {ray.cluster_resources()}", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_photos(Path(tmp), args.images)
        warm = paths[: args.batch]
        bare_pipeline(warm, args.encoder, args.actors, args.batch)  # warm-up: workers, imports
        ours_pipeline(warm, args.encoder, args.actors, args.batch, Path(tmp) / "warm", address)
        bare_s, ours_s = [], []
        for round_ in range(args.repeats):  # alternated, so both see the same machine load
            bare, took = timed(bare_pipeline, paths, args.encoder, args.actors, args.batch)
            bare_s.append(took)
            ours, took = timed(ours_pipeline, paths, args.encoder, args.actors, args.batch,
                               Path(tmp) / f"mem{round_}", address)
            ours_s.append(took)
        loop, loop_s = timed(plain_loop, paths, args.encoder)
    ray.shutdown()
    n = args.images
    best_bare, best_ours = min(bare_s), min(ours_s)
    print(f"{n} photos, {args.encoder}, batch {args.batch}, {args.actors} encoder actor(s), best of {args.repeats}")
    print(f"vismem Ray ingestion (hash, skip known, decode, encode, commit):  {best_ours:6.1f} s  "
          f"{n / best_ours:6.1f} img/s")
    print(f"bare Ray Data (read_images -> map_batches(actor) -> take_all):    {best_bare:6.1f} s  "
          f"{n / best_bare:6.1f} img/s")
    print(f"plain loop in one process (decode -> encode):                    {loop_s:6.1f} s  {n / loop_s:6.1f} img/s")
    ratio = best_ours / best_bare
    print(f"vismem / bare Ray: {ratio:.2f}x ({'ok' if ratio <= 1.2 else 'above'} the 1.2x goal); "
          f"bare Ray / plain loop: {best_bare / loop_s:.2f}x")
    print(f"vectors agree: ours vs bare cosine >= {agree(ours, bare):.6f}, bare vs loop >= {agree(bare, loop):.6f}")


if __name__ == "__main__":
    main()

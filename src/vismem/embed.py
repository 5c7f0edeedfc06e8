"""The encoding pipeline: files -> bytes -> hash -> decoded pixels -> vectors.

Reading and hashing run in a thread ahead of the model. Decoding and resizing run
either in that thread too (Pillow releases the GIL, so it overlaps the forward pass) or,
when decoding is the slower half, in worker processes: `decode_workers` chooses, and by
default (None) it measures. The first batches are decoded in the thread while the CPU
time per image is measured against the model's time per image; when decoding is slower,
the rest goes to `ceil(decode / model)` worker processes, at most one per core. Either
way unreadable files are skipped with their reasons and results keep input order.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from .encoders import Encoder, Preprocessing
from .images import (
    DEFAULT_MAX_PIXELS,
    THUMBNAIL_SIZE,
    ImageFile,
    ImageReadError,
    Skipped,
    content_hash,
    decode_sized,
    not_a_file,
    shown,
    thumbnail_jpeg,
)

T = TypeVar("T")
log = logging.getLogger(__name__)


@dataclass
class PreparedImage:
    """A readable image file, decoded and preprocessed, not yet encoded.

    `pixels` is None when the content is already known (`known_as` names the item),
    in which case it was not decoded at all.
    """

    file: ImageFile
    content_hash: str
    pixels: np.ndarray | None = None
    thumbnail: bytes | None = None
    size: tuple[int, int] | None = None
    known_as: int | None = None


def prepare_files(
    files: Sequence[ImageFile],
    encoder: Encoder,
    *,
    lookup_hashes: Callable[[list[str]], Mapping[str, int]] | None = None,
    thumbnails: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> tuple[list[PreparedImage], list[Skipped]]:
    """Read, hash, decode and preprocess files; unreadable ones become `Skipped`.

    `lookup_hashes(digests)` says which contents are already stored (hash -> item id),
    asked once for all the files: those are not decoded.
    """
    prepared: list[PreparedImage] = []
    skipped: list[Skipped] = []
    for entry in _read_and_hash(files, lookup_hashes):
        if not isinstance(entry, tuple):
            (prepared if isinstance(entry, PreparedImage) else skipped).append(entry)
            continue
        file, data, digest = entry
        try:
            prepared.append(prepare_bytes(file, data, encoder, digest=digest, thumbnails=thumbnails,
                                          max_pixels=max_pixels))
        except ImageReadError as exc:
            skipped.append(Skipped(shown(file.path), str(exc)))
    return prepared, skipped


def prepare_bytes(
    file: ImageFile,
    data: bytes,
    encoder: Encoder,
    *,
    digest: str | None = None,
    known_hashes: Mapping[str, int] | None = None,
    thumbnails: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> PreparedImage:
    """Hash, decode and preprocess one image's bytes; raises ImageReadError.

    `file` only names the image (and gives its label): for uploaded bytes its path is
    the client's file name and is never opened. `digest`: the bytes' content hash, when
    the caller has already computed it.
    """
    digest = digest or content_hash(data)
    if known_hashes is not None and digest in known_hashes:
        return PreparedImage(file, digest, known_as=known_hashes[digest])
    pixels, thumbnail, size = decode_pixels(data, encoder.preprocessing, thumbnails, max_pixels)
    return PreparedImage(file, digest, pixels=pixels, thumbnail=thumbnail, size=size)


def decode_pixels(
    data: bytes, preprocessing: Preprocessing, thumbnails: bool, max_pixels: int
) -> tuple[np.ndarray, bytes | None, tuple[int, int]]:
    """Decode one image and preprocess it: (pixels, thumbnail or None, its upright size:
    the file's, not the draft's)."""
    draft = max(preprocessing.resize_size * 2, THUMBNAIL_SIZE)  # a thumbnail needs no more
    image, size = decode_sized(data, max_pixels=max_pixels, draft_size=draft)
    return preprocessing.apply(image), thumbnail_jpeg(image) if thumbnails else None, size


def decode_many(
    blobs: Sequence[bytes], preprocessing: Preprocessing, thumbnails: bool, max_pixels: int
) -> list[tuple[np.ndarray, bytes | None, tuple[int, int]] | str]:
    """`decode_pixels` for each blob, or the skip reason: what a worker process runs."""
    out: list = []
    for data in blobs:
        try:
            out.append(decode_pixels(data, preprocessing, thumbnails, max_pixels))
        except ImageReadError as exc:
            out.append(str(exc))
    return out


def batched(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# ---- decoding in worker processes ---------------------------------------------------------

def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def decode_pool(workers: int) -> Executor:
    """A pool of `workers` decoding processes (loky's reusable executor: started once,
    resized on demand, idle workers leave after a while). Its workers are fresh
    interpreters, never forks of this process, whose model runtime's threads would not
    survive a fork, and they do not re-run the caller's `__main__` script."""
    from loky import get_reusable_executor

    return get_reusable_executor(max_workers=workers, timeout=120)


def workers_for(decode_seconds: float, model_seconds: float, cpus: int) -> int:
    """Decode workers so decoding keeps up with the model, from measured seconds per
    image: none while one thread keeps up, else enough processes to cover the gap,
    at most one per core."""
    if decode_seconds <= model_seconds:
        return 0
    return max(1, min(cpus, math.ceil(decode_seconds / max(model_seconds, 1e-6))))


def _read_and_hash(files: Sequence[ImageFile],
                   lookup_hashes: Callable[[list[str]], Mapping[str, int]] | None) -> list:
    """Per file, in order: a PreparedImage already known, a Skipped, or (file, bytes, hash).

    `lookup_hashes(digests)` (hash -> item id of stored content) is asked once for all
    the files: a store on a server answers a batch as fast as one."""
    out: list = []
    for file in files:
        if not file.path.is_file():
            out.append(Skipped(shown(file.path), not_a_file(file.path)))
            continue
        try:
            data = file.path.read_bytes()
        except OSError as exc:
            out.append(Skipped(shown(file.path), f"unreadable: {exc.strerror or exc}"))
            continue
        out.append((file, data, content_hash(data)))
    digests = [e[2] for e in out if isinstance(e, tuple)]
    known = lookup_hashes(digests) if lookup_hashes is not None and digests else {}
    return [PreparedImage(e[0], e[2], known_as=known[e[2]]) if isinstance(e, tuple) and e[2] in known else e
            for e in out]


def prepare_in_workers(
    files: Sequence[ImageFile], preprocessing: Preprocessing, pool: Executor, parts: int, *,
    lookup_hashes: Callable[[list[str]], Mapping[str, int]] | None = None, thumbnails: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> tuple[list[PreparedImage], list[Skipped]]:
    """`prepare_files`, with decoding split into `parts` jobs for the worker pool."""
    entries = _read_and_hash(files, lookup_hashes)
    todo = [i for i, e in enumerate(entries) if isinstance(e, tuple)]
    step = max(1, math.ceil(len(todo) / max(1, parts)))
    jobs = [(todo[i : i + step], pool.submit(decode_many, [entries[j][1] for j in todo[i : i + step]],
                                             preprocessing, thumbnails, max_pixels))
            for i in range(0, len(todo), step)]
    for indices, job in jobs:
        for j, result in zip(indices, job.result(), strict=True):
            file, _, digest = entries[j]
            entries[j] = (Skipped(shown(file.path), result) if isinstance(result, str) else
                          PreparedImage(file, digest, pixels=result[0], thumbnail=result[1], size=result[2]))
    prepared = [e for e in entries if isinstance(e, PreparedImage)]
    return prepared, [e for e in entries if isinstance(e, Skipped)]


def prepare_in_batches(
    files: Sequence[ImageFile], encoder: Encoder, size: int, **options
) -> Iterator[tuple[Sequence[ImageFile], list[PreparedImage], list[Skipped]]]:
    """(batch, prepared, skipped) for each batch of `size` files, prepared two batches
    ahead of the model; `options` go to `prepare_files`. Decoding runs in the prefetch
    thread or in `encoder.runtime.decode_workers` processes (None: measured, see the
    module doc)."""
    chunks = list(batched(files, size))
    workers = encoder.runtime.decode_workers
    if workers is None and len(chunks) < 3:
        workers = 0  # too little work to measure, or to start processes for
    decode_cpu, decoded, model_wall, modelled = 0.0, 0, 0.0, 0
    # one thread decodes (as before workers); two threads feed the pool (read, hash, wait)
    with ThreadPoolExecutor(max_workers=1) as decoder, ThreadPoolExecutor(max_workers=2) as feeders:

        def submit(chunk: Sequence[ImageFile]) -> Future:
            if not workers:
                return decoder.submit(_timed, prepare_files, chunk, encoder, **options)
            return feeders.submit(_timed, prepare_in_workers, chunk, encoder.preprocessing,
                                  decode_pool(workers), workers, **options)

        pending: deque[tuple[Sequence[ImageFile], Future, bool]] = deque()
        queued = 0
        while queued < len(chunks) or pending:
            while queued < len(chunks) and len(pending) < 2:
                pending.append((chunks[queued], submit(chunks[queued]), not workers))
                queued += 1
            chunk, job, in_thread = pending.popleft()
            (prepared, skipped), cpu = job.result()
            if in_thread:
                decode_cpu += cpu
                decoded += len(chunk)
            started = time.perf_counter()
            yield chunk, prepared, skipped
            model_wall += time.perf_counter() - started
            modelled += len(chunk)
            if workers is None and decoded >= 2 * size and modelled >= size:
                workers = workers_for(decode_cpu / decoded, model_wall / modelled, usable_cpus())
                log.info("decode workers: %d (decoding %.1f ms CPU/image, model %.1f ms/image)",
                         workers, 1e3 * decode_cpu / decoded, 1e3 * model_wall / modelled)


def _timed(work, *args, **kwargs):
    """(work(*args, **kwargs), CPU seconds this thread spent on it)."""
    start = time.thread_time()
    result = work(*args, **kwargs)
    return result, time.thread_time() - start


def encode_prepared(encoder: Encoder, prepared: Sequence[PreparedImage]) -> np.ndarray:
    """Vectors (n, dim) for the prepared images that carry pixels, in order."""
    pixels = [p.pixels for p in prepared if p.pixels is not None]
    if not pixels:
        return np.empty((0, encoder.dim), dtype=np.float32)
    return encoder.embed_preprocessed(np.stack(pixels))

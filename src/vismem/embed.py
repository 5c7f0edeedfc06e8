"""The encoding pipeline: files -> bytes -> hash -> decoded pixels -> vectors.

Reading and decoding the next batch runs in a worker thread while the model encodes
the current one (Pillow and torch both release the GIL), so decoding is mostly hidden
behind the forward pass.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Mapping, Sequence, TypeVar

import numpy as np

from .encoders import Encoder, Preprocessing
from .images import (
    DEFAULT_MAX_PIXELS,
    ImageFile,
    ImageReadError,
    Skipped,
    content_hash,
    decode_image,
    thumbnail_jpeg,
)

T = TypeVar("T")
R = TypeVar("R")


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
    asked once for all the files: a store on a server answers a batch as fast as one.
    """
    prepared: list[PreparedImage] = []
    skipped: list[Skipped] = []
    read: list[tuple[ImageFile, bytes]] = []
    for file in files:
        try:
            read.append((file, file.path.read_bytes()))
        except OSError as exc:
            skipped.append(Skipped(str(file.path), f"unreadable: {exc.strerror or exc}"))
    known = lookup_hashes([content_hash(data) for _, data in read]) if lookup_hashes and read else {}
    for file, data in read:
        try:
            prepared.append(prepare_bytes(file, data, encoder, known_hashes=known,
                                          thumbnails=thumbnails, max_pixels=max_pixels))
        except ImageReadError as exc:
            skipped.append(Skipped(str(file.path), str(exc)))
    return prepared, skipped


def prepare_bytes(
    file: ImageFile,
    data: bytes,
    encoder: Encoder,
    *,
    known_hashes: Mapping[str, int] | None = None,
    thumbnails: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> PreparedImage:
    """Hash, decode and preprocess one image's bytes; raises ImageReadError.

    `file` only names the image (and gives its label): for uploaded bytes its path is
    the client's file name and is never opened.
    """
    digest = content_hash(data)
    if known_hashes is not None and digest in known_hashes:
        return PreparedImage(file, digest, known_as=known_hashes[digest])
    pixels, thumbnail, size = decode_pixels(data, encoder.preprocessing, thumbnails, max_pixels)
    return PreparedImage(file, digest, pixels=pixels, thumbnail=thumbnail, size=size)


def decode_pixels(
    data: bytes, preprocessing: Preprocessing, thumbnails: bool, max_pixels: int
) -> tuple[np.ndarray, bytes | None, tuple[int, int]]:
    """Decode one image and preprocess it: (pixels, thumbnail or None, decoded size)."""
    image = decode_image(data, max_pixels=max_pixels, draft_size=preprocessing.resize_size * 2)
    return preprocessing.apply(image), thumbnail_jpeg(image) if thumbnails else None, image.size


def batched(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def prefetched(work: Callable[[T], R], inputs: Iterable[T], depth: int = 2) -> Iterator[R]:
    """`map(work, inputs)` computed `depth` items ahead in one worker thread."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending: deque = deque()
        for item in inputs:
            pending.append(pool.submit(work, item))
            if len(pending) > depth:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def prepare_in_batches(
    files: Sequence[ImageFile], encoder: Encoder, size: int, **options
) -> Iterator[tuple[Sequence[ImageFile], list[PreparedImage], list[Skipped]]]:
    """(batch, prepared, skipped) for each batch of `size` files, prepared one batch
    ahead in a worker thread; `options` go to `prepare_files`."""
    chunks = list(batched(files, size))
    work = lambda chunk: prepare_files(chunk, encoder, **options)  # noqa: E731
    for chunk, (prepared, skipped) in zip(chunks, prefetched(work, chunks)):
        yield chunk, prepared, skipped


def encode_prepared(encoder: Encoder, prepared: Sequence[PreparedImage]) -> np.ndarray:
    """Vectors (n, dim) for the prepared images that carry pixels, in order."""
    pixels = [p.pixels for p in prepared if p.pixels is not None]
    if not pixels:
        return np.empty((0, encoder.dim), dtype=np.float32)
    return encoder.embed_preprocessed(np.stack(pixels))

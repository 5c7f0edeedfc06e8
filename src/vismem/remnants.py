"""Checking a removal: search every file of a memory for the removed items' bytes.

Before removing, take each item's fingerprints: its float32 vector as the store keeps it,
the float16 copy an fp16 HNSW or an IVF-PQ index keeps, the vector through the memory's
feature transform, the index's own copy, and its thumbnail JPEG. After the removal is
purged, `find_remnants` scans each file of the memory directory for them.

The scan reads each file once, as aligned 8-byte words. Each fingerprint gives 8 anchors,
the 8-byte windows starting at 8 consecutive offsets of its bytes: wherever it lies in a
file, one of them is a word. Words are hashed into a table of the anchors' hashes, the
few that hit are looked up exactly, and the whole fingerprint is compared at each match.
So the cost grows with the files' size, not with size x fingerprints: on a 1M-item 64-d
memory (0.9 GB), 1.0-1.5 s for the 2,000 fingerprints of 1,000 items, where one
`mmap.find` of a single fingerprint takes 0.1 s, and one per fingerprint would take about
190 s (`python benchmarks/verify.py`). The scan this replaced, 8 sorted lookups of every
word, one per offset modulo 8, took 53 s.
"""

from __future__ import annotations

import mmap
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

import faiss
import numpy as np

from .errors import ItemNotFoundError
from .maintenance import Report, unshown

if TYPE_CHECKING:
    from .memory import Memory
    from .transform import FeatureTransform

ANCHOR = 8  # bytes: one uint64
SPAN = 2 * ANCHOR - 1  # bytes of a fingerprint that hold its ANCHOR windows
CHUNK = 16 * 2**20  # bytes of a file scanned at once (a multiple of ANCHOR)
# Bits of the hash table of anchors: 32-64 slots per anchor (a word that is no anchor hits
# one 1 time in 32-64), from 1 Mi flags (1 MB) up to 16 Mi. Measured on 160 MB of 64-d
# items with 411k anchors: 2.2 s at 20 bits, 1.3 s at 24.
HASH_BITS_MIN, HASH_BITS_MAX = 20, 24
GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # 2**64 / golden ratio
PRINT_BATCH = 10_000  # items whose fingerprints are taken at once (read in one query each)


@dataclass(frozen=True)
class Fingerprint:
    """Bytes that only a removed item should have put in the memory's files."""

    item_id: int
    # "vector", "vector-fp16", "vector-searched(-fp16)" (through a transform), "vector-indexed"
    # (the index's own copy, where it differs from all of those) or "thumbnail"
    kind: str
    data: bytes
    content_hash: str | None = None


@dataclass(frozen=True)
class Remnant:
    """A fingerprint found in a file after the removal."""

    file: str
    offset: int
    item_id: int
    kind: str

    def to_dict(self) -> dict:
        return {"file": self.file, "offset": self.offset, "id": self.item_id, "kind": self.kind}


def fingerprints(memory: Memory, ids: Iterable[int], *, report: Report = unshown) -> list[Fingerprint]:
    """The removable bytes of these items: vector (float32 and float16), the vector as the
    index holds it when a feature transform is in force, and thumbnail. Taken PRINT_BATCH
    items at a time; `report(description, total items)` (maintenance.Report) shows them
    (about 2 s per 100k items)."""
    ids = sorted({int(i) for i in ids})
    transform = memory.transform
    prints: list[Fingerprint] = []
    with report("verifying: taking the removed items' fingerprints", len(ids)) as advance:
        for start in range(0, len(ids), PRINT_BATCH):
            batch = ids[start : start + PRINT_BATCH]
            prints += _fingerprints_of(memory, transform, batch)
            advance(len(batch))
    return prints


def _fingerprints_of(memory: Memory, transform: FeatureTransform, ids: list[int]) -> list[Fingerprint]:
    found, vectors = memory.vectors(ids)
    searched = None if transform.is_identity else transform.apply(vectors)
    hashes = {item.id: item.content_hash for item in memory.items(ids)}
    halves = _float16_as_faiss_keeps(vectors)
    searched_halves = None if searched is None else _float16_as_faiss_keeps(searched)
    # The index's own bytes too: a vector it keeps through a transform was computed in the
    # batch it was added or rebuilt with, and BLAS sums in an order that depends on the
    # batch, so computing it again here may differ in its last bits (with `whiten`, 274 of
    # 300 items' copies were not found that way).
    indexed_ids, indexed_bytes = memory.index_bytes(ids)
    indexed = dict(zip(indexed_ids.tolist(), indexed_bytes, strict=True))
    prints: list[Fingerprint] = []
    for row, (item_id, vector) in enumerate(zip(found.tolist(), vectors, strict=True)):
        digest = hashes.get(item_id)
        made = [Fingerprint(item_id, "vector", vector.tobytes(), digest),
                Fingerprint(item_id, "vector-fp16", halves[row].tobytes(), digest)]
        if searched is not None and searched_halves is not None:
            made.append(Fingerprint(item_id, "vector-searched", searched[row].tobytes(), digest))
            made.append(Fingerprint(item_id, "vector-searched-fp16", searched_halves[row].tobytes(), digest))
        held = indexed[item_id].tobytes() if item_id in indexed else None
        if held is not None and all(held != p.data for p in made):
            made.append(Fingerprint(item_id, "vector-indexed", held, digest))
        prints += made
        try:
            jpeg = memory.thumbnail(item_id)
        except ItemNotFoundError:  # removed by another process since its vector was read
            jpeg = None
        if jpeg is not None:
            prints.append(Fingerprint(item_id, "thumbnail", jpeg, digest))
    return prints


def _float16_as_faiss_keeps(vectors: np.ndarray) -> np.ndarray:
    """Float16 copies of float32 rows as an fp16 HNSW or IVF-PQ's re-ranking store keeps
    them: FAISS's float16 scalar quantizer, whose rounding differs from numpy's
    `astype(np.float16)` in some values (1 vector in 200 at 64-d had one such value, and
    its copy in the index was not found)."""
    rows = np.ascontiguousarray(vectors, dtype=np.float32)
    return faiss.IndexScalarQuantizer(rows.shape[1], faiss.ScalarQuantizer.QT_fp16).sa_encode(rows)


def holders(prints: list[Fingerprint], memory: Memory) -> dict[int, int]:
    """After a removal: removed item id -> a surviving item that holds the same content
    (the image or vector added again with `allow_duplicates`), for the removed items that
    have one: their bytes stay in the memory's files with it."""
    if not prints:  # nothing to check (remove without --verify): ask the store nothing
        return {}
    held = memory.known_content([p.content_hash for p in prints if p.content_hash is not None])
    return {p.item_id: held[p.content_hash] for p in prints if p.content_hash is not None and p.content_hash in held}


def unshared(prints: list[Fingerprint], memory: Memory, held: dict[int, int] | None = None) -> list[Fingerprint]:
    """After a removal: the fingerprints no surviving item shares (`held`: `holders`, if
    taken already). An image added twice (`allow_duplicates`) leaves the same vector and
    thumbnail with the copy that stays, so that content is not evidence of a failed removal."""
    held = holders(prints, memory) if held is None else held
    return [p for p in prints if p.item_id not in held]


def _anchor_at(data: bytes) -> int | None:
    """Offset of ANCHOR windows of ANCHOR bytes in a row (at, at + 1, ...) of `data`, each
    varied enough not to match filler bytes, looked for from the middle on first (a JPEG's
    first bytes are every JPEG's). Wherever `data` lies in a file, one of them is aligned."""
    starts = range(0, len(data) - SPAN + 1, ANCHOR)
    middle = len(starts) // 2
    for start in (*starts[middle:], *starts[:middle]):
        if all(len(set(data[start + j : start + j + ANCHOR])) >= 6 for j in range(ANCHOR)):
            return start
    return None


class _Anchors:
    """The fingerprints' anchors, worked out once for every file: a key per anchor (its 8
    bytes as a word), sorted, with the fingerprint and offset it belongs to, and the table
    of the keys' hashes; and the fingerprints with none, to be found by `find`."""

    def __init__(self, prints: list[Fingerprint]) -> None:
        anchored = [(p, _anchor_at(p.data)) for p in prints]
        self.unanchored = [p for p, at in anchored if at is None]  # rare: a tiny or mostly-zero vector
        self.prints = [p for p, at in anchored if at is not None]
        self.starts = np.array([at for _, at in anchored if at is not None], np.int64)
        spans = np.frombuffer(b"".join(p.data[at : at + SPAN] for p, at in anchored if at is not None),
                              np.uint8).reshape(-1, SPAN)
        windows = np.lib.stride_tricks.sliding_window_view(spans, ANCHOR, axis=1)  # (prints, ANCHOR, ANCHOR)
        keys = np.ascontiguousarray(windows).view(np.uint64).ravel()  # print i's window j at i * ANCHOR + j
        self.order = np.argsort(keys, kind="stable")
        self.keys = keys[self.order]
        self.bits = min(max(int(len(keys)).bit_length() + 5, HASH_BITS_MIN), HASH_BITS_MAX)
        self.table = np.zeros(1 << self.bits, bool)
        self.table[_hashes(self.keys, self.bits)] = True

    def scan(self, view: mmap.mmap, advance: Callable[[int], None]) -> Iterator[tuple[int, Fingerprint]]:
        """(offset, fingerprint) of every occurrence in the file (the first, for one with no anchor)."""
        for p in self.unanchored:
            hit = view.find(p.data)
            if hit >= 0:
                yield hit, p
        if not self.prints:
            advance(len(view))
            return
        keys, order = self.keys, self.order
        for anchor_pos, first in _aligned_hits(view, keys, self.table, self.bits, advance):
            for k in range(first, len(keys)):  # every anchor sharing this word
                if keys[k] != keys[first]:
                    break
                i, j = divmod(int(order[k]), ANCHOR)
                p = self.prints[i]
                begin = anchor_pos - int(self.starts[i]) - j
                if begin >= 0 and view[begin : begin + len(p.data)] == p.data:
                    yield begin, p


def _aligned_hits(view: mmap.mmap, keys: np.ndarray, table: np.ndarray, bits: int,
                  advance: Callable[[int], None]) -> Iterator[tuple[int, int]]:
    """(offset, first index in sorted `keys`) of every 8-aligned word of the file equal to a
    key, CHUNK bytes at a time. A hash of each word into `table`, the keys' `bits`-bit
    hashes (one multiply, one lookup), leaves the few candidates to the sorted lookup."""
    size = len(view)
    for start in range(0, size, CHUNK):  # CHUNK is a multiple of ANCHOR: words stay aligned
        words = np.frombuffer(view, np.uint64, min(CHUNK, size - start) // ANCHOR, start)
        maybe = np.flatnonzero(table[_hashes(words, bits)])
        candidates = words[maybe]
        slots = np.searchsorted(keys, candidates).clip(max=len(keys) - 1)
        for at in np.flatnonzero(keys[slots] == candidates):
            yield start + int(maybe[at]) * ANCHOR, int(slots[at])
        advance(min(CHUNK, size - start))


def _hashes(words: np.ndarray, bits: int) -> np.ndarray:
    """A `bits`-bit hash of each uint64 word (Fibonacci hashing: the top bits of a product)."""
    product = np.multiply(words, GOLDEN)  # wraps around modulo 2**64, as intended
    return np.right_shift(product, np.uint64(64 - bits), out=product)


def find_remnants(directory: str | Path, prints: list[Fingerprint], *,
                  report: Report = unshown) -> tuple[list[Remnant], int, int]:
    """Every place a fingerprint occurs in the files under `directory`.

    Returns (remnants, files scanned, bytes scanned). `report(description, total bytes)`
    (maintenance.Report) shows the bytes read.
    """
    files = [path for path in sorted(Path(directory).rglob("*")) if path.is_file()]
    sizes = [path.stat().st_size for path in files]
    anchors = _Anchors(prints)
    remnants: list[Remnant] = []
    with report("verifying: reading every file", sum(sizes)) as advance:
        for path in files:
            for offset, p in _found_in(path, anchors if prints else None, advance):
                remnants.append(Remnant(str(path.relative_to(directory)), offset, p.item_id, p.kind))
    return remnants, len(files), sum(sizes)


def _found_in(path: Path, anchors: _Anchors | None, advance: Callable[[int], None]) -> list[tuple[int, Fingerprint]]:
    """(offset, fingerprint) of every fingerprint in the file, by offset (None: none to look for)."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size  # as it is now (a log may have grown)
        if size == 0 or anchors is None:
            advance(size)
            return []
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as view:
            return sorted(anchors.scan(view, advance), key=lambda hit: hit[0])

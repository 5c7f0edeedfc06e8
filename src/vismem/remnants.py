"""Checking a removal: search every file of a memory for the removed items' bytes.

Before removing, take each item's fingerprints: its float32 vector as the store keeps it,
the float16 copy an fp16 HNSW or an IVF-PQ index keeps, and its thumbnail JPEG. After the
removal is purged, `find_remnants` scans each file of the memory directory for them.

The scan looks for an 8-byte anchor of each fingerprint at every byte offset at once
(numpy, one sorted lookup per offset modulo 8), then compares the whole fingerprint at
each hit, so its cost grows with the files' size, not with size x fingerprints.
"""

from __future__ import annotations

import mmap
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator

import numpy as np

if TYPE_CHECKING:
    from .memory import Memory

ANCHOR = 8  # bytes: one uint64
CHUNK = 64 * 2**20  # bytes of a file scanned at once


@dataclass(frozen=True)
class Fingerprint:
    """Bytes that only a removed item should have put in the memory's files."""

    item_id: int
    kind: str  # "vector", "vector-fp16", "vector-searched(-fp16)" (through a transform) or "thumbnail"
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


def fingerprints(memory: Memory, ids: Iterable[int]) -> list[Fingerprint]:
    """The removable bytes of these items: vector (float32 and float16), the vector as the
    index holds it when a feature transform is in force, and thumbnail."""
    ids = sorted({int(i) for i in ids})
    found, vectors = memory.vectors(ids)
    transform = memory.transform
    searched = None if transform.is_identity else transform.apply(vectors)
    hashes = {item.id: item.content_hash for item in memory.items(ids)}
    prints: list[Fingerprint] = []
    for row, (item_id, vector) in enumerate(zip(found.tolist(), vectors, strict=True)):
        digest = hashes.get(item_id)
        prints.append(Fingerprint(item_id, "vector", vector.tobytes(), digest))
        prints.append(Fingerprint(item_id, "vector-fp16", vector.astype(np.float16).tobytes(), digest))
        if searched is not None:
            prints.append(Fingerprint(item_id, "vector-searched", searched[row].tobytes(), digest))
            prints.append(Fingerprint(item_id, "vector-searched-fp16", searched[row].astype(np.float16).tobytes(),
                                      digest))
        jpeg = memory.thumbnail(item_id)
        if jpeg is not None:
            prints.append(Fingerprint(item_id, "thumbnail", jpeg, digest))
    return prints


def unshared(prints: list[Fingerprint], memory: Memory) -> list[Fingerprint]:
    """After a removal: the fingerprints no surviving item shares. An image added twice
    (`allow_duplicates`) leaves the same vector and thumbnail with the copy that stays,
    so that content is not evidence of a failed removal."""
    if not prints:  # nothing to check (remove without --verify): ask the store nothing
        return []
    held = memory.known_content([p.content_hash for p in prints if p.content_hash is not None])
    return [p for p in prints if p.content_hash is None or p.content_hash not in held]


def _anchor_at(data: bytes) -> int | None:
    """Offset of an 8-byte window of `data` varied enough not to match filler bytes,
    looked for from the middle on first (a JPEG's first bytes are every JPEG's)."""
    starts = range(0, len(data) - ANCHOR + 1, ANCHOR)
    middle = len(starts) // 2
    for start in (*starts[middle:], *starts[:middle]):
        if len(set(data[start : start + ANCHOR])) >= 6:
            return start
    return None


def _scan(view: mmap.mmap, prints: list[Fingerprint]) -> Iterator[tuple[int, Fingerprint]]:
    anchored = [(p, _anchor_at(p.data)) for p in prints]
    for p, at in anchored:  # rare: no varied window, e.g. a vector of mostly zeros
        if at is None:
            hit = view.find(p.data)
            if hit >= 0:
                yield hit, p
    found = [(p, at) for p, at in anchored if at is not None]
    if not found:
        return
    keys = np.array([np.frombuffer(p.data, np.uint64, 1, at)[0] for p, at in found], np.uint64)
    order = np.argsort(keys)
    keys = keys[order]
    for anchor_pos, j in _anchor_hits(view, keys):
        for k in range(j, len(keys)):  # every fingerprint sharing this anchor word
            if keys[k] != keys[j]:
                break
            p, at = found[order[k]]
            begin = anchor_pos - at
            if begin >= 0 and view[begin : begin + len(p.data)] == p.data:
                yield begin, p


def _anchor_hits(view: mmap.mmap, keys: np.ndarray) -> Iterator[tuple[int, int]]:
    """(offset, first index in sorted `keys`) of every 8-byte word of the file equal to a
    key, at every byte alignment: numpy over CHUNK bytes at a time."""
    size = len(view)
    for start in range(0, size, CHUNK):
        chunk = np.frombuffer(view, np.uint8, min(CHUNK + ANCHOR - 1, size - start), start)
        for shift in range(ANCHOR):
            usable = (len(chunk) - shift) // ANCHOR * ANCHOR
            if usable <= 0:
                continue
            words = chunk[shift : shift + usable].view(np.uint64)
            slots = np.searchsorted(keys, words).clip(max=len(keys) - 1)
            for word in np.flatnonzero(keys[slots] == words):
                anchor_pos = start + shift + int(word) * ANCHOR
                if anchor_pos < start + CHUNK:  # else the next chunk owns it
                    yield anchor_pos, int(slots[word])


def find_remnants(directory: str | Path, prints: list[Fingerprint]) -> tuple[list[Remnant], int, int]:
    """Every place a fingerprint occurs in the files under `directory`.

    Returns (remnants, files scanned, bytes scanned).
    """
    remnants: list[Remnant] = []
    files = scanned = 0
    for path in sorted(Path(directory).rglob("*")):
        if not path.is_file():
            continue
        files += 1
        with open(path, "rb") as f:
            size = path.stat().st_size
            scanned += size
            if size == 0 or not prints:
                continue
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as view:
                for offset, p in sorted(_scan(view, prints), key=lambda hit: hit[0]):
                    remnants.append(Remnant(str(path.relative_to(directory)), offset, p.item_id, p.kind))
    return remnants, files, scanned

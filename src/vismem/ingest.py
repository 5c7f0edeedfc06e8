"""Ingestion: image files, uploaded bytes or PIL images -> new items in a store (or,
for a query, vectors only: `Ingestor.embed`).

    files / bytes / PIL --prepare (read, hash, decode)--> encode --> NewItem --> store.insert

Content already in the store is recognised by its SHA-256 before it is decoded, so
re-adding a folder encodes nothing twice. The store itself refuses duplicates inside
its write, so two processes adding the same folder at once still add each image once.
With `allow_duplicates`, known content is added again as a copy that reuses the stored
vector and thumbnail.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
from PIL import Image

from .embed import PreparedImage, batched, encode_prepared, prepare_bytes, prepare_files, prepare_in_batches
from .encoders import Encoder
from .errors import InvalidInputError, brief_repr, committed, whole_number
from .images import (DEFAULT_MAX_PIXELS, HELD_BY_THE_MEMORY, ImageFile, ImageReadError, Skipped, content_hash,
                     find_images, shown, upright_rgb)
from .store import NewItem, Store, check_label, check_meta, check_source
from .store.base import InsertResult, canonical, check_printable

Progress = Callable[[int], None]

# An embedding of all zeros (a uniform image, under an encoder that sees only its contrast) has no
# direction, so no cosine distance to anything: such images are skipped, never stored or voted on.
NO_DIRECTION = "its embedding is all zeros (a uniform image?): it has no direction to compare"

# Content already held under another label is not added (the same vector would vote for
# two labels), but neither is it a plain duplicate to pass over: the user's label for it
# would be lost without a word. It is refused as a conflict that names both labels and the fixes.
CONFLICT = "conflicting label"
# reasons for which an input was read but not added (unlabelled, blank, its copy removed,
# its path no source: `Ingestor.files`)
NOT_UNREADABLE = ("no label", "folder name is no label", NO_DIRECTION, "its copy", "source ")


# Metadata keys an image add writes itself, from each image: given for every image, a value
# would stand in for the measured one (`--meta width=5` on every image, whatever its size).
MEASURED = ("width", "height")
UPLOADED = (*MEASURED, "name")  # and an upload's file name (`add_bytes`, the service)


def reserved_meta(meta: Mapping[str, Any] | None, reserved: Sequence[str] = MEASURED) -> str | None:
    """Why `meta` given for every image of an add cannot be (None: it can): it names a key
    the add sets from each image."""
    taken = [key for key in reserved if key in (meta or {})]
    if not taken:
        return None
    return (f"metadata key{'s' if len(taken) > 1 else ''} {', '.join(map(repr, taken))} "
            f"{'are' if len(taken) > 1 else 'is'} set from each image ({', '.join(reserved)} are reserved): "
            f"give {'them' if len(taken) > 1 else 'it'} another name, e.g. 'given_{taken[0]}'")


def check_image_meta(meta: Mapping[str, Any] | None, reserved: Sequence[str] = MEASURED) -> None:
    """Refuse metadata for an image add that is not storable or names a key the add sets itself."""
    check_meta(meta or {})
    problem = reserved_meta(meta, reserved)
    if problem:
        raise InvalidInputError(problem)


def conflict_reason(held: int, held_label: str, label: str) -> str:
    return (f"{CONFLICT}: item {held} holds this content labelled {held_label!r}, not {label!r}; "
            f"relabel item {held} if {label!r} is right, or allow duplicates to add a copy")


@contextmanager
def told_if_cut_off(tell: Callable[[InsertResult], None]) -> Iterator[None]:
    """Around one batch's insert: Ctrl-C (or SIGTERM) once its commit was made, which the
    store marks with what the batch added (`errors.committed`), tells `tell` that, as the
    insert would have returned it, before the interrupt goes on: a caller's report that
    ends there names every item the memory holds."""
    try:
        yield
    except KeyboardInterrupt as exc:
        cut = getattr(exc, "done", None)
        if isinstance(cut, InsertResult):
            tell(cut)
        raise


def split_conflicts(store: Store, duplicates: Sequence[tuple[int, int]], labels: Sequence[str | None]
                    ) -> tuple[list[tuple[int, int]], list[tuple[int, int, str]]]:
    """The refused inputs `duplicates` (position, id of the item holding its content) as
    (plain duplicates, conflicts): an input is a conflict when its label, labels[position],
    is not the holding item's; a conflict is (position, held id, held label)."""
    wanted = sorted({held for _, held in duplicates})
    held_labels = {item.id: item.label for item in store.items(wanted)} if wanted else {}
    same: list[tuple[int, int]] = []
    conflicts: list[tuple[int, int, str]] = []
    for position, held in duplicates:
        label = labels[position]
        held_label = held_labels.get(held, label)  # removed meanwhile: no label to conflict with
        if label is None or held_label is None or canonical(held_label) == canonical(label):
            same.append((position, held))
        else:
            conflicts.append((position, held, held_label))
    return same, conflicts


def _held_apart(prepared: list[PreparedImage]) -> tuple[list[PreparedImage], list[Skipped]]:
    """(the prepared images whose content the store lacks, the others as skipped)."""
    held = [Skipped(shown(p.file.path), f"{HELD_BY_THE_MEMORY} as item {p.known_as}")
            for p in prepared if p.known_as is not None]
    return [p for p in prepared if p.known_as is None], held


def _in_order(images: Sequence[str | Path | Image.Image], vectors: np.ndarray, kept: list[int],
              skipped: list[Skipped]) -> tuple[np.ndarray, list[int], list[Skipped]]:
    """`Ingestor.embed`'s answer: the vectors kept in input order, less those with no
    direction, which join the skipped, in input order too."""
    named = [shown(Path(p)) if not isinstance(p, Image.Image) else f"image {i}" for i, p in enumerate(images)]
    blank = [i for i in kept if not vectors[i].any()]
    kept = sorted(set(kept) - set(blank))
    skipped = skipped + [Skipped(named[i], NO_DIRECTION) for i in blank]
    order = {name: i for i, name in enumerate(named)}
    skipped.sort(key=lambda s: order.get(s.path, len(images)))
    return vectors[kept], kept, skipped


@dataclass
class AddReport:
    """What an add did: new ids, and every input it did not add, with why."""

    added: list[int] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)

    __repr__ = brief_repr  # long lists shown by their ends and length

    @property
    def duplicates(self) -> list[Skipped]:
        return [s for s in self.skipped if s.reason.startswith("duplicate")]

    @property
    def conflicts(self) -> list[Skipped]:
        """Content already held under another label: not added, the user's label not taken."""
        return [s for s in self.skipped if s.reason.startswith(CONFLICT)]

    @property
    def errors(self) -> list[Skipped]:
        """Skipped for being unreadable, unlabelled or a conflicting label (not merely duplicates)."""
        return [s for s in self.skipped if not s.reason.startswith("duplicate")]

    def refusal(self) -> str | None:
        """Why this add is an error, or None: every input was refused (unreadable,
        unlabelled), none of them held already under any label, so nothing changed. The
        CLI exits 1 with it, the service answers 422; an add of inputs all held already
        with their label is done already, and a conflict is said as each skip is."""
        if self.added or not self.skipped or len(self.errors) < len(self.skipped) or self.conflicts:
            return None
        n = len(self.skipped)
        which = "the file given could not" if n == 1 else f"none of the {n:,} files given could"
        if any(s.reason.startswith(NOT_UNREADABLE) for s in self.skipped):
            return f"{which} be added: nothing changed"
        return f"{which} be read: nothing added"

    def merge(self, other: AddReport) -> None:
        self.added += other.added
        self.skipped += other.skipped

    def to_dict(self) -> dict[str, Any]:
        return {"added": len(self.added), "ids": self.added, "skipped": len(self.skipped),
                "conflicts": len(self.conflicts),
                "skipped_items": [{"path": s.path, "reason": s.reason} for s in self.skipped]}


def listed(inputs: Any, taker: str) -> list:
    """Inputs as a list: one path (or PIL image) given alone is one input, not its characters;
    None or a number is refused naming `taker`, where list() raised a TypeError."""
    if isinstance(inputs, (str, os.PathLike, Image.Image)):
        return [inputs]
    try:
        return list(inputs)
    except TypeError:
        raise InvalidInputError(f"{taker} takes a list of images, or one alone, got {type(inputs).__name__}") from None


def _named_bytes(images: Any) -> list[tuple[str, bytes]]:
    """`add_image_bytes`'s (name, bytes) pairs as a list, or InvalidInputError saying what they
    are: bytes alone, or a pair alone, failed while unpacking with a ValueError or TypeError."""
    how = "add_image_bytes takes a list of (name, bytes) pairs, e.g. [('cat.jpg', data)]"
    if isinstance(images, (bytes, bytearray, memoryview, str)) or not isinstance(images, Iterable):
        raise InvalidInputError(f"{how}, got {type(images).__name__}")
    pairs = list(images)
    for position, pair in enumerate(pairs):
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and isinstance(pair[0], str)
                and isinstance(pair[1], (bytes, bytearray, memoryview))):
            shown = (f"a {type(pair).__name__} of ({', '.join(type(x).__name__ for x in pair)})"
                     if isinstance(pair, (tuple, list)) and len(pair) <= 4 else type(pair).__name__)
            raise InvalidInputError(f"{how}; entry {position} is {shown}")
    return pairs


def check_batch_size(batch_size: int | None) -> None:
    """Refuse a batch size that is not a positive integer (None: the encoder's)."""
    if batch_size is not None:
        _check_positive("batch_size", batch_size)


def check_max_pixels(max_pixels: int) -> None:
    """Refuse a pixel limit that is not a positive integer: 0 would skip every image as a
    decompression bomb, a text fail inside the decoder."""
    _check_positive("max_pixels", max_pixels)


def _check_positive(name: str, value: Any) -> None:
    if not whole_number(value) or value < 1:
        raise InvalidInputError(f"{name} must be a positive integer, got {value!r}")


class Ingestor:
    """Turns images into committed items of one store, with one encoder.

    `commit(items, allow_duplicates)` writes a batch (the memory's commit path) and
    returns the store's `InsertResult`.
    """

    def __init__(self, store: Store, encoder: Encoder, commit: Callable[..., Any]) -> None:
        self.store = store
        self.encoder = encoder
        self._commit = commit

    def embed(self, images: Sequence[str | Path | Image.Image], *, max_pixels: int = DEFAULT_MAX_PIXELS,
              leave_out_held: bool = False, progress: Progress | None = None,
              on_held: Callable[[int, int], None] | None = None) -> tuple[np.ndarray, list[int], list[Skipped]]:
        """Vectors for image paths or PIL images, adding nothing: (vectors, positions kept,
        skipped). Content already in the store reuses its stored vector, as an add does, and
        is told to `on_held(position, item id)`; with `leave_out_held`, a file of such content
        is skipped instead (reason HELD_BY_THE_MEMORY...), for measures that a query finding
        itself would falsify."""
        check_max_pixels(max_pixels)
        encoder = self.encoder
        told = on_held or (lambda position, item_id: None)
        vectors = np.empty((len(images), encoder.dim), dtype=np.float32)
        kept: list[int] = []
        skipped: list[Skipped] = []
        pil: list[tuple[int, Image.Image]] = []
        for i, image in enumerate(images):
            if isinstance(image, Image.Image):
                try:
                    pil.append((i, upright_rgb(image)))
                except ImageReadError as exc:  # a mode that cannot be shown faithfully
                    skipped.append(Skipped(f"image {i}", str(exc)))
        if pil:
            vectors[[i for i, _ in pil]] = encoder.encode([im for _, im in pil])
            kept += [i for i, _ in pil]
        on_disk = [(i, ImageFile(Path(p), None)) for i, p in enumerate(images) if not isinstance(p, Image.Image)]
        position = {id(f): i for i, f in on_disk}
        with self.store.hash_lookup() as lookup:  # asked from the pipeline's thread
            batches = prepare_in_batches([f for _, f in on_disk], encoder, encoder.batch_size,
                                         lookup_hashes=lookup, max_pixels=max_pixels)
            for chunk, prepared, bad in batches:
                skipped += bad
                prepared, held = _held_apart(prepared) if leave_out_held else (prepared, [])
                skipped += held
                fresh = iter(encode_prepared(encoder, prepared))
                reuse = [int(p.known_as) for p in prepared if p.known_as is not None]
                stored: dict[int, np.ndarray] = {}
                if reuse:
                    found, rows = self.store.vectors(reuse)
                    stored = dict(zip(found.tolist(), rows, strict=True))
                for p in prepared:
                    i = position[id(p.file)]
                    if p.known_as is None:
                        vectors[i] = next(fresh)
                    elif p.known_as in stored:
                        vectors[i] = stored[p.known_as]
                        told(i, int(p.known_as))
                    else:  # removed since the lookup: read and encode it after all
                        redone, more = prepare_files([p.file], encoder, max_pixels=max_pixels)
                        skipped += more
                        if not redone:
                            continue
                        vectors[i] = encode_prepared(encoder, redone)[0]
                    kept.append(i)
                if progress:
                    progress(len(chunk))
        return _in_order(images, vectors, kept, skipped)

    def add_files(self, paths: Sequence[str | Path], *, label: str | None = None, source: str | None = None,
                  batch_size: int | None = None, allow_duplicates: bool = False,
                  meta: Mapping[str, Any] | None = None, max_pixels: int = DEFAULT_MAX_PIXELS,
                  progress: Progress | None = None,
                  on_commit: Callable[[list[int]], None] | None = None) -> AddReport:
        """Add files and folders; each batch is one committed transaction."""
        if label is not None:
            check_label(label)
        check_image_meta(meta)  # before any image is encoded
        check_batch_size(batch_size)
        check_max_pixels(max_pixels)
        if source is not None:
            check_source(source)
        report = AddReport()
        files = self.files(paths, label=label, source=source, report=report, progress=progress)
        source_of = {id(f): src for f, src in files}
        # the next batch is read and looked up in a thread while this one commits
        with self.store.hash_lookup() as lookup:
            for chunk, prepared, skipped in prepare_in_batches(
                    [f for f, _ in files], self.encoder, batch_size or self.encoder.batch_size,
                    lookup_hashes=lookup, thumbnails=True, max_pixels=max_pixels):
                report.skipped += skipped
                self.commit_encoded(prepared, encode_prepared(self.encoder, prepared),
                                    lambda p: source_of[id(p.file)], report, allow_duplicates=allow_duplicates,
                                    meta=meta, on_commit=on_commit)
                if progress:
                    progress(len(chunk))
        return report

    @staticmethod
    def files(paths: Sequence[str | Path], *, label: str | None, source: str | None,
              report: AddReport, progress: Progress | None = None) -> list[tuple[ImageFile, str]]:
        """The image files under `paths` with the source each takes (default: the path given);
        files that cannot be labelled go to `report` as skipped, and those of a path that is
        no source to `progress` as done (a total counts every image file found)."""
        files: list[tuple[ImageFile, str]] = []
        for root in paths:
            found, skipped = find_images([root], label=label)
            report.skipped += skipped
            given = source if source is not None else str(root)
            try:
                check_source(given)
            except InvalidInputError as exc:  # a path may hold a tab or ESC: skip its images, not the whole add
                report.skipped += [Skipped(shown(f.path), f"{exc}: pass --source (source=) or rename it")
                                   for f in found]
                if progress and found:
                    progress(len(found))
                continue
            files += [(f, given) for f in found]
        return files

    def commit_encoded(self, prepared: Sequence[PreparedImage], vectors: np.ndarray,
                       source_of: Callable[[PreparedImage], str], report: AddReport, *,
                       allow_duplicates: bool = False, meta: Mapping[str, Any] | None = None,
                       on_commit: Callable[[list[int]], None] | None = None) -> None:
        """Commit image files prepared and encoded (here, or on a Ray cluster) in one
        transaction, into `report`, and tell `on_commit` the new ids; `vectors` has a row
        per prepared image that carries no `known_as`. Interrupted (Ctrl-C) after its
        commit, the batch is added to `report` and told all the same: a report that ends
        there names every item the memory holds."""
        def cut(result: InsertResult) -> None:
            report.added += result.ids
            if on_commit and result.ids:
                on_commit(result.ids)

        with told_if_cut_off(cut):
            done = self._insert(prepared, vectors, source_of, allow_duplicates, meta=meta, keep_paths=True)
        report.merge(done)
        if on_commit and done.added:
            on_commit(done.added)

    def add_bytes(self, images: Sequence[tuple[str, bytes]], *, label: str, source: str,
                  allow_duplicates: bool = False, max_pixels: int = DEFAULT_MAX_PIXELS,
                  meta: Mapping[str, Any] | None = None) -> AddReport:
        """Add images given as (name, bytes), e.g. uploads. The name is only shown, never opened;
        `meta` is stored with each, as `add_prepared` stores it."""
        check_label(label)
        check_source(source)
        check_max_pixels(max_pixels)
        check_image_meta(meta, UPLOADED)  # before the first batch commits
        images = _named_bytes(images)
        for name, _ in images:  # kept as meta["name"]: each is checked before the first batch commits
            check_printable("image name", name, "names are")
        report = AddReport()
        for chunk in batched(list(images), self.encoder.batch_size):
            prepared: list[PreparedImage] = []
            digests = [content_hash(data) for _, data in chunk]
            known = self.store.known_hashes(digests)
            for (name, data), digest in zip(chunk, digests, strict=True):
                try:
                    prepared.append(prepare_bytes(ImageFile(Path(name), label), data, self.encoder,
                                                  digest=digest, known_hashes=known, thumbnails=True,
                                                  max_pixels=max_pixels))
                except ImageReadError as exc:
                    report.skipped.append(Skipped(name, str(exc)))
            report.merge(self.add_prepared(prepared, encode_prepared(self.encoder, prepared),
                                           source=source, allow_duplicates=allow_duplicates, meta=meta))
        return report

    def add_prepared(self, prepared: Sequence[PreparedImage], vectors: np.ndarray, *, source: str,
                     allow_duplicates: bool = False, meta: Mapping[str, Any] | None = None) -> AddReport:
        """Insert images already prepared and encoded elsewhere (the service batches encoding
        across requests); `vectors` has a row per prepared image that carries pixels."""
        check_image_meta(meta, UPLOADED)
        return self._insert(prepared, vectors, lambda p: source, allow_duplicates, meta=meta, keep_paths=False)

    def _insert(self, prepared: Sequence[PreparedImage], vectors: np.ndarray,
                source_of: Callable[[PreparedImage], str], allow_duplicates: bool, *,
                meta: Mapping[str, Any] | None = None, keep_paths: bool) -> AddReport:
        report = AddReport()
        fresh = iter(vectors)
        items: list[NewItem] = []
        names: list[str] = []
        known = [p for p in prepared if p.known_as is not None]
        copies = self._copies(known) if allow_duplicates and known else {}
        held = [] if allow_duplicates else [(i, int(p.known_as)) for i, p in enumerate(prepared)
                                            if p.known_as is not None]
        refused = dict(zip((i for i, _ in held), self._refused(held, [str(p.file.path) for p in prepared],
                                                             [p.file.label for p in prepared]), strict=True))
        for i, p in enumerate(prepared):
            if i in refused:
                report.skipped.append(refused[i])
                continue
            if p.known_as is not None and p.known_as not in copies:
                report.skipped.append(Skipped(str(p.file.path), f"its copy, item {p.known_as}, was removed "
                                              "meanwhile: add it again"))
                continue
            if p.known_as is not None:
                vector, thumbnail, size = copies[p.known_as]
            else:
                vector, thumbnail, size = next(fresh), p.thumbnail, p.size
                if not vector.any():
                    report.skipped.append(Skipped(str(p.file.path), NO_DIRECTION))
                    continue
            details: dict[str, Any] = {"width": size[0], "height": size[1]} if size else {}
            if not keep_paths:  # an uploaded image's name is the client's, not a path here
                details["name"] = str(p.file.path)
            label = p.file.label
            if label is None:
                report.skipped.append(Skipped(str(p.file.path), "no label"))
                continue
            items.append(NewItem(vector=vector, label=label, source=source_of(p),
                                 path=str(p.file.path.resolve()) if keep_paths else None,
                                 content_hash=p.content_hash, meta={**details, **(meta or {})},
                                 thumbnail=thumbnail))
            names.append(str(p.file.path))
        result = self._commit(items, allow_duplicates=allow_duplicates)
        with committed(result):  # (Ctrl-C from here on: the batch is added)
            report.added += result.ids
            report.skipped += self._refused(result.duplicates, names, [item.label for item in items])
        return report

    def _refused(self, duplicates: Sequence[tuple[int, int]], names: Sequence[str],
                 labels: Sequence[str | None]) -> list[Skipped]:
        """Each refused input (position, id holding its content) as skipped: a duplicate, or
        a conflict when its label is not the holding item's."""
        same, conflicts = split_conflicts(self.store, duplicates, labels)
        reasons = {position: f"duplicate of item {held}" for position, held in same}
        for position, held, held_label in conflicts:
            reasons[position] = conflict_reason(held, held_label, str(labels[position]))
        return [Skipped(names[position], reasons[position]) for position, _ in duplicates]

    def _copies(self, known: Sequence[PreparedImage]) -> dict[int, tuple[np.ndarray, bytes | None,
                                                                         tuple[int, int] | None]]:
        """Stored vector, thumbnail and size of items whose content is being added again."""
        wanted = sorted({int(p.known_as) for p in known if p.known_as is not None})
        ids, vectors = self.store.vectors(wanted)
        items = {item.id: item for item in self.store.items(wanted)}
        found = {}
        for item_id, vector in zip(ids.tolist(), vectors, strict=True):
            meta = items[item_id].meta
            size = (meta["width"], meta["height"]) if "width" in meta and "height" in meta else None
            found[item_id] = (vector, self.store.thumbnail(item_id), size)
        return found

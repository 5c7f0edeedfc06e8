"""`Memory`: the public face of vismem, and the one operations layer under the CLI and
the HTTP service.

    images --Ingestor/encoder--> vectors --store--> durable items --search--> neighbours
           --classify--> Decision

A memory lives in a `Store` (one directory by default; see `store/`). The facade owns
what spans the parts: the encoder, the class prototypes, and the one private commit
path (`_commit`) every edit takes: the store first (durable, with its catalog and
index in step), then the prototypes. Reads go through the public methods below, so
the CLI, the service and curation never reach into the store.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Literal, Mapping, NamedTuple, Sequence, cast, overload

import numpy as np
from PIL import Image

from .calibrate import Calibration, changed_fraction, is_stale
from .classify import classify as classify_queries
from .classify import voting_filter
from .decide import Decision, VoteParams
from .embed import PreparedImage
from .encoders import Encoder, EncoderOptions, create_encoder
from .encoders.registry import check_supported, supports_runtime
from .errors import (EmptyMemoryError, InvalidInputError, ItemNotFoundError, MemoryClosedError, NotCalibratedError,
                     ReadOnlyMemoryError, committed, committed_since, whole_number)
from .images import DEFAULT_MAX_PIXELS, Skipped, check_not_empty, shown
from .ingest import (UPLOADED, AddReport, Ingestor, check_batch_size, check_image_meta, check_max_pixels, listed,
                     split_conflicts, told_if_cut_off)
from . import recorded_encoder
from .prototypes import PrototypeSet
from .prune import PruneSettings
from .report import describe
from .settings import DEFAULT_ENCODER, EncoderIdentity, MemorySettings
from .store import (Capabilities, Filter, InsertResult, Item, NewItem, Page, Store, check_label, check_meta,
                    check_new_location, check_source, create_store, open_store)
from .store.base import MAX_DIM, Checkpoints, Where, check_weight, plain_text
from .store.checkpoints import Checkpoint, RollbackReport
from .store.checkpoints import check_name as check_checkpoint_name
from .transform import FeatureTransform, TransformSpec
from .vectors import as_array, as_rows, unit_rows, vector_hashes

Progress = Callable[[int], None]
OnCommit = Callable[[list[int]], None]  # on_commit(ids): a batch committed, adding these
log = logging.getLogger("vismem")


class Hit(NamedTuple):
    """A search result: an item and its cosine distance to the query. (A named tuple: a
    search builds k of them per query, and a frozen dataclass costs ~1 us each.)"""

    id: int
    label: str
    source: str
    distance: float

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "label": self.label, "source": self.source, "distance": self.distance}


MAX_ID = 2**63 - 1  # item ids are SQLite integers
# A search builds k Hits per query: these two run inside `map` without a Python frame each
_distance = (1.0).__sub__  # cosine distance of a similarity
_hit = partial(tuple.__new__, Hit)  # a Hit from an (id, label, source, distance) tuple


def _check_float16(settings: MemorySettings) -> None:
    """float16 newly set is refused for an index that does not use it."""
    why = settings.float16_misplaced()
    if why:
        raise InvalidInputError(f"float16 {why}")


def _check_counts(counts: Mapping[int, int]) -> None:
    bad = [(i, v) for i, v in counts.items()
           if not whole_number(v) or v < 0]
    if bad:  # a negative v would turn soft pruning's factor d / (c + v) negative
        raise InvalidInputError(f"pruning counts are whole numbers >= 0, got {bad[0][1]!r} for item {bad[0][0]}")


def given_ids(ids: Iterable[int]) -> list[int]:
    """The ids given, in order, as ints. Only whole numbers are ids: `int()` would read
    "12" as items 1 and 2, 1.7 as item 1 and True as item 1, each an edit of items the
    caller did not name."""
    if isinstance(ids, (str, bytes)) or not isinstance(ids, Iterable):
        raise InvalidInputError(f"ids are a list of integer item ids, got {type(ids).__name__} {ids!r}"
                                + (f" (for one item: [{ids}])" if isinstance(ids, (int, np.integer)) else ""))
    given = list(ids)
    for i in given:
        if not whole_number(i):
            raise InvalidInputError(f"item ids are integers, got {type(i).__name__} {i!r}")
    return [int(i) for i in given]


def possible_ids(ids: Iterable[int]) -> list[int]:
    """The given ids (`given_ids`) that an item could have, sorted and unique: others
    (negative, or past SQLite's integers) cannot exist, so they are simply missing, never
    an overflow."""
    return sorted({i for i in given_ids(ids) if 0 < i <= MAX_ID})


def _insert(items: list[NewItem], store: Store, *, allow_duplicates: bool = False) -> InsertResult:
    return store.insert(items, allow_duplicates=allow_duplicates)


def restriction(labels: Iterable[str] | None = None, sources: Iterable[str] | None = None,
                where: Where | None = None) -> Filter | None:
    """The filter for the restriction arguments every read takes, or None for none."""
    if labels is None and sources is None and not where:
        return None
    return Filter.of(labels=labels, sources=sources, where=where)


def query_images(images: Any, taker: str, *, vectors_to: str | None = "classify_vectors"
                 ) -> list[str | Path | Image.Image]:
    """The images a read takes (one may be given alone), each a file path or a PIL image:
    anything else (a numpy image, bytes) is refused naming the way in, where pathlib's
    TypeError named none (`vectors_to`: where vectors go instead, named for a numpy array)."""
    given = listed(images, taker)
    for image in given:
        if not isinstance(image, (str, os.PathLike, Image.Image)):
            raise InvalidInputError(
                f"{taker} takes image files or PIL images, got {type(image).__name__}"
                + (": give a pixel array as PIL.Image.fromarray(array)"
                   + (f", or vectors to {vectors_to}" if vectors_to else "")
                   if isinstance(image, np.ndarray) else ""))
    return given


class Memory:
    """An editable visual memory.

    >>> mem = Memory.create("pets", encoder="efficientnet_lite0")   # doctest: +SKIP
    >>> mem.add_images(["photos/"])                                  # doctest: +SKIP
    >>> mem.classify(["query.jpg"])[0].label                         # doctest: +SKIP

    Each call first catches up with what other processes committed to the memory.
    Threads sharing one Memory should set `auto_refresh = False` and call `refresh()`
    where no other thread is using it, as the HTTP service does.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self._encoder: Encoder | None = None
        self._encoder_options: EncoderOptions | None = None  # device, runtime...: not identity
        self._protos: PrototypeSet | None = None  # built on first use, then kept in step
        self._voting: tuple[np.ndarray, np.ndarray] | None = None  # see _voters
        self.auto_refresh = True

    # ---- open / create -----------------------------------------------------------------

    @classmethod
    def create(
        cls,
        location: str | Path,
        *,
        encoder: str | None = DEFAULT_ENCODER,
        weights: str | Path | None = None,
        dim: int | None = None,
        settings: MemorySettings | None = None,
        encoder_options: EncoderOptions | None = None,
        **setting_values: Any,
    ) -> Memory:
        """Create an empty memory at `location` (a directory, or a URI of another home).

        `encoder` names a registered encoder; its weights are loaded now, so a missing
        download fails here, before anything is written. `encoder=None` makes a
        memory for precomputed vectors of dimension `dim` (1 to 65,536), with no encoder.

        Settings (`MemorySettings`) come as an object or as keywords: `index` (exact,
        hnsw, ivfpq, or auto: exact below 50,000 items, then HNSW, kept down to 25,000,
        or IVF-PQ when an HNSW index would not fit in half the RAM), `target_recall` (approximate
        indexes tune their search effort until recall@10 reaches it), `float16`...
        `encoder_options` say where the encoder runs (device, runtime, precision...).
        """
        settings = (settings or MemorySettings()).replace(**setting_values)
        _check_float16(settings)
        check_new_location(location)  # before the encoder's weights load (or download)
        if encoder is None:
            if dim is None:
                raise InvalidInputError("a memory without an encoder needs its vectors' --dim")
            if not whole_number(dim) or not 1 <= dim <= MAX_DIM:
                raise InvalidInputError(f"dim must be a whole number from 1 to {MAX_DIM:,}, got {dim!r}")
            if weights is not None:  # nothing would load them: a typo for another --encoder, most likely
                raise InvalidInputError("a memory without an encoder has no weights; drop --weights, or name "
                                        "the encoder they are for")
            identity = EncoderIdentity(name=None, id=None, dim=int(dim))  # a numpy integer as a plain one
            built = None
        else:
            built = create_encoder(encoder, weights=weights, options=encoder_options)
            if dim is not None and dim != built.dim:
                raise InvalidInputError(f"encoder {encoder} makes {built.dim}-d vectors, not {dim}")
            identity = EncoderIdentity(name=built.name, id=built.id, dim=built.dim, config=built.describe(),
                                       weights_path=str(Path(weights).resolve()) if weights else None)
        memory = cls(create_store(location, identity, settings))
        memory._encoder = built
        memory._encoder_options = encoder_options
        return memory

    @classmethod
    def open(cls, location: str | Path, *, encoder_options: EncoderOptions | None = None) -> Memory:
        """Open an existing memory; raises MemoryNotFoundError if there is none.
        `encoder_options` say where the encoder runs when it is first needed. A saved
        index that is unusable is rebuilt, with a warning logged; `showing_maintenance`
        (maintenance.py) shows its progress."""
        memory = cls(open_store(location))
        memory._encoder_options = encoder_options
        return memory

    @classmethod
    def import_parquet(cls, path: str | Path, location: str | Path, *,
                       progress: Progress | None = None, filled: Callable[[], None] | None = None) -> Memory:
        """Create a memory at `location` from a `vismem export` file: the same items (new
        ids), vectors, labels and history, settings and encoder. The exact index finds the
        same neighbours, so it decides the same; an approximate one is rebuilt and tuned
        again to the same target recall, so neighbours may differ within that recall.
        Streams the file in batches; `progress(n)` after each batch of n items; `filled()`
        once all are in, before the memory is moved into place (`transfer.import_store`)."""
        from .transfer import import_store

        return cls(import_store(path, location, progress=progress, filled=filled))

    def export_parquet(self, path: str | Path, *, thumbnails: bool = False,
                       progress: Progress | None = None, replace: bool = False) -> int:
        """Write the memory to an Apache Parquet file (format: `vismem.transfer`), a batch
        at a time, so a memory larger than RAM can move to another home. Checkpoints are
        not written (an import gives new ids). A file at `path` (an earlier export) is
        refused (OutputExistsError) unless `replace`. Returns the number of items written."""
        from .errors import OutputExistsError
        from .transfer import export_store

        self._catch_up()
        try:
            return export_store(self.store, path, thumbnails=thumbnails, progress=progress, replace=replace)
        except OutputExistsError as exc:
            raise OutputExistsError(f"{exc} (replace=True)") from None

    def close(self) -> None:
        """Save derived state, purge removed bytes, and close the store. Any use after
        is a VismemError that says so; closing again does nothing."""
        store = self.store
        closed = _Closed(store)
        try:
            store.close()
        finally:
            # (a stand-in, not a Store: it answers every use with that error)
            self.store = cast(Store, closed)

    def __repr__(self) -> str:
        """`<Memory at PATH: N items, D-d, encoder NAME>`, as a notebook shows it: what it
        holds as last caught up (a repr neither catches up nor fails once closed)."""
        store = self.store
        encoder = store.identity.name or "none (vectors given)"
        if isinstance(store, _Closed):
            return f"<Memory at {store.location} (closed): {store.dim}-d, encoder {encoder}>"
        n = len(store)
        return f"<Memory at {store.location}: {n:,} item{'' if n == 1 else 's'}, {store.dim}-d, encoder {encoder}>"

    def __enter__(self) -> Memory:
        return self

    def __reduce__(self) -> Any:
        """Refused (pickle, copy, multiprocessing, joblib), naming the way: a Memory holds an
        open database, which only its own process can use."""
        held = "is closed" if isinstance(self.store, _Closed) else "holds an open database"
        raise TypeError(f"cannot pickle a Memory (memory at {self.store.location} {held}): send its location and "
                        "Memory.open(location) it there")

    def __exit__(self, *exc: object) -> None:
        self.close()

    def is_stale(self) -> bool:
        """True when another process has committed since this object last caught up."""
        return self.store.is_stale()

    def wait_for_writers(self) -> None:
        """Return once no other process is writing to this memory (MemoryBusyError after
        minutes), taking no lock: an edit waits for that itself, so this is for a caller
        that serves reads meanwhile, as `vismem serve` does."""
        self.store.wait_for_writers()

    def refresh(self) -> None:
        """Catch up if another process has committed to this memory since we last looked."""
        if self.store.refresh():
            self._protos = None  # rebuilt on next use from the store as it is now
            self._voting = None

    def _catch_up(self) -> None:
        # Every call refreshes first, unless its owner refreshes at safe points itself: a
        # server whose reader threads share this object must not reload under each other.
        # (The staleness check first: it is the whole cost of a call with nothing to catch up.)
        if self.auto_refresh and self.store.is_stale():
            self.refresh()

    # ---- what the memory is ------------------------------------------------------------

    @property
    def path(self) -> Path:
        return Path(self.store.location)

    @property
    def location(self) -> str:
        return self.store.location

    @property
    def dim(self) -> int:
        return self.store.dim

    @property
    def encoder_name(self) -> str | None:
        return self.store.identity.name

    @property
    def what_to_add(self) -> str:
        """What fills this memory, and the command that adds it, for messages that say
        "add ... first": images, or vectors when it has no encoder."""
        return "labelled images with `vismem add`" if self.encoder_name else \
            "labelled vectors with `vismem add-vectors`"

    @property
    def settings(self) -> MemorySettings:
        return self.store.settings()

    @property
    def defaults(self) -> VoteParams:
        return self.settings.vote

    @property
    def pruning(self) -> PruneSettings:
        return self.settings.pruning

    @property
    def quality(self) -> Any:
        """Recall and intrinsic dimension last measured on the memory's search index."""
        return self.store.quality()

    @property
    def commits(self) -> int | None:
        """How many write transactions this process has committed to the memory, exactly
        (also when Ctrl-C landed as one returned); None where the home cannot count them
        (Milvus). Compared before and after a call, it tells whether the call committed."""
        return getattr(self.store, "commits", None)

    @property
    def capabilities(self) -> Capabilities:
        """What the memory's home can do beyond the core (thumbnails, a verifiable purge,
        local files, feature transforms)."""
        return self.store.capabilities

    def __len__(self) -> int:
        self._catch_up()
        return len(self.store)

    @property
    def encoder(self) -> Encoder:
        """The memory's encoder, loaded on first use and checked against the stored id."""
        if self._encoder is None:
            self._encoder = recorded_encoder.load(self.store, self.location, self._encoder_options)
        return self._encoder

    def use_encoder(self, encoder: Encoder) -> None:
        """Use an already-built encoder (shared between memories); must match the memory, as
        the one it would load does (`recorded_encoder.check_given`)."""
        recorded_encoder.check_given(self.store, self.location, encoder)
        self._encoder = encoder

    # ---- the one commit path -----------------------------------------------------------

    def _commit(self, write: Callable[[Store], Any], *, added: bool = False,
                touched: Sequence[int] = (), removed: bool = False, reset: bool = False) -> Any:
        """Make one change: the store first, then the prototypes.

        `touched` are ids whose membership of the prototypes may change (removed or
        updated): their vectors are taken out before the write and put back after it if
        they still vote (`removed`: they are gone, so not read again). `added`: the write
        inserts items (an `InsertResult`) that join.
        `reset`: the change affects every item (settings, pruning): rebuild on next use.
        """
        self.check_writable()
        self._catch_up()
        protos = None if reset else self._protos
        before = self.searched_vectors(list(touched)) if protos is not None and len(touched) else None
        with self._following_store(reset=reset):
            result = write(self.store)
        if protos is not None and self._protos is not None:
            with committed(result):  # (Ctrl-C from here on: the change is committed, as the store says)
                if before is not None:
                    protos.remove(*before)
                    if not removed:
                        self._join_prototypes(protos, before[0])
                if added and isinstance(result, InsertResult) and result.ids:
                    self._join_prototypes(protos, np.asarray(result.ids, dtype=np.int64))
        return result

    @contextmanager
    def _following_store(self, *, reset: bool = False) -> Iterator[None]:
        """Around a store call that may change what the prototypes are built from: it may
        catch up with others' commits (a write does first, with auto_refresh off or for one
        that landed since `_catch_up`; a save of the index does), and what it caught up with
        stays even when the call then fails; or refit the transform (a purge), moving the
        space prototypes live in. Then (or with `reset`) they are rebuilt on next use."""
        catch_ups, transform = self.store.catch_ups, self.store.transform()
        try:
            yield
        finally:
            self._voting = None
            if reset or self.store.catch_ups != catch_ups or self.store.transform() is not transform:
                self._protos = None

    def _join_prototypes(self, protos: PrototypeSet, ids: np.ndarray) -> None:
        """Put items into the prototypes if they vote (weight > 0, not hard-pruned)."""
        items = self.store.items(ids.tolist())
        votes = self.settings.pruning.votes(np.array([i.weight for i in items]),
                                            np.array([i.prune_count for i in items]))
        voting = {item.id: item.label for item, vote in zip(items, votes.tolist(), strict=True) if vote}
        if voting:
            found, vectors = self.searched_vectors(sorted(voting))
            protos.add(found, vectors, [voting[int(i)] for i in found])

    def _voters(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids, labels) of the items that vote (weight > 0, not hard-pruned), read once and
        kept until the next write or catch-up: `classify --abstain` asks on every call."""
        if self._voting is None:
            ids, labels, weights, _ = self.store.columns(voting_filter(Filter(), self.settings))
            self._voting = ids[weights > 0], labels[weights > 0]
        return self._voting

    # ---- adding ------------------------------------------------------------------------

    def check_writable(self) -> None:
        """Raise ReadOnlyMemoryError when the memory cannot be changed (before any work)."""
        if self.store.read_only:
            raise ReadOnlyMemoryError(
                f"memory at {self.location} is read-only (read-only media or permissions): it can be "
                "searched and classified, not changed")

    def _ingestor(self, encoder: Encoder | None = None, *, writing: bool = True) -> Ingestor:
        if writing:
            self.check_writable()
        def commit(items: Sequence[NewItem], *, allow_duplicates: bool = False) -> InsertResult:
            return self._commit(lambda store: store.insert(items, allow_duplicates=allow_duplicates), added=True)

        return Ingestor(self.store, encoder or self.encoder, commit)

    def add_images(
        self,
        paths: Iterable[str | Path],
        *,
        label: str | None = None,
        source: str | None = None,
        batch_size: int | None = None,
        allow_duplicates: bool = False,
        meta: Mapping[str, Any] | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        progress: Progress | None = None,
        on_commit: OnCommit | None = None,
        ray: str | None = None,
    ) -> AddReport:
        """Add image files and folders (class-subfolder layout gives labels); one path may
        be given alone. Images in memory (uploads, encoded bytes): `add_image_bytes`.

        `meta` is stored with every image (beside its width and height), for the
        `where` filters of search, classify and remove.

        Each batch is committed in one transaction, so an interruption keeps every
        finished batch and no partial item. Unreadable files are skipped with a reason.
        An image whose content is already in the memory is skipped as a duplicate (it
        would only vote twice); with `allow_duplicates` it is added again, reusing the
        stored vector. `progress(n)` is called as n more files are done; `on_commit(ids)`
        after each committed batch, also the one an interruption (Ctrl-C) met once its
        commit was made: the ids it was given are every item the call added.

        `ray` reads, decodes and encodes on a Ray cluster instead of here ("local" starts
        one for this call; "auto", "HOST:PORT" or "ray://HOST:PORT" joins one), with the
        same result; see `vismem.ingest_ray`.
        """
        check_batch_size(batch_size)
        check_max_pixels(max_pixels)  # here too: Ray's workers would each fail on it
        check_image_meta(meta)  # here too: on Ray, before any image is encoded
        paths = listed(paths, "add_images")
        for given in paths:  # (pathlib's TypeError named no way forward)
            if not isinstance(given, (str, os.PathLike)):
                raise InvalidInputError(
                    f"add_images takes image files and folders, got {type(given).__name__}"
                    + (": save PIL images to files, or give their encoded bytes to add_image_bytes([(name, "
                       "bytes), ...], label=..., source=...)" if isinstance(given, Image.Image) else ""))
        check_not_empty(paths)  # before they become Paths: Path("") is "."
        self._catch_up()
        if ray is not None:
            from .ingest_ray import add_files_on_ray

            name = self.store.identity.name
            if name is not None and self._encoder_options is not None:
                # refused here, as a plain add refuses it, not by each actor once Ray has started
                check_supported(name, self._encoder_options)
            # Here only preprocessing and identity are needed (loaded on the CPU, on torch when
            # the encoder runs on it: no ONNX export here); the cluster's actors run the model
            # with this memory's encoder options.
            driver = self._encoder or recorded_encoder.load(self.store, self.location, EncoderOptions(
                device="cpu", runtime="torch" if supports_runtime(name or "", "torch") else "auto"))
            return add_files_on_ray(
                self._ingestor(driver), [Path(p) for p in paths], address=ray, label=label, source=source,
                batch_size=batch_size, allow_duplicates=allow_duplicates, meta=meta, max_pixels=max_pixels,
                options=self._encoder_options, progress=progress, on_commit=on_commit)
        return self._ingestor().add_files(
            [Path(p) for p in paths], label=label, source=source, batch_size=batch_size,
            allow_duplicates=allow_duplicates, meta=meta, max_pixels=max_pixels, progress=progress,
            on_commit=on_commit)

    def add_image_bytes(self, images: Sequence[tuple[str, bytes]], *, label: str, source: str,
                        allow_duplicates: bool = False, max_pixels: int = DEFAULT_MAX_PIXELS,
                        meta: Mapping[str, Any] | None = None) -> AddReport:
        """Add images given as (name, bytes), e.g. uploads, all with one label and source.

        The name only appears in reports and in the item's `meta["name"]`; it is never
        opened as a path. `meta` is stored with every image, as `add_images` stores it
        (`width`, `height` and `name` are set from each image: refused in it). Unreadable
        images are skipped with a reason, as in `add_images`.
        """
        check_image_meta(meta, UPLOADED)  # before any image is decoded
        self._catch_up()
        return self._ingestor().add_bytes(images, label=label, source=source,
                                          allow_duplicates=allow_duplicates, max_pixels=max_pixels, meta=meta)

    def add_prepared(self, prepared: Sequence[PreparedImage], vectors: np.ndarray, *, source: str,
                     allow_duplicates: bool = False, meta: Mapping[str, Any] | None = None) -> AddReport:
        """Insert images already decoded (`embed.prepare_bytes`) and encoded, in one transaction.

        `vectors` holds one row per prepared image that carries pixels, in order; the
        HTTP service uses this to batch encoding across requests. `meta` as for `add_images`.
        """
        self._catch_up()
        return self._ingestor().add_prepared(prepared, vectors, source=source, allow_duplicates=allow_duplicates,
                                             meta=meta)

    @overload
    def add_vectors(self, vectors: np.ndarray, labels: Sequence[str] | str, *, sources: Sequence[str] | str = ...,
                    metas: Sequence[Mapping[str, Any]] | Mapping[str, Any] | None = ..., batch_size: int | None = ...,
                    progress: Progress | None = ..., on_commit: OnCommit | None = ...,
                    allow_duplicates: Literal[True] = ...) -> list[int]: ...

    @overload
    def add_vectors(self, vectors: np.ndarray, labels: Sequence[str] | str, *, sources: Sequence[str] | str = ...,
                    metas: Sequence[Mapping[str, Any]] | Mapping[str, Any] | None = ..., batch_size: int | None = ...,
                    progress: Progress | None = ..., on_commit: OnCommit | None = ...,
                    allow_duplicates: Literal[False]) -> InsertResult: ...

    @overload
    def add_vectors(self, vectors: np.ndarray, labels: Sequence[str] | str, *, sources: Sequence[str] | str = ...,
                    metas: Sequence[Mapping[str, Any]] | Mapping[str, Any] | None = ..., batch_size: int | None = ...,
                    progress: Progress | None = ..., on_commit: OnCommit | None = ...,
                    allow_duplicates: bool) -> list[int] | InsertResult: ...

    def add_vectors(
        self,
        vectors: np.ndarray,
        labels: Sequence[str] | str,
        *,
        sources: Sequence[str] | str = "vectors",
        metas: Sequence[Mapping[str, Any]] | Mapping[str, Any] | None = None,
        batch_size: int | None = None,
        progress: Progress | None = None,
        on_commit: OnCommit | None = None,
        allow_duplicates: bool = True,
    ) -> list[int] | InsertResult:
        """Add precomputed embeddings float (n, dim) with one string label each (one
        string: the label of every row, as one source string and one `metas` mapping are
        every row's).

        Vectors are L2-normalised on the way in (search is by cosine similarity). All are
        checked first, then added in one transaction; with `batch_size`, in one per that
        many rows (a crash keeps every batch committed), with `progress(n)` as n more rows
        are done and `on_commit(ids)` as a batch that added items commits; both are told
        also of the batch an interruption (Ctrl-C) met once its commit was made, so that
        they add up to every row done and every item added. `vectors` may be a memory map
        (`np.load(path, mmap_mode="r")`): only a batch at a time is read into RAM.

        Each item keeps the hash of its row as stored (`vectors.vector_hashes`). With
        `allow_duplicates` (the default) every row is added and the new ids returned, one
        per row. Without it, a row whose hash the memory already holds, or an earlier row
        of this call holds, is skipped, so adding the same rows again (after an
        interrupted run) adds only what is missing; returns an `InsertResult`: `ids` of
        the rows added, `duplicates` as (row, id of the item holding it), and `conflicts`,
        the rows skipped whose label is not the holding item's, as (row, id, its label):
        relabel the item if the row's label is right. Items added before vismem kept these
        hashes have none, so their rows are not recognised.
        """
        vectors = as_rows(as_array(vectors, self.dim), self.dim)  # a memory map stays one: no row is read here
        n = len(vectors)
        # one string is the label of every row, as one source is: list("cat") would be c, a, t
        if not isinstance(labels, (str, Iterable)):  # np.int64(3): labels of a numeric array, one taken out
            check_label(labels)
        labels = [labels] * n if isinstance(labels, str) else list(labels)
        if len(labels) != n:
            raise InvalidInputError(f"{n} vectors but {len(labels)} labels")
        sources = [sources] * n if isinstance(sources, str) else list(sources)
        metas = [metas] * n if isinstance(metas, Mapping) else list(metas) if metas is not None else [{}] * n
        if len(sources) != n or len(metas) != n:
            raise InvalidInputError("sources and metas must have one entry per vector")
        # every label, source and mapping checked before the first batch commits, as every row is
        for label, source, meta in zip(labels, sources, metas, strict=True):
            check_label(label)
            check_source(source)
            check_meta(meta)
        item_metas = [dict(meta) for meta in metas]
        check_batch_size(batch_size)
        if not isinstance(allow_duplicates, (bool, np.bool_)):
            raise InvalidInputError(f"allow_duplicates must be True or False, got {allow_duplicates!r}")
        step = batch_size or max(n, 1)
        if n > step:  # every row checked before the first commit: a bad one changes nothing
            for start in range(0, n, step):
                unit_rows(vectors[start : start + step], self.dim, first_row=start)

        def batch_done(rows: int, added: InsertResult) -> None:
            if on_commit is not None and added.ids:
                on_commit(added.ids)
            if progress is not None:
                progress(rows)

        result = InsertResult()
        for start in range(0, max(n, 1), step):
            batch = unit_rows(vectors[start : start + step], self.dim, first_row=start)
            items = [NewItem(vector=v, label=label, source=s, meta=m, content_hash=h) for v, label, s, m, h in zip(
                batch, labels[start : start + step], sources[start : start + step], item_metas[start : start + step],
                vector_hashes(batch), strict=True)]
            with told_if_cut_off(partial(batch_done, len(items))):
                # the store refuses held rows inside its write, so two processes adding the same rows add each once
                added = self._commit(partial(_insert, items, allow_duplicates=bool(allow_duplicates)), added=True)
            result.ids += added.ids
            same, conflicts = split_conflicts(self.store, added.duplicates, [item.label for item in items])
            result.duplicates += [(start + position, held) for position, held in same]
            result.conflicts += [(start + position, held, label) for position, held, label in conflicts]
            batch_done(len(items), added)
        return result.ids if allow_duplicates else result

    # ---- reading: embed, search, classify ----------------------------------------------

    def embed_images(
        self,
        images: Sequence[str | Path | Image.Image],
        *,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        leave_out_held: bool = False,
        progress: Progress | None = None,
        on_held: Callable[[int, int], None] | None = None,
    ) -> tuple[np.ndarray, list[int], list[Skipped]]:
        """Encode paths or PIL images. Returns (vectors, positions kept, skipped).

        An image whose content is already in the memory reuses the stored vector, and
        `on_held(position, item id)` is called for it (test images the memory holds make
        a measure optimistic); with `leave_out_held`, a file of such content is skipped
        instead, its reason starting with `images.HELD_BY_THE_MEMORY` (queries for
        measuring the index: each would find itself).
        """
        images = query_images(images, "embed_images")
        encoder = self.encoder
        self._catch_up()
        return self._ingestor(encoder, writing=False).embed(images, max_pixels=max_pixels,
                                                            leave_out_held=leave_out_held, progress=progress,
                                                            on_held=on_held)

    def search(
        self,
        vectors: np.ndarray,
        k: int = 10,
        *,
        labels: Sequence[str] | None = None,
        sources: Sequence[str] | None = None,
        where: Where | None = None,
    ) -> list[list[Hit]]:
        """k nearest items for each query vector, nearest first.

        `labels` / `sources` restrict the search to items with those values, `where` to
        items whose metadata has every given key = value; the result still holds k
        items whenever that many match. Hard-pruned items are never returned.
        """
        queries = unit_rows(vectors, self.dim, queries=True)
        if not whole_number(k) or k < 1:
            raise InvalidInputError(f"k must be a positive integer, got {k!r}")
        self._catch_up()
        # the restriction and what pruning keeps out, as one filter (voting_filter's result)
        voters = Filter.of(labels=labels, sources=sources, where=where,
                           max_prune_count=self.settings.pruning.excluded_from)
        found = self.store.nearest(queries, int(k), voters)
        self.store.record_queries(queries)  # only when the memory records queries (opt-in)
        # Every hit made in one pass over the flat lists, then cut into rows: a third less
        # than a pass per row (a single query's row is the pass itself).
        hits = list(map(_hit, zip(found.ids, found.labels, found.sources, map(_distance, found.similarities),
                                  strict=True)))
        width = found.k
        rows = [hits] if len(queries) == 1 else [hits[i : i + width] for i in range(0, len(hits), width)]
        if min(found.ids[width - 1 :: width], default=0) < 0:  # fewer than k match: padding (id -1) is no hit
            rows = [[hit for hit in row if hit.id >= 0] for row in rows]
        return rows

    def prototypes(self) -> PrototypeSet:
        """The class prototypes of the items that vote (in the space searched, through the
        feature transform), built on first use and updated by every edit after."""
        self._catch_up()
        if self._protos is None:
            ids, voter_labels = self._voters()
            found, vectors = self.searched_vectors(ids.tolist())
            labels = dict(zip(ids.tolist(), voter_labels.tolist(), strict=True))
            self._protos = PrototypeSet.fit(found, vectors, [labels[int(i)] for i in found],
                                            per_class=self.settings.prototypes_per_class)
        return self._protos

    def classify_vectors(
        self,
        vectors: np.ndarray,
        *,
        k: int | None = None,
        vote: str | None = None,
        alpha: float | None = None,
        tau: float | None = None,
        mix: float | None = None,
        labels: Sequence[str] | None = None,
        sources: Sequence[str] | None = None,
        where: Where | None = None,
        paths: Sequence[str | None] | None = None,
        abstain: bool = False,
        counterfactual: bool = False,
    ) -> list[Decision]:
        """Classify query vectors (n, dim). Unset vote options take the memory's defaults.

        `labels` / `sources` / `where` restrict the query to those items. With
        `abstain`, a query whose out-of-distribution score exceeds the calibrated
        threshold (see `vismem calibrate`) gets label None and `abstained` True. With
        `counterfactual`, each decision says which items' removal or blocking would change
        its label, and names the nearest item of the runner-up class (`Decision.counterfactual`).
        """
        params = self.vote_params(k=k, vote=vote, alpha=alpha, tau=tau, mix=mix)
        queries = unit_rows(vectors, self.dim, queries=True)
        self._catch_up()
        calibration = self._calibration() if abstain else None
        if calibration is not None:
            changed = self.calibration_changed()
            if is_stale(changed):
                log.warning("%s: %.0f%% of the memory was added or removed since `vismem calibrate` set the "
                            "abstention threshold: run `vismem calibrate %s` again", self.location,
                            100 * (changed or 0), self.location)
        self.check_not_empty()
        decisions = classify_queries(self.store, queries, params, self.settings, self.prototypes(),
                                     where=restriction(labels, sources, where), calibration=calibration,
                                     paths=list(paths) if paths is not None else None,
                                     counterfactuals=counterfactual)
        self.store.record_queries(queries)  # only when the memory records queries (opt-in)
        return decisions

    def vote_params(self, **given: Any) -> VoteParams:
        """The memory's vote defaults with the given (non-None) values in their place."""
        return VoteParams(**{**self.defaults.to_dict(), **{k: v for k, v in given.items() if v is not None}})

    def calibration_changed(self) -> float | None:
        """Share of the voting items added or removed since the abstention threshold was
        calibrated (None: not calibrated, or calibrated before this was recorded)."""
        found = self.settings.abstention
        if found is None:
            return None
        return changed_fraction(found.items, found.max_id, self._voters()[0])

    def _calibration(self) -> Calibration:
        found = self.settings.abstention
        if found is None:
            raise NotCalibratedError(
                f"memory at {self.location} has no abstention threshold: run `vismem calibrate {self.location}` first")
        if found.transform != self.transform.key:
            raise InvalidInputError(
                f"memory at {self.location} was calibrated before its feature transform changed, so its distances "
                f"no longer match the threshold: run `vismem calibrate {self.location}` again")
        return found

    def classify(
        self,
        images: Sequence[str | Path | Image.Image],
        *,
        k: int | None = None,
        vote: str | None = None,
        alpha: float | None = None,
        tau: float | None = None,
        mix: float | None = None,
        labels: Sequence[str] | None = None,
        sources: Sequence[str] | None = None,
        where: Where | None = None,
        abstain: bool = False,
        counterfactual: bool = False,
    ) -> list[Decision]:
        """Classify image paths or PIL images (one may be given alone); options as for
        `classify_vectors` (named here, so that a misspelt one is caught by a type checker).

        Raises InvalidInputError naming the first image that cannot be read.
        """
        options: dict[str, Any] = dict(k=k, vote=vote, alpha=alpha, tau=tau, mix=mix, labels=labels, sources=sources,
                                       where=where, abstain=abstain, counterfactual=counterfactual)
        images = query_images(images, "classify")
        self.check_can_decide(**options)  # before any image is encoded
        vectors, kept, skipped = self.embed_images(images)
        if skipped:
            raise InvalidInputError(f"cannot classify {skipped[0].path}: {skipped[0].reason}")
        paths = [shown(p) if not isinstance(p, Image.Image) else None for p in images]
        return self.classify_vectors(vectors, paths=paths, **options)

    # ---- editing -----------------------------------------------------------------------

    def remove(
        self,
        ids: Iterable[int] | None = None,
        *,
        label: str | None = None,
        source: str | None = None,
        where: Where | None = None,
        purge: bool = False,
    ) -> list[int]:
        """Remove items by ids, or every item with a label, a source or metadata values.

        Returns the removed ids. Removal is durable when this returns, and a removed item
        is never returned by a search again. Older copies of its bytes stay in the
        store's log and saved index until `purge` (or `purge=True` here), which `close`,
        `compact`, the CLI and the service run; so one removal costs one small commit.
        A purge (or compaction) cut off after the removal committed raises a
        `PartlyDoneError` whose `done` holds the removed ids.
        """
        self.check_writable()
        targets = self.targets(ids, label=label, source=source, where=where)
        removed = self._commit(lambda store: store.delete(targets), touched=targets, removed=True)
        if purge and removed:
            with committed(removed):
                self.purge()
        return removed

    def targets(self, ids: Iterable[int] | None = None, *, label: str | None = None, source: str | None = None,
                where: Where | None = None) -> list[int]:
        """The ids a removal would touch: given ids, or every item matching exactly one of
        label, source, where."""
        chosen = sum(x is not None for x in (ids, label, source, where))
        if chosen != 1:
            raise InvalidInputError("remove needs exactly one of: ids, label, source, where")
        if ids is not None:
            return possible_ids(ids)
        self._catch_up()
        return self.store.ids(Filter.of(labels=None if label is None else [label],
                                        sources=None if source is None else [source],
                                        where=where)).tolist()

    def purge(self) -> None:
        """Drop removed items' older copies from every file of the memory, now."""
        with self._following_store():
            self.store.purge()

    def relabel(self, ids: Iterable[int], label: str) -> list[int]:
        """Give items a new label (no re-encoding). Returns the ids that exist. An item
        given another label than it had has its pruning count v reset to 0 (`update`)."""
        return self.update(ids, label=label)

    def unpruned_by(self, ids: Iterable[int], label: str | None) -> int:
        """How many of items `ids` a relabel to `label` would reset the pruning count v of
        (v above 0, and another label than theirs): what `relabel` answers as
        `reset_prune_counts`, read before the relabel (None: no relabel, 0)."""
        if label is None:
            return 0
        label = plain_text(label)
        return sum(1 for item in self.items(list(ids)) if item.prune_count and item.label != label)

    def set_weight(self, ids: Iterable[int], weight: float) -> list[int]:
        """Set items' vote weight: 0 blocks, >1 boosts, 1 is normal. Returns the ids that exist."""
        return self.update(ids, weight=weight)

    def update(self, ids: Iterable[int], *, label: str | None = None,
               weight: float | None = None) -> list[int]:
        """Relabel and/or reweight items in one transaction. Returns the ids that exist.

        A relabel to another label resets the item's pruning count v to 0 in the same
        transaction: v counted its votes under the old label, and hard pruning kept it out
        of every search for them (`unpruned_by` says how many). A weight leaves v as it is:
        the item votes for the same label."""
        if label is None and weight is None:
            raise InvalidInputError("update needs a new label or a weight")
        targets = possible_ids(ids)
        check_weight(weight)  # before float(), which read "2" as 2.0
        value = None if weight is None else float(weight)
        label = plain_text(label)
        return self._commit(lambda store: store.update(targets, label=label, weight=value), touched=targets)

    def set_prune_counts(self, counts: Mapping[int, int]) -> None:
        """Store every item's pruning count v (absent: 0); `update_settings(pruning=...)`
        decides how they apply."""
        _check_counts(counts)
        self._commit(lambda store: store.set_prune_counts(counts), reset=True)

    def apply_pruning(self, counts: Mapping[int, int], pruning: PruneSettings,
                      remove: Iterable[int] = ()) -> list[int]:
        """A prune's decision as one change: every item's count v (absent: 0), the removal
        of `remove` and the `pruning` setting, all of it or nothing (in the directory home;
        see `Store.save_pruning` for Milvus). Returns the ids removed."""
        _check_counts(counts)
        targets = possible_ids(remove)
        return self._commit(lambda store: store.save_pruning(counts, pruning, targets), reset=True)

    def update_settings(self, progress: Progress | None = None, **changes: Any) -> MemorySettings:
        """Change settings (fields of `MemorySettings`), in one commit; a new index setting
        rebuilds the index from the store, tuned and measured; a `transform` is fitted as
        `set_transform` fits it (`progress(n)` per n items), first, so that one which cannot
        be fitted changes nothing. Only the settings named change: another process's change
        to others, committed meanwhile, stays. A part may be given as a mapping of the values
        to change (`vote={"k": 5}`), a transform by name. Returns the new settings."""
        new = self.settings.replace(**changes)  # a bad name or value fails here
        if changes.get("float16"):
            _check_float16(new)
        changes = {name: getattr(new, name) for name in changes}  # mappings and names as settings objects
        transform = changes.get("transform", TransformSpec())
        if transform != TransformSpec() and not self.capabilities.feature_transforms:
            raise InvalidInputError(f"memory at {self.location} lives in a home that searches vectors as "
                                    "stored: its only transform is none")
        self._commit(lambda store: store.save_settings(changes, progress=progress), reset=True)
        return self.settings

    def set_index(self, kind: str, *, target_recall: float | None = None,
                  float16: bool | None = None, progress: Progress | None = None) -> dict[str, Any]:
        """Switch the memory's search index (rebuilt from the store, then measured;
        `progress(n)` as n more items are in the new index)."""
        changes: dict[str, Any] = {"index": kind}
        if target_recall is not None:
            changes["target_recall"] = target_recall
        if float16 is not None:
            changes["float16"] = float16
        new = self.settings.replace(**changes)  # a bad name or value fails here
        if float16:
            _check_float16(new)
        self._commit(lambda store: store.save_settings(changes, progress=progress))
        return self.store.describe()["index"]

    # ---- checkpoints ---------------------------------------------------------------------

    def _checkpoints(self, name: str, *, writing: bool = False) -> Checkpoints:
        """The store, for checkpoint `name` (a bad name is refused first), written to with
        `writing`: a read-only memory, or a home that keeps none, is refused before any work."""
        check_checkpoint_name(name)
        if writing:
            self.check_writable()
        if not isinstance(self.store, Checkpoints):
            raise InvalidInputError(f"memory at {self.location} cannot keep checkpoints: a rollback must be one "
                                    "transaction, which only the directory home has (export it and import it "
                                    "into a directory: `vismem export`, `vismem import`)")
        return self.store

    def checkpoint(self, name: str, *, replace: bool = False) -> Checkpoint:
        """Record checkpoint `name`: every item's label, weight, pruning count and relabel
        history, the highest item id and the settings, in one transaction. A name in use
        is refused (CheckpointExistsError) unless `replace`. Returns the checkpoint."""
        store = self._checkpoints(name, writing=True)
        self._catch_up()
        return cast(Checkpoint, store.make_checkpoint(name, replace=replace))

    def checkpoints(self) -> list[Checkpoint]:
        """The memory's checkpoints, oldest first (none in a home that keeps none)."""
        if not isinstance(self.store, Checkpoints):
            return []
        self._catch_up()
        return self.store.checkpoints()

    def delete_checkpoint(self, name: str) -> None:
        """Delete checkpoint `name` (CheckpointNotFoundError if there is none); no item changes."""
        store = self._checkpoints(name, writing=True)
        self._catch_up()
        store.delete_checkpoint(name)

    def at_checkpoint(self, name: str) -> bool:
        """Whether the memory is as checkpoint `name` recorded it: no item added since, every
        item of it still here in the state it kept, the same settings (a rollback to it has
        nothing left to do but for the items removed since, which stay removed)."""
        store = self._checkpoints(name)
        self._catch_up()
        return store.at_checkpoint(name)

    def rollback(self, name: str, progress: Progress | None = None) -> RollbackReport:
        """Back to checkpoint `name`, all of it or nothing (one transaction): every item
        added since is removed and purged; every item of the checkpoint still here gets
        back its label, weight, pruning count and relabel history; the settings are
        restored (a changed index setting rebuilds the index, as `update_settings` does),
        all but `record_queries`, the users' consent, which stays as it is.
        Items removed since stay removed: a removal is final (`gone_since` counts them).
        The checkpoint stays, to roll back to again. A transform of the checkpoint that
        cannot be fitted on the items it keeps (none left, or none that vary) is dropped, as
        a purge drops one, and named in the report's `transform_dropped`; a calibration
        measured through another transform than the one left is said stale
        (`calibration_stale`: calibrate again). A purge cut off after the rollback
        committed raises a `PartlyDoneError` whose `done` holds the report."""
        store = self._checkpoints(name, writing=True)
        report = self._commit(lambda _: store.rollback(name, progress=progress), reset=True)
        if report.removed_added:
            restored = self.settings.transform
            with committed(report):
                self.purge()  # refits a transform fitted on items it removed: drops it if none is left
            if self.settings.transform != restored and self.settings.transform == TransformSpec():
                report = dataclasses.replace(report, transform_dropped=restored.name)
        # The threshold is a distance through the transform it was measured with: none can
        # carry it to another (`_calibration` refuses it), so the report says to calibrate.
        calibration = self.settings.abstention
        if calibration is not None and calibration.transform != self.transform.key:
            report = dataclasses.replace(report, calibration_stale=True)
        return cast(RollbackReport, report)

    def check_not_empty(self) -> None:
        """Refuse to decide with a memory that holds nothing (before slow work, e.g. encoding)."""
        if len(self) == 0:
            raise EmptyMemoryError(f"memory at {self.location} is empty: add {self.what_to_add} first")

    def check_can_decide(self, *, labels: Sequence[str] | None = None, sources: Sequence[str] | None = None,
                         where: Where | None = None, abstain: bool = False, counterfactual: bool = False,
                         **vote: Any) -> VoteParams:
        """The vote that `classify_vectors`'s options make, checked before slow work such as
        encoding the queries: a bad k, vote, alpha, tau, mix or restriction, abstention
        without a valid calibration, or an empty memory raises. (`counterfactual` is taken
        so that the same options can be passed; any value is valid.)"""
        params = self.vote_params(**vote)
        restriction(labels, sources, where)
        if abstain:
            self._calibration()
        self.check_not_empty()
        return params

    def tune_index(self, queries: np.ndarray | None = None) -> dict[str, Any]:
        """Tune the search effort on query vectors (n, dim) the memory has not seen, your
        own, until their recall@10 reaches the target recall; None: on the recorded
        queries (see `record_queries`). Queries the memory holds (the same bits once made
        unit length) would find themselves: they are left out. Returns the index as
        `info()["index"]` shows it, with `held_left_out`: how many were left out."""
        self.check_not_empty()  # nothing to search: no recall to measure
        vectors = unit_rows(queries, self.dim, queries=True) if queries is not None else None
        if vectors is not None and len(vectors) == 0:
            raise InvalidInputError("no query vectors given: tuning needs queries (n, dim) with n >= 1")
        return self._commit(lambda store: store.tune_index(vectors))

    def record_queries(self, keep: int | None = None, *, clear: bool = False) -> dict[str, Any]:
        """Keep (opt-in) up to `keep` real search and classify queries in the store, to
        tune the index on (0: stop, and delete those kept); `clear` deletes the kept ones
        now. Deleted queries leave no bytes in any file. Returns {"keep", "kept"}."""
        if keep is not None:
            self.settings.replace(record_queries=keep)  # a bad value fails here
        # (Ctrl-C after a commit: this report, as the store has it then, not the settings it marks)
        with committed_since(self.store, lambda _: self._recording()):
            if keep is not None:
                self._commit(lambda store: store.save_settings({"record_queries": keep}))
            if clear or keep == 0:
                self._commit(lambda store: store.clear_recorded_queries())
            return self._recording()

    def _recording(self) -> dict[str, Any]:
        """`record_queries`'s report: {"keep", "kept"}."""
        return {"keep": self.settings.record_queries, "kept": self.store.recorded_count()}

    def recorded_waiting(self) -> int:
        """How many recorded queries wait in this object's RAM, not yet in the store
        (`info()["recorded_waiting"]`): a search never writes to the database."""
        return self.store.recorded_waiting()

    def write_recorded_queries(self) -> int:
        """Write the recorded queries waiting in RAM into the store now, where other
        processes see them (`vismem tune-index` beside a server); returns how many there
        were. Else a purge or `close` writes them; `vismem serve` calls this every
        `record_write_seconds`. A write that fails raises and keeps them waiting, for the
        next one; a read-only memory records none, so it never writes."""
        return self.store.write_recorded_queries()

    def compact(self, progress: Progress | None = None) -> dict[str, Any]:
        """Reclaim removed items' slots in the index and the store; re-measure recall
        (`progress(n)` as n more live items are in the compacted index).

        Afterwards no file in the memory directory holds a removed vector's bytes.
        """
        return self._commit(lambda store: store.compact(progress))

    # ---- reading items -----------------------------------------------------------------

    def get(self, item_id: int) -> Item:
        """The item with this id; ItemNotFoundError when the memory holds none."""
        items = self.items([item_id])
        if not items:
            raise ItemNotFoundError(f"no item with id {item_id}")
        return items[0]

    def items(self, ids: Sequence[int]) -> list[Item]:
        """Items with these ids, in the order given. A bulk read: ids the memory does not
        hold are left out, not refused: `set(ids) - {item.id for item in found}` names them."""
        self._catch_up()
        return self.items_as_stored(ids)

    def items_as_stored(self, ids: Sequence[int]) -> list[Item]:
        """`items`, read from the store without first catching this memory up: how to ask,
        once an edit of this process was interrupted (its state in RAM may be midway), what
        the store committed."""
        given = given_ids(ids)
        wanted = set(possible_ids(given))
        return self.store.items([i for i in given if i in wanted])

    def ids(self, *, labels: Sequence[str] | None = None, sources: Sequence[str] | None = None,
            where: Where | None = None, after: int | None = None) -> list[int]:
        """Ids of the items matching every given restriction, ascending; with `after`,
        only those above it (the items added since a checkpoint whose `last_id` it is)."""
        if after is not None and not whole_number(after):
            raise InvalidInputError(f"after must be an item id (a whole number), got {after!r}")
        self._catch_up()
        found = self.store.ids(restriction(labels, sources, where))
        if after is not None:  # (a slice of the array: a list of a million ids takes ~40 MB and a second)
            found = found[np.searchsorted(found, after, side="right"):]
        return found.tolist()

    def page(self, *, offset: int = 0, limit: int = 100, labels: Sequence[str] | None = None,
             sources: Sequence[str] | None = None, where: Where | None = None) -> Page:
        """Items matching the restrictions, oldest first: `limit` of them from `offset`."""
        if offset < 0 or limit < 1:
            raise InvalidInputError(f"offset must be >= 0 and limit >= 1, got {offset} and {limit}")
        self._catch_up()
        return self.store.page(restriction(labels, sources, where), offset, limit)

    def thumbnail(self, item_id: int) -> bytes | None:
        """The small JPEG kept when an image item was added. None: the item has none (added
        as a vector, imported from an export made without thumbnails, or held in a home
        that keeps none); an id the memory does not hold raises ItemNotFoundError, as `get`."""
        (wanted,) = given_ids([item_id])
        jpeg = self.store.thumbnail(wanted) if possible_ids([wanted]) else None
        # (asked only on None: an item's thumbnail row goes with it, so bytes mean it is held)
        if jpeg is None and not self.items_as_stored([wanted]):
            raise ItemNotFoundError(f"no item with id {item_id}")
        return jpeg

    def vectors(self, ids: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(ids int64, vectors float32 (n, dim)) of the given (or all) items, by id."""
        self._catch_up()
        return self.store.vectors(ids)

    def index_bytes(self, ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """(ids, uint8 (n, bytes per vector)): the bytes the saved search index keeps for
        these items, as its files hold them (none for an index that keeps no files here);
        what `remove --verify` looks for beside the vectors it can compute."""
        self._catch_up()
        return self.store.index_bytes(ids)

    def searched_vectors(self, ids: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(ids, vectors (n, out_dim)) of the given (or all) items as searched: through the
        memory's feature transform (the stored vectors themselves stay as added)."""
        found, vectors = self.store.vectors(ids)
        return found, self.store.transform().apply(vectors)

    @property
    def transform(self) -> FeatureTransform:
        """The feature transform searches go through (`settings.transform`, fitted)."""
        self._catch_up()
        return self.store.transform()

    def set_transform(self, spec: TransformSpec | str, progress: Progress | None = None) -> FeatureTransform:
        """Fit a feature transform (`none`, `center`, `whiten`; see `transform.py`) on every
        item and rebuild the search index through it (`progress(n)` as n more items are
        done); the transform in force is refitted. One that cannot be fitted (no items, or
        none that vary) raises and changes nothing. Adding items later does not refit it;
        purging removed items it was fitted on does (and drops it when the items left cannot
        be fitted). The abstention threshold was measured in the old space: calibrate again."""
        self.update_settings(progress, transform=TransformSpec(spec) if isinstance(spec, str) else spec)
        return self.store.transform()

    def voting_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(ids, vectors, labels, weights, prune counts) of every item, by id: the memory
        as arrays, for curation (tune, prune, calibrate) that queries it against itself."""
        self._catch_up()
        ids, labels, weights, counts = self.store.columns()
        found, vectors = self.store.vectors(ids.tolist())
        return found, vectors, labels, weights, counts

    def known_content(self, hashes: Iterable[str]) -> dict[str, int]:
        """Content hash (SHA-256 of an image's bytes) -> an item holding that content."""
        self._catch_up()
        return self.store.known_hashes(hashes)

    def class_counts(self) -> dict[str, int]:
        self._catch_up()
        return self.store.class_counts()

    # ---- reporting ---------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        """What `vismem info` shows: counts, encoder, settings, store and index (with
        measured recall and a warning when it is below target), disk use, and how far the
        memory moved since its estimates were made (see `report.py`)."""
        self._catch_up()
        return describe(self)


class _Closed:
    """What a closed `Memory` holds in place of its store: every use says the memory is
    closed (sqlite3 said "Cannot operate on a closed database", naming no memory), but
    for what it is, fixed at creation: location, dimension, encoder, capabilities."""

    def __init__(self, store: Store) -> None:
        self.location: str = store.location
        self.dim: int = store.dim
        self.identity: EncoderIdentity = store.identity
        self.capabilities: Capabilities = store.capabilities

    def close(self) -> None:
        """Closing again does nothing."""

    def __len__(self) -> int:
        raise self._closed()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # Python's own questions (copy, pickle, hasattr of a dunder)
            raise AttributeError(name)
        raise self._closed()

    def _closed(self) -> MemoryClosedError:
        where = self.__dict__.get("location", "?")
        return MemoryClosedError(f"memory at {where} is closed: open it again with Memory.open")

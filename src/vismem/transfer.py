"""The export/import format: a memory as one Apache Parquet file.

A memory moves between homes (a directory, a Milvus collection) as rows of items in
record batches, so a memory larger than RAM streams through: the writer holds one batch
at a time and the reader yields one row group at a time.

Columns, one row per item:

    id               int64       the item's id in the memory it came from
    vector           fixed_size_list<float32>[dim]   L2-normalised, exactly as stored
    label, source    string
    path             string, null when unknown
    content_hash     string      SHA-256 of the image's bytes (64 hex digits); for a vector
                                 added, 128 bits of that of its stored row (22 base64url
                                 characters, `vectors.vector_hashes`); null for one added
                                 before 0.2.0
    weight           float64     vote weight (0 = blocked)
    meta             string      the metadata object as canonical JSON
    added_at         float64     Unix seconds
    relabelled_from  string      the label before a relabel, null if never relabelled
    prune_count      int64       pruning count v
    thumbnail        binary      JPEG of at most 128 pixels a side (an import refuses others),
                                 only when the export asked for thumbnails

The file's key-value metadata `vismem` holds the header: format name and version, the
encoder identity (name, id, dim, preprocessing), the memory's settings and, when it
searches through one, the fitted feature transform (`fitted_transform`: the fit and the
newest id it saw), so an import can refuse vectors of another encoder, restore the
decision defaults and search through the very same fit. Pages carry
CRC-32 checksums, verified on import (with the vectors' unit length, for files written
without them), so a damaged copy is refused. Any Parquet reader (pandas, DuckDB, Spark)
reads the rest.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, cast

import numpy as np

from .errors import InvalidInputError, VismemError, clause
from .files import check_input_file, exists_already, written_whole
from .images import THUMBNAIL_SIZE
from .settings import EncoderIdentity, MemorySettings
from .transform import FeatureTransform, TransformSpec

if TYPE_CHECKING:
    from .store import Item, NewItem, Store

FORMAT_NAME = "vismem-memory"
FORMAT_VERSION = 1
HEADER_KEY = b"vismem"
REQUIRED = ("id", "vector", "label", "source", "weight", "meta", "added_at", "prune_count")  # never null
DEFAULT_BATCH = 8192  # rows per record batch and row group: 8192 x 2048-d float32 = 64 MiB
log = logging.getLogger("vismem")


@dataclass
class Rows:
    """A batch of items in columns, as they travel between homes.

    `vectors` is float32 (n, dim); `ids`, `prune_counts` int64 (n,); `weights`,
    `added_at` float64 (n,); the rest are lists of n. `thumbnails` is None when the
    batch carries none.
    """

    ids: np.ndarray
    vectors: np.ndarray
    labels: list[str]
    sources: list[str]
    paths: list[str | None]
    content_hashes: list[str | None]
    weights: np.ndarray
    metas: list[dict[str, Any]]
    added_at: np.ndarray
    relabelled_from: list[str | None]
    prune_counts: np.ndarray
    thumbnails: list[bytes | None] | None = None

    def __len__(self) -> int:
        return len(self.ids)


def arrow_schema(dim: int, header: dict[str, Any], *, thumbnails: bool):
    """The Parquet schema of an export: the columns above, the header in its metadata."""
    import pyarrow as pa

    fields = [
        pa.field("id", pa.int64(), nullable=False),
        pa.field("vector", pa.list_(pa.float32(), dim), nullable=False),
        pa.field("label", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("path", pa.string()),
        pa.field("content_hash", pa.string()),
        pa.field("weight", pa.float64(), nullable=False),
        pa.field("meta", pa.string(), nullable=False),
        pa.field("added_at", pa.float64(), nullable=False),
        pa.field("relabelled_from", pa.string()),
        pa.field("prune_count", pa.int64(), nullable=False),
    ]
    if thumbnails:
        fields.append(pa.field("thumbnail", pa.binary()))
    full = {"format": FORMAT_NAME, "version": FORMAT_VERSION, **header, "dim": dim,
            "thumbnails": thumbnails}
    return pa.schema(fields, metadata={HEADER_KEY: json.dumps(full, sort_keys=True)})


def to_batch(rows: Rows, schema) -> Any:
    """One `pyarrow.RecordBatch` of `schema` holding `rows` (vectors are not copied)."""
    import pyarrow as pa

    dim = schema.field("vector").type.list_size
    vectors = np.ascontiguousarray(rows.vectors, dtype=np.float32)
    if vectors.shape != (len(rows), dim):
        raise InvalidInputError(f"vectors have shape {vectors.shape}, the export holds {dim}-d vectors")
    columns = [
        pa.array(np.asarray(rows.ids, dtype=np.int64)),
        pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), dim),
        pa.array(rows.labels, pa.string()),
        pa.array(rows.sources, pa.string()),
        pa.array(rows.paths, pa.string()),
        pa.array(rows.content_hashes, pa.string()),
        pa.array(np.asarray(rows.weights, dtype=np.float64)),
        pa.array([canonical_json(m) for m in rows.metas], pa.string()),
        pa.array(np.asarray(rows.added_at, dtype=np.float64)),
        pa.array(rows.relabelled_from, pa.string()),
        pa.array(np.asarray(rows.prune_counts, dtype=np.int64)),
    ]
    if "thumbnail" in schema.names:
        thumbs = rows.thumbnails if rows.thumbnails is not None else [None] * len(rows)
        columns.append(pa.array(thumbs, pa.binary()))
    return pa.RecordBatch.from_arrays(columns, schema=schema)


def from_batch(batch: Any) -> Rows:
    """The `Rows` of one record batch read back from an export (ValueError on an empty
    value where the format allows none)."""
    for name in REQUIRED:
        if batch.column(name).null_count:
            raise ValueError(f"its `{name}` column has empty values")
    dim = batch.schema.field("vector").type.list_size
    n = batch.num_rows
    vectors = batch.column("vector").flatten().to_numpy(zero_copy_only=False)
    names = batch.schema.names
    return Rows(
        ids=batch.column("id").to_numpy(zero_copy_only=False).astype(np.int64, copy=False),
        vectors=np.asarray(vectors, dtype=np.float32).reshape(n, dim),
        labels=batch.column("label").to_pylist(),
        sources=batch.column("source").to_pylist(),
        paths=batch.column("path").to_pylist(),
        content_hashes=batch.column("content_hash").to_pylist(),
        weights=batch.column("weight").to_numpy(zero_copy_only=False).astype(np.float64, copy=False),
        metas=[json.loads(m) for m in batch.column("meta").to_pylist()],
        added_at=batch.column("added_at").to_numpy(zero_copy_only=False).astype(np.float64, copy=False),
        relabelled_from=batch.column("relabelled_from").to_pylist(),
        prune_counts=batch.column("prune_count").to_numpy(zero_copy_only=False).astype(np.int64, copy=False),
        thumbnails=batch.column("thumbnail").to_pylist() if "thumbnail" in names else None,
    )


def canonical_json(value: dict[str, Any]) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def write_parquet(path: str | Path, dim: int, header: dict[str, Any], batches: Iterable[Rows], *,
                  thumbnails: bool = False, replace: bool = False) -> int:
    """Write `batches` to `path`, one row group each; returns the rows written. A file
    at `path` is refused (OutputExistsError) unless `replace`.

    The file appears under its name only when complete (written beside it, then
    renamed), so an interrupted export never leaves a truncated file that looks whole;
    without `replace`, only if the name is still free then (not taken meanwhile).
    """
    import pyarrow.parquet as pq

    path = Path(path)
    if path.is_dir():  # checked before any item is read
        raise InvalidInputError(f"cannot write {path}: it is a folder; name a file in it, "
                                f"e.g. {path / 'memory.parquet'}")
    if not path.parent.is_dir():
        raise InvalidInputError(f"cannot write {path}: folder {path.parent} does not exist")
    if path.exists() and not replace:  # an earlier export, say: replaced only when asked
        raise exists_already(path)  # checked before any item is read; written_whole checks again at the end
    schema = arrow_schema(dim, header, thumbnails=thumbnails)
    written = 0
    # Vectors barely compress; zstd still shrinks the text columns and costs little.
    # Page checksums (CRC-32, standard Parquet) let an import tell a damaged file.
    with written_whole(path, replace=replace) as partial, \
            pq.ParquetWriter(partial, schema, compression="zstd", write_page_checksum=True) as writer:
        for rows in batches:
            if len(rows):
                writer.write_batch(to_batch(rows, schema), row_group_size=len(rows))
                written += len(rows)
    return written


def read_header(path: str | Path) -> tuple[dict[str, Any], int]:
    """(header, number of rows) of an export, checked to be one vismem can read."""
    import pyarrow.parquet as pq

    check_input_file(path, "give a file written by `vismem export`")
    try:
        meta = pq.read_metadata(path)
    except (OSError, ValueError) as exc:  # pyarrow raises ArrowInvalid (a ValueError) on non-Parquet
        raise _not_parquet(path, exc) from exc
    return _checked_header(path, meta), meta.num_rows


def _not_parquet(path: str | Path, exc: Exception) -> VismemError:
    return VismemError(f"cannot read {path} as Parquet: {clause(exc)}; give a file written by `vismem export`")


def _checked_header(path: str | Path, meta: Any) -> dict[str, Any]:
    """The vismem header in a Parquet file's metadata, or why vismem cannot read the file."""
    raw = (meta.metadata or {}).get(HEADER_KEY)
    if raw is None:
        raise VismemError(f"{path} is a Parquet file but not a vismem export (no `vismem` header); "
                          "write one with `vismem export`")
    try:
        header = json.loads(raw)
    except ValueError as exc:
        raise _damaged(path, f"its `vismem` header: {exc}") from None
    if not isinstance(header, dict):  # JSON, but not the object every vismem writes
        raise _damaged(path, "its `vismem` header is not a JSON object")
    version = header.get("version")
    if header.get("format") == FORMAT_NAME and (isinstance(version, bool) or not isinstance(version, int)):
        # every vismem writes a whole number: "upgrade vismem" would not help
        raise _damaged(path, f"its `vismem` header gives version {version!r}, not a whole number")
    if header.get("format") != FORMAT_NAME or cast(int, version) > FORMAT_VERSION:
        raise VismemError(f"{path} holds export format {header.get('format')} version "
                          f"{header.get('version')}; this vismem reads {FORMAT_NAME} up to version "
                          f"{FORMAT_VERSION}: upgrade vismem")
    if not isinstance(header.get("encoder"), dict) or not isinstance(header.get("settings"), dict):
        raise _damaged(path, "its `vismem` header names no encoder or settings")
    why = _unreadable_column(meta.schema.to_arrow_schema())
    if why is not None:
        raise _damaged(path, why)
    return header


def _unreadable_column(schema: Any) -> str | None:
    """Why a file's columns are not those of an export (one missing, or of another type:
    a file rewritten by another tool), or None. Types are matched by kind, as another
    Parquet writer may widen them; vectors must stay float32, to come back bit for bit."""
    import pyarrow as pa

    def text(t: Any) -> bool:
        return bool(pa.types.is_string(t) or pa.types.is_large_string(t))

    kinds: dict[str, tuple[str, Callable[[Any], bool]]] = {
        "id": ("integers", pa.types.is_integer), "prune_count": ("integers", pa.types.is_integer),
        "weight": ("floats", pa.types.is_floating), "added_at": ("floats", pa.types.is_floating),
        "vector": ("fixed-size lists of float32",
                   lambda t: pa.types.is_fixed_size_list(t) and t.value_type == pa.float32()),
        **dict.fromkeys(["label", "source", "path", "content_hash", "meta", "relabelled_from"], ("text", text)),
    }
    for name, (kind, fits) in kinds.items():
        if name not in schema.names:
            return f"it has no `{name}` column"
        if not fits(schema.field(name).type):
            return f"its `{name}` column holds {schema.field(name).type}, not {kind}"
    if "thumbnail" in schema.names and not (pa.types.is_binary(schema.field("thumbnail").type)
                                            or pa.types.is_large_binary(schema.field("thumbnail").type)):
        return f"its `thumbnail` column holds {schema.field('thumbnail').type}, not bytes"
    return None


def read_parquet(path: str | Path, batch_size: int = DEFAULT_BATCH) -> Iterator[Rows]:
    """The export's rows, `batch_size` at a time (bounded memory)."""
    import pyarrow.parquet as pq

    try:
        file = pq.ParquetFile(path, page_checksum_verification=True)
    except (OSError, ValueError) as exc:
        raise _not_parquet(path, exc) from exc
    with file:
        _checked_header(path, file.metadata)  # the footer this file object has read already
        batches = file.iter_batches(batch_size=batch_size)
        while True:
            try:
                batch = next(batches, None)
                if batch is None:
                    return
                rows = from_batch(batch)
            except (OSError, ValueError) as exc:  # a page that fails its checksum or to decompress; bad JSON
                raise _damaged(path, exc) from exc
            if not _unit_rows(rows.vectors):  # a file written without page checksums
                raise _damaged(path, "vectors that are not unit length")
            yield rows


def _damaged(path: str | Path, why: object) -> VismemError:
    return VismemError(f"{path} is damaged ({why}): export the memory again, or copy the "
                       "file again")


def _check_importable(path: str | Path, rows: Rows, dim: int) -> None:
    """Refuse rows a memory cannot take: vectors of another dimension than the header
    says, a vote weight or pruning count no memory holds (a negative one would turn the
    vote around), a time that is not a number, or thumbnails other than the small JPEGs
    a memory keeps (the explanation sheet and the web page would fail on them)."""
    from .store.base import MAX_WEIGHT

    if rows.vectors.shape[1] != dim:
        raise VismemError(f"{path}: vectors are {rows.vectors.shape[1]}-d but its header says {dim}")
    for values, fits, what in [
            (rows.weights, (rows.weights >= 0) & (rows.weights <= MAX_WEIGHT),
             f"weight, not from 0 to {MAX_WEIGHT:,.0f}"),
            (rows.prune_counts, rows.prune_counts >= 0, "pruning count, below 0"),
            (rows.added_at, np.isfinite(rows.added_at), "time added, not a number")]:
        if not fits.all():  # (NaN fails every comparison, so it is refused too)
            at = int(np.argmin(fits))
            raise _damaged(path, f"item {rows.ids[at]} has {values[at]} as its {what}")
    bad = _bad_thumbnail(rows.thumbnails or [])
    if bad is not None:
        raise _damaged(path, f"the thumbnail of item {rows.ids[bad]} is not a JPEG of at most {THUMBNAIL_SIZE} "
                             "pixels a side")


def _bad_thumbnail(thumbnails: list[bytes | None]) -> int | None:
    """The position of the first thumbnail that is not what a memory keeps (a JPEG whose
    longer side is at most THUMBNAIL_SIZE), or None. Only headers are read."""
    from PIL import Image, UnidentifiedImageError

    for position, jpeg in enumerate(thumbnails):
        if jpeg is None:
            continue
        try:
            with Image.open(io.BytesIO(jpeg)) as thumb:
                if thumb.format == "JPEG" and max(thumb.size) <= THUMBNAIL_SIZE:
                    continue
        except (UnidentifiedImageError, OSError, ValueError):
            pass
        return position
    return None


def _unit_rows(vectors: np.ndarray) -> bool:
    """Every row finite and of unit length, as every vector in a memory is (or all zeros:
    older vismem stored a uniform image's pixels embedding so)."""
    norms = np.linalg.norm(vectors, axis=1)
    return bool(np.all((np.abs(norms - 1) < 1e-3) | (norms == 0)))


# ---- a memory's store <-> an export ---------------------------------------------------------

def rows_of(items: list[Item], vectors: np.ndarray, thumbnails: list[bytes | None] | None = None) -> Rows:
    """Items (with their vectors, in the same order) as a batch of rows."""
    return Rows(
        ids=np.asarray([i.id for i in items], dtype=np.int64), vectors=vectors,
        labels=[i.label for i in items], sources=[i.source for i in items], paths=[i.path for i in items],
        content_hashes=[i.content_hash for i in items], weights=np.asarray([i.weight for i in items], np.float64),
        metas=[i.meta for i in items], added_at=np.asarray([i.added_at for i in items], np.float64),
        relabelled_from=[i.relabelled_from for i in items],
        prune_counts=np.asarray([i.prune_count for i in items], np.int64), thumbnails=thumbnails)


def new_items(rows: Rows) -> list[NewItem]:
    """Rows as items to insert. A relabelled item goes in under its original label, so the
    relabel that follows (`relabels`) leaves the same history as in the source."""
    from .store import NewItem

    thumbs = rows.thumbnails or [None] * len(rows)
    return [NewItem(vector=rows.vectors[k], label=rows.relabelled_from[k] or rows.labels[k], source=rows.sources[k],
                    path=rows.paths[k], content_hash=rows.content_hashes[k], meta=rows.metas[k], thumbnail=thumbs[k],
                    weight=float(rows.weights[k]), added_at=float(rows.added_at[k])) for k in range(len(rows))]


def _where(store: Store) -> str:
    """Where a memory lives, as an export's header says it: a folder as an absolute path (the
    path typed, `m0`, names nothing once the file is moved), a server's address as it is."""
    return str(Path(store.location).resolve()) if store.capabilities.local_files else store.location


def export_store(store: Store, path: str | Path, *, thumbnails: bool = False, batch: int = DEFAULT_BATCH,
                 progress: Callable[[int], None] | None = None, replace: bool = False) -> int:
    """Write every item of a store to a Parquet file, `batch` items at a time (bounded
    memory); returns how many. With `thumbnails`, each item's JPEG goes along. A file
    at `path` is refused (OutputExistsError) unless `replace`."""
    from .store import holds_memory

    if store.capabilities.local_files:
        home = Path(store.location).resolve()
        if home == Path(path).resolve() or home in Path(path).resolve().parents:
            # its files are the store's: the export could replace memory.sqlite itself, and
            # `remove --verify` would find removed items' vectors in it
            raise InvalidInputError(f"cannot write {path}: it lies in the memory's own folder {store.location}; "
                                    "write the export outside it")
    other = next((folder for folder in Path(path).resolve().parents if holds_memory(folder)), None)
    if other is not None:  # it could replace that memory's memory.sqlite, or leave a stray file among its own
        raise InvalidInputError(f"cannot write {path}: it lies in the folder of the memory at {other}; "
                                "write the export outside it")

    def batches() -> Iterator[Rows]:
        for ids, vectors in store.vector_chunks(batch):
            items = store.items(ids.tolist())
            if len(items) != len(ids):  # removed meanwhile by another process
                keep = {i.id for i in items}
                chosen = np.asarray([int(i) in keep for i in ids])
                ids, vectors = ids[chosen], vectors[chosen]
            thumbs = [store.thumbnail(int(i)) for i in ids] if thumbnails else None
            yield rows_of(items, vectors, thumbs)
            if progress:
                progress(len(items))

    header = {"encoder": store.identity.to_dict(), "settings": store.settings().to_dict(),
              "exported_from": _where(store), "exported_at": time.time(), **fitted_transform(store)}
    return write_parquet(path, store.dim, header, batches(), thumbnails=thumbnails, replace=replace)


def fitted_transform(store: Store) -> dict[str, Any]:
    """The header's `fitted_transform`: the fit the store searches through and the newest
    item id it was fitted on (`max_id`, in the export's `id` column's ids), so an import
    installs that very fit; nothing for the identity, nor for a fit that saw items removed
    since (a removal not yet purged): its mean holds each of them (n x mean - (n - 1) x
    mean(rest) is the removed vector), so the import fits the spec on the items it brings,
    as the purge refits the memory on them."""
    from .calibrate import changed_since

    fitted = store.transform()
    if fitted.is_identity:
        return {}
    max_id = store.describe()["transform"]["max_id"]
    changed = changed_since(fitted.fitted_items, max_id, store.ids())
    if changed is not None and changed[1]:
        return {}
    return {"fitted_transform": {"fitted": fitted.to_dict(), "max_id": max_id}}


def _header_fit(path: str | Path, header: dict[str, Any]) -> tuple[FeatureTransform, int] | None:
    """The fit in the header and the newest (exported) item id it saw; None in an export
    written before vismem kept the fit (the import refits)."""
    found = header.get("fitted_transform")
    if found is None:
        return None
    try:
        return FeatureTransform.from_dict(found["fitted"]), int(found["max_id"])
    except (InvalidInputError, KeyError, TypeError, ValueError) as exc:
        raise VismemError(f"{path} holds a fitted feature transform this vismem cannot read ({clause(exc)}): upgrade "
                          "vismem, or export the memory again") from None


def import_store(path: str | Path, location: str | Path, *, batch: int = DEFAULT_BATCH,
                 progress: Callable[[int], None] | None = None, filled: Callable[[], None] | None = None) -> Store:
    """Create a memory at `location` (a directory or another home's URI) holding exactly
    the export's items, settings and encoder identity; returns its store, open.
    `filled()` once the hidden memory is full, before it is moved into place (after it,
    `location` holds no memory or this one, whole).

    Items get new ids. Copies of one image in the export stay copies. A memory that
    searched through a feature transform searches through the same fit (an export
    written before vismem kept it gets a fit of its spec on the items). The memory
    appears at `location` only once the import is complete, in every home
    (`create_filled_store`): an interrupted import leaves nothing there.
    """
    from .store import create_filled_store

    header, _ = read_header(path)
    try:
        identity = EncoderIdentity(**header["encoder"])
        settings = MemorySettings.from_dict(header["settings"])
    except TypeError as exc:  # a field this vismem does not know: written by a newer one
        raise VismemError(f"{path} holds an encoder or settings this vismem does not know ({clause(exc)}): "
                          "upgrade vismem") from None
    fit = _header_fit(path, header)
    # newest old ids that derived state saw, to follow into the new ids
    marks = {name: old for name, old in [("abstention", settings.abstention.max_id if settings.abstention else None),
                                         ("transform", fit[1] if fit else None)] if old is not None}

    def fill(store: Store) -> None:
        _check_can_search_as(store, settings, path, location)  # before any item is uploaded
        counts: dict[int, int] = {}
        newest = dict.fromkeys(marks, 0)  # the new id of the newest item each mark saw
        for rows in read_parquet(path, batch):
            _check_importable(path, rows, identity.dim)
            ids = store.insert(new_items(rows), allow_duplicates=True).ids
            for label, chosen in relabels(rows, ids).items():
                store.update(chosen, label=label)
            counts.update((i, int(v)) for i, v in zip(ids, rows.prune_counts, strict=True) if v)
            for name, old_max in marks.items():  # rows come in id order and get ascending new ids
                newest[name] = max([newest[name], *(i for i, old in zip(ids, rows.ids, strict=True) if old <= old_max)])
            if progress:
                progress(len(rows))
        if counts:
            store.set_prune_counts(counts)
        installed = fit is not None and store.capabilities.feature_transforms and len(store) > 0
        if installed and fit is not None:
            store.install_transform(fit[0], newest["transform"])
        changes = derived_settings(settings, len(store), newest.get("abstention"), refit=not installed)
        if changes:
            store.save_settings(changes)
        if settings.abstention is not None and "transform" in changes \
                and store.transform().key != settings.abstention.transform:
            log.warning("%s: the feature transform, refitted on the %d imported items, differs from the one the "
                        "abstention threshold was calibrated through (items were added or removed after it was "
                        "fitted): run `vismem calibrate %s` before classifying with --abstain", location, len(store),
                        location)
        if filled:
            filled()

    return create_filled_store(location, identity, settings, fill)


def _check_can_search_as(store: Store, settings: MemorySettings, path: str | Path, location: str | Path) -> None:
    """Refuse a home that cannot search as the exported memory did (through its transform)."""
    if settings.transform != TransformSpec() and not store.capabilities.feature_transforms:
        raise InvalidInputError(
            f"{path} comes from a memory that searched through a fitted feature transform "
            f"({settings.transform.name}), which a memory at {location} cannot do, so it would decide "
            "differently: import it into a directory, or set the transform to none in the original "
            "(`vismem tune MEMDIR --transform none`) and export it again")


def derived_settings(settings: MemorySettings, items: int, calibrated_max_id: int | None, *,
                     refit: bool = True) -> dict[str, Any]:
    """What an import sets once its `items` are in: with `refit`, the feature transform,
    fitted on them (for an export that holds its spec, not the fit: the same items in
    the same order fit the same only if none came after the fit; none without items),
    and the calibration's newest item id in the new ids (it tells which items came
    after calibrating)."""
    changes: dict[str, Any] = {}
    if refit and settings.transform != TransformSpec():
        changes["transform"] = settings.transform if items else TransformSpec()
    if settings.abstention is not None and calibrated_max_id is not None:
        changes["abstention"] = dataclasses.replace(settings.abstention, max_id=calibrated_max_id)
    return changes


def relabels(rows: Rows, ids: list[int]) -> dict[str, list[int]]:
    """Current label -> new ids of the rows that were relabelled to it."""
    found: dict[str, list[int]] = {}
    for k, item_id in enumerate(ids):
        if rows.relabelled_from[k]:
            found.setdefault(rows.labels[k], []).append(item_id)
    return found

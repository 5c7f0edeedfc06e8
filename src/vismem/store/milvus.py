"""`MilvusStore`: a memory in a Milvus collection, `milvus://HOST:PORT/COLLECTION`.

    COLLECTION           one row per item: id, vector, label, source, path, content hash,
                         weight, metadata (JSON), added_at, relabelled_from, prune count,
                         thumbnail (base64 JPEG, "" when none)
    COLLECTION__vismem   a few rows by key: the memory's config (encoder, format),
                         settings, and a change token

The second implementation of the `Store` contract (see base.py). Where Milvus differs
from a directory, this home says so rather than pretending:

- **Visibility.** Searches and reads of items and ids use Strong consistency, so a write
  that returned (by any process) is seen by the next one: a removed item is never
  returned again. A Strong read waits for the server's next time tick (Milvus default
  `proxy.timeTickInterval` 200 ms). Reads whose answer cannot change under a writer
  (an id's vector) or that only need this process's writes use Session consistency.
  What a process caches (settings, item count, the memory's prototypes) follows *other*
  processes' edits through a change token: a writer writes a new one within a second of
  its edits (settings at once), and `refresh()` reads it at Bounded consistency, at most
  once a second, so within seconds (Milvus's graceful time is 5 s by default).
- **Atomicity.** Milvus has no transactions. One insert, delete or upsert call is applied
  whole or not at all, so each batch of up to `ROWS_PER_CALL` items (thumbnails
  included: they live in the item's row) is atomic; a larger insert commits in several.
  An import is whole: it fills collections of other names and renames them into place
  (`MilvusStore.create_filled`).
- **Thumbnails** live in the item rows, so Milvus loads them into its query nodes' memory
  with the other fields (~5-8 KB per image, several times a 512-d vector): create a
  large memory with `?thumbnails=0` (explanations then show no pictures).
- **Duplicates** are checked before inserting (Strong read of the content hashes) and
  again after: if another writer inserted the same content at the same moment, the item
  with the smaller id stays and the other writer's copy is deleted, so both writers
  converge on one item.
- **Ids** are random 53-bit integers (exact in JSON and JavaScript), checked against the
  collection: Milvus has no counter that two writers can share. Listing order ("oldest
  first") follows `added_at`.
- **Removal is logical.** `delete` makes items unreachable at once; their bytes stay in
  Milvus's binlogs until it compacts and garbage-collects, and in its message log for
  the log's retention. `purge` requests a compaction; nothing here can verify server
  storage (`capabilities.verifiable_purge` is False).
"""

from __future__ import annotations

import base64
import json
import logging
import math
import re
import secrets
import threading
import time
import uuid
from collections import Counter
from contextlib import contextmanager
from dataclasses import replace
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence, TypeVar
from urllib.parse import parse_qs, urlsplit

import numpy as np

from ..errors import InvalidInputError, MemoryExistsError, MemoryNotFoundError, VismemError, committed, committed_as
from ..maintenance import maintenance, no_progress
from ..prune import PruneSettings
from ..settings import EncoderIdentity, MemorySettings
from ..transform import FeatureTransform, TransformSpec
from ..transform import identity as no_transform
from .base import (MAX_DIM, MAX_LABEL_LENGTH, Capabilities, Filter, InsertResult, Item, Nearest, Neighbours, NewItem,
                   Page, canonical, check_label, check_new_items, check_weight)
from .milvus_expr import (SIDE_SUFFIX, MilvusLocation, filter_expression,
                          hashes_expression, ids_expression, index_plan, literal, new_ids,
                          null_keys, tells_null_from_missing)

FORMAT_NAME = "vismem-milvus"
# 2: labels, sources and relabel history in Unicode NFC. A memory kept by version 1 may hold
# `Café` in NFD (a Mac folder's name) beside NFC (typed): two classes that print alike. Its
# first open by a process that can write rewrites those rows (`MilvusStore._upgrade`).
FORMAT_VERSION = 2
NFC_FIELDS = ("label", "source", "relabelled_from")
VARCHAR_MAX = 65535
# The widest float vector a Milvus collection holds (milvus.io/docs/limitations.md), below
# vismem's own MAX_DIM: a wider memory is refused before connecting, not by the server after.
MILVUS_MAX_DIM = 32_768
THUMBNAIL_MAX = (VARCHAR_MAX // 4) * 3  # JPEG bytes whose base64 fits a text field
ROWS_PER_CALL = 5000        # rows per insert/upsert call, at most...
BYTES_PER_CALL = 16 << 20   # ...and about this many bytes of rows: gRPC refuses messages over 64 MiB
VECTOR_BYTES_PER_READ = 8 << 20  # raw vector bytes per page of a scan (a reply is ~3x that)
IDS_PER_QUERY = 1000        # ids per `id in [...]` expression
INDEX_POLL_SECONDS = 0.5    # between asking how far an index build is (pymilvus's own wait polls as often)
T = TypeVar("T")
SCAN_FROM = 10_000          # vectors of this many ids (and half the memory) are read by a scan
TOKENS_KEPT = 4096
COMPACTION_EVERY = 60.0     # seconds between compaction requests of one process
COMPACTION_POLL = 0.5       # seconds between looks at the segments while `compact` waits
COMPACTION_QUIET = 10.0     # seconds of unchanged segments after which `compact` stops waiting...
COMPACTION_WAIT = 600.0     # ...and the most it waits in all
PAGE = 16384                # Milvus's largest query window (offset + limit)
STRONG, SESSION, BOUNDED = "Strong", "Session", "Bounded"
REMEMBER_DELETES = 30.0     # seconds this process hides its own deletes from Session reads
STALE_CHECK_EVERY = 1.0     # seconds between reads of the change token
TOKEN_DELAY = 1.0           # seconds a write waits for others before the change token tells
FILLING = "__filling_"      # COLLECTION__filling_STARTED_RANDOM: an import's work before its rename
ABANDONED_AFTER = 24 * 3600.0  # seconds after which a fill's leftovers are dropped by the next fill
ITEM_FIELDS = ["id", "label", "source", "path", "content_hash", "weight", "meta", "added_at",
               "relabelled_from", "prune_count"]
ROW_FIELDS = ["vector", *ITEM_FIELDS, "thumbnail"]   # a whole row, as an upsert must write it
VOTE_FIELDS = ["label", "source", "weight", "prune_count", "relabelled_from"]



def _none_if_empty(text: str | None) -> str | None:
    return text or None


@contextmanager
def _closed_on_error(client: Any, location: MilvusLocation, doing: str) -> Iterator[None]:
    """Close the client if the block fails; raise a VismemError that says what failed."""
    try:
        yield
    except VismemError:
        client.close()
        raise
    except Exception as exc:  # pymilvus raises its own types, and grpc's
        client.close()
        raise _milvus_error(location, exc, doing) from exc


def _quiet_pymilvus() -> None:
    """pymilvus logs every failed call before raising (we raise one clear error) and warns
    that a 2.3 server gives its query iterators no snapshot time (they use the client's
    clock; see docs/homes.md). It sets its loggers' levels when imported: so, after."""
    for name in ("pymilvus", "pymilvus.milvus_client"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


def _milvus_error(location: MilvusLocation, exc: Exception, doing: str) -> VismemError:
    message = getattr(exc, "message", None) or str(exc)
    if "connect" in message.lower() or "unavailable" in message.lower() or "timeout" in message.lower():
        return VismemError(f"cannot reach Milvus at {location.host}:{location.port} while {doing}: {message}; "
                           "is the server up, and is VISMEM_MILVUS_TOKEN set if it needs one?")
    return VismemError(f"Milvus at {location.host}:{location.port} failed while {doing}: {message}")


# ---- the store ---------------------------------------------------------------------------

class MilvusStore:
    """A memory in a Milvus collection (see the module docstring for the guarantees)."""

    def __init__(self, location: MilvusLocation, client: Any, config: dict[str, Any]) -> None:
        _quiet_pymilvus()
        self.where = location
        self.location = str(location)
        self._client = client
        self._config = config
        self.identity = EncoderIdentity(**config["encoder"])
        self.capabilities = Capabilities(thumbnails=bool(config.get("thumbnails", True)),
                                         verifiable_purge=False, local_files=False)
        self._settings = MemorySettings()
        self._identity = no_transform(self.identity.dim)
        self._token: str | None = None
        # change tokens this process wrote or read lately (a Bounded read may lag by seconds;
        # forgetting an old one costs at most one needless reload)
        self._tokens_seen: dict[str, None] = {}
        self._count = 0
        self._deleted_since_compaction = False
        self._last_compaction = -math.inf
        self._deleted: dict[int, float] = {}   # ids this process deleted lately -> when
        self._checked = -math.inf              # when the change token was last read
        self._news = False                     # it showed another process's change, not yet loaded
        self.catch_ups = 0
        # (when, ids asked, ids found) of the last Session read of vectors by id, which a
        # delete of the same ids right after reuses as its read of which are there
        self._presence: tuple[float, set[int], set[int]] | None = None
        self._lock = threading.Lock()             # guards the change token and its timer
        self._dirty = False                       # wrote since the last change token
        self._timer: threading.Timer | None = None
        self._server_version: str | None = None
        self._load()

    # ---- open / create ---------------------------------------------------------------

    @classmethod
    def _connect(cls, location: MilvusLocation) -> Any:
        try:
            from pymilvus import MilvusClient
        except ImportError as exc:
            raise VismemError('a Milvus memory needs pymilvus: pip install "vismem[milvus]"') from exc
        _quiet_pymilvus()
        try:
            return MilvusClient(uri=location.uri, token=location.token or "", timeout=15)
        except Exception as exc:  # pymilvus raises its own types, and grpc's
            raise _milvus_error(location, exc, "connecting") from exc

    @classmethod
    def create(cls, location: str, identity: EncoderIdentity, settings: MemorySettings, *,
               thumbnails: bool | None = None, client: Any = None) -> MilvusStore:
        """Make the two collections, their indexes and the config row (written last, so
        an interrupted create never looks like a memory). `client`: a connected pymilvus
        `MilvusClient` to use instead of connecting to the location's server (milvus-lite)."""
        where = MilvusLocation.parse(location)
        _check_dim(identity.dim)
        if thumbnails is None:
            thumbnails = _thumbnails_wanted(location)
        client = client or cls._connect(where)
        with _closed_on_error(client, where, f"creating {where.collection}"):
            _check_free(client, where)
        return cls._create(client, where, identity, settings, thumbnails)

    @classmethod
    def _create(cls, client: Any, where: MilvusLocation, identity: EncoderIdentity, settings: MemorySettings,
                thumbnails: bool) -> MilvusStore:
        with _closed_on_error(client, where, f"creating {where.collection}"):
            made = [cls._create_side(client, where.side),
                    cls._create_items(client, where.collection, identity.dim, settings.index)]
            # Index, then load, both collections at once: the server takes its load steps on
            # ~1 s ticks, so loading them one after the other took twice as long (6 s, not 3).
            # `sync=False`: pymilvus would poll every 0.5 s for an index that an empty
            # collection has at once; the load waits for it in any case.
            for name, index in made:
                client.create_index(name, index, sync=False)
            client.load_collection(where.side, _async=True)
            client.load_collection(where.collection)
            client.load_collection(where.side)  # loaded by now: this returns at once
            config = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "encoder": identity.to_dict(),
                      "created_at": time.time(), "thumbnails": thumbnails}
            client.upsert(where.side, [_side_row("settings", settings.to_dict()), _side_row("token", uuid.uuid4().hex),
                                       _side_row("config", config)])
        return cls(where, client, config)

    @classmethod
    def create_filled(cls, location: str, identity: EncoderIdentity, settings: MemorySettings,
                      fill: Callable[[MilvusStore], None]) -> MilvusStore:
        """A new memory at `location`, filled by `fill(store)` under other collection names
        and renamed into place when full: an error, Ctrl-C or a kill midway leaves no memory
        at `location`. The items collection is renamed first and the side collection (which
        `open` needs) last, so the memory opens only once both are in place.

        What a killed fill leaves is found by its names, COLLECTION__filling_STARTED_RANDOM
        (+ the side suffix). On a server many machines share, a process id tells nothing
        about liveness, and a fill of millions of items may take hours: the next fill of
        COLLECTION drops those started over a day ago and names the younger ones (they may
        be another machine's import in progress) with how to drop them."""
        where = MilvusLocation.parse(location)
        _check_dim(identity.dim)
        client = cls._connect(where)
        with _closed_on_error(client, where, f"creating {where.collection}"):
            _check_free(client, where)
            _drop_abandoned_fills(client, where)
        staging = replace(where, collection=f"{where.collection}{FILLING}{int(time.time())}_{secrets.token_hex(4)}")
        store: MilvusStore | None = None
        try:
            store = cls._create(client, staging, identity, settings, _thumbnails_wanted(location))
            fill(store)
            store.close()  # its last change token and compaction request go to the filled collections
            store = None
            client = cls._connect(where)
            with _closed_on_error(client, where, f"renaming {staging.collection} to {where.collection}"):
                _rename_into_place(client, staging, where)
        except BaseException:
            if store is not None:
                store._abandon()
            _drop(staging)
            raise
        return cls.open(location, client=client)

    @classmethod
    def open(cls, location: str, *, client: Any = None) -> MilvusStore:
        where = MilvusLocation.parse(location)
        client = client or cls._connect(where)
        with _closed_on_error(client, where, f"opening {where.collection}"):
            if not client.has_collection(where.side) or not client.has_collection(where.collection):
                raise MemoryNotFoundError(f"no memory at {where}: create one with `vismem create {where}`")
            client.load_collection(where.side)
            rows = client.query(where.side, filter='key == "config"', output_fields=["value"],
                                consistency_level=STRONG)
            if not rows:
                raise MemoryNotFoundError(f"{where.side} holds no vismem config: {where} is not a vismem memory "
                                          "(or its create was interrupted); create it anew under another name")
            config = json.loads(rows[0]["value"])
            if config.get("format") != FORMAT_NAME or int(config.get("version", 0)) > FORMAT_VERSION:
                raise VismemError(f"memory at {where} has format {config.get('format')} version "
                                  f"{config.get('version')}; this vismem reads {FORMAT_NAME} up to "
                                  f"{FORMAT_VERSION}: upgrade vismem")
            client.load_collection(where.collection)
        store = cls(where, client, config)
        if int(config.get("version", 0)) < FORMAT_VERSION:
            store._upgrade()
        return store

    def _upgrade(self) -> None:
        """Format 1 -> 2: rewrite the labels, sources and relabel history that NFC changes.
        One scan finds the rows; each is upserted whole (one call of up to 1,000 rows is
        atomic), and the config's version is written last, so an interrupted upgrade leaves
        version 1 and the next open finishes it (rows already in NFC are not found again).
        A memory this client cannot write (no privilege, a failing server) is used as it
        is, with a warning: its two forms of a label vote as two classes until then."""
        try:
            with maintenance("upgrading the Milvus memory from format 1 to 2 (labels in NFC)",
                             self._count) as advance:
                changing: list[int] = []
                for rows in self._scan("", ["id", *NFC_FIELDS]):
                    changing += [int(r["id"]) for r in rows if _nfc_row(r) != r]
                    (advance or no_progress)(len(rows))
                if changing:
                    self._rewrite(changing, lambda row: row.update(_nfc_row(row)))
                    self._touch(now=True)  # processes that have it open reload
                config = {**self._config, "version": FORMAT_VERSION}
                self._call("recording its format", self._client.upsert, self.where.side,
                           [_side_row("config", config)])
                self._config = config
        except VismemError as exc:
            logging.getLogger(__name__).warning(
                "%s is in format 1 and could not be upgraded to 2, which keeps labels and sources in NFC (%s); "
                "it is used as it is, so a label kept both ways (a Mac folder's NFD `Café` and a typed one) votes "
                "as two classes until a client that can write opens it", self.where, exc)

    @staticmethod
    def _create_side(client: Any, name: str) -> tuple[str, Any]:
        from pymilvus import DataType

        schema = client.create_schema(auto_id=False, description="vismem: config, settings, change token")
        schema.add_field("key", DataType.VARCHAR, is_primary=True, max_length=64)
        schema.add_field("value", DataType.VARCHAR, max_length=VARCHAR_MAX)
        schema.add_field("v", DataType.FLOAT_VECTOR, dim=2)  # Milvus needs a vector in every collection
        index = client.prepare_index_params()
        index.add_index("v", index_type="FLAT", metric_type="L2")
        client.create_collection(name, schema=schema, consistency_level=STRONG)
        return name, index

    @staticmethod
    def _create_items(client: Any, name: str, dim: int, setting: str) -> tuple[str, Any]:
        from pymilvus import DataType

        schema = client.create_schema(auto_id=False, description="vismem memory items")
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
        schema.add_field("label", DataType.VARCHAR, max_length=4 * MAX_LABEL_LENGTH)
        schema.add_field("source", DataType.VARCHAR, max_length=VARCHAR_MAX)
        schema.add_field("path", DataType.VARCHAR, max_length=VARCHAR_MAX)
        schema.add_field("content_hash", DataType.VARCHAR, max_length=64)
        schema.add_field("weight", DataType.DOUBLE)
        schema.add_field("meta", DataType.JSON)
        schema.add_field("added_at", DataType.DOUBLE)
        schema.add_field("relabelled_from", DataType.VARCHAR, max_length=4 * MAX_LABEL_LENGTH)
        schema.add_field("prune_count", DataType.INT64)
        schema.add_field("thumbnail", DataType.VARCHAR, max_length=VARCHAR_MAX)
        index = client.prepare_index_params()
        params, _ = index_plan(setting, dim)
        index.add_index("vector", metric_type="IP", **params)
        client.create_collection(name, schema=schema, consistency_level=STRONG)
        return name, index

    def _load(self) -> None:
        """(Re)read settings, the change token and the item count (Strong)."""
        rows = self._side_values(["settings", "token"], STRONG)
        self._settings = MemorySettings.from_dict(rows.get("settings", {}))
        self._token = rows.get("token")
        self._saw(self._token)
        self._count = self._count_where("")

    # ---- calls, with errors a user can act on ------------------------------------------

    def _call(self, doing: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except VismemError:
            raise
        except Exception as exc:
            raise _milvus_error(self.where, exc, doing) from exc

    def _query(self, expr: str, fields: list[str], *, level: str = STRONG, limit: int | None = None,
               collection: str | None = None) -> list[dict[str, Any]]:
        kwargs: dict[str, Any] = {"filter": expr, "output_fields": fields, "consistency_level": level}
        if limit is not None:
            kwargs["limit"] = limit
        return list(self._call("reading items", self._client.query, collection or self.where.collection, **kwargs))

    def _scan(self, expr: str, fields: list[str], batch: int = PAGE) -> Iterator[list[dict[str, Any]]]:
        """Every row matching `expr`, in id order, `batch` rows at a time (bounded memory)."""
        iterator = self._call("reading items", self._client.query_iterator, self.where.collection,
                              batch_size=min(batch, PAGE), filter=expr or "id > 0", output_fields=fields,
                              consistency_level=STRONG)
        try:
            while True:
                rows = self._call("reading items", iterator.next)
                if not rows:
                    return
                yield list(rows)
        finally:
            iterator.close()

    def _expression(self, where: Filter | None) -> str:
        """`filter_expression(where)`, exact for `KEY=null` conditions: of the items it
        matches, those whose KEY holds an empty list or an object are told from those
        holding null by reading their metadata (one query of the items it matches)."""
        expr = filter_expression(where)
        keys = null_keys(where)
        if not keys:
            return expr
        self._check_null_filters()
        nulls: list[int] = []
        others: list[int] = []
        for rows in self._scan(expr, ["id", "meta"]):
            for r in rows:
                meta = r["meta"] or {}
                (nulls if all(meta.get(k) is None for k in keys) else others).append(int(r["id"]))
        if not others:
            return expr
        if len(nulls) <= len(others):  # the shorter id list
            return ids_expression(sorted(nulls)) if nulls else "id < 0"
        return f"{expr} and not ({ids_expression(sorted(others))})"

    def _check_null_filters(self) -> None:
        version = self.server_version()
        if not tells_null_from_missing(version):
            raise InvalidInputError(f"Milvus {version} at {self.where.host}:{self.where.port} does not tell a "
                                    "metadata key holding null from a missing key in a filter (from 2.5 its "
                                    "`exists` is false for both), so vismem cannot filter on KEY=null there: "
                                    "store a value such as \"none\" instead and filter on it")

    def server_version(self) -> str:
        if self._server_version is None:
            self._server_version = str(self._call("asking the server version", self._client.get_server_version))
        return self._server_version

    def _count_where(self, expr: str) -> int:
        rows = self._query(expr, ["count(*)"])
        return int(rows[0]["count(*)"]) if rows else 0

    def _side_values(self, keys: Sequence[str], level: str) -> dict[str, Any]:
        rows = self._query(f"key in [{', '.join(literal(k) for k in keys)}]", ["key", "value"], level=level,
                           collection=self.where.side)
        return {r["key"]: json.loads(r["value"]) for r in rows}

    def _touch(self, now: bool = False) -> None:
        """Mark that this process wrote. Other processes learn it from a new change token,
        which a timer writes at most once a second (a burst of edits writes one), or at
        once with `now` (settings), or at `close`."""
        with self._lock:
            self._dirty = True
            if now:
                self._write_token()
            elif self._timer is None:
                self._timer = threading.Timer(TOKEN_DELAY, self._timed_token)
                self._timer.daemon = True
                self._timer.start()

    def _timed_token(self) -> None:
        with self._lock:
            self._timer = None
            try:
                self._write_token()
            except VismemError as exc:  # the next write or close tries again
                logging.getLogger(__name__).warning("%s", exc)

    def _write_token(self) -> None:
        """Under the lock: write a new change token if this process wrote since the last."""
        if not self._dirty:
            return
        token = uuid.uuid4().hex
        self._call("saving the change token", self._client.upsert, self.where.side, [_side_row("token", token)])
        self._token = token
        self._saw(token)
        self._dirty = False

    def _abandon(self) -> None:
        """Close without writing anything more: its collections are being dropped."""
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._dirty = False
        self._client.close()

    def _flush_token(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._write_token()

    def _saw(self, token: str | None) -> None:
        if token:
            self._tokens_seen[token] = None
            while len(self._tokens_seen) > TOKENS_KEPT:
                del self._tokens_seen[next(iter(self._tokens_seen))]

    # ---- what the memory is ------------------------------------------------------------

    @property
    def dim(self) -> int:
        return self.identity.dim

    @property
    def read_only(self) -> bool:
        return False

    def settings(self) -> MemorySettings:
        return self._settings

    def record_encoder(self, identity: EncoderIdentity) -> None:
        config = {**self._config, "encoder": identity.to_dict()}
        self._call("recording the encoder's id", self._client.upsert, self.where.side, [_side_row("config", config)])
        self._config, self.identity = config, identity

    def save_settings(self, changes: Mapping[str, Any], progress: Callable[[int], None] | None = None) -> None:
        """Change the named settings; a changed index setting rebuilds the collection's index.
        Feature transforms and recorded queries are the embedded home's (see below)."""
        settings = self._settings.replace(**changes)
        if settings.transform != TransformSpec():
            raise self._no_transforms()
        if settings.record_queries and not self._settings.record_queries:
            raise InvalidInputError("recorded queries tune a directory memory's index; vismem does not tune a "
                                    f"Milvus index ({self.where}: HNSW ef 128, IVF_PQ nprobe 32)")
        old = self._settings
        self._call("saving settings", self._client.upsert, self.where.side,
                   [_side_row("settings", settings.to_dict())])
        with committed(settings):  # (Ctrl-C from here on: the settings are saved)
            self._settings = settings
            if old.index != settings.index:
                self._reindex(settings.index, progress)
            self._touch(now=True)

    def _reindex(self, setting: str, progress: Callable[[int], None] | None = None) -> None:
        name = self.where.collection
        params, _ = index_plan(setting, self.dim)
        index = self._client.prepare_index_params()
        index.add_index("vector", metric_type="IP", **params)
        self._call("releasing the collection", self._client.release_collection, name)
        self._call("dropping the old index", self._client.drop_index, name, "vector")
        # sealed first: the server indexes sealed segments only, and scans growing ones
        self._call("flushing", self._client.flush, name)
        self._call("building the new index", self._client.create_index, name, index, sync=False)
        self._wait_for_index(progress)
        self._call("loading the collection", self._client.load_collection, name)

    def _wait_for_index(self, progress: Callable[[int], None] | None) -> None:
        """Wait until the server has built the collection's index, telling `progress` of
        the items it has indexed. The server counts a segment's rows once the whole segment
        is indexed, so the bar moves a segment at a time (a sealed segment holds up to
        ~1M 128-d rows); pymilvus's own wait tells nothing for minutes at scale. Its count
        includes rows deleted but not yet compacted away: the bar stops at the items."""
        reported = 0
        while True:
            built = self._call("building the new index", self._client.describe_index,
                               self.where.collection, "vector")
            state = str(built.get("state", ""))
            indexed = self._count if state == "Finished" else min(int(built.get("indexed_rows") or 0), self._count)
            if progress and indexed > reported:
                progress(indexed - reported)
                reported = indexed
            if state == "Finished":
                return
            if state == "Failed":
                why = built.get("index_state_fail_reason") or "no reason given"
                raise VismemError(f"Milvus at {self.where.host}:{self.where.port} could not build the "
                                  f"{built.get('index_type', 'new')} index: {why}")
            time.sleep(INDEX_POLL_SECONDS)

    # ---- writes ----------------------------------------------------------------------

    def _check(self, items: Sequence[NewItem]) -> None:
        check_new_items(items, self.dim)
        for item in items:  # and what only Milvus limits
            for name, text in (("source", item.source), ("path", item.path)):
                if text is not None and len(text.encode()) > VARCHAR_MAX:
                    raise InvalidInputError(f"an item's {name} is at most {VARCHAR_MAX} bytes in Milvus")

    def insert(self, items: Sequence[NewItem], *, allow_duplicates: bool = False) -> InsertResult:
        self._check(items)
        result = InsertResult()
        if not items:
            return result
        held = {} if allow_duplicates else self.known_hashes(i.content_hash for i in items if i.content_hash)
        accepted: list[tuple[int, NewItem]] = []
        copies: list[tuple[int, int]] = []   # (position, position of its first copy in this batch)
        first: dict[str, int] = {}
        for position, item in enumerate(items):
            digest = item.content_hash
            if digest and not allow_duplicates:
                if digest in held:
                    result.duplicates.append((position, held[digest]))
                    continue
                if digest in first:
                    copies.append((position, first[digest]))
                    continue
                first[digest] = position
            accepted.append((position, item))
        ids = dict(zip((p for p, _ in accepted), new_ids(len(accepted), self._taken), strict=True))
        now = time.time()
        # added_at orders the listing ("oldest first"), so rows of one batch are a
        # microsecond apart in input order: their random ids say nothing about order.
        rows = [{"id": ids[position], "vector": np.asarray(item.vector, dtype=np.float32), "label": item.label,
                 "source": item.source, "path": item.path or "", "content_hash": item.content_hash or "",
                 "weight": float(item.weight), "meta": item.meta,
                 "added_at": now + k * 1e-6 if item.added_at is None else item.added_at,
                 "relabelled_from": "", "prune_count": 0, "thumbnail": self._thumbnail_text(item.thumbnail)}
                for k, (position, item) in enumerate(accepted)]
        per_call = self._rows_per_call(max((len(str(r["thumbnail"])) for r in rows), default=0))
        for start in range(0, len(rows), per_call):
            chunk = rows[start : start + per_call]
            self._call(f"adding {len(chunk)} items", self._client.insert, self.where.collection, chunk)
            self._count += len(chunk)
        lost = {} if allow_duplicates else self._raced(
            {ids[p]: item.content_hash for p, item in accepted if item.content_hash})
        kept = {p: i for p, i in ids.items() if i not in lost}
        result.ids = [kept[p] for p in sorted(kept)]
        result.duplicates += [(p, lost[i]) for p, i in ids.items() if i in lost]
        result.duplicates += [(p, lost.get(ids[f], ids[f])) for p, f in copies]
        result.duplicates.sort()
        self._touch()
        return result

    def _rows_per_call(self, thumbnail_chars: int) -> int:
        return max(1, min(ROWS_PER_CALL, BYTES_PER_CALL // (4 * self.dim + thumbnail_chars + 1024)))

    def _thumbnail_text(self, jpeg: bytes | None) -> str:
        """A JPEG as the row keeps it: base64, or "" (none, not kept, or too large)."""
        if jpeg is None or not self.capabilities.thumbnails or len(jpeg) >= THUMBNAIL_MAX:
            return ""
        return base64.b64encode(jpeg).decode()

    def _taken(self, ids: list[int]) -> set[int]:
        """Which of these ids are in use (a collision of random 53-bit ids, checked anyway)."""
        return set(self._existing(ids, BOUNDED))

    def _raced(self, ours: dict[int, str]) -> dict[int, int]:
        """Our new items whose content another writer added at the same moment: for each
        such hash the smallest id stays; ours that are not it are deleted. Returns
        {our removed id: the id that stays}."""
        if not ours:
            return {}
        holders: dict[str, list[int]] = {}
        hashes = sorted(set(ours.values()))
        for chunk in _chunks(hashes):
            for row in self._query(hashes_expression(chunk), ["id", "content_hash"]):
                holders.setdefault(row["content_hash"], []).append(int(row["id"]))
        losers = {mine: min(holders[digest]) for mine, digest in ours.items()
                  if digest in holders and min(holders[digest]) != mine}
        if losers:
            self._delete_rows(sorted(losers))
        return losers

    def delete(self, ids: Iterable[int]) -> list[int]:
        """Delete items; returns those that were there: read first at Session consistency,
        which sees this process's inserts, minus the ids it deleted lately (Milvus's
        Session reads do not see one's own deletes at once). Deleting an absent id does
        nothing. Two round trips: the read and the delete."""
        wanted = sorted({int(i) for i in ids})
        if not wanted:
            return []
        seen = self._presence
        if seen is not None and time.monotonic() - seen[0] < 1.0 and set(wanted) <= seen[1]:
            found = sorted(seen[2] & set(wanted))  # `vectors` just read them (the memory does, to update prototypes)
        else:
            found = self._existing(wanted, SESSION)
        self._presence = None
        present = [i for i in found if i not in self._deleted]
        for chunk in _chunks(wanted):
            self._delete_chunk(chunk)
        now = time.monotonic()
        self._deleted.update((i, now) for i in wanted)
        self._deleted = {i: t for i, t in self._deleted.items() if now - t < REMEMBER_DELETES}
        self._count -= len(present)
        self._deleted_since_compaction = True
        self._touch()
        return present

    def _delete_chunk(self, ids: Sequence[int]) -> None:
        self._call(f"removing {len(ids)} items", self._client.delete, self.where.collection,
                   filter=ids_expression(ids))

    def _delete_rows(self, ids: list[int]) -> None:
        for chunk in _chunks(ids):
            self._delete_chunk(chunk)
        self._count -= len(ids)
        self._deleted_since_compaction = True

    def _existing(self, ids: Sequence[int], level: str = STRONG) -> list[int]:
        found: list[int] = []
        for chunk in _chunks(ids):
            found += [int(r["id"]) for r in self._query(ids_expression(chunk), ["id"], level=level)]
        return sorted(found)

    def update(self, ids: Sequence[int], *, label: str | None = None,
               weight: float | None = None) -> list[int]:
        """Relabel and/or reweight: read each row whole and upsert it changed (Milvus has
        no partial update). The first relabel keeps the original label; relabelling back
        forgets it. A relabel to another label resets the item's pruning count v (it counted
        the item's votes under the old label), in the same upsert."""
        if label is not None:
            label = check_label(label)  # as kept: NFC
        check_weight(weight)

        def change(row: dict[str, Any]) -> None:
            if label is not None and label != row["label"]:
                original = row["relabelled_from"] or row["label"]
                row["relabelled_from"] = "" if original == label else original
                row["label"] = label
                row["prune_count"] = 0
            if weight is not None:
                row["weight"] = float(weight)

        changed = self._rewrite(sorted({int(i) for i in ids}), change)
        if changed:
            self._touch()
        return changed

    def _rewrite(self, ids: list[int], change: Callable[[dict[str, Any]], None]) -> list[int]:
        done: list[int] = []
        step = min(IDS_PER_QUERY, self._rows_per_call(VARCHAR_MAX if self.capabilities.thumbnails else 0))
        for start in range(0, len(ids), step):
            rows: list[dict[str, Any]] = self._query(ids_expression(ids[start : start + step]), ROW_FIELDS)
            for row in rows:
                change(row)
                row["vector"] = np.asarray(row["vector"], dtype=np.float32)
            if rows:
                self._call(f"updating {len(rows)} items", self._client.upsert, self.where.collection, rows)
                done += [int(r["id"]) for r in rows]
        return sorted(done)

    def set_prune_counts(self, counts: Mapping[int, int]) -> None:
        """Replace every item's pruning count (absent: 0): rewrite the rows whose count changes."""
        target = {int(i): int(v) for i, v in counts.items() if v}
        now: dict[int, int] = {}
        for rows in self._scan("prune_count > 0", ["id", "prune_count"]):
            now.update((int(r["id"]), int(r["prune_count"])) for r in rows)
        changing = sorted(i for i in set(now) | set(target) if now.get(i, 0) != target.get(i, 0))
        if changing:
            self._rewrite(changing, lambda row: row.update(prune_count=target.get(int(row["id"]), 0)))
            self._touch()

    def save_pruning(self, counts: Mapping[int, int], pruning: PruneSettings,
                     remove: Sequence[int] = ()) -> list[int]:
        """A prune's decision, in three steps: Milvus has no transaction to hold them. The
        counts, then the removals, then the setting, each durable once written. Cut short
        between them, what was written applies under the old setting (the counts perhaps in
        part: rows are rewritten a call at a time) until the prune runs again, which counts
        every item anew; the setting comes last so that a new setting never applies to old
        counts."""
        self._settings.replace(pruning=pruning)  # a bad value fails before any write
        self.set_prune_counts(counts)
        removed = self.delete(remove) if remove else []
        with committed_as(removed):  # (the setting saved, a Ctrl-C carries the removals, as the directory's)
            self.save_settings({"pruning": pruning})
        return removed

    # ---- reads -----------------------------------------------------------------------

    def __len__(self) -> int:
        return self._count

    def ids(self, where: Filter | None = None) -> np.ndarray:
        found = [int(r["id"]) for rows in self._scan(self._expression(where), ["id"]) for r in rows]
        return np.asarray(sorted(found), dtype=np.int64)

    def page(self, where: Filter | None, offset: int, limit: int) -> Page:
        """Items matching a filter, oldest first (by `added_at`, then id)."""
        rows = [(float(r["added_at"]), int(r["id"]))
                for chunk in self._scan(self._expression(where), ["id", "added_at"]) for r in chunk]
        rows.sort()
        chosen = [i for _, i in rows[offset : offset + limit]]
        return Page(len(rows), offset, self.items(chosen))

    def items(self, ids: Sequence[int]) -> list[Item]:
        found: dict[int, Item] = {}
        wanted = [int(i) for i in ids]
        unique = sorted(set(wanted))
        for chunk in _chunks(unique):
            for r in self._query(ids_expression(chunk), ITEM_FIELDS):
                found[int(r["id"])] = _item(r)
        return [found[i] for i in wanted if i in found]

    def columns(self, where: Filter | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(ids, labels, weights, prune counts) of the items a filter allows, by id."""
        rows = [r for chunk in self._scan(self._expression(where), ["id", "label", "weight", "prune_count"])
                for r in chunk]
        rows.sort(key=lambda r: int(r["id"]))
        return (np.asarray([int(r["id"]) for r in rows], dtype=np.int64),
                np.asarray([r["label"] for r in rows], dtype=object),
                np.asarray([float(r["weight"]) for r in rows], dtype=np.float64),
                np.asarray([int(r["prune_count"]) for r in rows], dtype=np.int64))

    def vectors(self, ids: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(ids int64 (n,), vectors float32 (n, dim)) ordered by id, for all or given ids."""
        if ids is None:
            parts = list(self.vector_chunks())
        elif len(ids) >= max(SCAN_FROM, self._count // 2):
            # most of the memory (prototypes, curation): one streaming scan beats id lists
            wanted = {int(i) for i in ids}
            parts = []
            for found, vectors in self.vector_chunks():
                keep = np.fromiter((int(i) in wanted for i in found), dtype=bool, count=len(found))
                parts.append((found[keep], vectors[keep]))
        else:
            unique = sorted({int(i) for i in ids})
            parts = []
            # An id's vector never changes: this process's view (Session) is enough.
            asked = set(unique)
            unique = [i for i in unique if i not in self._deleted]
            for chunk in _chunks(unique):
                rows = self._query(ids_expression(chunk), ["id", "vector"], level=SESSION)
                rows.sort(key=lambda r: int(r["id"]))
                parts.append(_vector_rows(rows, self.dim))
            self._presence = (time.monotonic(), asked, {int(i) for p in parts for i in p[0]})
        if not parts:
            return np.empty(0, np.int64), np.empty((0, self.dim), np.float32)
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def vector_chunks(self, size: int = 65536) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        pending: list[dict[str, Any]] = []
        page = max(1, min(size, VECTOR_BYTES_PER_READ // (4 * self.dim)))
        for rows in self._scan("", ["id", "vector"], batch=page):
            pending += rows
            while len(pending) >= size:
                yield _vector_rows(pending[:size], self.dim)
                pending = pending[size:]
        if pending:
            yield _vector_rows(pending, self.dim)

    def thumbnail(self, item_id: int) -> bytes | None:
        if not self.capabilities.thumbnails:
            return None
        rows = self._query(ids_expression([item_id]), ["thumbnail"])
        return base64.b64decode(rows[0]["thumbnail"]) if rows and rows[0]["thumbnail"] else None

    def index_bytes(self, ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        return np.empty(0, np.int64), np.empty((0, 0), np.uint8)  # the server keeps its index's files

    def class_counts(self) -> dict[str, int]:
        counts = Counter(r["label"] for rows in self._scan("", ["id", "label"]) for r in rows)
        return dict(sorted(counts.items()))

    def known_hashes(self, hashes: Iterable[str]) -> dict[str, int]:
        """Content hash -> the smallest id holding it, for the given hashes that are stored."""
        found: dict[str, int] = {}
        wanted = sorted(set(hashes))
        for chunk in _chunks(wanted):
            for r in self._query(hashes_expression(chunk), ["id", "content_hash"]):
                digest, item_id = r["content_hash"], int(r["id"])
                found[digest] = min(item_id, found.get(digest, item_id))
        return found

    @contextmanager
    def hash_lookup(self) -> Iterator[Callable[[Iterable[str]], dict[str, int]]]:
        yield self.known_hashes  # each query is a request of its own: any thread may ask

    def prune_counts(self, ids: np.ndarray) -> np.ndarray:
        wanted = [int(i) for i in np.asarray(ids).ravel()]
        known: dict[int, int] = {}
        unique = sorted(set(wanted))
        for chunk in _chunks(unique):
            for r in self._query(ids_expression(chunk), ["id", "prune_count"]):
                known[int(r["id"])] = int(r["prune_count"])
        return np.asarray([known.get(i, 0) for i in wanted], dtype=np.int64).reshape(np.shape(ids))

    # ---- search ----------------------------------------------------------------------

    def search(self, queries: np.ndarray, k: int, where: Filter | None = None) -> Neighbours:
        """k nearest items by inner product of unit vectors (cosine), with the vote's columns,
        in one Strong call."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        n = len(queries)
        found = Neighbours.empty(n, k)
        if n == 0 or self._count == 0:
            return found
        _, search_params = index_plan(self._settings.index, self.dim)
        effort = dict(search_params["params"])
        if "ef" in effort:
            effort["ef"] = max(effort["ef"], k)  # HNSW needs ef >= k
        params = {"metric_type": "IP", "params": effort}
        results = self._call("searching", self._client.search, self.where.collection, data=list(queries),
                             limit=k, filter=self._expression(where), output_fields=VOTE_FIELDS,
                             search_params=params, consistency_level=STRONG)
        for row, hits in enumerate(results):
            m = min(len(hits), k)
            if not m:
                continue
            entities = [hit["entity"] for hit in hits[:m]]
            found.ids[row, :m] = [hit["id"] for hit in hits[:m]]
            found.similarities[row, :m] = [hit["distance"] for hit in hits[:m]]
            found.labels[row, :m] = [e["label"] for e in entities]
            found.sources[row, :m] = [e["source"] for e in entities]
            found.weights[row, :m] = [e["weight"] for e in entities]
            found.prune_counts[row, :m] = [e["prune_count"] for e in entities]
            found.relabelled_from[row, :m] = [e["relabelled_from"] or None for e in entities]
        return found

    def nearest(self, queries: np.ndarray, k: int, where: Filter | None = None) -> Nearest:
        """The same search: the server returns the vote's columns with each hit anyway."""
        return self.search(queries, k, where).nearest()

    def transform(self) -> FeatureTransform:
        """No feature transform: a Milvus collection is searched as stored."""
        return self._identity

    def install_transform(self, fitted: FeatureTransform, max_id: int,
                          progress: Callable[[int], None] | None = None) -> None:
        raise self._no_transforms()

    def _no_transforms(self) -> InvalidInputError:
        return InvalidInputError(f"{self.where} keeps its vectors as stored: feature transforms (fitted and "
                                 "searched through) are for a memory in a directory")

    # ---- tuning on real queries: the embedded home's ---------------------------------

    def record_queries(self, queries: np.ndarray) -> None:
        return None  # never opted in: `save_settings` refuses `record_queries`

    def recorded_waiting(self) -> int:
        return 0

    def write_recorded_queries(self) -> int:
        return 0

    def recorded_count(self) -> int:
        return 0

    def clear_recorded_queries(self) -> int:
        return 0

    def tune_index(self, queries: np.ndarray | None) -> dict[str, Any]:
        raise InvalidInputError(f"vismem measures and tunes the recall of a directory memory's index; on "
                                f"{self.where} the index parameters are fixed (HNSW ef 128, IVF_PQ nprobe 32): "
                                "measure recall with benchmarks/milvus.py and reindex if it falls short")

    # ---- lifecycle -------------------------------------------------------------------

    def is_stale(self) -> bool:
        """True when another process changed the memory, as seen within Milvus's bounded
        staleness: the change token is read at Bounded consistency (which may still show a
        token this process has seen; only an unseen one is news), at most once a second."""
        now = time.monotonic()
        if self._news or now - self._checked < STALE_CHECK_EVERY:
            return self._news
        self._checked = now
        token = self._side_values(["token"], BOUNDED).get("token")
        self._news = token is not None and token not in self._tokens_seen
        return self._news

    def refresh(self) -> bool:
        if not self.is_stale():
            return False
        self.catch_ups += 1
        self._load()
        self._news = False
        return True

    def wait_for_writers(self) -> None:
        """Nothing to wait for: Milvus takes every process's writes as they come (no lock)."""

    def purge(self) -> None:
        """Ask Milvus to compact away deleted rows (at most once a minute per process: a
        service purges after every removal, and each request flushes). It returns at once;
        the bytes leave the server's storage when compaction and garbage collection ran."""
        if self._deleted_since_compaction and time.monotonic() - self._last_compaction >= COMPACTION_EVERY:
            self._call("flushing", self._client.flush, self.where.collection)
            self._call("requesting compaction", self._client.compact, self.where.collection)
            self._deleted_since_compaction = False
            self._last_compaction = time.monotonic()

    def compact(self, progress: Callable[[int], None] | None = None) -> dict[str, Any]:
        """Flush, ask Milvus to compact, and wait until its segments hold no removed item.

        The wait watches the segments, not the job: Milvus 2.3 says a compaction job is
        "Completed" as soon as it is asked for, before it has planned anything (measured on
        2.3.5: the segments were rewritten ~1 s later, and the job never showed a plan), so
        vismem reported "completed" for work not yet begun. A flushed segment counts the
        removed rows it still holds, so rows held beyond the live items are what is left to
        reclaim. `progress` hears of live items as the segments the compaction wrote hold
        them (a segment at a time), and of the rest once nothing is left. The server
        compacts a segment only once its removed rows pass its threshold
        (`dataCoord.compaction.single.ratio.threshold`, 0.2 by default): when its segments
        stop changing for COMPACTION_QUIET seconds with removed rows left, the report says
        how many (`"compaction": "requested"`). Ctrl-C after the request carries the report
        so far (`committed`): the server goes on without this process."""
        name = self.where.collection
        self._call("flushing", self._client.flush, name)
        before = self._segments()
        live = self._count_where("")
        removed = max(0, sum(before.values()) - live)
        job = self._call("requesting compaction", self._client.compact, name)
        self._deleted_since_compaction = False
        self._last_compaction = time.monotonic()
        report: dict[str, Any] = {
            "compaction": "requested", "size": live, "reclaimed": 0, "removed_left": removed, "bytes": None,
            "type": index_plan(self._settings.index, self.dim)[0]["index_type"],
            "note": "Milvus drops the compacted-away files at its next garbage collection (dataCoord.gc.*) and "
                    "keeps its message log for its retention time"}
        shown = 0
        with committed(report):  # (Ctrl-C from here on: the server compacts without us)
            started = changed = time.monotonic()
            held = before
            while True:
                now = self._segments()
                left = max(0, sum(now.values()) - live)
                report.update(reclaimed=max(0, removed - left), removed_left=left)
                written = min(live, sum(rows for segment, rows in now.items() if segment not in before))
                if left == 0:
                    report["compaction"], written = "completed", live
                if progress and written > shown:
                    progress(written - shown)
                    shown = written
                if left == 0:
                    return report
                if now != held:
                    held, changed = now, time.monotonic()
                job_done = "Completed" in str(self._call("waiting for compaction",
                                                         self._client.get_compaction_state, job))
                if (job_done and time.monotonic() - changed >= COMPACTION_QUIET) or \
                        time.monotonic() - started >= COMPACTION_WAIT:
                    report["note"] = (f"Milvus left {left:,} removed rows in its segments: it compacts a segment once "
                                      "its removed rows pass dataCoord.compaction.single.ratio.threshold (0.2 by "
                                      "default), and a large segment may still be compacting. " + report["note"])
                    return report
                time.sleep(COMPACTION_POLL)

    def _segments(self) -> dict[int, int]:
        """The collection's flushed segments: id -> rows held, removed rows included."""
        found = self._call("listing segments", self._client.list_persistent_segments, self.where.collection)
        return {int(s.segment_id): int(s.num_rows) for s in found}

    def quality(self) -> Any:
        return None  # recall is not measured on a server (see benchmarks/milvus.py)

    @property
    def unpurged(self) -> bool:
        return self._deleted_since_compaction

    def describe(self) -> dict[str, Any]:
        params, search_params = index_plan(self._settings.index, self.dim)
        version = self.server_version()
        return {
            "home": "milvus", "location": self.location, "format_version": int(self._config.get("version", 1)),
            "server_version": version, "read_only": False, "consistency": STRONG,
            "index": {"type": params["index_type"], "setting": self._settings.index, "size": self._count,
                      "params": {**params["params"], **search_params["params"]}, "quality": None,
                      "warning": None, "tombstones": None, "bytes": None, "bytes_per_vector": None},
            "disk_bytes": None,
            "thumbnails": self.capabilities.thumbnails,
            "storage": ("on the Milvus server; removal is logical: bytes leave its binlogs when it "
                        "compacts and garbage-collects, and its message log after its retention time"),
        }

    def close(self) -> None:
        try:
            self._flush_token()
            self.purge()
        finally:
            self._client.close()


def _thumbnails_wanted(location: str) -> bool:
    return parse_qs(urlsplit(location).query).get("thumbnails", ["1"])[0] not in ("0", "false", "no")


def _check_dim(dim: int) -> None:
    if dim > MILVUS_MAX_DIM:
        raise InvalidInputError(f"Milvus holds vectors of at most {MILVUS_MAX_DIM:,} dimensions, not {dim:,}: keep "
                                f"this memory in a directory (up to {MAX_DIM:,}), or make its vectors narrower")


def _check_free(client: Any, where: MilvusLocation) -> None:
    for name in (where.collection, where.side):
        if client.has_collection(name):
            raise MemoryExistsError(f"collection {name} already exists on {where.host}:{where.port}: choose another "
                                    "name, or drop it with pymilvus (MilvusClient.drop_collection) if it is left from "
                                    "an interrupted create")


def _rename_into_place(client: Any, staging: MilvusLocation, where: MilvusLocation) -> None:
    """Rename a filled memory's collections to `where`'s: the items first, the side
    collection (which `open` needs) last. Milvus refuses to rename onto an existing name,
    so a memory created at `where` meanwhile stays as it is."""
    try:
        client.rename_collection(staging.collection, where.collection)
        try:
            client.rename_collection(staging.side, where.side)
        except Exception:
            client.rename_collection(where.collection, staging.collection)
            raise
    except Exception:
        if client.has_collection(where.collection) or client.has_collection(where.side):
            raise MemoryExistsError(f"a memory was created at {where} while this import filled it: choose "
                                    "another name") from None
        raise


def _drop(where: MilvusLocation) -> None:
    """Drop a memory's collections that exist, on a connection of its own (best effort: the
    error being handled matters more; what stays is dropped by a later fill)."""
    try:
        client = MilvusStore._connect(where)
    except VismemError as exc:
        logging.getLogger(__name__).warning("could not drop %s: %s", where.collection, exc)
        return
    for name in (where.collection, where.side):
        try:
            if client.has_collection(name):
                client.drop_collection(name)
        except Exception as exc:  # pymilvus raises its own types, and grpc's
            logging.getLogger(__name__).warning("could not drop %s: %s", name, exc)
    client.close()


def _drop_abandoned_fills(client: Any, where: MilvusLocation) -> None:
    """Drop leftovers of fills of `where` started over ABANDONED_AFTER ago; name the others."""
    pattern = re.compile(re.escape(where.collection + FILLING) + r"(\d+)_[0-9a-f]{8}(?:" + SIDE_SUFFIX + ")?$")
    young: list[str] = []
    for name in sorted(client.list_collections()):
        found = pattern.match(name)
        if found and time.time() - int(found[1]) > ABANDONED_AFTER:
            client.drop_collection(name)
        elif found:
            young.append(name)
    if young:
        logging.getLogger(__name__).warning(
            "%s:%s holds collections of an import into %s started in the last day: %s; another import may be "
            "filling them, or they are left from an interrupted one, dropped by the next import after a day or "
            "now with pymilvus: MilvusClient(%r).drop_collection(NAME)",
            where.host, where.port, where.collection, ", ".join(young), where.uri)


def _side_row(key: str, value: Any) -> dict[str, Any]:
    text = json.dumps(value)
    if len(text.encode()) > VARCHAR_MAX:
        raise InvalidInputError(f"the memory's {key} is larger than Milvus's {VARCHAR_MAX}-byte text field")
    return {"key": key, "value": text, "v": [0.0, 0.0]}


def _nfc_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """`row` with its label, source and relabel history in NFC; a relabel history that is
    now the label is forgotten (as relabelling back forgets it)."""
    done = {**row, **{f: canonical(row[f] or "") for f in NFC_FIELDS}}
    if done["relabelled_from"] == done["label"]:
        done["relabelled_from"] = ""
    return done


def _item(r: Mapping[str, Any]) -> Item:
    return Item(int(r["id"]), r["label"], r["source"], _none_if_empty(r["path"]), _none_if_empty(r["content_hash"]),
                float(r["weight"]), dict(r["meta"] or {}), float(r["added_at"]),
                _none_if_empty(r["relabelled_from"]), int(r["prune_count"]))


def _vector_rows(rows: Sequence[Mapping[str, Any]], dim: int) -> tuple[np.ndarray, np.ndarray]:
    ids = np.fromiter((int(r["id"]) for r in rows), dtype=np.int64, count=len(rows))
    vectors = np.asarray([r["vector"] for r in rows], dtype=np.float32).reshape(len(rows), dim)
    return ids, vectors


def _chunks(values: Sequence[T]) -> Iterator[Sequence[T]]:
    """`values` in runs of IDS_PER_QUERY: as many as one filter expression should name."""
    for start in range(0, len(values), IDS_PER_QUERY):
        yield values[start : start + IDS_PER_QUERY]

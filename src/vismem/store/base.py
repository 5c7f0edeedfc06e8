"""The Store contract: what every home of a memory provides, and the records it trades.

A memory's items (vector, label, source, weight, metadata, content hash, thumbnail)
live in a store. `Memory` talks to its store only through the `Store` protocol below,
so a memory can live in one directory (`EmbeddedStore`: SQLite + FAISS, no server) or
in another home that implements the same contract.

The contract, in words:
- **Writes** (`insert`, `delete`, `update`, `set_prune_counts`, `save_settings`) are
  atomic, and durable and visible to the next query when they return.
- **Duplicates** are refused by the store itself: `insert` skips an item whose content
  hash a live item already has (unless `allow_duplicates`), checked inside the write, so
  two writers cannot both add the same content.
- **Reads** see every write committed before them by this process, and by other
  processes after `refresh()`.
- **Search** is cosine k-NN restricted by a `Filter`, returning `Neighbours`: the
  columns a vote and its explanation need, so no second lookup per neighbour.
  `nearest` is the same search with labels and sources only.
- **Removal** (`delete`) makes an item unreachable at once; `purge` then drops its bytes
  from the store's own storage where the home can (`capabilities.verifiable_purge`).
"""

from __future__ import annotations

import json
import re
import unicodedata
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from numbers import Real
from typing import Any, Callable, Iterable, Iterator, Mapping, Protocol, Sequence, runtime_checkable

import numpy as np

from ..errors import InvalidInputError, brief_repr
from ..prune import PruneSettings
from ..settings import EncoderIdentity, MemorySettings
from ..transform import FeatureTransform
from .checkpoints import Checkpoint, RollbackReport

MAX_LABEL_LENGTH = 200
# The widest vector a new memory takes: embeddings in use are a few thousand wide (CLIP
# ViT-bigG 1,280, LLM hidden states 4,096-16,384), and 100,000,000 was taken (400 MB a vector).
MAX_DIM = 65_536
# C0, DEL and C1 (Unicode's Cc), which a new label, source or metadata text may not hold; a
# memory that has one from before still opens. The same range the service's label pattern refuses.
CONTROLS = r"\x00-\x1f\x7f-\x9f"
CONTROL = re.compile(f"[{CONTROLS}]")


# A backslash too, always: doubled only beside a control character, `a\x1bb` typed would
# still read as ESC; doubled only where it starts something escape-like, `D:\train` would be
# doubled and `D:\photos` not. Always, `\` starts an escape as in Python and JSON, and
# backslashes are rare in labels and in sources (POSIX paths by default).
ESCAPED = re.compile(f"[\\\\{CONTROLS}]")


def printable(text: object) -> str:
    r"""`text` (a label, source, metadata text or path) for human output: each control
    character escaped as repr escapes it (`\x1b`, `\t`) and each backslash doubled, so
    `\x1b` shown is ESC and `\\x1b` the four characters; the rest (accents, CJK, emoji) as
    it is. Text a memory kept from before its check cannot drive the terminal. --json keeps
    the true string."""
    return ESCAPED.sub(lambda found: repr(found.group())[1:-1], str(text))


def printable_message(message: str) -> str:
    r"""vismem's own sentence for human output: only control characters escaped (a raw path
    in it cannot drive the terminal). Its backslashes stay: the texts it names are in repr
    or went through `printable` already, and doubling again would show `'a\\\\b'`."""
    return CONTROL.sub(lambda found: repr(found.group())[1:-1], message)


def check_text(kind: str, value: str) -> None:
    """Refuse text with lone surrogates (bytes that were not UTF-8, as a Latin-1 terminal
    passes them): no store can keep it."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInputError(f"{kind} {value!r} is not valid UTF-8 text") from None


def canonical(text: Any) -> Any:
    """Text in Unicode's NFC form, the one form every label and source is kept in; anything
    else as it is, for the checks. A folder copied from a Mac names `Café` with a combining
    accent (NFD) where a keyboard types one character (NFC): the two print alike, and as
    given they were two labels."""
    return unicodedata.normalize("NFC", text) if isinstance(text, str) else text


def text_forms(texts: Iterable[str]) -> frozenset[str]:
    """Each text as given, in NFC and in NFD: what a filter matches, so that a label or
    source kept before texts were made NFC (a Mac folder's NFD name) is found however it
    is typed."""
    return frozenset(form for text in texts for form in
                     ((text, unicodedata.normalize("NFC", text), unicodedata.normalize("NFD", text))
                      if isinstance(text, str) else (text,)))


def check_label(label: object) -> str:
    """`label` as kept (NFC, see `canonical`), or InvalidInputError saying why it cannot be one."""
    if not isinstance(label, str):
        raise InvalidInputError(f"labels must be strings, got {type(label).__name__} {label!r}: convert them "
                                "(str(label), or labels.astype(str) for an array)")
    check_text("label", label)
    if len(label) > MAX_LABEL_LENGTH:
        raise InvalidInputError(f"labels are at most {MAX_LABEL_LENGTH} characters, got {len(label)}")
    check_printable("label", label, "labels are")  # first: a tab alone is no blank label
    if not label.strip():
        raise InvalidInputError("labels must not be empty")
    return canonical(label)


def check_printable(kind: str, text: str, rule: str, named: str | None = None) -> None:
    """Refuse `text` holding a control character, naming `kind` `named` (escaped; `text`'s
    repr unless given): printed raw, ESC drives the terminal; NUL or a tab hides one text's
    difference from another. The name is made only for the error: every label, source and
    metadata text of every add passes here."""
    control = CONTROL.search(text)
    if control:
        raise InvalidInputError(f"{kind} {repr(text) if named is None else named} holds the control character "
                                f"{control.group()!r}: {rule} printable text")


def check_meta_key(key: object) -> str:
    """Metadata keys are what a filter can name: letters, digits and _, in any script (no
    quote, dot or bracket, so a key goes into a SQLite JSON path and a Milvus `meta["key"]`
    as it is; both homes find keys such as `für` or `日本`)."""
    if not isinstance(key, str) or not key or not key.replace("_", "").isalnum():
        raise InvalidInputError(f"metadata keys are letters, digits and _, got {key!r}")
    return key


# Integers filters can find: 64-bit ones, but for -2**63 (Milvus parses it as minus 2**63, out of range).
INT64 = (-(2**63 - 1), 2**63 - 1)


def _past_int64(value: Any) -> bool:
    """An integer (not true/false) no store keeps as a number a filter can find."""
    return isinstance(value, int) and not isinstance(value, bool) and not INT64[0] <= value <= INT64[1]


def check_meta(meta: Mapping[str, Any]) -> None:
    """Metadata a filter can name and JSON can hold: a NaN or an infinity stored once
    would make the database's JSON unreadable to every later filter, and an object JSON
    cannot hold (a numpy scalar) would fail inside the write. Filters must also find what
    was stored: SQLite reads an integer past 64 bits as a rounded float (2**64 and
    2**64 + 1 match each other) and text only up to a NUL character."""
    if not isinstance(meta, Mapping):
        raise InvalidInputError(f"metadata is a mapping of key to value, one per item, got {type(meta).__name__} "
                                f"{meta!r}")
    for key, value in meta.items():
        check_meta_key(key)
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError):
            raise InvalidInputError(f"metadata {key}={value!r} cannot be stored: values are text, finite "
                                    "numbers, true/false, null, and lists and objects of them") from None
        bad = next((text for text in _texts(value) if CONTROL.search(text)), None)
        if bad is not None:  # (named key=value: the text may be one deep inside it)
            check_printable("metadata", bad, "metadata is", named=f"{key}={value!r}")
        problem = _unfilterable(value)
        if problem:
            raise InvalidInputError(f"metadata {key}={value!r} cannot be stored: {problem}")


def _unfilterable(value: Any) -> str | None:
    """Why a filter could not find this JSON value as stored (None if it can)."""
    if isinstance(value, str):
        return "text must not contain NUL characters (\\x00)" if "\x00" in value else None
    if _past_int64(value):
        return "integers are 64-bit (-(2**63 - 1) to 2**63 - 1); store a larger one as text"
    parts = [*value, *value.values()] if isinstance(value, dict) else value if isinstance(value, list) else []
    return next((p for p in map(_unfilterable, parts) if p), None)


def _texts(value: Any) -> Iterator[str]:
    """Every text in a JSON value: itself, or the items, keys and values inside it."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, (list, dict)):
        for part in [*value, *value.values()] if isinstance(value, dict) else value:
            yield from _texts(part)


def check_source(source: object) -> None:
    if not isinstance(source, str):
        raise InvalidInputError(f"sources must be strings, got {type(source).__name__} {source!r}")
    check_text("source", source)
    check_printable("source", source, "sources are")


def check_new_items(items: Sequence[NewItem], dim: int) -> None:
    """What every home refuses before writing anything: bad labels and sources, metadata
    a filter could not name or read, vectors of another dimension."""
    for item in items:
        check_label(item.label)
        check_source(item.source)
        check_meta(item.meta)
        if item.vector.shape != (dim,):
            raise InvalidInputError(f"vector has shape {item.vector.shape}, this memory stores {dim}-d vectors")


MAX_WEIGHT = 1e6  # the largest vote weight an item may carry


def check_weight(weight: float | None) -> None:
    if weight is not None and (isinstance(weight, bool) or not isinstance(weight, Real)):
        # float() read "2" as 2.0 and True as 1.0, and raised its own ValueError for "abc"
        raise InvalidInputError(f"weight must be a finite number from 0 to {MAX_WEIGHT:,.0f}, got "
                                f"{type(weight).__name__} {weight!r}")
    if weight is not None and not (np.isfinite(weight) and 0 <= weight <= MAX_WEIGHT):
        raise InvalidInputError(f"weight must be a finite number from 0 to {MAX_WEIGHT:,.0f}, got {weight}")


def meta_value_key(value: Any) -> Any:
    """How a metadata value compares in filters: numbers and text as themselves (1 == 1.0
    == true, as in SQLite), lists and objects by their canonical JSON text, and an integer
    no store keeps as a number (past 64 bits) as its text, as `parse_where` reads it."""
    if isinstance(value, bool):
        return int(value)
    if _past_int64(value):
        return str(value)
    if isinstance(value, (list, dict)):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return value


# Metadata conditions, every one to hold: {key: value}, or (key, value) pairs, which may
# name a key twice (two different values: nothing matches).
Where = Mapping[str, Any] | Sequence[tuple[str, Any]]


def where_pairs(where: object) -> tuple[tuple[str, Any], ...]:
    """A `where` given as (key, value) pairs, each checked to be one: a string or a
    non-pair would be unpacked into the wrong condition ("ab" as a = "b") or fail as an
    unpacking error naming no argument."""
    pairs = () if isinstance(where, (str, bytes)) or not isinstance(where, Iterable) else tuple(where)
    if not pairs or not all(isinstance(pair, (tuple, list)) and len(pair) == 2 for pair in pairs):
        raise InvalidInputError(f"where is a mapping of metadata keys to values, such as {{'camera': 'phone'}} "
                                f"(or a list of (key, value) pairs), got {where!r}")
    return tuple((key, value) for key, value in pairs)


def parse_where(pairs: Sequence[str] | None, option: str = "--where") -> list[tuple[str, Any]] | None:
    """KEY=VALUE texts (the CLI's --where, the service's `where`) as (key, value)
    conditions, each VALUE read as JSON when it parses (2024, true), else as text; None if
    none given. A key given twice stays twice: both must hold.

    >>> parse_where(["year=2024", "camera=phone", "camera=tablet"])
    [('year', 2024), ('camera', 'phone'), ('camera', 'tablet')]
    """
    if not pairs:
        return None
    found: list[tuple[str, Any]] = []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidInputError(f"{option} takes KEY=VALUE, got {pair!r}")
        try:
            parsed = json.loads(value)
            json.dumps(parsed, allow_nan=False)  # NaN, Infinity, 1e999: no JSON holds them
        except (ValueError, RecursionError):  # not JSON, an over-long integer, nesting too deep
            parsed = value
        # what a store could not find as a number (past 64 bits) stays the text it was
        found.append((key, value if parsed is not value and _unfilterable(parsed) else parsed))
    return found


def missing_ids(asked: Iterable[int], done: Iterable[int]) -> list[int]:
    """The ids an edit was asked for but did not do (they do not exist), ascending: what
    the CLI names before it exits 3 and the service lists as `missing`."""
    return sorted(set(asked) - set(done))


def nothing_matched(labels: Iterable[str], *, ids: Sequence[int] | None = None, label: str | None = None,
                    source: str | None = None, where: Sequence[str] | None = None, where_name: str = "--where") -> str:
    """Why a removal by one selector changed nothing: none of the ids exists, or no item
    has the label (naming the labels held near a mistyped one, of `labels`), the source, or
    matches the KEY=VALUE texts of `where` (`where_name`: how the caller spells it). The
    CLI exits 1 with it, the service answers 404."""
    if ids:
        return f"no items with ids {sorted(set(ids))}; nothing changed"
    if label is not None:
        from difflib import get_close_matches

        labels = list(labels)
        close = set(get_close_matches(label.casefold(), [held.casefold() for held in labels], n=3))
        near = [held for held in labels if held.casefold() in close]
        return (f"no item is labelled {label!r}; nothing changed"
                + (f" (did you mean {' or '.join(map(repr, near))}?)" if near else ""))
    if source is not None:
        return f"no item has source {source!r}; nothing changed"
    # each condition as it was given: `--where a=1 --where b=2` on the command line, `where a=1
    # and where b=2` for the service's query parameters
    joiner = " " if where_name.startswith("-") else " and "
    conditions = joiner.join(f"{where_name} {pair}" for pair in where or [])
    return (f"no item matches {conditions}{' (all must hold)' if len(where or []) > 1 else ''}; "
            "nothing changed")


def parse_pairs(pairs: Sequence[str] | None, option: str = "--meta") -> dict[str, Any] | None:
    """KEY=VALUE texts (the CLI's --meta, the service's `meta`) as metadata to store, read
    as `parse_where` reads them; a key given twice keeps its last value.

    >>> parse_pairs(["year=2024", "camera=phone"])
    {'year': 2024, 'camera': 'phone'}
    """
    found = parse_where(pairs, option)
    return None if found is None else dict(found)


RECENT_FILTERS = 256  # filters kept by the arguments they were made from (Filter.of)


@dataclass(frozen=True)
class Filter:
    """Which items a search, listing or removal may touch: every given condition holds.

    `labels` / `sources`: the item's label / source is one of these; `where`: the item's
    metadata has every key = value; `max_prune_count`: items whose pruning count v is at
    or above it are left out (hard pruning). Hashable, so derived forms can be cached.

    >>> Filter.of(labels=["cat"], where={"camera": "phone"}).where
    (('camera', 'phone'),)
    """

    labels: frozenset[str] | None = None
    sources: frozenset[str] | None = None
    where: tuple[tuple[str, Any], ...] | None = None
    max_prune_count: int | None = None

    @classmethod
    def of(cls, *, labels: Iterable[str] | None = None, sources: Iterable[str] | None = None,
           where: Where | None = None, max_prune_count: int | None = None) -> Filter:
        if isinstance(labels, str) or isinstance(sources, str):
            raise InvalidInputError("labels and sources are lists of strings, not one string")
        labels = tuple(labels) if labels is not None else None
        sources = tuple(sources) if sources is not None else None
        # Every search and classify call builds its filter, usually one it built before:
        # recent ones are kept by their arguments (a third of a 64-d search's own cost once
        # FAISS has evicted the caches), and the same object finds its cached selection
        # without a comparison. Values are keyed with their types: 1, 1.0 and True select
        # alike, but a decision reports them as given.
        pairs = (tuple(where.items()) if isinstance(where, Mapping) else where_pairs(where)) if where else ()
        given = (pairs, tuple(type(value) for _, value in pairs)) if pairs else None
        key = (labels, sources, given, max_prune_count)
        try:
            return _RECENT_FILTERS[key]
        except KeyError:
            hashable = True
        except TypeError:  # a list or object value in `where`: not hashable as given
            hashable = False
        # checked once per new filter (one kept was checked when made: a str equals no other type)
        for kind, texts in (("labels", labels), ("sources", sources)):
            for text in texts or ():  # kept as strings: labels=[3] would match nothing, without a word
                if not isinstance(text, str):
                    raise InvalidInputError(f"{kind} to restrict to are strings, as the memory keeps them, got "
                                            f"{type(text).__name__} {text!r}: give [str(x) for x in {kind}]")
        made = cls(
            labels=text_forms(labels) if labels is not None else None,
            sources=text_forms(sources) if sources is not None else None,
            # by key (a key given twice may have values that do not compare), each condition once
            where=tuple(sorted(dict.fromkeys((check_meta_key(k), meta_value_key(v)) for k, v in pairs),
                               key=lambda kv: kv[0])) if pairs else None,
            max_prune_count=max_prune_count,
        )
        if hashable:
            if len(_RECENT_FILTERS) >= RECENT_FILTERS:
                _RECENT_FILTERS.clear()
            _RECENT_FILTERS[key] = made
        return made

    @property
    def is_everything(self) -> bool:
        return self.labels is None and self.sources is None and not self.where \
            and self.max_prune_count is None

    def restriction(self) -> dict[str, Any] | None:
        """The user-given part, as a decision reports it (pruning is not a restriction)."""
        found: dict[str, Any] = {}
        if self.labels is not None:  # (each as kept, once: not its forms that `Filter.of` matches)
            found["labels"] = sorted(set(map(canonical, self.labels)))
        if self.sources is not None:
            found["sources"] = sorted(set(map(canonical, self.sources)))
        if self.where:
            found["where"] = dict(self.where)
        return found or None


_RECENT_FILTERS: dict[tuple[Any, ...], Filter] = {}


@dataclass
class NewItem:
    """An item to insert: its vector plus metadata. `added_at` (Unix seconds) defaults to
    the time of the insert; an import gives the original one."""

    vector: np.ndarray
    label: str
    source: str
    path: str | None = None
    content_hash: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    thumbnail: bytes | None = None
    weight: float = 1.0
    added_at: float | None = None

    def __post_init__(self) -> None:
        self.label, self.source = plain_text(self.label), plain_text(self.source)


def plain_text(value: Any) -> Any:
    """A str subclass (numpy's str_, from labels given as an array) as a plain str in NFC
    (`canonical`), so that every label and source read back is one; anything else as it
    is, for the checks."""
    return canonical(str(value)) if isinstance(value, str) else value


@dataclass(frozen=True)
class Item:
    """One exemplar's metadata (its vector lives in the store and the index)."""

    id: int
    label: str
    source: str
    path: str | None
    content_hash: str | None
    weight: float
    meta: dict[str, Any]
    added_at: float
    relabelled_from: str | None = None
    prune_count: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "label": self.label, "source": self.source, "path": self.path,
                "content_hash": self.content_hash, "weight": self.weight, "meta": self.meta,
                "added_at": self.added_at, "relabelled_from": self.relabelled_from,
                "prune_count": self.prune_count}


@dataclass
class InsertResult:
    """New ids in input order, and the inputs refused as duplicates: (position, id of the
    live item that already holds that content). `Memory.add_vectors` tells apart the
    refused inputs whose label is not the held item's: `conflicts`, as (position, held
    id, held label); a store fills only `duplicates`."""

    ids: list[int] = field(default_factory=list)
    duplicates: list[tuple[int, int]] = field(default_factory=list)
    conflicts: list[tuple[int, int, str]] = field(default_factory=list)

    __repr__ = brief_repr  # long lists shown by their ends and length


@dataclass(frozen=True)
class Nearest:
    """The k nearest items of n queries, nearest first: what a plain search returns.

    Flat lists in row order: query i's neighbours are entries i*k .. i*k+k-1 of each. A
    row ends with padding (id -1, similarity -inf, label and source None) when fewer than
    k items match. (Lists, not arrays: all a search makes of them is one `Hit` per entry,
    and a single query's k names cost a third as much gathered into lists.)
    """

    k: int
    ids: list[int]
    similarities: list[float]
    labels: list[str | None]
    sources: list[str | None]


@dataclass(frozen=True)
class Neighbours:
    """The nearest items with what the vote needs besides: `weights`, `prune_counts` (the
    items' pruning counts v) and `relabelled_from` (their labels before a relabel, None if
    never relabelled). All arrays are (n, k); a row ends with padding (id -1, similarity
    -inf, None) when fewer than k items match.
    """

    ids: np.ndarray
    similarities: np.ndarray
    labels: np.ndarray
    sources: np.ndarray
    weights: np.ndarray
    prune_counts: np.ndarray
    relabelled_from: np.ndarray

    def nearest(self) -> Nearest:
        """The plain search's part of these, flat."""
        return Nearest(self.ids.shape[1], self.ids.ravel().tolist(), self.similarities.ravel().tolist(),
                       self.labels.ravel().tolist(), self.sources.ravel().tolist())

    @classmethod
    def empty(cls, n: int, k: int) -> Neighbours:
        return cls(np.full((n, k), -1, np.int64), np.full((n, k), -np.inf, np.float32),
                   np.full((n, k), None, object), np.full((n, k), None, object),
                   np.zeros((n, k)), np.zeros((n, k), np.int64), np.full((n, k), None, object))


@dataclass(frozen=True)
class Page:
    """One page of a listing: `total` items match, these start at `offset`."""

    total: int
    offset: int
    items: list[Item]

    __repr__ = brief_repr  # long lists shown by their ends and length

    def to_dict(self) -> dict[str, Any]:
        return {"total": self.total, "offset": self.offset, "items": [i.to_dict() for i in self.items]}


@dataclass(frozen=True)
class Capabilities:
    """What a home can do beyond the contract's core."""

    thumbnails: bool = True        # keeps a small JPEG of each image
    verifiable_purge: bool = True  # `purge` provably drops removed bytes from its storage
    local_files: bool = True       # lives in a directory on this machine (remove --verify scans it)
    feature_transforms: bool = False  # searches through a feature transform fitted on its items

    def purge_said(self) -> dict[str, str]:
        """What a removal's report adds about its purge (`remove --json`, `DELETE /items`):
        `{"purge": "requested"}` where the home cannot purge at once (a server compacts and
        garbage-collects in its own time), else nothing."""
        return {} if self.verifiable_purge else {"purge": "requested"}


@runtime_checkable
class Store(Protocol):
    """Where a memory's items live. See the module docstring for the guarantees."""

    location: str
    identity: EncoderIdentity
    capabilities: Capabilities
    # how many times it has taken in other processes' commits (`refresh`, a write's own
    # catch-up, a save of the index): what a caller derived from the items is stale once this moves
    catch_ups: int

    @property
    def dim(self) -> int: ...
    @property
    def read_only(self) -> bool: ...

    # ---- settings -------------------------------------------------------------------
    def settings(self) -> MemorySettings: ...
    # changes the named settings (`MemorySettings` fields) over the settings as committed when
    # it writes, so that another process's change to others stays; a given `transform` is
    # fitted on the items (a refit, if it is in force) and the search rebuilt through it
    # (progress(n) per n items); a change that cannot be made changes nothing
    def save_settings(self, changes: Mapping[str, Any], progress: Callable[[int], None] | None = None) -> None: ...
    # searches through `fitted`, a fit made elsewhere (the memory an import came from), kept
    # exactly, as if fitted here on the items with ids up to `max_id`: its spec becomes
    # `settings().transform` and the search is rebuilt through it; a home without
    # `capabilities.feature_transforms` refuses (InvalidInputError)
    def install_transform(self, fitted: FeatureTransform, max_id: int,
                          progress: Callable[[int], None] | None = None) -> None: ...
    # records `identity` as the memory's encoder, in one write: the same encoder under the id
    # this vismem gives it (an older one named a weights file by its path, not its digest)
    def record_encoder(self, identity: EncoderIdentity) -> None: ...

    # ---- writes ---------------------------------------------------------------------
    def insert(self, items: Sequence[NewItem], *, allow_duplicates: bool = False) -> InsertResult: ...
    def delete(self, ids: Iterable[int]) -> list[int]: ...
    def update(self, ids: Sequence[int], *, label: str | None = None,
               weight: float | None = None) -> list[int]: ...
    def set_prune_counts(self, counts: Mapping[int, int]) -> None: ...
    # a prune's decision as one change: every item's count v (absent: 0), the removal of
    # `remove` and the `pruning` setting; returns the ids removed. The directory home
    # commits it in one transaction (all of it or nothing); Milvus has no transactions and
    # writes the counts, the removals, then the setting (see docs/homes.md)
    def save_pruning(self, counts: Mapping[int, int], pruning: PruneSettings,
                     remove: Sequence[int] = ()) -> list[int]: ...

    # ---- reads ----------------------------------------------------------------------
    def __len__(self) -> int: ...
    def ids(self, where: Filter | None = None) -> np.ndarray: ...
    def page(self, where: Filter | None, offset: int, limit: int) -> Page: ...
    def items(self, ids: Sequence[int]) -> list[Item]: ...
    def columns(self, where: Filter | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]: ...
    def vectors(self, ids: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]: ...
    def vector_chunks(self, size: int = 65536) -> Iterator[tuple[np.ndarray, np.ndarray]]: ...
    def thumbnail(self, item_id: int) -> bytes | None: ...
    # the bytes the saved search index keeps for these items, as its files hold them:
    # (ids, uint8 (n, bytes per vector)), none where the index keeps no files here
    def index_bytes(self, ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray]: ...
    def class_counts(self) -> dict[str, int]: ...
    def known_hashes(self, hashes: Iterable[str]) -> dict[str, int]: ...
    def hash_lookup(self) -> AbstractContextManager[Callable[[Iterable[str]], dict[str, int]]]:
        """`known_hashes` for other threads to call while this one writes (an ingest
        pipeline asks about the next batch while the last one commits)."""
        ...
    def prune_counts(self, ids: np.ndarray) -> np.ndarray: ...

    # ---- search ---------------------------------------------------------------------
    # queries come as stored (raw); similarities are those in the transformed space
    def search(self, queries: np.ndarray, k: int, where: Filter | None = None) -> Neighbours: ...
    # the same search without the vote's columns (a plain search reads fewer of them)
    def nearest(self, queries: np.ndarray, k: int, where: Filter | None = None) -> Nearest: ...
    # the feature transform searches go through (fitted to `settings().transform`): derived
    # state like the index; a home without `capabilities.feature_transforms` returns the identity
    def transform(self) -> FeatureTransform: ...

    # ---- recall on real queries (search/tuning.py) ------------------------------------
    def record_queries(self, queries: np.ndarray) -> None: ...
    # recorded queries wait in RAM (a search never writes): how many, and write them now
    def recorded_waiting(self) -> int: ...
    def write_recorded_queries(self) -> int: ...
    def recorded_count(self) -> int: ...
    def clear_recorded_queries(self) -> int: ...
    def tune_index(self, queries: np.ndarray | None) -> dict[str, Any]: ...

    # ---- lifecycle ------------------------------------------------------------------
    def is_stale(self) -> bool: ...
    def refresh(self) -> bool: ...
    # returns once no other process is writing (or raises MemoryBusyError), taking no lock:
    # a write waits for that itself, but a caller whose readers queue behind its writes
    # waits here first, so that they go on meanwhile
    def wait_for_writers(self) -> None: ...
    def purge(self) -> None: ...
    # (progress(n) as n more live items are in the compacted index)
    def compact(self, progress: Callable[[int], None] | None = None) -> dict[str, Any]: ...
    def quality(self) -> Any: ...
    @property
    def unpurged(self) -> bool: ...
    def describe(self) -> dict[str, Any]: ...
    def close(self) -> None: ...


@runtime_checkable
class Checkpoints(Protocol):
    """A home that keeps named checkpoints and rolls back to them in one transaction (the
    directory home: see checkpoints.py). Milvus has no transactions to do it with."""

    def make_checkpoint(self, name: str, *, replace: bool = False) -> Checkpoint: ...
    def checkpoints(self) -> list[Checkpoint]: ...
    def delete_checkpoint(self, name: str) -> None: ...
    # whether the items and settings are as the checkpoint has them (its items removed since aside)
    def at_checkpoint(self, name: str) -> bool: ...
    def rollback(self, name: str, progress: Callable[[int], None] | None = None) -> RollbackReport: ...

"""The pure parts of the Milvus home (`milvus.py`): where a memory lives
(`milvus://HOST:PORT/COLLECTION`), vismem filters as Milvus boolean expressions with the
embedded store's meaning, index plans per setting, and the choice of new ids. No server
is needed for any of it.
"""

from __future__ import annotations

import json
import math
import os
import re
import secrets
from dataclasses import dataclass
from typing import Any, Callable, Sequence
from urllib.parse import parse_qs, urlsplit

import numpy as np

from ..errors import InvalidInputError
from .base import Filter, check_meta_key

SCHEME = "milvus"
SIDE_SUFFIX = "__vismem"
TOKEN_ENV = "VISMEM_MILVUS_TOKEN"
MAX_ID = 2**53 - 1          # the largest integer JSON readers (JavaScript) hold exactly
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,199}$")


@dataclass(frozen=True)
class MilvusLocation:
    """Where a Milvus memory lives. The token (user:password or an API key) comes from
    `?token=` or VISMEM_MILVUS_TOKEN and is never shown in the location."""

    host: str
    port: int
    collection: str
    token: str | None = None
    secure: bool = False

    @classmethod
    def parse(cls, text: str) -> MilvusLocation:
        """Read a location; the port defaults to Milvus's 19530.

        >>> MilvusLocation.parse("milvus://db.example/pets").uri
        'http://db.example:19530'
        """
        parts = urlsplit(text)
        if parts.scheme != SCHEME or not parts.hostname:
            raise InvalidInputError(f"a Milvus memory is milvus://HOST:PORT/COLLECTION, got {text!r}")
        collection = parts.path.strip("/")
        if not _NAME.match(collection):
            raise InvalidInputError(f"Milvus collection names are letters, digits and _ (not starting with a "
                                    f"digit, at most 200), got {collection!r} in {text!r}")
        query = parse_qs(parts.query)
        token = query.get("token", [None])[0] or os.environ.get(TOKEN_ENV) or None
        secure = query.get("secure", ["false"])[0].lower() in ("1", "true", "yes")
        return cls(parts.hostname, parts.port or 19530, collection, token, secure)

    @property
    def uri(self) -> str:
        return f"{'https' if self.secure else 'http'}://{self.host}:{self.port}"

    @property
    def side(self) -> str:
        return self.collection + SIDE_SUFFIX

    def __str__(self) -> str:
        return f"{SCHEME}://{self.host}:{self.port}/{self.collection}"


def literal(value: Any) -> str:
    """A value as a Milvus expression literal (strings double-quoted, escaped as Go reads them)."""
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)) and math.isfinite(value):
        return repr(float(value))
    raise InvalidInputError(f"cannot filter on the value {value!r}")


def meta_condition(key: str, value: Any) -> str:
    """`meta[key] == value` with the embedded store's meaning: 1 == 1.0 == true, and a list
    given as its JSON text matches the list. For None, the items whose `key` holds null
    *or an empty list or an object*: no expression tells those apart (see `null_candidates`)."""
    field = f'meta["{check_meta_key(key)}"]'
    if value is None:
        return null_candidates(field)
    terms = [f"{field} == {literal(value)}"]
    if isinstance(value, int) and value in (0, 1):
        terms.append(f"{field} == {literal(bool(value))}")
    if isinstance(value, str) and value.startswith("["):
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = None
        if isinstance(parsed, list) and all(isinstance(v, (str, int, float, bool)) for v in parsed):
            terms.append(f"{field} == [{', '.join(literal(v) for v in parsed)}]")
    return terms[0] if len(terms) == 1 else "(" + " or ".join(terms) + ")"


def null_candidates(field: str) -> str:
    """Items whose JSON `field` holds null, an empty list or an object. Milvus has no null
    literal; `exists` (2.3, 2.4) is true for a key present with any value, null included,
    and false for a missing key; the rest rules out text, true/false, numbers and lists
    that have an element (on a non-list `array_length` is 0). The store tells a null from
    an empty list or an object by reading them (`MilvusStore._expression`)."""
    typed = (f"{field} like \"%\" or {field} == true or {field} == false or {field} >= 0 or {field} < 0 "
             f"or array_length({field}) != 0")
    return f"((exists {field}) and not ({typed}))"


def tells_null_from_missing(version: str) -> bool:
    """Whether a server's `exists` is true for a key holding null (and false for a missing
    key): Milvus 2.3 and 2.4. From 2.5 it is false for both, so `KEY=null` cannot be
    answered there (an unknown version is taken for a new one).

    >>> tells_null_from_missing("v2.3.5-lite"), tells_null_from_missing("v2.5.12")
    (True, False)
    """
    found = re.search(r"(\d+)\.(\d+)", version)
    return found is not None and (2, 3) <= (int(found[1]), int(found[2])) < (2, 5)


def null_keys(where: Filter | None) -> list[str]:
    """The metadata keys a filter asks to hold null."""
    return [key for key, value in (where.where or ()) if value is None] if where is not None else []


def filter_expression(where: Filter | None) -> str:
    """A Milvus boolean expression for a filter ("" for everything).

    >>> filter_expression(Filter.of(labels=["cat"], where={"n": 2}, max_prune_count=3))
    'label in ["cat"] and meta["n"] == 2 and prune_count < 3'
    """
    if where is None:
        return ""
    terms: list[str] = []
    for column, values in (("label", where.labels), ("source", where.sources)):
        if values is not None:
            terms.append(f"{column} in [{', '.join(literal(v) for v in sorted(values))}]" if values else "id < 0")
    for key, value in where.where or ():
        terms.append(meta_condition(key, value))
    if where.max_prune_count is not None:
        terms.append(f"prune_count < {int(where.max_prune_count)}")
    return " and ".join(terms)


def ids_expression(ids: Sequence[int]) -> str:
    return f"id in [{', '.join(str(int(i)) for i in ids)}]"


def hashes_expression(hashes: Sequence[str]) -> str:
    return f"content_hash in [{', '.join(literal(h) for h in hashes)}]"


def index_plan(setting: str, dim: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """(index params, search params) of a memory's index setting on Milvus.

    `auto` and `hnsw` are HNSW (M=16, efConstruction=200, ef=128: recall@10 1.000 at
    100k x 512-d in our measurements, and 0.98 with a 10% filter at ef 256); `exact` is
    FLAT; `ivfpq` is IVF_PQ with one byte per 8 dimensions (its recall plateaus where the
    codes stop: 0.75 at 100k x 512-d, measured; Milvus does not re-rank IVF_PQ).
    """
    if setting == "exact":
        return {"index_type": "FLAT", "params": {}}, {"params": {}}
    if setting == "ivfpq":
        m = max(d for d in range(1, dim // 8 + 1) if dim % d == 0)
        return ({"index_type": "IVF_PQ", "params": {"nlist": 1024, "m": m, "nbits": 8}},
                {"params": {"nprobe": 32}})
    return ({"index_type": "HNSW", "params": {"M": 16, "efConstruction": 200}},
            {"params": {"ef": 128}})


def new_ids(count: int, taken: Callable[[list[int]], set[int]]) -> list[int]:
    """`count` distinct random ids in [1, 2^53), none of which `taken` reports as in use."""
    chosen: list[int] = []
    seen: set[int] = set()
    while len(chosen) < count:
        batch: list[int] = []
        while len(batch) < count - len(chosen):
            candidate = secrets.randbits(53)
            if 0 < candidate <= MAX_ID and candidate not in seen:
                seen.add(candidate)
                batch.append(candidate)
        used = taken(batch)
        chosen += [i for i in batch if i not in used]
    return chosen

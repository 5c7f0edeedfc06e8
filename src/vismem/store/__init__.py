"""Where a memory lives: the `Store` contract and its homes.

A location is a directory (the embedded home: SQLite + FAISS, no server) or a URI whose
scheme names another home (`milvus://HOST:PORT/COLLECTION`). Homes register a factory
under their scheme; `open_store` and `create_store` pick by location.
"""

from __future__ import annotations

import importlib
import os
import re
from pathlib import Path
from typing import Any, Callable, Protocol

from ..errors import InvalidInputError
from ..settings import EncoderIdentity, MemorySettings
from .base import (Capabilities, Filter, InsertResult, Item, Nearest, Neighbours, NewItem, Page, Store,
                   check_label, check_meta, check_meta_key, check_source)
from .embedded import EmbeddedStore
from .sqlite import DB_NAME, FORMAT_VERSION


class Home(Protocol):
    """How a home opens and creates stores at its locations."""

    def open(self, location: str) -> Store: ...
    def create(self, location: str, identity: EncoderIdentity, settings: MemorySettings) -> Store: ...
    def create_filled(self, location: str, identity: EncoderIdentity, settings: MemorySettings,
                      fill: Callable[[Any], None]) -> Store: ...


_HOMES: dict[str, Callable[[], Home]] = {}


def register_home(scheme: str, loader: Callable[[], Home]) -> None:
    """Make `scheme://...` locations open with the home `loader()` returns (imported lazily,
    so a home's client library is only needed by memories that live there)."""
    _HOMES[scheme] = loader


def location_text(location: str | Path) -> str:
    """A location as text; a URI that passed through `Path` (the CLI's arguments) gets back
    the second slash of its `scheme://` that Path folded away."""
    text = str(location)
    if isinstance(location, Path):
        text = re.sub(r"^([a-z][a-z0-9+.-]*):/(?!/)", r"\1://", text)
    return text


def _home(location: str | Path) -> Home | None:
    if not isinstance(location, (str, os.PathLike)):  # None was opened as Path(None): a TypeError
        raise InvalidInputError(f"a memory's location is a folder (a str or a Path) or a URI, got "
                                f"{type(location).__name__} {location!r}")
    text = location_text(location)
    scheme, sep, _ = text.partition("://")
    if not sep:
        return None
    if scheme not in _HOMES:
        raise InvalidInputError(f"unknown memory location {text!r}: a directory, or one of "
                                + ", ".join(f"{s}://..." for s in sorted(_HOMES)))
    return _HOMES[scheme]()


def open_store(location: str | Path) -> Store:
    home = _home(location)
    return EmbeddedStore.open(location) if home is None else home.open(location_text(location))


def check_new_location(location: str | Path) -> None:
    """Refuse a location where no memory can be created before slow work begins (loading
    an encoder's weights: a download of ~100 MB): an unknown scheme, or a directory that
    holds a memory or other files. A server's collection is checked when `create` connects."""
    if _home(location) is None:
        EmbeddedStore.check_new(Path(location))


def holds_memory(location: str | Path) -> bool | None:
    """Whether a memory is at `location` now, where that is known without opening it: a
    directory holds one once its database is there (a fill moves it in last, or renames
    the whole directory); None for another home's location."""
    return (Path(location) / DB_NAME).exists() if _home(location) is None else None


def create_store(location: str | Path, identity: EncoderIdentity, settings: MemorySettings) -> Store:
    home = _home(location)
    if home is None:
        return EmbeddedStore.create(location, identity, settings)
    return home.create(location_text(location), identity, settings)


def create_filled_store(location: str | Path, identity: EncoderIdentity, settings: MemorySettings,
                        fill: Callable[[Store], None]) -> Store:
    """A new memory filled by `fill(store)`, returned open. It appears at `location` only
    once full, in every home (see `EmbeddedStore.create_filled`, `MilvusStore.create_filled`):
    an interrupted fill leaves nothing there."""
    home = _home(location)
    if home is None:
        return EmbeddedStore.create_filled(location, identity, settings, fill)
    return home.create_filled(location_text(location), identity, settings, fill)


register_home("milvus", lambda: importlib.import_module(".milvus", __name__).MilvusStore)


__all__ = ["Capabilities", "DB_NAME", "EmbeddedStore", "FORMAT_VERSION", "Filter", "InsertResult", "Item",
           "Nearest", "Neighbours", "NewItem", "Page", "Store", "check_label", "check_meta", "check_meta_key",
           "check_new_location", "check_source", "create_filled_store", "create_store", "holds_memory", "open_store",
           "register_home"]

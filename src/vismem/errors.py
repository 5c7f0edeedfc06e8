"""Errors a user can act on.

Every `VismemError` carries a one-line message that names the fix. The CLI prints it
as `error: <message>` and exits 1 (nothing changed), or 3 for a `PartlyDoneError` (a
change committed, a step after it not done), never with a traceback.
"""

from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager, suppress
from numbers import Integral
from typing import Any


class VismemError(Exception):
    """Base class for errors whose message is meant for the user."""


class MemoryNotFoundError(VismemError, FileNotFoundError):
    """No memory exists at the given directory."""


class MemoryExistsError(VismemError, FileExistsError):
    """A memory already exists where a new one was asked for."""


class EncoderError(VismemError):
    """An encoder is unknown, cannot load its weights, or does not match the memory."""


class InvalidInputError(VismemError, ValueError):
    """Arguments or data are malformed: wrong dimension, non-string labels, bad options."""


class BadVectorsError(InvalidInputError):
    """Vectors a memory cannot take: of the wrong shape, not numbers, or a row of NaN,
    infinity or all zeros (`vectors.py` checks them). A reader of a file names the file
    (`vectors.named`)."""


class CheckpointNotFoundError(InvalidInputError):
    """No checkpoint of the memory has that name."""


class ItemNotFoundError(InvalidInputError):
    """No item of the memory has that id (`Memory.get`, `Memory.thumbnail`; bulk reads
    such as `Memory.items` leave missing ids out instead)."""


class CheckpointExistsError(InvalidInputError):
    """A checkpoint of the memory has that name already (replace it explicitly: the CLI's
    `--replace`, the service's `"replace": true`, `Memory.checkpoint(..., replace=True)`)."""


class OutputExistsError(InvalidInputError, FileExistsError):
    """A file to write exists already (replace it explicitly: the CLI's `--replace`,
    `Memory.export_parquet(..., replace=True)`)."""


class NotCalibratedError(InvalidInputError):
    """Abstention was asked of a memory that has no calibrated threshold yet."""


class EmptyMemoryError(VismemError):
    """The memory holds no items, so nothing can be classified."""


class ReadOnlyMemoryError(VismemError):
    """The memory is on read-only media (or lacks write permission): it can be read, not changed."""


class DiskFullError(VismemError):
    """The disk filled up during a write; the failed write left nothing behind."""


class MemoryClosedError(VismemError):
    """A `Memory` was used after `close()`: a mistake in the calling program."""


class MemoryBusyError(VismemError):
    """Another process held the memory's write lock for too long."""


class PartlyDoneError(VismemError):
    """The change was committed, but a step after it was not done; the message says what
    stays and how to finish it. `done` is what the call that committed returns (its
    removed ids, its report), set by `committed`; None where no call said."""

    done: Any = None


class PurgeUnfinishedError(MemoryBusyError, PartlyDoneError):
    """A removal is committed (gone from the store and every search), but another
    process held the saved index too long for its vectors to be purged from its files."""


@contextmanager
def committed(done: Any) -> Iterator[None]:
    """Around the steps that follow a commit: a `PartlyDoneError` they raise carries
    `done`, what the commit made, so that a caller can still answer with it (the service
    does); one that carries it already, from deeper down, keeps it. So does a
    KeyboardInterrupt (Ctrl-C, or the CLI's SIGTERM) that lands there: `vismem ... --json`
    then prints what committed (`cli.reported_as_it_commits`)."""
    try:
        yield
    except (PartlyDoneError, KeyboardInterrupt) as exc:
        if getattr(exc, "done", None) is None:
            exc.done = done  # type: ignore[union-attr]  # (a KeyboardInterrupt takes the attribute too)
        raise


@contextmanager
def committed_as(result: Any) -> Iterator[None]:
    """Around a save whose store marks a Ctrl-C that lands after its commit with what it
    committed (`committed`): mark it with `result`, the report the caller returns."""
    try:
        yield
    except KeyboardInterrupt as exc:
        if getattr(exc, "done", None) is not None:
            exc.done = result  # type: ignore[attr-defined]
        raise


def commit_watch(store: Any) -> Callable[[], bool | None]:
    """Did a commit land since now? `store.commits` is read now; the function returned
    compares it then, as an interrupt (Ctrl-C, or the CLI's SIGTERM) escapes a write:
    True where `store` committed since, exact also where the interrupt landed as its
    COMMIT returned, before any step after it ran (`Database.commits`); False where it did
    not; None where the store cannot count its commits (Milvus)."""
    start = getattr(store, "commits", None)

    def landed() -> bool | None:
        return None if start is None else getattr(store, "commits", None) != start
    return landed


@contextmanager
def committed_since(store: Any, report: Callable[[Any], Any]) -> Iterator[None]:
    """Around a call that changes `store` in one or more commits and returns its own
    report: a Ctrl-C that lands after a commit carries `report(mark)` (asked then; `mark`
    is what the store marked it with, `committed`, else None) in place of the store's
    mark. After a commit means marked, or, unmarked (as a store call returned, before the
    caller's next step), where `store.commits` moved since the call began: exact in the
    directory home, where a Ctrl-C before any commit stays unmarked. Where `report` fails
    (the store cannot be read), the store's mark stays."""
    landed = commit_watch(store)
    try:
        yield
    except KeyboardInterrupt as exc:
        mark = getattr(exc, "done", None)
        if mark is not None or landed():
            with suppress(Exception):
                exc.done = report(mark)  # type: ignore[attr-defined]
        raise


def whole_number(value: object) -> bool:
    """Whether `value` is a whole number as every count, k and id check takes one: an int or
    a numpy integer, never a bool (True is an int, and would be read as 1)."""
    # (a plain int first: k is checked on every search, and the ABC test costs ~4x as much)
    return type(value) is int or (isinstance(value, Integral) and not isinstance(value, bool))


def clause(reason: object) -> str:
    """Another library's message as a clause inside ours: one line, without the closing
    punctuation that would double ours ("...not a parquet file.; give ...")."""
    return " ".join(str(reason).split()).rstrip(" .;:,")


SHOWN = 6  # entries of a long list or mapping a report's repr shows: the first, the last


def brief_repr(report: Any, *, best_first: Collection[str] = (), counted: Collection[str] = ()) -> str:
    """A dataclass report's repr as the dataclass writes it, but a list or mapping of more
    than SHOWN entries shows its first and last few and its length: a notebook shows the
    report an add of a million images returns, not its million ids. Fields named in
    `best_first` (ranked: scores, distances) show only their first few, as their last are
    the least of them; those in `counted` (entries too long to show even a few of, as a
    decision's neighbours) only their length."""
    from dataclasses import fields

    def shown(value: Any, best: bool = False) -> str:
        if isinstance(value, Mapping):
            entries, ends = list(value.items()), "{}"
            texts = [f"{key!r}: {shown(entry)}" for key, entry in _ends(entries, best)]
        elif isinstance(value, list):
            entries, ends = value, "[]"
            texts = [shown(entry) for entry in _ends(entries, best)]
        else:
            return repr(value)
        if len(entries) <= SHOWN:
            return ends[0] + ", ".join(texts) + ends[1]
        half = SHOWN // 2
        texts = [*texts[:half], "..."] if best else [*texts[:half], "...", *texts[half:]]
        return ends[0] + ", ".join(texts) + ends[1] + f" ({len(entries):,})"

    def field_shown(name: str, value: Any) -> str:
        if name in counted and isinstance(value, (list, Mapping)) and value:
            return f"[...] ({len(value):,})" if isinstance(value, list) else f"{{...}} ({len(value):,})"
        return shown(value, name in best_first)

    parts = (f"{field.name}={field_shown(field.name, getattr(report, field.name))}"
             for field in fields(report) if field.repr)
    return f"{type(report).__name__}({', '.join(parts)})"


def _ends(entries: list, best: bool = False) -> list:
    """All of a short list; the first and last SHOWN // 2 entries of a long one (only the
    first, `best`)."""
    if len(entries) <= SHOWN:
        return entries
    return entries[: SHOWN // 2] + ([] if best else entries[-(SHOWN // 2):])

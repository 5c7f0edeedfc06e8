"""Work the library starts on its own, and how an application shows it.

No caller asks for these, so no caller passes a progress callback for them: rebuilding a
saved index that is unusable when a memory opens, building HNSW when `auto` switches as
the memory grows, compacting after many removals, refitting a feature transform whose
items were removed, measuring recall after each of those (and in `tune_index`), and
upgrading an older store format at open. Most log a warning when they start; an
application that draws progress (the CLI) says how with `showing_maintenance`, as it says
where log records go. Nothing is shown by default.

    >>> seen = []
    >>> @contextmanager
    ... def report(description, total):
    ...     yield lambda n: seen.append((description, total, n))
    >>> with showing_maintenance(report), maintenance("compacting the index", 3) as advance:
    ...     advance(3)
    >>> seen
    [('compacting the index', 3, 3)]
    >>> with maintenance("compacting the index", 3) as advance:  # nobody shows it
    ...     advance is None
    True
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar

Advance = Callable[[int], None]  # advance(n): n more items done
Report = Callable[[str, int], AbstractContextManager[Advance]]  # report(description, total)

# A context variable, not a global: a service's threads and a program's other threads
# do not draw what one command shows.
_shown_by: ContextVar[Report | None] = ContextVar("vismem_maintenance", default=None)


@contextmanager
def showing_maintenance(report: Report | None) -> Iterator[None]:
    """While inside, the library's own long work is shown by `report(description, total)`,
    a context manager that yields `advance(n)` (None: shown by nothing)."""
    token = _shown_by.set(report)
    try:
        yield
    finally:
        _shown_by.reset(token)


@contextmanager
def unshown(description: str, total: int) -> Iterator[Advance]:
    """A `Report` that shows nothing."""
    yield no_progress


def no_progress(n: int) -> None:
    """An `Advance` that shows nothing."""


@contextmanager
def maintenance(description: str, total: int) -> Iterator[Advance | None]:
    """Around work the library starts on its own, of `total` items: yields `advance(n)` to
    pass on as a progress callback, or None when nothing shows it."""
    report = _shown_by.get()
    if report is None:
        yield None
        return
    with report(description, total) as advance:
        yield advance

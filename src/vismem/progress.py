"""Progress bars for long work. Always on stderr, so stdout stays clean for --json."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

from rich.console import Console

stderr_console = Console(stderr=True, highlight=False, soft_wrap=True)


@contextmanager
def progress_bar(description: str, total: int, *, transient: bool = False) -> Iterator[Callable[[int], None]]:
    """A Rich progress bar on stderr; yields `advance(n)`. A `transient` bar is shown only
    on a terminal: elsewhere (a log file, a pipe) it could not be erased, and Rich would
    leave a blank line in its place."""
    from rich.progress import (
        BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=stderr_console, transient=transient,
                  disable=transient and not stderr_console.is_terminal) as progress:
        task = progress.add_task(description, total=total)

        def advance(n: int = 1) -> None:
            progress.advance(task, n)

        yield advance

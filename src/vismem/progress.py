"""Progress bars for long work. Always on stderr, so stdout stays clean for --json."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Callable, Iterator

from rich.console import Console

# markup off: what is printed holds user data (labels, paths, metadata), and Rich would
# read "cats [old]" as a style tag and drop it, or fail on "[/x]" with a traceback
stderr_console = Console(stderr=True, highlight=False, soft_wrap=True, markup=False)
BAR_MIN = 10  # columns the bar keeps however narrow the terminal


@contextmanager
def progress_bar(description: str, total: int, *, transient: bool = False,
                 in_bytes: bool = False) -> Iterator[Callable[[int], None]]:
    """A Rich progress bar on stderr; yields `advance(n)`; `in_bytes`: counts bytes, shown
    as "0.4/1.2 GB". Opened while another is drawn (the library's own work within a
    command, maintenance.py), it is drawn below it.

    On a narrow terminal the description is cut, never the numbers. Where stderr is not a
    terminal (a log file, a pipe) the bar cannot move: one whole line ("adding ... 300/300
    0:00:05") is written when the work ends, unless it is `transient` or the work failed
    before any of it was done (then the error is the one line to read)."""
    from rich.progress import (
        BarColumn, DownloadColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.table import Column
    from rich.text import Text

    done = DownloadColumn() if in_bytes else MofNCompleteColumn()
    elapsed = TimeElapsedColumn()
    # On a narrow terminal (80 columns is common) the description gives way, cut with an
    # ellipsis: Rich cut every column alike, and "adding (onnx fp32 on cpu, ...)" left
    # "300/…" of the count and "0:0…" of the times.
    numbers = BAR_MIN + (17 if in_bytes else 2 * len(str(total)) + 1) + 2 * 7 + 4  # the other columns, gaps
    columns = (TextColumn("{task.description}", markup=False, table_column=Column(
                   no_wrap=True, overflow="ellipsis", max_width=max(stderr_console.width - numbers, 12))),
               BarColumn(table_column=Column(min_width=BAR_MIN)), done, elapsed, TimeRemainingColumn())
    live = stderr_console.is_terminal
    failed = False
    # While the bar is drawn, Rich sends what is written to sys.stdout through its own
    # console, which is stderr: right when stdout is the same terminal (the lines appear
    # above the bar), wrong when it is a pipe or a file (`--json > out.jsonl` lost every
    # line written during the bar to the terminal).
    with Progress(*columns, console=stderr_console, transient=transient, disable=not live,
                  redirect_stdout=sys.stdout.isatty()) as progress:
        task = progress.add_task(description, total=total)

        def advance(n: int = 1) -> None:
            progress.advance(task, n)

        try:
            yield advance
        except BaseException:
            failed = True
            raise
        finally:
            if not live and not transient and not (failed and not progress.tasks[0].completed):
                # one whole line for a log, however long: no bar, nothing cut
                finished = progress.tasks[0]
                stderr_console.print(Text(" ").join([Text(finished.description), done.render(finished),
                                                      elapsed.render(finished)]))

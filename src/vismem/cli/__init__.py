"""The `vismem` command line: a thin face over the Python API.

Conventions every command follows:
- `--json` puts only JSON lines on stdout; progress, warnings and banners go to stderr.
- Exit codes: 0 success; 1 error (a one-line `error: ...` on stderr, nothing changed;
  also when no query or test input given could be read, so nothing was done);
  2 bad usage; 3 finished, but only in part: some inputs were skipped as unreadable or
  unlabelled or held under another label, some ids did not exist, a verified removal found
  remnants, or a removal committed but its purge was cut off; 130
  interrupted (Ctrl-C), with an `interrupted: ...` line saying what stays; 141 stopped
  because the reader of stdout went away (`vismem ... | head`), with a `stopped: ...` line;
  143 terminated (SIGTERM: `timeout`, a container's stop), with a `terminated: ...` line.
"""

from __future__ import annotations

import json
import logging
import math
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from functools import partial
from typing import TYPE_CHECKING, Any, cast

import typer
from rich.cells import cell_len
from rich.console import Console

from ..errors import PartlyDoneError, VismemError, commit_watch
from ..maintenance import showing_maintenance
from ..progress import progress_bar, stderr_console

if TYPE_CHECKING:  # (the CLI imports the memory, and torch with it, only in commands that open one)
    from ..memory import Memory

EXIT_ERROR = 1
EXIT_PARTIAL = 3  # done, but not all of it: skipped inputs, missing ids, remnants found
EXIT_SKIPPED = EXIT_PARTIAL
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT), as shells report it
EXIT_STDOUT_CLOSED = 141  # 128 + SIGPIPE: what a shell reports for a tool whose reader went away
EXIT_TERMINATED = 143  # 128 + SIGTERM

app = typer.Typer(
    name="vismem",
    help="Image classification as an editable visual memory.\n\n"
    "Exit codes: 0 ok, 1 error (nothing changed; also when no query or test input could be read, or no "
    "image could be added, each unreadable or unlabelled), "
    "2 bad usage, "
    "3 done in part (some inputs skipped or held "
    "under another label, ids missing, remnants found, or a purge cut off after its commit), "
    "130 interrupted (Ctrl-C), 141 stdout closed by its reader (| head), "
    "143 terminated (SIGTERM).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

out = Console(highlight=False, soft_wrap=True, markup=False)  # as stderr_console: user data is not markup
err = stderr_console

__all__ = ["app", "counted", "emit", "err", "out", "padded", "progress_bar", "main", "widest"]


def counted(n: int, noun: str) -> str:
    """A count and its noun, as the CLI's sentences say it: "1 item", "1,200 items",
    "1 query", "2 queries", "3 classes" (a noun in -y takes -ies, one in -s -es)."""
    if n == 1:
        return f"{n:,} {noun}"
    if noun.endswith("y"):
        return f"{n:,} {noun[:-1]}ies"
    return f"{n:,} {noun}es" if noun.endswith(("s", "x", "ch", "sh")) else f"{n:,} {noun}s"


def padded(text: str, width: int, *, right: bool = False) -> str:
    """`text` padded with spaces to `width` terminal cells (on the left where `right`). A wide
    character (日, 🐱) takes two cells where str.ljust and f-string widths count one, so the
    columns after such a label wandered. Text wider than `width` is left whole."""
    gap = " " * max(0, width - cell_len(text))
    return gap + text if right else text + gap


def widest(texts: Iterable[str], least: int = 0) -> int:
    """The display width of the widest of `texts`, at least `least`: one column fits them all."""
    return max([least, *map(cell_len, texts)])


def emit(obj: Any) -> None:
    """One JSON line on stdout. A number that is not finite is written as null: NaN and
    Infinity are not JSON, and strict readers (jq, JavaScript, Go) reject the whole line."""
    sys.stdout.write(json.dumps(_finite(obj), default=_jsonable) + "\n")
    sys.stdout.flush()


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def _jsonable(value: Any) -> Any:
    if hasattr(value, "to_dict"):
        return _finite(value.to_dict())
    if hasattr(value, "item"):  # numpy scalars
        return _finite(value.item())
    if hasattr(value, "tolist"):
        return _finite(value.tolist())
    return str(value)


def load_commands() -> typer.Typer:
    """The app with every command registered (the modules register on import)."""
    from . import checkpoints, commands, curate, quality, search, serve, transfer  # noqa: F401

    for command in app.registered_commands:
        _name_values(command.callback)
    return app


def _name_values(callback: Any) -> None:
    """Name each value in `--help` as argparse does, where no declaration names it: an
    argument by itself (MEMDIR, IMAGES), an option's value by the option (--label LABEL,
    --seed SEED). Typer would show its Python type ({memdir} <path>,
    --id <list[int]>), while the help texts speak of MEMDIR and an option's range or
    choices follow its help."""
    import inspect
    import typing

    hints = typing.get_type_hints(callback)
    for name, parameter in inspect.signature(callback).parameters.items():
        declared = parameter.default
        if not isinstance(declared, (typer.models.ArgumentInfo, typer.models.OptionInfo)) \
                or declared.metavar is not None or hints.get(name) in (bool, bool | None):  # flags take none
            continue
        longest = max(declared.param_decls or (name,), key=len)
        declared.metavar = longest.lstrip("-").replace("-", "_").upper()


@app.callback(invoke_without_command=True)
def _version(version: bool = typer.Option(False, "--version", help="Print vismem's version and exit.")) -> None:
    if version:
        from .. import __version__

        print(f"vismem {__version__}")
        raise typer.Exit()


class _Stderr(logging.Handler):
    """The library's warnings (an index rebuilt, recall below target...) on stderr, one
    line each, written to whatever sys.stderr is when they happen; each begins `warning: `
    (`error: ` above), as the CLI's own do."""

    def emit(self, record: logging.LogRecord) -> None:
        said = "warning" if record.levelno < logging.ERROR else "error"
        sys.stderr.write(f"{said}: {self.format(record)}\n")


_warnings = _Stderr(logging.WARNING)

# What Ctrl-C leaves behind, said on stderr. Commands write in different ways, so each
# that writes says what is true of it with `interrupted_leaves`: `add` commits batch by
# batch (BATCHES_KEPT), `remove` and `relabel` make one transaction (`one_transaction`),
# import and export are all or nothing; one that only reads the memory uses `only_reads`.
_AFTER_INTERRUPT = "every change committed before this point is kept"
_after_interrupt = _AFTER_INTERRUPT
BATCHES_KEPT = "every batch committed before this point is kept"


def interrupted_leaves(what: str) -> None:
    """Say `what` (e.g. "nothing: DEST was not created") if this command is interrupted."""
    global _after_interrupt
    _after_interrupt = what


# With --json, what a command that changes the memory has committed so far, in the shape of
# its report (`{"removed": 0, "ids": []}` until its removal commits): Ctrl-C prints it, with
# `unfinished` saying what stays, as a purge cut off after the commit prints its report.
# Without it a script saw exit 130 and an empty stdout, whatever had committed.
_interrupted_report: dict[str, Any] | None = None


def reported_if_interrupted(json_out: bool, report: dict[str, Any]) -> dict[str, Any]:
    """With --json, have an interruption (Ctrl-C, SIGTERM) print `report` as one JSON line
    with `unfinished`; the command keeps it true as it commits. Returns `report`."""
    global _interrupted_report
    if json_out:
        _interrupted_report = report
    return report


@contextmanager
def one_transaction(committed: Callable[[], bool], leaves: str,
                    done: Callable[[], dict[str, Any]] | None = None) -> Iterator[None]:
    """Around a call that makes one transaction: Ctrl-C after it says `leaves`, and before
    it what was said so far. Within it the interrupt may come on either side of the commit,
    so `committed()` asks the store then which it was; if it was, `done()` (asked then too)
    says what it did, for the report that --json prints (`reported_if_interrupted`)."""
    try:
        yield
    except KeyboardInterrupt:
        try:
            was = committed()
        except Exception:  # the store cannot say (a server gone away)
            interrupted_leaves("not known: the command's one transaction may or may not have been committed "
                               "(`vismem info` shows the memory as it is)")
        else:
            if was:
                interrupted_leaves(leaves)
                if done is not None and _interrupted_report is not None:
                    with suppress(Exception):  # (then its report says less: `leaves` says it committed)
                        _interrupted_report.update(done())
        raise
    interrupted_leaves(leaves)


@contextmanager
def reported_if_cut_off(json_out: bool, done: dict[str, Any]) -> Iterator[None]:
    """Around an edit and the purge that follows it (at the latest as the memory closes):
    when the purge is cut off after the edit committed, by another process's stopped hold
    on the saved index (a `PartlyDoneError`: exit 3) or by Ctrl-C (exit 130), --json still
    prints what committed, as the command would have, with `unfinished` saying what stays
    and how to finish it, as the service answers. The command fills `done` as its edit
    commits; a `PartlyDoneError` raised inside the edit call carries it (`done.to_dict()`),
    also when the memory's closing then failed on the same purge and raised its own.
    Interrupted before the edit committed, --json prints `done` as it is then, and after
    it the edit's report that the library's Ctrl-C carries (`errors.committed`)."""
    reported_if_interrupted(json_out, done)
    try:
        yield
    except KeyboardInterrupt as exc:
        _fill(done, exc)  # (`main` prints it, with what stays)
        raise
    except PartlyDoneError as exc:
        _fill(done, exc)
        if json_out and done:
            emit({**done, "unfinished": str(exc)})
        raise


@contextmanager
def reported_as_it_commits(json_out: bool, before: dict[str, Any], memory: Memory, *, carried: bool = True,
                           leaves: str | None = None) -> Iterator[dict[str, Any]]:
    """Around a library call that makes its change in one commit at its end (tune,
    calibrate, reindex...): with --json, Ctrl-C before that commit prints `before` with
    `"committed": false`; one after it, which the library marks with its report
    (`errors.committed`), prints that report (with `carried`; else `before`) with
    `"committed": true`, and stderr `leaves` where given. Yields the report, which the
    command fills once the call returns.

    A Ctrl-C that no step marked may still come after the commit (as the call returns
    through the memory, before the command fills its report): false is said only where
    `memory` committed nothing since the call began (`Memory.commits`, exact
    in the directory home); else `"committed": "unknown"`, never a wrong false."""
    report = reported_if_interrupted(json_out, {**before, "committed": False})
    landed = commit_watch(memory)
    try:
        yield report
    except KeyboardInterrupt as exc:
        if getattr(exc, "done", None) is not None:
            _fill(report, exc if carried else None)
            report["committed"] = True
            if leaves is not None:
                interrupted_leaves(leaves)
        elif not report["committed"] and landed() is not False:  # (None: not counted)
            report["committed"] = "unknown"
            interrupted_leaves("not known: the command's commit may or may not have been made (`vismem info` "
                               "shows the memory as it is)")
        raise


def _fill(report: dict[str, Any], exc: BaseException | None) -> None:
    """Update `report` with what `exc` carries (`_carried`), if it carries a report; one
    that says `committed` then says true."""
    said = _carried(exc)
    if said:
        report.update(said)
        if "committed" in report:
            report["committed"] = True


def _carried(exc: BaseException | None) -> dict[str, Any] | None:
    """What a `PartlyDoneError` in `exc` or the errors it was raised while handling says
    its call committed (a report with `to_dict`, or a dict: `record_queries`'), if one says."""
    while exc is not None:
        done: Any = getattr(exc, "done", None)
        if isinstance(done, dict):
            return done
        if hasattr(done, "to_dict"):
            return cast(dict[str, Any], done.to_dict())
        exc = exc.__context__
    return None


def only_reads(command: str) -> None:
    """Declare that `command` changes no item, so that Ctrl-C says so (not that batches
    committed so far are kept: it commits none)."""
    interrupted_leaves(f"no item was added, removed or changed: `vismem {command}` only reads the memory")


def main(argv: list[str] | None = None) -> None:
    """Entry point: turn VismemError into `error: ...` and exit 1 (3 if a change was
    committed before it: `PartlyDoneError`), never a traceback.
    `argv` defaults to the process's arguments."""
    load_commands()
    library = logging.getLogger("vismem")
    if _warnings not in library.handlers:
        library.addHandler(_warnings)
    global _after_interrupt, _terminated, _interrupted_report
    # main runs many commands in one process in tests
    _after_interrupt, _terminated, _interrupted_report = _AFTER_INTERRUPT, False, None
    stdout = sys.stdout
    sys.stdout = _ReaderWatch(stdout)  # the same stream, its closing told apart
    on_sigterm = _terminate_as_interrupt()
    try:
        try:
            # the library's own long work (an index rebuilt at open, a compaction after many
            # removals) under a bar that goes when it is done: its warning line says what it was
            with showing_maintenance(partial(progress_bar, transient=True)):
                app(args=argv, prog_name="vismem")
        finally:
            if argv is None:
                # The process's own command has ended: what it did is done and its exit code
                # decided. Ctrl-C while Python then tears down (a moment, longer after torch)
                # killed the process with exit 130 and no word, where no Python code can say
                # one (Python restores the default handler as it finalizes, but not SIG_IGN).
                signal.signal(signal.SIGINT, signal.SIG_IGN)
    except KeyboardInterrupt:  # between the command's end and Typer's (its own catches it before)
        _say_stopped()
        sys.exit(EXIT_TERMINATED if _terminated else EXIT_INTERRUPTED)
    except VismemError as exc:
        from ..store.base import printable_message

        # plain write: one line, never wrapped; a path or label it names may hold control
        # characters (ESC drives the terminal), escaped; its backslashes stay, as the texts
        # vismem's messages name are in repr already
        sys.stderr.write("error: " + "\n".join(map(printable_message, str(exc).split("\n"))) + "\n")
        # exit 1 says nothing changed: a change committed before the error is work done in part
        sys.exit(EXIT_PARTIAL if isinstance(exc, PartlyDoneError) else EXIT_ERROR)
    except StdoutClosed:
        sys.stderr.write(f"stopped: the reader of stdout went away; {_after_interrupt}\n")
        _discard_output(stdout)
        sys.exit(EXIT_STDOUT_CLOSED)
    except SystemExit as exc:
        if exc.code == EXIT_INTERRUPTED:  # Typer turns Ctrl-C into this exit, without a word
            _say_stopped()
            if _terminated:
                sys.exit(EXIT_TERMINATED)
        raise
    finally:
        sys.stdout = stdout
        if on_sigterm is not None:
            signal.signal(signal.SIGTERM, on_sigterm)


_terminated = False  # SIGTERM arrived (it travels as Ctrl-C does)


def _say_stopped() -> None:
    """The command was interrupted (or terminated): what stays, on stderr, and with --json
    the report of what it committed (`reported_if_interrupted`) on stdout."""
    said = f"{'terminated' if _terminated else 'interrupted'}: {_after_interrupt}"
    if _interrupted_report is not None:
        with suppress(StdoutClosed):  # (the reader went away too: stderr still says it)
            emit({**_interrupted_report, "unfinished": said})
    sys.stderr.write(said + "\n")


def _terminate_as_interrupt() -> Any:
    """Make SIGTERM stop a command as Ctrl-C does: the command's cleanup runs (the memory
    closes and purges, an import removes its work) and `main` says what stays. Python's
    default ends the process at once, which the store survives as it survives kill -9,
    but a removal is then purged only when the memory is next closed. Returns the
    handler it replaced (None off the main thread, where no handler can be set)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def terminate(signum: int, frame: Any) -> None:
        global _terminated
        _terminated = True
        raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, terminate)


class StdoutClosed(Exception):
    """The program reading stdout exited (`vismem classify ... --json | head -1`)."""


class _ReaderWatch:
    """sys.stdout, with a closed pipe raised as StdoutClosed. Click turns the
    BrokenPipeError itself into a silent exit 1, which says "error, nothing changed" even
    after `add` committed batches; this way the command's cleanup runs (the memory closes
    and purges), and `main` says what stays."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            raise StdoutClosed from None

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            raise StdoutClosed from None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _discard_output(stdout: Any) -> None:
    """Point the closed stdout at /dev/null, so that Python's flush at exit does not fail
    on it again (the way Python's documentation gives for SIGPIPE)."""
    import contextlib
    import os

    with contextlib.suppress(OSError, ValueError, AttributeError):  # no descriptor: tests capture it
        os.dup2(os.open(os.devnull, os.O_WRONLY), stdout.fileno())

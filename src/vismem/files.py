"""Files written whole or not at all: beside their name first, then renamed over it, so a
failed or interrupted write never leaves a truncated file that looks whole, nor spoils the
file that was there."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path

from .errors import InvalidInputError, OutputExistsError, VismemError

# What os.link answers on a file system without hard links (FAT, some network ones)
NO_HARD_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS}


def exists_already(path: str | Path) -> OutputExistsError:
    """The error for a file to write that is there already (each face adds how to replace it)."""
    return OutputExistsError(f"{path} exists already: name another file, or replace it")


def no_such_paths(paths: Iterable[str | Path]) -> InvalidInputError:
    """The error for input paths that are not there (`add` of a mistyped path)."""
    return InvalidInputError(f"no such file or folder: {', '.join(map(str, paths))}")


def check_input_file(path: str | Path, fix: str) -> None:
    """Refuse an input file that is not there, is a folder or no regular file (a pipe, a
    device) or cannot be opened, in words that name it (InvalidInputError), before a
    reader's own words would (pyarrow's "Failed to open local file", with the fix meant
    for a file of the wrong kind). `fix` ends the message for a folder or a pipe: what
    file to give."""
    try:
        mode = os.stat(path).st_mode
        if stat.S_ISDIR(mode):
            raise InvalidInputError(f"{path} is a folder, not a file: {fix}")
        if not stat.S_ISREG(mode):  # the reader's own open of a FIFO waits for a writer, deaf to signals
            raise InvalidInputError(f"{path} is not a regular file (a pipe, socket or device): {fix}")
        os.close(os.open(path, os.O_RDONLY | os.O_NONBLOCK))
    except FileNotFoundError:
        raise no_such_paths([path]) from None
    except OSError as exc:
        raise InvalidInputError(f"cannot read {path}: {(exc.strerror or str(exc)).lower()}") from None


@contextlib.contextmanager
def written_whole(path: Path, *, replace: bool = True) -> Iterator[Path]:
    """Yield where to write `path`'s new contents (`PATH.partial`, beside the file a link
    at `path` leads to, as writing to it would); on success it replaces `path`, or without
    `replace` takes the name only if it is still free (OutputExistsError: a file made
    there meanwhile, by another process, stays). An OSError is a VismemError naming
    `path`, and the partial file is removed."""
    target = Path(os.path.realpath(path))
    partial = target.with_name(target.name + ".partial")
    try:
        yield partial
        if replace:
            os.replace(partial, target)
        else:
            _move_to_free_name(partial, target, path)
    except OutputExistsError:
        raise
    except OSError as exc:
        raise VismemError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        with contextlib.suppress(OSError):  # the error above says what went wrong
            partial.unlink(missing_ok=True)


def _move_to_free_name(partial: Path, target: Path, shown: Path) -> None:
    """Give `partial` the name `target` unless a file has it: a rename would replace one.
    A hard link fails if the name is taken; where there are none, the name is taken first
    (an empty file, made only if none is there), then renamed over."""
    try:
        os.link(partial, target)  # `partial` itself goes in written_whole's `finally`
        return
    except FileExistsError:
        raise exists_already(shown) from None
    except OSError as exc:
        if exc.errno not in NO_HARD_LINKS:
            raise
    try:
        os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        raise exists_already(shown) from None
    try:
        os.replace(partial, target)
    except OSError:
        with contextlib.suppress(OSError):  # the empty file taken for the name: not the caller's
            target.unlink()
        raise

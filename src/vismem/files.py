"""Files written whole or not at all: beside their name first, then renamed over it, so a
failed or interrupted write never leaves a truncated file that looks whole, nor spoils the
file that was there."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from .errors import VismemError


@contextlib.contextmanager
def written_whole(path: Path) -> Iterator[Path]:
    """Yield where to write `path`'s new contents (`PATH.partial`, beside the file a link
    at `path` leads to, as writing to it would); on success it replaces `path`. An OSError
    is a VismemError naming `path`, and the partial file is removed."""
    target = Path(os.path.realpath(path))
    partial = target.with_name(target.name + ".partial")
    try:
        yield partial
        os.replace(partial, target)
    except OSError as exc:
        raise VismemError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        with contextlib.suppress(OSError):  # the error above says what went wrong
            partial.unlink(missing_ok=True)

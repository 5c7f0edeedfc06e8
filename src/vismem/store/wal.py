"""Has anyone committed? A look at a WAL-mode SQLite database that needs no system call.

Every search first asks whether another process has committed (`PRAGMA data_version`).
In WAL mode that pragma opens and closes a read transaction: two `fcntl` locks, about a
tenth of a single-query search at 1M items once FAISS has evicted the caches. But every
commit rewrites the WAL-index header, which all connections share through the
memory-mapped `-shm` file (https://www.sqlite.org/walformat.html, "the WAL-index
header"). Reading it from our own read-only map costs no system call. So an unchanged
header means nothing was committed, and only a changed one is worth the pragma.

SQLite writes the header twice, the second copy first; its readers compare both
copies. A look that finds them different (a commit in flight) or not in the known
format answers "unknown", and the caller asks SQLite. A false "changed" (a checkpoint
that restarts the log) costs one pragma. A false "unchanged" cannot happen: a commit
changes the frame count or the salts before it returns.
"""

from __future__ import annotations

import mmap
import os
import struct
from pathlib import Path

HEADER = 48                   # bytes of one copy of the WAL-index header
WAL_INDEX_VERSION = 3007000   # its iVersion field: the format since SQLite 3.7.0
_VERSION_AND_INIT = struct.Struct("=I4xIB")  # iVersion, (unused), iChange, isInit


class CommitWatch:
    """The WAL-index header of one database, read from a read-only map of its `-shm`
    file. Only valid while a connection to the database is open: that connection keeps
    the file from being truncated or replaced (SQLite resets it only when no connection
    has it open)."""

    def __init__(self, view: mmap.mmap) -> None:
        self._view = view

    @classmethod
    def of(cls, database: Path) -> CommitWatch | None:
        """The watch of a database file that an open connection uses in WAL mode, or None
        when its header cannot be read here (no `-shm` file: another journal mode, or an
        immutable read-only open; an unknown format)."""
        # SQLite names the file after the database's real path (it resolves symlinks)
        shm = os.path.realpath(database) + "-shm"
        try:
            fd = os.open(shm, os.O_RDONLY)
        except OSError:
            return None
        try:
            if os.fstat(fd).st_size < 2 * HEADER:
                return None
            view = mmap.mmap(fd, 2 * HEADER, access=mmap.ACCESS_READ)
        except (OSError, ValueError):
            return None
        finally:
            os.close(fd)  # the map keeps its own reference to the file
        version, _, initialised = _VERSION_AND_INIT.unpack_from(view)
        if version != WAL_INDEX_VERSION or not initialised:
            view.close()
            return None
        return cls(view)

    def header(self) -> bytes | None:
        """The header as committed now, or None if a commit is writing it."""
        both = self._view[: 2 * HEADER]
        first = both[:HEADER]
        return first if first == both[HEADER:] else None

    def close(self) -> None:
        self._view.close()

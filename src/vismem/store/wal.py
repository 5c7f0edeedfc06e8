"""Has anyone committed? A look at a WAL-mode SQLite database that needs no system call.

Every search first asks whether another process has committed (`PRAGMA data_version`).
In WAL mode that pragma opens and closes a read transaction: two `fcntl` locks, a tenth
of a 64-d single-query search at 1M items once FAISS has evicted the caches. But every
commit rewrites the WAL-index header, which all connections share through the `-shm`
file that SQLite maps into memory (https://www.sqlite.org/walformat.html, "the
WAL-index header"). So an unchanged header means nothing was committed, and only a
changed one is worth the pragma.

The header is read where SQLite itself mapped it: this process's map of the `-shm`
file, found once in /proc/self/maps. Nothing here opens the file. That matters: closing
any descriptor of a file drops every POSIX lock the process holds on it, SQLite's lock
on the WAL index included (an earlier version mapped the file itself and did exactly
that). SQLite keeps its map while any of the process's connections to the database is
open (`unixShmUnmap` unmaps when the last one closes), so a watch is only read while
its own connection is open: `Database.close` closes the watch first.

SQLite writes the header twice, the second copy first; its readers compare both
copies. A look that finds them different (a commit in flight) answers "unknown", and
the caller asks SQLite. A false "changed" (a checkpoint that restarts the log) costs
one pragma. A false "unchanged" cannot happen: a commit changes the frame count or the
salts before it returns. Where no map is found (not Linux, an immutable read-only
open, a format this code does not know, a stacked file system whose maps name another
device or inode than the file's), there is no watch and every check asks SQLite.
"""

from __future__ import annotations

import ctypes
import os
import struct
import threading
from pathlib import Path

HEADER = 48                   # bytes of one copy of the WAL-index header
WAL_INDEX_VERSION = 3007000   # its iVersion field: the format since SQLite 3.7.0
_VERSION_AND_INIT = struct.Struct("=I4xIB")  # iVersion, (unused), iChange, isInit
MAPS = Path("/proc/self/maps")


class CommitWatch:
    """The WAL-index header of one database, read from SQLite's own map of its `-shm`
    file. Valid only while a connection of this process to the database is open."""

    def __init__(self, view: ctypes.Array[ctypes.c_char]) -> None:
        self._view: ctypes.Array[ctypes.c_char] | None = view
        self._closing = threading.Lock()  # a read never runs into a close on another thread

    @classmethod
    def of(cls, database: Path) -> CommitWatch | None:
        """The watch of a database file that an open connection of this process has read
        in WAL mode, or None when its header cannot be read here."""
        # SQLite names the file after the database's real path (it resolves symlinks)
        shm = os.path.realpath(database) + "-shm"
        try:
            start = mapped_at(shm, os.stat(shm), MAPS.read_text())
        except OSError:  # no -shm file, or no /proc
            return None
        if start is None:
            return None
        view = (ctypes.c_char * (2 * HEADER)).from_address(start)
        version, _, initialised = _VERSION_AND_INIT.unpack_from(view)
        if version != WAL_INDEX_VERSION or not initialised:
            return None
        return cls(view)

    def header(self) -> bytes | None:
        """The header as committed now, or None if a commit is writing it (or closed)."""
        with self._closing:
            if self._view is None:
                return None
            both = self._view.raw
        first = both[:HEADER]
        return first if first == both[HEADER:] else None

    def close(self) -> None:
        """Stop reading the map: call before closing the connection that keeps it."""
        with self._closing:
            self._view = None


def mapped_at(path: str, stat: os.stat_result, maps: str) -> int | None:
    """The address where this process maps the start of file `path` (shared, readable),
    from the text of /proc/self/maps; None unless exactly one map matches the file's
    device and inode (a map of a file since replaced names it too, with another inode)."""
    device = f"{os.major(stat.st_dev):02x}:{os.minor(stat.st_dev):02x}"
    found = []
    for line in maps.splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) < 6 or fields[5] != path:
            continue
        addresses, perms, offset, dev, inode, _ = fields
        start, end = (int(a, 16) for a in addresses.split("-"))
        if (perms[0] == "r" and perms[3] == "s" and int(offset, 16) == 0 and dev == device
                and int(inode) == stat.st_ino and end - start >= 2 * HEADER):
            found.append(start)
    return found[0] if len(found) == 1 else None

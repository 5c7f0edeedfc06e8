"""The saved form of a FAISS-backed index, with checksums and in-place scrubbing.

    MEMDIR/index/meta.json    written last: format, kind, dim, params, rows, the store
                              edit (`seq`) it reflects, each file's size and checksum
                 index.faiss  FAISS's own serialisation; the vectors (codes) sit at its end
                 ids.npy      the item id of each row
                 live.npy     whether each row is live

A removal zeroes the row's bytes in `index.faiss` and `live.npy` in place (`scrub`), so
a removed vector leaves the disk without rewriting the index. That is why `index.faiss`
has one checksum for what precedes the codes (and one for what follows them) and one per
block of about a MiB of codes, which a scrub recomputes for the blocks it touched; a
damaged code would otherwise go unseen and give wrong neighbours. `live.npy` is checked by
size: the memory compares the live ids with the store's items when it opens.
Rows are where the process that saved put them: each save has a token, and only that
process's layout may be scrubbed.

Several processes may open one memory: `locked` keeps their saves, scrubs and loads of
the files from interleaving (an exclusive or shared `flock` on MEMDIR/index.lock, a file of
its own: never a POSIX lock on SQLite's files, see store/wal.py). A process that drops the
saved index to build another (a new feature transform or index setting) holds
MEMDIR/index.build.lock from before it commits that change until the new one is saved
(`building`), so that a process opening the memory meanwhile waits for it
(`wait_for_build`) instead of building one of its own. A rebuild may take minutes, so the
builder rewrites its record (pid and a count) in the lock file every HEARTBEAT_SECONDS
while it holds it, and a waiter gives up (`MemoryBusyError`) only once the builder has
shown no such sign of life for `waits.BUSY_SECONDS`: it is stopped, paused in a debugger,
or stuck on its disk. The holders of MEMDIR/index.lock do the same, and a wait for them is
bounded alike. Readers hold index.lock together, so each holder writes its record in a
slot of its own, which it holds by an open file description lock on the slot's bytes
(`_claim_slot`): the kernel says which slots are held (`_holders`), so a waiter judges
each holder by its own record, never by one whose writer has let go or died.
"""

from __future__ import annotations

import contextlib
import errno
import io
import itertools
import json
import logging
import os
import struct
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from .. import waits
from ..errors import MemoryBusyError

try:
    import fcntl
except ImportError:  # not POSIX: saves are not guarded against other processes
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger("vismem")

META = "meta.json"
FILES_FORMAT = 1
CODE_BLOCK_BYTES = 1 << 20  # codes per checksum: a scrub rereads a block for each one it touches
HEARTBEAT_SECONDS = 0.5  # how often a builder shows it is alive: far below any wait's limit
# A holder's record in a lock file, "PID BEAT" padded to a line of SLOT_BYTES: at slot n,
# bytes [n * SLOT_BYTES, (n + 1) * SLOT_BYTES), held by a lock on those bytes (Linux's open
# file description locks: let go with the descriptor, never shared by another open of the
# file, unlike POSIX record locks). Elsewhere every holder writes slot 0, as one record.
SLOT_BYTES = 32
MAX_SLOTS = 1024  # holders at once that get a slot; any beyond go unnamed
_SET_SLOT_LOCK = getattr(fcntl, "F_OFD_SETLK", None)
_GET_SLOT_LOCK = getattr(fcntl, "F_OFD_GETLK", None)
_beats = itertools.count(1)  # a record never repeats in this process, so a waiter sees each beat
Read = Callable[[int, int], bytes]  # bytes [start, stop) of a saved file


class IndexFileError(Exception):
    """A saved index is missing, damaged or does not fit this memory (so: rebuild it)."""


@dataclass(frozen=True)
class SavedLayout:
    """Where the last save put each row's bytes, so removals can zero them in place."""

    rows: int
    codes_offset: int
    code_size: int
    live_offset: int
    token: str | None  # which save wrote the files (meta.json's `token`)


@dataclass(frozen=True)
class SavedIndex:
    """What `read` found: what `read_index` made of index.faiss, row ids and liveness,
    meta.json, and the layout."""

    index: Any
    ids: np.ndarray
    live: np.ndarray
    meta: dict
    layout: SavedLayout


def write(directory: Path, *, write_index: Callable[[BinaryIO], None], codes: np.ndarray,
          ids: np.ndarray, live: np.ndarray, meta: dict) -> SavedLayout:
    """Write an index crash-safely: meta.json goes first out and last in, so a crash
    mid-save reads as "no saved index". `write_index(file)` writes FAISS's serialisation,
    which ends with `codes`, uint8 (rows, code_size): the vectors as FAISS stores them.
    It streams into the file, and what the checks need is read back from it a block at a
    time: holding the serialisation in RAM (and copies of it and of the codes, to find
    and check them) took about 2.6 times the index's size at the peak of a save."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / META).unlink(missing_ok=True)
    path = directory / "index.faiss"
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w+b") as f:
        write_index(f)
        f.flush()
        size = f.tell()
        read = partial(_pread, f.fileno())
        offset = _codes_offset(read, size, codes)
        files: dict[str, dict[str, int | None]] = {path.name: {"size": size, "crc32": _crc_range(read, 0, offset)}}
        layout = {"codes_offset": offset, "code_size": codes.shape[1],
                  "codes": _codes_checksums(read, size, offset, codes.shape[1], len(codes))}
        os.fsync(f.fileno())
    os.replace(tmp, path)
    for name, array in (("ids", ids), ("live", live)):
        path = directory / f"{name}.npy"
        tmp = path.with_suffix(".npy.tmp")
        with open(tmp, "wb") as f:
            np.save(f, array)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        # live.npy is scrubbed in place on removal, so only its size is fixed
        files[path.name] = {"size": path.stat().st_size,
                            "crc32": _crc(path.read_bytes()) if name == "ids" else None}
    token = uuid.uuid4().hex
    full = {"format": FILES_FORMAT, **meta, "rows": len(ids), "files": files, **layout, "token": token}
    _write(directory / META, json.dumps(full).encode())
    sync_directory(directory)
    return SavedLayout(len(ids), offset, codes.shape[1], _npy_data_offset(directory / "live.npy"), token)


def saved_meta(directory: Path) -> dict | None:
    """The meta.json of the index saved in `directory` (None: no readable one), for its
    kind (`saved_kind`) and for `read`, which need not read it again. Read under `locked`,
    so that a save underway is not taken for none, and the files it describes are the ones
    `read` finds."""
    try:
        meta = json.loads((directory / META).read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def saved_kind(meta: dict | None) -> str | None:
    """The kind of index that `meta` (from `saved_meta`) describes; None: none."""
    kind = meta.get("kind") if meta is not None else None
    return kind if isinstance(kind, str) else None


def written_by(directory: Path, layout: SavedLayout) -> bool:
    """Whether the saved files are still the ones that `layout` describes (no other
    process has saved since)."""
    try:
        return layout.token is not None and json.loads((directory / META).read_text()).get("token") == layout.token
    except (OSError, ValueError):
        return False


@contextmanager
def locked(directory: Path, *, shared: bool = False) -> Iterator[None]:
    """Hold the saved index in `directory` against other processes' saves and scrubs
    (`shared`: for reading). Where the lock file cannot be made (read-only media, where
    nobody writes; a full disk, where a removal must still go through), nothing is held.
    Its holders show their life as a builder does, and a wait for them is bounded the same
    way (MemoryBusyError): a save or a scrub is short, but one stopped midway held every
    other process of the memory without a limit."""
    lock = directory.with_name(directory.name + ".lock")
    wait = partial(_wait_for_holder, lock=lock, doing="saves or reads its search index")
    with _flocked(lock, shared=shared, wait=wait) as fd:
        if fd < 0:
            yield
            return
        with _heartbeat(fd):  # readers share it: each in its own slot
            yield


@contextmanager
def building(directory: Path) -> Iterator[None]:
    """Held while this process replaces the saved index in `directory` with one it builds
    (see the module's docstring); what `locked` says of the lock file holds here too. The
    file names this process, for those who wait, and is rewritten while it is held to
    show that it is alive. One that waits to build says so, and waits as `wait_for_build`."""
    wait = partial(_wait_for_builder, directory=directory)
    with _flocked(_build_lock(directory), shared=False, wait=wait) as fd:
        if fd < 0:
            yield
            return
        with _heartbeat(fd):
            yield


@contextmanager
def _heartbeat(fd: int) -> Iterator[None]:
    """Claim a slot of lock file `fd` and write this process's record there now and every
    HEARTBEAT_SECONDS, with a new count each time, until the block ends. A thread, because
    the work it vouches for runs long inside FAISS and numpy; a process that is stopped or
    hung stops it too, which is what waiters look for."""
    slot = _claim_slot(fd)
    if slot is None:  # unnamed: a waiter judges it by any write to the file
        yield
        return
    stop = threading.Event()

    def write() -> None:
        with contextlib.suppress(OSError):  # a full disk: unnamed
            os.pwrite(fd, _record(), slot * SLOT_BYTES)

    def beat() -> None:
        while not stop.wait(HEARTBEAT_SECONDS):
            write()

    # The first record before the block begins, not from the thread: a process stopped as
    # it took the lock (the thread not yet run, on a busy machine) was named by no one.
    write()

    thread = threading.Thread(target=beat, name="vismem-build-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()  # before the caller closes `fd`


class BuildUnderway(Exception):
    """Another process builds the saved index in `directory` while the caller holds an
    SQLite write transaction, which that process may wait for (it records what it measures
    through the database): roll the transaction back, `wait()`, and begin again."""

    def __init__(self, directory: Path) -> None:
        super().__init__(f"another process is rebuilding the index in {directory}")
        self.directory = directory

    def wait(self) -> None:
        wait_for_build(self.directory)


def wait_for_build(directory: Path, *, block: bool = True) -> bool:
    """If another process is building the saved index in `directory`, wait until it is
    done (without `block`, only tell); True if one was. Never wait while holding what that
    process may wait for (an SQLite write or read transaction), nor inside `building`.
    Raises MemoryBusyError if that process shows no sign of life for `waits.BUSY_SECONDS`."""
    fd = _lock_fd(_build_lock(directory), create=False)
    if fd < 0:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return False
        except BlockingIOError:
            if not block:
                return True
        _wait_for_builder(fd, fcntl.LOCK_SH, directory)
        return True
    finally:
        os.close(fd)


def _wait_for_builder(fd: int, mode: int, directory: Path) -> None:
    """Flock build lock `fd` in `mode` once the process that builds lets go, saying so
    first: a rebuild may take minutes (a save or a scrub, waited for without a word, not)."""
    log.warning("%s: another process (pid %s) is rebuilding the index; waiting for it", directory.parent, _holder(fd))
    _wait_for_holder(fd, mode, lock=_build_lock(directory), doing="rebuilds its index")


def _wait_for_holder(fd: int, mode: int, *, lock: Path, doing: str) -> None:
    """Flock lock file `fd` (`lock`) in `mode` once the processes that hold it (and are
    `doing` that) let go. Polled (a non-blocking flock, then a short sleep) rather than a blocking flock under a timer:
    SIGALRM reaches only the main thread, and the service waits in worker threads; and
    each turn checks each holder's heartbeat, so the limit counts from its last sign of
    life, not from the start of work that may rightly take minutes. One silent holder is
    enough to give up: the flock waits for every holder, however long others live."""
    limit = waits.BUSY_SECONDS
    last_beats: dict[int | None, tuple[bytes, float]] = {}  # holder -> (its last sign, when it changed)
    pause = 0.001
    while True:
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        now = time.monotonic()
        holders = _holders(fd)
        seen = {}
        for key, (_, sign) in holders.items():
            before = last_beats.get(key)
            seen[key] = before if before is not None and before[0] == sign else (sign, now)
        last_beats = seen
        silent = [holders[key][0] for key, (_, since) in last_beats.items() if now - since >= limit]
        if silent:
            raise HolderSilent(lock, silent[0], doing, limit)
        time.sleep(pause)
        pause = min(2 * pause, 0.1)


class HolderSilent(MemoryBusyError):
    """The process holding `lock` showed no sign of life for `waited` seconds; the message
    says so, and a caller with more to say of what stays (a committed removal) has the parts."""

    def __init__(self, lock: Path, holder: str, doing: str, waited: float) -> None:
        self.lock, self.holder, self.waited = lock, holder, waited
        named = holder != "?"  # (a holder that wrote no record: opened it read-only, or an older vismem)
        who = f"process {holder}, which {doing}," if named else f"a process that {doing}"
        self.silent = f"{who} has shown no sign of life for {waited:g} s (stopped, or stuck on its disk)"
        self.resume = f"resume it (`kill -CONT {holder}`) or end it" if named else "resume it or end it"
        super().__init__(f"memory at {lock.parent} is busy: {self.silent}; {self.resume}, then try again (it holds "
                         f"{lock})")


def _holder(fd: int) -> str:
    """The pid of a process holding lock file `fd` ("?" if not known)."""
    return next(iter(_holders(fd).values()))[0]


def _holders(fd: int) -> dict[int | None, tuple[str, bytes]]:
    """The holders of lock file `fd` as a waiter knows them: by slot, each one's pid and
    last sign of life (its record, new at each beat), for every slot the kernel says is
    held. Where it names none (no such locks here, or holders without a slot: a read-only
    descriptor, an older vismem), one holder (None) whose sign is any write to the file,
    named by slot 0 where slots are not known, else "?"."""
    found: dict[int | None, tuple[str, bytes]] = {}
    known = True
    for slot in range(max(-(-os.fstat(fd).st_size // SLOT_BYTES), 1)):
        held = _slot_held(fd, slot)
        if held is None:
            known = False
            break
        if held:
            record = os.pread(fd, SLOT_BYTES, slot * SLOT_BYTES)
            found[slot] = (_pid_in(record), record)
    if not found:
        name = "?" if known else _pid_in(os.pread(fd, SLOT_BYTES, 0))
        found[None] = (name, str(os.fstat(fd).st_mtime_ns).encode())
    return found


def _record() -> bytes:
    """This process's record for its slot, with the next count: "PID BEAT", a line of SLOT_BYTES."""
    return f"{os.getpid()} {next(_beats)}".ljust(SLOT_BYTES - 1).encode()[: SLOT_BYTES - 1] + b"\n"


def _pid_in(record: bytes) -> str:
    return next(iter(record.decode(errors="replace").split()), "?")


def _claim_slot(fd: int) -> int | None:
    """Lock the first free slot of lock file `fd` for this descriptor, till it closes, and
    return it; 0 where there are no such locks (not Linux, some network file systems: every
    holder writes there, as one record); None where this holder gets none: a descriptor
    opened read-only (it could not write a record either), every slot taken."""
    if _SET_SLOT_LOCK is None:
        return 0
    for slot in range(MAX_SLOTS):
        try:
            fcntl.fcntl(fd, _SET_SLOT_LOCK, _slot_range(fcntl.F_WRLCK, slot))
            return slot
        except OSError as exc:
            if exc.errno == errno.EBADF:
                return None
            if exc.errno not in (errno.EAGAIN, errno.EACCES):  # (else held by another)
                return 0
    return None


def _slot_held(fd: int, slot: int) -> bool | None:
    """Whether another descriptor holds `slot` of lock file `fd`; None where that cannot be known."""
    if _GET_SLOT_LOCK is None:
        return None
    try:
        found = fcntl.fcntl(fd, _GET_SLOT_LOCK, _slot_range(fcntl.F_WRLCK, slot))
    except OSError:
        return None
    return struct.unpack_from("h", found)[0] != fcntl.F_UNLCK


def _slot_range(kind: int, slot: int) -> bytes:
    """A `struct flock` for the bytes of `slot` (l_type, l_whence, l_start, l_len, l_pid: 0 for these locks)."""
    return struct.pack("hhqqi", kind, os.SEEK_SET, slot * SLOT_BYTES, SLOT_BYTES, 0)


def _build_lock(directory: Path) -> Path:
    return directory.with_name(directory.name + ".build.lock")


@contextmanager
def _flocked(path: Path, *, shared: bool, wait: Callable[[int, int], None] | None = None) -> Iterator[int]:
    """The descriptor of lock file `path`, flocked; -1 (nothing held) where there is none.
    While another holds it, `wait(fd, mode)` takes the flock in its own way (else a
    blocking flock, as long as the holder takes)."""
    fd = _lock_fd(path, create=True)
    if fd < 0:
        yield fd
        return
    mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
    try:
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            if wait is None:
                fcntl.flock(fd, mode)
            else:
                wait(fd, mode)
        yield fd
    finally:
        os.close(fd)  # releases the flock (a lock of this open file only)


def _lock_fd(path: Path, *, create: bool) -> int:
    """A descriptor of lock file `path` (made if `create`), or -1 where there is none to
    be had: no flock (not POSIX), read-only media, no such file, a full disk."""
    if fcntl is None:
        return -1
    for flags in ((os.O_RDWR | os.O_CREAT, os.O_RDONLY) if create else (os.O_RDONLY,)):
        try:
            return os.open(path, flags, 0o644)
        except OSError as exc:
            if exc.errno not in (errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOENT, errno.ENOSPC,
                                 errno.EDQUOT):
                raise
    return -1


def scrub(directory: Path, layout: SavedLayout, rows: np.ndarray) -> None:
    """Zero the saved bytes (vector and liveness) of `rows`, in place, and checksum the
    blocks of codes that changed anew. A crash between the two leaves checksums that do not
    match, which the next open reads as a damaged index, and rebuilds."""
    rows = rows[rows < layout.rows]
    if len(rows) == 0:
        return
    for name, offset, width in (("live.npy", layout.live_offset, 1),
                                ("index.faiss", layout.codes_offset, layout.code_size)):
        with open(directory / name, "r+b") as f:
            for row in rows.tolist():
                f.seek(offset + row * width)
                f.write(bytes(width))
            f.flush()
            os.fsync(f.fileno())
    meta = json.loads((directory / META).read_text())
    checksums = meta.get("codes")
    if checksums is None:  # saved before codes had checksums: nothing to keep true
        return
    block_rows, crcs = checksums["block_rows"], checksums["crc32"]
    with open(directory / "index.faiss", "rb") as f:
        for block in np.unique(rows // block_rows).tolist():
            first = block * block_rows
            count = min(block_rows, checksums["rows"] - first)
            start = layout.codes_offset + first * layout.code_size
            crcs[block] = _crc(os.pread(f.fileno(), count * layout.code_size, start))
    _write(directory / META, json.dumps(meta).encode())
    sync_directory(directory)


def read(directory: Path, *, kind: str, dim: int, read_index: Callable[[BinaryIO], Any],
         meta: dict | None = None) -> SavedIndex:
    """Read and check a saved index; raises IndexFileError if it is missing or damaged.
    `read_index(file)` reads FAISS's serialisation from index.faiss, once its checksums
    are found true: from the file they were computed on (a save elsewhere replaces it by a
    rename, which does not change the file held open), after reading it a block at a time,
    so that no copy of the index is held in RAM beside the one FAISS builds. (It used to be
    read whole and FAISS built the index from those bytes: twice the index at that peak.)
    `meta`: its meta.json as `saved_meta` read it under the same hold of `locked` (else
    it is read here)."""
    try:
        return _read(directory, kind, dim, meta, read_index)
    except IndexFileError:
        raise
    except (KeyError, TypeError, ValueError, OSError, RuntimeError, AttributeError) as exc:
        raise IndexFileError(f"damaged: {type(exc).__name__} {exc}") from exc


def _read_meta(directory: Path) -> dict:
    meta_path = directory / META
    if not meta_path.is_file():
        raise IndexFileError("no saved index")
    try:
        return json.loads(meta_path.read_text())
    except (OSError, ValueError) as exc:
        raise IndexFileError(f"unreadable {META}: {exc}") from exc


def _read(directory: Path, kind: str, dim: int, meta: dict | None,
          read_index: Callable[[BinaryIO], Any]) -> SavedIndex:
    meta = _read_meta(directory) if meta is None else meta
    if meta.get("format") != FILES_FORMAT or meta.get("kind") != kind or meta.get("dim") != dim:
        raise IndexFileError("saved index is of another kind, format or dimension")
    arrays: dict[str, np.ndarray] = {}
    offsets: dict[str, int] = {}
    for name, expect in meta["files"].items():
        if name == "index.faiss":  # read last: FAISS's read takes longest
            continue
        # read once: the checksum, the array and its data offset all come from these bytes
        try:
            data = (directory / name).read_bytes()
        except OSError:
            data = None
        if data is None or len(data) != expect["size"]:
            raise IndexFileError(f"{name} is missing or has the wrong size")
        if expect["crc32"] is not None and _crc(data) != expect["crc32"]:
            raise IndexFileError(f"{name} is damaged (checksum)")
        try:
            arrays[name[:-4]] = np.load(io.BytesIO(data))
            offsets[name] = _npy_data_offset(io.BytesIO(data))
        except ValueError as exc:
            raise IndexFileError(f"{name} is damaged: {exc}") from exc
    n = meta["rows"]
    ids, live = arrays.get("ids"), arrays.get("live")
    if ids is None or live is None or len(ids) != n or len(live) != n or \
            len(np.unique(ids)) != n:
        raise IndexFileError("row ids are damaged")
    layout = SavedLayout(n, meta["codes_offset"], meta["code_size"], offsets["live.npy"], meta.get("token"))
    index = _read_checked(directory / "index.faiss", meta["files"]["index.faiss"], meta, read_index)
    return SavedIndex(index, ids.astype(np.int64), live.astype(bool), meta, layout)


def _read_checked(path: Path, expect: dict, meta: dict, read_index: Callable[[BinaryIO], Any]) -> Any:
    """`read_index` of index.faiss at `path` once its size and checksums (`expect`, and
    the codes' in `meta`) are found true, on the bytes of one open file: its checks read it
    a block at a time (pread, which leaves the file's position at 0), then FAISS reads it."""
    if not path.is_file():
        raise IndexFileError(f"{path.name} is missing or has the wrong size")
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size != expect["size"]:
            raise IndexFileError(f"{path.name} is missing or has the wrong size")
        read = partial(_pread, f.fileno())
        if _crc_range(read, 0, meta.get("codes_offset", size)) != expect["crc32"]:
            raise IndexFileError(f"{path.name} is damaged (checksum)")
        if "codes" in meta:  # (saves before these checksums have none)
            _check_codes(read, size, meta["codes_offset"], meta["code_size"], meta["codes"])
        f.seek(0)
        return read_index(f)


def _codes_offset(read: Read, size: int, codes: np.ndarray) -> int:
    """Where `codes` sit in FAISS's serialisation, `size` bytes that `read` gives: at its
    end (IndexRefine adds a 4-byte k_factor after them). Checked, so that scrubbing zeroes
    exactly a row's bytes; a block at a time, so that no copy of the codes is made."""
    flat = codes.reshape(-1)  # (a view: the codes are contiguous)
    for tail in (0, 4):
        offset = size - tail - flat.nbytes
        if offset >= 0 and all(read(offset + start, offset + start + len(block)) == block.tobytes()
                               for start, block in _blocks(flat)):
            return offset
    raise RuntimeError("unexpected FAISS file layout: cannot scrub removed rows in place")


def _blocks(flat: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    for start in range(0, len(flat), CODE_BLOCK_BYTES):
        yield start, flat[start : start + CODE_BLOCK_BYTES]


def _codes_checksums(read: Read, size: int, offset: int, code_size: int, rows: int,
                     block_rows: int | None = None) -> dict:
    """Checksums of the codes, `rows` of `code_size` bytes from `offset`, `block_rows` rows
    at a time, and of what follows them up to `size`, the bytes that `read` gives."""
    block_rows = block_rows or max(CODE_BLOCK_BYTES // code_size, 1)
    end = offset + rows * code_size
    step = block_rows * code_size
    return {"rows": rows, "block_rows": block_rows,
            "crc32": [_crc(read(start, min(start + step, end))) for start in range(offset, end, step)],
            "tail_crc32": _crc_range(read, end, size)}


def _check_codes(read: Read, size: int, offset: int, code_size: int, expect: dict) -> None:
    found = _codes_checksums(read, size, offset, code_size, expect["rows"], expect["block_rows"])
    if found["tail_crc32"] != expect["tail_crc32"] or len(found["crc32"]) != len(expect["crc32"]):
        raise IndexFileError("index.faiss is damaged (checksum after the vectors)")
    for block, (crc, want) in enumerate(zip(found["crc32"], expect["crc32"], strict=True)):
        if crc != want:
            first = block * expect["block_rows"]
            last = min(first + expect["block_rows"], expect["rows"]) - 1
            raise IndexFileError(f"index.faiss is damaged (checksum of the vectors in rows {first}-{last})")


def _pread(fd: int, start: int, stop: int) -> bytes:
    return os.pread(fd, stop - start, start)  # (callers read a block at a time: never short)


def _crc(data: bytes | memoryview) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


def _crc_range(read: Read, start: int, stop: int) -> int:
    """The checksum of bytes [start, stop), read a block at a time (which `_crc` of the
    whole gives too)."""
    crc = 0
    for at in range(start, stop, 16 * CODE_BLOCK_BYTES):
        crc = zlib.crc32(read(at, min(at + 16 * CODE_BLOCK_BYTES, stop)), crc)
    return crc & 0xFFFFFFFF


def _write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _npy_data_offset(source: Path | BinaryIO) -> int:
    """Where an .npy file's array data starts (after its header)."""
    with open(source, "rb") if isinstance(source, Path) else contextlib.nullcontext(source) as f:
        major, _ = np.lib.format.read_magic(f)
        read_header = (np.lib.format.read_array_header_1_0 if major == 1
                       else np.lib.format.read_array_header_2_0)
        read_header(f)
        return f.tell()


def sync_directory(directory: Path) -> None:
    """Make a rename in `directory` durable (POSIX: fsync the directory)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

"""Process-wide settings the FAISS indexes rely on: FAISS's OpenMP thread count and
glibc's heap. Both affect the whole process, so they live here, in one place."""

from __future__ import annotations

import ctypes
from collections.abc import Iterator
from contextlib import contextmanager

import faiss


@contextmanager
def one_faiss_thread() -> Iterator[None]:
    """Run FAISS on this thread alone for a while.

    FAISS's OpenMP loops over a few hundred rows cost more to start and join than they
    save, and when other work keeps the cores busy, threads spinning at each join stall
    one another: adding 20k x 512-d to an IVF-PQ 256 rows at a time took 62 s on two
    threads and 0.55 s on one (load average 4, two cores)."""
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(threads)


def release_freed_memory() -> None:
    """Return freed heap pages to the OS (glibc `malloc_trim`; a no-op elsewhere).

    FAISS grows its buffers by reallocating; the smaller old copies are freed into
    glibc's heap, which keeps them resident (they are not at the heap's top), so a
    100k-vector IVF-PQ build ended holding 70 MB of freed memory above its 104 MB index."""
    if _malloc_trim is not None:
        _malloc_trim(0)


def _find_malloc_trim():
    try:
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


_malloc_trim = _find_malloc_trim()

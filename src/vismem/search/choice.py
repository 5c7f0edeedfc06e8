"""Which kind of index a memory uses: a pure function of its size, its vectors'
dimension, the machine's RAM, the memory's setting, the kind it uses now and what it
learnt before.

    >>> choose_kind("auto", count=10_000, dim=512, ram_bytes=16 << 30)
    'exact'
    >>> choose_kind("auto", count=200_000, dim=512, ram_bytes=16 << 30)
    'hnsw'
    >>> choose_kind("auto", count=200_000, dim=512, ram_bytes=16 << 30, exact_below=400_000)
    'exact'
    >>> choose_kind("auto", count=5_000_000, dim=1280, ram_bytes=16 << 30)
    'ivfpq'
    >>> choose_kind("hnsw", count=10, dim=512, ram_bytes=16 << 30)
    'hnsw'

HNSW's graph counts with its vectors: 2M 64-d float32 vectors take under half of 1 GiB, but
with the graph (~1.1 GB) more than all of it:

    >>> choose_kind("auto", count=2_000_000, dim=64, ram_bytes=1 << 30)
    'ivfpq'

Exact search switches up to HNSW at AUTO_APPROX_MIN items; HNSW goes back to exact only
below AUTO_APPROX_KEEP, so a memory that hovers around the switch does not rebuild HNSW
from the store at every add and removal:

    >>> choose_kind("auto", count=49_999, dim=512, ram_bytes=16 << 30)
    'exact'
    >>> choose_kind("auto", count=49_999, dim=512, ram_bytes=16 << 30, approximate=True)
    'hnsw'
    >>> choose_kind("auto", count=25_000, dim=512, ram_bytes=16 << 30, approximate=True)
    'hnsw'
    >>> choose_kind("auto", count=24_999, dim=512, ram_bytes=16 << 30, approximate=True)
    'exact'
    >>> choose_kind("auto", count=49_999, dim=512, ram_bytes=16 << 30, approximate=True, exact_below=60_000)
    'exact'
"""

from __future__ import annotations

import os

AUTO_APPROX_MIN = 50_000  # `auto` switches from exact search to HNSW at this many items
KEEP_SHRINK = 2  # an approximate `auto` index is kept until the memory shrinks below 1/2 of the switch
AUTO_APPROX_KEEP = AUTO_APPROX_MIN // KEEP_SHRINK  # 25,000: fewer items than this go back to exact
# What HNSW (M=32) holds per item beside its float32 vector: 2M level-0 links of 4 B, the
# upper levels', an offset, a level and an id (282 B measured at 512-d; docs/search.md). Small
# beside a 512-d vector (2,048 B), not beside a 64-d one (256 B): counted, so that the half of
# the RAM left for the rest (the store, the OS, a save's copies) is left indeed.
HNSW_GRAPH_BYTES = 288


def choose_kind(setting: str, *, count: int, dim: int, ram_bytes: int, exact_below: int = 0,
                approx_min: int = AUTO_APPROX_MIN, approximate: bool = False) -> str:
    """The index kind for a memory of `count` `dim`-d vectors whose setting is `setting`.

    A setting other than "auto" is taken as it is. "auto" picks IVF-PQ when an HNSW index
    (float32 vectors and its graph: exact search holds less) would take more than half of
    `ram_bytes`,
    exact search below `approx_min` items (where approximate search does not pay) or
    below `exact_below` (set when an approximate index last missed the target recall),
    and HNSW otherwise. A memory whose index is `approximate` now keeps it down to
    `approx_min // KEEP_SHRINK` (AUTO_APPROX_KEEP for the default): switching kind rebuilds the index.
    """
    if setting != "auto":
        return setting
    if count * (dim * 4 + HNSW_GRAPH_BYTES) > ram_bytes // 2:
        return "ivfpq"
    if count < max(approx_min // KEEP_SHRINK if approximate else approx_min, exact_below):
        return "exact"
    return "hnsw"


def physical_ram() -> int:
    """Bytes of RAM in this machine."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")

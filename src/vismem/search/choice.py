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


def choose_kind(setting: str, *, count: int, dim: int, ram_bytes: int, exact_below: int = 0,
                approx_min: int = AUTO_APPROX_MIN, approximate: bool = False) -> str:
    """The index kind for a memory of `count` `dim`-d vectors whose setting is `setting`.

    A setting other than "auto" is taken as it is. "auto" picks IVF-PQ when the float32
    vectors would take more than half of `ram_bytes` (exact and HNSW hold them all),
    exact search below `approx_min` items (where approximate search does not pay) or
    below `exact_below` (set when an approximate index last missed the target recall),
    and HNSW otherwise. A memory whose index is `approximate` now keeps it down to
    `approx_min // KEEP_SHRINK` (AUTO_APPROX_KEEP for the default): switching kind rebuilds the index.
    """
    if setting != "auto":
        return setting
    if count * dim * 4 > ram_bytes // 2:
        return "ivfpq"
    if count < max(approx_min // KEEP_SHRINK if approximate else approx_min, exact_below):
        return "exact"
    return "hnsw"


def physical_ram() -> int:
    """Bytes of RAM in this machine."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")

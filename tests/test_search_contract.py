"""The search layer's parts on their own: the index contract each backend implements,
the `auto` choice, and exact ground truth. Real FAISS indexes, small N."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import unit_vectors
from vismem.search import (
    INDEX_TYPES,
    Compactable,
    ExactIndex,
    HNSWIndex,
    IVFPQIndex,
    Persistent,
    Searchable,
    Tunable,
)
from vismem.search.choice import AUTO_APPROX_MIN, choose_kind

DIM = 16
GiB = 1 << 30


# ---- the contract ----------------------------------------------------------------------

def test_every_backend_implements_the_protocols_it_claims():
    for kind, backend in INDEX_TYPES.items():
        index = backend(DIM)
        assert isinstance(index, Searchable) and isinstance(index, Compactable), kind
    assert not isinstance(ExactIndex(DIM), Persistent) and not isinstance(ExactIndex(DIM), Tunable)
    for index in (HNSWIndex(DIM), IVFPQIndex(DIM)):
        assert isinstance(index, Persistent) and isinstance(index, Tunable)
        for value in index.tune_values:  # every advertised effort is accepted and reported
            index.set_param(value)
        assert index.params


def test_saved_index_round_trips_through_the_persistent_protocol(tmp_path):
    x = unit_vectors(300, DIM, seed=1)
    ids = np.arange(1, 301, dtype=np.int64)
    for backend in (HNSWIndex, IVFPQIndex):
        index = backend(DIM)
        index.add(ids, x)
        index.remove(ids[:7])
        index.save(tmp_path / backend.kind, {"seq": 5})
        loaded, meta = backend.load(tmp_path / backend.kind, DIM)
        assert meta["seq"] == 5 and len(loaded) == 293
        assert np.array_equal(np.sort(loaded.live_ids()), ids[7:])
        assert np.array_equal(loaded.search(x[:20], 5).ids, index.search(x[:20], 5).ids)


# ---- which index: a pure function ------------------------------------------------------

def test_auto_takes_an_explicit_setting_as_it_is():
    for kind in ("exact", "hnsw", "ivfpq"):
        assert choose_kind(kind, count=10**9, dim=2048, ram_bytes=GiB) == kind


def test_auto_is_exact_below_the_size_where_approximate_search_pays():
    assert choose_kind("auto", count=AUTO_APPROX_MIN - 1, dim=512, ram_bytes=64 * GiB) == "exact"
    assert choose_kind("auto", count=AUTO_APPROX_MIN, dim=512, ram_bytes=64 * GiB) == "hnsw"
    assert choose_kind("auto", count=900, dim=512, ram_bytes=64 * GiB, approx_min=1000) == "exact"


def test_auto_remembers_where_approximate_search_missed_the_target():
    kw = {"dim": 512, "ram_bytes": 64 * GiB}
    assert choose_kind("auto", count=120_000, exact_below=200_000, **kw) == "exact"
    assert choose_kind("auto", count=200_000, exact_below=200_000, **kw) == "hnsw"


def test_auto_picks_ivfpq_when_float32_vectors_would_not_fit_in_half_the_ram():
    # 1M x 1280-d float32 is 5.1 GB: over half of 8 GiB, under half of 16 GiB
    assert choose_kind("auto", count=1_000_000, dim=1280, ram_bytes=8 * GiB) == "ivfpq"
    assert choose_kind("auto", count=1_000_000, dim=1280, ram_bytes=16 * GiB) == "hnsw"
    # memory pressure wins over a remembered exact fallback: exact would not fit either
    assert choose_kind("auto", count=1_000_000, dim=1280, ram_bytes=8 * GiB,
                       exact_below=10**7) == "ivfpq"


@pytest.mark.parametrize("count", [0, 1, 49_999, 50_000, 10**6, 10**8])
def test_auto_always_names_a_known_backend(count):
    assert choose_kind("auto", count=count, dim=768, ram_bytes=24 * GiB) in INDEX_TYPES


# ---- exact ground truth ----------------------------------------------------------------

def test_exact_top_streams_chunks_and_matches_brute_force():
    from vismem.search.quality import exact_top

    x = unit_vectors(1000, DIM, seed=4)
    ids = np.arange(100, 1100, dtype=np.int64)
    queries = unit_vectors(7, DIM, seed=5)
    # uneven chunks, one smaller than the depth
    chunks = [(ids[a:b], x[a:b]) for a, b in ((0, 400), (400, 405), (405, 1000))]
    found, sims = exact_top(queries, iter(chunks), 21)
    order = np.argsort(-(queries @ x.T), axis=1, kind="stable")[:, :21]
    assert np.array_equal(found, ids[order])
    assert np.allclose(sims, np.take_along_axis(queries @ x.T, order, axis=1), atol=1e-5)
    # fewer items than the depth: padded with -1 / -inf
    found, sims = exact_top(queries, iter([(ids[:3], x[:3])]), 5)
    assert (found[:, 3:] == -1).all() and np.isneginf(sims[:, 3:]).all()
    assert set(found[0, :3]) == set(ids[:3].tolist())

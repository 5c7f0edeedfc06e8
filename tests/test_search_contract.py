"""The search layer's parts on their own: the index contract each backend implements,
the `auto` choice, and exact ground truth. Real FAISS indexes, small N."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import unit_vectors
from vismem.search import (
    EXHAUSTIVE,
    INDEX_TYPES,
    Compactable,
    ExactIndex,
    HNSWIndex,
    HoldsOut,
    IVFPQIndex,
    Persistent,
    Searchable,
    Selection,
    Tunable,
)
from vismem.search.choice import AUTO_APPROX_KEEP, AUTO_APPROX_MIN, HNSW_GRAPH_BYTES, choose_kind

DIM = 16
GiB = 1 << 30


# ---- the contract ----------------------------------------------------------------------

def test_every_backend_implements_the_protocols_it_claims():
    for kind, backend in INDEX_TYPES.items():
        assert isinstance(backend(DIM), Searchable), kind
    exact = ExactIndex(DIM)  # removal leaves nothing to compact, nothing is saved or tuned
    assert not any(isinstance(exact, p) for p in (Compactable, Persistent, Tunable, HoldsOut))
    for index in (HNSWIndex(DIM), IVFPQIndex(DIM)):
        assert all(isinstance(index, p) for p in (Compactable, Persistent, Tunable))
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


def test_auto_keeps_an_approximate_index_until_the_memory_halves():
    kw = {"dim": 512, "ram_bytes": 64 * GiB}
    assert AUTO_APPROX_KEEP == AUTO_APPROX_MIN // 2
    assert choose_kind("auto", count=AUTO_APPROX_MIN - 1, approximate=True, **kw) == "hnsw"
    assert choose_kind("auto", count=AUTO_APPROX_KEEP, approximate=True, **kw) == "hnsw"
    assert choose_kind("auto", count=AUTO_APPROX_KEEP - 1, approximate=True, **kw) == "exact"
    assert choose_kind("auto", count=AUTO_APPROX_KEEP, approximate=False, **kw) == "exact"
    assert choose_kind("auto", count=499, approximate=True, approx_min=1000, **kw) == "exact"
    # what HNSW missing the target taught, the RAM rule and an explicit setting come first
    assert choose_kind("auto", count=40_000, approximate=True, exact_below=80_000, **kw) == "exact"
    assert choose_kind("auto", count=30_000, dim=512, ram_bytes=64 << 20, approximate=True) == "ivfpq"
    assert choose_kind("exact", count=40_000, approximate=True, **kw) == "exact"


def test_auto_remembers_where_approximate_search_missed_the_target():
    kw = {"dim": 512, "ram_bytes": 64 * GiB}
    assert choose_kind("auto", count=120_000, exact_below=200_000, **kw) == "exact"
    assert choose_kind("auto", count=200_000, exact_below=200_000, **kw) == "hnsw"


def test_auto_picks_ivfpq_when_an_hnsw_index_would_not_fit_in_half_the_ram():
    # 1M x 1280-d float32 is 5.1 GB (5.4 GB with HNSW's graph): over half of 8 GiB, under half of 16 GiB
    assert choose_kind("auto", count=1_000_000, dim=1280, ram_bytes=8 * GiB) == "ivfpq"
    assert choose_kind("auto", count=1_000_000, dim=1280, ram_bytes=16 * GiB) == "hnsw"
    # memory pressure wins over a remembered exact fallback: exact would not fit either
    assert choose_kind("auto", count=1_000_000, dim=1280, ram_bytes=8 * GiB,
                       exact_below=10**7) == "ivfpq"



def test_the_ram_rule_counts_hnsw_graph_as_well_as_its_vectors():
    """The rule weighed float32 vectors alone against half the RAM: 2M 64-d vectors (512 MB,
    under half of 1 GiB) got HNSW, whose graph of 64 links each brings it to 1.09 GB, more
    than the whole RAM. What it counts per item is what a real HNSW index holds."""
    assert choose_kind("auto", count=2_000_000, dim=64, ram_bytes=GiB) == "ivfpq"
    assert choose_kind("auto", count=900_000, dim=64, ram_bytes=GiB) == "hnsw"  # 490 MB with its graph
    index = HNSWIndex(16)
    index.add(np.arange(3000), unit_vectors(3000, 16, seed=1))
    assert index.nbytes() / 3000 <= 16 * 4 + HNSW_GRAPH_BYTES


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


# ---- restricted search: Selections, cached by key --------------------------------------

THIRDS = Selection.of(range(0, 3000, 3), key="multiples of 3")  # also ids not yet added
NOT_FIFTHS = Selection.of(range(0, 3000, 5), key="not multiples of 5", exclude=True)
restricted_ops = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.integers(1, 120)),
        st.tuples(st.just("remove"), st.floats(0.0, 0.5)),
        st.tuples(st.just("search"), st.integers(1, 12)),
        st.tuples(st.just("compact"), st.just(0)),
        st.tuples(st.just("effort"), st.integers(0, 3)),
    ),
    min_size=1, max_size=20,
)


@pytest.mark.parametrize("make", [lambda: HNSWIndex(DIM, m=8, ef_search=16),
                                  lambda: IVFPQIndex(DIM, nlist=4, m=4, nprobe=1, train_min=256),
                                  lambda: ExactIndex(DIM)])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=restricted_ops, seed=st.integers(0, 2**16))
def test_a_cached_selection_follows_every_change_of_the_rows(make, ops, seed):
    """The same keyed Selections are searched between adds, removals, compactions and
    effort changes: what the index cached from them must never go stale."""
    rng = np.random.default_rng(seed)
    every = unit_vectors(3000, DIM, seed=seed)  # item i's vector is every[i]
    index, live, added = make(), np.zeros(3000, dtype=bool), 1
    for op, arg in ops:
        if op == "add":
            batch = np.arange(added, added + arg)
            index.add(batch, every[batch])
            live[batch], added = True, added + arg
        elif op == "remove":
            doomed = np.flatnonzero(live & (rng.random(3000) < arg))
            index.remove(doomed)
            live[doomed] = False
        elif op == "compact" and isinstance(index, Compactable):
            index.compact()
        elif op == "effort" and isinstance(index, Tunable):
            index.set_param(index.tune_values[arg])
        elif op == "search":
            queries = unit_vectors(3, DIM, seed=int(rng.integers(1 << 30)))
            for selection, keep in ((THIRDS, lambda i: i % 3 == 0),
                                    (NOT_FIFTHS, lambda i: i % 5 != 0)):
                pool = {int(i): every[i] for i in np.flatnonzero(live) if keep(i)}
                result = index.search(queries, arg, allowed_ids=selection)
                plain = index.search(queries, arg, allowed_ids=None if selection.exclude
                                     else selection.ids)
                want = min(arg, len(pool))
                for query, sims, ids in zip(queries, result.similarities, result.ids, strict=True):
                    got = ids[ids >= 0].tolist()
                    assert len(got) == want and set(got) <= set(pool)
                    assert np.all(ids[want:] == -1)
                    true = np.array([pool[i] @ query for i in got], dtype=np.float32)
                    assert np.allclose(sims[:want], true, atol=2e-3)
                if not selection.exclude:  # plain ids: the same answer, nothing cached
                    assert np.array_equal(plain.ids, result.ids)


def test_a_selection_must_be_sorted_unique_int64():
    with pytest.raises(ValueError, match="sorted"):
        Selection(np.array([3, 1], dtype=np.int64), key="x")
    with pytest.raises(TypeError, match="int64"):
        Selection(np.array([1, 3], dtype=np.int32), key="x")
    assert Selection.of(np.array([5, 1, 5], dtype=np.int32)).ids.tolist() == [1, 5]


@pytest.mark.parametrize("kind", ["hnsw", "ivfpq"])
def test_large_and_small_selections_take_their_paths_and_agree_with_exact(kind, monkeypatch):
    """A selection over the exact-subset limit is searched through the index with an ID
    selector; under it, exactly over its vectors. Both find the true neighbours."""
    from vismem.search import restrict

    x = unit_vectors(3000, DIM, seed=9)
    ids = np.arange(1, 3001, dtype=np.int64)
    index = HNSWIndex(DIM) if kind == "hnsw" else IVFPQIndex(DIM, nlist=16, m=4, train_min=1000)
    index.add(ids, x)
    index.set_param(index.tune_values[-1])  # the most effort: results should be exact
    truth = ExactIndex(DIM)
    truth.add(ids, x)
    queries = unit_vectors(10, DIM, seed=10)
    half = Selection.of(ids[::2], key="half")
    monkeypatch.setattr(restrict, "EXACT_FLOATS_ALWAYS", 100 * DIM)
    monkeypatch.setattr(restrict, "EXACT_ROWS_PER_ROOT", 1)
    found = index.search(queries, 10, allowed_ids=half)
    assert index._restrictions[("half", False)].exact is None  # through the index
    expect = truth.search(queries, 10, allowed_ids=half).ids
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found.ids, expect, strict=True)]) >= 0.95
    few = Selection.of(ids[:90], key="few")
    assert np.array_equal(index.search(queries, 10, allowed_ids=few).ids,
                          truth.search(queries, 10, allowed_ids=few).ids)
    assert index._restrictions[("few", False)].exact is not None
    index.remove(ids[:1])
    assert not index._restrictions  # rows changed: nothing derived is kept


# ---- rows added out of id order (a held-out sample inserted after a build) -----------

def test_row_ids_look_up_rows_added_in_and_out_of_order():
    from vismem.search.row_ids import RowIds

    rows = RowIds(capacity=2)
    rows.append(np.array([2, 4, 6], dtype=np.int64))
    assert rows.ascending and rows.max_id() == 6
    rows.append(np.array([3, 5], dtype=np.int64))  # out of order: a sorted head is kept
    rows.append(np.array([9, 12], dtype=np.int64))  # in order again: the tail needs no copy
    assert not rows.ascending and rows.max_id() == 12
    where, found = rows.find(np.array([5, 2, 12, 7, 3, 100, 0], dtype=np.int64))
    assert found.tolist() == [True, True, True, False, True, False, False]
    assert where[found].tolist() == [4, 0, 6, 3]
    assert np.array_equal(RowIds(rows.ids).find(rows.ids)[0], np.arange(7))  # as reloaded
    with pytest.raises(ValueError, match="unique"):
        RowIds(np.array([3, 1, 3], dtype=np.int64))


@pytest.mark.parametrize("backend", [HNSWIndex, IVFPQIndex])
def test_items_added_out_of_order_search_remove_save_and_compact(backend, tmp_path):
    x = unit_vectors(1200, DIM, seed=6)
    ids = np.arange(1, 1201, dtype=np.int64)
    held = np.sort(np.random.default_rng(0).choice(1200, 100, replace=False))
    rest = np.setdiff1d(np.arange(1200), held)
    index = backend(DIM) if backend is HNSWIndex else backend(DIM, nlist=8, m=4, train_min=500)
    index.add(ids[rest], x[rest])
    assert all(index.missing(i) for i in ids[held]) and not index.missing(ids[rest[5]])
    index.add(ids[held], x[held])  # interior ids, after the rest
    index.add(ids[held[:10]], x[held[:10]])  # replayed: skipped
    assert len(index) == 1200 and index.n_rows == 1200
    index.set_param(index.tune_values[-1])
    assert index.search(x[held[:20]], 1).ids[:, 0].tolist() == ids[held[:20]].tolist()
    index.remove(ids[held[:30]])
    assert not np.isin(index.search(x[held[:30]], 10).ids, ids[held[:30]]).any()
    index.save(tmp_path / "i", {})
    loaded, _ = backend.load(tmp_path / "i", DIM)
    assert np.array_equal(np.sort(loaded.live_ids()), np.setdiff1d(ids, ids[held[:30]]))
    loaded.compact()  # rebuilt in id order
    assert np.array_equal(loaded.live_ids(), np.setdiff1d(ids, ids[held[:30]]))
    loaded.set_param(loaded.tune_values[-1])
    assert loaded.search(x[held[40:60]], 1).ids[:, 0].tolist() == ids[held[40:60]].tolist()


# ---- the exhaustive fallback, exact ground truth and holding items out -----------------

@pytest.mark.parametrize("make, float16", [
    (lambda: HNSWIndex(DIM, ef_search=16), False),
    (lambda: HNSWIndex(DIM, ef_search=16, float16=True), True),
    (lambda: IVFPQIndex(DIM, nlist=16, m=2, nprobe=1, k_factor=1, train_min=500), True)])
def test_exhaustive_effort_and_search_exact_agree_with_exact_search(make, float16):
    def same(found: np.ndarray, expect: np.ndarray) -> bool:
        if not float16:
            return np.array_equal(found, expect)
        # float16 copies may swap near-ties of the float32 truth, rarely
        return np.mean([len(set(f) & set(e)) / len(e) for f, e in zip(found, expect, strict=True)]) >= 0.98

    x = unit_vectors(2000, DIM, seed=11)
    ids = np.arange(1, 2001, dtype=np.int64)
    index, truth = make(), ExactIndex(DIM)
    index.add(ids, x)
    index.remove(ids[::7])  # tombstones: the live selector must apply
    truth.add(ids, x)
    truth.remove(ids[::7])
    queries = unit_vectors(30, DIM, seed=12)
    within = Selection.of(ids[ids % 2 == 0], key="even")
    expect = truth.search(queries, 10).ids
    assert same(index.search_exact(queries, 10).ids, expect)
    assert not index.exhaustive  # search_exact leaves the effort alone
    index.set_param(EXHAUSTIVE)
    assert index.params["exhaustive"]
    assert same(index.search(queries, 10).ids, expect)
    assert same(index.search(queries[:1], 10).ids, expect[:1])
    assert same(index.search(queries, 10, allowed_ids=within).ids,
                truth.search(queries, 10, allowed_ids=within).ids)
    index.set_param(index.tune_values[0])
    assert not index.params["exhaustive"]


def test_ivfpq_holds_items_out_as_if_never_added_and_puts_them_back():
    x = unit_vectors(3000, DIM, seed=13)
    ids = np.arange(1, 3001, dtype=np.int64)
    index = IVFPQIndex(DIM, nlist=16, m=4, nprobe=16, k_factor=16, train_min=1000)
    index.add(ids, x)
    assert isinstance(index, HoldsOut) and not isinstance(HNSWIndex(DIM), HoldsOut)
    held = ids[100:150]
    before = index.search(x[100:150], 10).ids
    with index.held_out(held):
        assert len(index) == 2950
        assert not np.isin(index.search(x[100:150], 10).ids, held).any()
        assert not np.isin(index.search_exact(x[100:150], 10).ids, held).any()
        assert not np.isin(index._ivf.search(x[100:150], 50)[1] + 1, held).any()  # lists too
    assert len(index) == 3000
    after = index.search(x[100:150], 10).ids
    assert after[:, 0].tolist() == held.tolist()  # each item is its own nearest again
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(before, after, strict=True)]) > 0.95

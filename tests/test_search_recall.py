"""Recall measured on vectors the index has never seen (issue 13).

The data: 64-d vectors of intrinsic dimension ~16-24, where HNSW's recall on the
memory's own vectors reads about 0.996 at the least effort while fresh queries from the
same distribution get about 0.94: tuning on own vectors would miss the target. Real
memories on disk, real FAISS indexes.
"""

from __future__ import annotations

import inspect
import json
import logging
import sqlite3
import time

import numpy as np
import pytest
from conftest import json_lines

import vismem.waits
from vismem import Memory
from vismem.search import ExactIndex, HNSWIndex
from vismem.search.tuning import (
    FRESH_ADDS,
    HELD_OUT,
    FreshLedger,
    fresh_sample,
    least_effort,
    per_query_recall,
    wilson,
)

DIM, INTRINSIC, N, TARGET = 64, 24, 5000, 0.95


def vectors(n: int, seed: int) -> np.ndarray:
    """Unit vectors near one fixed 24-d subspace (the distribution), `seed` picks which."""
    basis = np.random.default_rng(99).standard_normal((INTRINSIC, DIM))
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, INTRINSIC)) @ basis + 0.05 * rng.standard_normal((n, DIM))
    x = x.astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def fresh_recall(memory: Memory, ids: list[int], x: np.ndarray, queries: np.ndarray) -> float:
    truth = ExactIndex(DIM)
    truth.add(np.asarray(ids, dtype=np.int64), x)
    found = np.array([[h.id for h in row] for row in memory.search(queries, 10)])
    return float(per_query_recall(found, truth.search(queries, 10).ids).mean())


def assert_honest(quality: dict, measured: float) -> None:
    """What `info` reports holds for new queries: the target is reached within the
    reported interval, and the figure is within 0.03 of the recall they get."""
    assert measured >= TARGET - (quality["recall"] - quality["low"]), (measured, quality)
    assert abs(quality["recall"] - measured) <= 0.03, (measured, quality)
    assert quality["low"] <= quality["recall"] <= quality["high"]


def test_own_vectors_and_fresh_queries_differ_on_this_data():
    """The control: on the memory's own vectors the least effort looks good enough,
    on fresh queries it is not."""
    x, queries = vectors(N, seed=0), vectors(300, seed=1)
    ids = np.arange(1, N + 1, dtype=np.int64)
    index, truth = HNSWIndex(DIM, ef_search=16), ExactIndex(DIM)
    index.add(ids, x)
    truth.add(ids, x)
    def without_self(found: np.ndarray) -> np.ndarray:
        return np.where(found == ids[:300, None], -1, found)

    own = without_self(index.search(x[:300], 11).ids)
    own_truth = without_self(truth.search(x[:300], 11).ids)[:, 1:]  # self ranks first
    own_recall = per_query_recall(own, own_truth).mean()
    fresh = per_query_recall(index.search(queries, 10).ids, truth.search(queries, 10).ids).mean()
    assert own_recall >= 0.99 and fresh < TARGET - 0.02, (own_recall, fresh)


def test_fresh_adds_tune_the_index_and_info_says_so(tmp_path):
    x = vectors(N, seed=0)
    with Memory.create(tmp_path / "m", encoder=None, dim=DIM, index="hnsw",
                       target_recall=TARGET) as memory:
        ids = memory.add_vectors(x, ["a"] * N)
        index = memory.info()["index"]
        quality = index["quality"]
        assert quality["measured_on"] == FRESH_ADDS and quality["sample"] == 200
        assert quality["params"]["ef_search"] == index["params"]["ef_search"]
        assert index["fresh_adds"]["queries"] == 200
        assert_honest(quality, fresh_recall(memory, ids, x, vectors(500, seed=2)))


def test_a_rebuild_holds_out_a_sample_and_small_adds_feed_a_running_estimate(tmp_path):
    x = vectors(N + 1000, seed=3)
    with Memory.create(tmp_path / "m", encoder=None, dim=DIM, index="exact",
                       target_recall=TARGET) as memory:
        ids = memory.add_vectors(x[:N], ["a"] * N)
        memory.set_index("hnsw")  # built from the store, a sample held out
        quality = memory.info()["index"]["quality"]
        assert quality["measured_on"] == HELD_OUT and quality["sample"] == 200
        assert memory.info()["index"]["fresh_adds"] is None
        assert_honest(quality, fresh_recall(memory, ids, x[:N], vectors(500, seed=4)))
        for start in range(N, N + 1000, 50):  # 20 small batches: some are measured
            ids += memory.add_vectors(x[start : start + 50], ["a"] * 50)
        fresh = memory.info()["index"]["fresh_adds"]
        assert 20 <= fresh["queries"] <= 400
        assert fresh["low"] <= fresh_recall(memory, ids, x, vectors(500, seed=5)) <= fresh["high"]


def test_compaction_and_given_queries_measure_unseen_vectors(tmp_path):
    x = vectors(N, seed=6)
    with Memory.create(tmp_path / "m", encoder=None, dim=DIM, index="hnsw",
                       target_recall=TARGET) as memory:
        ids = memory.add_vectors(x, ["a"] * N)
        memory.remove(ids[:1500])  # 30%: compacted, a sample held out of the rebuild
        quality = memory.info()["index"]["quality"]
        assert quality["measured_on"] == HELD_OUT and quality["size"] == N - 1500
        assert memory.info()["index"]["tombstones"] == 0
        given = vectors(300, seed=7)
        tuned = memory.store._index.tune(given)
        assert tuned.measured_on == "given queries" and tuned.sample == 300
        assert_honest(memory.info()["index"]["quality"],
                      fresh_recall(memory, ids[1500:], x[1500:], vectors(500, seed=8)))


def test_ivfpq_is_measured_on_items_it_holds_out(tmp_path):
    x = vectors(4000, seed=9)
    with Memory.create(tmp_path / "m", encoder=None, dim=DIM, index="exact",
                       target_recall=TARGET) as memory:
        memory.store._index._params = lambda kind: {"train_min": 1000}  # trains at this size
        ids = memory.add_vectors(x[:3000], ["a"] * 3000)
        memory.set_index("ivfpq")  # built with a sample held out
        assert memory.info()["index"]["params"]["nlist"]  # trained: the lists are searched
        ids += memory.add_vectors(x[3000:], ["a"] * 1000)  # grown by a third: items held out
        quality = memory.info()["index"]["quality"]
        assert quality["measured_on"] == HELD_OUT and quality["size"] == 4000
        assert_honest(quality, fresh_recall(memory, ids, x, vectors(500, seed=10)))


def test_ivfpq_that_trains_inside_a_small_add_is_tuned_again(tmp_path):
    # Grown one small add at a time: the add that reaches train_min trains the lists. The
    # effort tuned before, on exact search over float16 copies (the least one), must not
    # stay: it probed one list of the new IVF and found about half the neighbours.
    x = vectors(1500, seed=31)
    with Memory.create(tmp_path / "m", encoder=None, dim=DIM, index="exact",
                       target_recall=TARGET) as memory:
        memory.store._index._params = lambda kind: {"train_min": 1000}
        memory.set_index("ivfpq")  # empty: built with the low train_min
        ids = memory.add_vectors(x[:900], ["a"] * 900)
        assert memory.info()["index"]["params"]["nlist"] is None  # still exact over float16
        ids += memory.add_vectors(x[900:1000], ["a"] * 100)  # trains; 11% growth: no re-tune
        index = memory.info()["index"]
        assert index["params"]["nlist"]  # trained
        quality = index["quality"]
        assert quality["params"]["nlist"] == index["params"]["nlist"], quality
        assert_honest(quality, fresh_recall(memory, ids, x[:1000], vectors(500, seed=32)))


# ---- the pure parts --------------------------------------------------------------------

def test_wilson_interval_brackets_and_narrows():
    low, high = wilson(0.9, 100)
    assert low < 0.9 < high and high - low < 0.13
    assert wilson(0.9, 1000)[1] - wilson(0.9, 1000)[0] < high - low
    assert wilson(1.0, 200) == pytest.approx((0.981, 1.0), abs=1e-3)
    assert wilson(0.5, 0) == (0.0, 1.0)


def test_fresh_sample_costs_the_same_per_added_vector_at_any_size():
    rng = np.random.default_rng(0)
    for size in (10_000, 1_000_000):
        # adds of 1 item, 4x the index's 25% growth step: about 4 * 200 queries in all
        adds = size // 4
        measured = sum(len(fresh_sample(1, size, rng)) for _ in range(adds // 100)) * 100
        assert 400 <= measured <= 1600, (size, measured)
    assert len(fresh_sample(5000, 5000, rng)) == 200  # a first batch: a sample, not a quarter
    assert len(fresh_sample(0, 10, rng)) == 0


def test_ledger_keeps_the_newest_queries_and_round_trips():
    ledger = FreshLedger([16, 32, "exhaustive"], capacity=4)
    ledger.record(np.array([[0.1, 0.5, 1.0]] * 3), np.array([0.1, np.nan, 0.2]))
    ledger.record(np.array([[0.9, 1.0, 1.0]] * 2))
    assert ledger.count == 4 and ledger.estimate(16).recall == pytest.approx(0.5)
    again = FreshLedger.from_dict(ledger.to_dict(), [16, 32, "exhaustive"])
    assert np.allclose(np.sort(again.held(), axis=0), np.sort(ledger.held(), axis=0))
    assert FreshLedger.from_dict(ledger.to_dict(), [16, 64, "exhaustive"]).count == 0
    assert least_effort(ledger.held(), 0.7) == 1 and least_effort(ledger.held(), 1.0) == 2


# ---- the user's own queries: given, or recorded (opt-in) -------------------------------

def small_memory(path, n: int = 2000) -> tuple[list[int], np.ndarray]:
    x = vectors(n, seed=11)
    with Memory.create(path, encoder=None, dim=DIM, index="hnsw", target_recall=TARGET) as memory:
        ids = memory.add_vectors(x, ["a"] * n)
    return ids, x


def files_holding(directory, vectors_: np.ndarray) -> list[str]:
    """Files in which any of these float32 vectors' bytes still lie (as `remove --verify`)."""
    needles = [v.astype(np.float32).tobytes() for v in vectors_]
    return sorted({p.name for p in directory.rglob("*") if p.is_file()
                   for data in [p.read_bytes()] if any(n in data for n in needles)})


def test_tune_index_on_given_queries(tmp_path, cli):
    path = tmp_path / "m"
    small_memory(path)
    np.save(tmp_path / "q.npy", vectors(150, seed=12))
    described = json_lines(cli("tune-index", path, "--queries", tmp_path / "q.npy", "--json", check=True))[0]
    assert described["quality"]["measured_on"] == "given queries" and described["quality"]["sample"] == 150
    result = cli("info", path)
    assert "given queries, 150 queries, 95% interval" in result.stdout
    result = cli("tune-index", path)  # nothing given, nothing recorded
    assert result.returncode == 1 and "record-queries" in result.stderr
    assert cli("tune-index", path, "--queries", tmp_path / "missing.npy").returncode == 1


def test_tune_index_says_when_it_has_too_few_queries_or_nothing_to_tune(tmp_path, cli):
    """Five queries tuned HNSW's effort with no word on how loose their recall was; an
    exact index printed "recall 1.000 on exact search, 0 queries" as if it had tuned."""
    path = tmp_path / "m"
    small_memory(path)
    np.save(tmp_path / "q5.npy", vectors(5, seed=12))
    result = cli("tune-index", path, "--queries", tmp_path / "q5.npy", "--json", check=True)
    assert json_lines(result)[0]["quality"]["sample"] == 5
    assert "warning: tuned on only 5 queries: the recall's 95% interval is" in result.stderr
    assert "give at least 50" in result.stderr
    exact = tmp_path / "exact"
    with Memory.create(exact, encoder=None, dim=DIM) as memory:
        memory.add_vectors(vectors(300, seed=3), ["a"] * 300)
    result = cli("tune-index", exact, "--queries", tmp_path / "q5.npy", check=True)
    assert "index exact: exact search finds the true neighbours (recall 1.0): nothing to tune" in result.stdout
    assert "0 queries" not in result.stdout and "warning" not in result.stderr


def test_tune_index_leaves_out_query_vectors_the_memory_holds(tmp_path, cli):
    """A query vector that is an item finds itself, at recall 1.0 whatever the effort: given
    or recorded, such rows (the same bits once made unit length, as add-vectors knows
    duplicates) are left out with a warning saying how many; only such rows: refused."""
    path = tmp_path / "m"
    _, x = small_memory(path)
    unseen = vectors(100, seed=12)
    np.save(tmp_path / "q.npy", np.concatenate([x[:30], unseen]))
    result = cli("tune-index", path, "--queries", tmp_path / "q.npy", "--json", check=True)
    described = json_lines(result)[0]
    assert described["held_left_out"] == 30 and described["quality"]["sample"] == 100
    assert "left out 30 of the query vectors: the memory already holds them" in result.stderr
    np.save(tmp_path / "items.npy", x[:30])
    result = cli("tune-index", path, "--queries", tmp_path / "items.npy", "--json")
    assert result.returncode == 1 and result.stdout == ""
    assert "the memory already holds every given query vector (30)" in result.stderr
    cli("record-queries", path, "100", check=True)
    with Memory.open(path) as memory:  # a user asking about items the memory holds
        memory.search(np.concatenate([x[:25], unseen[:50]]), 5)
        assert memory.tune_index()["held_left_out"] == 25
        assert memory.info()["index"]["quality"]["sample"] == 50


def test_recorded_queries_are_off_by_default_bounded_cleared_and_purged(tmp_path, cli):
    path = tmp_path / "m"
    small_memory(path)
    asked = vectors(120, seed=13)
    with Memory.open(path) as memory:  # off by default: nothing is kept
        memory.search(asked[:60], 5)
        memory.classify_vectors(asked[60:])
    assert files_holding(path, asked) == []
    assert json_lines(cli("record-queries", path, "--json", check=True))[0] == {"keep": 0, "kept": 0}
    cli("record-queries", path, "40", check=True)
    with Memory.open(path) as memory:
        for start in range(0, 120, 10):
            memory.search(asked[start : start + 10], 5)
        memory.classify_vectors(asked[:20])
    state = json_lines(cli("record-queries", path, "--json", check=True))[0]
    assert state == {"keep": 40, "kept": 40}  # bounded
    assert "memory.sqlite" in files_holding(path, asked)  # positive control
    info = json_lines(cli("info", path, "--json", check=True))[0]
    assert info["recorded_queries"] == 40
    tuned = json_lines(cli("tune-index", path, "--json", check=True))[0]["quality"]
    assert tuned["measured_on"] == "recorded queries" and tuned["sample"] == 40
    assert json_lines(cli("record-queries", path, "--clear", "--json", check=True))[0] == \
        {"keep": 40, "kept": 0}
    assert files_holding(path, asked) == []  # no bytes left in any file
    with Memory.open(path) as memory:  # still recording, until turned off
        memory.search(asked[:5], 5)
    assert json_lines(cli("record-queries", path, "0", "--json", check=True))[0] == {"keep": 0, "kept": 0}
    assert files_holding(path, asked) == []


def test_lowering_how_many_queries_to_keep_deletes_those_past_it_now(tmp_path, cli):
    # Lowering from 40 to 10 said "40 kept, up to 10": the 30 past it stayed in the store,
    # and tune-index tuned on them, until the next query was recorded.
    path = tmp_path / "m"
    small_memory(path)
    asked = vectors(40, seed=16)
    cli("record-queries", path, "40", check=True)
    for batch in range(4):  # each written as its memory closes: the empty slots fill batch by batch
        with Memory.open(path) as memory:
            memory.search(asked[batch * 10 : batch * 10 + 10], 5)
    assert json_lines(cli("record-queries", path, "10", "--json", check=True))[0] == {"keep": 10, "kept": 10}
    tuned = json_lines(cli("tune-index", path, "--json", check=True))[0]["quality"]
    assert tuned["sample"] == 10
    # the rest left no bytes (a query's bits may change once made unit length: at most 10 found)
    assert 0 < sum(bool(files_holding(path, asked[i : i + 1])) for i in range(40)) <= 10
    # a uniform 10 of the 40, not the first batch (slots 0-9, filled first): the chance that
    # a uniform sample is exactly those is 1 in 847,660,528
    with Memory.open(path) as memory:
        kept = memory.store.db.recorded_queries(memory.dim)
        slots = [slot for (slot,) in memory.store.db._db.execute("SELECT slot FROM recorded_queries")]
    unit = asked / np.linalg.norm(asked, axis=1, keepdims=True)
    which = sorted(np.argmax(kept @ unit.T, axis=1).tolist())
    assert len(set(which)) == 10 and which != list(range(10)) and sorted(slots) == list(range(10))


def test_stats_says_what_recall_was_measured_on(tmp_path):
    from fastapi.testclient import TestClient

    from vismem.service import ServiceSettings, create_app

    small_memory(tmp_path / "m")
    with Memory.open(tmp_path / "m") as memory:
        stats = TestClient(create_app(memory, ServiceSettings())).get("/stats").json()
    quality = stats["index"]["quality"]
    assert quality["measured_on"] == FRESH_ADDS and quality["sample"] > 0
    assert quality["low"] <= quality["recall"] <= quality["high"]
    assert stats["index"]["fresh_adds"]["queries"] == quality["sample"]


def search_over_http(client, queries: np.ndarray) -> None:
    for query in queries:
        answer = client.post("/search", data={"vector": json.dumps(query.tolist()), "k": "3"})
        assert answer.status_code == 200, answer.text


def recorded_beside(path) -> int:
    """How many recorded queries another Memory sees, as `vismem tune-index` beside the server."""
    with Memory.open(path) as beside:
        return beside.info()["recorded_queries"]


def wait_for_recorded(path, count: int, seconds: float = 20) -> int:
    deadline = time.monotonic() + seconds
    while (seen := recorded_beside(path)) < count and time.monotonic() < deadline:
        time.sleep(0.1)
    return seen


def test_recorded_queries_written_on_demand_are_seen_beside_and_a_failed_write_keeps_them(tmp_path, monkeypatch):
    """`Memory.write_recorded_queries` writes what waits in RAM, where another Memory sees
    it; a write that fails (another process holds the write lock past the wait) raised and
    lost them all: now they stay waiting, with those recorded since, for the next write."""
    from vismem.errors import MemoryBusyError

    monkeypatch.setattr(vismem.waits, "BUSY_SECONDS", 0.5)
    path = tmp_path / "m"
    small_memory(path)
    with Memory.open(path) as memory:
        memory.record_queries(100)
        memory.search(vectors(10, seed=20), 3)
        assert (memory.recorded_waiting(), memory.info()["recorded_waiting"], recorded_beside(path)) == (10, 10, 0)
        other = sqlite3.connect(path / "memory.sqlite", isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")  # another process's write, held
            with pytest.raises(MemoryBusyError):
                memory.write_recorded_queries()
            assert memory.recorded_waiting() == 10
            memory.search(vectors(5, seed=21), 3)
            assert memory.recorded_waiting() == 15
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert memory.write_recorded_queries() == 15
        assert (memory.recorded_waiting(), recorded_beside(path)) == (0, 15)
        assert memory.write_recorded_queries() == 0
        assert memory.info()["recorded_queries"] == 15


def test_a_query_sample_takes_in_a_later_one_as_a_uniform_sample_of_both():
    from vismem.search.tuning import QuerySample

    rng = np.random.default_rng(0)
    first, later = QuerySample(8, 4), QuerySample(8, 4)
    first.offer(np.full((5, 4), 1, dtype=np.float32), rng)
    later.offer(np.full((20, 4), 2, dtype=np.float32), rng)
    first.absorb(later, rng)
    assert (first.seen, len(first)) == (25, 8)
    small = QuerySample(8, 4)
    small.offer(np.full((2, 4), 1, dtype=np.float32), rng)
    more = QuerySample(8, 4)
    more.offer(np.full((3, 4), 2, dtype=np.float32), rng)
    small.absorb(more, rng)  # room for all: every one kept
    assert (small.seen, sorted(small.vectors[:, 0].tolist())) == (5, [1, 1, 2, 2, 2])


def test_a_server_writes_the_queries_it_recorded_as_it_runs_and_stats_counts_those_waiting(tmp_path):
    """A server kept the queries it recorded in RAM until it stopped: `vismem tune-index`
    beside it found none, and /stats counted only those in the database. Now it writes
    them every `record_write_seconds` (and as it stops), and /stats says how many wait."""
    from fastapi.testclient import TestClient

    from vismem.service import ServiceSettings, create_app

    path = tmp_path / "m"
    small_memory(path)
    asked = vectors(30, seed=17)
    with Memory.open(path) as memory:
        memory.record_queries(100)
        # a long interval: they wait in RAM, /stats says so, and stopping writes them
        with TestClient(create_app(memory, ServiceSettings(record_write_seconds=3600))) as client:
            search_over_http(client, asked[:12])
            stats = client.get("/stats").json()
            assert (stats["recorded_queries"], stats["recorded_waiting"]) == (0, 12)
            assert recorded_beside(path) == 0  # a search never writes
        assert recorded_beside(path) == 12  # written as the server stopped, before the memory closes
        # a short one: written while the server runs, seen beside it
        with TestClient(create_app(memory, ServiceSettings(record_write_seconds=0.2))) as client:
            search_over_http(client, asked[12:30])
            assert wait_for_recorded(path, 30) == 30
            with Memory.open(path) as beside:
                tuned = beside.tune_index()["quality"]
            assert tuned["measured_on"] == "recorded queries" and tuned["sample"] == 30
            stats = client.get("/stats").json()
            assert (stats["recorded_queries"], stats["recorded_waiting"]) == (30, 0)


def test_a_server_that_cannot_write_its_recorded_queries_says_so_and_writes_them_next_time(
        tmp_path, monkeypatch, caplog):
    """Another process holds the memory's write lock past the wait: the write is given up
    with a warning, searches are answered meanwhile, and the queries stay waiting in RAM
    until the next interval writes them."""
    from fastapi.testclient import TestClient

    from vismem.service import ServiceSettings, create_app

    monkeypatch.setattr(vismem.waits, "BUSY_SECONDS", 0.5)
    path = tmp_path / "m"
    small_memory(path)
    with Memory.open(path) as memory:
        memory.record_queries(100)
        with TestClient(create_app(memory, ServiceSettings(record_write_seconds=0.2))) as client:
            other = sqlite3.connect(path / "memory.sqlite", isolation_level=None)
            try:
                other.execute("BEGIN IMMEDIATE")  # another process's write, held
                with caplog.at_level(logging.WARNING, logger="vismem"):
                    search_over_http(client, vectors(10, seed=18))
                    deadline = time.monotonic() + 20
                    while not any("recorded queries" in r.getMessage() for r in caplog.records) \
                            and time.monotonic() < deadline:
                        search_over_http(client, vectors(1, seed=19))  # answered all along
                warned = [r.getMessage() for r in caplog.records if "recorded queries" in r.getMessage()]
                assert warned and "trying again" in warned[0], caplog.text
                stats = client.get("/stats").json()
                assert stats["recorded_queries"] == 0 and stats["recorded_waiting"] >= 11
                waiting = stats["recorded_waiting"]
            finally:
                other.execute("ROLLBACK")
                other.close()
            assert wait_for_recorded(path, waiting) >= waiting  # the next interval wrote them


@pytest.mark.parametrize("every", [0, -1, float("nan"), float("inf"), True, "30"])
def test_a_write_interval_that_is_no_positive_number_of_seconds_is_refused(every):
    from vismem.cli.serve import serve
    from vismem.errors import InvalidInputError
    from vismem.service import ServiceSettings
    from vismem.service.app import RECORD_WRITE_SECONDS

    with pytest.raises(InvalidInputError, match="record_write_seconds must be a number of seconds above 0"):
        ServiceSettings(record_write_seconds=every)
    option = inspect.signature(serve).parameters["record_write_seconds"].default
    assert option.default == RECORD_WRITE_SECONDS == ServiceSettings().record_write_seconds  # one default


def test_another_process_tuning_or_clearing_reaches_a_running_memory(tmp_path):
    """A server's memory takes the effort `vismem tune-index` set beside it, and queries it
    recorded before `vismem record-queries --clear` are never written after it."""
    path = tmp_path / "m"
    small_memory(path)
    with Memory.open(path) as server:
        server.record_queries(30)
        server.search(vectors(25, seed=14), 5)  # recorded, waiting in RAM
        with Memory.open(path) as beside:
            before = server.info()["index"]["params"]["ef_search"]
            beside.update_settings(target_recall=0.999)
            tuned = beside.tune_index(vectors(100, seed=15))["params"]["ef_search"]
            assert tuned > before
            beside.record_queries(clear=True)
        assert server.info()["index"]["params"]["ef_search"] == tuned
    with Memory.open(path) as memory:
        assert memory.record_queries() == {"keep": 30, "kept": 0}

"""A feature transform in a real memory on disk: searches go through it, the saved index
records it, another process opening during a refit waits for the index built through it,
adding does not refit it, purging removed items it was fitted on refits it (nothing of
them stays), calibration is tied to it, and `vismem tune` chooses it."""

import dataclasses
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor, wait

import numpy as np
import pytest
from sklearn.datasets import load_digits

from vismem import Memory
from vismem.decide import VoteParams
from vismem.errors import InvalidInputError
from vismem.evaluation.engine import ArrayMemory
from vismem.remnants import find_remnants, fingerprints
from vismem.search import saved
from vismem.search.lifecycle import RebuiltElsewhere
from vismem.transform import TransformSpec, fit_transform

WHITEN = TransformSpec("whiten", components=24, shrinkage=0.1, power=0.5)


@pytest.fixture(scope="module")
def offset_digits():
    d = load_digits()
    x = (d.data + 4.0).astype(np.float32)  # a shared offset: the direction every digit has
    return x / np.linalg.norm(x, axis=1, keepdims=True), d.target.astype(str)


def test_searches_and_prototypes_go_through_the_fitted_transform(tmp_path, offset_digits):
    x, y = offset_digits
    with Memory.create(tmp_path / "m", encoder=None, dim=64) as memory:
        ids = memory.add_vectors(x[:600], y[:600])
        fitted = memory.set_transform(WHITEN)
        assert fitted.spec == WHITEN and fitted.fitted_items == 600 and fitted.out_dim == 24
        stored = memory.vectors()[1]  # as the memory keeps them (re-normalised on the way in)
        assert fitted.fingerprint == fit_transform(stored, WHITEN).fingerprint
        reference = ArrayMemory(fitted.apply(stored), y[:600])
        found = reference.query(fitted.apply(x[600:650]), 10)
        for vote in ("rank", "hybrid", "prototype"):
            decisions = memory.classify_vectors(x[600:650], k=10, vote=vote)
            assert [d.label for d in decisions] == reference.predict(found, VoteParams(k=10, vote=vote)).tolist()
        hits = memory.search(x[600:601], k=5)[0]
        assert [h.id for h in hits] == [ids[r] for r in found.rows[0][:5]]
        info = memory.info()["transform"]
        assert info["name"] == WHITEN.name and info["fitted_items"] == 600 and info["changed_since"] == 0
        assert memory.settings.transform == WHITEN


def nearest(memory: Memory, vector: np.ndarray) -> list[int]:
    return [h.id for h in memory.search(vector, k=5)[0]]


def test_another_open_memory_follows_a_refit_and_later_adds(tmp_path, offset_digits):
    """A second Memory on the same directory (as a second process or server would be)
    picks up a transform fitted by the first, and keeps it across the first's later adds."""
    x, y = offset_digits
    with Memory.create(tmp_path / "m", encoder=None, dim=64) as writer:
        writer.add_vectors(x[:500], y[:500])
        with Memory.open(tmp_path / "m") as reader:
            assert reader.transform.is_identity
            fitted = writer.set_transform(WHITEN)
            assert nearest(reader, x[600]) == nearest(writer, x[600])
            assert reader.transform.fingerprint == fitted.fingerprint
            writer.add_vectors(x[500:600], y[500:600])
            assert nearest(reader, x[650]) == nearest(writer, x[650])
            assert reader.transform.fingerprint == fitted.fingerprint and len(reader) == 600


def test_a_memory_opened_during_a_refit_waits_for_the_new_index(tmp_path, offset_digits, caplog):
    """A second process opening the memory while the first fits a transform and rebuilds
    the index through it waits for that index, instead of building one of its own (through
    the old transform, as its settings still said, or the new)."""
    x, y = offset_digits
    path = tmp_path / "m"
    with Memory.create(path, encoder=None, dim=64, index="hnsw") as memory:
        memory.add_vectors(x[:600], y[:600])
    fitting, go = threading.Event(), threading.Event()

    def pause(_done: int) -> None:  # the first progress report comes while fitting, before any commit
        if not fitting.is_set():
            fitting.set()
            go.wait(60)

    def refit() -> str:
        with Memory.open(path) as writer:
            return writer.set_transform(WHITEN, progress=pause).fingerprint

    def open_meanwhile() -> tuple[str, list[int]]:
        with Memory.open(path) as reader:  # a Memory of its own: its own connection and locks
            return reader.transform.fingerprint, nearest(reader, x[650])

    with caplog.at_level(logging.INFO, logger="vismem"), ThreadPoolExecutor(2) as pool:
        try:
            refitted = pool.submit(refit)
            assert fitting.wait(60)
            opened = pool.submit(open_meanwhile)
            done, _ = wait([opened], timeout=1.0)
            assert not done  # it waits: opening a 600-item memory takes far less
        finally:
            go.set()
        fingerprint, hits = opened.result(timeout=60)
        assert refitted.result(timeout=60) == fingerprint  # it read the new settings...
    assert f"another process (pid {os.getpid()}) is rebuilding the index; waiting for it" in caplog.text
    assert "saved index unusable" not in caplog.text  # ...and loaded the new index: nobody rebuilt at open
    with Memory.open(path) as memory:
        assert hits == nearest(memory, x[650])


def test_a_write_that_finds_a_rebuild_underway_lets_go_of_its_lock_and_waits(tmp_path, offset_digits, caplog):
    """A memory that catches up only inside its writes (a server's, `auto_refresh` off)
    writes while another process rebuilds the index through a transform it just committed.
    The write lets go of SQLite's write lock, which the rebuild needs to record its
    measurements, waits for the new index instead of building one of its own, then writes."""
    x, y = offset_digits
    path = tmp_path / "m"
    with Memory.create(path, encoder=None, dim=64, index="hnsw") as memory:
        memory.add_vectors(x[:600], y[:600])
    rebuilding, go = threading.Event(), threading.Event()
    reports = []

    def pause(_done: int) -> None:  # one report while fitting; the next while the index is built
        reports.append(_done)
        if len(reports) == 2:
            rebuilding.set()
            go.wait(60)

    def refit() -> str:
        with Memory.open(path) as refitter:
            return refitter.set_transform(WHITEN, progress=pause).fingerprint

    writer = Memory.open(path)
    writer.auto_refresh = False
    try:
        with caplog.at_level(logging.INFO, logger="vismem"), ThreadPoolExecutor(2) as pool:
            try:
                refitted = pool.submit(refit)
                assert rebuilding.wait(60)
                added = pool.submit(writer.add_vectors, x[600:610], y[600:610])
                done, _ = wait([added], timeout=1.0)
                assert not done  # it waits: adding 10 items (or rebuilding 600) takes far less
            finally:
                go.set()
            new_ids = added.result(timeout=60)
            fingerprint = refitted.result(timeout=60)
        assert f"another process (pid {os.getpid()}) is rebuilding the index; waiting for it" in caplog.text
        assert "saved index unusable" not in caplog.text  # nobody rebuilt: the writer loaded the new index
        assert writer.transform.fingerprint == fingerprint and len(new_ids) == 10
        assert nearest(writer, x[605])[0] == new_ids[5]
        with Memory.open(path) as fresh:
            assert len(fresh) == 610 and nearest(fresh, x[650]) == nearest(writer, x[650])
    finally:
        writer.close()


REFIT_AND_HANG = """
import sys, time
from vismem import Memory
from vismem.transform import TransformSpec

def hang(_done):
    print("fitting", flush=True)
    time.sleep(600)

Memory.open(sys.argv[1]).set_transform(TransformSpec("center"), progress=hang)
"""


def test_a_refit_killed_midway_lets_a_waiting_open_go_on(tmp_path, offset_digits):
    """kill -9 of the process that refits: the lock it held goes with it, and a memory
    waiting to open opens as the store says (the new transform was never committed)."""
    x, y = offset_digits
    path = tmp_path / "m"
    with Memory.create(path, encoder=None, dim=64, index="hnsw") as memory:
        memory.add_vectors(x[:300], y[:300])
        before = nearest(memory, x[400])
    refitting = subprocess.Popen([sys.executable, "-c", REFIT_AND_HANG, str(path)], stdout=subprocess.PIPE,
                                 text=True)
    try:
        assert refitting.stdout is not None and refitting.stdout.readline() == "fitting\n"
        with ThreadPoolExecutor(1) as pool:
            opened = pool.submit(lambda: Memory.open(path))
            done, _ = wait([opened], timeout=1.0)
            assert not done  # waiting for the refit
            refitting.kill()
            with opened.result(timeout=60) as memory:
                assert memory.transform.is_identity and nearest(memory, x[400]) == before
    finally:
        refitting.kill()
        refitting.wait()


def test_an_open_that_finds_the_index_gone_while_another_process_rebuilds_it_waits(tmp_path, offset_digits):
    """The saved index was dropped by a rebuild that began after this open read its
    settings: the open waits for the rebuild, then has them read again (`_load` does)."""
    x, y = offset_digits
    with Memory.create(tmp_path / "m", encoder=None, dim=64, index="hnsw") as memory:
        memory.add_vectors(x[:300], y[:300])
        index = memory.store._index
        shutil.rmtree(index.directory)  # as the rebuild drops it
        building, finish = threading.Event(), threading.Event()

        def rebuild_elsewhere() -> None:  # another process, as far as the lock can tell
            with saved.building(index.directory):
                building.set()
                finish.wait(60)

        with ThreadPoolExecutor(1) as pool:
            builder = pool.submit(rebuild_elsewhere)
            assert building.wait(60)
            threading.Timer(0.5, finish.set).start()
            with pytest.raises(RebuiltElsewhere, match="no saved index"):
                index.open(memory.ids(), until=memory.store.last_edit())
            assert finish.is_set()  # it waited for the rebuild to end
            builder.result(timeout=60)
        index.open(memory.ids(), until=memory.store.last_edit())  # nobody rebuilding: it rebuilds
        assert len(index.index) == 300 and nearest(memory, x[5])[0] == memory.ids()[5]


def test_saved_index_records_the_transform_and_adding_does_not_refit(tmp_path, offset_digits, caplog):
    x, y = offset_digits
    path = tmp_path / "m"
    with Memory.create(path, encoder=None, dim=64, index="hnsw") as memory:
        memory.add_vectors(x[:500], y[:500])
        fingerprint = memory.set_transform(WHITEN).fingerprint
        before = memory.classify_vectors(x[500:520], k=5)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="vismem"), Memory.open(path) as memory:
        assert "rebuilding" not in caplog.text  # the saved index was built through this transform
        assert [d.label for d in memory.classify_vectors(x[500:520], k=5)] == [d.label for d in before]
        memory.add_vectors(x[500:700], y[500:700])
        assert memory.transform.fingerprint == fingerprint  # adding never silently refits
        status = memory.info()["transform"]
        assert status["changed_since"] == pytest.approx(200 / 500) and status["retune"] is True
        assert memory.search(x[650:651], k=1)[0][0].distance == pytest.approx(0, abs=1e-5)  # new items searched
        caplog.clear()
        memory.set_transform("none")
        assert memory.transform.is_identity and memory.info()["transform"]["name"] == "none"
        # (it said "fitting the none feature transform on 700 items")
        assert "dropping the whiten-24-s0.1-p0.5 feature transform and rebuilding the index" in caplog.text


def test_purging_removed_items_refits_the_transform_without_them(tmp_path, offset_digits, caplog):
    x, y = offset_digits
    with Memory.create(tmp_path / "m", encoder=None, dim=64) as memory:
        ids = memory.add_vectors(x[:400], y[:400])
        memory.set_transform(WHITEN)
        extra = memory.add_vectors(x[400:450], y[400:450])
        fingerprint = memory.transform.fingerprint
        memory.remove(extra[:10], purge=True)  # never part of the fit: nothing to refit
        assert memory.transform.fingerprint == fingerprint
        with caplog.at_level(logging.WARNING, logger="vismem"):
            memory.remove(ids[:30], purge=True)
        assert "refitting the whiten-24-s0.1-p0.5 feature transform" in caplog.text
        kept_ids, kept = memory.vectors()
        assert memory.transform.fitted_items == len(kept_ids) == 410
        assert memory.transform.fingerprint == fit_transform(kept, WHITEN).fingerprint  # no trace of the 30
        assert memory.info()["transform"]["changed_since"] == 0


@pytest.mark.parametrize("purge", ["remove", "compact"])
def test_prototypes_follow_a_purge_that_refits_the_transform(tmp_path, offset_digits, purge):
    """Prototypes live in the space searched: after a purge (by `remove` or `compact`) that
    refits the transform, they decide as a fresh open's do (they stayed in the old space)."""
    x, y = offset_digits
    path = tmp_path / "m"
    with Memory.create(path, encoder=None, dim=64) as memory:
        ids = memory.add_vectors(x[:400], y[:400])
        memory.set_transform(WHITEN)
        memory.classify_vectors(x[1000:1001], vote="prototype")  # builds the prototypes
        if purge == "remove":
            memory.remove(ids[:200], purge=True)
        else:
            memory.remove(ids[:200])
            memory.compact()
        assert memory.transform.fitted_items == 200
        decided = [d.label for d in memory.classify_vectors(x[1000:1300], vote="prototype")]
        with Memory.open(path) as fresh:
            assert decided == [d.label for d in fresh.classify_vectors(x[1000:1300], vote="prototype")]


def test_a_transform_that_cannot_be_fitted_changes_nothing_and_asking_again_refits(tmp_path, offset_digits):
    """A fit that fails (items that do not vary) leaves the settings as they were, in this
    process and on disk (they once kept the new transform, and asking again later, with
    varied items, silently fitted none); `set_transform` with the memory's own spec refits
    it on the items now (as `MemoryClassifier.refit_transform` relies on)."""
    x, y = offset_digits
    path = tmp_path / "m"
    with Memory.create(path, encoder=None, dim=64) as memory:
        memory.add_vectors(np.repeat(x[:1], 3, axis=0), ["a"] * 3)
        with pytest.raises(InvalidInputError, match="no variance"):
            memory.set_transform(WHITEN)
        assert memory.settings.transform == TransformSpec() and memory.transform.is_identity
        # with other settings in the same change (as `vismem tune` saves its choice): none of them
        k = memory.defaults.k
        with pytest.raises(InvalidInputError, match="no variance"):
            memory.update_settings(vote=dataclasses.replace(memory.defaults, k=k + 2), prototypes_per_class=3,
                                   transform=WHITEN)
        assert memory.defaults.k == k and memory.settings.prototypes_per_class == 1
        with Memory.open(path) as fresh:
            assert fresh.settings.transform == TransformSpec() and fresh.transform.is_identity
            assert fresh.defaults.k == k and fresh.settings.prototypes_per_class == 1
        memory.add_vectors(x[1:200], y[1:200])
        assert memory.set_transform(WHITEN).fitted_items == 202
        memory.add_vectors(x[200:300], y[200:300])
        assert memory.set_transform(memory.settings.transform).fitted_items == 302
    with Memory.open(path) as fresh:
        assert fresh.settings.transform == WHITEN and fresh.transform.fitted_items == 302


@pytest.mark.parametrize("left", [0, 3])
def test_removing_what_the_transform_can_be_fitted_on_drops_it_and_still_purges(tmp_path, offset_digits, caplog, left):
    """Removing every item (or all but copies of one, which do not vary) leaves nothing to
    refit the transform on: the purge drops it and goes on (it once failed, so purge, close
    and compact failed ever after, and the removed items' bytes stayed in the files)."""
    x, y = offset_digits
    path = tmp_path / "m"
    with Memory.create(path, encoder=None, dim=64, index="hnsw") as memory:
        ids = memory.add_vectors(x[:100], y[:100])
        memory.set_transform(WHITEN)
        memory.add_vectors(np.repeat(x[100:101], left, axis=0), ["a"] * left, sources="copies")
        prints = fingerprints(memory, ids[:5])
        with caplog.at_level(logging.WARNING, logger="vismem"):
            assert memory.remove(ids, purge=True) == ids
        assert "cannot be refitted" in caplog.text
        assert memory.settings.transform == TransformSpec() and memory.transform.is_identity
        assert len(memory) == left and not find_remnants(path, prints)[0]
    with Memory.open(path) as fresh:
        assert fresh.settings.transform == TransformSpec() and fresh.transform.is_identity and len(fresh) == left


def test_remove_verify_finds_no_transformed_copies(tmp_path, offset_digits, cli):
    x, y = offset_digits
    path = tmp_path / "m"
    with Memory.create(path, encoder=None, dim=64, index="hnsw") as memory:
        ids = memory.add_vectors(x[:300], y[:300])
        memory.set_transform(WHITEN)
    result = json.loads(cli("remove", path, "--id", ids[3], "--id", ids[7], "--verify", "--json", check=True).stdout)
    assert result["verified"]["clean"] is True
    with Memory.open(path) as memory:
        assert memory.transform.fitted_items == 298


def test_calibration_belongs_to_its_transform_and_another_process_sees_a_new_one(tmp_path, offset_digits):
    x, y = offset_digits
    path = tmp_path / "m"
    with Memory.create(path, encoder=None, dim=64) as memory, Memory.open(path) as other:
        memory.add_vectors(x[:400], y[:400])
        from vismem.curate import calibrate_memory

        calibrate_memory(memory)
        memory.classify_vectors(x[400:401], abstain=True)
        memory.set_transform(WHITEN)
        with pytest.raises(InvalidInputError, match="calibrate"):
            memory.classify_vectors(x[400:401], abstain=True)
        assert calibrate_memory(memory).transform == memory.transform.fingerprint
        assert memory.classify_vectors(x[400:401], abstain=True)[0].threshold is not None
        assert other.transform.fingerprint == memory.transform.fingerprint  # caught up with the refit
        assert [d.label for d in other.classify_vectors(x[400:420])] == \
            [d.label for d in memory.classify_vectors(x[400:420])]


def test_tuning_shows_each_sweep_then_the_fit_and_rebuild(tmp_path, offset_digits):
    # `vismem tune` draws its bars from this: before, one bar said "fitting the feature
    # transform, rebuilding the index" while it tried settings, and stayed at 0 throughout
    from conftest import Shown

    from vismem.curate import tune_memory
    from vismem.tune import sweeps

    x, y = offset_digits
    center = [TransformSpec("center")]
    with Memory.create(tmp_path / "m", encoder=None, dim=64) as memory:
        memory.add_vectors(x[:500], y[:500])
        shown = Shown()
        assert tune_memory(memory, transforms=center, report=shown).transform == center[0]
        trying = ("tuning on ~100 held-out items", sweeps(center), sweeps(center))
        assert shown.done() == [trying, ("fitting the feature transform, rebuilding the index", 1000, 1000)]
        again = Shown()
        tune_memory(memory, transforms=center, report=again)
        assert again.done() == [trying]  # the same transform: nothing fitted or rebuilt


def test_tuning_to_the_transform_in_force_refits_it_when_the_memory_drifted(tmp_path, cli, offset_digits):
    """`info` warns of a memory that drifted from its transform: "run `vismem tune` to
    refit it". Tune kept the transform in force as it was fitted when it chose it again,
    so the warning never went; now it refits it on the items now (only when items were
    added or removed since: an unchanged memory is not rebuilt, as above)."""
    x, y = offset_digits
    path = tmp_path / "m"
    with Memory.create(path, encoder=None, dim=64) as memory:
        memory.add_vectors(x[:200], y[:200])
        memory.set_transform(TransformSpec("center"))
        memory.add_vectors(x[200:800], y[200:800])
    drifted = json.loads(cli("info", path, "--json", check=True).stdout)["transform"]
    assert drifted["retune"] and drifted["fitted_items"] == 200
    tuned = json.loads(cli("tune", path, "--transform", "center", "--json", check=True).stdout)
    assert tuned["transform"]["kind"] == "center"
    refitted = json.loads(cli("info", path, "--json", check=True).stdout)["transform"]
    assert refitted["fitted_items"] == 800 and not refitted["retune"] and refitted["changed_since"] == 0
    assert "drifted" not in cli("info", path, check=True).stderr


def test_tune_chooses_and_stores_the_transform(digit_folders, tmp_path, cli):
    train, _ = digit_folders
    path = tmp_path / "m"
    cli("create", path, "--encoder", "pixels", check=True)
    cli("add", path, train, check=True)
    tuned = json.loads(cli("tune", path, "--transform", "whiten", "--json", check=True).stdout)
    assert tuned["transform"]["kind"] == "whiten" and set(tuned["by_transform"]) <= {
        "whiten-256-s0.1", "whiten-128-s0.1-p0.5", "whiten-256-s0.1-p0.5", "whiten-512-s0.1-p0.5"}
    info = json.loads(cli("info", path, "--json", check=True).stdout)
    assert info["transform"]["spec"] == tuned["transform"] and info["transform"]["fitted_items"] == 80
    shown = cli("info", path, check=True).stdout
    assert "transform   whiten" in shown
    back = json.loads(cli("tune", path, "--transform", "none", "--json", check=True).stdout)
    assert back["transform"]["kind"] == "none"
    assert json.loads(cli("info", path, "--json", check=True).stdout)["transform"]["name"] == "none"


def test_a_process_that_must_wait_to_rebuild_says_so(tmp_path, caplog):
    """Two rebuilds of one index take turns; the one that waits says for whom (a refit
    or an `auto` switch that starts while another runs would otherwise hang silently)."""
    directory = tmp_path / "index"
    order = []

    def second() -> None:
        with saved.building(directory):
            order.append("second")

    with ThreadPoolExecutor(1) as pool, caplog.at_level(logging.WARNING, logger="vismem"):
        with saved.building(directory):
            order.append("first")
            waiting = pool.submit(second)
            done, _ = wait([waiting], timeout=0.5)
            assert not done
        waiting.result(timeout=60)
    assert order == ["first", "second"]
    assert f"another process (pid {os.getpid()}) is rebuilding the index; waiting for it" in caplog.text

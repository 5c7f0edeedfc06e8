"""Named checkpoints and rollbacks, on real stores on disk (and real images where the
decisions are checked): what a rollback restores, what it removes and purges, what stays
removed, other handles, kill -9 in the middle, the CLI and the HTTP endpoints."""

from __future__ import annotations

import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import json_lines, unit_vectors
from fastapi.testclient import TestClient

from vismem import CheckpointExistsError, CheckpointNotFoundError, InvalidInputError, Memory
from vismem.prune import PruneSettings
from vismem.service import ServiceSettings, create_app
from vismem.store import DB_NAME
from vismem.transform import TransformSpec

TOKEN = "checkpoint-token"


def _files_holding(directory, needle: bytes) -> list[str]:
    return sorted(p.name for p in directory.rglob("*") if p.is_file() and needle in p.read_bytes())


def _state(memory: Memory, queries: np.ndarray) -> tuple:
    """Everything a rollback restores, and the decisions that follow from it."""
    ids = memory.ids()
    items = [(i.id, i.label, i.weight, i.prune_count, i.relabelled_from) for i in memory.items(ids)]
    decided = [(d.label, [n.id for n in d.neighbors]) for d in memory.classify_vectors(queries)]
    return items, memory.settings, decided


def _vector_memory(path, index: str = "hnsw") -> tuple[Memory, list[int], np.ndarray]:
    rng = np.random.default_rng(3)
    centres = unit_vectors(3, 16, seed=1)
    labels = rng.integers(0, 3, 60)
    vectors = centres[labels] + 0.3 * rng.standard_normal((60, 16)).astype(np.float32)
    memory = Memory.create(path, encoder=None, dim=16, index=index)
    ids = memory.add_vectors(vectors, [f"c{i}" for i in labels])
    return memory, ids, unit_vectors(30, 16, seed=9) + centres[np.arange(30) % 3]


def _edit_everything(memory: Memory, ids: list[int]) -> list[int]:
    """Relabel, block, boost, prune, change settings, remove one, add three: returns the added ids."""
    memory.relabel(ids[:5], "c0")
    memory.set_weight(ids[5:8], 0.0)
    memory.set_weight(ids[8:10], 3.0)
    memory.apply_pruning({i: 4 for i in ids[10:20]}, PruneSettings(mode="soft"))
    memory.update_settings(vote={"k": 3, "vote": "plurality"})
    memory.remove([ids[-1]], purge=True)
    return memory.add_vectors(unit_vectors(3, 16, seed=42) * 1.0, ["new", "new", "c1"])


def test_rollback_restores_state_settings_and_decisions(tmp_path):
    memdir = tmp_path / "m"
    memory, ids, queries = _vector_memory(memdir)
    with memory:
        memory.relabel(ids[20:22], "c2")  # a relabel history the checkpoint keeps
        made = memory.checkpoint("v1")
        assert (made.name, made.last_id, made.items, made.kept) == ("v1", ids[-1], 60, 60)
        kept = _state(memory, queries)
        added = _edit_everything(memory, ids)
        stored = dict(zip(*memory.vectors(added), strict=True))
        assert _state(memory, queries) != kept
        report = memory.rollback("v1")
        assert sorted(report.removed_ids) == sorted(added) and report.removed_added == 3
        assert report.gone_since == 1  # removed since: it stays removed
        assert report.settings_restored and report.items == 59
        assert set(ids[5:20]) <= set(report.restored_ids) <= set(ids[:20])  # (a relabel to c0 of a c0 changed nothing)
        now = _state(memory, queries)
        assert now[1] == kept[1]  # the settings
        assert now[0] == [row for row in kept[0] if row[0] != ids[-1]]  # every item's state, less the removed
        assert memory.at_checkpoint("v1")
        assert [c.name for c in memory.checkpoints()] == ["v1"]  # kept: roll back again later
        again = memory.rollback("v1")
        assert (again.removed_added, again.restored, again.settings_restored) == (0, 0, False)
    # the added items are purged: no file of the memory holds their vectors
    for vector in stored.values():
        assert not _files_holding(memdir, vector.tobytes())
    with Memory.open(memdir) as reopened:
        assert _state(reopened, queries) == now


def test_classify_answers_exactly_as_at_the_checkpoint_on_real_images(tmp_path, digit_folders, lite0):
    train, test = digit_folders
    queries = sorted(test.rglob("*.png"))
    with Memory.create(tmp_path / "m", encoder="efficientnet_lite0") as memory:
        memory.use_encoder(lite0)
        memory.add_images([train])
        vectors, _, _ = memory.embed_images(queries)

        def decided() -> list:
            return [(d.label, d.confidence, [(n.id, n.label) for n in d.neighbors])
                    for d in memory.classify_vectors(vectors)]

        memory.checkpoint("good")
        before = decided()
        threes = memory.ids(labels=["3"])
        memory.relabel(threes, "8")
        memory.set_weight(memory.ids(labels=["1"])[:4], 0)
        memory.update_settings(vote={"k": 1})
        assert decided() != before
        memory.rollback("good")
        assert decided() == before


def test_a_checkpoint_keeps_nothing_of_a_removed_item(tmp_path):
    memdir = tmp_path / "m"
    memory, ids, _ = _vector_memory(memdir, index="exact")
    with memory:
        memory.relabel([ids[0]], "secret-label-xyz")
        memory.checkpoint("a")
        memory.checkpoint("b")
        memory.remove([ids[0]], purge=True)
    db = sqlite3.connect(memdir / DB_NAME)
    assert db.execute("SELECT COUNT(*) FROM checkpoint_items WHERE id = ?", (ids[0],)).fetchone()[0] == 0
    assert db.execute("SELECT COUNT(*) FROM checkpoint_items").fetchone()[0] == 2 * 59
    db.close()
    assert not _files_holding(memdir, b"secret-label-xyz")  # zeroed in place, and out of the log
    with Memory.open(memdir) as memory:
        report = memory.rollback("a")
        assert report.gone_since == 1 and ids[0] not in memory.ids()


def test_a_second_handle_sees_the_rollback(tmp_path):
    memdir = tmp_path / "m"
    memory, ids, queries = _vector_memory(memdir)
    with memory, Memory.open(memdir) as other:
        memory.checkpoint("v1")
        kept = _state(other, queries)
        _edit_everything(memory, ids)
        assert _state(other, queries) != kept  # it caught up with the edits
        memory.rollback("v1")
        now = _state(other, queries)
        assert now[1] == kept[1]
        assert now[0] == [row for row in kept[0] if row[0] != ids[-1]]
        assert now == _state(memory, queries)


def test_names_duplicates_and_deletion(tmp_path):
    memory, _, _ = _vector_memory(tmp_path / "m", index="exact")
    with memory:
        for bad in ("", "a b", "-x", "x" * 65, "../etc", "é"):
            with pytest.raises(InvalidInputError, match="bad checkpoint name"):
                memory.checkpoint(bad)
        first = memory.checkpoint("v1.0_a-b")
        with pytest.raises(CheckpointExistsError, match="already"):
            memory.checkpoint("v1.0_a-b")
        memory.set_weight([1], 0)
        replaced = memory.checkpoint("v1.0_a-b", replace=True)
        assert replaced.made_at >= first.made_at
        with pytest.raises(CheckpointNotFoundError, match="no checkpoint named 'nope'; it has: v1.0_a-b"):
            memory.rollback("nope")
        memory.delete_checkpoint("v1.0_a-b")
        assert memory.checkpoints() == []
        with pytest.raises(CheckpointNotFoundError):
            memory.delete_checkpoint("v1.0_a-b")


def test_a_feature_transform_restored_is_fitted_again_on_the_items_of_the_checkpoint(tmp_path):
    """The fitted transform is not kept in a checkpoint (it holds a share of every item it
    saw): a rollback fits the checkpoint's transform again on its items still here, which
    gives the same searches as at the checkpoint; and rolls back to no transform alike."""
    memory, ids, queries = _vector_memory(tmp_path / "m", index="exact")
    with memory:
        memory.checkpoint("plain")
        plain = _state(memory, queries)
        memory.set_transform(TransformSpec("center"))
        memory.checkpoint("centred")
        centred = _state(memory, queries)
        memory.set_transform("none")
        memory.add_vectors(unit_vectors(4, 16, seed=5), ["c2"] * 4)
        report = memory.rollback("centred")
        assert report.settings_restored and report.removed_added == 4
        assert memory.settings.transform == TransformSpec("center")
        assert _state(memory, queries) == centred
        memory.rollback("plain")
        assert memory.settings.transform == TransformSpec()
        assert _state(memory, queries) == plain
    with Memory.open(tmp_path / "m") as reopened:
        assert _state(reopened, queries) == plain


def _transformed_then_replaced(memdir, spec: str, *, purged: bool, calibrated: bool = False) -> list[int]:
    """A memory checkpointed under a feature transform fitted on its items (and calibrated
    through it), then every one of them removed (purged at once, or not yet) and others
    added: returns the others' ids."""
    from vismem.curate import calibrate_memory

    memory, ids, _ = _vector_memory(memdir, index="exact")
    with memory:
        memory.set_transform(spec)
        if calibrated:
            calibrate_memory(memory, k=3, prototype_weight=0.0)
        memory.checkpoint("before")
        memory.remove(ids, purge=purged)  # purged: the transform goes with them (none left to fit it on)
        return memory.add_vectors(unit_vectors(30, 16, seed=7), ["new"] * 30)


@pytest.mark.parametrize("purged", [True, False])
@pytest.mark.parametrize("spec", ["center", "whiten"])
def test_a_rollback_to_a_transform_whose_items_are_all_gone_drops_it_and_says_so(tmp_path, spec, purged):
    """The checkpoint's transform is fitted again on its items still here, and none is:
    the rollback failed ("a transform is fitted on at least one vector; got none"), so the
    checkpoint could never be rolled back to; or, with the removal not yet purged, the
    purge after it dropped the transform without a word in the report. It rolls back, drops
    the transform (as a purge drops one with no items left to fit it on) and names it in
    the report; the memory searches its vectors as stored, and opens so."""
    memdir = tmp_path / "m"
    added = _transformed_then_replaced(memdir, spec, purged=purged)
    with Memory.open(memdir) as memory:
        report = memory.rollback("before")
        assert (report.removed_ids, report.gone_since, report.items) == (added, 60, 0)
        assert report.transform_dropped == TransformSpec(spec).name
        assert memory.settings.transform == TransformSpec() and memory.transform.is_identity
        assert memory.info()["transform"]["name"] == "none" and memory.at_checkpoint("before")
        again = memory.add_vectors(unit_vectors(5, 16, seed=8), ["later"] * 5)
    with Memory.open(memdir) as memory:
        assert memory.settings.transform == TransformSpec() and memory.ids() == again
        query = memory.search(unit_vectors(5, 16, seed=8)[:1], k=1)[0][0]
        assert query.id == again[0] and query.distance == pytest.approx(0, abs=1e-5)  # as stored


def test_the_cli_and_http_say_a_rollback_dropped_the_transform(tmp_path, cli):
    memdir = tmp_path / "m"
    _transformed_then_replaced(memdir, "center", purged=True)
    report = json_lines(cli("rollback", memdir, "before", "--json", check=True))[0]
    assert report["transform_dropped"] == "center" and report["items"] == 0
    _transformed_then_replaced(tmp_path / "t", "center", purged=True)
    said = cli("rollback", tmp_path / "t", "before", check=True).stdout
    assert "its center feature transform could not be fitted on the 0 items left" in " ".join(said.split())
    _transformed_then_replaced(tmp_path / "h", "center", purged=True)
    with Memory.open(tmp_path / "h") as memory, TestClient(create_app(memory, ServiceSettings(token=TOKEN))) as client:
        rolled = client.post("/checkpoints/before/rollback", headers={"Authorization": f"Bearer {TOKEN}"})
        assert rolled.status_code == 200 and rolled.json()["transform_dropped"] == "center"
        assert rolled.json()["unfinished"] is None and client.get("/stats").json()["transform"]["name"] == "none"


def test_a_rollback_that_drops_the_transform_says_its_calibration_no_longer_applies(tmp_path, cli):
    """The checkpoint's calibration was measured through the transform the rollback drops
    (none of the items it was fitted on left): the rollback restored it and said nothing, and
    the next `classify --abstain` refused it, asking for `vismem calibrate`. The report says
    the calibration no longer applies (`calibration_stale`), and the message what to run."""
    memdir = tmp_path / "m"
    _transformed_then_replaced(memdir, "center", purged=True, calibrated=True)
    with Memory.open(memdir) as memory:
        report = memory.rollback("before")
        assert report.transform_dropped == "center" and report.calibration_stale
        assert memory.settings.abstention is not None and memory.info()["abstain"]["transform_changed"]
    _transformed_then_replaced(tmp_path / "j", "center", purged=False, calibrated=True)
    assert json_lines(cli("rollback", tmp_path / "j", "before", "--json", check=True))[0]["calibration_stale"]
    _transformed_then_replaced(tmp_path / "t", "center", purged=True, calibrated=True)
    said = " ".join(cli("rollback", tmp_path / "t", "before", check=True).stdout.split())
    assert f"run `vismem calibrate {tmp_path / 't'}`" in said, said
    np.save(tmp_path / "q.npy", unit_vectors(1, 16))
    refused = cli("classify", tmp_path / "t", "--queries", tmp_path / "q.npy", "--abstain")
    assert refused.returncode == 1 and "vismem calibrate" in refused.stderr  # as the rollback said
    # a rollback that keeps the transform keeps its calibration valid, and says nothing of it
    memory, ids, _ = _vector_memory(tmp_path / "k", index="exact")
    with memory:
        memory.set_transform("center")
        from vismem.curate import calibrate_memory
        calibrate_memory(memory, k=3, prototype_weight=0.0)
        memory.checkpoint("before")
        memory.add_vectors(unit_vectors(5, 16, seed=7), ["new"] * 5)
    with Memory.open(tmp_path / "k") as memory:
        assert not memory.rollback("before").calibration_stale
        memory.check_can_decide(abstain=True)


def test_an_index_setting_restored_rebuilds_the_index(tmp_path):
    memory, ids, queries = _vector_memory(tmp_path / "m", index="exact")
    with memory:
        memory.checkpoint("exact")
        kept = _state(memory, queries)
        memory.set_index("hnsw")
        assert memory.store.describe()["index"]["type"] == "hnsw"
        memory.rollback("exact")
        assert memory.settings.index == "exact" and memory.store.describe()["index"]["type"] == "exact"
        assert _state(memory, queries) == kept


# A rollback killed (SIGKILL) inside its one transaction (as it writes the restored
# settings, after its removals and restorations), or right after it returned.
_ROLLBACK_KILLED = """
import os, signal, sys
from vismem import Memory
from vismem.store.sqlite import Database

at = sys.argv[2]
writes_config = Database.set_config
def set_config(self, values):
    if at == "inside" and "settings" in values:
        os.kill(os.getpid(), signal.SIGKILL)
    writes_config(self, values)
Database.set_config = set_config
memory = Memory.open(sys.argv[1])
memory.rollback("v1")
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.parametrize("at, left", [("inside", "old"), ("returned", "new")])
def test_a_rollback_killed_leaves_the_old_state_or_the_new_one(tmp_path, at, left):
    memdir = tmp_path / "m"
    memory, ids, queries = _vector_memory(memdir)
    with memory:
        memory.checkpoint("v1")
        _edit_everything(memory, ids)
        old = _state(memory, queries)
    killed = subprocess.run([sys.executable, "-c", _ROLLBACK_KILLED, str(memdir), at], capture_output=True,
                            text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    db = sqlite3.connect(memdir / DB_NAME)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    db.close()
    with Memory.open(memdir) as memory:
        found = _state(memory, queries)
        if left == "old":
            assert found == old
        else:
            assert found != old and memory.at_checkpoint("v1")


def test_cli_json_and_exit_codes(tmp_path, cli):
    memdir = tmp_path / "m"
    memory, ids, _ = _vector_memory(memdir, index="exact")
    memory.close()
    made = json_lines(cli("checkpoint", memdir, "v1", "--json", check=True))[0]
    assert made["name"] == "v1" and made["items"] == 60
    taken = cli("checkpoint", memdir, "v1")
    assert taken.returncode == 1 and "already" in taken.stderr and taken.stderr.endswith("replace it (--replace)\n")
    bad = cli("checkpoint", memdir, "bad name")  # bad usage, refused before the memory opens
    assert bad.returncode == 2 and "bad checkpoint name" in bad.stderr
    assert cli("rollback", memdir).returncode == 2  # NAME missing: usage
    cli("block", memdir, "--id", str(ids[0]), check=True)
    cli("remove", memdir, "--id", str(ids[1]), check=True)
    listed = json_lines(cli("checkpoints", memdir, "--json", check=True))
    assert [(c["name"], c["items"], c["kept"]) for c in listed] == [("v1", 60, 59)]
    report = json_lines(cli("rollback", memdir, "v1", "--json", check=True))[0]
    assert (report["restored_ids"], report["gone_since"], report["removed_added"]) == ([ids[0]], 1, 0)
    missing = cli("rollback", memdir, "v9", "--json")
    assert missing.returncode == 1 and missing.stdout == "" and "no checkpoint named 'v9'" in missing.stderr
    assert "rolled back to 'v1'" in cli("rollback", memdir, "v1", check=True).stdout
    assert json_lines(cli("delete-checkpoint", memdir, "v1", "--json", check=True)) == [{"deleted": "v1"}]
    assert cli("delete-checkpoint", memdir, "v1").returncode == 1
    assert "no checkpoints" in cli("checkpoints", memdir, check=True).stdout


def test_http_endpoints(tmp_path):
    memory, ids, _ = _vector_memory(tmp_path / "m", index="exact")
    with memory, TestClient(create_app(memory, ServiceSettings(token=TOKEN))) as client:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        assert client.post("/checkpoints", json={"name": "v1"}).status_code == 401
        made = client.post("/checkpoints", json={"name": "v1"}, headers=auth)
        assert made.status_code == 201 and made.json()["items"] == 60
        taken = client.post("/checkpoints", json={"name": "v1"}, headers=auth)
        # it named the CLI's --replace, which no HTTP client can send
        assert taken.status_code == 409 and taken.json()["error"].endswith('or replace it (send "replace": true)')
        assert "--replace" not in taken.json()["error"]
        assert client.post("/checkpoints", json={"name": "v1", "replace": True}, headers=auth).status_code == 201
        assert client.post("/checkpoints", json={"name": "a b"}, headers=auth).status_code == 422
        assert [c["name"] for c in client.get("/checkpoints").json()] == ["v1"]
        client.patch(f"/items/{ids[0]}", json={"label": "zzz"}, headers=auth).raise_for_status()
        assert client.post("/checkpoints/v1/rollback").status_code == 401
        rolled = client.post("/checkpoints/v1/rollback", headers=auth)
        assert rolled.status_code == 200 and rolled.json()["restored_ids"] == [ids[0]]
        assert client.get(f"/items/{ids[0]}").json()["label"] != "zzz"
        assert client.post("/checkpoints/nope/rollback", headers=auth).status_code == 404
        assert client.delete("/checkpoints/v1", headers=auth).json() == {"deleted": "v1"}
        assert client.delete("/checkpoints/v1", headers=auth).status_code == 404
        assert client.get("/checkpoints").json() == []


def test_a_rollback_leaves_query_recording_as_it_is(tmp_path):
    """Recording users' queries is their consent, not the memory's state: a rollback to a
    checkpoint made while recording does not turn it back on (nor off the other way)."""
    memory, ids, queries = _vector_memory(tmp_path / "m", index="exact")
    with memory:
        memory.record_queries(50)
        memory.checkpoint("recording")
        memory.record_queries(0)
        memory.relabel(ids[:2], "c9")
        memory.rollback("recording")
        assert memory.settings.record_queries == 0
        assert memory.at_checkpoint("recording")
        memory.checkpoint("quiet")
        memory.record_queries(20)
        assert memory.at_checkpoint("quiet")
        report = memory.rollback("quiet")
        assert memory.settings.record_queries == 20 and not report.settings_restored
    with Memory.open(tmp_path / "m") as reopened:
        assert reopened.settings.record_queries == 20


def test_an_export_says_it_leaves_the_checkpoints_out(tmp_path, cli):
    """An import gives new ids, so checkpoints do not travel: the export names those it
    leaves out (stderr; --json `checkpoints_left_out`), and the copy has none."""
    memdir = tmp_path / "m"
    memory, _, _ = _vector_memory(memdir, index="exact")
    with memory:
        memory.checkpoint("before")
        memory.checkpoint("after")
    plain = cli("export", memdir, tmp_path / "a.parquet", check=True)
    assert "checkpoints (before, after) are not exported" in plain.stderr
    report = json_lines(cli("export", memdir, tmp_path / "b.parquet", "--json", check=True))[0]
    assert report["checkpoints_left_out"] == ["before", "after"] and report["exported"] == 60
    cli("import", tmp_path / "b.parquet", tmp_path / "copy", check=True)
    with Memory.open(tmp_path / "copy") as copy, Memory.open(memdir) as original:
        assert copy.checkpoints() == [] and len(copy) == 60
        assert [c.name for c in original.checkpoints()] == ["before", "after"]


def test_a_memory_upgraded_from_format_1_is_at_its_checkpoint_after_a_rollback(tmp_path):
    """An upgraded memory keeps its settings as format 1 wrote them (no transform, no
    record_queries, a calibration without its later fields), and a checkpoint copies them
    so; a rollback writes them whole. at_checkpoint compared the two as written and said
    False after every such rollback, so `vismem rollback` interrupted after its commit
    would have said that nothing changed."""
    memdir = tmp_path / "memory"
    shutil.copytree(Path(__file__).parent / "fixtures" / "memory_format1" / "memory", memdir)
    with Memory.open(memdir) as memory:
        memory.checkpoint("upgraded")
        assert memory.at_checkpoint("upgraded")
        ids = [int(i) for i in memory.ids()[:2]]
        memory.relabel(ids[:1], "zzz")
        memory.set_weight(ids[1:], 0.0)
        memory.update_settings(vote={"k": 3})
        assert not memory.at_checkpoint("upgraded")
        report = memory.rollback("upgraded")
        assert report.restored_ids == ids and report.settings_restored
        assert memory.at_checkpoint("upgraded")


def test_info_and_stats_count_the_checkpoints_and_the_rows_they_hold(tmp_path, cli):
    """`vismem info` (and `--json`, `GET /stats`) said nothing of checkpoints, which keep a
    row per item each: how many there are and how many item rows they hold."""
    memdir = tmp_path / "m"
    memory, ids, _ = _vector_memory(memdir, index="exact")
    with memory:
        assert memory.info()["checkpoints"] == {"count": 0, "item_rows": 0}
        memory.checkpoint("a")
        memory.add_vectors(unit_vectors(5, 16, seed=7), ["new"] * 5)
        memory.checkpoint("b")
        memory.remove(ids[:10])  # their rows go with them, in both
    assert json_lines(cli("info", memdir, "--json", check=True))[0]["checkpoints"] == {"count": 2,
                                                                                          "item_rows": 50 + 55}
    assert "checkpoints 2, holding 105 item rows" in " ".join(cli("info", memdir, check=True).stdout.split())
    with Memory.open(memdir) as memory, TestClient(create_app(memory, ServiceSettings(token=TOKEN))) as client:
        stats = client.get("/stats", headers={"Authorization": f"Bearer {TOKEN}"})
        assert stats.status_code == 200 and stats.json()["checkpoints"] == {"count": 2, "item_rows": 105}


def test_ids_after_a_checkpoints_last_id_are_what_a_rollback_removes(tmp_path):
    """`rollback --json` listed every id of the memory (a list of a million ids: ~40 MB and
    a second) to say, if interrupted, which items it removed. `Memory.ids(after=...)` lists
    only those above a bound: the items added since the checkpoint, as the rollback says."""
    with Memory.create(tmp_path / "m", encoder=None, dim=8, index="exact") as memory:
        ids = memory.add_vectors(unit_vectors(20, 8), ["a"] * 10 + ["b"] * 10)
        made = memory.checkpoint("start")
        added = memory.add_vectors(unit_vectors(6, 8, seed=2), ["a", "b"] * 3)
        memory.remove([ids[-1], added[0]])  # one of the checkpoint's, one added since
        assert memory.ids(after=made.last_id) == added[1:]
        assert memory.ids(labels=["b"], after=made.last_id) == added[1::2]
        assert memory.ids(after=added[-1]) == [] and memory.ids(after=0) == memory.ids()
        with pytest.raises(InvalidInputError, match="after must be an item id"):
            memory.ids(after=2.5)  # type: ignore[arg-type]
        assert memory.rollback("start").removed_ids == added[1:]

"""A memory written by store format 1 (the release before the core split) opens with
today's code, is upgraded in place atomically, and answers exactly as it did; one in
format 2 holding labels in NFD and NFC is upgraded to one class of each."""

from __future__ import annotations

import gzip
import json
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import Shown, run_cli, run_cli_unprivileged, unprivileged

from vismem import Memory
from vismem.maintenance import showing_maintenance
from vismem.store import DB_NAME, FORMAT_VERSION
from vismem.store.migrate import FORMAT_2_STATEMENTS

FIXTURE = Path(__file__).parent / "fixtures" / "memory_format1"


@pytest.fixture
def old_memory(tmp_path: Path) -> Path:
    path = tmp_path / "memory"
    shutil.copytree(FIXTURE / "memory", path)
    return path


def expected() -> dict:
    with gzip.open(FIXTURE / "expected.json.gz", "rt") as f:
        return json.load(f)


def queries() -> np.ndarray:
    return np.load(FIXTURE / "queries.npy")


def format_of(path: Path) -> int:
    db = sqlite3.connect(path / DB_NAME)
    try:
        return int(json.loads(db.execute("SELECT value FROM config WHERE key = 'format_version'").fetchone()[0]))
    finally:
        db.close()


def same_decision(new: dict, old: dict) -> None:
    assert new["label"] == old["label"] and new["abstained"] == old["abstained"]
    # Scores come from float32 similarities: another FAISS or BLAS build may round their last
    # bit otherwise (seen: 3.6e-8 in a confidence after a fresh install), as it may prototypes'
    assert new["confidence"] == pytest.approx(old["confidence"], abs=1e-6)
    assert new["scores"] == pytest.approx(old["scores"], abs=1e-6)
    assert new["prototypes"] == pytest.approx(old["prototypes"], abs=1e-6)
    assert (new["ood_score"] is None) == (old["ood_score"] is None)
    if old["ood_score"] is not None:
        assert new["ood_score"] == pytest.approx(old["ood_score"], abs=1e-6)
    assert new["interventions"] == old["interventions"]
    fields = ("id", "label", "source", "item_weight", "prune_factor", "relabelled_from")
    assert [{f: n[f] for f in fields} for n in new["neighbors"]] == \
        [{f: n[f] for f in fields} for n in old["neighbors"]]
    assert [n["weight"] for n in new["neighbors"]] == pytest.approx([n["weight"] for n in old["neighbors"]])


def check_answers(path: Path) -> None:
    answers, q = expected(), queries()
    with Memory.open(path) as memory:
        runs = {
            "classify": memory.classify_vectors(q, abstain=True),
            "classify_k10": memory.classify_vectors(q, k=10, abstain=True),
            "classify_k5_plurality": memory.classify_vectors(q, k=5, vote="plurality"),
            "hybrid": memory.classify_vectors(q, k=10, vote="hybrid"),
        }
        for name, decisions in runs.items():
            assert len(decisions) == len(answers[name])
            for new, old in zip(decisions, answers[name], strict=True):
                same_decision(new.to_dict(), old)
        for name, options in (("search_where", {"where": {"parity": 1}}), ("search_labels", {"labels": ["d1", "d2"]})):
            found = memory.search(q[:10], k=5, **options)
            assert [[(h.id, h.label, h.source) for h in row] for row in found] == \
                [[(h["id"], h["label"], h["source"]) for h in row] for row in answers[name]]
            np.testing.assert_allclose([[h.distance for h in row] for row in found],
                                       [[h["distance"] for h in row] for row in answers[name]], atol=1e-6)


def test_format_1_memory_upgrades_and_classifies_exactly_as_before(old_memory):
    assert format_of(old_memory) == 1
    db = sqlite3.connect(old_memory / DB_NAME)
    config = {k: json.loads(v) for k, v in db.execute("SELECT key, value FROM config")}
    db.close()
    old_info = expected()["info"]
    with Memory.open(old_memory) as memory:
        info = memory.info()
        settings = memory.settings
    assert format_of(old_memory) == FORMAT_VERSION == info["format_version"]
    assert info["items"] == old_info["items"] and info["classes"] == old_info["classes"]
    assert info["index"]["type"] == "hnsw" and info["index"]["size"] == old_info["index"]["size"]
    defaults = dict(old_info["defaults"])
    defaults["vote"] = defaults.pop("rule")
    assert settings.vote.to_dict() == defaults
    assert settings.pruning.mode == "soft" and settings.abstention is not None
    assert settings.abstention.threshold == old_info["abstain"]["threshold"]
    check_answers(old_memory)
    db = sqlite3.connect(old_memory / DB_NAME)
    keys = {row[0] for row in db.execute("SELECT key FROM config")}
    relabels = db.execute("SELECT COUNT(*) FROM relabels").fetchone()[0]
    counts = db.execute("SELECT COUNT(*) FROM prune_counts").fetchone()[0]
    db.close()
    assert keys == {"format_version", "created_at", "encoder", "settings", "index_quality"}
    # per-item state moved out of config JSON into tables
    assert relabels == len(config["relabelled"]) > 0
    assert counts == sum(1 for v in config["pruning"]["counts"].values() if v) > 0


def killed_upgrading(memory: Path, path: Path, delay_ms: float) -> int:
    """Copy `memory` to `path`, upgrade it in another process and SIGKILL that process
    `delay_ms` after it starts; the format the copy is left in."""
    script = ("import sys; from pathlib import Path; from vismem.store.migrate import upgrade; "
              "print('start', flush=True); upgrade(Path(sys.argv[1])); print('done', flush=True)")
    shutil.copytree(memory, path)
    process = subprocess.Popen([sys.executable, "-c", script, str(path)], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stdout.readline().strip() == "start"
    time.sleep(delay_ms / 1000)
    process.kill()
    process.wait()
    return format_of(path)


@pytest.mark.slow
def test_a_kill_during_the_upgrade_leaves_an_openable_memory(tmp_path):
    """SIGKILL the upgrading process at spread-out moments: each time the database is in
    format 1, 2 or 3, never in between, and opening it gives the old answers."""
    outcomes = []
    for delay_ms in (0, 1, 2, 3, 5, 8, 12, 20):
        path = tmp_path / f"m{delay_ms}"
        found = killed_upgrading(FIXTURE / "memory", path, delay_ms)
        assert found in (1, 2, FORMAT_VERSION)  # (2: killed between the steps, each its own transaction)
        db = sqlite3.connect(path / DB_NAME)
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        db.close()
        assert ("relabels" in tables) == (found >= 2)  # all of a step, or none of it
        outcomes.append(found)
    check_answers(tmp_path / "m0")
    check_answers(tmp_path / "m20")
    assert 1 in outcomes  # at least one kill landed before the upgrade committed


def test_the_upgrade_is_shown_as_maintenance(old_memory):
    """The CLI shows the library's own long work (maintenance.py): the upgrade at open is
    one such piece, advanced statement by statement; a memory already upgraded shows none."""
    shown = Shown()
    with showing_maintenance(shown), Memory.open(old_memory) as memory:
        assert len(memory) == expected()["info"]["items"]
    statements = len(FORMAT_2_STATEMENTS) + 1
    assert shown.done() == [("upgrading the store from format 1 to 2", statements, statements),
                            ("upgrading the store from format 2 to 3", 4, 4)]
    with showing_maintenance(shown), Memory.open(old_memory):
        pass
    assert len(shown.work) == 2


NFC, NFD = "Caf\u00e9", "Cafe\u0301"  # print alike: one character é, or e and a combining accent


def format_2_memory_with_nfd_labels(path: Path, extra: int = 0) -> Path:
    """A memory as format 2 kept it before labels were made NFC: items 1-2 from a Mac
    folder (label and source in NFD), 3-4 labelled `Café` as typed (NFC), 5-7 `tea`, all
    near the first axis; item 8 relabelled from the NFD label to `tea`, item 9 from it to
    the NFC one; a checkpoint of that state. `extra` more NFD items far away."""
    rng = np.random.default_rng(0)
    near = np.eye(4, dtype=np.float32)[[0] * 7] + 0.05 * rng.standard_normal((7, 4)).astype(np.float32)
    with Memory.create(path, encoder=None, dim=4) as memory:
        memory.add_vectors(near, [NFC] * 4 + ["tea"] * 3, sources=["mac", "mac", "typed", "typed", "t", "t", "t"])
        memory.add_vectors(np.eye(4, dtype=np.float32)[[3, 2]], [NFC, NFC], sources="old")
        if extra:
            memory.add_vectors(-np.abs(rng.standard_normal((extra, 4))).astype(np.float32), NFC, sources="mac")
        memory.relabel([8], "tea")
        memory.relabel([9], "tea")
        memory.checkpoint("before")
    db = sqlite3.connect(path / DB_NAME)  # as a format-2 vismem kept what it was given
    with db:
        db.execute("UPDATE items SET label = ?, source = ? WHERE id IN (1, 2) OR id > 9", (NFD, f"mac/{NFD}"))
        for table in ("items", "checkpoint_items"):
            db.execute(f"UPDATE {table} SET label = ? WHERE id = 9", (NFC,))
        db.execute("UPDATE relabels SET original = ?", (NFD,))
        db.execute("UPDATE checkpoint_items SET label = ? WHERE id IN (1, 2)", (NFD,))
        db.execute("UPDATE checkpoint_items SET original = ? WHERE original IS NOT NULL", (NFD,))
        db.execute("UPDATE config SET value = '2' WHERE key = 'format_version'")
    db.close()
    return path


def test_a_format_2_memory_with_labels_in_nfd_and_nfc_upgrades_to_one_class(tmp_path):
    """`Café` kept in NFD (a Mac folder) and in NFC (typed) were two classes that print
    alike: four neighbours split 2 + 2 lost a plurality vote to three `tea`, and the class
    was listed twice. The upgrade to format 3 rewrites labels and sources to NFC, in relabel
    history and checkpoints too, so the four vote as one class."""
    path = format_2_memory_with_nfd_labels(tmp_path / "m")
    query = np.eye(4, dtype=np.float32)[:1]
    with Memory.open(path) as memory:
        assert format_of(path) == FORMAT_VERSION == 3 == memory.info()["format_version"]
        assert memory.class_counts() == {NFC: 5, "tea": 4}
        assert sorted(memory.prototypes().labels) == sorted([NFC, "tea"])
        decision = memory.classify_vectors(query, k=7, vote="plurality")[0]
        assert decision.label == NFC and list(decision.scores) == [NFC, "tea"]
        assert sorted(n.id for n in decision.neighbors if n.label == NFC) == [1, 2, 3, 4]
        assert [item.source for item in memory.items([1, 2])] == [f"mac/{NFC}"] * 2
        assert memory.ids(sources=[f"mac/{NFC}"]) == [1, 2]
        # item 8's first label is kept, now NFC; item 9 was relabelled to what it was: no history
        nearest = memory.classify_vectors(np.eye(4, dtype=np.float32)[[3, 2]], k=1)
        assert [(d.neighbors[0].id, d.neighbors[0].relabelled_from) for d in nearest] == [(8, NFC), (9, None)]
        memory.relabel([1, 2, 3], "tea")
        memory.rollback("before")
        assert memory.class_counts() == {NFC: 5, "tea": 4}
        nearest = memory.classify_vectors(np.eye(4, dtype=np.float32)[[3, 2]], k=1)
        assert [(d.neighbors[0].id, d.neighbors[0].relabelled_from) for d in nearest] == [(8, NFC), (9, None)]
    info = json.loads(run_cli("info", path, "--json", check=True).stdout)
    assert info["classes"] == {NFC: 5, "tea": 4} and info["format_version"] == 3


def test_a_format_2_memory_this_user_cannot_write_opens_as_it_is(tmp_path):
    """Format 3 only rewrote text, so a format-2 memory on read-only media is read as it
    is rather than refused (its NFD labels found by an NFC filter)."""
    path = format_2_memory_with_nfd_labels(tmp_path / "m")
    np.save(tmp_path / "q.npy", np.eye(4, dtype=np.float32)[:1])
    subprocess.run(["chmod", "-R", "a-w", str(path)], check=True)
    try:
        info = run_cli_unprivileged("info", path, "--json")
        search = run_cli_unprivileged("search", path, "--queries", tmp_path / "q.npy", "-k", "9",
                                      "--only-label", NFC, "--json")
    finally:
        subprocess.run(["chmod", "-R", "u+w", str(path)], check=True)
    assert info.returncode == 0, info.stderr
    assert json.loads(info.stdout)["format_version"] == 2 and format_of(path) == 2
    assert search.returncode == 0, search.stderr
    assert sorted(hit["id"] for hit in json.loads(search.stdout)["neighbors"]) == [1, 2, 3, 4, 9]


READ_IN_NFC = """
import json, sys
import numpy as np
from vismem import Memory
with Memory.open(sys.argv[1]) as memory:
    query = np.eye(4, dtype=np.float32)
    decision = memory.classify_vectors(query[:1], k=7, vote="plurality")[0]
    nearest = memory.classify_vectors(query[[3, 2]], k=1)
    print(json.dumps({
        "read_only": memory.store.read_only, "format": memory.info()["format_version"],
        "classes": memory.class_counts(), "prototypes": sorted(memory.prototypes().labels),
        "label": decision.label, "scores": list(decision.scores),
        "voters": sorted(n.id for n in decision.neighbors if n.label == sys.argv[2]),
        "sources": [item.source for item in memory.items([1, 2])],
        "by_source": memory.ids(sources=["mac/" + sys.argv[2]]),
        "relabelled_from": [(d.neighbors[0].id, d.neighbors[0].relabelled_from) for d in nearest],
        "at_checkpoint": memory.at_checkpoint("before")}))
"""


def test_a_format_2_memory_this_user_cannot_write_reads_its_labels_in_nfc(tmp_path):
    """Read-only, a format-2 memory is not upgraded, yet it answers as its upgrade would:
    `Café` in NFD and in NFC is one class (it was two, and the four neighbours split 2 + 2
    lost a plurality vote to three `tea`), sources and relabel history read in NFC, and
    nothing on disk changes."""
    path = format_2_memory_with_nfd_labels(tmp_path / "m")
    subprocess.run(["chmod", "-R", "a-w", str(path)], check=True)
    try:
        run = subprocess.run(unprivileged([sys.executable, "-c", READ_IN_NFC, str(path), NFC]),
                             capture_output=True, text=True, timeout=300)
        info = run_cli_unprivileged("info", path, "--json")
    finally:
        subprocess.run(["chmod", "-R", "u+w", str(path)], check=True)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == {
        "read_only": True, "format": 2, "classes": {NFC: 5, "tea": 4}, "prototypes": [NFC, "tea"],
        "label": NFC, "scores": [NFC, "tea"], "voters": [1, 2, 3, 4], "sources": [f"mac/{NFC}"] * 2,
        "by_source": [1, 2], "relabelled_from": [[8, NFC], [9, None]], "at_checkpoint": True}
    assert info.returncode == 0, info.stderr
    assert json.loads(info.stdout)["classes"] == {NFC: 5, "tea": 4}
    db = sqlite3.connect(path / DB_NAME)
    try:
        assert {row[0] for row in db.execute("SELECT DISTINCT label FROM items")} == {NFD, NFC, "tea"}
    finally:
        db.close()
    assert format_of(path) == 2


@pytest.mark.slow
def test_a_kill_during_the_nfc_upgrade_leaves_an_openable_memory(tmp_path):
    """SIGKILL the upgrade from format 2 at spread-out moments: each time every label is as
    format 2 kept it, or every one is NFC, and the memory opens to one class."""
    template = format_2_memory_with_nfd_labels(tmp_path / "template", extra=20_000)
    outcomes = []
    for delay_ms in (0, 10, 30, 60, 90, 120, 500):  # the step takes ~130 ms here
        path = tmp_path / f"m{delay_ms}"
        found = killed_upgrading(template, path, delay_ms)
        db = sqlite3.connect(path / DB_NAME)
        labels = {row[0] for row in db.execute("SELECT DISTINCT label FROM items")}
        db.close()
        assert (found, labels) in ((2, {NFD, NFC, "tea"}), (3, {NFC, "tea"}))  # all of the step, or none
        outcomes.append(found)
        with Memory.open(path) as memory:
            assert memory.class_counts() == {NFC: 20_005, "tea": 4}
    assert 2 in outcomes  # at least one kill landed before the upgrade committed

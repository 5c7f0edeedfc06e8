"""A memory written by store format 1 (the release before the core split) opens with
today's code, is upgraded in place atomically, and answers exactly as it did."""

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

from conftest import Shown

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


@pytest.mark.slow
def test_a_kill_during_the_upgrade_leaves_an_openable_memory(tmp_path):
    """SIGKILL the upgrading process at spread-out moments: each time the database is in
    format 1 or 2, never in between, and opening it gives the old answers."""
    script = ("import sys, time; from pathlib import Path; from vismem.store.migrate import upgrade; "
              "print('start', flush=True); upgrade(Path(sys.argv[1])); print('done', flush=True)")
    outcomes = []
    for delay_ms in (0, 1, 2, 3, 5, 8, 12, 20):
        path = tmp_path / f"m{delay_ms}"
        shutil.copytree(FIXTURE / "memory", path)
        process = subprocess.Popen([sys.executable, "-c", script, str(path)], stdout=subprocess.PIPE, text=True)
        assert process.stdout is not None and process.stdout.readline().strip() == "start"
        time.sleep(delay_ms / 1000)
        process.kill()
        process.wait()
        found = format_of(path)
        assert found in (1, FORMAT_VERSION)
        db = sqlite3.connect(path / DB_NAME)
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        db.close()
        assert ("relabels" in tables) == (found == FORMAT_VERSION)  # all of a step, or none of it
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
    assert shown.done() == [("upgrading the store from format 1 to 2", statements, statements)]
    with showing_maintenance(shown), Memory.open(old_memory):
        pass
    assert len(shown.work) == 1

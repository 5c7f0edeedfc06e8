"""Work the library starts on its own is shown where the application asks (maintenance.py):
an index rebuilt at open, built when `auto` switches, compacted after many removals, a
transform refitted after its items were removed. The CLI shows it as a bar on a terminal,
a line of the command's own bar when one is drawn."""

from __future__ import annotations

import shutil
import sys

import pytest
from conftest import Shown, on_terminal, run_cli, unit_vectors

from vismem import Memory
from vismem.maintenance import showing_maintenance
from vismem.search import HNSWIndex
from vismem.search.tuning import ladder


def measured(shown: Shown, queries: int) -> tuple:
    """The step a build or compaction ends with: recall measured on its held-out sample
    (the exact neighbours, then a search at each effort of the ladder)."""
    (description, total, done), = [work for work in shown.done() if work[0].startswith("measuring")]
    assert description == f"measuring recall on {queries} queries" and done == total == 1 + len(ladder(HNSWIndex(16)))
    return description, total, done


def hnsw_memory(path, n: int = 2000) -> list[int]:
    with Memory.create(path, encoder=None, dim=16, index="hnsw") as memory:
        return memory.add_vectors(unit_vectors(n, 16, seed=4), [f"c{i % 4}" for i in range(n)])


def test_an_index_rebuilt_at_open_is_shown_item_by_item(tmp_path):
    path = tmp_path / "m"
    hnsw_memory(path)
    shutil.rmtree(path / "index")  # no saved index: opening rebuilds it
    shown = Shown()
    with showing_maintenance(shown), Memory.open(path) as memory:
        assert memory.info()["index"]["size"] == 2000
    assert shown.done() == [("rebuilding the hnsw index", 2000, 2000), measured(shown, 200)]
    with showing_maintenance(shown), Memory.open(path):
        pass
    assert len(shown.work) == 2  # the saved index is used: nothing rebuilt, nothing shown


def test_compaction_after_many_removals_is_shown(tmp_path):
    path = tmp_path / "m"
    ids = hnsw_memory(path)
    shown = Shown()
    with Memory.open(path) as memory, showing_maintenance(shown):
        memory.remove(ids[:200])  # 10%: tombstones stay
        assert shown.work == []
        memory.remove(ids[200:500])  # 25% > 20%: compacted at once
        assert memory.info()["index"]["tombstones"] == 0
    assert shown.done() == [("compacting the index", 1500, 1500), measured(shown, 200)]


def test_auto_switching_to_hnsw_as_the_memory_grows_is_shown(tmp_path, monkeypatch):
    import vismem.search.lifecycle as lifecycle

    monkeypatch.setattr(lifecycle, "AUTO_APPROX_MIN", 500)
    shown = Shown()
    with Memory.create(tmp_path / "m", encoder=None, dim=16) as memory, showing_maintenance(shown):
        memory.add_vectors(unit_vectors(400, 16, seed=5), ["a"] * 400)
        assert shown.work == [] and memory.info()["index"]["type"] == "exact"
        memory.add_vectors(unit_vectors(200, 16, seed=6), ["b"] * 200)
        assert memory.info()["index"]["type"] == "hnsw"
    assert shown.done() == [("building a hnsw index", 600, 600), measured(shown, 150)]


def test_refitting_a_transform_whose_items_were_removed_is_shown(tmp_path):
    shown = Shown()
    with Memory.create(tmp_path / "m", encoder=None, dim=16) as memory:
        ids = memory.add_vectors(unit_vectors(300, 16, seed=7) + 0.5, [f"c{i % 3}" for i in range(300)])
        memory.set_transform("center")
        with showing_maintenance(shown):
            memory.remove(ids[:100], purge=True)  # the fit must forget them
        assert memory.transform.fitted_items == 200
    assert shown.done() == [("refitting the center transform", 200, 200), ("rebuilding the index", 200, 200)]


def test_measuring_recall_on_given_queries_is_shown(tmp_path):
    path = tmp_path / "m"
    hnsw_memory(path)
    shown = Shown()
    with Memory.open(path) as memory, showing_maintenance(shown):
        memory.tune_index(unit_vectors(300, 16, seed=9))
    assert shown.done() == [measured(shown, 300)]


def test_nothing_is_shown_unless_asked_and_never_by_a_service(tmp_path):
    from vismem.maintenance import _shown_by

    assert _shown_by.get() is None  # a library user sees log records, no bars
    with showing_maintenance(Shown()), showing_maintenance(None):
        assert _shown_by.get() is None  # `vismem serve` around its server
    path = tmp_path / "m"
    hnsw_memory(path, 300)
    shutil.rmtree(path / "index")
    with Memory.open(path) as memory:  # rebuilt all the same
        assert memory.info()["index"]["size"] == 300


@pytest.mark.parametrize("bars", ["one", "nested"])
def test_a_bar_opened_while_another_is_drawn_is_a_line_of_it(bars):
    # the library's own work during `add`'s bar: Rich before 14.1 drew one live display at
    # a time and raised LiveError here (pyproject asks for rich>=14.1)
    script = ("from vismem.progress import progress_bar\n"
              "with progress_bar('outer work', 2) as outer:\n"
              "    outer(1)\n"
              + ("    with progress_bar('inner work', 3, transient=True) as inner:\n"
                 "        inner(3)\n" if bars == "nested" else "")
              + "    outer(1)\n"
              "print('finished')\n")
    done, shown = on_terminal([sys.executable, "-c", script], timeout=60)
    assert done.returncode == 0 and done.stdout == "finished\n", shown.decode(errors="replace")
    assert b"outer work" in shown and (b"inner work" in shown) == (bars == "nested")


def test_the_cli_shows_a_rebuild_at_open_on_a_terminal(tmp_path):
    path = tmp_path / "m"
    hnsw_memory(path)
    shutil.rmtree(path / "index")
    done, shown = on_terminal([sys.executable, "-m", "vismem", "info", str(path), "--json"])
    assert done.returncode == 0 and '"size": 2000' in done.stdout
    assert b"saved index unusable" in shown and b"rebuilding the hnsw index" in shown and b"2000/2000" in shown
    # off a terminal: the warning, and no trace of a bar
    again = run_cli("info", path, "--json")
    assert again.returncode == 0 and "rebuilding" not in again.stderr
    shutil.rmtree(path / "index")
    logged = run_cli("info", path, "--json")
    assert logged.stderr.count("\n") == 1 and "saved index unusable" in logged.stderr

"""The catalog answers filters with array operations, and always as the database would."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vismem import Memory
from vismem.errors import InvalidInputError
from vismem.store import DB_NAME, Filter
from vismem.store.base import _RECENT_FILTERS, RECENT_FILTERS
from vismem.store.catalog import Catalog

LABELS = ["cat", "dog", "owl"]
SOURCES = ["a", "b"]


def test_filters_are_masks_over_columns():
    c = Catalog()
    c.add([1, 2, 3, 4], ["cat", "dog", "cat", "owl"], ["a", "a", "b", "b"], [1.0, 0.0, 1.0, 2.0])
    assert c.ids(Filter.of(labels=["cat", "owl"])).tolist() == [1, 3, 4]
    assert c.ids(Filter.of(labels=["cat"], sources=["b"])).tolist() == [3]
    assert c.ids(Filter.of(labels=["never-seen"])).tolist() == []
    c.set_prune_counts({1: 3, 4: 1})
    assert c.ids(Filter(max_prune_count=2)).tolist() == [2, 3, 4]
    c.remove([3])
    assert c.ids(Filter.of(labels=["cat"])).tolist() == [1] and len(c) == 3
    c.update([2], label="cat", weight=1.0)
    assert c.class_counts() == {"cat": 2, "owl": 1}
    labels, sources, weights, prune, _ = c.columns(np.array([[4, -1, 2]]))
    assert labels.tolist() == [["owl", None, "cat"]] and weights.tolist() == [[2.0, 0.0, 1.0]]
    assert prune.tolist() == [[1, 0, 0]]
    labels, sources = c.names(np.array([3, 2, 1]))  # removed, relabelled, unchanged
    assert labels.tolist() == [None, "cat", "cat"] and sources.tolist() == [None, "a", "a"]


def test_a_filter_made_again_is_the_one_made_before():
    """Filter.of keeps recent filters by their arguments: the same object comes back (and
    finds its cached selection without a comparison), and what it reports is as given."""
    first = Filter.of(labels=["cat", "dog"], where={"year": 2024}, max_prune_count=2)
    assert Filter.of(labels=["cat", "dog"], where={"year": 2024}, max_prune_count=2) is first
    assert Filter.of(labels=iter(["dog", "cat"]), where={"year": 2024}, max_prune_count=2) == first
    assert Filter.of(where={"year": 2024.0}).restriction() == {"where": {"year": 2024.0}}
    assert Filter.of(where={"year": 2024}).restriction() == {"where": {"year": 2024}}
    listed = Filter.of(where={"tags": ["a", "b"]})  # not hashable as given: made every time, alike
    assert listed == Filter.of(where={"tags": ["a", "b"]}) and listed.where == (("tags", '["a","b"]'),)
    for _ in range(2):
        with pytest.raises(InvalidInputError, match="metadata keys"):
            Filter.of(where={"bad key": 1})
    for i in range(RECENT_FILTERS + 5):
        Filter.of(labels=[f"c{i}"])
    assert len(_RECENT_FILTERS) <= RECENT_FILTERS


def test_a_selection_is_cached_until_the_next_edit():
    c = Catalog()
    c.add([1, 2, 3], ["cat", "dog", "cat"], ["a"] * 3, [1.0] * 3)
    where = Filter.of(labels=["cat"])
    first = c.selection(where)
    assert first is not None and first is c.selection(where) and first.ids.tolist() == [1, 3]
    assert c.selection(None) is None and c.selection(Filter.of(labels=["cat", "dog"])) is None  # everything
    c.add([4], ["cat"], ["a"], [1.0])
    second = c.selection(where)
    assert second is not first and second.ids.tolist() == [1, 3, 4] and second.key != first.key


def test_removed_rows_are_reclaimed_in_bulk():
    c = Catalog()
    n = 5000
    c.add(list(range(1, n + 1)), [LABELS[i % 3] for i in range(n)], ["a"] * n, [1.0] * n)
    c.remove(range(1, 2001))  # past the dead-row share: compacted
    assert len(c) == 3000 and c._n == 3000 and c.ids().tolist() == list(range(2001, n + 1))
    assert c.ids(Filter.of(labels=["cat"])).tolist() == [i for i in range(2001, n + 1) if (i - 1) % 3 == 0]
    labels, _ = c.names(np.array([1, 2000, 2001, 2002, n, n + 1, -1, -7, 0, 2**62, 2**63 - 1]))
    assert labels.tolist() == [None, None, LABELS[2000 % 3], LABELS[2001 % 3], LABELS[(n - 1) % 3],
                               None, None, None, None, None, None]
    assert c.name_lists(np.array([1, 2001, n, n + 1, -1, 2**63 - 1]))[0] == labels[[0, 2, 4, 5, 6, 10]].tolist()
    assert 0 not in c and -1 not in c and 2**63 - 1 not in c and 2001 in c
    with pytest.raises(ValueError, match="start at 1"):  # id 0 stands for "none" in the tables by id
        Catalog().add([0, 1], ["cat", "dog"], ["a", "a"], [1.0, 1.0])


edit = st.one_of(
    st.tuples(st.just("add"), st.lists(st.tuples(st.sampled_from(LABELS), st.sampled_from(SOURCES),
                                                 st.integers(0, 3)), min_size=1, max_size=6)),
    st.tuples(st.just("remove"), st.lists(st.integers(0, 40), max_size=4)),
    st.tuples(st.just("relabel"), st.lists(st.integers(0, 40), max_size=4), st.sampled_from(LABELS)),
    st.tuples(st.just("prune"), st.dictionaries(st.integers(0, 40), st.integers(0, 4), max_size=8)),
)
query = st.builds(Filter.of, labels=st.none() | st.lists(st.sampled_from(LABELS + ["emu"]), max_size=2),
                  sources=st.none() | st.lists(st.sampled_from(SOURCES), max_size=1),
                  where=st.none() | st.dictionaries(st.just("tag"), st.integers(0, 3), max_size=1),
                  max_prune_count=st.none() | st.integers(1, 3))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=st.lists(edit, max_size=8), queries=st.lists(query, min_size=1, max_size=4))
def test_the_catalog_agrees_with_the_database(tmp_path_factory, edits, queries):
    """Random edits through a real memory; every filter the catalog answers with arrays
    selects exactly the rows a SQL query over the database selects."""
    rng = np.random.default_rng(0)
    with Memory.create(tmp_path_factory.mktemp("cat") / "m", encoder=None, dim=4) as memory:
        for step in edits:
            live = memory.ids()

            def pick(ks: list[int], live: list[int] = live) -> list[int]:
                return [live[k % len(live)] for k in ks] if live else []
            if step[0] == "add":
                rows = step[1]
                memory.add_vectors(rng.standard_normal((len(rows), 4)) + 0.1, [r[0] for r in rows],
                                   sources=[r[1] for r in rows], metas=[{"tag": r[2]} for r in rows])
            elif step[0] == "remove":
                memory.remove(pick(step[1]))
            elif step[0] == "relabel":
                memory.relabel(pick(step[1]), step[2])
            else:
                memory.set_prune_counts({pick([k])[0]: v for k, v in step[1].items()} if live else {})
            for where in queries:  # after every edit: columns built early are kept in step
                assert memory.store.catalog.ids(where).tolist() == memory.store.db.ids_where(where)
            assert_named_as_stored(memory)


def assert_named_as_stored(memory: Memory) -> None:
    """Every id, live, removed or never given (and FAISS's padding -1), is named by the
    catalog as the database names it: None where there is no live item."""
    every = np.arange(-1, max(memory.ids(), default=0) + 3)
    stored = {item.id: item for item in memory.items(memory.ids())}
    labels, sources = memory.store.catalog.names(every.reshape(-1, 1))
    assert labels.ravel().tolist() == [stored[i].label if i in stored else None for i in every.tolist()]
    assert sources.ravel().tolist() == [stored[i].source if i in stored else None for i in every.tolist()]
    assert memory.store.catalog.name_lists(every) == (labels.ravel().tolist(), sources.ravel().tolist())
    columns = memory.store.catalog.columns(every)
    assert columns[0].tolist() == labels.ravel().tolist()
    assert columns[2].tolist() == [stored[i].weight if i in stored else 0.0 for i in every.tolist()]


@pytest.mark.parametrize("value", [1, 1.0, True, "1", [1, 2], {"a": 1}])
def test_metadata_values_compare_as_sqlite_does(tmp_path, value):
    with Memory.create(tmp_path / "m", encoder=None, dim=2) as memory:
        memory.add_vectors(np.eye(2), ["a", "b"], metas=[{"v": value}, {"v": "other"}])
        where = Filter.of(where={"v": value})
        assert memory.store.catalog.ids(where).tolist() == memory.store.db.ids_where(where) == [1]


def test_object_values_match_whatever_order_their_keys_were_given_in(tmp_path):
    """An object's keys compare sorted, in the catalog this process fills as it adds and in
    one filled from the database (which keeps the keys as given) alike."""
    path = tmp_path / "m"
    with Memory.create(path, encoder=None, dim=2) as memory:
        memory.add_vectors(np.eye(2), ["a", "b"], metas=[{"v": {"b": 1, "a": [2, {"d": 3, "c": 4}]}}, {"v": 1}])
        value = {"a": [2, {"c": 4, "d": 3}], "b": 1}
        assert memory.ids(where={"v": value}) == [1]  # the column is read from the database
        memory.add_vectors(np.eye(2)[::-1], ["a", "b"], metas=[{"v": {"b": 1, "a": [2, {"d": 3, "c": 4}]}}, {}])
        assert memory.ids(where={"v": value}) == [1, 3]  # the column is filled as items are added
    with Memory.open(path) as fresh:
        assert fresh.ids(where={"v": value}) == [1, 3]


def test_metadata_the_database_cannot_read_matches_nothing_and_breaks_no_other_filter(tmp_path):
    """Metadata SQLite cannot read as JSON (NaN, stored by an older vismem) once failed
    every `where` on every key. Such an item now matches no condition, and every filter
    (in RAM and in SQL) answers for the others; the item itself still reads and searches."""
    path = tmp_path / "m"
    Memory.create(path, encoder=None, dim=2).close()
    with Memory.open(path) as memory:
        memory.add_vectors(np.eye(2), ["a", "b"], metas=[{"tag": 1}, {"tag": 2}])
    db = sqlite3.connect(path / DB_NAME)
    db.execute("""UPDATE items SET meta = '{"tag": NaN, "other": 1}' WHERE id = 1""")
    db.commit()
    db.close()
    with Memory.open(path) as memory:
        for _ in range(2):
            assert memory.ids(where={"tag": 2}) == [2]
            assert memory.ids(where={"tag": 1}) == [] and memory.ids(where={"other": 1}) == []
            assert memory.ids(where={"tag": None}) == []
        for where in (Filter.of(where={"tag": 2}), Filter.of(where={"other": 1}), Filter.of(where={"tag": None})):
            assert memory.store.catalog.ids(where).tolist() == memory.store.db.ids_where(where)
        assert memory.page(where={"tag": 2}).total == 1
        assert np.isnan(memory.get(1).meta["tag"]) and memory.search(np.eye(2)[:1], 1)[0][0].id == 1


def test_another_writer_edits_reach_this_catalog_through_the_log(tmp_path):
    path = tmp_path / "m"
    rng = np.random.default_rng(1)
    with Memory.create(path, encoder=None, dim=3) as writer, Memory.open(path) as reader:
        ids = writer.add_vectors(rng.standard_normal((6, 3)), LABELS * 2, metas=[{"tag": i % 2} for i in range(6)])
        tagged = Filter.of(where={"tag": 1})
        assert reader.ids(where={"tag": 1}) == ids[1::2]  # builds the metadata column now
        writer.add_vectors(rng.standard_normal((2, 3)), ["emu", "emu"], metas=[{"tag": 1}, {"tag": 0}])
        writer.relabel(ids[:2], "emu")
        writer.set_prune_counts({ids[2]: 3})
        writer.remove([ids[5]])
        for where in (tagged, Filter.of(labels=["emu"]), Filter(max_prune_count=2), None):
            reader.refresh()
            assert reader.store.catalog.ids(where).tolist() == writer.store.db.ids_where(where)
        assert reader.items([ids[0]])[0].relabelled_from == "cat"


def test_pages_are_slices_of_the_matches_through_edits():
    """Listing reuses cached matches (and plain positions while nothing is removed): each
    page must still be exactly ids(filter)[offset:offset + limit] after every edit."""
    c = Catalog()
    c.add(list(range(1, 301)), [LABELS[i % 3] for i in range(300)], [SOURCES[i % 2] for i in range(300)],
          [1.0] * 300)
    cats = Filter.of(labels=["cat"])

    def same_as_ids() -> None:
        for where in (None, cats, Filter.of(labels=["dog"], sources=["b"])):
            matches = c.ids(where)
            for offset in (0, 7, len(matches) - 3, len(matches), 10**12):
                total, ids = c.page(where, offset, 5)
                assert total == len(matches) and ids.tolist() == matches[offset : offset + 5].tolist()

    same_as_ids()
    c.remove([1, 2, 150])
    same_as_ids()
    c.update([4, 5], label="owl")
    same_as_ids()
    c.add([301], ["cat"], ["a"], [1.0])
    same_as_ids()
    c.page(None, 0, 5)[1][0] = -7  # a page is the caller's copy
    assert c.page(None, 0, 1)[1].tolist() == [3]

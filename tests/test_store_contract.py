"""The `Store` contract, held by every home: each test runs on a memory in a directory and
on a memory in a Milvus collection (the real standalone server, see conftest), through
the same public API, and must see the same behaviour."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image
from skimage import data

from conftest import unit_vectors
from vismem import Memory
from vismem.errors import InvalidInputError, ItemNotFoundError, MemoryExistsError, MemoryNotFoundError
from vismem.store import Filter, NewItem
from vismem.vectors import unit_rows, vector_hashes


def filled(location, n=60, dim=16, seed=0):
    memory = Memory.create(location, encoder=None, dim=dim)
    vectors = unit_vectors(n, dim, seed)
    ids = memory.add_vectors(vectors, [f"c{i % 3}" for i in range(n)], sources=[f"s{i % 2}" for i in range(n)],
                             metas=[{"n": i % 4, "flag": bool(i % 2), "tag": "x" if i % 5 else "y"}
                                    for i in range(n)])
    return memory, vectors, ids


def test_search_is_exact_on_a_flat_index_and_survives_reopen(location):
    memory, vectors, ids = filled(location)
    assert len(set(ids)) == 60 and len(memory) == 60
    truth = np.argsort(-(vectors @ vectors[7]))[:10]
    hits = memory.search(vectors[7], k=10)[0]
    assert [h.id for h in hits] == [ids[i] for i in truth]
    assert hits[0].distance == pytest.approx(0, abs=1e-5) and hits[0].label == "c1" and hits[0].source == "s1"
    memory.close()
    with Memory.open(location) as again:
        assert len(again) == 60 and again.encoder_name is None and again.dim == 16
        assert [h.id for h in again.search(vectors[7], k=10)[0]] == [ids[i] for i in truth]


def test_filters_restrict_search_listing_and_removal(location):
    memory, vectors, ids = filled(location)
    ok = lambda i, **f: all(((i % 3 == int(f["label"][1:])) if "label" in f else True,  # noqa: E731
                             (i % 2 == int(f["source"][1:])) if "source" in f else True))
    hits = memory.search(vectors[:4], k=7, labels=["c2"], sources=["s0"])
    assert all(len(row) == 7 and {h.label for h in row} == {"c2"} and {h.source for h in row} == {"s0"}
               for row in hits)
    assert memory.ids(labels=["c0"]) == sorted(ids[i] for i in range(60) if ok(i, label="c0"))
    assert memory.ids(where={"n": 2}) == sorted(ids[i] for i in range(60) if i % 4 == 2)
    # 1 == 1.0 == true, as in the embedded store's SQLite
    assert memory.ids(where={"flag": True}) == memory.ids(where={"flag": 1}) \
        == sorted(ids[i] for i in range(60) if i % 2)
    assert memory.ids(where={"tag": "y", "n": 0}) == sorted(ids[i] for i in range(60) if i % 5 == 0 and i % 4 == 0)
    assert memory.ids(labels=[]) == []
    page = memory.page(offset=5, limit=10, labels=["c1"])
    assert page.total == 20 and [i.label for i in page.items] == ["c1"] * 10
    assert [i.id for i in page.items] == [ids[i] for i in range(60) if i % 3 == 1][5:15]  # oldest first
    removed = memory.remove(where={"n": 3})
    assert sorted(removed) == sorted(ids[i] for i in range(60) if i % 4 == 3) and len(memory) == 45


def test_nearest_is_the_search_without_the_vote_columns(location):
    memory, vectors, ids = filled(location)
    memory.relabel([ids[4]], "c0")  # a relabelled neighbour: the vote's column, not nearest's
    store = memory.store
    for where, k in ((None, 5), (Filter.of(labels=["c2"], where={"n": 1}), 8)):  # 5 match: padded to 8
        searched, near = store.search(vectors[3:6], k, where), store.nearest(vectors[3:6], k, where)
        assert near.k == k
        for column in ("ids", "similarities", "labels", "sources"):  # flat lists, in row order
            assert getattr(near, column) == getattr(searched, column).ravel().tolist(), column
    rows = np.reshape(near.ids, (3, 8))
    assert (rows[:, 5:] == -1).all() and set(np.reshape(near.labels, (3, 8))[:, 5:].ravel()) == {None}
    assert {h.label for h in memory.search(vectors[4], k=1)[0]} == {"c0"}
    assert memory.search(np.zeros((0, 16)), k=3) == [] and store.nearest(np.zeros((0, 16)), 3).ids == []
    memory.close()


def test_removed_items_are_never_returned(location):
    memory, vectors, ids = filled(location)
    gone = [ids[i] for i in (0, 7, 33)]
    assert memory.remove(gone + [123]) == sorted(gone)
    everything = memory.search(vectors, k=60)
    assert all(len(row) == 57 for row in everything)
    assert not set(gone) & {h.id for row in everything for h in row}
    assert memory.items(gone) == [] and len(memory) == 57
    assert memory.remove(label="c1") and "c1" not in memory.class_counts()
    memory.close()
    with Memory.open(location) as again:
        assert not set(gone) & {h.id for h in again.search(vectors[0], k=60)[0]}


def test_relabel_block_and_prune_counts_change_the_vote(location):
    memory, vectors, ids = filled(location)
    assert memory.relabel([ids[4], 99], "zz") == [ids[4]]
    item = memory.get(ids[4])
    assert item.label == "zz" and item.relabelled_from == "c1"
    assert memory.relabel([ids[4]], "yy") and memory.get(ids[4]).relabelled_from == "c1"   # keeps the original
    assert memory.relabel([ids[4]], "c1") and memory.get(ids[4]).relabelled_from is None  # back: forgotten
    decision = memory.classify_vectors(vectors[5:6], k=1)[0]
    assert decision.label == "c2" and decision.neighbors[0].id == ids[5]
    memory.set_weight([ids[5]], 0.0)  # blocked: stays, stops voting
    assert memory.get(ids[5]).weight == 0.0
    nearest = memory.classify_vectors(vectors[5:6], k=3)[0].neighbors[0]
    assert nearest.id == ids[5] and nearest.item_weight == 0.0 and nearest.weight == 0.0
    memory.set_prune_counts({ids[1]: 3, ids[2]: 1})
    assert [i.prune_count for i in memory.items([ids[1], ids[2], ids[3]])] == [3, 1, 0]
    memory.set_prune_counts({ids[2]: 2})  # replaces every count
    assert [i.prune_count for i in memory.items([ids[1], ids[2]])] == [0, 2]
    memory.update_settings(pruning=memory.pruning.__class__(mode="hard", threshold=2))
    assert ids[2] not in [h.id for h in memory.search(vectors[2], k=5)[0]]
    memory.close()
    with Memory.open(location) as again:
        assert again.get(ids[5]).weight == 0.0 and again.pruning.mode == "hard"


def test_a_prune_is_saved_as_one_change(location):
    """Counts, removals and setting of a prune, given at once: all of them apply (in the
    directory home in one transaction: tests/test_crash_safety.py kills it midway)."""
    from vismem.prune import PruneSettings

    memory, vectors, ids = filled(location)
    removed = memory.apply_pruning({ids[1]: 3, ids[2]: 1, ids[3]: 4}, PruneSettings(mode="hard", threshold=2),
                                   remove=[ids[3], 2**40])
    assert removed == [ids[3]] and len(memory) == 59 and memory.pruning.mode == "hard"
    assert [i.prune_count for i in memory.items([ids[1], ids[2]])] == [3, 1]
    assert ids[1] not in [h.id for h in memory.search(vectors[1], k=5)[0]]
    memory.close()
    with Memory.open(location) as again:
        assert (again.pruning.threshold, len(again)) == (2, 59)
        assert again.get(ids[1]).prune_count == 3


def test_reads_return_what_was_written(location):
    memory, vectors, ids = filled(location)
    picked = [ids[9], ids[2], ids[40]]
    assert [i.id for i in memory.items(picked)] == picked  # in the order given
    item = memory.get(ids[9])
    assert (item.label, item.source, item.meta, item.path, item.content_hash) == \
        ("c0", "s1", {"n": 1, "flag": True, "tag": "x"}, None, vector_hashes(unit_rows(vectors[9:10], 16))[0])
    found, got = memory.vectors(picked)
    assert found.tolist() == sorted(picked)
    order = {i: k for k, i in enumerate(ids)}
    assert np.allclose(got, vectors[[order[i] for i in found]], atol=1e-6)
    everything, all_vectors = memory.vectors()
    assert everything.tolist() == sorted(ids) and all_vectors.shape == (60, 16)
    assert memory.class_counts() == {"c0": 20, "c1": 20, "c2": 20}
    store = memory.store
    chunks = list(store.vector_chunks(size=25))
    assert [len(c[0]) for c in chunks] == [25, 25, 10]
    assert np.concatenate([c[0] for c in chunks]).tolist() == sorted(ids)
    cols = store.columns(Filter.of(labels=["c2"]))
    assert cols[0].tolist() == sorted(ids[i] for i in range(60) if i % 3 == 2) and set(cols[1]) == {"c2"}
    assert store.prune_counts(np.asarray([ids[0], 5], dtype=np.int64)).tolist() == [0, 0]


def test_duplicates_are_refused_by_the_store(location):
    memory = Memory.create(location, encoder=None, dim=4)
    store = memory.store
    v = unit_vectors(4, 4)
    item = lambda k, digest: NewItem(vector=v[k], label="a", source="s", content_hash=digest)  # noqa: E731
    first = store.insert([item(0, "h1"), item(1, "h2"), item(2, "h1")])
    assert len(first.ids) == 2 and first.duplicates == [(2, first.ids[0])]
    again = store.insert([item(3, "h2"), item(0, "h3")])
    assert again.duplicates == [(0, first.ids[1])] and len(again.ids) == 1
    copy = store.insert([item(3, "h2")], allow_duplicates=True)
    assert len(copy.ids) == 1 and store.known_hashes(["h2", "h9"]) == {"h2": min(first.ids[1], copy.ids[0])}
    with store.hash_lookup() as lookup, ThreadPoolExecutor(2) as pool:  # the same answers, from other threads
        answers = list(pool.map(lookup, [["h1", "h9"], ["h2"], ["h3"]]))
    assert answers == [{"h1": first.ids[0]}, {"h2": min(first.ids[1], copy.ids[0])}, {"h3": again.ids[0]}]
    store.delete(first.ids + again.ids + copy.ids)
    assert store.known_hashes(["h1", "h2", "h3"]) == {} and len(store) == 0
    assert len(store.insert([item(0, "h1")]).ids) == 1  # gone content can come back
    memory.close()  # before the fixture drops its collection


def test_images_keep_thumbnails_and_are_recognised_by_content(location, tmp_path):
    Image.fromarray(data.coffee()).save(tmp_path / "cup.png")
    Image.fromarray(data.chelsea()).save(tmp_path / "cat.jpg")
    memory = Memory.create(location, encoder="pixels")
    report = memory.add_images([tmp_path / "cup.png", tmp_path / "cat.jpg"], label="thing", source="photos")
    assert len(report.added) == 2 and not report.skipped
    jpeg = memory.thumbnail(report.added[0])
    assert jpeg[:2] == b"\xff\xd8" and Image.open(__import__("io").BytesIO(jpeg)).size[0] <= 128
    again = memory.add_images([tmp_path / "cup.png"], label="thing")
    assert not again.added and again.skipped[0].reason == f"duplicate of item {report.added[0]}"
    memory.remove(report.added[:1])
    with pytest.raises(ItemNotFoundError):  # gone, not an item without a thumbnail (None)
        memory.thumbnail(report.added[0])
    assert len(memory.add_images([tmp_path / "cup.png"], label="cup").added) == 1
    decision = memory.classify([tmp_path / "cat.jpg"], k=1)[0]
    assert decision.neighbors[0].id == report.added[1] and decision.neighbors[0].distance == pytest.approx(0, abs=1e-5)
    memory.close()


def test_a_second_handle_sees_the_first_ones_edits(location):
    memory, vectors, ids = filled(location)
    other = Memory.open(location)
    memory.remove(ids[:3])
    memory.relabel([ids[3]], "moved")
    # Items and neighbours are read at once (Strong); settings after refresh.
    assert not set(ids[:3]) & {h.id for h in other.search(vectors[0], k=10)[0]}
    assert other.search(vectors[3], k=1)[0][0].label == "moved"
    memory.update_settings(prototypes_per_class=2)
    assert _eventually(lambda: (other.refresh(), other.settings.prototypes_per_class == 2)[1])
    assert len(other) == 57
    other.close()
    memory.close()


def test_creating_twice_or_opening_nothing_is_refused(location):
    Memory.create(location, encoder=None, dim=4).close()
    with pytest.raises(MemoryExistsError):
        Memory.create(location, encoder=None, dim=4)
    with pytest.raises(MemoryNotFoundError):
        Memory.open(location + "_absent")
    with Memory.open(location) as memory, pytest.raises(InvalidInputError, match="dimension 4"):
        memory.add_vectors(unit_vectors(1, 5), ["a"])



def test_a_recorded_encoder_identity_is_the_one_the_memory_opens_with(location):
    """How a memory made by an older vismem keeps the id this one gives its encoder (the
    digest of a weights file it named by its path), in one write, settings and items untouched."""
    memory, vectors, ids = filled(location, n=6, dim=4)
    memory.update_settings(prototypes_per_class=2)
    newer = replace(memory.store.identity, name="pixels", id="pixels:newer:0", config={"id": "pixels:newer:0"})
    memory.store.record_encoder(newer)
    assert memory.store.identity == newer
    memory.close()
    with Memory.open(location) as again:
        assert again.store.identity == newer and again.settings.prototypes_per_class == 2
        assert [h.id for h in again.search(vectors[2], k=1)[0]] == [ids[2]]


def test_metadata_filters_find_every_value_a_store_accepts(location):
    """What a filter cannot find is refused when stored: SQLite read integers past 64 bits
    as rounded floats (2**64 + 1 matched a filter for 2**64, and nothing matched its own
    value) and text only up to a NUL, so such items were stored but never found."""
    memory = Memory.create(location, encoder=None, dim=4)
    edges = [2**63 - 1, -(2**63 - 1), "", "ünï ✓", 0.1]
    ids = memory.add_vectors(unit_vectors(len(edges), 4), ["a"] * len(edges), metas=[{"v": v} for v in edges])
    assert [memory.ids(where={"v": v}) for v in edges] == [[i] for i in ids]
    for bad, why in ((2**64, "cannot be stored: .*64-bit"), (-(2**63), "cannot be stored: .*64-bit"),
                     ([1, {"n": 2**70}], "cannot be stored: .*64-bit"),
                     ("a\x00b", "holds the control character '.x00'"), ({"k\x00": 1}, "holds the control")):
        with pytest.raises(InvalidInputError, match=f"metadata v=.* {why}"):
            memory.add_vectors(unit_vectors(1, 4), ["a"], metas=[{"v": bad}])
    assert len(memory) == len(edges)  # nothing half-added
    # a filter for such a number (Milvus failed to parse -2**63) looks for its text, as --where does
    big = memory.add_vectors(unit_vectors(1, 4, seed=1), ["a"], metas=[{"v": str(-(2**63))}])
    assert memory.ids(where={"v": -(2**63)}) == big and memory.ids(where={"v": 2**64}) == []
    memory.close()

def _eventually(check, seconds: float = 15.0) -> bool:
    """Milvus's Bounded reads lag by up to its graceful time (5 s by default)."""
    import time

    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if check():
            return True
        time.sleep(0.2)
    return check()


def test_a_null_filter_matches_a_key_holding_null_and_not_a_missing_key(location):
    """`--where KEY=null`: the items whose metadata holds KEY with the value null; an item
    without KEY, or with KEY holding anything else (an empty list or object included), is
    not one of them, in every home."""
    memory = Memory.create(location, encoder=None, dim=8)
    metas = [{"k": None}, {}, {"k": 0}, {"k": False}, {"k": ""}, {"k": []}, {"k": {}}, {"k": {"a": None}},
             {"k": [None]}, {"j": None}, {"k": None, "n": 1}, {"k": "x"}, {"k": 1.5}]
    vectors = unit_vectors(len(metas), 8, seed=4)
    ids = memory.add_vectors(vectors, ["a", "b"] * 6 + ["a"], metas=metas)
    nulls = [ids[0], ids[10]]
    assert memory.ids(where={"k": None}) == sorted(nulls)
    assert memory.ids(where={"k": None, "n": 1}) == [ids[10]] and memory.ids(where={"j": None}) == [ids[9]]
    assert memory.ids(where={"k": None}, labels=["b"]) == []  # both nulls are "a"
    assert memory.ids(where={"absent": None}) == []
    hits = memory.search(vectors[5], k=5, where={"k": None})[0]
    assert sorted(h.id for h in hits) == sorted(nulls)
    assert [i.id for i in memory.page(offset=0, limit=10, where={"k": None}).items] == nulls  # oldest first
    assert sorted(memory.remove(where={"k": None})) == sorted(nulls) and len(memory) == len(metas) - 2
    memory.close()


def test_vectors_added_again_are_recognised_by_their_rows(location):
    """Re-running an interrupted `add-vectors` added every committed row again: each
    vector item keeps the hash of its row as stored, and every home recognises it."""
    memory = Memory.create(location, encoder=None, dim=8)
    vectors = unit_vectors(6, 8, seed=2)
    ids = memory.add_vectors(vectors[:4], ["a"] * 4)
    again = memory.add_vectors(vectors * 2, ["a"] * 6, allow_duplicates=False)  # the same rows, once unit length
    assert again.duplicates == [(k, ids[k]) for k in range(4)] and len(again.ids) == 2
    assert len(memory) == 6 and sorted(memory.ids()) == sorted(ids + again.ids)
    memory.close()  # before the fixture drops its collection


def test_metadata_keys_may_be_letters_of_any_script(location):
    """`für` was refused as "letters, digits and _" (the check also asked for ASCII: the
    embedded home stored the key escaped, "f\\u00fcr", which SQLite's path `$.für` does
    not find). Both homes store such keys and filter on them."""
    memory = Memory.create(location, encoder=None, dim=8)
    vectors = unit_vectors(6, 8, seed=5)
    metas = [{"für": "Köln" if i % 2 else "Bonn", "日本": i % 3, "année_2": True} for i in range(6)]
    ids = memory.add_vectors(vectors, ["a", "b"] * 3, metas=metas)
    assert sorted(memory.ids(where={"für": "Köln"})) == sorted([ids[1], ids[3], ids[5]])
    assert sorted(memory.ids(where={"日本": 0, "année_2": True})) == sorted([ids[0], ids[3]])
    hits = memory.search(vectors[0], k=3, where={"für": "Bonn"})[0]
    assert sorted(h.id for h in hits) == sorted([ids[0], ids[2], ids[4]])  # Milvus ids are not in order
    assert memory.get(ids[1]).meta == metas[1]
    with pytest.raises(InvalidInputError, match="letters, digits and _"):
        memory.add_vectors(vectors[:1] * -1, ["a"], metas=[{"a.b": 1}])  # a dot would be a JSON path step
    memory.close()


def test_a_reindex_tells_its_progress_and_searches_as_before(location):
    """Switching the index reports every item done (the Milvus server builds it on its
    side: its progress is polled), and exact search answers as before."""
    memory, vectors, ids = filled(location)
    before = [h.id for h in memory.search(vectors[7], k=10)[0]]
    told: list[int] = []
    memory.set_index("hnsw", progress=told.append)
    assert told and all(n > 0 for n in told) and sum(told) == len(memory) == 60
    assert memory.info()["index"]["type"].lower() == "hnsw"
    assert [h.id for h in memory.search(vectors[7], k=10)[0]][:3] == before[:3]
    memory.close()

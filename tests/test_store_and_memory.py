"""The memory on real stores on disk: adding, searching, removing, relabelling, reopening."""

import sqlite3

import numpy as np
import pytest
from conftest import unit_vectors

from vismem import Memory
from vismem.decide import VoteParams
from vismem.errors import (
    EmptyMemoryError,
    EncoderError,
    InvalidInputError,
    MemoryClosedError,
    MemoryExistsError,
    MemoryNotFoundError,
    VismemError,
)
from vismem.store import DB_NAME


def make(memdir, n=60, dim=16, seed=0):
    memory = Memory.create(memdir, encoder=None, dim=dim)
    vectors = unit_vectors(n, dim, seed)
    labels = [f"c{i % 3}" for i in range(n)]
    ids = memory.add_vectors(vectors, labels, sources=[f"s{i % 2}" for i in range(n)])
    return memory, vectors, ids


def test_search_is_exact_and_survives_reopen(memdir):
    memory, vectors, ids = make(memdir)
    hits = memory.search(vectors[:5], k=3)
    assert [row[0].id for row in hits] == ids[:5]
    assert all(row[0].distance == pytest.approx(0, abs=1e-5) for row in hits)
    brute = np.argsort(-(vectors @ vectors[7]))[:10]
    assert [h.id for h in memory.search(vectors[7], k=10)[0]] == [ids[i] for i in brute]
    memory.close()
    with Memory.open(memdir) as again:
        assert len(again) == 60
        assert [h.id for h in again.search(vectors[7], k=10)[0]] == [ids[i] for i in brute]


def test_removed_items_are_never_returned_and_ids_never_reused(memdir):
    memory, vectors, ids = make(memdir)
    removed = memory.remove(ids[:10])
    assert removed == ids[:10]
    everything = memory.search(vectors, k=100)
    assert all(len(row) == 50 for row in everything)
    assert not set(removed) & {h.id for row in everything for h in row}
    assert memory.remove(label="c1") and "c1" not in memory.class_counts()
    new = memory.add_vectors(vectors[:1], ["fresh"])
    assert new[0] > max(ids)
    memory.close()
    with Memory.open(memdir) as again:
        assert not set(removed) & {h.id for h in again.search(vectors[0], k=100)[0]}


def test_remove_needs_exactly_one_selector(memdir):
    memory, _, _ = make(memdir)
    with pytest.raises(InvalidInputError):
        memory.remove()
    with pytest.raises(InvalidInputError):
        memory.remove([1], label="c0")


def test_removed_vector_bytes_are_purged_from_every_file(memdir):
    memory, vectors, ids = make(memdir, n=30, dim=32)

    def files_hold(row: int) -> bool:
        secret = np.ascontiguousarray(vectors[row]).tobytes()
        return any(secret in p.read_bytes() for p in memdir.rglob("*") if p.is_file())

    assert files_hold(4) and files_hold(5) and files_hold(6)  # the check can fail
    memory.remove([ids[4]])
    memory.purge()
    assert not files_hold(4)
    memory.remove([ids[5]], purge=True)
    assert not files_hold(5)
    memory.remove([ids[6]])
    memory.close()
    assert not files_hold(6) and files_hold(7)


def test_filtered_search_returns_k_matching_items(memdir):
    memory, vectors, _ = make(memdir)
    rows = memory.search(vectors[:4], k=7, labels=["c2"], sources=["s0"])
    for row in rows:
        assert len(row) == 7
        assert {(h.label, h.source) for h in row} == {("c2", "s0")}


def test_relabel_and_weights_change_the_vote_without_reencoding(memdir):
    memory, vectors, ids = make(memdir)
    query = vectors[0]
    before = memory.classify_vectors(query, k=1)[0]
    assert before.label == "c0" and before.neighbors[0].id == ids[0]
    memory.relabel([ids[0]], "renamed")
    assert memory.classify_vectors(query, k=1)[0].label == "renamed"
    memory.set_weight([ids[0]], 0.0)
    blocked = memory.classify_vectors(query, k=3)[0]
    assert blocked.neighbors[0].weight == 0.0 and blocked.label != "renamed"
    memory.close()
    with Memory.open(memdir) as again:
        assert again.get(ids[0]).label == "renamed" and again.get(ids[0]).weight == 0.0


def test_second_handle_sees_edits_from_another_connection(memdir):
    memory, vectors, ids = make(memdir)
    other = Memory.open(memdir)
    memory.remove([ids[0]])
    assert ids[0] not in {h.id for h in other.search(vectors[0], k=5)[0]}
    other.add_vectors(vectors[:1], ["late"])
    assert "late" in memory.class_counts()
    memory.relabel(ids[1:7], "renamed")  # items of all three labels, replayed by the other handle
    memory.set_weight(ids[1:3], 2.0)
    nearest = [d.neighbors[0] for d in other.classify_vectors(vectors[1:7], k=1)]
    assert [n.id for n in nearest] == ids[1:7]
    assert [n.label for n in nearest] == ["renamed"] * 6
    assert [n.relabelled_from for n in nearest] == [f"c{i % 3}" for i in range(1, 7)]
    assert [n.item_weight for n in nearest] == [2.0, 2.0, 1.0, 1.0, 1.0, 1.0]


@pytest.mark.parametrize("auto_refresh", [True, False])
def test_a_settings_change_keeps_what_another_handle_changed_meanwhile(memdir, auto_refresh):
    """Each handle changes the settings it names, over the settings as committed when it
    writes: one that has not caught up (or does not catch up by itself, a server's) once
    wrote every setting back as it last read them, undoing the other's change."""
    first, _, _ = make(memdir)
    first.auto_refresh = auto_refresh
    with Memory.open(memdir) as second:
        second.update_settings(vote=VoteParams(k=3))
        second.set_index("hnsw")
    first.update_settings(prototypes_per_class=2)
    first.record_queries(50)
    for handle in (first, Memory.open(memdir)):
        handle.refresh()
        settings = handle.settings
        assert (settings.vote.k, settings.index, settings.prototypes_per_class, settings.record_queries) \
            == (3, "hnsw", 2, 50)
        handle.close()


def test_without_auto_refresh_a_handle_reloads_only_when_told(memdir):
    memory, vectors, ids = make(memdir)
    pinned = Memory.open(memdir)
    pinned.auto_refresh = False
    memory.remove([ids[0]])
    assert pinned.is_stale() and ids[0] in {h.id for h in pinned.search(vectors[0], k=1)[0]}
    pinned.refresh()
    assert not pinned.is_stale() and ids[0] not in {h.id for h in pinned.search(vectors[0], k=5)[0]}
    pinned.close()


def test_bad_inputs_give_clear_errors(memdir, tmp_path):
    with pytest.raises(MemoryNotFoundError, match="vismem create"):
        Memory.open(tmp_path / "nowhere")
    memory = Memory.create(memdir, encoder=None, dim=8)
    with pytest.raises(EmptyMemoryError):
        memory.classify_vectors(unit_vectors(1, 8))
    with pytest.raises(InvalidInputError, match="dimension 8"):
        memory.add_vectors(unit_vectors(2, 9), ["a", "b"])
    with pytest.raises(InvalidInputError, match="strings"):
        memory.add_vectors(unit_vectors(2, 8), ["a", 3])
    with pytest.raises(InvalidInputError, match="2 vectors but 1 labels"):
        memory.add_vectors(unit_vectors(2, 8), ["a"])
    with pytest.raises(InvalidInputError, match="finite"):
        memory.add_vectors(np.full((1, 8), np.nan), ["a"])
    with pytest.raises(EncoderError, match="no encoder"):
        memory.add_images([tmp_path])
    assert len(memory) == 0  # nothing half-added
    memory.add_vectors(unit_vectors(1, 8), ["a"], metas=[{"tag": 1}])
    # Metadata is JSON that every filter reads back: NaN (which SQLite's JSON rejects, so
    # that every later filter failed) and values JSON cannot hold are refused up front.
    with pytest.raises(InvalidInputError, match="metadata v=nan cannot be stored"):
        memory.add_vectors(unit_vectors(1, 8), ["a"], metas=[{"v": float("nan")}])
    with pytest.raises(InvalidInputError, match="metadata v=.* cannot be stored"):
        memory.add_vectors(unit_vectors(1, 8), ["a"], metas=[{"v": np.float32(1)}])
    with pytest.raises(InvalidInputError, match="sources must be strings"):
        memory.add_vectors(unit_vectors(1, 8), ["a"], sources=[None])
    assert len(memory) == 1 and memory.ids(where={"tag": 1}) == [1]
    with pytest.raises(MemoryExistsError):
        Memory.create(memdir, encoder=None, dim=8)
    with pytest.raises(EncoderError, match="unknown encoder"):
        Memory.create(tmp_path / "m2", encoder="no-such-net")
    assert not (tmp_path / "m2").exists()


def test_memory_from_a_newer_vismem_is_refused(memdir):
    Memory.create(memdir, encoder=None, dim=4).close()
    db = sqlite3.connect(memdir / DB_NAME)
    db.execute("UPDATE config SET value = '99' WHERE key = 'format_version'")
    db.commit()
    db.close()
    with pytest.raises(VismemError, match="newer"):
        Memory.open(memdir)


def test_memory_refuses_an_encoder_whose_weights_changed(memdir, tmp_path, digit_folders):
    Memory.create(memdir, encoder="pixels").close()
    db = sqlite3.connect(memdir / DB_NAME)
    db.execute("""UPDATE config SET value = json_set(value, '$.id', 'pixels:other-weights:0') WHERE key = 'encoder'""")
    db.commit()
    db.close()
    with Memory.open(memdir) as memory, pytest.raises(EncoderError, match="not be comparable"):
        memory.add_images([digit_folders[0]])


def test_duplicate_detection_follows_removals(memdir, tmp_path):
    from PIL import Image
    from skimage import data

    Image.fromarray(data.coffee()).save(tmp_path / "cup.png")
    memory = Memory.create(memdir, encoder="pixels")
    first = memory.add_images([tmp_path / "cup.png"], label="cup")
    again = memory.add_images([tmp_path / "cup.png"], label="cup")
    assert len(first.added) == 1 and again.duplicates and not again.added
    copy = memory.add_images([tmp_path / "cup.png"], label="cup", allow_duplicates=True)
    assert len(copy.added) == 1
    memory.remove(first.added)  # the copy still holds the content: still a duplicate
    assert memory.add_images([tmp_path / "cup.png"], label="cup").duplicates
    memory.remove(copy.added)  # now nothing does: the image can be added again
    assert len(memory.add_images([tmp_path / "cup.png"], label="cup").added) == 1


def test_labels_given_as_a_numpy_array_come_back_as_plain_text(memdir):
    """Labels from a numpy array (as scikit-learn's y is) came back as numpy.str_ in every
    decision, hit and score key until the memory was reopened."""
    vectors = unit_vectors(20, 8)
    with Memory.create(memdir, encoder=None, dim=8) as memory:
        ids = memory.add_vectors(vectors, np.array(["a", "b"] * 10), sources=np.array(["s"] * 20))
        memory.relabel(ids[:1], np.str_("c"))
        decision = memory.classify_vectors(vectors[:1], k=3)[0]
        texts = [decision.label, *decision.scores, *(n.label for n in decision.neighbors),
                 *(n.source for n in decision.neighbors), *(h.label for h in memory.search(vectors[1], 3)[0]),
                 *(i.label for i in memory.items(ids[:2]))]
        assert {type(t) for t in texts} == {str}, texts


def test_a_setting_of_the_wrong_kind_is_refused_and_the_memory_still_opens(tmp_path):
    """`update_settings(vote={"k": 0})` was saved as given: every later open, `vismem info`
    included, then failed on it. A part given as a mapping now changes only the values it
    names, checked; a part of the wrong kind, an unknown name or a negative pruning count
    is refused; and nothing is saved."""
    rng = np.random.default_rng(8)
    vectors = rng.standard_normal((40, 8)).astype(np.float32)
    path = tmp_path / "m"
    with Memory.create(path, encoder=None, dim=8) as memory:
        memory.add_vectors(vectors, ["a" if i < 20 else "b" for i in range(40)])
        for bad, says in [(dict(vote={"k": 0}), "k must be an integer"),
                          (dict(vote="rank"), "setting vote must be a VoteParams"),
                          (dict(float16="yes"), "float16 must be true or false"),
                          (dict(pruning={"mode": "sometimes"}), "unknown pruning mode"),
                          (dict(votes={"k": 5}), "unknown setting 'votes'; the settings are index, "),
                          (dict(vote={"kk": 5}), "unknown vote setting 'kk'; vote has k, vote, alpha")]:
            with pytest.raises(InvalidInputError, match=says):
                memory.update_settings(**bad)
        for counts in ({1: -5}, {1: "3"}, {1: True}):  # -5 would make soft pruning's factor negative
            with pytest.raises(InvalidInputError, match="pruning counts are whole numbers >= 0"):
                memory.set_prune_counts(counts)
        assert memory.update_settings(vote={"k": 5}).vote == VoteParams(k=5)
        assert memory.update_settings(transform="center").transform.kind == "center"
    with Memory.open(path) as memory:
        assert memory.settings.vote.k == 5 and memory.settings.transform.kind == "center"
        assert memory.classify_vectors(vectors[25])[0].label == "b"


def test_a_closed_memory_says_it_is_closed(memdir):
    """Every use raised sqlite3.ProgrammingError ("Cannot operate on a closed database"),
    which `except VismemError` misses and which names no memory."""
    memory = Memory.create(memdir, encoder=None, dim=8)
    memory.add_vectors(unit_vectors(10, 8), ["a"] * 5 + ["b"] * 5)
    memory.close()
    memory.close()  # again: nothing to do
    uses = [lambda: len(memory), lambda: memory.search(unit_vectors(1, 8)), lambda: memory.classify_vectors(
        unit_vectors(1, 8)), lambda: memory.add_vectors(unit_vectors(1, 8), ["c"]), lambda: memory.remove([1])]
    for use in uses:
        with pytest.raises(MemoryClosedError, match=f"memory at {memdir} is closed: open it again with Memory.open"):
            use()
    assert memory.path == memdir and memory.dim == 8 and memory.encoder_name is None  # what it is stays
    import copy
    import pickle

    # Python's own questions (copy, pickle) get vismem's answer, not an error from the closed store
    for copied in (copy.copy, copy.deepcopy, pickle.dumps):
        with pytest.raises(TypeError, match=f"memory at {memdir} is closed\\): send its location"):
            copied(memory)
    assert not hasattr(memory.store, "_anything")
    with Memory.open(memdir) as again:
        assert len(again) == 10


def test_a_weight_that_is_not_a_finite_number_is_refused_and_changes_nothing(memdir):
    """What `vismem boost --factor nan` is refused for (exit 2), the Python API refuses too."""
    memory, _, ids = make(memdir, n=6)
    for weight in (float("nan"), float("inf"), float("-inf"), np.float32("nan")):
        with pytest.raises(InvalidInputError, match=r"a finite number from 0 to 1,000,000, got -?(nan|inf)"):
            memory.set_weight(ids[:2], weight)
        with pytest.raises(InvalidInputError, match="weight must be a finite number"):
            memory.update(ids[:2], label="c9", weight=weight)
    assert [item.weight for item in memory.items(ids)] == [1.0] * 6
    assert memory.class_counts() == {"c0": 2, "c1": 2, "c2": 2}


def test_a_dimension_past_any_embedding_s_is_refused(tmp_path):
    """dim=100_000_000 made a memory whose every vector would take 400 MB."""
    for dim in (0, -3, 65_537, 100_000_000, 2.0, True):
        with pytest.raises(InvalidInputError, match=r"dim must be a whole number from 1 to 65,536"):
            Memory.create(tmp_path / "m", encoder=None, dim=dim)
        assert not (tmp_path / "m").exists()
    with Memory.create(tmp_path / "m", encoder=None, dim=65_536) as memory:
        assert memory.dim == 65_536


def test_float16_is_refused_for_an_index_that_does_not_use_it(tmp_path):
    """float16 (HNSW's vector storage) was saved for exact and ivfpq, where it does nothing."""
    for index in ("exact", "ivfpq"):
        with pytest.raises(InvalidInputError, match=f"float16 applies to the hnsw index only.*not {index}"):
            Memory.create(tmp_path / "m", encoder=None, dim=8, index=index, float16=True)
        assert not (tmp_path / "m").exists()
    with Memory.create(tmp_path / "m", encoder=None, dim=8, index="exact") as memory:
        memory.add_vectors(unit_vectors(3, 8), ["a", "b", "c"])
        for change in (lambda: memory.set_index("ivfpq", float16=True), lambda: memory.set_index("exact", float16=True),
                       lambda: memory.update_settings(float16=True)):
            with pytest.raises(InvalidInputError, match="float16 applies to the hnsw index only"):
                change()
            assert (memory.settings.index, memory.settings.float16) == ("exact", False)
    # auto keeps it for when it picks HNSW; hnsw uses it; leaving HNSW keeps it for a return
    with Memory.create(tmp_path / "auto", encoder=None, dim=8, float16=True) as memory:
        assert (memory.settings.index, memory.settings.float16) == ("auto", True)
        memory.add_vectors(unit_vectors(3, 8), ["a", "b", "c"])
        memory.set_index("hnsw")
        assert memory.store.describe()["index"]["params"]["float16"] is True
        memory.set_index("exact")
        assert (memory.settings.index, memory.settings.float16) == ("exact", True)
    with Memory.open(tmp_path / "auto") as memory:
        assert len(memory) == 3

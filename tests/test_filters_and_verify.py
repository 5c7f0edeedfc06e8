"""Metadata filters from the CLI, and `remove --verify`: the removed bytes, searched for in every file."""

from conftest import json_lines

from vismem import Memory
from vismem.remnants import find_remnants, fingerprints, unshared


def test_cli_meta_where_search_classify_and_verified_removal(tmp_path, digit_folders, cli):
    train, test = digit_folders
    memdir = tmp_path / "mem"
    cli("create", memdir, "--encoder", "pixels", check=True)
    first = json_lines(cli("add", memdir, train, "--meta", "batch=1", "--json", check=True))[-1]
    second = json_lines(cli("add", memdir, test, "--meta", "batch=2", "--meta", "camera=nikon",
                            "--json", check=True))[-1]
    batch1, batch2 = set(first["ids"]), set(second["ids"])
    query = sorted(test.rglob("*.png"))[0]

    found = json_lines(cli("search", memdir, query, "-k", "5", "--where", "batch=2",
                           "--where", "camera=nikon", "--json", check=True))
    assert [row["path"] for row in found] == [str(query)]
    assert len(found[0]["neighbors"]) == 5 and {h["id"] for h in found[0]["neighbors"]} <= batch2
    assert found[0]["neighbors"][0]["distance"] < 1e-5  # the query itself is in batch 2

    decided = json_lines(cli("classify", memdir, query, "-k", "7", "--where", "batch=1", "--json",
                             check=True))[0]
    assert len(decided["neighbors"]) == 7 and {n["id"] for n in decided["neighbors"]} <= batch1

    bad = cli("search", memdir, query, "--where", "batch")
    assert bad.returncode == 2 and "'--where': takes KEY=VALUE" in bad.stderr and bad.stdout == ""  # bad usage

    removed = json_lines(cli("remove", memdir, "--where", "camera=nikon", "--verify", "--json", check=True))[0]
    assert set(removed["ids"]) == batch2 and removed["items"] == len(batch1)
    verified = removed["verified"]
    # a float32 vector, its float16 copy and a thumbnail for each removed image
    assert verified["clean"] and verified["remnants"] == []
    assert verified["fingerprints"] == 3 * len(batch2) and verified["files"] >= 1
    assert cli("search", memdir, query, "--where", "batch=2", "--json", check=True).stdout.count('"id"') == 0
    # without --json the check is said too (it was said only for a Milvus home, which refuses --verify)
    said = cli("remove", memdir, "--where", "batch=1", "--verify", check=True).stdout
    assert f"removed {len(batch1)} items; memory now holds 0" in said
    assert f"verified: none of {3 * len(batch1)} fingerprints of the removed items is in the" in said


def test_fingerprints_are_found_until_purged(tmp_path, digit_folders):
    train, _ = digit_folders
    with Memory.create(tmp_path / "mem", encoder="pixels", index="hnsw") as memory:
        added = memory.add_images([train]).added
        # the same image again: the copy keeps that vector and thumbnail, so they are not remnants
        copy = memory.add_images([sorted(train.rglob("*.png"))[0]], label="copy", allow_duplicates=True).added
        digest = memory.items(copy)[0].content_hash
        original = [memory.known_content([digest])[digest]]
        assert original[0] not in copy and unshared(fingerprints(memory, original), memory) == []
        gone = [i for i in added if i not in original][:5]
        prints = fingerprints(memory, gone)
        remnants, files, scanned = find_remnants(memory.path, prints)
        assert {r.item_id for r in remnants} == set(gone)  # before removal: the check can fail
        assert {r.kind for r in remnants} >= {"vector", "thumbnail"} and files >= 2 and scanned > 0
        memory.remove(gone, purge=True)
        assert find_remnants(memory.path, prints)[0] == []


def test_fingerprints_are_taken_in_batches_under_a_report(tmp_path, digit_folders, monkeypatch):
    """Taking fingerprints reads the store a batch at a time (2-3 s per 100k items: a large
    removal showed nothing meanwhile), with the same prints as in one go, and shows it."""
    import vismem.remnants as remnants
    from conftest import Shown

    train, _ = digit_folders
    with Memory.create(tmp_path / "mem", encoder="pixels", index="hnsw") as memory:
        ids = memory.add_images([train]).added[:8]
        whole = fingerprints(memory, ids)
        monkeypatch.setattr(remnants, "PRINT_BATCH", 3)
        shown = Shown()
        assert fingerprints(memory, ids, report=shown) == whole
    assert shown.done() == [("verifying: taking the removed items' fingerprints", 8, 8)]
    assert {p.item_id for p in whole} == set(ids) and {p.kind for p in whole} >= {"vector", "thumbnail"}


def test_verify_fails_when_a_copy_in_memdir_keeps_the_bytes(tmp_path, digit_folders, cli):
    train, _ = digit_folders
    memdir = tmp_path / "mem"
    cli("create", memdir, "--encoder", "pixels", check=True)
    cli("add", memdir, train / "3", "--label", "3", "--json", check=True)
    (memdir / "backup.sqlite").write_bytes((memdir / "memory.sqlite").read_bytes())
    result = cli("remove", memdir, "--label", "3", "--verify", "--json")
    assert result.returncode == 3  # the removal is committed: partial success, not "nothing changed"
    assert "warning: removed, but 16 remnants of removed items found" in result.stderr  # vectors, thumbnails
    assert "backup.sqlite" in result.stderr
    assert "error:" not in result.stderr  # error: means exit 1, nothing changed
    report = json_lines(result)[0]
    assert report["removed"] == 8 and not report["verified"]["clean"]
    assert {r["file"] for r in report["verified"]["remnants"]} == {"backup.sqlite"}


def test_the_scan_finds_every_fingerprint_at_every_offset_and_across_chunks(tmp_path, monkeypatch):
    """The scan reads aligned words only, a fingerprint's 8 anchors covering the 8 offsets
    a word can start at within it; chunks of 64 bytes put edges through most of them."""
    import numpy as np
    from conftest import Shown

    from vismem import remnants
    from vismem.remnants import Fingerprint

    monkeypatch.setattr(remnants, "CHUNK", 64)
    rng = np.random.default_rng(0)
    data = bytearray(rng.integers(0, 256, 8000, dtype=np.uint8).tobytes())
    vectors = [Fingerprint(i, "vector", rng.standard_normal(8).astype(np.float32).tobytes()) for i in range(16)]
    tiny = Fingerprint(100, "vector", b"\x01\x02\x03\x04\x05\x06\x07\x08\x09")  # no room for 8 anchors
    flat = Fingerprint(101, "vector", bytes(24))  # zeros: no window varied enough to anchor on
    absent = Fingerprint(102, "vector", rng.standard_normal(8).astype(np.float32).tobytes())
    expected = set()
    for i, p in enumerate([*vectors, tiny]):
        offset = 61 + 470 * i + i % 8  # every offset modulo 8, and most across a chunk's edge
        data[offset : offset + len(p.data)] = p.data
        expected.add((p.item_id, offset))
    data[7000:7024] = bytes(24)
    expected.add((flat.item_id, 7000))
    (tmp_path / "store.bin").write_bytes(bytes(data))
    (tmp_path / "index").mkdir()
    (tmp_path / "index" / "empty").write_bytes(b"")
    (tmp_path / "index" / "short").write_bytes(b"\x01\x02\x03")
    shown = Shown()
    found, files, scanned = find_remnants(tmp_path, [*vectors, tiny, flat, absent], report=shown)
    assert {(r.item_id, r.offset) for r in found} == expected and {r.file for r in found} == {"store.bin"}
    (_, total, advanced), = shown.done()
    assert files == 3 and scanned == total == advanced == 8003


def test_float16_copies_are_looked_for_as_the_index_keeps_them(tmp_path):
    """An fp16 HNSW index (and IVF-PQ's re-ranking store) keeps FAISS's float16 encoding,
    which rounds some values unlike numpy's `astype(np.float16)`: fingerprints taken with
    numpy missed those items' copies in the index, and `--verify` called them clean."""
    import faiss
    import numpy as np
    from conftest import unit_vectors

    path = tmp_path / "m"
    with Memory.create(path, encoder=None, dim=64, index="hnsw", float16=True) as memory:
        ids = memory.add_vectors(unit_vectors(1000, 64, seed=8), ["a"] * 1000)
        found, vectors = memory.vectors(ids)
        kept = faiss.IndexScalarQuantizer(64, faiss.ScalarQuantizer.QT_fp16).sa_encode(vectors)
        differ = [i for i, v, k in zip(found.tolist(), vectors, kept, strict=True)
                  if v.astype(np.float16).tobytes() != k.tobytes()]
        assert differ  # numpy's rounding and FAISS's part in some of these vectors
        prints = [p for p in fingerprints(memory, differ) if p.kind == "vector-fp16"]
    remnants, _, _ = find_remnants(path / "index", prints)  # closed: the index is saved
    assert sorted(r.item_id for r in remnants) == sorted(differ)


def test_a_transformed_copy_in_the_index_is_looked_for_as_the_index_keeps_it(tmp_path):
    """Through a `whiten` transform the index keeps vectors computed in the batches of its
    build; computed again for a few items they differ in their last bits (BLAS sums in an
    order that depends on the batch), so the check must look for the index's own bytes."""
    from conftest import unit_vectors

    from vismem.transform import TransformSpec

    path = tmp_path / "m"
    with Memory.create(path, encoder=None, dim=64, index="hnsw") as memory:
        ids = memory.add_vectors(unit_vectors(3000, 64, seed=1) + 0.3, [f"c{i % 5}" for i in range(3000)])
        memory.set_transform(TransformSpec("whiten", components=24, shrinkage=0.1, power=0.5))
        gone = ids[:300]
        prints = fingerprints(memory, gone)
    in_index = {r.item_id for r in find_remnants(path / "index", prints)[0]}
    assert in_index == set(gone)  # every removed item's copy is found while it is there
    with Memory.open(path) as memory:
        memory.remove(gone, purge=True)
    assert find_remnants(path, prints)[0] == []


def test_verify_names_the_items_that_still_hold_a_removed_item_s_content(tmp_path, cli):
    """A removed item whose content a surviving item holds too (added again with
    `allow_duplicates`) has its fingerprints set aside, as they are no evidence of a failed
    removal; but `remove --verify` then said only "verified: none of 0 fingerprints of the
    removed items is in the 7 files", exit 0, and a user honouring a deletion request took
    the content for gone. It names the items that still hold it, in words and in --json."""
    from conftest import unit_vectors

    memdir = tmp_path / "m"
    vectors = unit_vectors(6, 16, seed=2)
    with Memory.create(memdir, encoder=None, dim=16, index="hnsw") as memory:
        ids = memory.add_vectors(vectors, ["a"] * 6)
        copies = memory.add_vectors(vectors[:2], ["b"] * 2, allow_duplicates=True)
    said = cli("remove", memdir, "--id", str(ids[0]), "--id", str(ids[2]), "--verify")
    assert said.returncode == 0, said.stderr
    assert "verified: none of 2 fingerprints of the removed items" in said.stdout  # item ids[2]'s
    assert f"item {ids[0]}'s content is still held by item {copies[0]}" in " ".join(said.stderr.split())
    report = json_lines(cli("remove", memdir, "--id", str(ids[1]), "--verify", "--json", check=True))[0]
    assert report["verified"]["fingerprints"] == 0 and report["verified"]["clean"]
    assert report["verified"]["held_by"] == [{"id": ids[1], "held_by": copies[1]}]
    alone = json_lines(cli("remove", memdir, "--id", str(ids[3]), "--verify", "--json", check=True))[0]
    assert alone["verified"]["held_by"] == [] and alone["verified"]["fingerprints"] == 2

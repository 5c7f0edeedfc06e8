"""A memory in a Milvus collection, used as a user would: the CLI, two `vismem serve`
processes over one collection, a kill -9 in the middle of `vismem add`, and moving
memories between homes with identical decisions. Against the real standalone server
(see conftest); the last test smoke-tests the client code on milvus-lite."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter

import httpx
import numpy as np
import pytest

from conftest import json_lines, start_servers, stop_server, unit_vectors
from test_crash_safety import _exported
from test_store_contract import _eventually
from vismem import Memory
from vismem.errors import InvalidInputError, MemoryNotFoundError
from vismem.store import Filter
from vismem.store.milvus_expr import MilvusLocation, filter_expression, index_plan, new_ids, tells_null_from_missing

TOKEN = "milvus-test-token"


# ---- without a server: locations, expressions, ids --------------------------------------

def test_locations_filters_and_ids_without_a_server(monkeypatch):
    monkeypatch.delenv("VISMEM_MILVUS_TOKEN", raising=False)
    where = MilvusLocation.parse("milvus://db.example:1234/pets_v2?token=u:p")
    assert (where.uri, where.collection, where.token, str(where)) == \
        ("http://db.example:1234", "pets_v2", "u:p", "milvus://db.example:1234/pets_v2")
    for bad in ("milvus://host:1/2pets", "milvus://host:1/", "milvus:///pets", "milvus://h:1/a-b"):
        with pytest.raises(Exception, match="Milvus"):
            MilvusLocation.parse(bad)
    expr = filter_expression(Filter.of(labels=['say "hi"', "b"], sources=["s"], where={"ok": True, "tags": [1, 2]},
                                       max_prune_count=2))
    assert expr == ('label in ["b", "say \\"hi\\""] and source in ["s"] and (meta["ok"] == 1 or meta["ok"] == true)'
                    ' and (meta["tags"] == "[1,2]" or meta["tags"] == [1, 2]) and prune_count < 2')
    assert filter_expression(Filter.of(labels=[])) == "id < 0" and filter_expression(None) == ""
    # KEY=null: `exists` tells null from missing on 2.3 and 2.4 only; elsewhere it is refused
    assert filter_expression(Filter.of(where={"k": None})).startswith('((exists meta["k"]) and not (')
    assert [tells_null_from_missing(v) for v in ("v2.3.5-lite", "2.4.13", "v2.5.12", "v2.6.0", "Zilliz")] == \
        [True, True, False, False, False]
    assert index_plan("ivfpq", 1280)[0]["params"]["m"] == 160 and index_plan("exact", 8)[0]["index_type"] == "FLAT"
    taken = set()
    ids = new_ids(500, lambda batch: {i for i in batch if i % 2} | (taken & set(batch)))  # odd ids "in use"
    assert len(set(ids)) == 500 and all(0 < i < 2**53 and i % 2 == 0 for i in ids)


# ---- against the server -------------------------------------------------------------------

@pytest.fixture(scope="module")
def photos(digits, tmp_path_factory):
    """24 real digit images in class subfolders, and 4 held-out queries."""
    from vismem.datasets import split_per_class, write_image_folder

    images, labels = digits
    root = tmp_path_factory.mktemp("milvus-photos")
    train, test = split_per_class(labels, [8, 1], seed=5)
    keep = [i for i in train if labels[i] in ("3", "5", "8")]
    queries = [i for i in test if labels[i] in ("3", "5", "8", "1")]
    write_image_folder(root / "train", images, labels, keep)
    for i in queries:
        images[i].save(root / f"q{i}.png")
    return root / "train", sorted(root.glob("q*.png"))


def test_a_dimension_milvus_cannot_hold_is_refused_before_connecting(cli, tmp_path):
    """Milvus holds float vectors of at most 32,768 dimensions, vismem up to 65,536: such
    a memory was refused by the server after connecting, in its own words. Port 9 has no
    server: the answer comes before any connection is tried."""
    with pytest.raises(InvalidInputError, match="Milvus holds vectors of at most 32,768 dimensions, not 32,769"):
        Memory.create("milvus://127.0.0.1:9/big", encoder=None, dim=32_769)
    made = cli("create", "milvus://127.0.0.1:9/big", "--encoder", "none", "--dim", "65536")
    assert made.returncode == 1 and "at most 32,768 dimensions, not 65,536" in made.stderr, made.stderr
    assert "connect" not in made.stderr
    with Memory.create(tmp_path / "wide", encoder=None, dim=40_000) as memory:  # a directory holds it
        memory.add_vectors(unit_vectors(1, 40_000), "a")
    cli("export", tmp_path / "wide", tmp_path / "wide.parquet", check=True)
    moved = cli("import", tmp_path / "wide.parquet", "milvus://127.0.0.1:9/big")
    assert moved.returncode == 1 and "at most 32,768 dimensions, not 40,000" in moved.stderr, moved.stderr


@pytest.mark.milvus
def test_the_cli_on_a_milvus_memory(milvus_location, photos, cli):
    train, queries = photos
    created = cli("create", milvus_location, "--encoder", "pixels", "--json", check=True)
    assert json.loads(created.stdout)["home"] == "milvus"
    added = json_lines(cli("add", milvus_location, train, "--json", check=True))
    assert added[-1]["added"] == 24 and added[-1]["items"] == 24
    decisions = json_lines(cli("classify", milvus_location, *queries, "--k", "3", "--json", check=True))
    with Memory.open(milvus_location) as memory:   # the CLI is a face of the API
        api = memory.classify(queries, k=3)
    assert [d["label"] for d in decisions] == [d.label for d in api]
    assert [[n["id"] for n in d["neighbors"]] for d in decisions] == [[n.id for n in d.neighbors] for d in api]
    nearest = decisions[0]["neighbors"][0]
    only = json_lines(cli("search", milvus_location, queries[0], "-k", "4", "--only-label", "5", "--json", check=True))
    assert {h["label"] for h in only[0]["neighbors"]} == {"5"} and len(only[0]["neighbors"]) == 4

    refused = cli("remove", milvus_location, "--id", str(nearest["id"]), "--verify")
    assert refused.returncode == 1 and "cannot inspect" in refused.stderr and "compacts" in refused.stderr
    removed = cli("remove", milvus_location, "--id", str(nearest["id"]), "--json", check=True)
    assert json.loads(removed.stdout)["purge"] == "requested" and "deletes logically" in removed.stderr
    again = json_lines(cli("classify", milvus_location, queries[0], "--k", "24", "--json", check=True))[0]
    assert nearest["id"] not in [n["id"] for n in again["neighbors"]] and len(again["neighbors"]) == 23

    target = again["neighbors"][0]["id"]
    cli("relabel", milvus_location, "--id", str(target), "--label", "seven", check=True)
    cli("block", milvus_location, "--id", str(again["neighbors"][1]["id"]), check=True)
    after = json_lines(cli("classify", milvus_location, queries[0], "--k", "3", "--json", check=True))[0]
    first, second = after["neighbors"][:2]
    assert first["label"] == "seven" and first["relabelled_from"] is not None and second["item_weight"] == 0.0

    info = json.loads(cli("info", milvus_location, "--json", check=True).stdout)
    assert info["items"] == 23 and info["thumbnails"] is True and info["consistency"] == "Strong"
    text = cli("info", milvus_location, check=True).stdout
    assert "Milvus v2.3" in text and "removal is logical" in text

    # a rollback must be one transaction, which Milvus has not: refused, saying where it works
    refused = cli("checkpoint", milvus_location, "v1")
    assert refused.returncode == 1 and "cannot keep checkpoints" in refused.stderr and "vismem import" in refused.stderr
    assert cli("checkpoints", milvus_location, check=True).stdout.startswith("no checkpoints")


@pytest.mark.parametrize("direction", ["directory -> here -> directory"])
def test_export_import_round_trips_decisions_exactly(location, photos, tmp_path, cli, direction):
    """Export a memory with history (relabels, blocks, pruning, settings), import it into
    `location` (a directory or Milvus), export that and import it into a directory: every
    decision is the same at each step."""
    train, queries = photos
    origin = Memory.create(tmp_path / "origin", encoder="pixels", prototypes_per_class=2)
    ids = origin.add_images([train], meta={"batch": 1})
    origin.relabel(ids.added[:2], "odd")
    origin.set_weight(ids.added[2:4], 0.0)
    origin.set_weight(ids.added[4:5], 2.5)
    origin.set_prune_counts({ids.added[5]: 3, ids.added[6]: 1})
    origin.update_settings(pruning=origin.pruning.__class__(mode="soft"),
                           vote=origin.defaults.__class__(k=5, vote="softmax"))
    expected = decisions(origin, queries)
    origin.close()

    cli("export", tmp_path / "origin", tmp_path / "one.parquet", "--thumbnails", check=True)
    imported = json.loads(cli("import", tmp_path / "one.parquet", location, "--json", check=True).stdout)
    assert imported["imported"] == 24
    with Memory.open(location) as middle:
        assert decisions(middle, queries) == expected
        assert middle.settings.prototypes_per_class == 2 and middle.pruning.mode == "soft"
        item = middle.items(middle.ids(labels=["odd"]))[0]
        assert item.relabelled_from is not None and item.meta["batch"] == 1 and middle.thumbnail(item.id)
    cli("export", location, tmp_path / "two.parquet", check=True)
    cli("import", tmp_path / "two.parquet", tmp_path / "back", check=True)
    with Memory.open(tmp_path / "back") as back:
        assert decisions(back, queries) == expected


def decisions(memory, queries):
    """Decisions without item ids (an import gives new ones), numbers to 4 decimals (two
    homes compute the same cosine in different float32 code)."""
    import re

    def rounded(value):
        if isinstance(value, float):
            return round(value, 4)
        if isinstance(value, dict):
            return {k: rounded(v) for k, v in value.items() if k != "id"}
        if isinstance(value, list):
            return [rounded(v) for v in value]
        if isinstance(value, str):
            return re.sub(r"item \d+", "item #", value)
        return value

    return [rounded(d.to_dict()) for d in memory.classify(queries)]


@pytest.mark.milvus
def test_two_services_over_one_collection_see_each_others_edits(milvus_location, photos, cli):
    train, queries = photos
    cli("create", milvus_location, "--encoder", "pixels", check=True)
    cli("add", milvus_location, train, check=True)
    query = queries[0].read_bytes()
    env = {"VISMEM_TOKEN": TOKEN}
    auth = {"Authorization": f"Bearer {TOKEN}"}
    (one, url_one), (two, url_two) = start_servers(2, milvus_location, env=env)
    try:
        def nearest(url, k=3):
            response = httpx.post(url + "/classify", files={"file": ("q.png", query, "image/png")},
                                  data={"k": str(k)}, timeout=60)
            assert response.status_code == 200, response.text
            return response.json()["neighbors"]

        first = nearest(url_two)[0]
        deleted = httpx.delete(f"{url_one}/items/{first['id']}", headers=auth, timeout=60)
        assert deleted.status_code == 200
        assert deleted.json()["purge"] == "requested"  # as `remove --json` says it (it said nothing of it)
        assert first["id"] not in [n["id"] for n in nearest(url_two, k=24)]   # at once, no reload
        other = nearest(url_two)[0]
        patched = httpx.patch(f"{url_two}/items/{other['id']}", json={"label": "renamed"}, headers=auth, timeout=60)
        assert patched.status_code == 200
        assert nearest(url_one)[0]["label"] == "renamed"
        upload = httpx.post(url_two + "/items", files=[("files", ("new.png", query, "image/png"))],
                            data={"label": "query-itself"}, headers=auth, timeout=60)
        assert upload.status_code == 201, upload.text
        assert nearest(url_one)[0]["label"] == "query-itself" and nearest(url_one)[0]["distance"] < 1e-5
        # counts are cached per process and follow other processes' edits within seconds
        counted = lambda: httpx.get(url_one + "/stats", headers=auth, timeout=60).json()["items"] == 24  # noqa: E731
        assert _eventually(counted)   # 24 - 1 removed + 1 uploaded, seen by the other process
    finally:
        stop_server(one)
        stop_server(two)


@pytest.mark.milvus
@pytest.mark.slow
def test_kill_9_during_add_keeps_every_committed_batch(milvus_location, digit_folders, cli):
    train, _ = digit_folders
    cli("create", milvus_location, "--encoder", "pixels", check=True)
    adding = subprocess.Popen([sys.executable, "-m", "vismem", "add", milvus_location, str(train), "--batch-size", "4",
                               "--json"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    committed: list[int] = []
    for line in adding.stdout:
        committed += json.loads(line)["ids"]
        if len(committed) >= 12:
            break
    adding.send_signal(signal.SIGKILL)
    adding.wait()
    assert adding.returncode == -signal.SIGKILL
    with Memory.open(milvus_location) as memory:
        ids = memory.ids()
        assert set(committed) <= set(ids) and len(ids) < 80   # nothing committed lost; really interrupted
        items = memory.items(ids)
        found, vectors = memory.vectors(ids)
        assert found.tolist() == ids and all(i.content_hash and i.path for i in items)   # no partial item
        assert all(memory.thumbnail(i) for i in ids[:5])
        assert [row[0].id for row in memory.search(vectors, k=1)] == ids
        held = len(ids)
    finished = json.loads(cli("add", milvus_location, train, "--json", check=True).stdout.splitlines()[-1])
    assert finished["items"] == 80 and finished["added"] == 80 - held
    with Memory.open(milvus_location) as memory:
        hashes = [i.content_hash for i in memory.items(memory.ids())]
        assert len(set(hashes)) == len(hashes) == 80


def _collections(milvus_uri, prefix):
    from pymilvus import MilvusClient

    client = MilvusClient(uri=milvus_uri.replace("milvus://", "http://"))
    try:
        return sorted(c for c in client.list_collections() if c.startswith(prefix))
    finally:
        client.close()


def _answers(memory, vectors):
    return [[(h.label, round(h.distance, 5)) for h in row] for row in memory.search(vectors[:20], 5)]


@pytest.mark.milvus
def test_an_interrupted_import_into_milvus_leaves_nothing_there(milvus_location, milvus_uri, tmp_path):
    """An import fills collections of other names and renames them into place when full:
    Ctrl-C or an error midway leaves no collection at all; the renamed collections keep
    the index, load state and consistency a create gives them."""
    from pymilvus import MilvusClient

    from vismem.transfer import import_store

    path, vectors, expected = _exported(tmp_path)
    name = milvus_location.rsplit("/", 1)[1]
    batches = []

    def interrupt(n):  # Ctrl-C after the first batch
        batches.append(n)
        raise KeyboardInterrupt

    def fail(n):  # an error after the second
        batches.append(n)
        if len(batches) == 3:
            raise RuntimeError("the file went away")

    for stop, raised in ((interrupt, KeyboardInterrupt), (fail, RuntimeError)):
        with pytest.raises(raised):
            import_store(path, milvus_location, batch=100, progress=stop)
        assert _collections(milvus_uri, name) == []
    assert batches == [100, 100, 100]
    with pytest.raises(MemoryNotFoundError):
        Memory.open(milvus_location)

    with Memory.import_parquet(path, milvus_location) as memory:
        assert len(memory) == 600 and _answers(memory, vectors) == expected
    assert _collections(milvus_uri, name) == [name, name + "__vismem"]
    Memory.create(milvus_location + "__twin", encoder=None, dim=16).close()
    client = MilvusClient(uri=milvus_uri.replace("milvus://", "http://"))
    for suffix in ("", "__vismem"):
        kept = [name + suffix, name + "__twin" + suffix]   # imported, and as a create makes them
        described = [client.describe_collection(c) for c in kept]
        assert len({d["consistency_level_name"] for d in described}) == 1
        assert [client.get_load_state(c)["state"].name for c in kept] == ["Loaded", "Loaded"]
        indexes = [{k: v for k, v in client.describe_index(c, client.list_indexes(c)[0]).items()
                    if not k.endswith("rows")} for c in kept]
        assert indexes[0] == indexes[1] and indexes[0]["state"] == "Finished"
    client.close()
    with Memory.open(milvus_location) as memory:
        assert _answers(memory, vectors) == expected


@pytest.mark.milvus
def test_a_memory_searched_through_a_transform_is_refused_by_milvus_before_any_upload(milvus_location,
                                                                                      milvus_uri, tmp_path):
    """Milvus searches vectors as stored: such an import decided differently, and was
    refused only once every item had been uploaded."""
    from vismem.transfer import import_store
    from vismem.transform import TransformSpec

    vectors = unit_vectors(200, 16, seed=3)
    with Memory.create(tmp_path / "whitened", encoder=None, dim=16) as memory:
        memory.add_vectors(vectors, [str(i % 4) for i in range(200)])
        memory.update_settings(transform=TransformSpec("whiten"))
        memory.export_parquet(tmp_path / "w.parquet")
    batches: list[int] = []
    with pytest.raises(InvalidInputError, match="feature transform .* import it into a directory"):
        import_store(tmp_path / "w.parquet", milvus_location, batch=50, progress=batches.append)
    assert batches == [] and _collections(milvus_uri, milvus_location.rsplit("/", 1)[1]) == []


@pytest.mark.milvus
def test_kill_9_during_an_import_into_milvus_leaves_nothing_openable(milvus_location, milvus_uri, tmp_path):
    """A killed import's collections carry their start time: the next import succeeds
    beside them and names them (another machine's import may be filling them), and drops
    those started over a day ago."""
    path, vectors, expected = _exported(tmp_path)
    name = milvus_location.rsplit("/", 1)[1]
    old = f"{name}__filling_{int(time.time()) - 2 * 86400}_0badcafe"   # as a kill two days ago left it
    Memory.create(f"{milvus_uri}/{old}", encoder=None, dim=16).close()
    script = textwrap.dedent(f"""
        import time
        from vismem.transfer import import_store

        def stall(n):
            print(n, flush=True)
            time.sleep(60)  # killed here, mid-import

        import_store({str(path)!r}, {milvus_location!r}, batch=100, progress=stall)
    """)
    importing = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert importing.stdout.readline().strip() == "100"
    importing.send_signal(signal.SIGKILL)
    importing.wait()
    with pytest.raises(MemoryNotFoundError):
        Memory.open(milvus_location)
    killed = [c for c in _collections(milvus_uri, name) if not c.startswith(old)]
    assert len(killed) == 2 and all(c.startswith(name + "__filling_") for c in killed)

    imported = subprocess.run([sys.executable, "-m", "vismem", "import", str(path), milvus_location, "--json"],
                              capture_output=True, text=True, check=True)
    assert json.loads(imported.stdout)["imported"] == 600
    assert all(c in imported.stderr for c in killed) and "drop_collection" in imported.stderr
    assert _collections(milvus_uri, name) == sorted([name, name + "__vismem", *killed])  # the old ones dropped
    with Memory.open(milvus_location) as memory:
        assert _answers(memory, vectors) == expected


def test_the_client_code_on_milvus_lite(tmp_path):
    """A smoke test only: milvus-lite reuses the client API on another engine (no
    server semantics), so it says the calls are right, little about a server."""
    pytest.importorskip("milvus_lite")
    from pymilvus import MilvusClient

    from vismem.settings import EncoderIdentity, MemorySettings
    from vismem.store.milvus import MilvusStore

    client = MilvusClient(str(tmp_path / "lite.db"))
    store = MilvusStore.create("milvus://lite:0/smoke", EncoderIdentity(None, None, 8), MemorySettings(index="exact"),
                               client=client)
    memory = Memory(store)
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((30, 8)).astype(np.float32)
    ids = memory.add_vectors(vectors, [f"c{i % 3}" for i in range(30)])
    assert len(memory) == 30 and memory.search(vectors[4], k=1)[0][0].id == ids[4]
    memory.remove([ids[4]])
    assert ids[4] not in [h.id for h in memory.search(vectors[4], k=5)[0]]
    assert memory.relabel([ids[5]], "moved") == [ids[5]] and memory.get(ids[5]).relabelled_from == "c2"
    memory.close()


@pytest.mark.milvus
@pytest.mark.slow
def test_every_memory_command_runs_on_milvus(milvus_location, photos, digit_folders, tmp_path, cli):
    """Each command that takes a memory works on one in Milvus (the CLI test above checks
    what they do; here, that none is left out)."""
    _, queries = photos
    train = digit_folders[0]
    test_dir = tmp_path / "test"
    for q in queries[:2]:
        (test_dir / "3").mkdir(parents=True, exist_ok=True)
        (test_dir / "3" / q.name).write_bytes(q.read_bytes())
    m = milvus_location
    cli("create", m, "--encoder", "pixels", check=True)
    cli("add", m, train, check=True)
    some = str(json_lines(cli("classify", m, queries[0], "--json", check=True))[0]["neighbors"][0]["id"])
    steps = [
        ("tune", m), ("prune", m, "--mode", "soft"), ("suspects", m), ("calibrate", m),
        ("classify", m, queries[0], "--abstain"), ("search", m, queries[0], "--only-label", "5"),
        ("explain", m, queries[0], "--out", tmp_path / "why.png"), ("eval", m, test_dir),
        ("boost", m, "--id", some), ("unblock", m, "--id", some), ("reindex", m, "--index", "exact"),
        ("compact", m), ("info", m), ("export", m, tmp_path / "m.parquet"),
    ]
    for step in steps:
        done = cli(*step)
        assert done.returncode == 0, f"{step[0]}: {done.stderr}"
    assert (tmp_path / "why.png").stat().st_size > 1000
    for step, why in ((("tune-index", m, queries[0]), "fixed"), (("record-queries", m, "100"), "does not tune")):
        refused = cli(*step)
        assert refused.returncode == 1 and why in refused.stderr, refused.stderr
    np.save(tmp_path / "v.npy", np.ones((1, 16 * 16 * 3), dtype=np.float32))
    np.save(tmp_path / "l.npy", np.asarray(["ones"]))
    cli("add-vectors", m, "--vectors", tmp_path / "v.npy", "--labels", tmp_path / "l.npy", check=True)
    assert json.loads(cli("info", m, "--json", check=True).stdout)["classes"]["ones"] == 1


@pytest.mark.milvus
def test_with_json_ctrl_c_after_a_milvus_settings_save_says_it_committed(milvus_location):
    """A Milvus memory's save_settings and save_pruning marked no Ctrl-C after the settings
    were written (and a server cannot count commits): `reindex --json` and `prune --json`
    interrupted there said `"committed": "unknown"`. They say true, `prune` with its report."""
    from test_crash_safety import _interrupted_in_store_each

    with Memory.create(milvus_location, encoder=None, dim=8, index="exact") as memory:
        memory.add_vectors(unit_vectors(40, 8), ["a"] * 20 + ["b"] * 20)
    reindexed, pruned = _interrupted_in_store_each(
        ("MilvusStore._reindex:before:1", "reindex", milvus_location, "--index", "hnsw", "--json"),
        ("MilvusStore._touch:before:2", "prune", milvus_location, "--mode", "soft", "--json"))
    assert {k: reindexed[k] for k in ("setting", "committed")} == {"setting": "hnsw", "committed": True}, reindexed
    assert (pruned["committed"], pruned["mode"], pruned["items"], pruned["purged"]) == (True, "soft", 40, []), pruned
    with Memory.open(milvus_location) as memory:
        assert (memory.settings.index, memory.settings.pruning.mode) == ("hnsw", "soft")


NFC, NFD = "Caf\u00e9", "Cafe\u0301"  # print alike: one character é, or e and a combining accent


def _as_format_1_kept_it(location: str, changes: dict[int, dict[str, str]]) -> None:
    """Rewrite rows as a vismem before NFC labels wrote them (`changes`: id -> fields),
    straight through pymilvus, and mark the memory format 1."""
    from pymilvus import MilvusClient

    where = MilvusLocation.parse(location)
    client = MilvusClient(uri=where.uri)
    try:
        fields = ["vector", "id", "label", "source", "path", "content_hash", "weight", "meta", "added_at",
                  "relabelled_from", "prune_count", "thumbnail"]
        rows = client.query(where.collection, filter=f"id in {sorted(changes)}", output_fields=fields,
                            consistency_level="Strong")
        client.upsert(where.collection, [{**r, "vector": np.asarray(r["vector"], np.float32), **changes[r["id"]]}
                                         for r in rows])
        config = json.loads(client.query(where.side, filter='key == "config"', output_fields=["value"],
                                         consistency_level="Strong")[0]["value"])
        client.upsert(where.side, [{"key": "config", "value": json.dumps({**config, "version": 1}), "v": [0.0, 0.0]}])
    finally:
        client.close()


@pytest.mark.milvus
def test_a_format_1_milvus_memory_with_labels_in_nfd_and_nfc_votes_one_class(milvus_location, cli):
    """A Milvus memory written before labels were kept in NFC may hold `Café` from a Mac
    folder (NFD) beside `Café` typed (NFC): four neighbours split 2 + 2 lost a plurality vote
    to three `tea`, and `info` listed the class twice. Its first open rewrites those rows to
    NFC (format 2), once: the next open finds nothing to do."""
    from conftest import Shown
    from vismem.maintenance import showing_maintenance

    rng = np.random.default_rng(0)
    near = np.eye(4, dtype=np.float32)[[0] * 7] + 0.05 * rng.standard_normal((7, 4)).astype(np.float32)
    with Memory.create(milvus_location, encoder=None, dim=4, index="exact") as memory:
        ids = memory.add_vectors(near, [NFC] * 4 + ["tea"] * 3, sources=["mac"] * 2 + ["typed"] * 2 + ["t"] * 3)
        far = memory.add_vectors(np.eye(4, dtype=np.float32)[[3, 2]], [NFC, NFC], sources="old")
        memory.relabel(far, "tea")
    mac = {"label": NFD, "source": f"mac/{NFD}"}
    # far[0] relabelled from the NFD label to `tea`, far[1] from it to the NFC one
    _as_format_1_kept_it(milvus_location, {ids[0]: mac, ids[1]: mac, far[0]: {"relabelled_from": NFD},
                                           far[1]: {"label": NFC, "relabelled_from": NFD}})
    shown = Shown()
    query = np.eye(4, dtype=np.float32)[:1]
    with showing_maintenance(shown), Memory.open(milvus_location) as memory:
        assert memory.class_counts() == {NFC: 5, "tea": 4}
        assert sorted(memory.prototypes().labels) == sorted([NFC, "tea"])
        decision = memory.classify_vectors(query, k=7, vote="plurality")[0]
        assert decision.label == NFC and list(decision.scores) == [NFC, "tea"]
        assert sorted(n.id for n in decision.neighbors if n.label == NFC) == sorted(ids[:4])
        assert [item.source for item in memory.items(ids[:2])] == [f"mac/{NFC}"] * 2
        assert sorted(memory.ids(sources=[f"mac/{NFC}"])) == sorted(ids[:2])
        # far[0]'s first label is kept, now NFC; far[1] was relabelled to what it was: no history
        assert [item.relabelled_from for item in memory.items(far)] == [NFC, None]
        assert memory.info()["format_version"] == 2
    assert [(what, total) for what, total, _ in shown.done()] == \
        [("upgrading the Milvus memory from format 1 to 2 (labels in NFC)", 9)]
    with showing_maintenance(shown), Memory.open(milvus_location):
        pass
    assert len(shown.work) == 1  # done once
    info = json.loads(cli("info", milvus_location, "--json", check=True).stdout)
    assert info["classes"] == {NFC: 5, "tea": 4} and info["format_version"] == 2


@pytest.mark.milvus
@pytest.mark.slow
def test_a_kill_during_the_nfc_upgrade_of_a_milvus_memory_is_finished_by_the_next_open(milvus_location):
    """SIGKILL the process whose open upgrades a format-1 memory at spread-out moments:
    what it rewrote stays rewritten, the format stays 1 until every row is NFC, and the
    next open finishes the work: one class."""
    n = 3000
    with Memory.create(milvus_location, encoder=None, dim=4, index="exact") as memory:
        ids = memory.add_vectors(unit_vectors(n, 4, seed=1), NFC, sources="mac")
        memory.add_vectors(unit_vectors(2, 4, seed=2), NFC, sources="typed")
    where = MilvusLocation.parse(milvus_location)
    script = textwrap.dedent("""
        import sys
        from contextlib import contextmanager
        from vismem import Memory
        from vismem.maintenance import showing_maintenance

        @contextmanager
        def report(description, total):  # says when the scan is done: the rewrite starts
            seen = [0]
            def advance(n):
                seen[0] += n
                if seen[0] == total:
                    print("scanned", flush=True)
            yield advance

        with showing_maintenance(report):
            Memory.open(sys.argv[1]).close()
        """)
    outcomes = []
    for delay in (0.0, 0.05, 0.1, 0.2, 0.3, 2.0):  # the rewrite of 3,000 rows takes ~0.4 s here
        _as_format_1_kept_it(milvus_location, {i: {"label": NFD, "source": f"mac/{NFD}"} for i in ids})
        process = subprocess.Popen([sys.executable, "-c", script, milvus_location], stdout=subprocess.PIPE, text=True)
        assert process.stdout is not None and process.stdout.readline().strip() == "scanned"
        time.sleep(delay)
        process.kill()
        process.wait()
        from pymilvus import MilvusClient

        client = MilvusClient(uri=where.uri)
        labels = Counter(r["label"] for r in client.query(where.collection, filter="id > 0", output_fields=["label"],
                                                          consistency_level="Strong", limit=16384))
        config = json.loads(client.query(where.side, filter='key == "config"', output_fields=["value"],
                                         consistency_level="Strong")[0]["value"])
        client.close()
        assert config["version"] == 2 and labels == {NFC: n + 2} or config["version"] == 1, (delay, labels)
        outcomes.append((config["version"], labels[NFD]))
        with Memory.open(milvus_location) as memory:
            assert memory.class_counts() == {NFC: n + 2} and memory.info()["format_version"] == 2
    assert any(version == 1 and 0 < left < n for version, left in outcomes), outcomes  # one landed midway


def _rows_held(location: str) -> int:
    """Rows the collection's flushed segments hold, removed rows not yet compacted away included."""
    from pymilvus import MilvusClient

    where = MilvusLocation.parse(location)
    client = MilvusClient(uri=where.uri)
    try:
        return sum(s.num_rows for s in client.list_persistent_segments(where.collection))
    finally:
        client.close()


@pytest.mark.milvus
def test_milvus_compact_waits_for_the_segments_and_says_what_it_reclaimed(milvus_location, cli):
    """Milvus 2.3 calls a compaction job "Completed" the moment it is asked for, before it
    has planned anything: `vismem compact` said "completed" at once, its bar jumped from 0
    to the end, and the segments still held every removed row. It waits until they hold
    none, with the bar in items the rewritten segments hold; its report says how many rows
    it reclaimed and how many the server left. Ctrl-C after the request prints that report
    with `committed` true: the server goes on without the process."""
    from test_crash_safety import _interrupted_in_store_each

    with Memory.create(milvus_location, encoder=None, dim=8, index="exact") as memory:
        ids = memory.add_vectors(unit_vectors(3000, 8), ["a"] * 1500 + ["b"] * 1500)
        memory.remove(ids[:1000])  # (no purge: nothing asked the server to compact yet)
        seen: list[int] = []
        report = memory.compact(progress=seen.append)
        assert _rows_held(milvus_location) == 2000, report  # as it returns: nothing left to the server
    assert (report["compaction"], report["reclaimed"], report["removed_left"]) == ("completed", 1000, 0), report
    assert sum(seen) == 2000, seen

    with Memory.open(milvus_location) as memory:
        memory.remove(ids[1000:1600])
    (asked,) = _interrupted_in_store_each(("MilvusStore._segments:before:2", "compact", milvus_location, "--json"))
    assert (asked["committed"], asked["compaction"], asked["size"]) == (True, "requested", 1400), asked
    assert asked["unfinished"].endswith("the server was asked to compact and goes on without this process "
                                        "(`vismem compact` again waits for it)")
    # Removals from a sealed segment wait in Milvus 2.3's data node before a compaction can
    # see them (when they come out is the server's business): what is left is said, not hidden
    again = json.loads(cli("compact", milvus_location, "--json", check=True).stdout)
    assert again["size"] == 1400 and again["reclaimed"] + again["removed_left"] <= 600, again
    assert _rows_held(milvus_location) - 1400 <= again["removed_left"], again
    assert again["compaction"] == ("completed" if again["removed_left"] == 0 else "requested"), again

# `vismem` with the server refusing this client's writes, as Milvus refuses a user without
# the privilege (RBAC's "permission deny"): the one fault this private server cannot be
# configured to give per client, injected at pymilvus's call
REFUSED_WRITES = textwrap.dedent("""
    import sys
    from pymilvus import MilvusClient
    from pymilvus.exceptions import MilvusException
    from vismem.cli import main

    def refused(self, *args, **kwargs):
        raise MilvusException(code=65535, message="PrivilegeUpsert: permission deny to reader")

    MilvusClient.upsert = refused
    main(sys.argv[1:])
    """)


@pytest.mark.milvus
def test_what_stderr_says_when_a_format_1_milvus_memory_is_upgraded_or_cannot_be(milvus_location, cli):
    """The NFC upgrade's warning path was untested: a client the server refuses writes
    uses a format-1 memory as it is, and says so on stderr once, naming the server's
    refusal and what stays (the two forms vote as two classes); its answer is not changed
    (exit 0, format 1). A client that can write then upgrades it: stdout stays JSON only,
    and stderr holds no warning (the maintenance bar is transient, not drawn off a terminal)."""
    with Memory.create(milvus_location, encoder=None, dim=4, index="exact") as memory:
        ids = memory.add_vectors(unit_vectors(4, 4), NFC)
    _as_format_1_kept_it(milvus_location, {ids[0]: {"label": NFD}})
    read = subprocess.run([sys.executable, "-c", REFUSED_WRITES, "info", milvus_location, "--json"],
                          capture_output=True, text=True)
    assert read.returncode == 0, read.stderr
    info = json.loads(read.stdout)
    assert info["format_version"] == 1 and info["classes"] == {NFD: 1, NFC: 3}  # as it is: two classes
    warnings = [line for line in read.stderr.splitlines() if line]
    assert len(warnings) == 1, read.stderr
    assert warnings[0].startswith(f"warning: {milvus_location} is in format 1 and could not be upgraded to 2"), warnings
    assert "permission deny to reader" in warnings[0] and "votes as two classes until a client that can write " \
        "opens it" in warnings[0], warnings
    upgraded = cli("info", milvus_location, "--json", check=True)
    assert upgraded.stderr == "", upgraded.stderr
    info = json.loads(upgraded.stdout)
    assert info["format_version"] == 2 and info["classes"] == {NFC: 4}

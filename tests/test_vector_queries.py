"""A memory of precomputed vectors, filled and queried with vectors: `add-vectors` in
batches with a progress bar; `classify`, `search` and `eval` take `--queries Q.npy` on the
command line, `POST /classify` and `POST /search` a `vector`. On real data: scikit-learn's
digits as 64-d pixel vectors, in a real store on disk."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import json_lines
from fastapi.testclient import TestClient
from sklearn.datasets import load_digits

from vismem import Memory
from vismem.errors import InvalidInputError
from vismem.service import ServiceSettings, create_app


@pytest.fixture(scope="module")
def digit_vectors(tmp_path_factory):
    """A memory of 600 digits (labels saved as integers, as `digits.target` is) and 100
    held-out test digits with their labels, as files a user would have."""
    x, y = load_digits(return_X_y=True)
    x = x.astype(np.float32)
    root = tmp_path_factory.mktemp("vectors")
    files = {"train": root / "train.npy", "train_labels": root / "train_labels.npy",
             "test": root / "test.npy", "test_labels": root / "test_labels.txt"}
    np.save(files["train"], x[:600])
    np.save(files["train_labels"], y[:600])
    np.save(files["test"], x[600:700])
    files["test_labels"].write_text("\n".join(map(str, y[600:700])))
    return root, files, x[600:700], [str(label) for label in y[600:700]]


@pytest.fixture(scope="module")
def memdir(digit_vectors):
    from conftest import run_cli_here as cli

    root, files, _, _ = digit_vectors
    memdir = root / "mem"
    cli("create", memdir, "--encoder", "none", "--dim", "64", check=True)
    added = json_lines(cli("add-vectors", memdir, "--vectors", files["train"], "--labels", files["train_labels"],
                           "--json", check=True))[0]
    assert added["added"] == 600
    return memdir


@pytest.mark.parametrize("chunk", [4096, 7])  # queries answered per call (with a progress bar)
def test_classify_search_and_eval_answer_as_the_python_api(memdir, digit_vectors, cli, monkeypatch, chunk):
    import vismem.cli.commands
    import vismem.evaluate

    monkeypatch.setattr(vismem.cli.commands, "QUERY_CHUNK", chunk)
    monkeypatch.setattr(vismem.evaluate, "CHUNK", chunk)
    _, files, test, truth = digit_vectors
    decisions = json_lines(cli("classify", memdir, "--queries", files["test"], "-k", "5", "--json", check=True))
    searched = json_lines(cli("search", memdir, "--queries", files["test"], "-k", "3", "--json", check=True))
    evaluated = cli("eval", memdir, "--queries", files["test"], "--labels", files["test_labels"], "-k", "5", "--json",
                    check=True)
    assert "100/100" in evaluated.stderr  # its bar, written once where stderr is no terminal
    report = json_lines(evaluated)[0]
    with Memory.open(memdir) as memory:
        assert sorted(memory.class_counts()) == [str(d) for d in range(10)]  # integer labels became text
        expected = memory.classify_vectors(test, k=5)
        nearest = memory.search(test, 3)
    assert [d["path"] for d in decisions] == [f"{files['test']}[{i}]" for i in range(100)]
    assert [d["label"] for d in decisions] == [d.label for d in expected]
    assert [[n["id"] for n in d["neighbors"]] for d in decisions] == [[n.id for n in d.neighbors] for d in expected]
    assert [[n["id"] for n in row["neighbors"]] for row in searched] == [[h.id for h in row] for row in nearest]
    correct = sum(d["label"] == t for d, t in zip(decisions, truth, strict=True))
    assert report["total"] == 100 and report["correct"] == correct and correct >= 90
    assert report["k"] == 5 and report["skipped"] == []


def test_one_vector_of_shape_dim_is_one_query(memdir, digit_vectors, tmp_path, cli):
    _, _, test, _ = digit_vectors
    np.save(tmp_path / "one.npy", test[0])
    row = json_lines(cli("search", memdir, "--queries", tmp_path / "one.npy", "-k", "2", "--json", check=True))
    with Memory.open(memdir) as memory:
        assert [[n["id"] for n in r["neighbors"]] for r in row] == [[h.id for h in memory.search(test[0], 2)[0]]]


def test_query_vectors_that_cannot_be_used_are_refused_with_the_reason(memdir, digit_vectors, tmp_path, cli):
    root, files, test, _ = digit_vectors
    neither = cli("classify", memdir, "--json")
    assert neither.returncode == 2 and "give image files or --queries" in neither.stderr and neither.stdout == ""
    both = cli("search", memdir, root / "a.png", "--queries", files["test"])
    assert both.returncode == 2 and "not both" in both.stderr
    np.save(tmp_path / "narrow.npy", test[:, :10])
    narrow = cli("classify", memdir, "--queries", tmp_path / "narrow.npy")
    assert narrow.returncode == 1 and "expected numbers of shape (n, 64)" in narrow.stderr
    # one vector of the wrong length: the file's own shape, not the (1, 10) it was read as
    np.save(tmp_path / "short_one.npy", test[0, :10])
    for command in (("classify",), ("search",), ("explain",), ("tune-index",)):
        said = cli(*command, memdir, "--queries", tmp_path / "short_one.npy")
        assert said.returncode == 1 and said.stderr.rstrip().endswith(
            "expected numbers of shape (n, 64) for this memory's 64-d vectors, got float32 (10,)"), said.stderr
    broken = test[:5].copy()
    broken[3, 7] = np.nan
    np.save(tmp_path / "nan.npy", broken)
    nan = cli("search", memdir, "--queries", tmp_path / "nan.npy", "--json")
    assert nan.returncode == 1 and "row 3 holds NaN or infinity" in nan.stderr and nan.stdout == ""
    unlabelled = cli("eval", memdir, "--queries", files["test"])
    assert unlabelled.returncode == 2 and "--queries Q.npy with --labels" in unlabelled.stderr
    np.save(tmp_path / "float_labels.npy", np.ones(100))
    floats = cli("eval", memdir, "--queries", files["test"], "--labels", tmp_path / "float_labels.npy")
    assert floats.returncode == 1 and "as text or integers, got float64" in floats.stderr
    (tmp_path / "short.txt").write_text("\n".join(["1"] * 99))
    short = cli("eval", memdir, "--queries", files["test"], "--labels", tmp_path / "short.txt")
    assert short.returncode == 1 and "100 test vectors but 99 labels" in short.stderr
    image = cli("classify", memdir, root / "train.npy")  # an image path on a memory with no encoder
    assert image.returncode == 1 and "--queries Q.npy" in image.stderr


def test_explain_takes_a_vector_query_and_draws_it_as_a_blank_tile(memdir, digit_vectors, tmp_path, cli):
    """`explain --queries Q.npy --row N` explains the decision `classify` makes for that
    row: the same neighbours, a sheet with the query as a blank tile (a vector has no
    picture) beside one per neighbour; a file of several vectors needs --row."""
    from PIL import Image

    _, files, test, _ = digit_vectors
    sheet = tmp_path / "why.png"
    explained = json_lines(cli("explain", memdir, "--queries", files["test"], "--row", "7", "-k", "5",
                               "--out", sheet, "--json", check=True))[0]
    with Memory.open(memdir) as memory:
        expected = memory.classify_vectors(test[7:8], k=5)[0]
    assert explained["path"] == f"{files['test']}[7]" and explained["sheet"] == str(sheet)
    assert explained["label"] == expected.label
    assert [n["id"] for n in explained["neighbors"]] == [n.id for n in expected.neighbors]
    drawn = np.asarray(Image.open(sheet).convert("L"))
    assert drawn.shape == (128 + 48, 6 * (128 + 8))  # the query and its 5 neighbours, in one row
    assert (drawn[4:132, 4:132] == 220).all()  # the query's tile: blank grey
    np.save(tmp_path / "one.npy", test[7])
    alone = json_lines(cli("explain", memdir, "--queries", tmp_path / "one.npy", "-k", "5", "--out", sheet,
                           "--json", check=True))[0]
    assert [n["id"] for n in alone["neighbors"]] == [n.id for n in expected.neighbors]
    several = cli("explain", memdir, "--queries", files["test"], "--out", sheet)
    assert several.returncode == 1 and "holds 100 vectors; explain takes one: pick it with --row N" in several.stderr
    beyond = cli("explain", memdir, "--queries", files["test"], "--row", "100", "--out", sheet)
    assert beyond.returncode == 1 and "rows 0 to 99" in beyond.stderr
    broken = test[:3].copy()
    broken[2, 5] = np.nan
    np.save(tmp_path / "nan.npy", broken)
    nan = cli("explain", memdir, "--queries", tmp_path / "nan.npy", "--row", "2", "--out", sheet)
    assert nan.returncode == 1 and "row 2 holds NaN or infinity" in nan.stderr
    for usage in (("explain", memdir), ("explain", memdir, files["test"], "--queries", files["test"]),
                  ("explain", memdir, files["test"], "--row", "1")):
        refused = cli(*usage, "--out", sheet)
        assert refused.returncode == 2 and "give an image, or --queries Q.npy" in refused.stderr


@pytest.fixture
def client(memdir):
    with Memory.open(memdir) as memory, TestClient(create_app(memory, ServiceSettings())) as client:
        yield memory, client


def test_the_service_answers_vector_queries_as_the_memory(client, digit_vectors):
    memory, client = client
    _, _, test, _ = digit_vectors
    vector = json.dumps(test[7].tolist())
    decided = client.post("/classify", data={"vector": vector, "k": "5", "only_label": ["1", "7"]})
    assert decided.status_code == 200, decided.text
    expected = memory.classify_vectors(test[7:8], k=5, labels=["1", "7"])[0]
    got = decided.json()
    assert got["path"] is None and got["label"] == expected.label
    assert [n["id"] for n in got["neighbors"]] == [n.id for n in expected.neighbors]
    found = client.post("/search", data={"vector": vector, "k": "4"})
    assert found.status_code == 200, found.text
    assert found.json()["path"] is None
    assert [n["id"] for n in found.json()["neighbors"]] == [h.id for h in memory.search(test[7], 4)[0]]


@pytest.mark.parametrize("form, status, says", [
    ({}, 400, "send the query as `file` (an image) or as `vector`"),
    ({"vector": "[1, 2, 3]"}, 400, "a JSON array of 64 numbers"),
    ({"vector": "not json"}, 400, "a JSON array of 64 numbers"),
    ({"vector": "[" * 100_000}, 400, "a JSON array of 64 numbers"),
    ({"vector": json.dumps([True] * 64)}, 400, "a JSON array of 64 numbers"),
    ({"vector": json.dumps([1e39] + [0] * 63)}, 400, "too large for float32"),
    ({"vector": json.dumps([1] * 63 + [10**400])}, 400, "too large for float32"),
    ({"vector": "[1e400" + ", 0" * 63 + "]"}, 400, "too large for float32"),  # past float64: inf to Python
    # the field and the place, where the memory's own check says the CLI's "row 0"
    ({"vector": "[NaN" + ", 0" * 63 + "]"}, 400, "vector[0] is NaN: send finite numbers"),
    ({"vector": "[0, 1, 2, Infinity, -Infinity" + ", 0" * 59 + "]"}, 400,
     "vector[3] is Infinity: send finite numbers (and 1 more value is not finite)"),
    ({"vector": json.dumps([0] * 64)}, 400, "vector: every value is 0, so it has no direction"),
])
def test_the_service_refuses_a_vector_it_cannot_use(client, form, status, says):
    _, client = client
    for path in ("/classify", "/search"):
        answer = client.post(path, data=form)
        assert answer.status_code == status and says in answer.json()["error"], answer.text
        assert "row" not in answer.json()["error"]


def test_a_vector_of_values_too_small_for_float32_keeps_its_direction(client):
    """Only a query's direction counts: values float32 holds as 0 are not all zeros."""
    memory, client = client
    tiny = [0.0] * 64
    tiny[5], tiny[9] = 3e-50, -1e-50
    big = [0.0] * 64
    big[5], big[9] = 3.0, -1.0
    for path in ("/classify", "/search"):
        answers = [client.post(path, data={"vector": json.dumps(v), "k": "3"}) for v in (tiny, big)]
        assert answers[0].status_code == 200, answers[0].text
        found = [answer.json()["neighbors"] for answer in answers]
        assert [n["id"] for n in found[0]] == [n["id"] for n in found[1]]
        assert [n["distance"] for n in found[0]] == pytest.approx([n["distance"] for n in found[1]], abs=1e-6)


def test_a_vector_sent_as_a_json_body_is_told_to_come_as_a_form_field(client):
    """Vector APIs often take JSON bodies: this one reads form fields, and says so (415, as
    for any body of a type the endpoint does not take)."""
    _, client = client
    for path in ("/classify", "/search"):
        answer = client.post(path, json={"vector": [0.1] * 64})
        said = answer.json()["error"]
        assert answer.status_code == 415 and "multipart form (curl -F NAME=VALUE" in said
        assert "of the fields file, vector, k" in said and "this request's body is application/json" in said
        assert "multipart" not in client.post(path, data={}).json()["error"]  # a form that lacks both


def test_an_image_sent_to_a_memory_of_vectors_names_the_way_out(client):
    _, client = client
    answer = client.post("/search", files={"file": ("q.png", b"\x89PNG", "image/png")})
    assert answer.status_code == 409 and "send the query as `vector`" in answer.json()["error"]
    both = client.post("/search", files={"file": ("q.png", b"\x89PNG", "image/png")},
                       data={"vector": json.dumps([1.0] * 64)})
    assert both.status_code == 400 and "not both" in both.json()["error"]


def test_add_vectors_in_batches_checks_every_row_first(tmp_path):
    x, y = load_digits(return_X_y=True)
    x, labels = x[:100].astype(np.float32), [str(label) for label in y[:100]]
    with Memory.create(tmp_path / "whole", encoder=None, dim=64) as whole:
        whole.add_vectors(x, labels)
        expected = [[h.id for h in row] for row in whole.search(x[:20], 5)]
    with Memory.create(tmp_path / "batched", encoder=None, dim=64) as batched:
        broken = x.copy()
        broken[57, 3] = np.inf
        with pytest.raises(InvalidInputError, match="row 57 holds NaN or infinity"):
            batched.add_vectors(broken, labels, batch_size=16)
        assert len(batched) == 0  # checked before the first batch was committed
        done: list[int] = []
        ids = batched.add_vectors(x, labels, batch_size=16, progress=done.append)
        assert done == [16] * 6 + [4] and ids == list(range(1, 101))
        assert [[h.id for h in row] for row in batched.search(x[:20], 5)] == expected
        assert batched.class_counts() == whole_counts(labels)


def whole_counts(labels: list[str]) -> dict[str, int]:
    return {label: labels.count(label) for label in sorted(set(labels))}


def test_add_vectors_from_the_cli_in_batches(tmp_path, cli, monkeypatch):
    import vismem.cli.commands

    monkeypatch.setattr(vismem.cli.commands, "ADD_VECTORS_BATCH", 64)
    x, y = load_digits(return_X_y=True)
    np.save(tmp_path / "x.npy", x[:300].astype(np.float32))
    np.save(tmp_path / "y.npy", y[:300])
    broken = x[:300].astype(np.float32)
    broken[250] = 0
    np.save(tmp_path / "broken.npy", broken)
    memdir = tmp_path / "mem"
    cli("create", memdir, "--encoder", "none", "--dim", "64", check=True)
    refused = cli("add-vectors", memdir, "--vectors", tmp_path / "broken.npy", "--labels", tmp_path / "y.npy")
    assert refused.returncode == 1 and "all zeros" in refused.stderr and "row 250" in refused.stderr
    assert "adding vectors" not in refused.stderr  # the error is the one line to read
    added = cli("add-vectors", memdir, "--vectors", tmp_path / "x.npy", "--labels", tmp_path / "y.npy", "--json",
                check=True)
    assert json_lines(added)[0]["added"] == 300 and "300/300" in added.stderr  # the bar, written once
    with Memory.open(memdir) as memory:
        assert len(memory) == 300 and memory.class_counts() == whole_counts([str(label) for label in y[:300]])


def test_a_memory_of_vectors_answers_alike_on_every_home(location, digit_vectors, cli):
    # the same commands on a directory and on a Milvus collection (the real server)
    _, files, test, _ = digit_vectors
    cli("create", location, "--encoder", "none", "--dim", "64", check=True)
    cli("add-vectors", location, "--vectors", files["train"], "--labels", files["train_labels"], check=True)
    decisions = json_lines(cli("classify", location, "--queries", files["test"], "-k", "5", "--json", check=True))
    searched = json_lines(cli("search", location, "--queries", files["test"], "-k", "3", "--only-label", "7",
                              "--json", check=True))
    with Memory.open(location) as memory:
        assert len(memory) == 600
        assert [d["label"] for d in decisions] == [d.label for d in memory.classify_vectors(test, k=5)]
        nearest = memory.search(test, 3, labels=["7"])
    assert [[n["id"] for n in row["neighbors"]] for row in searched] == [[h.id for h in row] for row in nearest]
    assert {n["label"] for row in searched for n in row["neighbors"]} == {"7"}


def _rows(n: int, dim: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


def test_add_vectors_skips_rows_already_held_only_when_asked(tmp_path):
    """Adding the same rows again (a re-run after an interruption) added them all again:
    without `allow_duplicates` the rows held are skipped, named with the items holding
    them; with it (the default) every row is added, as before."""
    from vismem.store import InsertResult
    from vismem.vectors import unit_rows, vector_hashes

    x = _rows(10)
    with Memory.create(tmp_path / "m", encoder=None, dim=8) as memory:
        first = memory.add_vectors(x[:6], ["a"] * 6)
        assert isinstance(first, list) and len(first) == 6
        [item] = memory.items([first[2]])
        assert item.content_hash == vector_hashes(unit_rows(x[2:3], 8))[0] and len(item.content_hash) == 22
        again = memory.add_vectors(x, ["a"] * 6 + ["b"] * 4, allow_duplicates=False, batch_size=4)
        assert isinstance(again, InsertResult)
        assert again.duplicates == [(k, first[k]) for k in range(6)] and len(again.ids) == 4
        assert len(memory) == 10 and memory.class_counts() == {"a": 6, "b": 4}
        assert memory.add_vectors(x, ["b"] * 10, allow_duplicates=False).ids == []  # all held: nothing added
        copies = memory.add_vectors(x[:2], ["c"] * 2)  # the default adds them anyway
        assert len(copies) == 2 and len(memory) == 12
        # a copy held beside its original: still one row held, named by the oldest item
        assert memory.add_vectors(x[:1], ["a"], allow_duplicates=False).duplicates == [(0, first[0])]
        with pytest.raises(InvalidInputError, match="allow_duplicates"):
            memory.add_vectors(x[:1], ["d"], allow_duplicates="no")  # type: ignore[call-overload]


def test_add_vectors_skips_a_row_repeated_within_one_call(tmp_path):
    """A row given twice in one call, in one batch or across batches, is added once."""
    x = _rows(3, seed=1)
    repeated = np.stack([x[0], x[1], x[0] * 2, x[2], x[1]])  # x[0] * 2: the same row once unit length
    with Memory.create(tmp_path / "m", encoder=None, dim=8) as memory:
        for batch_size in (None, 2):
            memory.remove(memory.ids())
            result = memory.add_vectors(repeated, list("vwvyw"), allow_duplicates=False, batch_size=batch_size)
            assert len(result.ids) == 3 and result.duplicates == [(2, result.ids[0]), (4, result.ids[1])]
            assert memory.class_counts() == {"v": 1, "w": 1, "y": 1}
        assert len(memory.add_vectors(repeated, list("vwvyw"))) == 5  # allowed: one item per row


def test_a_row_in_fortran_order_is_stored_and_recognised_as_in_c_order(tmp_path):
    """A .npy file in Fortran order (`np.save(path, emb.T)` of (dim, n) embeddings) gave
    most rows other bits once made unit length, numpy summing their squares in another
    order: the rows held were added again, with new ids."""
    x = _rows(50, dim=64, seed=2)
    np.save(tmp_path / "c.npy", x)
    np.save(tmp_path / "f.npy", np.asfortranarray(x))
    assert np.load(tmp_path / "f.npy").flags.f_contiguous
    with Memory.create(tmp_path / "m", encoder=None, dim=64) as memory:
        first = memory.add_vectors(np.load(tmp_path / "c.npy"), ["a"] * 50)
        again = memory.add_vectors(np.load(tmp_path / "f.npy", mmap_mode="r"), ["a"] * 50, allow_duplicates=False,
                                   batch_size=20)
        assert again.ids == [] and again.duplicates == list(enumerate(first))


def test_add_vectors_does_not_drop_a_held_row_given_another_label_silently(tmp_path):
    """A row held under another label was skipped as "already held", the label it was
    given lost without a word. It is still not added (the same vector would vote for two
    labels), but as a conflict naming the label held; a duplicate with the same label is
    a plain duplicate, in the memory or earlier in the same call, in any batch."""
    x = _rows(4, seed=2)
    with Memory.create(tmp_path / "m", encoder=None, dim=8) as memory:
        held = memory.add_vectors(x[:2], ["cat", "dog"])
        for batch_size in (None, 1):
            result = memory.add_vectors(np.stack([x[0], x[1], x[2], x[2], x[3]]), ["cat", "bird", "fox", "owl", "fox"],
                                        allow_duplicates=False, batch_size=batch_size)
            fox = result.ids[0]
            assert result.duplicates == [(0, held[0])] and len(result.ids) == 2
            assert result.conflicts == [(1, held[1], "dog"), (3, fox, "fox")]
            assert memory.class_counts() == {"cat": 1, "dog": 1, "fox": 2} and memory.items([held[1]])[0].label == "dog"
            memory.remove(result.ids)
        copies = memory.add_vectors(x[1:2], ["bird"])  # allowed (the default): added, as before
        assert memory.items(copies)[0].label == "bird"


def test_eval_keeps_queries_given_no_label_apart_from_a_label_spelled_none(tmp_path, cli):
    """A query no neighbour votes for gets no label. `eval --json` wrote that as the key
    "None" in the confusion table, the same as a class called "None"; it is counted under
    `abstained` instead, and the confusion table holds labels only."""
    x, y = load_digits(return_X_y=True)
    keep = y < 2
    x, names = x[keep].astype(np.float32), np.where(y[keep] == 0, "None", "cat")
    np.save(tmp_path / "x.npy", x[:250])
    np.save(tmp_path / "y.npy", names[:250])
    np.save(tmp_path / "q.npy", x[250:])
    (tmp_path / "truth.txt").write_text("\n".join(names[250:]))
    memdir = tmp_path / "mem"
    cli("create", memdir, "--encoder", "none", "--dim", "64", check=True)
    cli("add-vectors", memdir, "--vectors", tmp_path / "x.npy", "--labels", tmp_path / "y.npy", check=True)
    with Memory.open(memdir) as memory:
        memory.set_weight(memory.ids(labels=["cat"]), 0.0)  # blocked: a query among them finds no vote
        decisions = memory.classify_vectors(x[250:], k=1)
    answers = list(zip(names[250:], (d.label for d in decisions), strict=True))
    unanswered = {t: sum(label is None for true, label in answers if true == t) for t in ("None", "cat")}
    answered_none = sum(label == "None" for true, label in answers if true == "None")
    assert unanswered["cat"] > 0 and answered_none > 0 and unanswered["None"] == 0  # both kinds of answer occur
    report = json_lines(cli("eval", memdir, "--queries", tmp_path / "q.npy", "--labels", tmp_path / "truth.txt",
                            "-k", "1", "--json", check=True))[0]
    assert report["abstained"] == unanswered
    assert report["confusion"]["None"] == {"None": answered_none}  # the label "None", answered right
    assert "None" not in report["confusion"]["cat"]  # no 1 was answered "None"
    assert sum(map(sum, (c.values() for c in report["confusion"].values()))) + sum(unanswered.values()) == len(answers)
    said = cli("eval", memdir, "--queries", tmp_path / "q.npy", "--labels", tmp_path / "truth.txt", "-k", "1",
               check=True).stdout
    assert f"({unanswered['cat']} given no label)" in said


def test_eval_of_vectors_the_memory_holds_warns_that_each_finds_itself(memdir, digit_vectors, tmp_path, cli):
    """`eval --queries` of rows the memory was built from said nothing, where `eval` of a
    folder warns of images the memory holds: a row finds itself, so the accuracy flatters.
    Held rows are found by their content (the bits once made unit length, as `add-vectors`
    finds rows it holds), and still scored."""
    root, files, _, _ = digit_vectors
    train, labels = np.load(files["train"]), np.load(files["train_labels"])
    mixed = np.concatenate([train[:5], np.load(files["test"])[:5]])  # 5 held, 5 unseen
    np.save(tmp_path / "mixed.npy", mixed)
    (tmp_path / "mixed.txt").write_text("\n".join(map(str, [*labels[:5], *labels[:5]])))
    said = cli("eval", memdir, "--queries", tmp_path / "mixed.npy", "--labels", tmp_path / "mixed.txt", check=True)
    assert "warning: the memory already holds 5 of the 10 test vectors (the same content)" in said.stderr
    report = json_lines(cli("eval", memdir, "--queries", tmp_path / "mixed.npy", "--labels", tmp_path / "mixed.txt",
                            "--json", check=True))[0]
    with Memory.open(memdir) as memory:
        first = sorted(memory.ids())[:5]  # the first rows added, in order
    assert report["total"] == 10 and report["in_memory"] == 5
    assert report["in_memory_items"] == [{"path": f"{tmp_path / 'mixed.npy'}[{i}]", "id": first[i]} for i in range(5)]
    unseen = cli("eval", memdir, "--queries", files["test"], "--labels", files["test_labels"], "--json", check=True)
    assert json_lines(unseen)[0]["in_memory"] == 0 and "warning" not in unseen.stderr


def test_evaluate_vectors_refuses_labels_that_are_not_text(tmp_path):
    """Integer test labels were compared with the stored text labels: every answer was
    scored wrong (accuracy 0.0) and every label named unknown, with no error."""
    from vismem.evaluate import evaluate_vectors

    x, y = load_digits(return_X_y=True)
    x = x[:60].astype(np.float32)
    with Memory.create(tmp_path / "m", encoder=None, dim=64) as memory:
        memory.add_vectors(x, [str(label) for label in y[:60]])
        with pytest.raises(InvalidInputError, match="test labels must be strings.*int64"):
            evaluate_vectors(memory, x, y[:60])
        # one string is every row's label, as add_vectors takes it (it was one per character)
        zeros = x[y[:60] == 0]
        report = evaluate_vectors(memory, zeros, "0", k=1)
        assert report.total == len(zeros) and report.accuracy == 1.0 and report.per_class == {"0": 1.0}


def test_label_columns_line_up_by_display_width(tmp_path, cli):
    """Labels of wide characters (日本 and 🐱 take two terminal cells a character) and one
    longer than the column: eval's per-class table, search's hits and prune's items padded
    by characters, so the columns after them wandered."""
    from rich.cells import cell_len

    x, y = load_digits(return_X_y=True)
    names = {0: "日本", 1: "🐱", 2: "cat", 3: "a label wider than the column"}
    rows = np.concatenate([np.flatnonzero(y == d)[:50] for d in names])
    labels = [names[d] for d in y[rows]]
    train, test = [i for i in range(len(rows)) if i % 50 < 40], [i for i in range(len(rows)) if i % 50 >= 40]
    given = [labels[i] for i in train]
    given[100], given[101], given[0] = "日本", "日本", "🐱"  # mislabelled: prune has items to show
    np.save(tmp_path / "train.npy", x[rows][train].astype(np.float32))
    (tmp_path / "train.txt").write_text("\n".join(given) + "\n", encoding="utf-8")
    np.save(tmp_path / "test.npy", x[rows][test].astype(np.float32))
    (tmp_path / "test.txt").write_text("\n".join(labels[i] for i in test) + "\n", encoding="utf-8")
    memdir = tmp_path / "mem"
    cli("create", memdir, "--encoder", "none", "--dim", "64", check=True)
    cli("add-vectors", memdir, "--vectors", tmp_path / "train.npy", "--labels", tmp_path / "train.txt", check=True)

    def columns(lines: list[str], before: str) -> set[int]:
        """The display column at which `before` (a regular expression) starts on each line."""
        import re

        return {cell_len(line[: re.search(before, line).start()]) for line in lines}  # type: ignore[union-attr]

    table = cli("eval", memdir, "--queries", tmp_path / "test.npy", "--labels", tmp_path / "test.txt",
                check=True).stdout.splitlines()[1:]
    assert sorted(line.strip().split("  ")[0] for line in table) == sorted(names.values())
    assert len(columns(table, r"\d+\.\d\d%")) == 1
    hits = [line for line in cli("search", memdir, "--queries", tmp_path / "test.npy", "-k", "4",
                                 check=True).stdout.splitlines() if line.startswith("  ")]
    assert {label for label in names.values() if any(label in line for line in hits)} == set(names.values())
    assert len(columns(hits, r" \d\.\d{4}  ")) == 1
    pruned = [line for line in cli("prune", memdir, "--mode", "soft", check=True).stdout.splitlines()
              if line.startswith("  item")]
    assert {"日本", "🐱"} <= {label for label in names.values() if any(label in line for line in pruned)}
    assert len(columns(pruned, "  v=")) == 1


def test_a_bad_row_of_a_vector_file_is_named_by_its_file_and_its_row_there(memdir, digit_vectors, tmp_path, cli):
    """Every command reading vectors from a file said "row 0 holds NaN" with no file named
    (add-vectors takes one file, eval two); and past the first 4,096 queries, answered a
    chunk at a time, the row was counted from the chunk: row 4,100 was "row 4", after
    4,096 queries had been evaluated."""
    _, files, test, _ = digit_vectors
    many = np.concatenate([test] * 42)  # 4,200 rows
    many[4100, 3] = np.nan
    q = tmp_path / "q.npy"
    np.save(q, many)
    (tmp_path / "q.txt").write_text("0\n" * len(many))
    said = f"--queries {q}: vectors must be finite numbers: row 4100 holds NaN or infinity"
    for command in (("eval", "--labels", tmp_path / "q.txt"), ("classify",), ("search",), ("tune-index",)):
        result = cli(command[0], memdir, "--queries", q, *command[1:], "--json")
        assert result.returncode == 1 and result.stdout == "", (command, result.stderr)
        assert result.stderr.splitlines()[-1] == f"error: {said}", (command, result.stderr)
        assert "4096/" not in result.stderr  # refused before any query is answered
    zero = test[:5].copy()
    zero[2] = 0
    np.save(tmp_path / "zero.npy", zero)
    result = cli("explain", memdir, "--queries", tmp_path / "zero.npy", "--row", "2", "--out", tmp_path / "x.png")
    assert result.returncode == 1 and result.stderr.splitlines()[-1] == (
        f"error: --queries {tmp_path / 'zero.npy'}: vectors must not be all zeros (cosine similarity needs a "
        "direction): row 2")
    np.save(tmp_path / "labels.npy", np.zeros(len(many), dtype=np.int64))
    with Memory.open(memdir) as memory:
        held = len(memory)
    result = cli("add-vectors", memdir, "--vectors", q, "--labels", tmp_path / "labels.npy")
    assert result.returncode == 1 and result.stderr.splitlines()[-1] == (
        f"error: --vectors {q}: vectors must be finite numbers: row 4100 holds NaN or infinity")
    with Memory.open(memdir) as memory:
        assert len(memory) == held
    result = cli("eval-protocols", "knn", "--embeddings", q, "--labels", tmp_path / "labels.npy",
                 "--out", tmp_path / "report")
    assert result.returncode == 1 and result.stderr.splitlines()[-1] == (
        f"error: --embeddings {q}: vectors must be finite numbers: row 4100 holds NaN or infinity")


def test_a_k_larger_than_the_memory_is_reported_as_the_neighbours_that_voted(tmp_path, cli):
    """A memory of 5 items answered `-k 50` as a 5-NN vote and reported k=50 without a word,
    in classify, eval and the Python API alike. Each says how many neighbours voted
    (k_used), and the CLI warns on stderr, leaving stdout to the JSON."""
    from vismem.evaluate import evaluate_vectors

    x, y = load_digits(return_X_y=True)
    x = x.astype(np.float32)
    np.save(tmp_path / "x.npy", x[:5])
    (tmp_path / "y.txt").write_text("\n".join(map(str, y[:5])))
    np.save(tmp_path / "q.npy", x[100:103])
    (tmp_path / "truth.txt").write_text("\n".join(map(str, y[100:103])))
    memdir = tmp_path / "mem"
    cli("create", memdir, "--encoder", "none", "--dim", "64", check=True)
    cli("add-vectors", memdir, "--vectors", tmp_path / "x.npy", "--labels", tmp_path / "y.txt", check=True)
    classified = cli("classify", memdir, "--queries", tmp_path / "q.npy", "-k", "50", "--json", check=True)
    assert [(d["k"], d["k_used"]) for d in json_lines(classified)] == [(50, 5)] * 3
    assert "warning: k=50, but at most 5 neighbours voted on a query" in classified.stderr
    shown = cli("classify", memdir, "--queries", tmp_path / "q.npy", "-k", "50", check=True).stdout
    assert "k=50 (5 voted: the memory holds no more that can)" in shown
    evaluated = cli("eval", memdir, "--queries", tmp_path / "q.npy", "--labels", tmp_path / "truth.txt",
                    "-k", "50", "--json", check=True)
    report = json_lines(evaluated)[0]
    assert (report["k"], report["k_used"]) == (50, 5)
    assert "warning: k=50, but at most 5 neighbours voted on a query" in evaluated.stderr
    within = cli("classify", memdir, "--queries", tmp_path / "q.npy", "-k", "3", "--json", check=True)
    assert [d["k_used"] for d in json_lines(within)] == [3] * 3 and "warning" not in within.stderr
    restricted = cli("classify", memdir, "--queries", tmp_path / "q.npy", "-k", "3", "--only-label", str(y[0]),
                     "--json", check=True)  # the restriction lets one item vote
    assert [d["k_used"] for d in json_lines(restricted)] == [1] * 3
    assert "warning: k=3, but at most 1 neighbour voted" in restricted.stderr
    with Memory.open(memdir) as memory:
        assert [d.k_used for d in memory.classify_vectors(x[100:103], k=50)] == [5] * 3
        assert evaluate_vectors(memory, x[100:103], [str(v) for v in y[100:103]], k=50).to_dict()["k_used"] == 5

"""The HTTP API, through FastAPI's TestClient, on real stores and real images."""

from __future__ import annotations

import asyncio
import io
import json
import math
import os
import re
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import HOLD_INDEX_LOCK, holding, json_lines, serving, start_server, stop_server, unit_vectors
from conftest import png_bytes as png
from fastapi.testclient import TestClient
from PIL import Image

import vismem.waits
from vismem import Memory
from vismem.encoders import create_encoder
from vismem.errors import InvalidInputError
from vismem.service import ServiceSettings, create_app
from vismem.service.app import BROWSE_PAGE
from vismem.service.batcher import EncodeBatcher
from vismem.service.http import STATUS

TOKEN = "test-token-123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
LABELS = ("0", "1", "2")
PER_LABEL = 6


def upload(name: str, data: bytes, content_type: str = "image/png"):
    return ("files", (name, data, content_type))


@pytest.fixture
def digit_sets(digits):
    """Per label: PER_LABEL memory images and 2 held-out queries (PNG bytes)."""
    images, labels = digits
    chosen: dict[str, list[bytes]] = {}
    for label in LABELS:
        members = [i for i, lab in enumerate(labels) if lab == label]
        chosen[label] = [png(images[i]) for i in members[: PER_LABEL + 2]]
    return chosen


@pytest.fixture
def memory(tmp_path, digit_sets):
    mem = Memory.create(tmp_path / "mem", encoder="pixels")
    for label in LABELS:
        report = mem.add_image_bytes(
            [(f"{label}-{i}.png", data) for i, data in enumerate(digit_sets[label][:PER_LABEL])],
            label=label, source=f"set-{label}",
        )
        assert len(report.added) == PER_LABEL
    yield mem
    mem.close()


def client_for(memory: Memory, **settings) -> TestClient:
    return TestClient(create_app(memory, ServiceSettings(**settings)))


@pytest.fixture
def client(memory):
    with client_for(memory, token=TOKEN) as c:
        yield c


def classify(client, data: bytes, **form):
    return client.post("/classify", files={"file": ("q.png", data, "image/png")},
                       data={k: v if isinstance(v, list) else str(v) for k, v in form.items()})


# ---- reading -------------------------------------------------------------------------


def test_classify_returns_the_cli_decision(client, memory, digit_sets, tmp_path, cli):
    query = digit_sets["1"][PER_LABEL]
    response = classify(client, query, k=5)
    assert response.status_code == 200
    got = response.json()
    assert got["label"] == "1" and got["k"] == 5 and got["vote"] == "rank"
    assert len(got["neighbors"]) == 5
    (tmp_path / "q.png").write_bytes(query)
    memory.close()  # the CLI opens the same directory
    shown = cli("classify", memory.path, tmp_path / "q.png", "-k", "5", "--json", check=True)
    import json

    expected = json.loads(shown.stdout.splitlines()[0])
    assert set(got) == set(expected)
    assert got["label"] == expected["label"] and got["scores"].keys() == expected["scores"].keys()
    assert [n["id"] for n in got["neighbors"]] == [n["id"] for n in expected["neighbors"]]
    for ours, theirs in zip(got["neighbors"], expected["neighbors"], strict=True):
        assert ours["distance"] == pytest.approx(theirs["distance"], abs=1e-5)


def test_classify_options_and_errors(client, digit_sets):
    query = digit_sets["2"][PER_LABEL]
    assert classify(client, query, k=3, vote="plurality").json()["vote"] == "plurality"
    bad_vote = classify(client, query, vote="majority")
    assert bad_vote.status_code == 422 and "'rank'" in bad_vote.json()["error"]  # the schema's enum
    for k in (0, 10**9):
        too = classify(client, query, k=k)
        assert too.status_code == 422 and too.json()["error"].startswith("invalid request: k:")
    missing = client.post("/classify")
    assert missing.status_code == 400 and "`file`" in missing.json()["error"]
    uncalibrated = classify(client, query, abstain="true")
    assert uncalibrated.status_code == 409 and "vismem calibrate" in uncalibrated.json()["error"]


def test_classify_abstains_on_an_unknown_kind_of_image(memory, digit_sets):
    from PIL import Image
    from skimage import data

    from vismem.curate import calibrate_memory

    calibrate_memory(memory)  # each item scored against the rest: a small memory calibrates too
    with client_for(memory) as c:
        known = classify(c, digit_sets["1"][PER_LABEL], abstain="true").json()
        assert known["abstained"] is False and known["label"] == "1"
        unknown = classify(c, png(Image.fromarray(data.astronaut())), abstain="true").json()
        assert unknown["abstained"] is True and unknown["label"] is None


def test_api_docs_are_served_without_a_cdn(client):
    page = client.get("/docs")
    assert page.status_code == 200 and "/openapi.json" in page.text
    assert "cdn" not in page.text.lower() and "/swagger/swagger-ui-bundle.js" in page.text
    script = client.get("/swagger/swagger-ui-bundle.js")
    assert script.status_code == 200 and len(script.content) > 100_000


def test_empty_memory_is_a_clear_409(tmp_path, digit_sets):
    with Memory.create(tmp_path / "empty", encoder="pixels") as mem, client_for(mem) as c:
        response = classify(c, digit_sets["0"][0])
    assert response.status_code == 409 and "empty" in response.json()["error"]


def test_stats_is_info_and_healthz(client, memory):
    stats = client.get("/stats").json()
    info = memory.info()
    assert stats == {**info, "disk_bytes": stats["disk_bytes"]}
    assert stats["classes"] == {label: PER_LABEL for label in LABELS}
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["read_only"] is False


def test_get_item_and_thumbnail(client):
    item = client.get("/items/1").json()
    assert item["label"] == "0" and item["source"] == "set-0" and item["weight"] == 1.0
    assert item["path"] is None and item["meta"]["name"] == "0-0.png"
    thumb = client.get("/items/1/thumbnail")
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    image = Image.open(io.BytesIO(thumb.content))
    assert image.format == "JPEG" and max(image.size) <= 128
    assert client.get("/items/999").status_code == 404
    missing = client.get("/items/999/thumbnail")
    assert missing.status_code == 404 and missing.json() == {"error": "no item with id 999"}
    page = client.get("/items", params={"label": "2", "limit": 4}).json()
    assert page["total"] == PER_LABEL and [i["label"] for i in page["items"]] == ["2"] * 4


def test_thumbnail_of_an_item_without_one_says_so(client, memory):
    """A missing item and an item added as a vector both answered 404 "no such item, or
    added as a vector": now the one is "no item with id N" and the other says that the
    item has no thumbnail, and why it may have none."""
    (vector_item,) = memory.add_vectors(unit_vectors(1, memory.dim, seed=5), "0", sources="vectors")
    answer = client.get(f"/items/{vector_item}/thumbnail")
    assert answer.status_code == 404, answer.text
    said = answer.json()["error"]
    assert said.startswith(f"item {vector_item} has no thumbnail") and "no such item" not in said, said
    assert client.get(f"/items/{vector_item}").status_code == 200


# ---- editing -------------------------------------------------------------------------


def test_add_items_reports_ids_and_skips(client, digits, digit_sets):
    images, _ = digits
    fresh = png(images[-1])
    response = client.post(
        "/items",
        files=[upload("new.png", fresh), upload("../../etc/evil.png", png(images[-2])),
               upload("broken.png", b"\x89PNG not really"), upload("again.png", digit_sets["0"][0])],
        data={"label": "seven", "source": "web"}, headers=AUTH,
    )
    assert response.status_code == 201, response.text
    report = response.json()
    assert report["added"] == 2 and len(report["ids"]) == 2
    reasons = {s["path"]: s["reason"] for s in report["skipped_items"]}
    assert reasons["broken.png"].startswith("not an image")
    # held as a "0": not added, and not passed over as a duplicate either
    assert reasons["again.png"].startswith("conflicting label: item ") and "labelled '0', not 'seven'" in reasons[
        "again.png"] and report["conflicts"] == 1
    names = [client.get(f"/items/{i}").json()["meta"]["name"] for i in report["ids"]]
    assert names == ["new.png", "evil.png"]  # a client's name is only ever a label for it
    assert client.get("/stats").json()["classes"]["seven"] == 2
    assert classify(client, fresh, k=1).json()["label"] == "seven"


# (files, label, the CLI's exit code, the service's status): an add that adds nothing is an
# error only when every file was refused and none is held already, under any label
NOTHING_ADDED = [
    (("broken.png", "empty.png"), "seven", 1, 422),  # none of them readable
    (("broken.png",), "seven", 1, 422),
    (("held.png",), "0", 0, 201),  # held already with this label: done already
    (("held.png", "broken.png"), "0", 3, 201),
    (("held.png",), "seven", 3, 201),  # held under another label: the conflict is said, as the CLI does
    (("fresh.png", "broken.png"), "seven", 3, 201),  # some added
]


@pytest.mark.parametrize(("names", "label", "exit_code", "status"), NOTHING_ADDED)
def test_an_add_that_adds_nothing_is_refused_as_the_cli_refuses_it(tmp_path, digits, digit_sets, cli, names, label,
                                                                 exit_code, status):
    """Every upload refused (unreadable, not an image) answered 201 with `added: 0`, where
    `vismem add` exits 1, nothing changed. Now it is a 422 that names each file's reason;
    an add of files held already with the same label stays a success, as the CLI's exit 0."""
    images, _ = digits
    contents = {"broken.png": b"\x89PNG not really", "empty.png": b"", "held.png": digit_sets["0"][0],
                "fresh.png": png(images[-1])}
    served = Memory.create(tmp_path / "served", encoder="pixels")
    beside = Memory.create(tmp_path / "beside", encoder="pixels")
    for mem in (served, beside):
        mem.add_image_bytes([("held.png", digit_sets["0"][0])], label="0", source="set-0")
    beside.close()
    with served, client_for(served, token=TOKEN) as c:
        answer = c.post("/items", files=[upload(name, contents[name]) for name in names], data={"label": label},
                        headers=AUTH)
        assert answer.status_code == status, answer.text
        if status == 422:
            message = answer.json()["error"]
            which = "the file given could not" if len(names) == 1 else f"none of the {len(names)} files given could"
            assert message.startswith(f"{which} be read: nothing added"), message
            for name in names:
                assert f"{name}: not an image" in message or f"{name}: empty" in message, message
            assert c.get("/stats").json()["items"] == 1  # nothing stored
        items = c.get("/stats").json()["items"]
    for name in names:
        (tmp_path / name).write_bytes(contents[name])
    done = cli("add", tmp_path / "beside", *(tmp_path / name for name in names), "--label", label)
    assert done.returncode == exit_code, done.stderr
    with Memory.open(tmp_path / "beside") as reopened:
        assert len(reopened) == items  # the same items as the service's


def test_delete_by_id_label_source_and_where(client, memory, digit_sets):
    query = digit_sets["0"][PER_LABEL]
    nearest = classify(client, query, k=1).json()["neighbors"][0]["id"]
    total = 3 * PER_LABEL
    assert client.delete(f"/items/{nearest}", headers=AUTH).json() == {
        "removed": 1, "ids": [nearest], "missing": [], "items": total - 1, "unfinished": None}
    assert client.get(f"/items/{nearest}").status_code == 404
    assert nearest not in [n["id"] for n in classify(client, query, k=20).json()["neighbors"]]
    assert client.delete(f"/items/{nearest}", headers=AUTH).status_code == 404
    for selector in ("", "?label=1&source=set-1", "?label=1&label=2", "?colour=red", "?id=1&label=1"):
        refused = client.delete("/items" + selector, headers=AUTH)  # exactly one selector, as the CLI
        assert refused.status_code == 422 and refused.json()["error"].startswith("invalid request"), selector
    assert client.get("/stats").json()["items"] == total - 1  # nothing changed
    some = [i["id"] for i in client.get("/items", params={"label": "0", "limit": 2}).json()["items"]]
    by_ids = client.delete("/items", params={"id": [*some, 999]}, headers=AUTH).json()
    assert by_ids == {"removed": 2, "ids": some, "missing": [999], "items": total - 3,  # CLI: exit 3
                      "unfinished": None}
    assert client.delete("/items?label=1", headers=AUTH).json()["removed"] == PER_LABEL
    name = client.get("/items", params={"source": "set-2", "limit": 1}).json()["items"][0]["meta"]["name"]
    by_meta = client.delete("/items", params={"where": f"name={name}"}, headers=AUTH).json()
    assert by_meta["removed"] == 1
    assert client.delete("/items?source=set-2", headers=AUTH).json()["removed"] == PER_LABEL - 1
    assert client.get("/stats").json()["classes"] == {"0": PER_LABEL - 3}
    memory.close()
    with Memory.open(memory.path) as reopened:  # durable: another process sees it
        assert reopened.class_counts() == {"0": PER_LABEL - 3}


def test_a_delete_that_matches_no_item_is_a_404_as_the_cli_exits_1(client, memory, tmp_path, cli):
    """`DELETE /items?label=X` with no item labelled X (or a source, a where, ids of which
    none exists) answered 200 `removed: 0`, where `vismem remove` exits 1, nothing changed.
    Now each is a 404 in the CLI's words, naming the selector; some missing ids stay a 200
    that lists them (the CLI's exit 3)."""
    cases = [({"label": "one"}, "no item is labelled 'one'; nothing changed"),
             ({"label": "00"}, "no item is labelled '00'; nothing changed (did you mean '0'?)"),
             ({"source": "web"}, "no item has source 'web'; nothing changed"),
             ({"where": ["name=nothing.png", "year=2024"]},
              "no item matches where name=nothing.png and where year=2024 (all must hold); nothing changed"),
             ({"id": [998, 999]}, "no items with ids [998, 999]; nothing changed")]
    for selector, says in cases:
        refused = client.delete("/items", params=selector, headers=AUTH)
        assert refused.status_code == 404 and refused.json() == {"error": says}, (selector, refused.text)
    assert client.delete("/items/999", headers=AUTH).json() == {"error": "no item with id 999"}
    assert client.get("/stats").json()["items"] == 3 * PER_LABEL  # nothing changed
    memory.close()
    for selector, says in cases:  # the CLI's words, but for its own spelling of the options
        args = [f"--{key}={value}" for key, values in selector.items()
                for value in (values if isinstance(values, list) else [values])]
        done = cli("remove", memory.path, *args)
        said = says.replace("where", "--where").replace(" and --where", " --where")  # as typed
        assert done.returncode == 1 and done.stderr.strip() == f"error: {said}", (args, done.stderr)


def test_patch_relabels_blocks_and_boosts(client, digit_sets):
    query = digit_sets["1"][PER_LABEL]
    before = classify(client, query, k=3).json()
    first = before["neighbors"][0]["id"]
    blocked = client.patch(f"/items/{first}", json={"weight": 0}, headers=AUTH)
    assert blocked.status_code == 200 and blocked.json()["weight"] == 0.0
    after = classify(client, query, k=3).json()
    assert after["neighbors"][0]["id"] == first and after["neighbors"][0]["weight"] == 0.0
    relabelled = client.patch(f"/items/{first}", json={"label": "one", "weight": 2.5}, headers=AUTH).json()
    assert relabelled["label"] == "one" and relabelled["weight"] == 2.5
    assert "one" in classify(client, query, k=3).json()["scores"]
    for nothing in ({}, {"label": None}, {"label": " "}, {"weight": 1, "colour": "red"}):
        assert client.patch(f"/items/{first}", json=nothing, headers=AUTH).status_code == 422
    assert client.patch(f"/items/{first}", json={"weight": -1}, headers=AUTH).status_code == 422
    assert client.patch("/items/999", json={"weight": 1}, headers=AUTH).status_code == 404


def test_patch_of_items_none_of_which_exists_is_not_found_as_the_cli_says(client, memory, cli):
    """`vismem relabel/block/boost/unblock` exit 1 when none of the ids exists; `PATCH
    /items` answered 200 with every id under `missing`. Some missing stays 200."""
    before = client.get("/stats").json()
    answer = client.patch("/items", json={"ids": [999, 998], "weight": 0}, headers=AUTH)
    assert answer.status_code == 404 and answer.json() == {"error": "no items with ids [998, 999]; nothing changed"}
    assert client.get("/stats").json() == before
    some = client.patch("/items", json={"ids": [1, 999], "weight": 1}, headers=AUTH)
    assert some.status_code == 200 and some.json()["missing"] == [999]
    memory.close()
    done = cli("block", memory.path, "--id", "999", "--id", "998")
    assert done.returncode == 1 and done.stderr.strip() == f"error: {answer.json()['error']}", done.stderr


def test_a_label_with_a_control_character_is_refused_naming_it_and_nothing_changes(client, digits):
    """An escape sequence in a label was stored, then printed raw by `vismem info`."""
    images, _ = digits
    before = client.get("/stats").json()
    for bad in ("cat\x1b[2J", "c\x00t", "cat\x85"):
        for answer in (client.patch("/items/1", json={"label": bad}, headers=AUTH),
                       client.patch("/items", json={"ids": [1, 2], "label": bad}, headers=AUTH),
                       client.post("/items", files=[upload("new.png", png(images[-3]))], data={"label": bad},
                                   headers=AUTH)):
            said = answer.json()["error"]
            assert answer.status_code == 422 and f"label {bad!r} holds the control character" in said, said
    assert client.get("/stats").json() == before and client.get("/items/1").json()["label"] == "0"
    # the document says so: a generated client or fuzzer keeps to it
    schema = client.get("/openapi.json").json()["components"]["schemas"]["ItemChange"]["properties"]["label"]
    assert schema["pattern"].startswith(r"^[^\x00-\x1f\x7f-\x9f]*")
    # and any script is a label: accents, CJK, emoji
    answer = client.patch("/items", json={"ids": [1], "label": "café 日本 🐱"}, headers=AUTH)
    assert answer.status_code == 200 and client.get("/items/1").json()["label"] == "café 日本 🐱"


def test_a_source_or_metadata_with_a_control_character_is_refused_naming_it(client, digits):
    """Sources and metadata were stored as given, then printed raw by `vismem info` and `search`."""
    images, _ = digits
    before = client.get("/stats").json()
    bad = "cat\x1b[2J"
    for data, said in (({"label": "0", "source": bad}, f"source {bad!r} holds the control character"),
                       ({"label": "0", "meta": [f"note={bad}"]}, f"metadata note={bad!r} holds the control"),
                       ({"label": "0", "meta": ['note="cat\\u001b[2J"']}, f"metadata note={bad!r} holds the")):
        answer = client.post("/items", files=[upload("new.png", png(images[-3]))], data=data, headers=AUTH)
        assert answer.status_code == 422 and said in answer.json()["error"], answer.json()
    assert client.get("/stats").json() == before
    # a restriction may still name such a source: a memory may hold one from before
    assert client.get("/items", params={"source": bad}).status_code == 200


def test_a_body_that_is_not_a_json_object_is_named(client):
    """`curl -X PATCH -d '{"weight": 0}'` sends a form content type: the 422 once said only
    'Field required' or 'Input should be a valid dictionary', naming nothing. (A form is
    now a 415, as any body of a type the endpoint does not take.)"""
    form = {**AUTH, "Content-Type": "application/x-www-form-urlencoded"}
    for path in ("/items/1", "/items"):
        for status, answer in ((415, client.patch(path, content=b'{"weight": 0}', headers=form)),
                               (422, client.patch(path, headers=AUTH)),
                               (422, client.patch(path, json=[1], headers=AUTH))):
            said = answer.json()["error"]
            assert answer.status_code == status and "JSON object" in said and "Content-Type: application/json" in said
        broken = client.patch(path, content=b'{"weight": 0,}', headers={**AUTH, "Content-Type": "application/json"})
        assert broken.status_code == 400 and "not JSON" in broken.json()["error"]  # as the 400 row says
        # a JSON object that asks for no change is one, and is told what to send (it was told the above)
        nothing = client.patch(path, json={} if path == "/items/1" else {"ids": [1]}, headers=AUTH)
        assert nothing.status_code == 422
        assert nothing.json()["error"] == "invalid request: send a new label, a weight, or both"
    assert client.get("/items/1").json()["weight"] == 1.0


def test_a_json_body_python_cannot_read_says_why(client):
    """A JSON body that is not UTF-8 (Latin-1 text, a stray byte), nests past the parser's
    depth, or holds a number of more than 4,300 digits answered FastAPI's "There was an
    error parsing the body", naming nothing. Each now says why, as a JSON syntax error does."""
    kind = {**AUTH, "Content-Type": "application/json"}
    for path, body, why in (("/items/1", '{"label": "café"}'.encode("latin-1"), "it is not UTF-8 text"),
                            ("/items/1", b'{"label": "\xff"}', "it is not UTF-8 text"),
                            ("/checkpoints", b'{"name": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
                             "it nests too deeply"),
                            ("/items", b'{"ids": [' + b"9" * 5000 + b'], "weight": 0}', "a number is too long")):
        answer = (client.post if path == "/checkpoints" else client.patch)(path, content=body, headers=kind)
        assert answer.status_code == 400, (path, answer.text)
        assert answer.json()["error"].startswith(f"the body is not JSON: {why}"), (path, answer.text)
    assert client.get("/items/1").json()["label"] == "0" and client.get("/checkpoints").json() == []


def test_a_value_of_the_wrong_form_is_told_the_rule_not_a_regular_expression(client, digit_sets):
    """A blank label, a `where` or `meta` without KEY=, and a checkpoint name of other
    characters answered `String should match pattern '[^\\t\\n\\x0b...]'`: the schema's
    regular expression. Each now says the rule in words, and the value sent."""
    image = [upload("a.png", digit_sets["0"][0])]
    for answer, field, rule in (
            (client.get("/items", params={"label": "  "}), "label.0", "needs a character that is not a space"),
            (client.post("/items", files=image, data={"label": "\u3000"}, headers=AUTH), "label",
             "needs a character that is not a space"),
            (client.delete("/items", params={"label": " "}, headers=AUTH), "label", "needs a character"),
            (client.get("/items", params={"where": "camera"}), "where.0", "expected KEY=VALUE"),
            (client.post("/search", files={"file": ("q.png", digit_sets["0"][0], "image/png")},
                         data={"where": "a-b=1"}), "where.0", "expected KEY=VALUE"),
            (client.post("/items", files=image, data={"label": "x", "meta": "=1"}, headers=AUTH), "meta.0",
             "expected KEY=VALUE"),
            (client.post("/checkpoints", json={"name": "../x"}, headers=AUTH), "name", "a checkpoint's name is"),
            (client.delete("/checkpoints/%E7%8C%AB", headers=AUTH), "name", "a checkpoint's name is")):
        said = answer.json()["error"]
        assert answer.status_code == 422 and said.startswith(f"invalid request: {field}: {rule}"), said
        assert "pattern" not in said and "got " in said, said
    assert client.get("/stats").json()["items"] == 3 * PER_LABEL


def test_a_form_field_the_endpoint_does_not_take_is_refused(client, memory, digit_sets):
    """FastAPI ignored them: `only-label` (the CLI's spelling) searched every item, a
    misspelt `sourse` was dropped, `counterfactual` sent as a field (it is a query
    parameter) did nothing, and of two `file` parts the first was silently dropped."""
    query = digit_sets["1"][PER_LABEL]
    for form, says in (({"only-label": "2"}, "unknown form field only-label; this endpoint takes file, vector, "),
                       ({"only-label": "2"}, ": only_label (not only-label)"),
                       ({"counterfactual": "true"}, "as a query parameter, ?counterfactual=true"),
                       ({"k": ["1", "2"]}, "k given more than once; it takes one")):
        answer = classify(client, query, **form)
        assert answer.status_code == 422 and says in answer.json()["error"], answer.text
    twice = client.post("/search", files=[("file", ("a.png", query, "image/png")),
                                          ("file", ("b.png", digit_sets["2"][0], "image/png"))])
    assert twice.status_code == 422 and "file given more than once" in twice.json()["error"]
    added = client.post("/items", files=[upload("new.png", digit_sets["2"][PER_LABEL])],
                        data={"label": "2", "sourse": "web"}, headers=AUTH)
    assert added.status_code == 422 and "unknown form field sourse" in added.json()["error"]
    assert len(memory) == 3 * PER_LABEL  # nothing was added
    # query parameters likewise: a form field sent in the URL, or a typo in a listing's
    in_url = client.post("/classify?only_label=2", files={"file": ("q.png", query, "image/png")})
    assert in_url.status_code == 422
    assert "unknown query parameter only_label; this endpoint takes counterfactual" in in_url.json()["error"]
    typo = client.get("/items?lable=2")
    assert typo.status_code == 422 and "unknown query parameter lable; this endpoint takes offset, limit, label" \
        in typo.json()["error"]
    assert client.get("/items?label=2&limit=1").json()["total"] == PER_LABEL
    restricted = classify(client, query, only_label=["2"], k=3)  # the fields it takes still work
    assert restricted.status_code == 200 and {n["label"] for n in restricted.json()["neighbors"]} == {"2"}


def test_a_query_parameter_no_endpoint_takes_is_refused(client, memory):
    """Only GET /items, /classify, /search and POST /items refused them: `GET
    /checkpoints?x=1` answered 200, and `PATCH /items/1?lable=cat` changed the weight."""
    item = memory.targets(label="0")[0]
    client.post("/checkpoints", json={"name": "v1"}, headers=AUTH).raise_for_status()
    asked = [("GET", "/healthz"), ("GET", "/stats"), ("GET", "/checkpoints"), ("GET", f"/items/{item}"),
             ("GET", f"/items/{item}/thumbnail"), ("HEAD", "/stats"), ("DELETE", f"/items/{item}"),
             ("PATCH", f"/items/{item}"), ("POST", "/checkpoints"), ("DELETE", "/checkpoints/v1"),
             ("POST", "/checkpoints/v1/rollback")]
    body = {"PATCH": {"weight": 0.0}, "POST": {"name": "v2"}}
    for method, path in asked:
        json_body = body.get(method) if path != "/checkpoints/v1/rollback" else None
        answer = client.request(method, f"{path}?x=1", json=json_body, headers=AUTH)
        assert answer.status_code == 422, (method, path, answer.status_code)
        if method != "HEAD":
            assert "unknown query parameter x; this endpoint takes no query parameter" in answer.json()["error"]
    assert len(memory) == 3 * PER_LABEL and memory.get(item).weight == 1.0  # nothing changed
    assert [c.name for c in memory.checkpoints()] == ["v1"]
    assert client.delete("/items?label=0&x=1", headers=AUTH).status_code == 422  # its selector refuses it
    assert client.get("/stats").status_code == 200 and client.get(f"/items/{item}").status_code == 200
    for page in ("/", "/browse", "/docs"):  # fixed files that read no query string: a shared link opens
        answer = client.get(f"{page}?utm_source=mail&x=1")
        assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/html"), page


def test_a_body_sent_to_an_endpoint_that_reads_none_is_refused(client, memory):
    """`POST /checkpoints/{name}/rollback` with a body rolled back as if none had been sent,
    as did every endpoint that reads no body (`DELETE /items/1 {"label": "x"}` removed item
    1). Each now refuses any body as DELETE /items does: a 422 that says what it takes, and
    nothing changes. An empty body, with or without a Content-Type, is no body."""
    client.post("/checkpoints", json={"name": "v1"}, headers=AUTH).raise_for_status()
    added = memory.add_vectors(memory.vectors([1])[1], ["new"])[0]
    item = memory.targets(label="0")[0]
    for method, path, takes in (
            ("POST", "/checkpoints/v1/rollback", "POST /checkpoints/{name}/rollback takes only its path"),
            ("DELETE", f"/items/{item}", "DELETE /items/{item_id} takes only its path"),
            ("DELETE", "/checkpoints/v1", "takes only its path"),
            ("DELETE", "/items?label=0", "in the query string (DELETE /items?label=cat,"),
            ("GET", "/stats", "GET /stats takes no input"),
            ("GET", "/items?label=0&limit=2", "takes only its query string (offset, limit, label, source, where)")):
        for body in ({"json": {"name": "v1"}}, {"data": {"label": "0"}}, {"content": b"x"},
                     {"content": b"{}", "headers": {"Content-Type": "application/json"}}):
            answer = client.request(method, path, **{**body, "headers": {**AUTH, **body.get("headers", {})}})
            said = answer.json()["error"]
            assert answer.status_code == 422 and said.startswith("invalid request: "), (method, path, said)
            assert said.endswith(": this endpoint reads no body") and takes in said, said
    assert said == ("invalid request: GET /items takes only its query string (offset, limit, label, source, "
                    "where): this endpoint reads no body")
    assert len(memory) == 3 * PER_LABEL + 1 and memory.get(added).label == "new"  # nothing changed
    assert [c.name for c in memory.checkpoints()] == ["v1"]
    for headers in ({}, {"Content-Type": "application/json"}):  # no body: as the pages send it
        rolled = client.post("/checkpoints/v1/rollback", headers={**AUTH, **headers})
        assert rolled.status_code == 200 and rolled.json()["removed_ids"] == ([added] if not headers else [])
    assert client.delete(f"/items/{item}", headers={**AUTH, "Content-Type": "application/json"}).json()["removed"] == 1


# ---- security and limits -------------------------------------------------------------


def test_without_a_token_the_server_is_read_only(memory, digit_sets):
    with client_for(memory) as c:
        assert c.get("/healthz").json()["read_only"] is True
        assert classify(c, digit_sets["0"][PER_LABEL]).status_code == 200
        for response in (
            c.post("/items", files=[upload("a.png", digit_sets["0"][PER_LABEL])], data={"label": "x"}),
            c.delete("/items/1"), c.patch("/items/1", json={"weight": 0}),
        ):
            assert response.status_code == 403 and "read-only" in response.json()["error"]
    assert memory.info()["items"] == 3 * PER_LABEL


def test_editing_needs_the_right_token(client):
    for headers in ({}, {"Authorization": "Bearer wrong-token-xyz"}, {"Authorization": "Basic abc"}):
        response = client.patch("/items/1", json={"weight": 0}, headers=headers)
        assert response.status_code == 401 and "token" in response.json()["error"]
        assert response.headers["www-authenticate"] == "Bearer"
    assert client.get("/items/1").json()["weight"] == 1.0
    assert client.patch("/items/1", json={"weight": 0}, headers=AUTH).status_code == 200


@pytest.mark.parametrize("token", ["pässwörd123", "token-123 ", " token-123", "token\t123", "tok\x7fen-123"])
def test_a_token_no_header_can_carry_is_refused_at_start(memory, cli_process, token):
    """`serve --token pässwörd123` started with "edits enabled", and every edit then answered
    401: a header carries only ASCII (curl sends UTF-8, read back as Latin-1; a browser will
    not send it at all), and HTTP drops a value's edge spaces (the page trims them too)."""
    memory.close()
    for given in (["--token", token], []):
        refused = cli_process("serve", memory.path, "--port", "0", *given, timeout=30,
                              env={**os.environ, "VISMEM_TOKEN": token})
        assert refused.returncode == 1 and refused.stdout == ""
        said = refused.stderr.strip()
        assert said.startswith("error: the token ") and "ASCII" in said and "serving" not in said, said
        assert token.strip() not in said  # a secret is not echoed to the log


def test_a_token_with_inner_spaces_works(memory):
    with client_for(memory, token="correct horse battery") as c:
        sent = c.patch("/items/1", json={"weight": 0}, headers={"Authorization": "Bearer correct horse battery"})
        assert sent.status_code == 200, sent.text


def test_protect_reads(memory, digit_sets):
    with client_for(memory, token=TOKEN, protect_reads=True) as c:
        assert c.get("/healthz").status_code == 200  # liveness stays open
        for path in ("/stats", "/items/1", "/items/1/thumbnail", "/items"):
            assert c.get(path).status_code == 401
            assert c.get(path, headers=AUTH).status_code == 200
        assert classify(c, digit_sets["0"][0]).status_code == 401
    with pytest.raises(ValueError, match="needs a token"):
        ServiceSettings(protect_reads=True)


def test_bad_uploads_are_refused_with_json(client, digit_sets):
    text = client.post("/classify", files={"file": ("x.txt", b"hello", "text/plain")})
    assert text.status_code == 415 and "image" in text.json()["error"]
    octet = client.post("/classify", files={"file": ("x.png", digit_sets["0"][0], "application/octet-stream")})
    assert octet.status_code == 415
    corrupt = client.post("/classify", files={"file": ("x.png", b"\x89PNG\r\n\x1a\n garbage", "image/png")})
    assert corrupt.status_code == 400 and "x.png" in corrupt.json()["error"]
    empty = client.post("/classify", files={"file": ("x.png", b"", "image/png")})
    assert empty.status_code == 400 and "empty" in empty.json()["error"]
    wrong_type = client.post("/items", files=[upload("a.txt", b"hi", "text/plain")],
                             data={"label": "x"}, headers=AUTH)
    assert wrong_type.status_code == 415
    no_label = client.post("/items", files=[upload("a.png", digit_sets["0"][0])], headers=AUTH)
    assert no_label.status_code == 422 and "label" in no_label.json()["error"]
    # a part without a file name reaches FastAPI as text: "Expected UploadFile, received: <class 'str'>"
    nameless = client.post("/classify", files={"file": ("", digit_sets["0"][0], "image/png")})
    assert nameless.status_code == 422 and "file: not a file: send it as a file part, with a file name" \
        in nameless.json()["error"]


def test_a_broken_multipart_body_is_a_400_with_no_line_in_the_server_log(client, caplog):
    """python-multipart logged a warning for each broken body it met ("Did not find CR at
    end of boundary (4)"), which Python printed on the server's stderr, naming no request,
    though the client was answered 400. Its other warnings still reach the log."""
    import logging

    caplog.set_level(logging.DEBUG)
    kind = {"content-type": "multipart/form-data; boundary=xx"}
    for body in (b"--xxabc", b"--xx\r\nContent-Disposition form-data\r\n\r\n3\r\n--xx--\r\n"):
        refused = client.post("/classify", content=body, headers=kind)
        assert refused.status_code == 400 and refused.json()["error"].startswith(
            "the body is not valid multipart/form-data"), refused.text
    assert not [r.getMessage() for r in caplog.records if "multipart" in r.name]
    logging.getLogger("python_multipart.multipart").warning("a warning of its own")
    assert [r.getMessage() for r in caplog.records if "multipart" in r.name] == ["a warning of its own"]


def test_a_broken_multipart_body_says_so_and_names_the_fields_the_endpoint_takes(client):
    """A garbled multipart body, one whose Content-Type names no boundary, and a part with
    no name answered Starlette's own words ("Invalid multipart data.", "Missing boundary in
    multipart."), naming neither the fix nor the fields. Now each says the body is not valid
    multipart/form-data, why, and the form fields the endpoint takes."""
    nameless = b'--xx\r\nContent-Disposition: form-data; filename="a.png"\r\n\r\n3\r\n--xx--\r\n'
    cases = ((b"--xxabc", "multipart/form-data; boundary=xx", "it does not parse"),
             (b"garbage", "multipart/form-data", "its Content-Type header names no boundary"),
             (nameless, "multipart/form-data; boundary=xx", "a part has no name"))
    fields = {"/classify": "file, vector, k, vote, alpha, tau, mix, abstain, only_label, only_source, where",
              "/search": "file, vector, k, only_label, only_source, where",
              "/items": "files, label, source, allow_duplicates, meta"}
    for path, takes in fields.items():
        for body, kind, why in cases:
            refused = client.post(path, content=body, headers={"content-type": kind, **AUTH})
            message = refused.json()["error"]
            assert refused.status_code == 400 and message.startswith(
                f"the body is not valid multipart/form-data: {why}"), (path, kind, message)
            assert f"of the fields {takes}" in message and "curl -F" in message, (path, message)
    assert client.get("/stats").json()["items"] == 3 * PER_LABEL  # nothing changed


def test_size_and_pixel_limits(memory, digit_sets):
    big = png(Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 300, 3), dtype=np.uint8)))
    with client_for(memory, token=TOKEN, max_upload_bytes=50_000, max_pixels=100 * 100) as c:
        too_big = classify(c, big)
        assert too_big.status_code == 413 and "too large" in too_big.json()["error"]

        def chunked():  # no Content-Length: the limit is enforced as the body arrives
            data = b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.png\"\r\n" \
                   b"Content-Type: image/png\r\n\r\n" + big + b"\r\n--b--\r\n"
            for start in range(0, len(data), 8192):
                yield data[start : start + 8192]

        streamed = c.post("/classify", content=chunked(),
                          headers={"Content-Type": "multipart/form-data; boundary=b"})
        assert streamed.status_code == 413
        many_pixels = png(Image.new("RGB", (200, 200), "white"))  # small file, 40,000 pixels
        refused = classify(c, many_pixels)
        assert refused.status_code == 400 and "too large" in refused.json()["error"]
        assert classify(c, digit_sets["0"][0]).status_code == 200  # 64x64 is within both


def test_an_image_over_the_pixel_limit_is_told_the_limit_and_what_sets_it(memory, digit_sets):
    """An upload past --max-pixels answered "image too large: ... (possible decompression
    bomb)", naming neither what sets the limit nor how to raise it. Now the answer names the
    image's pixels, the server's limit and `vismem serve --max-pixels`, for a query and an add."""
    many_pixels = png(Image.new("RGB", (200, 150), "white"))  # a small file of 30,000 pixels
    says = ("x.png: image too large: 200x150 = 30,000 pixels exceeds this server's limit of 10,000 pixels "
            "(set by `vismem serve --max-pixels`; a guard against decompression bombs)")
    with client_for(memory, token=TOKEN, max_pixels=10_000) as c:
        refused = c.post("/classify", files={"file": ("x.png", many_pixels, "image/png")})
        assert refused.status_code == 400 and refused.json()["error"] == says, refused.text
        added = c.post("/items", files=[upload("x.png", many_pixels), upload("ok.png", digit_sets["0"][PER_LABEL])],
                       data={"label": "0"}, headers=AUTH)
        assert added.status_code == 201 and added.json()["skipped_items"] == [
            {"path": "x.png", "reason": says.removeprefix("x.png: ")}], added.text


# ---- concurrency -------------------------------------------------------------------------


def test_classify_never_sees_a_half_applied_edit(client, digit_sets):
    """Readers run while a writer removes and re-adds a whole label, one edit each time.

    With k = every item, a decision sees either all of label 1 or none of it.
    """
    ones = digit_sets["1"][:PER_LABEL]
    total = 3 * PER_LABEL
    seen: list[int] = []
    failures: list[str] = []
    stop = threading.Event()

    def reader(query: bytes) -> None:
        while not stop.is_set():
            response = classify(client, query, k=total)
            if response.status_code != 200:
                failures.append(response.text)
                return
            seen.append(sum(n["label"] == "1" for n in response.json()["neighbors"]))

    readers = [threading.Thread(target=reader, args=(digit_sets[label][PER_LABEL],)) for label in LABELS]
    for thread in readers:
        thread.start()
    try:
        for _ in range(6):
            removed = client.delete("/items?label=1", headers=AUTH)
            assert removed.json()["removed"] == PER_LABEL
            added = client.post("/items", files=[upload(f"{i}.png", d) for i, d in enumerate(ones)],
                                data={"label": "1"}, headers=AUTH)
            assert added.json()["added"] == PER_LABEL
    finally:
        stop.set()
        for thread in readers:
            thread.join()
    assert not failures
    assert seen and set(seen) <= {0, PER_LABEL}
    assert client.get("/stats").json()["classes"] == {label: PER_LABEL for label in LABELS}


def test_reads_go_on_while_an_edit_waits_for_another_process_to_write(client, memory, digit_sets):
    """Another process holds the memory's write lock (a long `vismem add`). Edits sent
    meanwhile wait for it; reads sent after them are answered at once, not queued behind
    them (they waited as long as the other process wrote: up to 120 s, then 503). Ten
    edits wait as one does: no more than the readers' threads, and no fewer."""
    import sqlite3

    other = sqlite3.connect(memory.path / "memory.sqlite", isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")  # what another process's write holds
    edit: dict = {}

    def add() -> None:
        edit["response"] = client.post("/items", files=[upload("new.png", digit_sets["2"][PER_LABEL])],
                                       data={"label": "2"}, headers=AUTH)

    writer = threading.Thread(target=add)
    blocks = [threading.Thread(target=lambda i=i: client.patch(f"/items/{i}", json={"weight": 1}, headers=AUTH))
              for i in range(1, 11)]
    try:
        writer.start()
        for thread in blocks:
            thread.start()
        time.sleep(1.0)  # the edits are waiting for the lock by now
        assert writer.is_alive() and "response" not in edit
        answers: list = []
        reader = threading.Thread(target=lambda: answers.extend(
            [client.get("/items", params={"limit": 1}), classify(client, digit_sets["0"][PER_LABEL])]))
        reader.start()
        reader.join(timeout=20)  # (they queued behind the edit until the lock was let go below)
        # answered while the other process still writes, so the edit still waits
        assert [a.status_code for a in answers] == [200, 200] and answers[1].json()["label"] == "0"
        assert writer.is_alive() and "response" not in edit
    finally:
        other.execute("ROLLBACK")
        other.close()
        writer.join(timeout=60)
        for thread in blocks:
            thread.join(timeout=60)
    assert edit["response"].status_code == 201 and edit["response"].json()["added"] == 1


def test_edits_whose_purge_a_stopped_index_holder_cuts_off_answer_what_they_committed(tmp_path, monkeypatch):
    """A removal (or a rollback) commits, then its purge waits for a stopped process that
    holds the saved index and gives up. The server answered 503, "busy, nothing changed:
    try again", of items already gone. Partly done, as the CLI's exit 3: it answers 200
    with what it committed, and `unfinished` says what stays and how to finish. Over real
    HTTP: uvicorn in this process, so that the shorter wait holds in the server too."""
    monkeypatch.setattr(vismem.waits, "BUSY_SECONDS", 1.0)
    path = tmp_path / "m"
    memory = Memory.create(path, encoder=None, dim=16, index="hnsw")
    ids = memory.add_vectors(unit_vectors(300, 16), ["a"] * 150 + ["b"] * 150)
    memory.checkpoint("start")
    added = memory.add_vectors(unit_vectors(20, 16, seed=1), ["c"] * 20)
    with serving(memory, TOKEN) as url, httpx.Client(base_url=url, headers=AUTH, timeout=60) as http:
        with holding(HOLD_INDEX_LOCK, path / "index", stopped=True) as holder:
            one = http.delete(f"/items/{ids[0]}")
            label = http.delete("/items", params={"label": "b"})  # enough to compact, which purges too
            rolled = http.post("/checkpoints/start/rollback")
            stats = http.get("/stats")
        for answer in (one, label, rolled):
            assert answer.status_code == 200, answer.text
            unfinished = answer.json()["unfinished"]
            assert "removed items are gone from the store and every search, but their vectors stay" in unfinished
            assert f"`kill -CONT {holder.pid}`" in unfinished and f"`vismem compact {path}`" in unfinished
        assert one.json() | {"unfinished": None} == {"removed": 1, "ids": [ids[0]], "missing": [],
                                                      "items": 319, "unfinished": None}
        assert label.json()["ids"] == ids[150:] and label.json()["items"] == 169
        assert rolled.json()["removed_ids"] == added and rolled.json()["items"] == 149
        assert stats.json()["items"] == 149 and stats.json()["classes"] == {"a": 149}
        done = http.delete(f"/items/{ids[1]}")  # the holder is gone: the purge goes through
        assert done.status_code == 200 and done.json()["unfinished"] is None
    with Memory.open(path) as reopened:
        assert len(reopened) == 148 and set(reopened.ids()) == set(ids[2:150])


def test_an_app_driven_from_one_event_loop_after_another_answers_every_request(memory, digit_sets):
    """A TestClient used without `with` runs each request in an event loop of its own. The
    readers-writer lock (and the encoder's batcher) stayed bound to the first, and every
    later request answered 500 "bound to a different event loop"."""
    app = create_app(memory, ServiceSettings(token=TOKEN))
    client = TestClient(app)  # no `with`: a new loop per request
    query = digit_sets["2"][PER_LABEL]
    assert classify(client, query, k=3).status_code == 200
    added = client.post("/items", files=[upload("new.png", digit_sets["1"][PER_LABEL])], data={"label": "1"},
                        headers=AUTH)
    assert added.status_code == 201 and added.json()["added"] == 1
    new_id = added.json()["ids"][0]
    assert client.get(f"/items/{new_id}").json()["label"] == "1"
    assert client.patch(f"/items/{new_id}", json={"weight": 2}, headers=AUTH).json()["weight"] == 2
    assert classify(client, query, k=3).status_code == 200
    assert client.get("/stats").json()["items"] == 3 * PER_LABEL + 1

    # Two loops running at once would each need a lock of their own, excluding nothing: refused
    service = app.state.service
    other = asyncio.new_event_loop()
    thread = threading.Thread(target=other.run_forever)
    thread.start()
    try:
        assert asyncio.run_coroutine_threadsafe(service.read(len, memory), other).result(60) == 3 * PER_LABEL + 1
        with pytest.raises(RuntimeError, match="in use by another event loop that is still running"):
            asyncio.run(service.read(len, memory))
    finally:
        other.call_soon_threadsafe(other.stop)
        thread.join()
        other.close()
    assert client.get("/stats").status_code == 200  # its loop closed: the next one takes over


def test_batcher_encodes_requests_that_arrive_together_in_one_pass(digits):
    from concurrent.futures import ThreadPoolExecutor

    encoder = create_encoder("pixels")
    images, _ = digits
    pixels = [encoder.preprocess(images[i : i + 1]) for i in range(8)]

    async def run():
        with ThreadPoolExecutor(1) as pool:
            batcher = EncodeBatcher(encoder, pool)
            vectors = await asyncio.gather(*(batcher.encode(p) for p in pixels))
            await batcher.close()
            return batcher.stats, vectors

    stats, vectors = asyncio.run(run())
    assert stats.batches == 1 and stats.images == 8
    np.testing.assert_allclose(np.concatenate(vectors), encoder.encode(images[:8]), atol=1e-6)


# ---- the real encoder and the real command ---------------------------------------------


def test_api_with_efficientnet_lite0(tmp_path, digit_sets):
    mem = Memory.create(tmp_path / "lite0", encoder="efficientnet_lite0")
    with mem, client_for(mem, token=TOKEN) as c:
        for label in ("0", "1"):
            added = c.post("/items", data={"label": label}, headers=AUTH,
                           files=[upload(f"{i}.png", d) for i, d in enumerate(digit_sets[label][:4])])
            assert added.json()["added"] == 4
        query = digit_sets["1"][PER_LABEL]
        got = classify(c, query, k=4).json()
        expected = mem.classify([Image.open(io.BytesIO(query))], k=4)[0]
        assert got["label"] == expected.label == "1"
        assert [n["id"] for n in got["neighbors"]] == [n.id for n in expected.neighbors]
        assert c.get("/stats").json()["encoder"] == "efficientnet_lite0"


def test_serve_command_read_only_then_with_token(memory, digit_sets):
    memory.close()
    process, url = start_server(memory.path)
    try:
        assert httpx.get(url + "/healthz").json()["read_only"] is True
        assert httpx.delete(url + "/items/1").status_code == 403
        page = httpx.get(url + "/")
        assert page.status_code == 200 and "<title>vismem" in page.text
        assert httpx.get(url + "/openapi.json").json()["paths"].keys() >= {
            "/classify", "/items", "/items/{item_id}", "/items/{item_id}/thumbnail", "/stats", "/healthz"}
    finally:
        stderr = stop_server(process)
    assert re.search(r"read-only: no token", stderr) and "127.0.0.1" in stderr
    process, url = start_server(memory.path, env={"VISMEM_TOKEN": TOKEN})
    try:
        assert httpx.patch(url + "/items/1", json={"weight": 0}, headers=AUTH).status_code == 200
    finally:
        stderr = stop_server(process)
    assert "edits enabled" in stderr
    with Memory.open(memory.path) as reopened:
        assert reopened.get(1).weight == 0.0


def test_serve_on_port_0_says_the_port_it_took_and_a_port_in_use_is_one_line(memory):
    """`--port 0` said "serving ... at http://127.0.0.1:0/"; a port in use was a uvicorn log
    record after that line."""
    import subprocess
    import sys

    memory.close()
    process = subprocess.Popen([sys.executable, "-m", "vismem", "serve", str(memory.path), "--port", "0"],
                               stderr=subprocess.PIPE, text=True)
    try:
        assert process.stderr is not None
        said = ""
        while "serving" not in said and process.poll() is None:
            said = process.stderr.readline()
        url = re.search(r"at (http://127\.0\.0\.1:(\d+))/ ", said)
        assert url and url.group(2) != "0", said
        deadline = time.time() + 30
        while True:  # the line comes as the server starts to serve
            try:
                assert httpx.get(url.group(1) + "/healthz", timeout=1).status_code == 200
                break
            except httpx.TransportError:
                assert time.time() < deadline
                time.sleep(0.2)
        taken = subprocess.run([sys.executable, "-m", "vismem", "serve", str(memory.path), "--port", url.group(2)],
                               capture_output=True, text=True, timeout=60)
        assert taken.returncode == 1 and taken.stdout == ""
        assert taken.stderr.strip().splitlines()[-1] == \
            f"error: cannot listen on 127.0.0.1:{url.group(2)}: Address already in use"
    finally:
        stop_server(process)


@pytest.mark.parametrize(("host", "loopback"), [("127.0.0.2", True), ("LOCALHOST", True), ("127.1", True),
                                              ("0.0.0.0", False)])
def test_the_warning_of_a_reachable_server_goes_by_the_address_bound(memory, host, loopback):
    """`--host 127.0.0.2` (or `LOCALHOST`, `127.1`) was warned "reachable from other machines":
    the check compared the name with three spellings of loopback, not the address bound."""
    import subprocess
    import sys

    from conftest import _serving, free_port

    memory.close()
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "vismem", "serve", str(memory.path), "--host", host,
                                "--port", str(port)], stderr=subprocess.PIPE, text=True)
    _serving(process, f"http://{'127.0.0.1' if host == '0.0.0.0' else host}:{port}")
    said = stop_server(process)
    assert ("reachable from other machines" not in said) == loopback, said


def _ipv6_loopback() -> bool:
    import socket

    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback here")
def test_serve_takes_an_ipv6_address_in_brackets_as_it_prints_them(memory, cli):
    """`vismem serve --host '[::1]'` was refused ("cannot listen on [::1]:8000: Name or
    service not known"), though the server prints its IPv6 address in that form. Brackets
    around an IPv6 address are now taken off for binding; brackets around anything else,
    or a bracket left open, are bad usage that says what brackets hold."""
    import subprocess
    import sys

    from conftest import _serving

    memory.close()
    port = _free_ipv6_port()
    process = subprocess.Popen([sys.executable, "-m", "vismem", "serve", str(memory.path), "--host", "[::1]",
                                "--port", str(port)], stderr=subprocess.PIPE, text=True)
    _serving(process, f"http://[::1]:{port}")
    said = stop_server(process)
    assert f"at http://[::1]:{port}/ " in said and "reachable" not in said, said
    for garbage in ("[::1", "::1]", "[localhost]", "[127.0.0.1]", "[]", "[[::1]]"):
        refused = cli("serve", memory.path, "--host", garbage, "--port", "0")
        assert refused.returncode == 2 and "--host" in refused.stderr and \
            "brackets hold an IPv6 address" in refused.stderr, (garbage, refused.stderr)


def _free_ipv6_port() -> int:
    import socket

    with socket.socket(socket.AF_INET6) as s:
        s.bind(("::1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("path", ["/classify", "/items"])
def test_a_client_that_stalls_mid_body_does_not_hold_off_a_stop(memory, path):
    """A client that sent its headers and part of a body, then nothing, kept `vismem serve`
    from stopping on SIGTERM (or Ctrl-C) for as long as it stalled: uvicorn waits for every
    request in flight. Now such a request is answered 503 as the server stops (nothing of
    it was read, so nothing changed), and the server exits 143 at once."""
    import signal
    import socket
    import subprocess

    memory.close()
    process, url = start_server(memory.path, env={"VISMEM_TOKEN": TOKEN})
    port = int(url.rsplit(":", 1)[1])
    stalled = socket.create_connection(("127.0.0.1", port))
    try:
        stalled.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
                        "Content-Type: multipart/form-data; boundary=XX\r\nContent-Length: 100000\r\n\r\n"
                        "--XX\r\n".encode())
        assert httpx.get(url + "/stats").json()["items"] == 3 * PER_LABEL  # others are served meanwhile
        process.send_signal(signal.SIGTERM)
        try:
            _, said = process.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            raise AssertionError("the server did not stop while a client stalled") from None
        stalled.settimeout(5)
        answer = stalled.recv(65536).decode()
    finally:
        stalled.close()
        process.kill()
    assert process.returncode == 143, said
    assert answer.startswith("HTTP/1.1 503 ") and "send it again" in answer, answer
    assert "Traceback" not in said and said.strip().splitlines()[-1].startswith("terminated: "), said


def _answer(connection, within: float) -> bytes:
    """Everything the server sends on `connection` until it closes it (at most `within` s)."""
    connection.settimeout(within)
    answer = b""
    while chunk := connection.recv(65536):
        answer += chunk
    return answer


def test_a_client_that_stalls_mid_body_is_answered_408_after_the_read_timeout(memory, digit_sets):
    """A client that sent its headers and part of a body, then nothing, held its connection
    and the request's handler for ever (uvicorn bounds only the wait between requests). Now
    no body bytes for --read-timeout seconds answer 408 and close the connection; the file
    part that had arrived is not stored, and other clients are served meanwhile. A slow upload
    that is never idle that long still arrives."""
    import socket

    memory.close()
    process, url = start_server(memory.path, "--read-timeout", "1", env={"VISMEM_TOKEN": TOKEN})
    port = int(url.rsplit(":", 1)[1])
    def part(image: bytes) -> bytes:
        return (b'--XX\r\nContent-Disposition: form-data; name="label"\r\n\r\n0\r\n'
                b'--XX\r\nContent-Disposition: form-data; name="files"; filename="new.png"\r\n'
                b"Content-Type: image/png\r\n\r\n" + image + b"\r\n")

    head = (f"POST /items HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n"
            "Content-Type: multipart/form-data; boundary=XX\r\n")
    whole = part(digit_sets["0"][-2]) + b"--XX--\r\n"
    with socket.create_connection(("127.0.0.1", port)) as slow:  # 1.8 s in all, never 1 s idle: it arrives
        slow.sendall(f"{head}Content-Length: {len(whole)}\r\n\r\n".encode())
        for at in range(0, len(whole), -(-len(whole) // 3)):
            time.sleep(0.6)
            slow.sendall(whole[at:at + -(-len(whole) // 3)])
        assert _answer(slow, within=10).startswith(b"HTTP/1.1 201 ")
    stalled = socket.create_connection(("127.0.0.1", port))
    try:
        stalled.sendall(f"POST /items HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
                        "Content-Type: multipart/form-data; boundary=XX\r\n"
                        f"Content-Length: {len(part(digit_sets['0'][-1])) + 1000}\r\n\r\n".encode()
                        + part(digit_sets["0"][-1]))
        sent = time.monotonic()
        assert httpx.get(url + "/stats").json()["items"] == 3 * PER_LABEL + 1  # others are served meanwhile
        answer = _answer(stalled, within=10).decode()  # and the server closes the connection
        waited = time.monotonic() - sent
        assert httpx.get(url + "/stats").json()["items"] == 3 * PER_LABEL + 1  # nothing of it stored
    finally:
        stalled.close()
        said = stop_server(process)
    assert answer.startswith("HTTP/1.1 408 "), answer
    assert json.loads(answer.split("\r\n\r\n", 1)[1]) == {"error": (
        "no part of the request's body arrived for 1 s (the server's --read-timeout): "
        "it was dropped, so nothing changed; send it again")}
    assert 0.9 < waited < 4, waited
    assert "Traceback" not in said, said


def test_a_client_that_trickles_its_request_head_is_cut_off_after_the_read_timeout(memory):
    """uvicorn's keep-alive timeout stops at a connection's first byte, and nothing bounded
    the rest of a request's head: a client that sent a byte of it now and then (slowloris),
    or part of it and then nothing, held its connection for ever (a file descriptor each,
    until the server could accept no more). Now a head must all arrive within
    --read-timeout seconds: a partial one is answered 408 and the connection closed, one
    that sent nothing is closed, and other clients are served meanwhile."""
    import socket

    memory.close()
    process, url = start_server(memory.path, "--read-timeout", "1")
    port = int(url.rsplit(":", 1)[1])
    head = b"GET /stats HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"a" * 100
    trickling, silent = (socket.create_connection(("127.0.0.1", port)) for _ in range(2))
    try:
        opened = time.monotonic()
        trickling.settimeout(0.3)
        answer = b""
        for byte in head:  # a byte each 0.3 s: never idle for long, and never done
            assert time.monotonic() - opened < 5, "the server waited for the head past its --read-timeout"
            try:
                trickling.sendall(bytes([byte]))
                if chunk := trickling.recv(65536):
                    answer += chunk
                    break
            except TimeoutError:
                continue
            except OSError:  # closed while a byte was on its way
                break
        cut = time.monotonic() - opened
        assert httpx.get(url + "/healthz").status_code == 200  # others are served meanwhile
        assert _answer(silent, within=5) == b""  # closed, with nothing to answer
        assert time.monotonic() - opened < 5
    finally:
        trickling.close()
        silent.close()
        said = stop_server(process)
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1]) == {"error": (
        "the request's head did not all arrive within 1 s (the server's --read-timeout): "
        "nothing changed; send it again")}
    assert 0.9 < cut < 4, cut
    assert "Traceback" not in said, said


@pytest.mark.parametrize("closing", ["the memory", "its database"])
def test_an_unexpected_failure_is_json_without_a_traceback(tmp_path, digit_sets, closing):
    mem = Memory.create(tmp_path / "closed", encoder="pixels")
    app = create_app(mem, ServiceSettings())
    # every store read now fails, as a real bug would make it (a MemoryClosedError, or inside sqlite3)
    mem.close() if closing == "the memory" else mem.store.db._db.close()
    with TestClient(app, raise_server_exceptions=False) as c:
        response = c.get("/stats")
    assert response.status_code == 500
    assert response.json() == {"error": "internal error: the server log has the details"}
    assert "Traceback" not in response.text and "sqlite" not in response.text.lower()


def test_memory_add_image_bytes(tmp_path, digit_sets):
    with Memory.create(tmp_path / "bytes", encoder="pixels") as mem:
        report = mem.add_image_bytes(
            [("a.png", digit_sets["0"][0]), ("bad.png", b"nope"), ("a-again.png", digit_sets["0"][0]),
             ("b.png", digit_sets["1"][0])],
            label="digit", source="api",
        )
        assert len(report.added) == 2
        assert {s.path: s.reason.split(" ")[0] for s in report.skipped} == {
            "bad.png": "not", "a-again.png": "duplicate"}
        item = mem.get(report.added[0])
        assert (item.label, item.source, item.path, item.meta["name"]) == ("digit", "api", None, "a.png")
        assert mem.thumbnail(item.id) is not None
        with pytest.raises(ValueError, match="empty"):
            mem.add_image_bytes([("c.png", digit_sets["2"][0])], label=" ", source="api")


def test_memory_add_image_bytes_stores_meta_as_add_images_does(tmp_path, digit_sets):
    """`add_image_bytes` took no `meta`, while `add_images` and `POST /items` do: it stores
    it with each image, and refuses (before adding any) the keys it sets itself."""
    with Memory.create(tmp_path / "bytes", encoder="pixels") as mem:
        report = mem.add_image_bytes([("a.png", digit_sets["0"][0]), ("b.png", digit_sets["1"][0])],
                                     label="digit", source="api", meta={"camera": "north"})
        assert [mem.get(i).meta["camera"] for i in report.added] == ["north", "north"]
        assert mem.ids(where={"camera": "north"}) == report.added
        for key in ("width", "height", "name"):
            with pytest.raises(ValueError, match="reserved"):
                mem.add_image_bytes([("c.png", digit_sets["2"][0])], label="digit", source="api", meta={key: 1})
        with pytest.raises(ValueError):
            mem.add_image_bytes([("c.png", digit_sets["2"][0])], label="digit", source="api",
                                meta={"bad": object()})
        assert len(mem) == 2


def test_edits_from_another_process_are_seen(client, memory, digit_sets):
    with Memory.open(memory.path) as other:  # its own SQLite connection, like the CLI
        other.remove(label="2")
    assert client.get("/stats").json()["classes"] == {"0": PER_LABEL, "1": PER_LABEL}
    assert "2" not in classify(client, digit_sets["2"][PER_LABEL], k=3 * PER_LABEL).json()["scores"]


# ---- parity with the CLI: the same Memory methods, the same option names ------------------


def test_a_vector_query_answers_as_its_image(client, memory, digit_sets):
    # the vector that the memory's encoder makes of the image, sent instead of the image
    query = digit_sets["2"][PER_LABEL]
    vectors, kept, _ = memory.embed_images([Image.open(io.BytesIO(query))])
    assert kept == [0]
    vector = {"vector": json.dumps(vectors[0].tolist())}
    for path, form in (("/classify", {"k": "5"}), ("/search", {"k": "4", "only_label": ["1", "2"]})):
        by_image = client.post(path, files={"file": ("q.png", query, "image/png")}, data=form).json()
        by_vector = client.post(path, data={**form, **vector}).json()
        assert by_image["path"] == "q.png" and by_vector["path"] is None
        assert by_vector["neighbors"] == by_image["neighbors"]
        assert {key: by_vector[key] for key in by_vector if key != "path"} == \
               {key: by_image[key] for key in by_image if key != "path"}


def test_search_answers_what_the_cli_answers(client, memory, digit_sets, tmp_path, cli):
    query = digit_sets["2"][PER_LABEL]
    (tmp_path / "q.png").write_bytes(query)
    search = client.post("/search", files={"file": ("q.png", query, "image/png")},
                         data={"k": "4", "only_label": ["1", "2"]})
    assert search.status_code == 200, search.text
    got = search.json()
    memory.close()  # the CLI opens the same directory
    shown = json_lines(cli("search", memory.path, tmp_path / "q.png", "-k", "4", "--only-label", "1",
                           "--only-label", "2", "--json", check=True))[0]
    assert [n["id"] for n in got["neighbors"]] == [n["id"] for n in shown["neighbors"]]
    assert set(got["neighbors"][0]) == set(shown["neighbors"][0]) == {"id", "label", "source", "distance"}
    assert {n["label"] for n in got["neighbors"]} <= {"1", "2"} and got["path"] == "q.png"


def test_classify_restrictions_and_mix(client, memory, digit_sets):
    query = digit_sets["1"][PER_LABEL]
    only = classify(client, query, k=4, only_label=["0", "2"]).json()
    assert {n["label"] for n in only["neighbors"]} <= {"0", "2"} and only["label"] in ("0", "2")
    sourced = classify(client, query, k=3, only_source="set-2").json()
    assert {n["source"] for n in sourced["neighbors"]} == {"set-2"}
    name = memory.items([2])[0].meta["name"]
    one = classify(client, query, k=5, where=f"name={name}").json()
    assert [n["id"] for n in one["neighbors"]] == [2]
    nothing = classify(client, query, where="name=nowhere").json()
    assert nothing["neighbors"] == [] and nothing["label"] is None
    hybrid = [classify(client, query, vote="hybrid", mix=m).json() for m in (0.0, 1.0)]
    expected = [memory.classify_vectors(memory.vectors([1])[1], vote="hybrid", mix=m)[0] for m in (0.0, 1.0)]
    assert [h["mix"] for h in hybrid] == [0.0, 1.0] and hybrid[0]["scores"] != hybrid[1]["scores"]
    assert all(isinstance(e.scores, dict) for e in expected)
    for bad in ({"mix": 1.5}, {"alpha": 0}, {"tau": "nan"}, {"where": "no-equals"}, {"only_label": " "}):
        assert classify(client, query, **bad).status_code == 422, bad


def test_listing_pages_with_restrictions(client, memory):
    first = client.get("/items", params={"limit": 5}).json()
    assert first["total"] == 3 * PER_LABEL and [i["id"] for i in first["items"]] == [1, 2, 3, 4, 5]
    later = client.get("/items", params={"offset": 5, "limit": 5}).json()
    assert [i["id"] for i in later["items"]] == [6, 7, 8, 9, 10] and later["offset"] == 5
    past = client.get("/items", params={"offset": 1000}).json()
    assert past == {"total": 3 * PER_LABEL, "offset": 1000, "items": []}
    two = client.get("/items", params={"label": ["0", "2"], "source": "set-2"}).json()
    assert two["total"] == PER_LABEL and {i["label"] for i in two["items"]} == {"2"}
    name = memory.items([7])[0].meta["name"]
    assert [i["id"] for i in client.get("/items", params={"where": f"name={name}"}).json()["items"]] == [7]
    for bad in ({"limit": 0}, {"limit": 501}, {"offset": -1}, {"where": "=x"}):
        assert client.get("/items", params=bad).status_code == 422, bad


def test_patch_many_items_at_once(client):
    blocked = client.patch("/items", json={"ids": [1, 2, 999], "weight": 0}, headers=AUTH).json()
    assert blocked == {"updated": 2, "ids": [1, 2], "missing": [999], "label": None,  # the CLI exits 3 here
                       "weight": 0.0, "reset_prune_counts": 0}
    assert [client.get(f"/items/{i}").json()["weight"] for i in (1, 2, 3)] == [0.0, 0.0, 1.0]
    relabelled = client.patch("/items", json={"ids": [3.0], "label": "three"}, headers=AUTH).json()
    assert relabelled["ids"] == [3] and client.get("/items/3").json()["relabelled_from"] == "0"
    for bad in ({"ids": [1]}, {"ids": [], "weight": 1}, {"ids": [True], "weight": 1}, {"ids": ["1"], "weight": 1},
                {"ids": [1.5], "weight": 1}, {"ids": [1], "weight": True}):
        assert client.patch("/items", json=bad, headers=AUTH).status_code == 422, bad


def test_huge_ids_are_refused_and_every_connection_keeps_serving(memory):
    """Ids past SQLite's INTEGER once gave 500 and reset the keep-alive connection."""
    memory.close()
    process, url = start_server(memory.path, env={"VISMEM_TOKEN": TOKEN})
    try:
        with httpx.Client(base_url=url, headers=AUTH) as http:
            for huge in (2**53, 2**63, 2**70, -1):
                for response in (http.get(f"/items/{huge}"), http.get(f"/items/{huge}/thumbnail"),
                                 http.delete(f"/items/{huge}"), http.patch(f"/items/{huge}", json={"weight": 1}),
                                 http.delete("/items", params={"id": huge}),
                                 http.patch("/items", json={"ids": [huge], "weight": 1}),
                                 http.get("/items", params={"offset": 2**64})):
                    assert response.status_code in (404, 422), (huge, response.request.url, response.text)
                    assert response.json()["error"]
                assert http.get("/items/1").status_code == 200  # the same connection still serves
            for bad in (b"{", b"\xff", b"[]", b"null"):
                answer = http.patch("/items/1", content=bad, headers={"Content-Type": "application/json"})
                assert answer.status_code in (400, 422) and answer.json()["error"]
            assert http.get("/stats").json()["items"] == 3 * PER_LABEL
            head = http.head("/items/1/thumbnail")  # headers only, and the connection serves on
            assert head.status_code == 200 and int(head.headers["content-length"]) > 0 and not head.content
            assert http.get("/items/1/thumbnail").content[:2] == b"\xff\xd8"
            allowed = http.request("PUT", "/items")
            assert allowed.status_code == 405 and set(allowed.headers["allow"].split(", ")) >= {
                "GET", "POST", "PATCH", "DELETE"}
    finally:
        stderr = stop_server(process)
    assert "Traceback" not in stderr


def test_an_id_must_be_written_as_a_whole_number(client, memory, digit_sets):
    """`/items/1.0`, `/items/%201`, `/items/+1` and `DELETE /items?id=1.0` were read as id 1,
    and `/items/1_0` as id 10: pydantic reads a number from text leniently. An id (and
    offset, limit, k) is now digits, or a minus sign and digits, refused as out of range;
    anything else is a 422 that names the value sent."""
    for sent, seen in (("1.0", "1.0"), ("%201", " 1"), ("1%20", "1 "), ("+1", "+1"), ("1_0", "1_0"),
                       ("1e0", "1e0"), ("0x1", "0x1"), ("%D9%A1", "\u0661")):
        for answer in (client.get(f"/items/{sent}"), client.get(f"/items/{sent}/thumbnail"),
                       client.patch(f"/items/{sent}", json={"weight": 0}, headers=AUTH),
                       client.delete(f"/items/{sent}", headers=AUTH),
                       client.delete(f"/items?id=2&id={sent.replace('+', '%2B')}", headers=AUTH)):
            said = answer.json()["error"]
            assert answer.status_code == 422, (sent, answer.request.url, said)
            assert re.fullmatch(r"invalid request: (item_id|id\.1): expected a whole number written in digits "
                                r"\(e\.g\. 12\), got " + re.escape(repr(seen)), said), said
    for answer in (client.get("/items/-1"), client.delete("/items?id=-1", headers=AUTH)):
        assert answer.status_code == 422 and "greater than or equal to 0" in answer.json()["error"]
    for name in ("offset", "limit"):
        answer = client.get("/items", params={name: "2.0"})
        assert answer.status_code == 422 and answer.json()["error"].startswith(f"invalid request: {name}: expected")
    for path in ("/classify", "/search"):
        answer = client.post(path, files={"file": ("q.png", digit_sets["0"][0], "image/png")}, data={"k": "3.0"})
        assert answer.status_code == 422 and answer.json()["error"].startswith("invalid request: k: expected")
    assert len(memory) == 3 * PER_LABEL and client.get("/items/1").json()["weight"] == 1.0
    assert client.get("/items/01").json()["id"] == 1  # digits all the same
    assert client.get("/items", params={"offset": "2", "limit": "3"}).json()["offset"] == 2


def test_the_document_says_what_this_server_enforces(memory):
    """Security only where the running server asks for a token; every status an endpoint
    can answer, each with the error body; vote options from VoteParams."""

    def document(**settings) -> dict:
        with client_for(memory, **settings) as c:
            return c.get("/openapi.json").json()

    def operations(doc: dict):
        for path, methods in doc["paths"].items():
            for method, operation in methods.items():
                yield f"{method.upper()} {path}", operation

    edits = {"POST /items", "DELETE /items", "PATCH /items", "DELETE /items/{item_id}", "PATCH /items/{item_id}",
             "POST /checkpoints", "DELETE /checkpoints/{name}", "POST /checkpoints/{name}/rollback"}
    read_only, editing, guarded = document(), document(token=TOKEN), document(token=TOKEN, protect_reads=True)
    for name, operation in operations(read_only):
        assert "security" not in operation, name
        assert ("403" in operation["responses"]) == (name in edits), name
    for name, operation in operations(editing):
        assert ("security" in operation) == (name in edits) and "403" not in operation["responses"], name
    for name, operation in operations(guarded):
        assert ("security" in operation) == (name != "GET /healthz"), name
        assert ("401" in operation["responses"]) == (name != "GET /healthz"), name
    errors_and_forms(editing)


def test_every_answer_in_the_document_has_a_schema_real_answers_match(client, memory, digit_sets):
    """`/healthz`, `/stats`, `/classify` and `DELETE /checkpoints/{name}` documented their
    success as any object at all. Every answer of every operation now has a schema: the
    error body for an error, a named one for a success; and what the server answers matches it,
    with no field the document leaves out."""
    from jsonschema import Draft202012Validator

    document = client.get("/openapi.json").json()
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            for status, answer in operation["responses"].items():
                where = f"{method.upper()} {path} {status}"
                assert answer.get("description") and answer.get("content"), where
                for media_type, content in answer["content"].items():
                    schema = content.get("schema")
                    if not status.startswith("2"):
                        assert schema == {"$ref": "#/components/schemas/ErrorBody"}, where
                    elif media_type == "application/json":  # a named model, or a list of one
                        assert "$ref" in schema or "$ref" in schema.get("items", {}), (where, schema)
                    else:
                        assert schema == {"type": "string", "format": "binary"}, where

    def matches(method: str, path: str, status: str, body) -> None:
        schema = document["paths"][path][method]["responses"][status]["content"]["application/json"]["schema"]
        errors = list(Draft202012Validator(closed({**schema, "components": document["components"]})).iter_errors(body))
        assert not errors, (method, path, [e.message for e in errors])

    query = digit_sets["1"][PER_LABEL]
    for counterfactual in ("false", "true"):
        decided = client.post(f"/classify?counterfactual={counterfactual}",
                              files={"file": ("q.png", query, "image/png")})
        assert decided.status_code == 200
        matches("post", "/classify", "200", decided.json())
    assert "counterfactual" in decided.json()
    matches("get", "/stats", "200", client.get("/stats").json())
    matches("get", "/healthz", "200", client.get("/healthz").json())
    client.post("/checkpoints", json={"name": "v1"}, headers=AUTH).raise_for_status()
    deleted = client.delete("/checkpoints/v1", headers=AUTH)
    assert deleted.json() == {"deleted": "v1"}
    matches("delete", "/checkpoints/{name}", "200", deleted.json())


def closed(schema):
    """`schema` with every object that names its properties closed to others: a real answer
    then matches only if it holds no field the document leaves out."""
    if isinstance(schema, list):
        return [closed(part) for part in schema]
    if not isinstance(schema, dict):
        return schema
    found = {key: closed(value) for key, value in schema.items()}
    if isinstance(schema.get("properties"), dict) and "additionalProperties" not in schema:
        found["additionalProperties"] = False
    return found


def test_stats_documents_its_nested_parts_and_real_answers_match(tmp_path):
    """`InfoOut` documented the settings, index, transform, calibration and estimates of
    `GET /stats` as any object at all. Each is now a named schema, and /stats answers of a
    memory as made, then with an approximate index, fresh adds, a calibration, a fitted
    transform and pruning, hold what the document says and nothing it leaves out."""
    from jsonschema import Draft202012Validator

    from vismem.curate import calibrate_memory
    from vismem.prune import PruneSettings

    rng = np.random.default_rng(0)
    with Memory.create(tmp_path / "vectors", encoder=None, dim=16, index="hnsw") as mem, client_for(mem) as c:
        document = c.get("/openapi.json").json()
        schemas = document["components"]["schemas"]

        def named(schema: dict) -> dict | None:  # a $ref, alone or beside null
            refs = [part["$ref"] for part in [schema, *schema.get("anyOf", [])] if "$ref" in part]
            return schemas[refs[0].rsplit("/", 1)[-1]] if refs else None

        maps = {"classes", "auroc", "params"}  # name -> value, each value typed
        pending, seen = [("InfoOut", schemas["InfoOut"])], set()
        while pending:
            where, schema = pending.pop()
            for name, field in schema.get("properties", {}).items():
                kinds = [field, *field.get("anyOf", [])]
                if named(field) is not None:
                    if name not in seen:
                        seen.add(name)
                        pending.append((f"{where}.{name}", named(field)))
                elif any(kind.get("type") == "object" for kind in kinds):
                    assert name in maps, f"{where}.{name} is any object: {field}"
                    values = next(k["additionalProperties"] for k in kinds if k.get("type") == "object")
                    assert values and values is not True, f"{where}.{name}: {field}"
        assert {"index", "quality", "fresh_adds", "transform", "spec", "defaults", "pruning", "abstain",
                "intrinsic_dim_estimate"} <= seen, seen
        validator = Draft202012Validator(closed({**document["paths"]["/stats"]["get"]["responses"]["200"]
                                                 ["content"]["application/json"]["schema"],
                                                 "components": document["components"]}))

        def matches() -> dict:
            answer = c.get("/stats").json()
            errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(answer)]
            assert not errors, errors
            return answer

        assert matches()["index"]["quality"] is None  # empty
        mem.add_vectors(rng.normal(size=(600, 16)).astype(np.float32), ["a", "b", "c"] * 200)
        for _ in range(3):  # measured as they come in
            mem.add_vectors(rng.normal(size=(300, 16)).astype(np.float32), ["a", "b", "c"] * 100)
        assert matches()["index"]["fresh_adds"] is not None
        calibrate_memory(mem)
        mem.set_transform("whiten")
        mem.update_settings(pruning=PruneSettings(mode="soft"))
        mem.add_vectors(rng.normal(size=(30, 16)).astype(np.float32), ["a", "b", "c"] * 10)
        answer = matches()
        assert answer["abstain"]["changed_since"] and answer["transform"]["changed_since"], answer
        assert answer["pruning"]["mode"] == "soft" and answer["intrinsic_dim_estimate"]["added_since"] == 30


def errors_and_forms(editing: dict) -> None:
    from vismem.decide import VOTES, VoteParams
    from vismem.settings import describe

    for name, operation in ((f"{m} {p}", o) for p, ms in editing["paths"].items() for m, o in ms.items()):
        for status, answer in operation["responses"].items():
            if not status.startswith("2"):
                assert answer["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorBody"}
        assert "422" in operation["responses"], name  # any query parameter it does not take
        # its client stalled: a request head (under `vismem serve`, before any route), or a body
        assert operation["responses"]["408"]["description"] == STATUS[408], name
        if "requestBody" in operation:  # a body of another type than it takes; the server stopped as it came
            assert {"415", "503"} <= operation["responses"].keys(), name
    form = editing["components"]["schemas"]["Body_classify_classify_post"]["properties"]
    assert form["vote"]["enum"] == list(VOTES)
    for name, key in (("k", "minimum"), ("k", "maximum"), ("mix", "maximum"), ("alpha", "exclusiveMinimum")):
        limit = {"minimum": "min", "maximum": "max", "exclusiveMinimum": "min_exclusive"}[key]
        assert form[name][key] == describe(VoteParams, name)[limit], (name, key)
    upload = editing["paths"]["/classify"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert upload["encoding"]["file"]["contentType"] == "image/*"
    files = editing["components"]["schemas"]["Body_add_items_items_post"]["properties"]["files"]
    assert files["minItems"] == 1 and files["items"]["contentMediaType"] == "image/*"
    selector = editing["paths"]["/items"]["delete"]["parameters"][0]
    assert selector["required"] and [sorted(c["required"]) for c in selector["schema"]["oneOf"]] == [
        ["id"], ["label"], ["source"], ["where"]]
    change = editing["components"]["schemas"]["ItemChange"]
    assert change["anyOf"] == [{"required": ["label"]}, {"required": ["weight"]}]


def test_labels_need_a_character_python_does_not_strip():
    """The schema's label pattern names the spaces one by one: regex engines disagree on \\s."""
    from vismem.service.models import VISIBLE

    for code in range(0x10000):
        char = chr(code)
        if not 0xD800 <= code < 0xE000:
            assert bool(re.search(VISIBLE, char)) == bool(char.strip()), hex(code)


# ---- `where` on keys items lack, values JSON cannot hold, readers that meet a new key -----


def test_where_null_matches_only_items_that_hold_null(client):
    """An item without the key does not have the value null: `where=colr=null` (a typo'd
    key) once removed every item."""
    total = 3 * PER_LABEL
    for params in ({"where": "colr=null"}, {"where": ["name=0-0.png", "colr=null"]}):
        assert client.get("/items", params=params).json()["total"] == 0, params
    removed = client.delete("/items", params={"where": "colr=null"}, headers=AUTH)
    assert removed.status_code == 404 and client.get("/stats").json()["items"] == total
    held = client.post("/items", files=[upload("n.png", png(Image.new("RGB", (8, 8), "red")))],
                       data={"label": "x", "meta": "colr=null"}, headers=AUTH).json()["ids"]
    assert client.get(f"/items/{held[0]}").json()["meta"]["colr"] is None
    assert [i["id"] for i in client.get("/items", params={"where": "colr=null"}).json()["items"]] == held
    later = client.post("/items", files=[upload("m.png", png(Image.new("RGB", (8, 8), "blue")))],
                        data={"label": "x"}, headers=AUTH).json()["ids"]  # the key's column is cached now
    assert later and client.get("/items", params={"where": "colr=null"}).json()["total"] == 1
    assert client.delete("/items", params={"where": "colr=null"}, headers=AUTH).json()["ids"] == held


def test_metadata_json_cannot_hold_keeps_every_filter_working(client, memory):
    """NaN and 1e999 once went into the store as JSON SQLite cannot read: from then on every
    `where` answered 500, then nothing at all."""
    added = client.post("/items", files=[upload("n.png", png(Image.new("RGB", (8, 8), "red")))],
                        data={"label": "x", "meta": ["a=NaN", "b=1e999", "c=-Infinity", "d=[1, NaN]"]},
                        headers=AUTH)
    assert added.status_code == 201, added.text
    (new,) = added.json()["ids"]
    meta = client.get(f"/items/{new}").json()["meta"]
    assert (meta["a"], meta["b"], meta["c"], meta["d"]) == ("NaN", "1e999", "-Infinity", "[1, NaN]")  # as text
    for where in ("name=0-0.png", "a=NaN", "b=1e999"):
        found = client.get("/items", params={"where": where})
        assert found.status_code == 200 and found.json()["total"] == 1, (where, found.text)
    with pytest.raises(ValueError, match="finite"):  # the Python API refuses them before writing
        memory.add_vectors(np.ones((1, memory.dim), np.float32), ["x"], metas=[{"score": float("nan")}])
    assert client.get("/items", params={"label": "x"}).json()["total"] == 1


def test_readers_that_meet_a_new_where_key_together_all_see_its_items(tmp_path):
    """The first filter on a metadata key reads its values from the store; readers that
    came at once saw a column not filled yet, and answered 0 items."""
    rng = np.random.default_rng(0)
    n, keys = 5000, 3
    with Memory.create(tmp_path / "vectors", encoder=None, dim=4) as mem:
        mem.add_vectors(rng.normal(size=(n, 4)).astype(np.float32), ["a"] * n,
                        metas=[{f"k{j}": i % 2 for j in range(keys)} for i in range(n)])
        with client_for(mem) as c:

            def read(key: str, totals: list[int]) -> None:
                totals.append(c.get("/items", params={"where": f"{key}=0", "limit": 1}).json()["total"])

            for j in range(keys):  # each key new to the catalog, met by 6 readers at once
                totals: list[int] = []
                readers = [threading.Thread(target=read, args=(f"k{j}", totals)) for _ in range(6)]
                for thread in readers:
                    thread.start()
                for thread in readers:
                    thread.join()
                assert totals == [n // 2] * 6, (j, totals)


def test_a_where_key_given_twice_must_hold_both_values(client):
    """`where=name=a&where=name=b` kept only name=b, though every condition must hold: a
    DELETE removed the items of the last value instead of none. Now both must hold, so
    two different values match nothing and the same value twice is one condition."""
    total = 3 * PER_LABEL
    first, second = (client.get(f"/items/{i}").json()["meta"]["name"] for i in (1, 2))
    twice = [f"name={first}", f"name={second}"]
    removed = client.delete("/items", params={"where": twice}, headers=AUTH)
    assert removed.status_code == 404 and "no item matches where" in removed.json()["error"], removed.text
    assert client.get("/items", params={"where": twice}).json()["total"] == 0
    assert client.get("/items", params={"where": [f"name={first}"] * 2}).json()["total"] == 1
    assert client.get("/stats").json()["items"] == total


def test_a_wrong_method_is_told_the_methods_its_path_takes(client):
    """A 405 answered `{"error": "Method Not Allowed"}`, naming neither the method nor what
    the path takes, and under /static and /swagger its Allow header was empty (RFC 9110: it
    lists the methods the resource takes, and there GET and HEAD work)."""
    for method, path, takes in (("POST", "/static/style.css", "GET, HEAD, OPTIONS"),
                                ("DELETE", "/swagger/swagger-ui.css", "GET, HEAD, OPTIONS"),
                                ("POST", "/stats", "GET, HEAD, OPTIONS"), ("GET", "/classify", "OPTIONS, POST"),
                                ("PUT", "/items/1", "DELETE, GET, HEAD, OPTIONS, PATCH")):
        answer = client.request(method, path, headers=AUTH)
        assert answer.status_code == 405 and answer.headers["allow"] == takes, (method, path)
        assert answer.json()["error"] == f"{path} takes {takes}, not {method}"
    assert client.get("/static/style.css").status_code == 200  # what the Allow header says works
    unknown = client.get("/no/such/path")
    assert unknown.status_code == 404 and unknown.json()["error"] == "no such path: /no/such/path (the API is at /docs)"


def test_options_names_the_methods_a_path_takes(memory):
    """OPTIONS answered 405 at every path. A path the app serves now answers 204 with the
    methods it takes (as a 405 names them), without running an endpoint or needing the
    token; a path nothing serves stays 404, and OPTIONS is no operation of the document."""
    with client_for(memory, token=TOKEN, protect_reads=True) as client:
        for path, takes in (("/items", "DELETE, GET, HEAD, OPTIONS, PATCH, POST"),
                            ("/items/1", "DELETE, GET, HEAD, OPTIONS, PATCH"), ("/classify", "OPTIONS, POST"),
                            ("/checkpoints/before/rollback", "OPTIONS, POST"), ("/healthz", "GET, HEAD, OPTIONS"),
                            ("/", "GET, HEAD, OPTIONS"), ("/static/style.css", "GET, HEAD, OPTIONS")):
            answer = client.options(path)
            assert answer.status_code == 204 and answer.headers["allow"] == takes and not answer.content, path
            assert client.put(path).headers["allow"] == takes, path  # what a 405 says
        unknown = client.options("/no/such/path")
        assert unknown.status_code == 404 and unknown.json()["error"].startswith("no such path")
        document = client.get("/openapi.json", headers=AUTH).json()
        assert all("options" not in methods for methods in document["paths"].values())
        assert client.get("/stats", headers=AUTH).json()["items"] == 3 * PER_LABEL  # nothing changed


def test_a_missing_static_file_is_a_404_to_every_method(client):
    """`/static` serves a whole prefix, so OPTIONS at a file that is not there answered 204
    with an Allow header, and PUT a 405, where GET answers 404. Now every method answers
    404 there, as GET does; a real file keeps its 204 and Allow."""
    for path in ("/static/no-such-file.js", "/swagger/nothing.css", "/static/", "/static/a/b.js"):
        assert client.get(path).status_code == 404, path
        for method in ("OPTIONS", "PUT", "DELETE"):
            answer = client.request(method, path)
            assert answer.status_code == 404 and "allow" not in answer.headers, (method, path)
            assert answer.json()["error"].startswith("no such path: "), (method, path)
    real = client.options("/static/style.css")
    assert real.status_code == 204 and real.headers["allow"] == "GET, HEAD, OPTIONS"


def test_a_body_of_a_type_the_endpoint_does_not_take_is_a_415_that_names_both(client, memory, digit_sets):
    """`POST /items` sent as JSON answered 422 `label: Field required` to a body that held a
    label; `/classify` sent as JSON answered 400 and a `PATCH` sent as a form 422. The same
    mistake, a body the endpoint cannot read, is now one answer: 415, naming the type sent
    and the one the endpoint takes. Nothing changes."""
    query = digit_sets["1"][PER_LABEL]
    json_to_form = [client.post(path, json=body, headers=AUTH) for path, body in (
        ("/items", {"label": "1", "files": ["a.png"]}), ("/classify", {"vector": [0.0] * memory.dim}),
        ("/search", {"k": 3}))]
    text_to_form = client.post("/items", content=query, headers={**AUTH, "Content-Type": "image/png"})
    for answer in (*json_to_form, text_to_form):
        said = answer.json()["error"]
        assert answer.status_code == 415 and "multipart form" in said and "curl -F" in said, said
    assert "this request's body is application/json" in json_to_form[0].json()["error"]
    form_to_json = [client.patch("/items/1", data={"weight": "0"}, headers=AUTH),
                    client.patch("/items", files={"ids": (None, "1"), "weight": (None, "0")}, headers=AUTH),
                    client.post("/checkpoints", data={"name": "v1"}, headers=AUTH),
                    client.patch("/items/1", content=b'{"weight": 0}', headers={**AUTH, "Content-Type": "text/plain"})]
    for answer in form_to_json:
        said = answer.json()["error"]
        assert answer.status_code == 415 and "Content-Type: application/json" in said and "this request's body is" \
            in said, said
    assert len(memory) == 3 * PER_LABEL and memory.get(1).weight == 1.0 and memory.checkpoints() == []
    # what each takes still works; a JSON type with a suffix is JSON, as FastAPI reads it
    merge = client.patch("/items/1", content=b'{"weight": 0}',
                         headers={**AUTH, "Content-Type": "application/merge-patch+json"})
    assert merge.status_code == 200 and merge.json()["weight"] == 0.0
    assert classify(client, query, k=3).status_code == 200


def test_delete_items_names_a_repeated_selector_and_one_sent_in_the_body(client, memory):
    """`DELETE /items?label=a&label=b` answered `label: Input should be a valid string`, and a
    selector sent as a JSON or form body (read by no one) `give exactly one of ...`, as if
    none had been given. Nothing was removed, and nothing is."""
    twice = client.delete("/items?label=0&label=1", headers=AUTH)
    assert twice.status_code == 422
    assert twice.json()["error"] == "invalid request: query parameter label given more than once; it takes one"
    for body in ({"json": {"label": "0"}}, {"data": {"label": "0"}}):
        answer = client.request("DELETE", "/items", headers=AUTH, **body)
        said = answer.json()["error"]
        assert answer.status_code == 422 and "in the query string (DELETE /items?label=cat," in said, said
        assert "this endpoint reads no body" in said
    assert len(memory) == 3 * PER_LABEL
    assert client.delete("/items?label=0", headers=AUTH).json()["removed"] == PER_LABEL  # the query still works


def test_delete_items_says_an_unknown_or_missing_selector_as_other_endpoints_do(client, memory):
    """`DELETE /items` with no selector answered `invalid request: Value error, give exactly
    one of ...` (pydantic's prefix), and `?lable=0` `lable: Extra inputs are not permitted`,
    where every other endpoint names an unknown parameter and the ones it takes."""
    for query in ("", "?label=0&source=set-0"):
        answer = client.delete(f"/items{query}", headers=AUTH)
        assert answer.status_code == 422 and answer.json()["error"] == (
            "invalid request: give exactly one of id (repeatable), label, source, where (repeatable)"), answer.text
    unknown = client.delete("/items?lable=0", headers=AUTH)
    assert unknown.status_code == 422 and unknown.json()["error"] == (
        "invalid request: unknown query parameter lable; this endpoint takes id, label, source, where")
    assert len(memory) == 3 * PER_LABEL


def test_an_upload_not_sent_as_an_image_is_told_its_own_field(client, memory, digit_sets):
    """`POST /items` with a text/plain part was told `curl: -F 'file=@x.png;type=image/png'`,
    a field it refuses (its field is `files`)."""
    added = client.post("/items", files=[upload("a.png", digit_sets["0"][0], "text/plain")],
                        data={"label": "0"}, headers=AUTH)
    assert added.status_code == 415 and "-F 'files=@x.png;type=image/png'" in added.json()["error"]
    query = client.post("/classify", files={"file": ("q.png", digit_sets["0"][0], "text/plain")})
    assert query.status_code == 415 and "-F 'file=@x.png;type=image/png'" in query.json()["error"]
    assert len(memory) == 3 * PER_LABEL


def test_the_classify_page_offers_every_vote_and_k_the_api_takes(client):
    """The page's vote list lacked `prototype` and `hybrid`, and its k stopped at 100, where
    the API takes every vote in VOTES and k up to VoteParams' limit."""
    from vismem.decide import VOTES, VoteParams
    from vismem.settings import describe

    page = client.get("/").text
    select = re.search(r'<select id="vote">(.*?)</select>', page, re.S).group(1)
    assert re.findall(r"<option>(\w+)</option>", select) == list(VOTES)
    k = re.search(r'<input id="k"[^>]*>', page).group(0)
    limits = describe(VoteParams, "k")
    assert f'min="{limits["min"]}"' in k and f'max="{limits["max"]}"' in k


@pytest.mark.parametrize("bad", [{"max_list": 50}, {"max_list": 0}, {"max_pixels": 0}, {"max_upload_bytes": -1},
                                 {"max_list": 500.0}, {"max_pixels": True}])
def test_service_limits_that_would_refuse_every_request_are_refused(bad):
    """A max_list under /browse's page made every page of it a 422; 0 pixels or bytes refuse
    every upload. The CLI's options already kept them out; the Python API did not."""
    with pytest.raises(InvalidInputError, match="must be a whole number of at least"):
        ServiceSettings(**bad)
    script = (Path(__file__).parents[1] / "src/vismem/service/static/browse.js").read_text()
    assert f"const PAGE_SIZE = {BROWSE_PAGE};" in script  # the page asks for what the settings allow
    assert ServiceSettings(max_list=BROWSE_PAGE).max_list == BROWSE_PAGE


@pytest.mark.parametrize("bad", [0, -1.0, math.inf, math.nan, True, "60"])
def test_a_read_timeout_that_is_no_number_of_seconds_is_refused(bad):
    with pytest.raises(InvalidInputError, match="read_timeout must be a number of seconds above 0"):
        ServiceSettings(read_timeout=bad)


def test_every_serve_option_defaults_to_the_service_setting_it_sets():
    """`vismem serve` writes its defaults as literals (the CLI does not import FastAPI to
    start), each a twin of a `ServiceSettings` default: they must stay one value."""
    import dataclasses
    import inspect

    from vismem.cli.serve import serve

    options = {name: parameter.default.default for name, parameter in inspect.signature(serve).parameters.items()}
    settings = ServiceSettings()
    shared = [field.name for field in dataclasses.fields(ServiceSettings) if field.name in options]
    assert {"max_pixels", "record_write_seconds", "read_timeout", "protect_reads"} <= set(shared)
    for name in shared:
        assert options[name] == getattr(settings, name), name
    assert options["max_upload_mb"] * 2**20 == settings.max_upload_bytes

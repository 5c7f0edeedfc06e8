"""CLI and HTTP at parity, in what they answer: each command that has an endpoint
(`service/parity.py`) is run with --json and its endpoint is sent the same request, on
copies of one memory of real digit images; the two answers must hold the same fields with
the same values, except the fields each row names with the reason they differ.
(tests/test_service_parity.py checks that the endpoints exist; this, what they say.)"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import json_lines, run_cli_here
from fastapi.testclient import TestClient

from vismem import Memory
from vismem.service import ServiceSettings, create_app
from vismem.service.parity import PARITY

TOKEN = "parity-json-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
LABELS = ("0", "1", "2")
PER_LABEL = 6
UPLOAD = "the CLI names the file it read (its path), the service the upload's file name"
MADE_AT = "each face made its own checkpoint, a moment apart"


@dataclass(frozen=True)
class Pair:
    """One command run both ways. `args` follow MEMDIR ("{query}" and "{new}" stand for
    the query image and a folder of images to add); `send` is the TestClient call's
    keywords. Fields on one side only, or on both with values that differ, are named with
    why; every other field is on both sides, equal."""

    args: tuple[str, ...]
    method: str
    path: str
    send: dict[str, Any] = field(default_factory=dict)
    exit_code: int = 0
    status: int = 200
    cli_only: dict[str, str] = field(default_factory=dict)
    http_only: dict[str, str] = field(default_factory=dict)
    differ: dict[str, str] = field(default_factory=dict)
    setup: Callable[[Memory], None] | None = None  # on each copy before, e.g. a checkpoint
    edits: bool = True  # False: both faces read one memory (so its path and disk use agree)


def query_upload(query: Path) -> dict[str, Any]:
    return {"files": {"file": (query.name, query.read_bytes(), "image/png")}}


def with_checkpoint(memory: Memory) -> None:
    memory.checkpoint("c1")


def changed_since_checkpoint(memory: Memory) -> None:
    memory.checkpoint("c1")
    memory.relabel([1], "x")
    memory.set_weight([2], 0.0)
    memory.remove([3])


BY_VERB = "the verb's own count, which scripts read; `updated` is the same number"
NOT_SET = "a PATCH may change the label and the weight at once: null for the one it leaves as it was"
NO_RELABEL = "a PATCH may relabel too, which resets pruning counts: 0 where it sets only the weight"
FILE = "{query}"

PAIRS: dict[str, Pair] = {
    "classify": Pair(("classify", FILE, "-k", "3"), "POST", "/classify", {"data": {"k": "3"}},
                     differ={"path": UPLOAD}, edits=False),
    "classify restricted": Pair(
        ("classify", FILE, "-k", "4", "--vote", "distance", "--only-label", "1", "--only-label", "2",
         "--where", "camera=phone"),
        "POST", "/classify", {"data": {"k": "4", "vote": "distance", "only_label": ["1", "2"],
                                       "where": "camera=phone"}},
        differ={"path": UPLOAD}, edits=False),
    "classify counterfactual": Pair(("classify", FILE, "-k", "5", "--counterfactual"), "POST",
                                    "/classify?counterfactual=true", {"data": {"k": "5"}},
                                    differ={"path": UPLOAD}, edits=False),
    "search": Pair(("search", FILE, "-k", "4", "--only-source", "digits"), "POST", "/search",
                   {"data": {"k": "4", "only_source": "digits"}}, differ={"path": UPLOAD}, edits=False),
    "info": Pair(("info",), "GET", "/stats",
                 cli_only={"encoding": "where the CLI would run the encoder; the server prints its own at start"},
                 edits=False),
    "checkpoints": Pair(("checkpoints",), "GET", "/checkpoints", setup=with_checkpoint, edits=False),
    "checkpoint": Pair(("checkpoint", "c2"), "POST", "/checkpoints", {"json": {"name": "c2"}}, status=201,
                       differ={"made_at": MADE_AT}),
    "rollback": Pair(("rollback", "c1"), "POST", "/checkpoints/c1/rollback", setup=changed_since_checkpoint),
    "delete-checkpoint": Pair(("delete-checkpoint", "c1"), "DELETE", "/checkpoints/c1", setup=with_checkpoint),
    "remove": Pair(("remove", "--id", "4", "--id", "999"), "DELETE", "/items", {"params": {"id": ["4", "999"]}},
                   exit_code=3),
    "remove one": Pair(("remove", "--id", "5"), "DELETE", "/items/5"),
    "remove label": Pair(("remove", "--label", "2"), "DELETE", "/items", {"params": {"label": "2"}}),
    "remove where": Pair(("remove", "--where", "camera=phone"), "DELETE", "/items",
                         {"params": {"where": "camera=phone"}}),
    "relabel": Pair(("relabel", "--id", "1", "--id", "999", "--label", "x"), "PATCH", "/items",
                    {"json": {"ids": [1, 999], "label": "x"}}, exit_code=3,
                    cli_only={"relabelled": BY_VERB}, http_only={"weight": NOT_SET}),
    "block": Pair(("block", "--id", "2", "--id", "3"), "PATCH", "/items", {"json": {"ids": [2, 3], "weight": 0}},
                  cli_only={"blocked": BY_VERB}, http_only={"label": NOT_SET, "reset_prune_counts": NO_RELABEL}),
    "boost": Pair(("boost", "--id", "3", "--factor", "2.5"), "PATCH", "/items",
                  {"json": {"ids": [3], "weight": 2.5}},
                  cli_only={"boosted": BY_VERB}, http_only={"label": NOT_SET, "reset_prune_counts": NO_RELABEL}),
    "unblock": Pair(("unblock", "--id", "2"), "PATCH", "/items", {"json": {"ids": [2], "weight": 1}},
                    cli_only={"reset": BY_VERB}, http_only={"label": NOT_SET, "reset_prune_counts": NO_RELABEL}),
    "add": Pair(("add", "{new}", "--label", "0", "--source", "upload"), "POST", "/items",
                {"data": {"label": "0"}}, exit_code=3, status=201,  # one image is held under another label
                cli_only={"event": "the CLI prints a line per committed batch before this summary"},
                differ={"skipped_items": UPLOAD}),
}

# Endpoints of parity.py that answer in another shape than their command, and why.
ANSWERS_OTHERWISE = {
    "PATCH /items/{item_id}": "answers the item as it is now (as GET /items/{item_id}), which the web page "
                              "redraws its card from; PATCH /items answers as the CLI",
}


@pytest.fixture(scope="module")
def built(tmp_path_factory, digits) -> dict[str, Path]:
    """A memory of digit images (source "digits", some with camera=phone), a query image
    and a folder of two images to add: one new, one held under label "1"."""
    images, labels = digits
    root = tmp_path_factory.mktemp("json-parity")
    members = {label: [i for i, lab in enumerate(labels) if lab == label] for label in LABELS}
    with Memory.create(root / "mem", encoder="pixels") as memory:
        for label in LABELS:
            for start, meta in ((0, {"camera": "phone"}), (2, {"camera": "scanner"})):
                chosen = members[label][start : start + (2 if start == 0 else PER_LABEL - 2)]
                folder = root / "images" / f"{label}-{meta['camera']}"
                folder.mkdir(parents=True)
                for i in chosen:
                    images[i].save(folder / f"{i}.png")
                memory.add_images([folder], label=label, source="digits", meta=meta)
    query = root / "query.png"
    images[members["1"][PER_LABEL + 1]].save(query)
    new = root / "new"
    new.mkdir()
    images[members["0"][PER_LABEL + 1]].save(new / "a-new.png")
    images[members["1"][0]].save(new / "b-held.png")
    return {"memory": root / "mem", "query": query, "new": new}


def _cli_args(pair: Pair, memdir: Path, built: dict[str, Path]) -> list[str]:
    given = [str(built["query"]) if a == FILE else str(built["new"]) if a == "{new}" else a for a in pair.args]
    return [given[0], str(memdir), *given[1:], "--json"]


def _send(pair: Pair, built: dict[str, Path]) -> dict[str, Any]:
    send = dict(pair.send)
    if pair.args[0] in ("classify", "search"):
        send |= query_upload(built["query"])
    if pair.args[0] == "add":
        send["files"] = [("files", (p.name, p.read_bytes(), "image/png")) for p in sorted(built["new"].iterdir())]
    return send


def _both(pair: Pair, built: dict[str, Path], tmp_path: Path) -> tuple[Any, Any]:
    """(what the CLI printed, what the endpoint answered) for the same request on the same
    memory: one memory both read, or two copies each face edits."""
    cli_dir = tmp_path / "cli"
    shutil.copytree(built["memory"], cli_dir)
    http_dir = cli_dir if not pair.edits else tmp_path / "http"
    if pair.edits:
        shutil.copytree(built["memory"], http_dir)
    for each in {cli_dir, http_dir}:
        if pair.setup is not None:
            with Memory.open(each) as memory:
                pair.setup(memory)
    shown = run_cli_here(*_cli_args(pair, cli_dir, built))
    assert shown.returncode == pair.exit_code, shown.stderr
    lines = json_lines(shown)
    with Memory.open(http_dir) as memory, TestClient(create_app(memory, ServiceSettings(token=TOKEN))) as client:
        answer = client.request(pair.method, pair.path, headers=AUTH, **_send(pair, built))
    assert answer.status_code == pair.status, answer.text
    answered = answer.json()
    if isinstance(answered, list):  # a line each, where HTTP answers a list
        return lines, answered
    assert len(lines) == 1 or pair.args[0] == "add", lines  # add: the committed batches, then this
    return lines[-1], answered


def test_every_command_with_an_endpoint_is_compared():
    """A new command or endpoint fails here until a row runs it both ways (or says why its
    answer has another shape)."""
    served = {command for command, face in PARITY.items() if face.endpoints}
    assert {pair.args[0] for pair in PAIRS.values()} == served
    endpoints = {e for command in served for e in PARITY[command].endpoints}
    compared = {f"{pair.method} {pair.path.split('?')[0]}" for pair in PAIRS.values()}
    compared = {e for e in endpoints if any(_matches(e, c) for c in compared)}
    assert endpoints - compared == set(ANSWERS_OTHERWISE)


def _matches(endpoint: str, sent: str) -> bool:
    method, path = endpoint.split(" ")
    sent_method, sent_path = sent.split(" ")
    parts, sent_parts = path.split("/"), sent_path.split("/")
    return method == sent_method and len(parts) == len(sent_parts) and all(
        p == s or p.startswith("{") for p, s in zip(parts, sent_parts, strict=True))


@pytest.mark.parametrize("name", list(PAIRS))
def test_the_cli_and_the_endpoint_answer_alike(name, built, tmp_path):
    pair = PAIRS[name]
    cli, http = _both(pair, built, tmp_path)
    if isinstance(http, list):
        assert len(cli) == len(http) and http, (cli, http)
        pairs = list(zip(cli, http, strict=True))
    else:
        pairs = [(cli, http)]
    for ours, theirs in pairs:
        assert set(ours) - set(theirs) == set(pair.cli_only), name
        assert set(theirs) - set(ours) == set(pair.http_only), name
        assert set(pair.differ) <= set(ours) & set(theirs), name
        shared = sorted(set(ours) & set(theirs) - set(pair.differ))
        assert {k: ours[k] for k in shared} == {k: theirs[k] for k in shared}, name

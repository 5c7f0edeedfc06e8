"""Which HTTP endpoint is the face of which `vismem` command, and why some have none.

Both faces call the same `Memory` method with the same option names (HTTP spells
`--only-label` as `only_label`). tests/test_service_parity.py checks this table against
the Typer app (a new command fails until it is listed here) and against the routes;
docs/service.md shows it (`markdown_table`), and the same test keeps that in step.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Face:
    """A command's HTTP endpoints (METHOD /path), or none and the reason."""

    endpoints: tuple[str, ...] = ()
    memory: str = ""  # the Memory method both faces call
    note: str = ""
    cli_only: str = ""  # why there is no endpoint


SELF_QUERY = ("queries every item against the memory: minutes at scale, holding the service's lock "
              "all along; run it beside the server")
REBUILD = "rebuilds the index: minutes at scale under the write lock; run it beside the server"
PICKED_UP = ", which uses the result from its next request on"

PARITY: dict[str, Face] = {
    "add": Face(("POST /items",), "add_prepared",
                "uploads instead of server-side paths (the server never opens a path a client names); "
                "label, source, allow_duplicates, meta as in the CLI"),
    "classify": Face(("POST /classify",), "classify_vectors",
                     "k, vote, alpha, tau, mix, abstain, only_label, only_source, where; "
                     "--counterfactual is ?counterfactual=true; one image `file`, or one `vector` (a JSON "
                     "array) where --queries takes a .npy file of them"),
    "search": Face(("POST /search",), "search", "k, only_label, only_source, where; one image `file`, or one "
                   "`vector` (a JSON array) where --queries takes a .npy file of them"),
    "remove": Face(("DELETE /items", "DELETE /items/{item_id}"), "remove",
                   "exactly one of id (repeatable), label, source, where (repeatable); some missing ids "
                   "are listed, not an error (CLI: exit 3); none of the ids existing, or no item matching, "
                   "is a 404 (CLI: exit 1). Every removal is purged (`unfinished` says when it could not "
                   "be, where the CLI exits 3); --verify (a scan of the memory's files) stays on the CLI"),
    "relabel": Face(("PATCH /items", "PATCH /items/{item_id}"), "update", '{"label": ...}'),
    "block": Face(("PATCH /items", "PATCH /items/{item_id}"), "update", '{"weight": 0}'),
    "boost": Face(("PATCH /items", "PATCH /items/{item_id}"), "update", '{"weight": factor}'),
    "unblock": Face(("PATCH /items", "PATCH /items/{item_id}"), "update", '{"weight": 1}'),
    "info": Face(("GET /stats",), "info", "the same object as info --json"),
    "checkpoint": Face(("POST /checkpoints",), "checkpoint", 'JSON {"name": ..., "replace": false}; 409 if the '
                       "name is taken"),
    "checkpoints": Face(("GET /checkpoints",), "checkpoints", "a JSON list, where --json prints a line each"),
    "rollback": Face(("POST /checkpoints/{name}/rollback",), "rollback",
                     "the same object as rollback --json, and `unfinished` (as for remove); 404 if there "
                     "is no such checkpoint"),
    "delete-checkpoint": Face(("DELETE /checkpoints/{name}",), "delete_checkpoint", '{"deleted": name}'),
    "create": Face(cli_only="a server serves one memory that already exists; making a new one is "
                            "work on the server's disk"),
    "add-vectors": Face(cli_only="precomputed embeddings come as .npy arrays of up to millions of rows, "
                                 "not as uploads; a memory of them is served all the same: POST /classify "
                                 "and POST /search take a `vector`"),
    "eval": Face(cli_only="reads a labelled test folder (or .npy files) on the server's disk; over HTTP, "
                          "POST /classify each test image (or `vector`) and compare"),
    "explain": Face(cli_only="writes a PNG file; over HTTP the same explanation is POST /classify's "
                             "neighbours (and ?counterfactual=true) with GET /items/{item_id}/thumbnail, which "
                             "the page at / draws"),
    "encoders": Face(cli_only="lists what `create --encoder` accepts, and create is CLI-only"),
    "demo": Face(cli_only="builds its own throw-away memory from scikit-learn's digits"),
    "eval-protocols": Face(cli_only="a research harness on data sets and embedding files, not on the "
                                    "served memory"),
    "serve": Face(cli_only="starts this server"),
    "tune": Face(cli_only=SELF_QUERY + PICKED_UP),
    "prune": Face(cli_only=SELF_QUERY + PICKED_UP),
    "suspects": Face(cli_only=SELF_QUERY),
    "calibrate": Face(cli_only=SELF_QUERY + PICKED_UP),
    "reindex": Face(cli_only=REBUILD + PICKED_UP),
    "compact": Face(cli_only=REBUILD + PICKED_UP + "; it also runs by itself once a fifth of the index is "
                                                  "removed slots"),
    "tune-index": Face(cli_only="tunes on query files beside the memory (a .npy array or images), or on the "
                                "recorded queries (those the server recorded reach the database every "
                                "--record-write-seconds, 30 s, and as it stops); run it beside the server" + PICKED_UP),
    "export": Face(cli_only="writes a file as large as the memory (vectors and all) on the server's disk; "
                            "run it beside the server, which keeps serving"),
    "import": Face(cli_only="makes a new memory, and create is CLI-only"),
    "record-queries": Face(cli_only="the memory owner's choice to keep users' queries (user data), made beside "
                                    "the server" + PICKED_UP + "; the server writes those it recorded every "
                                    "--record-write-seconds (30 s) and as it stops, and GET /stats says how many "
                                    "are kept (`recorded_queries`) and how many still wait in its RAM "
                                    "(`recorded_waiting`)"),
}

# Endpoints no command has: they serve the web page and other programs.
HTTP_ONLY: dict[str, str] = {
    "GET /healthz": "liveness and access mode, always open",
    "GET /items": "paged listing (offset, limit, label, source, where): Memory.page, O(1) in the offset",
    "GET /items/{item_id}": "one item's metadata: Memory.items",
    "GET /items/{item_id}/thumbnail": "the JPEG kept at add time: Memory.thumbnail",
}


def markdown_table() -> str:
    """The table in docs/service.md."""
    rows = ["| command | endpoint | `Memory` method | notes |", "| --- | --- | --- | --- |"]
    for name, face in sorted(PARITY.items(), key=lambda kv: (not kv[1].endpoints, kv[0])):
        endpoints = ", ".join(f"`{e}`" for e in face.endpoints) or "CLI only"
        method = f"`{face.memory}`" if face.memory else ""
        rows.append(f"| `{name}` | {endpoints} | {method} | {face.note or face.cli_only} |")
    return "\n".join(rows)

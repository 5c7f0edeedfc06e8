"""CLI and HTTP at parity: every `vismem` command has its endpoints or a reason it has
none, every endpoint serves a command or is listed as HTTP-only, and docs/service.md
shows the table the code holds."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer

from vismem import Memory
from vismem.service import ServiceSettings, create_app
from vismem.service.parity import HTTP_ONLY, PARITY, markdown_table

DOCS = Path(__file__).parents[1] / "docs" / "service.md"


def cli_commands() -> set[str]:
    from vismem.cli import app, checkpoints, commands, curate, quality, search, serve, transfer  # noqa: F401  (register them)

    return set(typer.main.get_command(app).commands)  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def routes(tmp_path_factory) -> set[str]:
    with Memory.create(tmp_path_factory.mktemp("parity") / "mem", encoder=None, dim=4) as memory:
        app = create_app(memory, ServiceSettings(token="parity-token"))
        document = app.openapi()
    return {f"{method.upper()} {path}" for path, methods in document["paths"].items() for method in methods}


def test_every_command_is_listed():
    """A new command fails here until parity.py says which endpoint serves it, or why none."""
    assert set(PARITY) == cli_commands()


@pytest.mark.parametrize("command", sorted(PARITY))
def test_each_command_has_its_endpoints_or_a_reason(command, routes):
    face = PARITY[command]
    assert bool(face.endpoints) != bool(face.cli_only), command
    assert set(face.endpoints) <= routes, command
    if face.endpoints:
        assert face.memory and hasattr(Memory, face.memory), command


def test_every_endpoint_serves_a_command_or_says_what_it_is_for(routes):
    served = {endpoint for face in PARITY.values() for endpoint in face.endpoints}
    assert routes == served | set(HTTP_ONLY)


def test_the_docs_show_the_table():
    assert markdown_table() in DOCS.read_text()

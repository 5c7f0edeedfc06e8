"""The layers keep to their seams: the CLI, the service and curation go through the
`Memory` facade and never reach its store (issue "One clear core"), so a new home (a
distributed store) needs only the facade to hold."""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "vismem"
ABOVE_THE_FACADE = [*sorted((SRC / "cli").glob("*.py")), *sorted((SRC / "service").glob("*.py")), SRC / "curate.py"]


def test_the_cli_the_service_and_curation_never_reach_past_the_facade():
    """This stop's interrupt reports passed `memory.store` to the CLI's report helper and
    curation read `memory.store.describe()`, which no test caught: the facade now answers
    both (`Memory.commits`, `Memory.info`), and this holds every later change to it."""
    reaching = [f"{path.relative_to(SRC)}:{node.lineno}: {ast.unparse(node)}"
                for path in ABOVE_THE_FACADE
                for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
                if isinstance(node, ast.Attribute) and node.attr in ("store", "_store")]
    assert len(ABOVE_THE_FACADE) > 10 and reaching == []

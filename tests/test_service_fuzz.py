"""An outside property-based fuzzer against the real `vismem serve`: the OpenAPI document
is the contract, and schemathesis checks the server keeps it.

Schemathesis reads /openapi.json from a server on 127.0.0.1 started with a token, and
runs its four phases (examples, coverage, fuzzing, stateful) with every check on (the
exceptions, each with its reason, are in tests/schemathesis.toml): no 5xx, no status the
document does not list, no schema-valid request refused, no schema-violating request
accepted, no answer that breaks its schema, auth enforced where declared, no removed item
reachable. Bounded by a fixed number of examples per operation and a fixed seed.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import png_bytes as png
from conftest import start_server, stop_server

from vismem import Memory

TOKEN = "fuzz-token-12345"
EXAMPLES = 20  # per operation and phase: about 40 s here on 2 busy cores
HERE = Path(__file__).parent

pytestmark = pytest.mark.slow
pytest.importorskip("schemathesis", reason="the fuzz test needs the test extras: pip install -e '.[test]'")


def test_schemathesis_finds_no_failure(tmp_path, digits):
    images, labels = digits
    with Memory.create(tmp_path / "mem", encoder="pixels") as memory:
        for label in "0123":
            members = [i for i, lab in enumerate(labels) if lab == label][:5]
            memory.add_image_bytes([(f"{label}-{i}.png", png(images[i])) for i in members],
                                   label=label, source=f"set-{label}")
        dim = memory.dim
    process, url = start_server(tmp_path / "mem", env={"VISMEM_TOKEN": TOKEN})
    try:
        run = subprocess.run(
            [sys.executable, "-m", "schemathesis.cli", "--config-file", str(HERE / "schemathesis.toml"), "run",
             f"{url}/openapi.json", "-H", f"Authorization: Bearer {TOKEN}", "--max-examples", str(EXAMPLES),
             "--seed", "1", "--workers", "1", "--request-timeout", "60", "--no-color"],
            capture_output=True, text=True, timeout=600, cwd=tmp_path,
            env={**os.environ, "SCHEMATHESIS_HOOKS": "schemathesis_hooks", "VISMEM_FUZZ_DIM": str(dim),
                 "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])},
        )
    finally:
        server_log = stop_server(process)
    summary = run.stdout[run.stdout.rfind("SUMMARY"):]
    print(summary)  # operations, phases and test cases, for the record (pytest -s)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert "No issues found" in summary and "Tested: 16" in summary
    generated = int(re.search(r"(\d+) generated", summary).group(1))
    assert generated >= 12 * EXAMPLES
    assert "Traceback" not in server_log

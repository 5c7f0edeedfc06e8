"""docs/scale.md shows exactly the tables its calculator prints (they cannot drift)."""

from __future__ import annotations

import runpy
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_scale_doc_shows_what_the_calculator_prints():
    tables = runpy.run_path(str(DOCS / "scale_plan.py"))["tables"]()
    assert tables in (DOCS / "scale.md").read_text(), "rerun `python docs/scale_plan.py` and paste its tables"

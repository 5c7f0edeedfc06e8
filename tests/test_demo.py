"""`vismem demo` tells the whole story offline, with the real encoder."""

import json

import pytest


@pytest.mark.slow
def test_demo_end_to_end(cli, tmp_path):
    result = cli("demo", "--per-class", "10", "--workdir", tmp_path, "--json", check=True)
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    summary = json.loads(lines[0])
    assert summary["encoder"] == "efficientnet_lite0"
    assert summary["accuracy_old_classes"] > 0.6
    assert summary["accuracy_new_class"] >= 0.5  # a class added with no training is recognised
    assert summary["removed_id_returned"] is False
    assert summary["memory_items"] == 99  # 9 classes x 10 + 10 new - 1 removed
    explained = summary["explained"]
    assert explained["neighbors"] and {"id", "label", "distance", "weight", "source"} <= set(
        explained["neighbors"][0]
    )


def test_demo_shows_progress_and_explains_what_it_prints(cli_process, tmp_path):
    """Human mode, on the instant pixels encoder: a progress bar for every encoding step
    (stderr; FORCE_COLOR makes Rich draw it as on a terminal) and a note on the table's
    prototype-distance line."""
    import os

    env = {**os.environ, "FORCE_COLOR": "1", "COLUMNS": "120"}
    result = cli_process("demo", "--encoder", "pixels", "--per-class", "3", "--workdir", tmp_path, env=env,
                         check=True)
    for step in ("encoding 27 digits", "classifying 90 held-out digits", "encoding 3 new digits",
                 "classifying 100 held-out digits"):
        assert step in result.stderr, step
    assert "prototype distance" in result.stdout
    assert "cosine distance to each class's prototype" in result.stdout
    # its steps are plain text: the CLI prints text as given (no Rich markup), and a
    # "[bold]1. Build[/bold]" came out tags and all
    assert "1. Build a memory of digits 1-9" in result.stdout and "4. Remove one exemplar" in result.stdout
    assert "[bold]" not in result.stdout and "[/" not in result.stdout

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

"""Tune, calibrate, classify --abstain, block/boost/relabel and restriction through the real CLI,
on real digit images (pixels encoder: real images, no model download)."""

import json
import logging
import shutil

import numpy as np
import pytest


@pytest.fixture(scope="module")
def built_memory(digit_folders, tmp_path_factory):
    from conftest import run_cli_here as run_cli

    train, _ = digit_folders
    memdir = tmp_path_factory.mktemp("built") / "mem"
    run_cli("create", memdir, "--encoder", "pixels", check=True)
    run_cli("add", memdir, train, check=True)
    return memdir


@pytest.fixture
def digit_memory(built_memory, memdir):
    shutil.copytree(built_memory, memdir)  # each test edits its own copy
    return memdir


def classify(cli, memdir, image, *args):
    return json.loads(cli("classify", memdir, image, "--json", *args, check=True).stdout.splitlines()[0])


def test_interventions_show_in_the_decision(digit_memory, digit_folders, cli):
    _, test = digit_folders
    image = sorted((test / "3").iterdir())[0]
    before = classify(cli, digit_memory, image, "--k", "5")
    assert set(before["prototypes"]) == {str(d) for d in range(10)}
    assert before["interventions"] == [] and before["abstained"] is False
    first, second = before["neighbors"][0]["id"], before["neighbors"][1]["id"]

    said = [cli("block", digit_memory, "--id", first, check=True).stdout,
            cli("boost", digit_memory, "--id", second, "--factor", "3", check=True).stdout,
            cli("relabel", digit_memory, "--id", second, "--label", "7", check=True).stdout]
    assert said == ["blocked 1 item (weight 0)\n", "boosted 1 item (weight 3)\n", "relabelled 1 item to '7'\n"]
    after = classify(cli, digit_memory, image, "--k", "5")
    by_id = {n["id"]: n for n in after["neighbors"]}
    assert by_id[first]["weight"] == 0 and by_id[first]["item_weight"] == 0
    assert by_id[second]["item_weight"] == 3 and by_id[second]["label"] == "7"
    assert by_id[second]["relabelled_from"] == before["neighbors"][1]["label"]
    assert f"item {first} blocked (weight 0)" in after["interventions"]
    assert f"item {second} weighted x3" in after["interventions"]
    assert any(f"item {second} relabelled" in note for note in after["interventions"])

    restricted = classify(cli, digit_memory, image, "--k", "5", "--only-label", "1", "--only-label", "2")
    assert {n["label"] for n in restricted["neighbors"]} <= {"1", "2"}
    assert set(restricted["prototypes"]) == {"1", "2"}
    assert "query restricted to labels ['1', '2']" in restricted["interventions"]

    cli("unblock", digit_memory, "--id", first, check=True)
    from vismem import Memory

    with Memory.open(digit_memory) as memory:
        assert memory.get(first).weight == 1


def test_tune_calibrate_and_abstain(digit_memory, digit_folders, cli, tmp_path):
    tuned = json.loads(cli("tune", digit_memory, "--json", check=True).stdout)
    assert tuned["held_out"] == 20 and 0 <= tuned["accuracy"] <= 1
    info = json.loads(cli("info", digit_memory, "--json", check=True).stdout)
    assert info["defaults"] == tuned["params"]
    assert info["prototypes_per_class"] == tuned["prototypes_per_class"]

    _, test = digit_folders
    image = sorted((test / "5").iterdir())[0]
    result = cli("classify", digit_memory, image, "--abstain")
    assert result.returncode == 1 and "vismem calibrate" in result.stderr
    cal = json.loads(cli("calibrate", digit_memory, "--tpr", "0.9", "--json", check=True).stdout)
    assert cal["achieved_tpr"] >= 0.9
    # a real photo (scikit-image's cat) is unlike every digit in memory; a held-out digit is not
    from PIL import Image
    from skimage import data

    cat = tmp_path / "cat.png"
    Image.fromarray(data.chelsea()).save(cat)
    out = classify(cli, digit_memory, cat, "--abstain")
    assert out["abstained"] is True and out["label"] is None
    assert out["ood_score"] > out["threshold"]


def test_classify_and_explain_say_what_would_change_the_decision(digit_memory, digit_folders, cli, tmp_path):
    _, test = digit_folders
    image = sorted((test / "8").iterdir())[0]
    out = classify(cli, digit_memory, image, "--k", "5", "--counterfactual")
    cf = out["counterfactual"]
    assert cf["label"] == out["label"] and cf["exact"] and cf["remove"] and cf["label_after_remove"] != out["label"]
    assert "counterfactual" not in classify(cli, digit_memory, image, "--k", "5")  # only when asked
    shown = cli("explain", digit_memory, image, "--k", "5", "--counterfactual", "--out", tmp_path / "why.png",
                check=True).stdout
    assert "what would change this: removing" in " ".join(shown.split())
    # the sheet says it too, in a strip below the same tiles (it showed only the tiles)
    from PIL import Image

    cli("explain", digit_memory, image, "--k", "5", "--out", tmp_path / "plain.png", check=True)
    plain, why = (np.asarray(Image.open(tmp_path / name).convert("L")) for name in ("plain.png", "why.png"))
    assert why.shape[1] == plain.shape[1] and why.shape[0] > plain.shape[0]
    assert np.array_equal(why[: plain.shape[0]], plain) and (why[plain.shape[0]:] < 128).any()
    cli("remove", digit_memory, *[arg for i in cf["remove"] for arg in ("--id", str(i))], check=True)
    assert classify(cli, digit_memory, image, "--k", "5")["label"] == cf["label_after_remove"]


def test_explain_decides_as_classify_does_with_the_same_options(digit_memory, digit_folders, cli, tmp_path):
    from PIL import Image

    from vismem import Memory
    from vismem.errors import NotCalibratedError

    _, test = digit_folders
    image, sheet = sorted((test / "3").iterdir())[0], tmp_path / "why.png"
    refused = cli("explain", digit_memory, image, "--abstain", "--out", sheet)
    assert refused.returncode == 1 and "vismem calibrate" in refused.stderr and not sheet.exists()
    with Memory.open(digit_memory) as memory, pytest.raises(NotCalibratedError):
        memory.classify([tmp_path / "not-read.png"], abstain=True)  # options are checked before any image
    cli("calibrate", digit_memory, check=True)
    blank = tmp_path / "noise.png"  # unlike any digit
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(blank)
    for query, options in ((image, ["--only-label", "5", "--only-label", "8"]), (image, ["--mix", "0.5"]),
                           (image, ["--where", "width=8", "--abstain"]), (blank, ["--abstain"])):
        args = [query, "--k", "5", *options, "--json"]
        explained = json.loads(cli("explain", digit_memory, *args, "--out", sheet, check=True).stdout)
        assert explained.pop("sheet") == str(sheet) and sheet.exists()
        assert explained == classify(cli, digit_memory, *args), options
    assert {n["label"] for n in classify(cli, digit_memory, image, "--only-label", "5", "--only-label", "8")[
        "neighbors"]} <= {"5", "8"}
    assert classify(cli, digit_memory, blank, "--abstain")["abstained"]  # the sheet above showed it

def test_abstain_warns_when_the_memory_changed_since_calibration(digit_memory, digit_folders, cli, caplog):
    _, test = digit_folders
    image = sorted((test / "5").iterdir())[0]
    shown = cli("calibrate", digit_memory, check=True).stderr
    # 80 items, scored once and once per held-out group of classes
    assert "scoring each item against the others" in shown and "320/320" in shown
    with caplog.at_level(logging.WARNING, logger="vismem"):
        cli("classify", digit_memory, image, "--abstain", "--json", check=True)
        assert "calibrate" not in caplog.text
        info = json.loads(cli("info", digit_memory, "--json", check=True).stdout)
        assert info["abstain"]["changed_since"] == 0.0
        cli("add", digit_memory, test, check=True)  # 30 test digits join the 80 in memory: 38% more
        cli("classify", digit_memory, image, "--abstain", "--json", check=True)
        assert "38% of the memory was added or removed since `vismem calibrate`" in caplog.text
        assert json.loads(cli("info", digit_memory, "--json", check=True).stdout)["abstain"]["changed_since"] > 0.1
        cli("calibrate", digit_memory, check=True)
        caplog.clear()
        cli("classify", digit_memory, image, "--abstain", "--json", check=True)
        assert "calibrate" not in caplog.text


def test_info_says_a_calibration_made_through_another_transform_is_stale(digit_memory, digit_folders, cli):
    """`classify --abstain` refuses a threshold measured through an earlier feature transform;
    `info` showed it as valid ("0% of the memory changed since"), with no warning."""
    _, test = digit_folders
    image = sorted((test / "5").iterdir())[0]
    cli("calibrate", digit_memory, check=True)
    assert json.loads(cli("info", digit_memory, "--json", check=True).stdout)["abstain"]["transform_changed"] is False
    cli("tune", digit_memory, "--transform", "whiten", check=True)
    refused = cli("classify", digit_memory, image, "--abstain")
    assert refused.returncode == 1 and "feature transform changed" in refused.stderr
    info = cli("info", digit_memory, check=True)
    assert "abstention threshold" in info.stdout and "measured through another feature transform" in info.stdout
    assert f"warning: the abstention threshold is stale: run `vismem calibrate {digit_memory}` again" in info.stderr
    assert json.loads(cli("info", digit_memory, "--json", check=True).stdout)["abstain"]["transform_changed"] is True
    cli("calibrate", digit_memory, check=True)
    info = cli("info", digit_memory, check=True)
    assert "another feature transform" not in info.stdout and "stale" not in info.stderr


def strict_json(text: str) -> list:
    """JSON lines as a strict parser (jq, JavaScript, Go) reads them: NaN is not JSON."""
    def refuse(constant: str):
        raise ValueError(f"{constant} is not JSON")

    return [json.loads(line, parse_constant=refuse) for line in text.splitlines()]


def test_tune_with_one_transform_says_null_for_the_untried_defaults(digit_memory, cli):
    # --transform center never tries the shipped defaults (transform none): their accuracy
    # is unknown, which JSON says with null, not NaN
    tuned = strict_json(cli("tune", digit_memory, "--transform", "center", "--dry-run", "--json",
                            check=True).stdout)[0]
    assert list(tuned["by_transform"]) == ["center"] and tuned["default_accuracy"] is None
    shown = cli("tune", digit_memory, "--transform", "center", "--dry-run", check=True).stdout
    assert "nan" not in shown and "defaults not tried" in shown


def test_calibrate_refuses_a_k_beyond_the_memory(digit_memory, cli):
    # 80 items: no item has a 200th nearest other item, so every score would be the
    # 2.0 cap and the threshold would answer everything
    result = cli("calibrate", digit_memory, "--k", "200", "--json")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith("error: ") and "below 80" in result.stderr
    assert json.loads(cli("info", digit_memory, "--json", check=True).stdout)["abstain"] is None


def test_a_memory_whose_items_are_all_blocked_names_unblock(digit_memory, cli):
    ids = range(1, 81)  # the 80 digits added; check=True: block finds every one
    cli("block", digit_memory, *[arg for i in ids for arg in ("--id", str(i))], check=True)
    result = cli("calibrate", digit_memory, "--json")
    assert result.returncode == 1 and result.stderr.startswith("error: ")
    assert "all 80 items are blocked or pruned" in result.stderr and "vismem unblock" in result.stderr


def test_prototype_votes_restricted_to_no_class_answer_no_label(digit_memory):
    """A restriction that matches no class leaves a prototype or hybrid vote nothing to
    vote with: label None, as the rank vote answers; not an error saying the memory has no
    prototypes. A memory whose every item is blocked names the fix."""
    from vismem.errors import InvalidInputError
    from vismem.memory import Memory

    with Memory.open(digit_memory) as memory:
        _, queries = memory.vectors([1, 2])
        for vote in ("rank", "prototype", "hybrid"):
            decisions = memory.classify_vectors(queries, vote=vote, labels=["no such label"])
            assert [d.label for d in decisions] == [None, None] and decisions[0].restriction
        memory.set_weight(memory.ids(), 0.0)
        assert memory.classify_vectors(queries, vote="rank")[0].label is None
        with pytest.raises(InvalidInputError, match=r"every item is blocked or hard-pruned\): unblock"):
            memory.classify_vectors(queries, vote="prototype")

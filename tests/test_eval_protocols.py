"""Every evaluation protocol runs end to end on a tiny real data set, and the CLI writes
the JSON report and the PNG plots."""

import json

import numpy as np
import pytest
from conftest import run_cli_here
from sklearn.datasets import load_digits

from vismem.errors import InvalidInputError
from vismem.evaluation.data import Dataset, load_dataset, load_embeddings
from vismem.evaluation.engine import holdout_split
from vismem.evaluation.protocols import (
    accuracy_vs_k,
    class_incremental,
    corrupt_labels,
    few_shot,
    label_noise,
    out_of_distribution,
    run_protocols,
)


@pytest.fixture(scope="module")
def tiny():
    digits = load_digits()
    rows = np.concatenate([np.flatnonzero(digits.target == c)[:30] for c in range(10)])
    x = digits.data[rows].astype(np.float32)
    return Dataset("tiny-digits", x / np.linalg.norm(x, axis=1, keepdims=True), digits.target[rows].astype(str))


def test_accuracy_vs_k(tiny):
    r = accuracy_vs_k(tiny, ks=(1, 5, 10, 20), per_class=(1, 2))
    assert r["ks"] == [1, 5, 10, 20]
    assert set(r["curves"]) == {"rank", "softmax", "distance", "plurality", "hybrid"}
    assert list(r["transforms"]) == ["none", "center", "whiten-256-s0.1", "whiten-256-s0.1-p0.5"]
    assert r["transforms"]["none"]["curves"] == r["curves"]
    assert r["transforms"]["center"]["curves"] != r["curves"]  # a transform changes who is near
    assert r["tuned"]["transform"] in r["tuned"]["held_out_by_transform"]
    assert all(0.5 < a <= 1 for curve in r["curves"].values() for a in curve)  # raw digits are easy
    assert set(r["prototypes"]) == {"1", "2"} and 0.5 < r["linear_probe"]["accuracy"] <= 1
    assert r["curves"]["rank"][0] == r["curves"]["plurality"][0]  # k=1: every rule is 1-NN


def test_few_shot(tiny):
    r = few_shot(tiny, shots=(1, 5), draws=3)
    one = r["results"]["1"]
    assert set(one) == {"rank", "prototype", "linear_probe"}
    assert one["rank"]["draws"] == 3 and one["rank"]["ci95"] >= 0
    assert r["results"]["5"]["prototype"]["mean"] > 0.5



def test_few_shot_says_how_many_neighbours_voted(tiny):
    """At 1 shot of 10 classes 10 items are drawn: `k` 20 was reported though 10 voted."""
    r = few_shot(tiny, shots=(1, 5), draws=2, k=20)
    assert r["k"] == 20 and r["k_used"] == {"1": 10, "5": 20}


@pytest.mark.parametrize("draws", [1, 0])
def test_few_shot_refuses_fewer_than_two_draws(tiny, draws):
    """One draw gave each figure a NaN interval (NaN is not JSON either), and none a mean of
    nothing; `vismem eval-protocols --draws` asks for 2 at least, and so does the API now."""
    with pytest.raises(InvalidInputError, match="draws must be an integer of at least 2"):
        few_shot(tiny, shots=(1,), draws=draws)
    with pytest.raises(InvalidInputError, match="one draw has no interval"):
        run_protocols(tiny, ["knn", "fewshot"], draws=draws)
    few_shot(tiny, shots=(1,), draws=2)  # the least that gives an interval


def test_class_incremental(tiny):
    r = class_incremental(tiny, steps=3)
    history = r["history"]["prototype"]
    assert [e["classes"] for e in history] == [4, 7, 10]  # 10 classes in 3 steps
    assert "old_before" not in history[0] and "old_after" in history[1]
    assert 0 < r["average_incremental_accuracy"]["knn"] <= 1


def test_out_of_distribution(tiny):
    r = out_of_distribution(tiny, unknown_fraction=0.3, draws=2)
    assert [len(d["unknown_classes"]) for d in r["draws"]] == [3, 3]
    assert r["draws"][0]["unknown_classes"] != r["draws"][1]["unknown_classes"]
    for name in ("neighbour_1_distance", "neighbour_1+prototype", "abstention"):
        assert 0 <= r["scores"][name]["auroc"] <= 1 and 0 <= r["scores"][name]["fpr_at_95tpr"] <= 1
    assert all(w in (0.0, 0.5, 1.0) for w in r["prototype_weight_chosen"])
    assert r["draws"][0]["out_queries"] > 0 and r["draws"][0]["in_queries"] > 0


def test_label_noise(tiny):
    noisy, flipped = corrupt_labels(tiny.labels, 0.4, seed=1)
    assert flipped.mean() == pytest.approx(0.4, abs=0.01) and (noisy[flipped] != tiny.labels[flipped]).all()
    r = label_noise(tiny, noise=(0.0, 0.4))
    assert [row["noise"] for row in r["results"]] == [0.0, 0.4]
    assert {"soft", "hard"} <= set(r["results"][1]["wrong-decisions"])


def test_datasets_and_user_embeddings(tmp_path, tiny):
    iris = load_dataset("iris-raw")
    assert iris.describe() == {"name": "iris-raw", "items": 150, "dim": 4, "classes": 3}
    with pytest.raises(InvalidInputError):
        load_dataset("cifar10")
    np.save(tmp_path / "x.npy", tiny.vectors)
    np.save(tmp_path / "y.npy", tiny.labels[:-1])
    with pytest.raises(InvalidInputError, match="labels"):
        load_embeddings(tmp_path / "x.npy", tmp_path / "y.npy")


def test_cli_writes_report_and_plots(tmp_path, tiny, cli):
    np.save(tmp_path / "x.npy", tiny.vectors)
    np.save(tmp_path / "y.npy", tiny.labels)
    result = cli("eval-protocols", "--embeddings", tmp_path / "x.npy", "--labels", tmp_path / "y.npy",
                 "--out", tmp_path / "report", "--draws", "2", "--steps", "2", "--json", check=True)
    report = json.loads(result.stdout)
    assert set(report) >= {"knn", "fewshot", "incremental", "ood", "noise", "files"}
    saved = json.loads((tmp_path / "report" / "report.json").read_text())
    assert saved["knn"]["ks"][-1] == 100
    for png in ("accuracy_vs_k.png", "incremental.png"):
        assert (tmp_path / "report" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_tune_keeps_the_defaults_on_a_tie_and_finds_a_better_k(tiny):
    from vismem.decide import VoteParams
    from vismem.tune import tune

    # two far-apart blobs: every setting is perfect, so the shipped defaults stay
    rng = np.random.default_rng(0)
    blobs = np.vstack([rng.normal(0, 0.01, (40, 8)) + np.eye(8)[0], rng.normal(0, 0.01, (40, 8)) + np.eye(8)[1]])
    easy = tune(blobs.astype(np.float32), ["a"] * 40 + ["b"] * 40)
    assert easy.params == VoteParams() and easy.per_class == 1 and easy.accuracy == 1.0
    assert easy.transform.kind == "none"  # no transform unless it measurably helps
    result = tune(tiny.vectors, tiny.labels)
    assert result.accuracy >= result.default_accuracy and len(result.trials) > 100
    assert result.accuracy == max(result.by_transform.values())
    assert result.by_transform[result.transform.name] == result.accuracy
    assert len(result.by_transform) == 6 and result.to_dict()["transform"]["kind"] in ("none", "center", "whiten")


def test_tune_keeps_the_shipped_alpha_tau_and_mix_where_they_change_nothing():
    """Fewer than 10 training items: the shipped k is not a candidate and every setting is
    perfect, so k=1 wins, where alpha and tau change nothing: the shipped values stay
    (alpha 0.5 and tau 0.01 were stored, and then used by every other vote)."""
    from vismem.decide import VoteParams
    from vismem.tune import tune

    rng = np.random.default_rng(0)
    blobs = np.vstack([rng.normal(0, 0.01, (5, 8)) + np.eye(8)[0], rng.normal(0, 0.01, (5, 8)) + np.eye(8)[1]])
    result = tune((blobs / np.linalg.norm(blobs, axis=1, keepdims=True)).astype(np.float32), ["a"] * 5 + ["b"] * 5)
    assert result.accuracy == 1.0 and result.default_accuracy is None
    assert result.params == VoteParams(k=1)


def test_cli_refuses_an_out_that_is_a_file_before_any_work(tmp_path, tiny, cli):
    np.save(tmp_path / "x.npy", tiny.vectors)
    np.save(tmp_path / "y.npy", tiny.labels)
    taken = tmp_path / "report.txt"
    taken.write_text("mine")
    result = cli("eval-protocols", "knn", "--embeddings", tmp_path / "x.npy", "--labels", tmp_path / "y.npy",
                 "--out", taken, "--json")
    assert result.returncode == 1 and result.stdout == "" and taken.read_text() == "mine"
    assert result.stderr.startswith("error: --out") and "give a folder" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.splitlines()) == 1
    # a folder under a file: it was found only after the protocols had run, writing the report
    result = cli("eval-protocols", "knn", "--embeddings", tmp_path / "x.npy", "--labels", tmp_path / "y.npy",
                 "--out", taken / "report", "--json")
    assert result.returncode == 1 and result.stdout == "" and len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith(f"error: --out {taken / 'report'} lies in {taken}, which is a file")


def test_hard_pruning_that_drops_every_item_scores_zero(tiny):
    """12 real digits, 3 classes: hard pruning drops the whole memory at some noise level;
    searching the empty memory raised an IndexError and lost the report."""
    rows = np.concatenate([np.flatnonzero(tiny.labels == c)[:4] for c in ("0", "1", "2")])
    small = Dataset("twelve-digits", tiny.vectors[rows], tiny.labels[rows])
    result = label_noise(small)
    emptied = [(row, count) for row in result["results"] for count in ("disagreements", "wrong-decisions")
               if row[count]["hard_removed"] == 9]  # 9 of the 12 in train: all of them
    assert emptied  # positive control: this data does empty the memory
    assert all(row[count]["hard"] == 0.0 for row, count in emptied)


@pytest.mark.parametrize("protocol", ["fewshot", "ood", "noise"])
def test_data_with_one_class_is_refused_before_any_protocol_runs(tmp_path, tiny, cli, protocol):
    np.save(tmp_path / "x.npy", tiny.vectors[tiny.labels == "3"])
    np.save(tmp_path / "y.npy", tiny.labels[tiny.labels == "3"])
    result = cli("eval-protocols", protocol, "--embeddings", tmp_path / "x.npy", "--labels", tmp_path / "y.npy",
                 "--out", tmp_path / "report", "--json")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith("error: ") and "2 classes" in result.stderr
    assert not (tmp_path / "report").exists()


def test_an_unknown_protocol_is_refused_before_the_data_is_loaded(tmp_path, cli):
    """Loading `digits` encodes 1,797 images (minutes) the first time: a typo in a protocol
    name came out only after that, and after any protocol named before it had run."""
    result = cli("eval-protocols", "knn", "fewshots", "--embeddings", tmp_path / "absent.npy",
                 "--labels", tmp_path / "absent-labels.npy", "--out", tmp_path / "report")
    # bad usage, as `--vote majority` is: exit 2 (it was 1, "error, nothing changed")
    assert result.returncode == 2 and "unknown protocol 'fewshots'" in result.stderr


@pytest.mark.parametrize("given, says", [(("--dataset", "digits", "--memory", "{tmp}/absent"), "at most one of them"),
                                         (("--embeddings", "{tmp}/absent.npy"), "give both or neither"),
                                         (("--memory", "{tmp}/absent", "--labels", "{tmp}/y.npy"), "both or neither")])
def test_sources_given_wrongly_are_bad_usage_before_anything_is_read(tmp_path, cli, given, says):
    # they exited 1 ("error, nothing changed"), where the README's exit codes say 2
    result = cli("eval-protocols", "knn", *[a.format(tmp=tmp_path) for a in given], "--out", tmp_path / "report")
    assert result.returncode == 2 and says in result.stderr and result.stdout == ""
    assert not (tmp_path / "report").exists()


def test_encoding_a_data_set_shows_progress_once(tmp_path, cli):
    """Encoding digits the first time takes minutes through a real encoder: no bar showed it."""
    args = ("eval-protocols", "incremental", "--dataset", "digits:pixels", "--cache", tmp_path / "cache",
            "--out", tmp_path / "report", "--json")
    first = cli(*args, check=True)
    assert "encoding digits" in first.stderr and "1797/1797" in first.stderr
    assert json.loads(first.stdout)["dataset"]["items"] == 1797
    again = cli(*args, check=True)  # cached: nothing to encode
    assert "encoding" not in again.stderr


def test_ood_holds_out_only_classes_it_can_test(tiny):
    """A class too small to reach the test split (one item) was drawn as the unknown one:
    no unknown queries, AUROC NaN (not JSON) in the report and numpy's warnings."""
    rows = np.concatenate([np.flatnonzero(tiny.labels == c)[:n] for c, n in (("0", 30), ("1", 30), ("2", 1))])
    result = out_of_distribution(Dataset("uneven", tiny.vectors[rows], tiny.labels[rows]))
    assert all(draw["out_queries"] > 0 and draw["in_queries"] > 0 for draw in result["draws"])
    assert all(np.isfinite(s["auroc"]) for s in result["scores"].values())
    json.dumps(result, allow_nan=False)


def test_ood_on_data_too_small_to_calibrate_is_refused_before_any_protocol_runs(tmp_path, tiny, cli):
    """Two classes of 8: the known class's train split holds 6 items. The error came from
    calibration, after knn had run, as "the memory has 6" (the data had 16 items)."""
    rows = np.concatenate([np.flatnonzero(tiny.labels == c)[:8] for c in ("0", "1")])
    np.save(tmp_path / "x.npy", tiny.vectors[rows])
    np.save(tmp_path / "y.npy", tiny.labels[rows])
    args = ("--embeddings", tmp_path / "x.npy", "--labels", tmp_path / "y.npy", "--out", tmp_path / "report")
    result = cli("eval-protocols", "knn", "ood", *args, "--json")
    assert result.returncode == 1 and result.stdout == "" and not (tmp_path / "report").exists()
    assert "the memory has" not in result.stderr
    assert result.stderr.startswith("error: the ood protocol calibrates abstention on the known classes' train "
                                    "split, 6 items here (of 16")
    assert "needs at least 10: give more items per class, or leave ood out" in result.stderr
    cli("eval-protocols", "knn", "fewshot", "incremental", "noise", *args, check=True)  # the others run


def test_few_shot_says_what_it_drew_where_classes_have_fewer(tmp_path, tiny, cli):
    """Classes 0-2 with 30 items (21 in train), 3 and 4 with 6 (4 in train): '10/class' used
    all 4 of the small ones without a word, and a shot count no class can fill (30 here)
    was reported as if drawn, every draw the whole train split."""
    rows = np.concatenate([np.flatnonzero(tiny.labels == c)[:n]
                           for c, n in (("0", 30), ("1", 30), ("2", 30), ("3", 6), ("4", 6))])
    uneven = Dataset("uneven", tiny.vectors[rows], tiny.labels[rows])
    r = few_shot(uneven, shots=(1, 10, 30), draws=3)
    assert r["shots"] == [1, 10] and list(r["results"]) == ["1", "10"]
    assert r["skipped"] == {"30": "no class has 30 items in the train split (the most is 21)"}
    assert r["per_class"]["1"] == {"least": 1, "most": 1, "short": {}}
    assert r["per_class"]["10"] == {"least": 4, "most": 10, "short": {"3": 4, "4": 4}}
    # through the CLI, its default shots 1, 5 and 10: classes of 8 (6 in train) and of 4 (3)
    rows = np.concatenate([np.flatnonzero(tiny.labels == c)[:n] for c, n in (("0", 8), ("1", 8), ("2", 4), ("3", 4))])
    np.save(tmp_path / "x.npy", tiny.vectors[rows])
    np.save(tmp_path / "y.npy", tiny.labels[rows])
    result = cli("eval-protocols", "fewshot", "--embeddings", tmp_path / "x.npy", "--labels", tmp_path / "y.npy",
                 "--out", tmp_path / "report", "--draws", "2", "--no-probe", check=True)
    lines = result.stdout.splitlines()
    assert any(line.startswith("few-shot 1/class: rank ") for line in lines)
    assert any(line.startswith("few-shot 5/class (3 to 5: 2 of 4 classes have fewer than 5 in train, "
                               "all of theirs drawn): rank ") for line in lines)
    assert "few-shot 10/class: skipped, no class has 10 items in the train split (the most is 6)" in lines
    saved = json.loads((tmp_path / "report" / "report.json").read_text())["fewshot"]
    assert saved["shots"] == [1, 5] and list(saved["skipped"]) == ["10"]


def test_knn_on_data_too_small_to_tune_reports_the_rest(tmp_path, tiny, cli):
    """Two classes of 3: the train split holds 2 of each, of which tuning holds out none.
    knn failed as a whole with tune's own error, after the checks had passed, and told the
    user to run `vismem tune --held-out 0.5`, a command eval-protocols does not run."""
    rows = np.concatenate([np.flatnonzero(tiny.labels == c)[:3] for c in ("0", "1")])
    r = accuracy_vs_k(Dataset("small", tiny.vectors[rows], tiny.labels[rows]), transforms=())
    assert r["curves"]["rank"] and "accuracy" in r["linear_probe"]
    assert "tuned_minus_probe" not in r
    assert r["tuned"] == {"error": "not measured: choosing a setting as `vismem tune` does holds out 20% of each "
                                   "class of the train split (none of a class with one item) and needs at least 2; "
                                   "of 4 train items in 2 classes it holds out 0"}
    np.save(tmp_path / "x.npy", tiny.vectors[rows])
    np.save(tmp_path / "y.npy", tiny.labels[rows])
    result = cli("eval-protocols", "knn", "--embeddings", tmp_path / "x.npy", "--labels", tmp_path / "y.npy",
                 "--out", tmp_path / "report", check=True)
    assert "knn: tuned: not measured: choosing a setting" in result.stdout and "--held-out" not in result.stderr
    json.loads((tmp_path / "report" / "report.json").read_text(), parse_constant=pytest.fail)


def test_test_rows_with_a_twin_in_train_are_counted_and_warned_of(tmp_path, tiny, cli):
    """Data with each row twice (an augmented set saved with its originals): 1-NN found
    each test row's twin in train and scored 100%, with no word of it, where `eval` warns
    of test vectors the memory holds."""
    rows = np.concatenate([np.flatnonzero(tiny.labels == c)[:10] for c in ("0", "1", "2")])
    twice = np.repeat(rows, 2)
    report = run_protocols(Dataset("twice", tiny.vectors[twice], tiny.labels[twice]), ["incremental"])
    train, test = holdout_split(tiny.labels[twice], 0.3, 0)
    twins = sum(any(np.array_equal(tiny.vectors[twice][t], tiny.vectors[twice][r]) for r in train) for t in test)
    assert twins > 0 and report["split"] == {"train": len(train), "test": len(test), "test_rows_in_train": twins}
    assert run_protocols(Dataset("once", tiny.vectors[rows], tiny.labels[rows]), ["incremental"])[
        "split"]["test_rows_in_train"] == 0
    np.save(tmp_path / "x.npy", tiny.vectors[twice])
    np.save(tmp_path / "y.npy", tiny.labels[twice])
    result = cli("eval-protocols", "incremental", "--embeddings", tmp_path / "x.npy", "--labels", tmp_path / "y.npy",
                 "--out", tmp_path / "report", "--json", check=True)
    assert json.loads(result.stdout)["split"]["test_rows_in_train"] == twins
    assert f"warning: {twins} of the {len(test)} test rows have an identical row in the train split" in result.stderr


def test_eval_protocols_help_names_every_image_data_set_it_encodes(tmp_path):
    """`--dataset mnist:<encoder>` is taken as `digits:<encoder>` is; the help named only the
    latter, so a user had no way to learn MNIST could go through another encoder."""
    shown = " ".join(run_cli_here("eval-protocols", "--help", check=True).stdout.split())
    assert "digits:<encoder>" in shown and "mnist:<encoder>" in shown
    data = load_dataset("mnist:pixels", cache_dir=tmp_path)
    assert data.vectors.shape == (5000, 768) and len(set(data.labels)) == 10

"""Abstention: the calibrated threshold answers the target share of unseen in-distribution queries."""

import numpy as np
import pytest
from sklearn.datasets import load_digits

from vismem import Memory
from vismem.calibrate import auroc, calibrate_threshold, fpr_at_tpr, true_positive_rate
from vismem.errors import InvalidInputError


def test_threshold_arithmetic():
    scores = np.arange(1, 101, dtype=float)  # 1..100
    assert calibrate_threshold(scores, 0.95) == 95.0
    assert true_positive_rate(scores, 95.0) == 0.95
    assert auroc(np.array([0.1, 0.2]), np.array([0.8, 0.9])) == 1.0
    assert fpr_at_tpr(scores, np.array([50.0, 99.0]), 0.95) == 0.5
    with pytest.raises(InvalidInputError):
        calibrate_threshold(scores, 0)


@pytest.mark.parametrize(("tpr", "n"), [(0.56, 25), (0.55, 100), (0.68, 75)])
def test_threshold_accepts_exactly_the_target_when_it_is_a_whole_count(tpr, n):
    """0.56 x 25 is 14.000000000000002 in floating point: the threshold took the 15th score."""
    scores = np.arange(1, n + 1, dtype=float)
    threshold = calibrate_threshold(scores, tpr)
    assert true_positive_rate(scores, threshold) == pytest.approx(tpr)


@pytest.mark.parametrize("tpr", [0.95, 0.8])
def test_calibration_reaches_target_tpr_on_held_out_data(tmp_path, tpr):
    digits = load_digits()
    x, y = digits.data.astype(np.float32), digits.target.astype(str)
    known = y != "9"  # class 9 never enters memory: it is the out-of-distribution class
    rows = np.random.default_rng(0).permutation(np.flatnonzero(known))
    memory_rows, query_rows = rows[:1000], rows[1000:]
    with Memory.create(tmp_path / "m", encoder=None, dim=64) as memory:
        memory.add_vectors(x[memory_rows], y[memory_rows])
        from vismem.curate import calibrate_memory

        calibration = calibrate_memory(memory, tpr=tpr)
        assert calibration.achieved_tpr >= tpr
        answered = [not d.abstained for d in memory.classify_vectors(x[query_rows], abstain=True)]
        assert np.mean(answered) == pytest.approx(tpr, abs=0.04)
        unknown = memory.classify_vectors(x[y == "9"], abstain=True)
        assert np.mean([d.abstained for d in unknown]) > 1 - np.mean(answered)
        d = next(d for d in unknown if d.abstained)
        assert d.label is None and d.to_dict()["abstained"] is True and d.ood_score > d.threshold


@pytest.mark.parametrize("transform, prototype_weight", [("whiten", 0.0), ("whiten", None), ("center", 0.0)])
def test_calibration_through_a_transform_fitted_on_the_items_reaches_the_target(tmp_path, transform,
                                                                                 prototype_weight):
    """Whitened, the 200 items the transform was fitted on lay apart from each other as no
    new query does from them: their leave-one-out scores set a threshold that no new
    digit reached (0 of 500 abstained for a target of 5%). Scored through fits made
    without them, they set one that about 5% reach. (None: the prototype weight is chosen
    too, on AUROCs measured the same way.)"""
    from vismem.curate import calibrate_memory

    digits = load_digits()
    x, y = digits.data.astype(np.float32), digits.target.astype(str)
    rows = np.random.default_rng(0).permutation(len(x))
    with Memory.create(tmp_path / "m", encoder=None, dim=64) as memory:
        memory.add_vectors(x[rows[:200]], y[rows[:200]])
        memory.set_transform(transform)
        calibration = calibrate_memory(memory, tpr=0.95, prototype_weight=prototype_weight)
        assert calibration.transform == memory.transform.key != "none"
        abstained = np.mean([d.abstained for d in memory.classify_vectors(x[rows[200:700]], abstain=True)])
        assert abstained == pytest.approx(0.05, abs=0.03)


def test_abstain_without_calibration_names_the_fix(tmp_path):
    with Memory.create(tmp_path / "m", encoder=None, dim=4) as memory:
        memory.add_vectors(np.eye(4, dtype=np.float32), ["a", "b", "c", "d"])
        with pytest.raises(InvalidInputError, match="vismem calibrate"):
            memory.classify_vectors(np.eye(4, dtype=np.float32)[:1], abstain=True)


def test_prototype_weight_is_chosen_only_when_it_measurably_helps():
    from vismem.calibrate import choose_prototype_weight

    assert choose_prototype_weight({}) == 0.0
    assert choose_prototype_weight({"0": 0.90, "0.5": 0.903, "1": 0.89}) == 0.0  # within the margin
    assert choose_prototype_weight({"0": 0.90, "0.5": 0.93, "1": 0.92}) == 0.5


def test_fit_calibration_measures_the_score_and_records_what_it_saw():
    from vismem.calibrate import calibration_work, changed_fraction, fit_calibration, is_stale

    digits = load_digits()
    x = digits.data.astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ids = np.arange(len(x)) + 100
    scored: list[int] = []
    result = fit_calibration(x, digits.target.astype(str), ids=ids, progress=scored.append)
    # progress follows every item scored: once, and once per held-out class group
    assert sum(scored) == calibration_work(digits.target.astype(str)) == 4 * len(x) and len(scored) >= 4
    assert result.held_out == len(x)  # every item scored, each left out in turn
    assert set(result.auroc) == {"0", "0.5", "1"} and all(0.5 < a <= 1 for a in result.auroc.values())
    best = max(result.auroc.values())
    assert result.prototype_weight == (0.0 if best <= result.auroc["0"] + 0.005 else
                                       float(max(result.auroc, key=result.auroc.get)))
    assert result.items == len(x) and result.max_id == ids[-1] and result.achieved_tpr >= 0.95
    scored.clear()
    fixed = fit_calibration(x, digits.target.astype(str), prototype_weight=1.0, progress=scored.append)
    assert sum(scored) == calibration_work(digits.target.astype(str), 1.0) == len(x)
    assert fixed.auroc == {} and fixed.prototype_weight == 1.0 and fixed.threshold > result.threshold
    # 60 removed (of the first ids) and 30 added since: 5% of 1797
    now = np.r_[ids[60:], ids[-1] + 1 + np.arange(30)]
    assert changed_fraction(result.items, result.max_id, now) == pytest.approx(90 / len(x))
    assert not is_stale(changed_fraction(result.items, result.max_id, now))
    assert is_stale(changed_fraction(result.items, result.max_id, ids[200:]))
    assert changed_fraction(None, None, now) is None and not is_stale(None)


def test_calibrate_memory_records_what_it_was_fitted_on(tmp_path):
    from vismem.curate import calibrate_memory

    digits = load_digits()
    with Memory.create(tmp_path / "m", encoder=None, dim=64) as memory:
        ids = memory.add_vectors(digits.data[:300].astype(np.float32), digits.target[:300].astype(str))
        calibration = calibrate_memory(memory)
        assert calibration.max_id == max(ids) and calibration.items == 300
        assert memory.settings.abstention == calibration


def test_abstention_scores_the_nearest_item_that_votes(tmp_path):
    """Calibration scores each voting item against the other voting items; classify scored
    a query by its nearest item, blocked or not. So a query of a blocked class sat next to
    its blocked items, scored as familiar, and was answered with another class's label."""
    digits = load_digits()
    x, y = digits.data.astype(np.float32), digits.target.astype(str)
    rows = np.random.default_rng(0).permutation(len(x))
    memory_rows, query_rows = rows[:1200], rows[1200:]
    threes = x[query_rows][y[query_rows] == "3"]
    with Memory.create(tmp_path / "m", encoder=None, dim=64) as memory:
        ids = np.asarray(memory.add_vectors(x[memory_rows], y[memory_rows]))
        from vismem.curate import calibrate_memory

        calibrate_memory(memory)
        nearest = np.array([1 - memory.search(q, 1)[0][0].distance for q in threes])
        scored = memory.classify_vectors(threes, abstain=True)
        assert np.allclose([d.ood_score for d in scored], 1 - nearest, atol=1e-5)  # nothing blocked: unchanged
        assert not any(d.abstained for d in scored)
        memory.set_weight(ids[y[memory_rows] == "3"].tolist(), 0.0)
        blocked = memory.classify_vectors(threes, abstain=True)
        assert sum(d.abstained for d in blocked) >= 0.9 * len(threes)
        assert all(d.ood_score >= s.ood_score for d, s in zip(blocked, scored, strict=True))


@pytest.mark.parametrize("k", [1, 3])
def test_abstention_reaches_past_blocked_neighbours_to_the_items_that_vote(tmp_path, k):
    """Classify scored a query by the voting items among the neighbours it fetched for the
    vote: with its 10 nearest items blocked, it found none and scored the 2.0 cap (always
    abstained), and with --counterfactual, which fetches 50 more, it scored another value,
    so asking what would change a decision changed it."""
    digits = load_digits()
    x, y = digits.data.astype(np.float32), digits.target.astype(str)
    rows = np.random.default_rng(0).permutation(len(x))
    with Memory.create(tmp_path / "m", encoder=None, dim=64) as memory:
        from vismem.curate import calibrate_memory

        ids = np.asarray(memory.add_vectors(x[rows[:300]], y[rows[:300]]))
        calibrate_memory(memory, tpr=0.9, k=k, prototype_weight=0.0)
        queries = x[rows[300:306]]
        blocked = {n.id for d in memory.classify_vectors(queries, k=10) for n in d.neighbors}
        memory.set_weight(sorted(blocked), 0.0)
        unit = x[rows[:300]] / np.linalg.norm(x[rows[:300]], axis=1, keepdims=True)
        voting = unit[~np.isin(ids, list(blocked))]
        for q in queries:
            expected = np.sort(1.0 - voting @ (q / np.linalg.norm(q)))[k - 1]
            plain, asked = (memory.classify_vectors(q, k=10, abstain=True, counterfactual=cf)[0]
                            for cf in (False, True))
            assert plain.ood_score == pytest.approx(expected, abs=1e-5)
            assert (plain.label, plain.abstained, plain.ood_score) == (asked.label, asked.abstained, asked.ood_score)


def test_too_few_voting_items_are_counted_as_such(tmp_path, cli):
    """15 items of which 10 blocked: calibrate said "the memory has 5", which `info` (15
    items) contradicts, and named no fix."""
    memdir = tmp_path / "m"
    with Memory.create(memdir, encoder=None, dim=8) as memory:
        ids = memory.add_vectors(np.random.default_rng(0).standard_normal((15, 8)), ["a"] * 15)
        memory.set_weight(ids[:10], 0.0)
    refused = cli("calibrate", memdir, "--json")
    assert refused.returncode == 1 and refused.stdout == ""
    assert "5 of its 15 items vote" in refused.stderr and "vismem unblock" in refused.stderr


@pytest.mark.parametrize("bad, says", [({"k": 0}, "k must be a whole number"), ({"k": 2.5}, "k must be a whole"),
                                       ({"tpr": 1.5}, "target TPR"),
                                       ({"prototype_weight": float("inf")}, "finite number >= 0"),
                                       ({"prototype_weight": float("nan")}, "finite number >= 0")])
def test_calibrate_memory_refuses_a_bad_k_or_tpr_before_any_scoring(tmp_path, bad, says):
    """k=0 failed deep in the scoring with an IndexError (a traceback, not an error that
    names it), and a bad tpr only once every item was scored: both are refused first now,
    and the memory stays uncalibrated. A prototype weight of inf (`--prototype-weight inf`)
    was saved, with a threshold of NaN."""
    from contextlib import contextmanager

    from vismem.curate import calibrate_memory

    scored = []  # what the bar was told was scored

    @contextmanager
    def report(description, total):
        yield scored.append

    x, y = load_digits(return_X_y=True)
    with Memory.create(tmp_path / "m", encoder=None, dim=64) as memory:
        memory.add_vectors(x[:40].astype(np.float32), [str(label) for label in y[:40]])
        with pytest.raises(InvalidInputError, match=says):
            calibrate_memory(memory, **{"prototype_weight": 0.0, **bad}, report=report)
        assert memory.settings.abstention is None
    assert scored == []


def test_the_search_for_a_voting_neighbour_stops_at_milvus_largest_top_k(tmp_path):
    """The search past blocked neighbours doubled its depth with no end but the memory's
    size: past 16,384 (Milvus's largest top-k) a Milvus memory's search fails. It stops
    there, and a query with more blocked items than that nearest it scores as having no
    voting neighbour (2.0, the cap: it abstains). (A spy on the store's searches.)"""
    from vismem.classify import DEEPEST, ballots, voting_filter, voting_kth_distance

    rng = np.random.default_rng(0)
    near = np.array([1.0] + [0.0] * 7) + 0.01 * rng.standard_normal((DEEPEST + 50, 8))
    far = np.array([-1.0] + [0.0] * 7) + 0.01 * rng.standard_normal((20, 8))
    with Memory.create(tmp_path / "m", encoder=None, dim=8) as memory:
        blocked = memory.add_vectors(near.astype(np.float32), ["a"] * len(near))
        memory.add_vectors(far.astype(np.float32), ["b"] * len(far))
        memory.set_weight(blocked, 0.0)
        store, settings = memory.store, memory.settings
        query = np.array([[1.0] + [0.0] * 7], np.float32)
        neighbours = store.search(query, 10, voting_filter(None, settings))
        depths, search = [], store.search

        def spy(queries, k, where=None):
            depths.append(k)
            return search(queries, k, where)

        store.search = spy
        kth = voting_kth_distance(store, query, neighbours, ballots(neighbours, settings), 5, None, settings)
    assert max(depths) == DEEPEST and kth.tolist() == [2.0]


def test_a_refused_calibration_draws_no_bar(tmp_path):
    """Refused for a k too large, or too few items, `vismem calibrate` drew its bar first,
    left on the terminal ("scoring each item against the others ... 0/15") over work never
    done: the refusal is checked before the bar starts."""
    import sys

    from conftest import on_terminal

    for name, count, k in (("k", 15, "15"), ("few", 5, "3")):
        with Memory.create(tmp_path / name, encoder=None, dim=8) as memory:
            memory.add_vectors(np.random.default_rng(0).standard_normal((count, 8)), ["a", "b"] * (count // 2) + ["a"])
        refused, shown = on_terminal([sys.executable, "-m", "vismem", "calibrate", str(tmp_path / name), "--k", k])
        assert refused.returncode == 1, shown
        assert b"scoring" not in shown and (b"give k below 15" if name == "k" else b"needs at least 10") in shown

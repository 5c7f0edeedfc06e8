"""Counterfactuals: the reported set is the smallest that changes the label (checked against
every subset with `decide` itself), and removing it from a real memory on disk flips the decision."""

import shutil
from itertools import combinations

import numpy as np
import pytest

from vismem import Memory
from vismem.counterfactual import PrototypeClusters, counterfactual
from vismem.curate import calibrate_memory
from vismem.decide import NEIGHBOUR_VOTES, VoteParams, decide
from vismem.errors import InvalidInputError


def label_of(sims, labels, weights, params, keep):
    """The decision `decide` makes when only the `keep` rows (in order) are in memory."""
    rows = [r for r in range(len(sims)) if keep[r]][: params.k]
    return decide(sims[rows], rows, [labels[r] for r in rows], ["s"] * len(rows), weights[rows], params).label


def random_case(rng, m):
    sims = np.sort(rng.uniform(0.2, 0.95, m))[::-1]
    if rng.random() < 0.3:  # exact ties in similarity, as duplicates give
        sims = np.round(sims, 1)
    labels = rng.choice(["a", "b", "c"], m, p=[0.5, 0.3, 0.2]).tolist()
    weights = rng.choice([1.0, 1.0, 1.0, 0.0, 2.0, 0.5], m)
    return sims, labels, weights


def smallest_by_brute_force(sims, labels, weights, params, pool, changed):
    original = label_of(sims, labels, weights, params, np.ones(len(sims), bool))
    for size in range(len(pool) + 1):
        for subset in combinations(pool, size):
            if changed(subset, original):
                return size
    return None


@pytest.mark.parametrize("rule", NEIGHBOUR_VOTES)
def test_removal_set_is_the_smallest_over_every_subset(rule):
    rng = np.random.default_rng({"rank": 0, "softmax": 1, "distance": 2, "plurality": 3}[rule])
    checked = 0
    for _ in range(120):
        m = int(rng.integers(3, 10))
        sims, labels, weights = random_case(rng, m)
        params = VoteParams(k=int(rng.integers(1, min(m, 5) + 1)), vote=rule, alpha=float(rng.choice([0.5, 2.0])),
                            tau=float(rng.choice([0.05, 0.5])))
        exhaustive = bool(rng.random() < 0.5)
        shown = m if exhaustive else int(rng.integers(params.k, m + 1))  # the candidates the function sees
        original = label_of(sims, labels, weights, params, np.ones(m, bool))
        cf = counterfactual(sims[:shown], np.arange(shown) + 100, labels[:shown], weights[:shown], params,
                            exhaustive=exhaustive, max_removals=shown)
        assert cf.label == original

        def removal_changes(subset, original, m=m, exhaustive=exhaustive, shown=shown, params=params, sims=sims,
                            labels=labels, weights=weights):
            keep = np.ones(m, bool)
            keep[list(subset)] = False
            if not exhaustive and shown - len(subset) < params.k:
                return False  # the window would reach past what was shown
            return label_of(sims, labels, weights, params, keep) != original

        best = smallest_by_brute_force(sims, labels, weights, params, range(shown), removal_changes)
        if original is None:
            continue
        if best is None:
            assert cf.remove is None
            continue
        assert cf.remove is not None and len(cf.remove) == best, (sims, labels, weights, params, exhaustive, shown)
        assert removal_changes([i - 100 for i in cf.remove], original)
        checked += 1
    assert checked > 60


@pytest.mark.parametrize("rule", NEIGHBOUR_VOTES)
def test_blocking_set_is_the_smallest_over_every_subset(rule):
    rng = np.random.default_rng(10)
    for _ in range(80):
        m = int(rng.integers(2, 9))
        sims, labels, weights = random_case(rng, m)
        params = VoteParams(k=int(rng.integers(1, m + 1)), vote=rule)
        cf = counterfactual(sims, np.arange(m), labels, weights, params, exhaustive=True)

        def blocking_changes(subset, original, m=m, params=params, sims=sims, labels=labels, weights=weights):
            w = weights.copy()
            w[list(subset)] = 0.0
            return label_of(sims, labels, w, params, np.ones(m, bool)) != original

        best = smallest_by_brute_force(sims, labels, weights, params, range(params.k), blocking_changes)
        if cf.label is None:
            continue
        assert (cf.block is None) == (best is None)
        if best is not None:
            assert len(cf.block) == best and blocking_changes(cf.block, cf.label)


def test_class_order_ties_follow_vote_matrix():
    # plurality, k=2: one 'b' (nearest) and one 'a'. Nearest-first ties say 'b'; class order says 'a'.
    sims, labels = np.array([0.9, 0.8, 0.7]), ["b", "a", "a"]
    nearest = counterfactual(sims, [1, 2, 3], labels, np.ones(3), VoteParams(k=2, vote="plurality"), exhaustive=True)
    assert nearest.label == "b" and nearest.remove == [1] and nearest.label_after_remove == "a"
    ordered = counterfactual(sims, [1, 2, 3], labels, np.ones(3), VoteParams(k=2, vote="plurality"),
                             exhaustive=True, ties="class-order")
    # 'a' wins the tie; removing 'a' #2 brings 'a' #3 in, so both must go
    assert ordered.label == "a" and ordered.remove == [2, 3] and ordered.label_after_remove == "b"
    assert ordered.block == [2]


def test_removal_reaches_past_k_and_stops_at_what_was_fetched():
    # k=3 rank vote: a a a b b b. Removing one 'a' lets a 'b' in; it takes two.
    sims = np.linspace(0.9, 0.4, 6)
    labels = ["a", "a", "a", "b", "b", "b"]
    cf = counterfactual(sims, range(6), labels, np.ones(6), VoteParams(k=3, vote="plurality"))
    assert cf.remove == [0, 1] and cf.label_after_remove == "b" and cf.exact
    short = counterfactual(sims[:4], range(4), labels[:4], np.ones(4), VoteParams(k=3, vote="plurality"))
    assert short.remove is None and short.max_removals == 1  # only 4 candidates: one removal can be judged
    assert short.runner_up.id == 3 and short.runner_up.label == "b"
    assert "no removal" in short.sentence() and "nearest 'b'" in short.sentence()


def test_prototype_votes_get_a_set_that_works():
    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((12, 4))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    labels = np.array(["a"] * 6 + ["b"] * 6)
    query = vectors[:3].mean(axis=0)
    query /= np.linalg.norm(query)
    sims = vectors @ query
    order = np.argsort(-sims)
    totals = np.stack([vectors[labels == c].sum(axis=0) for c in ("a", "b")])
    clusters = PrototypeClusters(np.array(["a", "b"]), totals, np.array([6, 6]),
                                 np.where(labels[order] == "a", 0, 1), vectors[order], query)
    for rule in ("prototype", "hybrid"):
        params = VoteParams(k=3, vote=rule)
        cf = counterfactual(sims[order], order, labels[order].tolist(), np.ones(12), params,
                            exhaustive=True, prototypes=clusters)
        assert cf.label == "a" and not cf.exact
        assert cf.remove and cf.label_after_remove == "b"
    with pytest.raises(InvalidInputError, match="prototypes"):
        counterfactual(sims, range(12), labels.tolist(), np.ones(12), VoteParams(vote="hybrid"))


def prototype_case(rng):
    """A query's candidates from a memory of clustered classes with prototypes (some items
    shape none, some vectors repeat) and the vote parameters: for the greedy search."""
    n, classes, per, dim = int(rng.integers(20, 200)), int(rng.integers(2, 5)), int(rng.integers(1, 3)), 8
    y = rng.integers(0, classes, n)
    x = rng.standard_normal((classes, dim))[y] + rng.uniform(0.5, 2) * rng.standard_normal((n, dim))
    x[n // 2 :] = x[: n - n // 2] if rng.random() < 0.3 else x[n // 2 :]
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    cluster, member = y * per + rng.integers(0, per, n), rng.random(n) > 0.1
    totals = np.zeros((classes * per, dim))
    np.add.at(totals, cluster[member], x[member])
    query = rng.standard_normal(dim)
    query /= np.linalg.norm(query)
    order = np.argsort(-(x @ query), kind="stable")[: int(rng.integers(5, n))]
    clusters = PrototypeClusters(np.array([f"c{p // per}" for p in range(classes * per)]), totals,
                                 np.bincount(cluster[member], minlength=classes * per),
                                 np.where(member[order], cluster[order], -1), x[order], query)
    params = VoteParams(k=int(rng.integers(1, 25)), vote=str(rng.choice(["hybrid", "prototype"])),
                        alpha=float(rng.choice([0.5, 2.0])), mix=float(rng.choice([0.3, 0.7])))
    return (x @ query)[order], [f"c{c}" for c in y[order]], rng.choice([1.0, 0.0, 2.0], len(order)), params, clusters


def test_a_greedy_step_scores_its_trials_as_the_vote_does():
    """Each greedy step estimates its trials' margins from the window's running sums; the
    step's choice (the first smallest margin, and whether the label is lost) must be the
    one the vote's own scores make, and every estimate within rounding of them."""
    from vismem.counterfactual import _Scorer

    rng = np.random.default_rng(5)
    lost = 0
    for _ in range(150):
        sims, labels, weights, params, clusters = prototype_case(rng)
        scorer = _Scorer(sims, labels, weights, params, str(rng.choice(["nearest", "class-order"])), clusters)
        none = np.zeros(len(sims), bool)
        label = scorer.winner(none, none)[0]
        gone = rng.random(len(sims)) < rng.choice([0.0, 0.2])
        left = np.flatnonzero(~gone)
        for how in ("remove", "block"):
            trials = np.repeat(gone[None], len(left), axis=0)
            trials[np.arange(len(left)), left] = True
            untouched = np.zeros_like(trials)
            removed, blocked = (trials, untouched) if how == "remove" else (untouched, trials)
            exact = scorer.margins(removed, blocked, label)
            fast = scorer.trial_margins(gone, left, how, label)
            assert np.argmin(fast) == np.argmin(exact) and fast.min() == exact.min()
            both = np.isfinite(fast) & np.isfinite(exact)
            np.testing.assert_allclose(fast[both], exact[both], rtol=0, atol=1e-9)
            lost += np.isneginf(exact.min())
    assert lost > 20  # steps where some trial loses the label were checked too


@pytest.mark.parametrize("rule", NEIGHBOUR_VOTES)
def test_variants_are_scored_by_the_decisions_own_vote(rule):
    """The counterfactual's scorer is `decide.tally`: the very scores `decide` gives, to the
    last bit, for the candidate list and for any removal or blocking."""
    from vismem.counterfactual import _Scorer

    rng = np.random.default_rng(11)
    for _ in range(40):
        m = int(rng.integers(3, 14))
        sims, labels, weights = random_case(rng, m)
        params = VoteParams(k=int(rng.integers(1, 6)), vote=rule)
        scorer = _Scorer(sims, labels, weights, params, "nearest", None)
        removed, blocked = rng.random(m) < 0.3, rng.random(m) < 0.2
        label, shares = scorer.winner(removed, blocked)
        rows = [r for r in range(m) if not removed[r]][: params.k]
        decided = decide(sims[rows], rows, [labels[r] for r in rows], ["s"] * len(rows),
                         np.where(blocked[rows], 0.0, weights[rows]), params)
        assert label == decided.label
        assert (shares == decided.scores) if label is not None else not any(shares.values())


@pytest.mark.parametrize("vote", ["rank", "plurality", "hybrid"])
def test_removing_the_reported_set_flips_a_real_memory(tmp_path, vote):
    from sklearn.datasets import load_digits

    digits = load_digits()
    x, y = digits.data.astype(np.float32), digits.target.astype(str)
    rows = np.random.default_rng(0).permutation(len(y))
    stored, queries = rows[:600], rows[600:700]
    with Memory.create(tmp_path / vote, encoder=None, dim=64) as memory:
        memory.add_vectors(x[stored], y[stored])
        decisions = memory.classify_vectors(x[queries], k=10, vote=vote)
        q = queries[int(np.argmin([d.confidence for d in decisions]))]  # a close call
        before = memory.classify_vectors(x[q:q + 1], k=10, vote=vote, counterfactual=True)[0]
        cf = before.counterfactual
        assert cf.label == before.label and cf.remove and cf.block and cf.exact == (vote != "hybrid")
        assert before.to_dict()["counterfactual"]["remove"] == cf.remove
        assert cf.runner_up.label != before.label and cf.runner_up.id in [n.id for n in before.neighbors]
        memory.set_weight(cf.block, 0.0)
        assert memory.classify_vectors(x[q:q + 1], k=10, vote=vote)[0].label == cf.label_after_block != before.label
        memory.set_weight(cf.block, 1.0)
        assert memory.classify_vectors(x[q:q + 1], k=10, vote=vote)[0].label == before.label
        memory.remove(cf.remove)
        after = memory.classify_vectors(x[q:q + 1], k=10, vote=vote)[0]
        assert after.label == cf.label_after_remove != before.label


@pytest.mark.parametrize("sims", [[0.9, 0.6, 0.595, 0.594, 0.1], [-0.30, -0.31, -0.315, -0.316, -0.5]])
def test_softmax_votes_far_below_the_nearest_are_not_taken_for_ties(sims):
    """A sharp softmax (tau 0.01) over neighbours 0.3 below the nearest one (or all with
    negative similarity, as a centred memory gives) casts votes near e^-30: a fixed tie
    tolerance took them for ties, and the counterfactual failed its own check."""
    sims = np.array(sims)
    labels, weights = ["a", "b", "a", "a", "b"], np.ones(5)
    params = VoteParams(k=3, vote="softmax", tau=0.01)
    cf = counterfactual(sims, np.arange(5), labels, weights, params, exhaustive=True)
    assert cf.label == "a" and len(cf.remove) == 2 and 0 in cf.remove and cf.label_after_remove == "b"
    assert label_of(sims, labels, weights, params, np.isin(np.arange(5), cf.remove, invert=True)) == "b"


def test_removal_set_is_the_smallest_for_sharp_softmax_and_negative_similarities():
    rng = np.random.default_rng(7)
    checked = 0
    for _ in range(150):
        m = int(rng.integers(3, 8))
        sims, labels, weights = random_case(rng, m)
        sims = sims - rng.choice([0.0, 1.0])  # some lists wholly negative
        sims[1:] -= rng.choice([0.0, 0.3])    # and some far below their nearest item
        params = VoteParams(k=int(rng.integers(1, min(m, 4) + 1)), vote="softmax", tau=0.01)
        original = label_of(sims, labels, weights, params, np.ones(m, bool))
        cf = counterfactual(sims, np.arange(m), labels, weights, params, exhaustive=True)

        def removal_changes(subset, original, m=m, params=params, sims=sims, labels=labels, weights=weights):
            keep = np.ones(m, bool)
            keep[list(subset)] = False
            return label_of(sims, labels, weights, params, keep) != original

        best = smallest_by_brute_force(sims, labels, weights, params, range(m), removal_changes)
        if original is None:
            continue
        assert (cf.remove is None) == (best is None)
        if best is not None:
            assert len(cf.remove) == best and removal_changes(cf.remove, original)
            checked += 1
    assert checked > 80


def test_softmax_votes_below_the_smallest_float_are_found_greedily():
    """tau 0.001 and neighbours 0.8 below the nearest: their votes, weighed against the
    nearest, underflow to 0, so no exact programme can compare them; the set is found by
    voting each variant as the decision does (not proved smallest), and it works."""
    sims, labels, weights = np.array([0.9, 0.1, 0.0999, 0.0998]), ["a", "b", "a", "a"], np.ones(4)
    params = VoteParams(k=3, vote="softmax", tau=0.001)
    cf = counterfactual(sims, np.arange(4), labels, weights, params, exhaustive=True)
    assert cf.label == "a" and not cf.exact and cf.remove is not None
    assert label_of(sims, labels, weights, params, np.isin(np.arange(4), cf.remove, invert=True)) != "a"


@pytest.mark.parametrize("vote", ["rank", "prototype", "hybrid"])
def test_a_restriction_no_item_matches_has_no_label_to_change(tmp_path, vote):
    """With the prototype and hybrid votes the counterfactual stacked the classes'
    prototype scores, and with no class left it failed (ValueError: need at least one
    array to stack; a 500 on POST /classify?counterfactual=true), found by the fuzzer."""
    with Memory.create(tmp_path / "m", encoder=None, dim=4) as memory:
        memory.add_vectors(np.random.default_rng(0).standard_normal((20, 4)), ["a"] * 10 + ["b"] * 10)
        decision = memory.classify_vectors(np.ones(4), vote=vote, labels=["zzz"], counterfactual=True)[0]
        assert decision.label is None and decision.to_dict()["counterfactual"]["summary"] == "no label to change"
        assert memory.classify_vectors(np.ones(4), vote=vote, counterfactual=True)[0].counterfactual.remove


@pytest.mark.parametrize("vote", ["rank", "hybrid"])
@pytest.mark.parametrize("prototype_weight", [0.0, 0.5])
def test_with_abstain_the_reported_sets_do_what_they_say(tmp_path, vote, prototype_weight):
    """With --abstain the sets were those of the vote alone: on a calibrated digits memory
    16 of 26 claims were false (removing them made the query abstain, no label, where the
    counterfactual said it would become another class), and a query already abstained on
    was offered a removal that "would leave no label". Each set reported here is applied
    to the memory on disk, and the decision must become what it says."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x, y = digits.data.astype(np.float32), digits.target.astype(str)
    rows = np.random.default_rng(0).permutation(len(y))
    stored, queries = rows[:300], x[rows[300:340]]
    with Memory.create(tmp_path / "m", encoder=None, dim=64) as memory:
        memory.add_vectors(x[stored], y[stored])
        calibrate_memory(memory, tpr=0.9, prototype_weight=prototype_weight)
        decided = memory.classify_vectors(queries, k=10, vote=vote, abstain=True, counterfactual=True)
    assert any(d.abstained for d in decided) and not all(d.abstained for d in decided)
    checked = 0
    for q, d in enumerate(decided):
        cf = d.counterfactual
        assert cf.label == d.label
        if d.abstained:
            assert (cf.remove, cf.block) == (None, None) and cf.sentence() == "no label to change"
        for kind, ids, after in (("remove", cf.remove, cf.label_after_remove),
                                 ("block", cf.block, cf.label_after_block)):
            if ids is None or checked >= 12:
                continue
            copy = tmp_path / f"copy{checked}"
            shutil.copytree(tmp_path / "m", copy)
            with Memory.open(copy) as changed:
                changed.remove(ids) if kind == "remove" else changed.set_weight(ids, 0.0)
                now = changed.classify_vectors(queries[q], k=10, vote=vote, abstain=True)[0]
            assert now.label == after != d.label, (q, kind, ids)
            checked += 1
    assert checked == 12

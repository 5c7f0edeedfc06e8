"""Voting arithmetic, checked against hand-computed values."""

import math

import numpy as np
import pytest

from vismem.decide import VoteParams, decide, rule_weights
from vismem.errors import InvalidInputError

SIMS = np.array([0.9, 0.8, 0.5])  # distances 0.1, 0.2, 0.5


def test_plurality_counts_votes():
    assert rule_weights(SIMS, VoteParams(vote="plurality")).tolist() == [1.0, 1.0, 1.0]


def test_distance_weight_is_exp_minus_distance():
    w = rule_weights(SIMS, VoteParams(vote="distance"))
    assert w == pytest.approx([math.exp(-0.1), math.exp(-0.2), math.exp(-0.5)])


def test_softmax_weights_with_temperature():
    w = rule_weights(SIMS, VoteParams(vote="softmax", tau=0.1))
    e = [math.exp(9), math.exp(8), math.exp(5)]
    assert w == pytest.approx([x / sum(e) for x in e])


def test_rank_weight_is_one_over_alpha_plus_rank():
    assert rule_weights(SIMS, VoteParams(vote="rank", alpha=2)) == pytest.approx([1 / 2, 1 / 3, 1 / 4])
    assert rule_weights(SIMS, VoteParams(vote="rank", alpha=1)) == pytest.approx([1, 1 / 2, 1 / 3])


def test_rank_vote_lets_the_nearest_pair_beat_a_farther_majority():
    # a, a nearest; b, b, b behind. Rank (alpha=2): a = 1/2+1/3 = .833, b = 1/4+1/5+1/6 = .617
    labels = ["a", "a", "b", "b", "b"]
    sims = np.array([0.9, 0.85, 0.8, 0.79, 0.78])
    ones = np.ones(5)
    ranked = decide(sims, range(5), labels, ["s"] * 5, ones, VoteParams(k=5, vote="rank"))
    plural = decide(sims, range(5), labels, ["s"] * 5, ones, VoteParams(k=5, vote="plurality"))
    assert ranked.label == "a"
    assert ranked.confidence == pytest.approx((1 / 2 + 1 / 3) / (1 / 2 + 1 / 3 + 1 / 4 + 1 / 5 + 1 / 6))
    assert plural.label == "b" and plural.confidence == pytest.approx(0.6)
    assert sum(ranked.scores.values()) == pytest.approx(1.0)
    assert [n.distance for n in ranked.neighbors] == pytest.approx([0.1, 0.15, 0.2, 0.21, 0.22])
    assert sum(n.contribution for n in ranked.neighbors) == pytest.approx(1.0)


def test_item_weights_block_and_boost():
    labels = ["a", "b", "b"]
    sims = np.array([0.9, 0.8, 0.7])
    blocked = decide(sims, [1, 2, 3], labels, ["s"] * 3, np.array([1.0, 0.0, 0.0]),
                     VoteParams(k=3, vote="plurality"))
    assert blocked.label == "a" and blocked.confidence == 1.0
    assert blocked.neighbors[1].weight == 0.0
    boosted = decide(sims, [1, 2, 3], labels, ["s"] * 3, np.array([5.0, 1.0, 1.0]),
                     VoteParams(k=3, vote="plurality"))
    assert boosted.scores == pytest.approx({"a": 5 / 7, "b": 2 / 7})


def test_ties_go_to_the_label_with_the_nearest_neighbour():
    d = decide(np.array([0.9, 0.8]), [7, 8], ["x", "y"], ["s", "s"], np.ones(2),
               VoteParams(k=2, vote="plurality"))
    assert d.label == "x"


def test_no_weight_means_no_label():
    d = decide(np.array([0.9]), [1], ["x"], ["s"], np.zeros(1), VoteParams(k=1))
    assert d.label is None and d.confidence == 0.0
    assert decide(np.array([]), [], [], [], np.ones(0), VoteParams(k=3)).label is None


@pytest.mark.parametrize("bad", [dict(vote="majority"), dict(k=0), dict(alpha=0), dict(tau=-1),
                                 dict(alpha=float("inf")), dict(tau=float("inf"))])
def test_bad_vote_parameters_fail_early(bad):
    """Infinite alpha or tau too: alpha inf gave every neighbour weight 0 (label None, no
    error), tau inf NaN prototype scores."""
    with pytest.raises(InvalidInputError):
        VoteParams(**bad)


def test_prototype_distances_are_nearest_first_and_leave_out_classes_without_one():
    import json

    from vismem.decide import Ballots, decide_batch

    ballots = Ballots.single(np.array([0.9]), [1], ["a"], ["s"], np.ones(1))
    sims = np.array([[0.5, 0.8, -np.inf, 0.8, 0.1]])  # "c" has no prototype; "b" and "d" tie
    d = decide_batch(ballots, VoteParams(k=1, vote="hybrid", mix=0.5), prototype_classes=list("abcde"),
                     prototype_similarities=sims)[0]
    assert list(d.prototypes) == ["b", "d", "a", "e"]  # ties keep the prototypes' order
    assert d.prototypes == {"b": 1.0 - 0.8, "d": 1.0 - 0.8, "a": 0.5, "e": 1.0 - 0.1} and "c" not in d.prototypes
    assert json.loads(json.dumps(d.to_dict()))["prototypes"] == dict(d.prototypes)
    assert d.label == "a"  # a's neighbour outweighs b's nearer prototype at mix 0.5


def test_a_query_with_no_prototype_gets_no_prototype_score():
    from vismem.decide import prototype_scores

    scores = prototype_scores(np.array([[0.5, -np.inf, 0.5], [-np.inf, -np.inf, -np.inf]]), tau=0.1)
    assert scores.tolist() == [[0.5, 0.0, 0.5], [0.0, 0.0, 0.0]]  # not NaN


def test_hybrid_shares_sum_to_one_when_no_neighbour_carries_weight():
    """Every neighbour blocked: the hybrid vote is its prototype part alone, shares summing
    to 1 (they summed to `mix`, and the confidence was mix times the share)."""
    from vismem.decide import prototype_scores, vote_matrix

    params = VoteParams(k=2, vote="hybrid", tau=0.1, mix=0.3)
    protos = {"a": 0.2, "b": 0.4}
    d = decide(np.array([0.9, 0.8]), [1, 2], ["b", "b"], ["s", "s"], np.zeros(2), params, prototypes=protos)
    expected = prototype_scores(np.array([[0.8, 0.6]]), tau=0.1)[0]
    assert d.label == "a" and sum(d.scores.values()) == pytest.approx(1.0)
    assert d.confidence == pytest.approx(expected[0])
    rows = vote_matrix(np.array([[0.9, 0.8]]), np.array([[1, 1]]), 2, params, np.zeros((1, 2)),
                       np.array([[0.8, 0.6]]))
    np.testing.assert_allclose(rows, [expected])


def test_a_blocked_neighbour_breaks_no_tie():
    """Ties go to the class of the nearest neighbour that votes: a blocked item (weight 0)
    decides nothing, so the label is the one the memory gives without it."""
    params = VoteParams(k=3, vote="plurality")
    blocked = decide(np.array([0.9, 0.8, 0.7]), [1, 2, 3], ["a", "b", "a"], ["s"] * 3, np.array([0.0, 1, 1]), params)
    without = decide(np.array([0.8, 0.7]), [2, 3], ["b", "a"], ["s"] * 2, np.ones(2), params)
    assert blocked.scores == without.scores == {"b": 0.5, "a": 0.5}
    assert blocked.label == without.label == "b"


def test_class_scores_sum_each_row_in_rank_order_and_take_empty_ballots():
    """Votes are summed by class in rank order, row by row (the float sums `decide` has
    always made: np.add.at's), and a ballot with no neighbour at all scores zeros."""
    from vismem.decide import class_scores

    rng = np.random.default_rng(0)
    params = VoteParams(k=30, vote="rank")
    label_index = rng.integers(-1, 4, (50, 30))
    weights = np.where(label_index >= 0, rng.random((50, 30)) * 10.0 ** rng.integers(-3, 4, (50, 30)), 0.0)
    sums = np.zeros((50, 4))
    np.add.at(sums, (np.arange(50)[:, None].repeat(30, axis=1), np.maximum(label_index, 0)), weights)
    scores = class_scores(weights, label_index, 4, params)
    assert np.array_equal(scores, sums / sums.sum(axis=1, keepdims=True))
    empty = class_scores(np.zeros((3, 0)), np.zeros((3, 0), np.int64), 2, params)
    assert empty.dtype == np.float64 and empty.tolist() == [[0.0, 0.0]] * 3

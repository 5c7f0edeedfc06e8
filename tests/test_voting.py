"""Voting arithmetic against hand-computed cases, and the batch twin agreeing with `decide`."""

import math

import numpy as np
import pytest

from vismem.decide import VoteParams, decide, vote_matrix
from vismem.errors import InvalidInputError

SIMS = np.array([0.9, 0.8, 0.7])
IDS = [1, 2, 3]
LABELS = ["a", "b", "b"]
SOURCES = ["s", "s", "s"]


def run(params, weights=(1, 1, 1), **kw):
    return decide(SIMS, IDS, LABELS, SOURCES, np.array(weights, float), params, **kw)


def test_rank_vote_by_hand():
    d = run(VoteParams(k=3, vote="rank", alpha=2))
    # weights 1/2, 1/3, 1/4: a = 0.5, b = 7/12
    assert d.label == "b"
    assert d.confidence == pytest.approx((7 / 12) / (0.5 + 7 / 12))
    assert [n.weight for n in d.neighbors] == pytest.approx([1 / 2, 1 / 3, 1 / 4])


def test_alpha_changes_the_winner():
    # alpha = 0.5: weights 2, 2/3, 2/5 -> a = 2 beats b = 16/15
    d = run(VoteParams(k=3, vote="rank", alpha=0.5))
    assert d.label == "a"
    assert d.scores["a"] == pytest.approx(2 / (2 + 16 / 15))


def test_plurality_softmax_distance_by_hand():
    assert run(VoteParams(k=3, vote="plurality")).scores == pytest.approx({"b": 2 / 3, "a": 1 / 3})
    soft = run(VoteParams(k=3, vote="softmax", tau=0.1))
    assert soft.label == "a"
    assert soft.confidence == pytest.approx(1 / (1 + math.exp(-1) + math.exp(-2)))
    dist = run(VoteParams(k=3, vote="distance"))
    b = math.exp(-0.2) + math.exp(-0.3)
    assert dist.label == "b" and dist.confidence == pytest.approx(b / (b + math.exp(-0.1)))


def test_block_boost_and_prune_factors_multiply_the_vote():
    blocked = run(VoteParams(k=3, vote="plurality"), weights=(0, 1, 1))
    assert blocked.scores == {"b": 1.0, "a": 0.0}
    assert "item 1 blocked (weight 0)" in blocked.interventions
    boosted = run(VoteParams(k=3, vote="plurality"), weights=(3, 1, 1))
    assert boosted.label == "a" and boosted.confidence == pytest.approx(0.6)
    assert "item 1 weighted x3" in boosted.interventions
    pruned = run(VoteParams(k=3, vote="plurality"), prune_factors=np.array([1.75, 1.75 / 3, 1.75 / 3]))
    # a = 1.75, b = 2 * 1.75/3
    assert pruned.label == "a" and pruned.confidence == pytest.approx(1.75 / (1.75 + 3.5 / 3))
    assert any("soft-pruned" in note for note in pruned.interventions)


def test_prototype_and_hybrid_by_hand():
    protos = {"a": 0.1, "b": 0.3}
    p = run(VoteParams(k=3, vote="prototype", tau=0.1), prototypes=protos)
    pa = 1 / (1 + math.exp(-2))
    assert p.label == "a" and p.confidence == pytest.approx(pa)
    h = run(VoteParams(k=3, vote="hybrid", alpha=2, tau=0.1, mix=0.5), prototypes=protos)
    knn_a = 0.5 / (0.5 + 7 / 12)
    assert h.scores["a"] == pytest.approx(0.5 * knn_a + 0.5 * pa)
    assert h.label == "a"
    assert h.to_dict()["prototypes"] == pytest.approx({"a": 0.1, "b": 0.3})
    with pytest.raises(InvalidInputError):
        run(VoteParams(k=3, vote="prototype"))


def test_relabel_and_restriction_show_in_the_explanation():
    d = run(VoteParams(k=3), relabelled_from=[None, "c", None], restriction={"labels": ["a", "b"]})
    assert "item 2 relabelled 'c' -> 'b'" in d.interventions
    assert "query restricted to labels ['a', 'b']" in d.interventions


def test_abstain_withholds_the_label():
    d = run(VoteParams(k=3)).abstain(0.9, threshold=0.5)
    assert d.label is None and d.abstained and d.to_dict()["abstained"] is True
    kept = run(VoteParams(k=3)).abstain(0.4, threshold=0.5)
    assert kept.label == "b" and not kept.abstained


@pytest.mark.parametrize("params", [
    VoteParams(k=5, vote="rank", alpha=1), VoteParams(k=7, vote="softmax", tau=0.05),
    VoteParams(k=4, vote="distance"), VoteParams(k=6, vote="plurality"),
    VoteParams(k=5, vote="prototype", tau=0.1), VoteParams(k=5, vote="hybrid", mix=0.3),
])
def test_vote_matrix_matches_decide(params):
    rng = np.random.default_rng(0)
    n, m, classes = 40, 8, ["0", "1", "2"]
    sims = -np.sort(-rng.uniform(0, 1, (n, m)), axis=1)
    idx = rng.integers(0, 3, (n, m))
    factors = rng.uniform(0.2, 2, (n, m))
    proto = rng.uniform(0, 1, (n, 3))
    batch = vote_matrix(sims, idx, 3, params, factors, proto)
    for q in range(n):
        k = params.k
        d = decide(sims[q, :k], list(range(k)), [classes[i] for i in idx[q, :k]], ["s"] * k,
                   factors[q, :k], params, prototypes={c: 1 - proto[q, j] for j, c in enumerate(classes)})
        for j, c in enumerate(classes):
            assert batch[q, j] == pytest.approx(d.scores.get(c, 0.0), abs=1e-9)


def test_bad_parameters_fail_early():
    for bad in (dict(alpha=0), dict(tau=-1), dict(mix=2), dict(vote="vote"), dict(k=0)):
        with pytest.raises(InvalidInputError):
            VoteParams(**bad)


def test_paths_must_name_each_query():
    """One path per query: fewer failed with an IndexError, more were dropped unseen."""
    from vismem.decide import Ballots, decide_batch

    ballots = Ballots.single(SIMS, IDS, LABELS, SOURCES, np.ones(3))
    assert decide_batch(ballots, VoteParams(k=3), paths=["q.png"])[0].path == "q.png"
    for paths in ([], ["q.png", "r.png"]):
        with pytest.raises(InvalidInputError, match=f"{len(paths)} paths for 1 queries: give one per query"):
            decide_batch(ballots, VoteParams(k=3), paths=paths)

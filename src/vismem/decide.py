"""The decision: neighbours vote, and the vote is kept for explanation.

Pure functions over numpy arrays; no disk, no model. Similarity s is cosine
similarity; distance d = 1 - s. The four rules give neighbour at rank r (from 0):

- plurality: w = 1
- distance:  w = exp(-d)
- softmax:   w = softmax(s / tau) over the k neighbours (tau = 0.07 by default)
- rank:      w = 1 / (alpha + r)  (alpha = 2 by default)

Each weight is multiplied by the item's own weight (1 by default, 0 when blocked,
> 1 when boosted) and by its pruning factor (1 unless soft pruning is on). A label's
score is the sum of its neighbours' weights; scores are normalised to sum to 1, and
the confidence is the winning label's normalised score.

Two more rules use class prototypes (see `prototypes.py`), given as the cosine
similarity s_c of the query to each class's nearest prototype:

- prototype: score_c = softmax(s_c / tau) over classes
- hybrid:    score_c = (1 - mix) * kNN score_c (by the rank rule) + mix * prototype score_c,
             normalised again: when no neighbour carries weight, the prototype score alone
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from .errors import InvalidInputError, brief_repr, whole_number

NEIGHBOUR_VOTES = ("rank", "softmax", "distance", "plurality")
PROTOTYPE_VOTES = ("prototype", "hybrid")  # votes that use the class prototypes
VOTES = NEIGHBOUR_VOTES + PROTOTYPE_VOTES
MAX_K = 1000


def _option(default: Any, help: str, **limits: Any) -> Any:
    return field(default=default, metadata={"help": help, **limits})


@dataclass(frozen=True)
class VoteParams:
    """How neighbours vote. Validated on construction; `settings.describe` gives each
    field's help and limits to the CLI and the service."""

    k: int = _option(10, "Neighbours that vote.", min=1, max=MAX_K)
    vote: str = _option("rank", f"Voting rule: {'|'.join(VOTES)}.", choices=VOTES)
    alpha: float = _option(2.0, "Rank vote offset: w = 1/(alpha+rank).", min_exclusive=0.0)
    tau: float = _option(0.07, "Softmax (and prototype) vote temperature.", min_exclusive=0.0)
    mix: float = _option(0.5, "Hybrid vote: share of the prototype score.", min=0.0, max=1.0)

    def __post_init__(self) -> None:
        if self.vote not in VOTES:
            raise InvalidInputError(f"unknown vote {self.vote!r}; choose from {', '.join(VOTES)}")
        if not whole_number(self.k) or not 1 <= self.k <= MAX_K:
            raise InvalidInputError(f"k must be an integer from 1 to {MAX_K}, got {self.k!r}")
        if not 0 < self.alpha < math.inf:
            raise InvalidInputError(f"alpha must be > 0 and finite, got {self.alpha}")
        if not 0 < self.tau < math.inf:
            raise InvalidInputError(f"tau must be > 0 and finite, got {self.tau}")
        if not 0 <= self.mix <= 1:
            raise InvalidInputError(f"mix must be between 0 and 1, got {self.mix}")
        # numpy scalars (a grid of np.arange(1, 20)) as Python numbers: FAISS takes only an
        # int k, and the settings are saved as JSON
        for name, kind in (("k", int), ("alpha", float), ("tau", float), ("mix", float)):
            object.__setattr__(self, name, kind(getattr(self, name)))

    @property
    def uses_prototypes(self) -> bool:
        return self.vote in PROTOTYPE_VOTES

    @property
    def neighbour_vote(self) -> str:
        """The rule that weighs neighbours (hybrid votes its kNN part by rank)."""
        return "rank" if self.uses_prototypes else self.vote

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def rule_weights(similarities: np.ndarray, params: VoteParams) -> np.ndarray:
    """Vote weight of each neighbour by the rule alone, float64, similarities best first.

    `similarities` is (m,) for one query or (n, m) for n queries (one row each).
    """
    s = np.asarray(similarities, dtype=np.float64)
    rule = params.neighbour_vote
    if rule == "plurality":
        return np.ones_like(s)
    if rule == "distance":
        return np.exp(-(1.0 - s))
    if rule == "softmax":
        if s.shape[-1] == 0:
            return s
        finite = np.where(np.isfinite(s), s, -np.inf)
        top = finite.max(axis=-1, keepdims=True)
        e = np.exp((finite - np.where(np.isfinite(top), top, 0.0)) / params.tau)
        total = e.sum(axis=-1, keepdims=True)
        return np.divide(e, total, out=np.zeros_like(e), where=total > 0)
    ranks = np.arange(s.shape[-1], dtype=np.float64)
    return np.broadcast_to(1.0 / (params.alpha + ranks), s.shape).copy()


def prototype_scores(prototype_similarities: np.ndarray, tau: float) -> np.ndarray:
    """softmax(s_c / tau) over classes (last axis); -inf marks a class with no prototype."""
    s = np.asarray(prototype_similarities, dtype=np.float64)
    top = s.max(axis=-1, keepdims=True, initial=-np.inf)  # no class at all: zeros too
    e = np.exp((s - np.where(np.isfinite(top), top, 0.0)) / tau)  # no prototype at all: zeros
    total = e.sum(axis=-1, keepdims=True)
    return np.divide(e, total, out=np.zeros_like(e), where=total > 0)


def neighbour_weights(similarities: np.ndarray, label_index: np.ndarray, params: VoteParams,
                      factors: np.ndarray | None = None) -> np.ndarray:
    """The vote each neighbour casts, float64 (n, m): rule weight x `factors` (item weight x
    pruning factor), 0 for padding (`label_index` -1) and under the prototype rule, where
    neighbours are shown but only prototypes vote."""
    weights = rule_weights(similarities, params)
    if factors is not None:
        weights = weights * np.asarray(factors, dtype=np.float64)
    if params.vote == "prototype":
        weights = np.zeros_like(weights)
    return np.where(np.asarray(label_index) >= 0, weights, 0.0)


def class_scores(weights: np.ndarray, label_index: np.ndarray, n_classes: int, params: VoteParams,
                 prototype_similarities: np.ndarray | None = None) -> np.ndarray:
    """Class scores float64 (n, n_classes) from neighbours' votes (and prototypes); a row
    sums to 1, or to 0 when no neighbour carried weight and no prototype votes."""
    n = len(label_index)
    scores = np.zeros((n, n_classes))
    if np.size(label_index) and n_classes:  # no classes when a restriction matched no item
        # summed in rank order, row by row (bincount adds in index order, as np.add.at does)
        cells = np.arange(n)[:, None] * n_classes + np.maximum(label_index, 0)
        scores = np.bincount(cells.ravel(), weights=np.broadcast_to(weights, cells.shape).ravel(),
                             minlength=n * n_classes).reshape(n, n_classes).astype(np.float64, copy=False)
    return combined_scores(scores, params, prototype_similarities)


def combined_scores(sums: np.ndarray, params: VoteParams, prototype_similarities: np.ndarray | None = None
                    ) -> np.ndarray:
    """`class_scores` from the neighbours' votes summed by class (n, n_classes)."""
    scores = _shares(sums)
    if params.uses_prototypes:
        if prototype_similarities is None:
            raise InvalidInputError(f"vote {params.vote} needs prototype similarities")
        proto = prototype_scores(prototype_similarities, params.tau)
        # hybrid: a part with no votes (every neighbour blocked, or no prototype) leaves the other alone
        scores = proto if params.vote == "prototype" else _shares((1 - params.mix) * scores + params.mix * proto)
    return scores


def _shares(scores: np.ndarray) -> np.ndarray:
    """Rows of scores (n, C) divided by their sums; a row summing to 0 stays 0."""
    total = scores.sum(axis=1, keepdims=True)
    return np.divide(scores, total, out=np.zeros_like(scores), where=total > 0)


def vote_matrix(
    similarities: np.ndarray,
    label_index: np.ndarray,
    n_classes: int,
    params: VoteParams,
    factors: np.ndarray | None = None,
    prototype_similarities: np.ndarray | None = None,
) -> np.ndarray:
    """Class scores float64 (n, n_classes) for n queries at once, rows sum to 1 (or 0).

    `similarities` (n, m) best first and `label_index` (n, m) int class of each
    neighbour (-1 = padding). `factors` (n, m) multiplies each neighbour's weight
    (item weight x pruning factor). Only the first `params.k` columns vote. Tuning,
    pruning and evaluation call this; `decide_batch` builds decisions on the same two steps.
    """
    k = params.k
    idx = np.asarray(label_index)[:, :k]
    weights = neighbour_weights(np.asarray(similarities)[:, :k], idx, params,
                                None if factors is None else np.asarray(factors)[:, :k])
    return class_scores(weights, idx, n_classes, params, prototype_similarities)


@dataclass(frozen=True, slots=True)  # slots: a batch makes thousands of these
class Neighbor:
    """One exemplar that took part in a decision.

    `weight` is the vote it cast (rule weight x item_weight x prune_factor);
    `item_weight` is the user's override (0 blocked, > 1 boosted) and
    `relabelled_from` its label before a relabel, so interventions show.
    """

    id: int
    label: str
    distance: float
    weight: float
    contribution: float
    source: str
    item_weight: float = 1.0
    prune_factor: float = 1.0
    relabelled_from: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class PrototypeDistances(Mapping[str, float]):
    """Class -> cosine distance from one query to the class's nearest prototype, nearest
    first (classes without a prototype left out), sorted on first use: a batch against a
    thousand classes spent more on these per-query dicts than on its search, and most
    callers read only the label."""

    __slots__ = ("_names", "_distances", "_sorted")

    def __init__(self, names: np.ndarray, distances: np.ndarray) -> None:
        self._names = names          # object (C,)
        self._distances = distances  # float (C,), inf where a class has no prototype
        self._sorted: dict[str, float] | None = None

    def _dict(self) -> dict[str, float]:
        if self._sorted is None:
            # stable: ties keep the prototypes' order; inf (no prototype) sorts last
            order = np.argsort(self._distances, kind="stable")[: int(np.isfinite(self._distances).sum())]
            self._sorted = dict(zip(self._names[order].tolist(), self._distances[order].tolist(), strict=True))
        return self._sorted

    def __getitem__(self, name: str) -> float:
        return self._dict()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._dict())

    def __len__(self) -> int:
        return len(self._dict())

    def __repr__(self) -> str:
        return repr(self._dict())


@dataclass(frozen=True)
class Decision:
    """A classification and everything needed to see why.

    `scores` maps each label among the neighbours (and, for the prototype and hybrid
    votes, each class with a prototype) to its normalised score, best first: they sum to
    1, or are all 0 when nothing voted. `neighbors` are nearest first. `prototypes` maps every class to
    the cosine distance from the query to its nearest class prototype. `label` is
    None when no neighbour carried any weight, or when the query was abstained on
    (`abstained`, with its `ood_score` above the memory's calibrated `threshold`).
    `restriction` records a per-query filter when one was used: its `labels` and `sources`
    (lists) and `where` (a mapping), each only when given.
    `counterfactual` (a `counterfactual.Counterfactual`, when asked for) says which items'
    removal or blocking would change the label.
    """

    label: str | None
    confidence: float
    scores: dict[str, float]
    neighbors: list[Neighbor]
    vote: VoteParams
    path: str | None = None
    prototypes: Mapping[str, float] = field(default_factory=dict)
    abstained: bool = False
    ood_score: float | None = None
    threshold: float | None = None
    restriction: dict[str, Any] | None = None
    counterfactual: Any = None

    def __repr__(self) -> str:
        # a notebook's list of decisions: not every class's score and distance, nor every neighbour
        return brief_repr(self, best_first=("scores", "prototypes"), counted=("neighbors",))

    @property
    def interventions(self) -> list[str]:
        """Every edit that changed this decision, in words."""
        notes = []
        if self.restriction:
            notes += [f"query restricted to {key} {values}" for key, values in self.restriction.items()]
        for n in self.neighbors:
            if n.item_weight == 0:
                notes.append(f"item {n.id} blocked (weight 0)")
            elif n.item_weight != 1:
                notes.append(f"item {n.id} weighted x{n.item_weight:g}")
            if n.relabelled_from is not None:
                notes.append(f"item {n.id} relabelled {n.relabelled_from!r} -> {n.label!r}")
            if n.prune_factor != 1:
                notes.append(f"item {n.id} soft-pruned x{n.prune_factor:.3g}")
        return notes

    @property
    def k_used(self) -> int:
        """How many neighbours the vote had: `vote.k`, or fewer when the memory (or the part
        of it that a restriction and pruning let vote) holds fewer items."""
        return len(self.neighbors)

    def to_dict(self) -> dict[str, Any]:
        found = {} if self.counterfactual is None else {"counterfactual": self.counterfactual.to_dict()}
        return {
            "path": self.path,
            "label": self.label,
            "confidence": self.confidence,
            "abstained": self.abstained,
            "ood_score": self.ood_score,
            "threshold": self.threshold,
            "scores": self.scores,
            "neighbors": [n.to_dict() for n in self.neighbors],
            "prototypes": dict(self.prototypes),
            "interventions": self.interventions,
            "vote": self.vote.vote,
            "k": self.vote.k,
            "k_used": self.k_used,
            "alpha": self.vote.alpha,
            "tau": self.vote.tau,
            "mix": self.vote.mix,
            **found,
        }

    def abstain(self, score: float, threshold: float) -> Decision:
        """This decision, with the label withheld when `score` exceeds `threshold`."""
        out = score > threshold
        return replace(self, label=None if out else self.label, confidence=0.0 if out else self.confidence,
                       abstained=out, ood_score=float(score), threshold=float(threshold))


@dataclass(frozen=True)
class Ballots:
    """The neighbours of n queries as they vote: (n, m) arrays, nearest first.

    A row ends with padding (`ids` -1, similarity -inf, label None) when fewer than m
    items were found. `item_weights` are the users' overrides (0 blocked, > 1 boosted),
    `prune_factors` the soft-pruning multipliers, `relabelled_from` each item's label
    before a relabel (None if never relabelled).
    """

    ids: np.ndarray
    similarities: np.ndarray
    labels: np.ndarray
    sources: np.ndarray
    item_weights: np.ndarray
    prune_factors: np.ndarray
    relabelled_from: np.ndarray

    @classmethod
    def single(cls, similarities: np.ndarray, ids: Sequence[int], labels: Sequence[str],
               sources: Sequence[str], item_weights: np.ndarray, *,
               prune_factors: np.ndarray | None = None,
               relabelled_from: Sequence[str | None] | None = None) -> Ballots:
        """One query's neighbours (already trimmed of padding) as a batch of one."""
        m = len(ids)

        def row(values: Any, dtype: Any) -> np.ndarray:
            out = np.empty((1, m), dtype=dtype)
            out[0, :] = values if dtype is not object else list(values)
            return out

        return cls(row(ids, np.int64), row(similarities, np.float64), row(labels, object),
                   row(sources, object), row(item_weights, np.float64),
                   row(np.ones(m) if prune_factors is None else prune_factors, np.float64),
                   row(relabelled_from if relabelled_from is not None else [None] * m, object))

    def head(self, k: int) -> Ballots:
        """The first k columns."""
        return Ballots(*(getattr(self, f.name)[:, :k] for f in dataclasses.fields(self)))


def tally(similarities: np.ndarray, labels: np.ndarray, live: np.ndarray, factors: np.ndarray,
          params: VoteParams, prototype_classes: Sequence[str] = (),
          prototype_similarities: np.ndarray | None = None) -> tuple[np.ndarray, list[dict[str, float]]]:
    """The vote of n ballots (n, m), nearest first: each neighbour's vote (n, m), and each
    query's class shares in tie order, which `winner` reads.

    `labels` object, `live` False for padding, `factors` each neighbour's item weight x
    pruning factor; `prototype_similarities` (n, P) to each of `prototype_classes`, -inf
    where a class has no prototype. Tie order: the classes of the nearest neighbours
    that vote (factor > 0: a blocked item breaks no tie), then of the others, then, for
    the votes that use them, the classes with a prototype.
    """
    n = len(labels)
    classes = sorted({*labels[live].tolist(), *prototype_classes})
    position = {c: i for i, c in enumerate(classes)}
    label_index = np.full(np.shape(labels), -1, dtype=np.int64)
    label_index[live] = [position[label] for label in labels[live].tolist()]
    weights, scores = indexed_scores(similarities, label_index, classes, factors, params,
                                     prototype_classes, prototype_similarities)
    proto_names = np.asarray(list(prototype_classes), dtype=object)
    with_prototype = (np.isfinite(_by_query(prototype_similarities, n, len(proto_names))) if params.uses_prototypes
                      else np.zeros((n, 0), bool))
    voting = live & (np.asarray(factors) > 0)
    shares = []
    for q in range(n):
        order = dict.fromkeys([*labels[q, voting[q]].tolist(), *labels[q, live[q]].tolist(),
                               *proto_names[with_prototype[q]].tolist()])
        shares.append({c: float(scores[q, position[c]]) for c in order})
    return weights, shares


def indexed_scores(similarities: np.ndarray, label_index: np.ndarray, classes: Sequence[str], factors: np.ndarray,
                   params: VoteParams, prototype_classes: Sequence[str] = (),
                   prototype_similarities: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """`tally`'s arrays, for labels given as `label_index` (n, m) into `classes` (-1:
    padding), which hold every label in it and every prototype class, sorted: each
    neighbour's vote (n, m) and the class scores (n, classes), the very floats `tally`'s
    shares hold."""
    n = len(label_index)
    position = {c: i for i, c in enumerate(classes)}
    proto_matrix = np.full((n, len(classes)), -np.inf)
    proto_matrix[:, [position[c] for c in prototype_classes]] = _by_query(prototype_similarities, n,
                                                                          len(prototype_classes))
    weights = neighbour_weights(similarities, label_index, params, factors)
    return weights, class_scores(weights, label_index, len(classes), params, proto_matrix)


def _by_query(prototype_similarities: np.ndarray | None, n: int, classes: int) -> np.ndarray:
    """Prototype similarities as (n queries, classes) float64; none given: (n, 0)."""
    if prototype_similarities is None:
        return np.full((n, 0), -np.inf)
    return np.asarray(prototype_similarities, dtype=np.float64).reshape(n, classes)


def winner(shares: dict[str, float]) -> str | None:
    """The label of shares in tie order: the first highest, None when nothing voted."""
    if sum(shares.values()) <= 0:
        return None
    return max(shares, key=shares.__getitem__)


def decide_batch(
    ballots: Ballots,
    params: VoteParams,
    *,
    prototype_classes: Sequence[str] = (),
    prototype_similarities: np.ndarray | None = None,
    paths: Sequence[str | None] | None = None,
    restriction: dict[str, Any] | None = None,
) -> list[Decision]:
    """Decisions for n queries: their neighbours vote (the first `params.k` columns of
    `ballots`), and each decision keeps its votes for explanation.

    `prototype_similarities` float (n, C) gives each query's cosine similarity to the
    nearest prototype of each of `prototype_classes` (-inf: the class has none); the
    prototype and hybrid rules need it, and every decision reports those distances.
    The label is the highest score; ties go to the class of the nearest neighbour that
    votes (weight > 0), then to prototype order. `decide` is this function on one query.
    """
    b = ballots.head(params.k)
    n = len(b.ids)
    if paths is not None and len(paths) != n:
        raise InvalidInputError(f"{len(paths)} paths for {n} queries: give one per query (None for one with no path)")
    proto_classes = list(prototype_classes)
    proto_sims = (np.full((n, 0), -np.inf) if prototype_similarities is None
                  else np.asarray(prototype_similarities, dtype=np.float64).reshape(n, len(proto_classes)))
    # a restriction may leave a query no prototype (as no neighbour): it gets no label
    if params.uses_prototypes and restriction is None and not np.isfinite(proto_sims).any(axis=1).all():
        raise InvalidInputError(
            f"vote {params.vote} needs class prototypes, and no item votes to shape one (every item is blocked "
            f"or hard-pruned): unblock some, or choose a neighbour vote ({', '.join(NEIGHBOUR_VOTES)})")
    live = b.ids >= 0
    weights, all_shares = tally(b.similarities, b.labels, live, b.item_weights * b.prune_factors, params,
                                proto_classes, proto_sims)
    totals = weights.sum(axis=1)
    paths = list(paths) if paths is not None else [None] * n
    # every decision reports its distance to each class's nearest prototype, sorted when read
    proto_names = np.asarray(proto_classes, dtype=object)
    proto_dist = 1.0 - proto_sims  # +inf where a class has no prototype
    decisions = []
    for q in range(n):
        row = np.flatnonzero(live[q])
        prototypes = PrototypeDistances(proto_names, proto_dist[q])
        label = winner(all_shares[q])
        # highest first (a stable sort keeps tie order); all zero when nothing voted
        shares = (dict.fromkeys(all_shares[q], 0.0) if label is None
                  else dict(sorted(all_shares[q].items(), key=lambda kv: -kv[1])))
        grand = float(totals[q])
        # whole rows to Python values at once: indexing numpy one element at a time costs
        # more than the vote itself when a batch holds thousands of neighbours
        ids, label_row, distance, weight, source, item_weight, prune_factor, relabelled = (
            column.tolist() for column in (b.ids[q], b.labels[q], 1.0 - b.similarities[q], weights[q],
                                           b.sources[q], b.item_weights[q], b.prune_factors[q],
                                           b.relabelled_from[q]))
        neighbors = [
            Neighbor(id=ids[j], label=label_row[j], distance=distance[j], weight=weight[j],
                     contribution=weight[j] / grand if grand > 0 else 0.0, source=source[j],
                     item_weight=item_weight[j], prune_factor=prune_factor[j], relabelled_from=relabelled[j])
            for j in row.tolist()
        ]
        decisions.append(Decision(
            label, shares[label] if label is not None else 0.0, shares, neighbors, params, paths[q],
            prototypes=prototypes, restriction=restriction))
    return decisions


def decide(
    similarities: np.ndarray,
    ids: Sequence[int],
    labels: Sequence[str],
    sources: Sequence[str],
    item_weights: np.ndarray,
    params: VoteParams,
    path: str | None = None,
    *,
    prune_factors: np.ndarray | None = None,
    relabelled_from: Sequence[str | None] | None = None,
    prototypes: dict[str, float] | None = None,
    restriction: dict[str, Any] | None = None,
) -> Decision:
    """One query's decision: `decide_batch` on a batch of one.

    Neighbours are given nearest first (already trimmed of padding); `prototypes` maps
    each class to the query's cosine distance to its nearest prototype.
    """
    prototypes = prototypes or {}
    ballots = Ballots.single(np.asarray(similarities, dtype=np.float64), ids, labels, sources,
                             np.asarray(item_weights, dtype=np.float64), prune_factors=prune_factors,
                             relabelled_from=relabelled_from)
    return decide_batch(ballots, params, prototype_classes=list(prototypes),
                        prototype_similarities=1.0 - np.array([list(prototypes.values())], dtype=np.float64),
                        paths=[path], restriction=restriction)[0]

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
- hybrid:    score_c = (1 - mix) * kNN score_c (by the rank rule) + mix * prototype score_c
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Sequence

import numpy as np

from .errors import InvalidInputError

NEIGHBOUR_RULES = ("rank", "softmax", "distance", "plurality")
VOTE_RULES = NEIGHBOUR_RULES + ("prototype", "hybrid")


@dataclass(frozen=True)
class VoteParams:
    """How neighbours vote. Validated on construction."""

    k: int = 10
    rule: str = "rank"
    alpha: float = 2.0
    tau: float = 0.07
    mix: float = 0.5

    def __post_init__(self) -> None:
        if self.rule not in VOTE_RULES:
            raise InvalidInputError(f"unknown vote {self.rule!r}; choose from {', '.join(VOTE_RULES)}")
        if not isinstance(self.k, (int, np.integer)) or self.k < 1:
            raise InvalidInputError(f"k must be a positive integer, got {self.k!r}")
        if not self.alpha > 0:
            raise InvalidInputError(f"alpha must be > 0, got {self.alpha}")
        if not self.tau > 0:
            raise InvalidInputError(f"tau must be > 0, got {self.tau}")
        if not 0 <= self.mix <= 1:
            raise InvalidInputError(f"mix must be between 0 and 1, got {self.mix}")

    @property
    def uses_prototypes(self) -> bool:
        return self.rule in ("prototype", "hybrid")

    @property
    def neighbour_rule(self) -> str:
        """The rule that weighs neighbours (hybrid votes its kNN part by rank)."""
        return "rank" if self.uses_prototypes else self.rule

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def rule_weights(similarities: np.ndarray, params: VoteParams) -> np.ndarray:
    """Vote weight of each neighbour, float64, for similarities sorted best first.

    `similarities` is (m,) for one query or (n, m) for n queries (one row each).
    """
    s = np.asarray(similarities, dtype=np.float64)
    rule = params.neighbour_rule
    if rule == "plurality":
        return np.ones_like(s)
    if rule == "distance":
        return np.exp(-(1.0 - s))
    if rule == "softmax":
        if s.shape[-1] == 0:
            return s
        finite = np.where(np.isfinite(s), s, -np.inf)
        e = np.exp((finite - finite.max(axis=-1, keepdims=True)) / params.tau)
        return e / e.sum(axis=-1, keepdims=True)
    ranks = np.arange(s.shape[-1], dtype=np.float64)
    return np.broadcast_to(1.0 / (params.alpha + ranks), s.shape).copy()


def prototype_scores(prototype_similarities: np.ndarray, tau: float) -> np.ndarray:
    """softmax(s_c / tau) over classes (last axis); -inf marks a class with no prototype."""
    s = np.asarray(prototype_similarities, dtype=np.float64)
    e = np.exp((s - s.max(axis=-1, keepdims=True)) / tau)
    return e / e.sum(axis=-1, keepdims=True)


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
    (item weight x pruning factor). Only the first `params.k` columns vote.
    The batch twin of `decide`, used by tuning, pruning and evaluation.
    """
    n = len(label_index)
    sims = np.asarray(similarities, dtype=np.float64)[:, : params.k]
    idx = np.asarray(label_index)[:, : params.k]
    scores = np.zeros((n, n_classes))
    if params.rule != "prototype":
        weights = rule_weights(sims, params)
        if factors is not None:
            weights = weights * np.asarray(factors, dtype=np.float64)[:, : params.k]
        weights = np.where(idx >= 0, weights, 0.0)
        rows = np.broadcast_to(np.arange(n)[:, None], idx.shape)
        np.add.at(scores, (rows, np.maximum(idx, 0)), weights)
        total = scores.sum(axis=1, keepdims=True)
        scores = np.divide(scores, total, out=np.zeros_like(scores), where=total > 0)
    if params.uses_prototypes:
        if prototype_similarities is None:
            raise InvalidInputError(f"vote {params.rule} needs prototype similarities")
        proto = prototype_scores(prototype_similarities, params.tau)
        scores = proto if params.rule == "prototype" else (1 - params.mix) * scores + params.mix * proto
    return scores


@dataclass(frozen=True)
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


@dataclass(frozen=True)
class Decision:
    """A classification and everything needed to see why.

    `scores` maps each label that received votes to its normalised score (they sum to
    1), best first. `neighbors` are nearest first. `prototypes` maps every class to
    the cosine distance from the query to its nearest class prototype. `label` is
    None when no neighbour carried any weight, or when the query was abstained on
    (`abstained`, with its `ood_score` above the memory's calibrated `threshold`).
    `restriction` records a per-query filter (labels/sources) when one was used.
    """

    label: str | None
    confidence: float
    scores: dict[str, float]
    neighbors: list[Neighbor]
    vote: VoteParams
    path: str | None = None
    prototypes: dict[str, float] = field(default_factory=dict)
    abstained: bool = False
    ood_score: float | None = None
    threshold: float | None = None
    restriction: dict[str, list[str]] | None = None

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

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "label": self.label,
            "confidence": self.confidence,
            "abstained": self.abstained,
            "ood_score": self.ood_score,
            "threshold": self.threshold,
            "scores": self.scores,
            "neighbors": [n.to_dict() for n in self.neighbors],
            "prototypes": self.prototypes,
            "interventions": self.interventions,
            "vote": self.vote.rule,
            "k": self.vote.k,
            "alpha": self.vote.alpha,
            "tau": self.vote.tau,
            "mix": self.vote.mix,
        }

    def abstain(self, score: float, threshold: float) -> "Decision":
        """This decision, with the label withheld when `score` exceeds `threshold`."""
        out = score > threshold
        return replace(self, label=None if out else self.label, confidence=0.0 if out else self.confidence,
                       abstained=out, ood_score=float(score), threshold=float(threshold))


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
    restriction: dict[str, list[str]] | None = None,
) -> Decision:
    """Vote among neighbours given best first (already trimmed of padding).

    `prototypes` maps each class to the query's cosine distance to its nearest
    prototype; it is required by the prototype and hybrid rules and reported always.
    """
    item_weights = np.asarray(item_weights, dtype=np.float64)
    factors = np.ones(len(ids)) if prune_factors is None else np.asarray(prune_factors, np.float64)
    prototypes = dict(prototypes or {})
    if params.uses_prototypes and not prototypes:
        raise InvalidInputError(f"vote {params.rule} needs class prototypes; the memory has none")
    weights = rule_weights(similarities, params) * item_weights * factors
    if params.rule == "prototype":
        weights = np.zeros_like(weights)  # neighbours are shown, but only prototypes vote
    totals: dict[str, float] = {}
    for label, weight in zip(labels, weights):
        # dict keeps first-seen order = nearest first, so max() breaks ties by proximity
        totals[label] = totals.get(label, 0.0) + float(weight)
    grand_total = float(sum(totals.values()))
    knn = {label: (t / grand_total if grand_total > 0 else 0.0) for label, t in totals.items()}
    if params.uses_prototypes:
        classes = list(prototypes)
        proto = prototype_scores(1.0 - np.array([prototypes[c] for c in classes]), params.tau)
        mix = 1.0 if params.rule == "prototype" else params.mix
        combined = {c: (1 - mix) * knn.get(c, 0.0) + mix * float(p) for c, p in zip(classes, proto)}
        for label in knn:  # a neighbour's class that has no prototype (all members blocked)
            combined.setdefault(label, (1 - mix) * knn[label])
        # order: classes of the nearest neighbours first, so ties go to proximity
        order = list(dict.fromkeys([*labels, *classes]))
        totals = {c: combined[c] for c in order if c in combined}
    else:
        totals = knn
    if sum(totals.values()) <= 0:
        winner, scores = None, {label: 0.0 for label in totals}
    else:
        winner = max(totals, key=totals.__getitem__)
        scores = dict(sorted(totals.items(), key=lambda kv: -kv[1]))
    relabelled_from = list(relabelled_from) if relabelled_from is not None else [None] * len(ids)
    neighbors = [
        Neighbor(
            id=int(item_id),
            label=label,
            distance=float(1.0 - sim),
            weight=float(weight),
            contribution=float(weight / grand_total) if grand_total > 0 else 0.0,
            source=source,
            item_weight=float(iw),
            prune_factor=float(pf),
            relabelled_from=old,
        )
        for item_id, label, source, sim, weight, iw, pf, old in zip(
            ids, labels, sources, similarities, weights, item_weights, factors, relabelled_from)
    ]
    confidence = scores[winner] if winner is not None else 0.0
    return Decision(winner, confidence, scores, neighbors, params, path,
                    prototypes=dict(sorted(prototypes.items(), key=lambda kv: kv[1])),
                    restriction=restriction)

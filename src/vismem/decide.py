"""The decision: neighbours vote, and the vote is kept for explanation.

Pure functions over numpy arrays; no disk, no model. Similarity s is cosine
similarity; distance d = 1 - s. The four rules give neighbour at rank r (from 0):

- plurality: w = 1
- distance:  w = exp(-d)
- softmax:   w = softmax(s / tau) over the k neighbours (tau = 0.07 by default)
- rank:      w = 1 / (alpha + r)  (alpha = 2 by default)

Each weight is multiplied by the item's own weight (1 by default, 0 when blocked).
A label's score is the sum of its neighbours' weights; scores are normalised to sum
to 1, and the confidence is the winning label's normalised score.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np

from .errors import InvalidInputError

VOTE_RULES = ("rank", "softmax", "distance", "plurality")


@dataclass(frozen=True)
class VoteParams:
    """How neighbours vote. Validated on construction."""

    k: int = 10
    rule: str = "rank"
    alpha: float = 2.0
    tau: float = 0.07

    def __post_init__(self) -> None:
        if self.rule not in VOTE_RULES:
            raise InvalidInputError(f"unknown vote {self.rule!r}; choose from {', '.join(VOTE_RULES)}")
        if not isinstance(self.k, (int, np.integer)) or self.k < 1:
            raise InvalidInputError(f"k must be a positive integer, got {self.k!r}")
        if not self.alpha > 0:
            raise InvalidInputError(f"alpha must be > 0, got {self.alpha}")
        if not self.tau > 0:
            raise InvalidInputError(f"tau must be > 0, got {self.tau}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def rule_weights(similarities: np.ndarray, params: VoteParams) -> np.ndarray:
    """Vote weight of each neighbour, float64 (m,), for similarities sorted best first."""
    s = np.asarray(similarities, dtype=np.float64)
    if params.rule == "plurality":
        return np.ones_like(s)
    if params.rule == "distance":
        return np.exp(-(1.0 - s))
    if params.rule == "softmax":
        if len(s) == 0:
            return s
        e = np.exp((s - s.max()) / params.tau)
        return e / e.sum()
    return 1.0 / (params.alpha + np.arange(len(s), dtype=np.float64))


@dataclass(frozen=True)
class Neighbor:
    """One exemplar that took part in a decision."""

    id: int
    label: str
    distance: float
    weight: float
    contribution: float
    source: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Decision:
    """A classification and everything needed to see why.

    `scores` maps each label that received votes to its normalised score (they sum to
    1), best first. `neighbors` are nearest first. `label` is None when no neighbour
    carried any weight (an empty or fully blocked neighbourhood).
    """

    label: str | None
    confidence: float
    scores: dict[str, float]
    neighbors: list[Neighbor]
    vote: VoteParams
    path: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "label": self.label,
            "confidence": self.confidence,
            "scores": self.scores,
            "neighbors": [n.to_dict() for n in self.neighbors],
            "vote": self.vote.rule,
            "k": self.vote.k,
        }


def decide(
    similarities: np.ndarray,
    ids: Sequence[int],
    labels: Sequence[str],
    sources: Sequence[str],
    item_weights: np.ndarray,
    params: VoteParams,
    path: str | None = None,
) -> Decision:
    """Vote among neighbours given best first (already trimmed of padding)."""
    weights = rule_weights(similarities, params) * np.asarray(item_weights, dtype=np.float64)
    totals: dict[str, float] = {}
    for label, weight in zip(labels, weights):
        # dict keeps first-seen order = nearest first, so max() breaks ties by proximity
        totals[label] = totals.get(label, 0.0) + float(weight)
    grand_total = float(sum(totals.values()))
    if grand_total <= 0:
        winner, scores = None, {label: 0.0 for label in totals}
    else:
        winner = max(totals, key=totals.__getitem__)
        scores = {
            label: total / grand_total
            for label, total in sorted(totals.items(), key=lambda kv: -kv[1])
        }
    neighbors = [
        Neighbor(
            id=int(item_id),
            label=label,
            distance=float(1.0 - sim),
            weight=float(weight),
            contribution=float(weight / grand_total) if grand_total > 0 else 0.0,
            source=source,
        )
        for item_id, label, source, sim, weight in zip(ids, labels, sources, similarities, weights)
    ]
    confidence = scores[winner] if winner is not None else 0.0
    return Decision(winner, confidence, scores, neighbors, params, path)

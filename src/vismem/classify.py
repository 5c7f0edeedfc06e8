"""The classifier: query vectors -> neighbours from the store -> votes -> decisions.

    queries --store.search(filter)--> Neighbours --pruning factors--> Ballots
            --decide_batch (+ prototypes)--> Decisions --abstention--> Decisions

One batch path: a single query is a batch of one. The arithmetic of the vote lives in
`decide.py` (pure functions); this module gathers what it needs.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .calibrate import Calibration
from .decide import Ballots, Decision, VoteParams, decide_batch
from .prototypes import PrototypeSet
from .settings import MemorySettings
from .store import Filter, Neighbours, Store


def voting_filter(where: Filter | None, settings: MemorySettings) -> Filter:
    """The user's filter plus what pruning keeps out of every vote."""
    where = where or Filter()
    excluded_from = settings.pruning.excluded_from
    if excluded_from is None:
        return where
    return Filter(where.labels, where.sources, where.where, excluded_from)


def classify(store: Store, queries: np.ndarray, params: VoteParams, settings: MemorySettings,
             prototypes: PrototypeSet, *, where: Filter | None = None,
             calibration: Calibration | None = None,
             paths: Sequence[str | None] | None = None) -> list[Decision]:
    """Decide a label for each query vector (n, dim), L2-normalised.

    With a `calibration`, a query whose out-of-distribution score exceeds its threshold
    is abstained on (label None). `where` restricts the neighbours, and the prototypes,
    to the items it allows.
    """
    depth = max(params.k, calibration.k) if calibration else params.k
    neighbours = store.search(queries, depth, voting_filter(where, settings))
    classes, proto_sims = prototypes.class_similarities(queries)
    if where is not None and where.labels is not None:  # a restricted query sees only those classes
        chosen = [j for j, c in enumerate(classes) if c in where.labels]
        classes, proto_sims = [classes[j] for j in chosen], proto_sims[:, chosen]
    decisions = decide_batch(ballots(neighbours, settings), params, prototype_classes=classes,
                             prototype_similarities=proto_sims, paths=paths,
                             restriction=where.restriction() if where is not None else None)
    if calibration is None:
        return decisions
    kth = kth_distance(neighbours, calibration.k)
    nearest = np.array([min(d.prototypes.values(), default=2.0) for d in decisions])
    scores = calibration.score(kth, nearest)
    return [d.abstain(float(s), calibration.threshold) for d, s in zip(decisions, scores)]


def ballots(neighbours: Neighbours, settings: MemorySettings) -> Ballots:
    """Neighbours as they vote: the memory's pruning turns counts into vote factors."""
    return Ballots(neighbours.ids, neighbours.similarities, neighbours.labels, neighbours.sources,
                   np.asarray(neighbours.weights, dtype=np.float64),
                   settings.pruning.factors(neighbours.prune_counts), neighbours.relabelled_from)


def kth_distance(neighbours: Neighbours, k: int) -> np.ndarray:
    """Cosine distance to each query's k-th neighbour (the farthest found when fewer; 2
    when none was found)."""
    sims = np.asarray(neighbours.similarities[:, :k], dtype=np.float64)
    found = (neighbours.ids[:, :k] >= 0).sum(axis=1)
    last = sims[np.arange(len(sims)), np.maximum(found - 1, 0)] if sims.shape[1] else np.zeros(len(sims))
    return np.where(found > 0, 1.0 - last, 2.0)

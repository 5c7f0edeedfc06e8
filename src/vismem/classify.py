"""The classifier: query vectors -> neighbours from the store -> votes -> decisions.

    queries --store.search(filter)--> Neighbours --pruning factors--> Ballots
            --decide_batch (+ prototypes)--> Decisions --abstention--> Decisions

One batch path: a single query is a batch of one. The arithmetic of the vote lives in
`decide.py` (pure functions); this module gathers what it needs.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import numpy as np

from .calibrate import Calibration
from .counterfactual import (DEFAULT_MAX_REMOVALS, Counterfactual, PrototypeClusters, counterfactual,
                             with_abstention)
from .decide import Ballots, Decision, VoteParams, decide_batch
from .prototypes import PrototypeSet
from .settings import MemorySettings
from .store import Filter, Neighbours, Store


def voting_filter(where: Filter | None, settings: MemorySettings) -> Filter:
    """The user's filter plus what pruning keeps out of every vote."""
    excluded_from = settings.pruning.excluded_from
    if where is None:
        return Filter(max_prune_count=excluded_from)
    if excluded_from is None:
        return where
    return Filter(where.labels, where.sources, where.where, excluded_from)


def classify(store: Store, queries: np.ndarray, params: VoteParams, settings: MemorySettings,
             prototypes: PrototypeSet, *, where: Filter | None = None,
             calibration: Calibration | None = None,
             paths: Sequence[str | None] | None = None, counterfactuals: bool = False,
             max_removals: int = DEFAULT_MAX_REMOVALS) -> list[Decision]:
    """Decide a label for each query vector (n, dim), L2-normalised.

    With a `calibration`, a query whose out-of-distribution score exceeds its threshold
    is abstained on (label None). `where` restricts the neighbours to the items it allows,
    and the prototypes to the labels it allows (prototypes are the means of each class's
    voting items, whatever their source or metadata). With `counterfactuals`, each
    decision carries what would change its vote (`counterfactual.counterfactual`),
    searched `max_removals` deeper.
    """
    depth = max(params.k, calibration.k) if calibration else params.k
    if counterfactuals:
        depth = max(depth, params.k + max_removals)
    neighbours = store.search(queries, depth, voting_filter(where, settings))
    searched = store.transform().apply(queries)  # prototypes live where the index searches
    classes, proto_sims = prototypes.class_similarities(searched)
    if where is not None and where.labels is not None:  # a restricted query sees only those classes
        chosen = [j for j, c in enumerate(classes) if c in where.labels]
        classes, proto_sims = [classes[j] for j in chosen], proto_sims[:, chosen]
    voters = ballots(neighbours, settings)
    decisions = decide_batch(voters, params, prototype_classes=classes,
                             prototype_similarities=proto_sims, paths=paths,
                             restriction=where.restriction() if where is not None else None)
    if calibration is not None:
        # the k-th nearest item that votes, as calibration measured it on the voting items
        kth = voting_kth_distance(store, queries, neighbours, voters, calibration.k, where, settings)
        # each query's distance to its nearest prototype, as its decision reports it (2: none)
        best = np.asarray(proto_sims, dtype=np.float64).max(axis=1, initial=-np.inf)
        nearest = np.where(np.isfinite(best), 1.0 - best, 2.0)
        scores = calibration.score(kth, nearest)
        decisions = [d.abstain(float(s), calibration.threshold) for d, s in zip(decisions, scores, strict=True)]
    if counterfactuals:
        found = what_would_change(store, searched, voters, params, prototypes, where, max_removals,
                                  calibration, [d.abstained for d in decisions])
        decisions = [replace(d, counterfactual=c) for d, c in zip(decisions, found, strict=True)]
    return decisions


def what_would_change(store: Store, queries: np.ndarray, b: Ballots, params: VoteParams,
                      prototypes: PrototypeSet, where: Filter | None, max_removals: int,
                      calibration: Calibration | None = None,
                      abstained: Sequence[bool] | None = None) -> list[Counterfactual]:
    """Each query's counterfactual from its neighbours found `max_removals` past k (all it
    can reach when fewer were found), voted as `decide_batch` votes (ties by proximity);
    with a `calibration`, made true of the decision with abstention (`abstained`, each
    query's; `counterfactual.with_abstention`). `queries` are as searched (through the
    store's feature transform)."""
    depth = b.ids.shape[1]
    factors = b.item_weights * b.prune_factors
    scored = calibration is not None and calibration.prototype_weight > 0
    clusters = _Clusters(store, prototypes, b.ids, where) if params.uses_prototypes or scored else None
    out = []
    for q in range(len(queries)):
        live = b.ids[q] >= 0
        ids = b.ids[q, live]
        exhaustive = int(live.sum()) < depth
        of = clusters.of(ids, queries[q]) if clusters is not None else None
        found = counterfactual(b.similarities[q, live], ids, b.labels[q, live].tolist(), factors[q, live],
                               params, ties="nearest", exhaustive=exhaustive, max_removals=max_removals,
                               prototypes=of if params.uses_prototypes else None)
        if calibration is not None:
            found = with_abstention(found, b.similarities[q, live], ids, factors[q, live] > 0, k=calibration.k,
                                    threshold=calibration.threshold, prototype_weight=calibration.prototype_weight,
                                    abstained=bool(abstained[q]) if abstained is not None else False,
                                    exhaustive=exhaustive, prototypes=of)
        out.append(found)
    return out


class _Clusters:
    """The prototypes as sums (restricted as the query is), and the membership and vectors
    (as searched) of every neighbour of the batch: read once for all its queries."""

    def __init__(self, store: Store, prototypes: PrototypeSet, ids: np.ndarray, where: Filter | None) -> None:
        owners, members, totals, counts = prototypes.clusters()
        if where is not None and where.labels is not None:  # a restricted query sees only those classes
            keep = np.isin(owners, list(where.labels))
            rows = np.cumsum(keep) - 1
            members = {i: int(rows[r]) for i, r in members.items() if keep[r]}
            owners, totals, counts = owners[keep], totals[keep], counts[keep]
        self.owners, self.members, self.totals, self.counts = owners, members, totals, counts
        found, vectors = store.vectors(np.unique(ids[ids >= 0]).tolist())
        self.vectors = dict(zip(found.tolist(), store.transform().apply(vectors), strict=True))

    def of(self, ids: np.ndarray, query: np.ndarray) -> PrototypeClusters:
        return PrototypeClusters(self.owners, self.totals, self.counts,
                                 np.array([self.members.get(int(i), -1) for i in ids]),
                                 np.stack([self.vectors[int(i)] for i in ids]) if len(ids)
                                 else np.zeros((0, len(query))), query)


def ballots(neighbours: Neighbours, settings: MemorySettings) -> Ballots:
    """Neighbours as they vote: the memory's pruning turns counts into vote factors."""
    return Ballots(neighbours.ids, neighbours.similarities, neighbours.labels, neighbours.sources,
                   np.asarray(neighbours.weights, dtype=np.float64),
                   settings.pruning.factors(neighbours.prune_counts), neighbours.relabelled_from)


# The deepest search for a query's k-th voting item: Milvus's largest top-k. A query with
# more blocked items than that nearest it scores by the farthest voting item found (2: none).
DEEPEST = 16_384


def voting_kth_distance(store: Store, queries: np.ndarray, neighbours: Neighbours, voters: Ballots, k: int,
                        where: Filter | None, settings: MemorySettings) -> np.ndarray:
    """Each query's distance to its k-th nearest item that votes (`kth_distance`), searched
    deeper for the queries whose neighbours hold fewer than k voting items while more lie
    beyond them: blocked items are found by a search as any other, and ten of them in a
    row scored the 2.0 cap, and a deeper search (--counterfactual) another score."""
    kth = kth_distance(neighbours, k, votes=voters.item_weights * voters.prune_factors > 0)
    ids, votes, depth = neighbours.ids, voters.item_weights * voters.prune_factors > 0, neighbours.ids.shape[1]
    short = np.flatnonzero((((ids >= 0) & votes).sum(axis=1) < k) & (ids[:, -1] >= 0)) if depth else np.empty(0, int)
    while len(short) and depth < DEEPEST:
        depth = min(2 * depth, DEEPEST)
        deeper = store.search(queries[short], depth, voting_filter(where, settings))
        b = ballots(deeper, settings)
        votes = b.item_weights * b.prune_factors > 0
        kth[short] = kth_distance(deeper, k, votes=votes)
        short = short[(((deeper.ids >= 0) & votes).sum(axis=1) < k) & (deeper.ids[:, -1] >= 0)]
    return kth


def kth_distance(neighbours: Neighbours, k: int, votes: np.ndarray | None = None) -> np.ndarray:
    """Cosine distance to each query's k-th neighbour, counting only those where `votes`
    (bool, like the ids) holds, when given (the farthest such found when fewer; 2 when
    none was found)."""
    counted = neighbours.ids >= 0 if votes is None else (neighbours.ids >= 0) & votes
    if not counted.shape[1]:  # nothing searched
        return np.full(len(counted), 2.0)
    rank = np.cumsum(counted, axis=1)  # how many counted neighbours up to each column
    found = np.minimum(rank[:, -1], k)
    column = np.argmax(counted & (rank == found[:, None]), axis=1)
    last = np.asarray(neighbours.similarities, dtype=np.float64)[np.arange(len(rank)), column]
    return np.where(found > 0, 1.0 - last, 2.0)

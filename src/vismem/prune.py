"""Memory pruning: find the items that keep voting for wrong answers.

The memory is queried against itself, each item left out of its own query. v counts,
per item, either how often it voted for another label than the query item's
("disagreements", the default), or, as in the visual-memory recipe, how often it voted
for the winner of a wrong leave-one-out decision ("wrong-decisions"). The first is the
default because it keeps working under heavy label noise, where the second blames the
correct neighbours of mislabelled items (measured in docs/quality.md).

- hard pruning drops items with v >= threshold;
- soft pruning multiplies every item's vote by d / (c + v) (c = 1, d = 1.75 by default).

Pure functions over numpy arrays; the store keeps the counts per item, so pruning can be undone.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import faiss
import numpy as np

from .decide import VoteParams, vote_matrix
from .errors import InvalidInputError, whole_number

log = logging.getLogger("vismem")

SOFT_C = 1.0
SOFT_D = 1.75
HARD_THRESHOLD = 2
SELF_QUERY_CHUNK = 4096  # rows per exact search of the memory against itself


def encode_labels(labels) -> tuple[list[str], np.ndarray]:
    """(sorted class names, int index of each label)."""
    classes, index = np.unique(np.asarray(labels), return_inverse=True)
    return classes.tolist(), index.astype(np.int64)


def self_neighbours(vectors: np.ndarray, k: int, progress: Callable[[int], None] | None = None,
                    queries: np.ndarray | None = None,
                    searchable: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Each row's k nearest other rows: (similarities (n, k), row indices (n, k), -1 = none);
    with `queries` (row indices), those rows' alone, in that order; with `searchable` (a
    mask), neighbours only among those rows, as a search leaves hard-pruned items out.

    Exact inner-product search of the matrix against itself, the row itself dropped
    (by index, so an exact duplicate still counts as a neighbour). Searched a chunk of
    rows at a time (`progress(n)` after each n): at 100k items it takes minutes.
    """
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    asked = np.arange(len(vectors)) if queries is None else np.asarray(queries, dtype=np.int64)
    pool = None if searchable is None else np.flatnonzero(searchable)
    among = vectors if pool is None else vectors[pool]
    n = len(asked)
    found = min(k + 1, len(among))
    if found == 0:  # nothing to find
        return np.full((n, k), -np.inf, np.float32), np.full((n, k), -1, np.int64)
    sims = np.empty((n, found), np.float32)
    rows = np.empty((n, found), np.int64)
    for start in range(0, n, SELF_QUERY_CHUNK):
        part = slice(start, min(start + SELF_QUERY_CHUNK, n))
        sims[part], rows[part] = faiss.knn(vectors[asked[part]], among, found, metric=faiss.METRIC_INNER_PRODUCT)
        if progress:
            progress(part.stop - part.start)
    if pool is not None:
        rows = np.where(rows >= 0, pool[np.maximum(rows, 0)], -1)
    keep = rows != asked[:, None]
    # drop the self column (or the last column when self was not returned)
    drop_last = keep.all(axis=1)
    keep[drop_last, -1] = False
    out_sims = sims[keep].reshape(n, found - 1)
    out_rows = rows[keep].reshape(n, found - 1)
    if found - 1 < k:
        pad = k - (found - 1)
        out_sims = np.hstack([out_sims, np.full((n, pad), -np.inf, np.float32)])
        out_rows = np.hstack([out_rows, np.full((n, pad), -1, np.int64)])
    return out_sims, out_rows


COUNTS = ("wrong-decisions", "disagreements")
DEFAULT_COUNT = "disagreements"


def wrong_vote_counts(label_index: np.ndarray, neighbour_rows: np.ndarray, predicted: np.ndarray,
                      count: str = DEFAULT_COUNT, voted: np.ndarray | None = None) -> np.ndarray:
    """v per item, from each item's leave-one-out decision.

    `label_index` (n,) stored class per item; `neighbour_rows` (n, k) each item's
    nearest rows in its leave-one-out decision (-1 = none); `predicted` (n,) the class
    each decision chose (-1: nothing voted, so no neighbour is blamed); `voted` (n, k)
    whether each neighbour's vote counted (a blocked item's weight is 0: it took no part,
    so it takes no blame). Default: every one did.

    - "wrong-decisions" (the visual-memory recipe): +1 for each neighbour that voted
      for the winning label of a wrong decision;
    - "disagreements": +1 for each neighbour whose label differs from the query
      item's, whatever the outcome. Under heavy label noise this one blames the
      mislabelled items, where the first mostly blames the correct neighbours of a
      mislabelled item (its decision is "wrong" against its wrong label).
    """
    if count not in COUNTS:
        raise InvalidInputError(f"unknown count {count!r}; choose from {', '.join(COUNTS)}")
    rows = np.where(voted, neighbour_rows, -1) if voted is not None else neighbour_rows
    queries = np.arange(len(label_index))
    if count == "wrong-decisions":
        wrong = predicted != label_index
        rows, target = rows[wrong], predicted[wrong]
        blamed = (rows >= 0) & (label_index[np.maximum(rows, 0)] == target[:, None])
    else:
        blamed = (rows >= 0) & (label_index[np.maximum(rows, 0)] != label_index[queries][:, None])
    return np.bincount(rows[blamed], minlength=len(label_index)).astype(np.int64)


@dataclass
class SelfQuery:
    """A leave-one-out pass over a memory: each item's neighbours, prediction and v."""

    classes: list[str]
    label_index: np.ndarray   # (n,) true class of each item
    sims: np.ndarray          # (n, k)
    rows: np.ndarray          # (n, k) neighbour rows, -1 = none
    scores: np.ndarray        # (n, C) vote shares
    predicted: np.ndarray     # (n,) -1 where nothing voted (every neighbour blocked): classify gives no label
    v: np.ndarray             # (n,) counts of the chosen kind

    @property
    def own_score(self) -> np.ndarray:
        """Share of the vote each item's own label got from its neighbours."""
        return self.scores[np.arange(len(self.label_index)), self.label_index]


def self_query(vectors: np.ndarray, labels, params: VoteParams, item_weights: np.ndarray | None = None,
               count: str = DEFAULT_COUNT, progress: Callable[[int], None] | None = None,
               searchable: np.ndarray | None = None) -> SelfQuery:
    """Query every item against the rest of the memory with a kNN rule and count v
    (`progress(n)` as n more items are queried); `searchable`: the items a search may
    find (default all; `self_neighbours`)."""
    if params.uses_prototypes:
        raise InvalidInputError("pruning counts neighbour votes: use a kNN vote (rank, softmax, distance, plurality)")
    classes, label_index = encode_labels(labels)
    sims, rows = self_neighbours(vectors, params.k, progress, searchable=searchable)
    neighbour_labels = np.where(rows >= 0, label_index[np.maximum(rows, 0)], -1)
    factors = None if item_weights is None else np.where(rows >= 0, item_weights[np.maximum(rows, 0)], 0.0)
    scores = vote_matrix(sims, neighbour_labels, len(classes), params, factors)
    # argmax of a row of zeros is the first class: a decision no neighbour voted in would count
    # as right or wrong by the alphabetical order of the labels
    predicted = np.where(scores.any(axis=1), scores.argmax(axis=1), -1)
    v = wrong_vote_counts(label_index, rows, predicted, count, voted=None if factors is None else factors > 0)
    return SelfQuery(classes, label_index, sims, rows, scores, predicted, v)


def _real(x: object) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)


def soft_factors(v: np.ndarray, c: float = SOFT_C, d: float = SOFT_D) -> np.ndarray:
    """Soft-pruning vote multiplier d / (c + v) per item."""
    # bool is an int, and a NaN passes c <= 0: either would be saved and poison every vote
    if not all(_real(x) and 0 < x < math.inf for x in (c, d)):
        raise InvalidInputError(f"soft pruning needs finite c > 0 and d > 0, got c={c!r}, d={d!r}")
    return d / (c + np.asarray(v, dtype=np.float64))


def hard_keep(v: np.ndarray, threshold: int = HARD_THRESHOLD) -> np.ndarray:
    """Boolean mask of the items hard pruning keeps (v < threshold)."""
    if not whole_number(threshold) or threshold < 1:
        raise InvalidInputError(f"hard-pruning threshold must be a whole number >= 1, got {threshold!r}")
    return np.asarray(v) < threshold


def suspect_order(query: SelfQuery) -> np.ndarray:
    """Rows most likely mislabelled first: lowest own-label vote share, then highest v."""
    return np.lexsort((-query.v, query.own_score))


MODES = ("soft", "hard")


@dataclass(frozen=True)
class PruneSettings:
    """How pruning is applied: the counts v live per item in the store, so `off` restores
    every vote exactly (only hard pruning with purge deletes anything).

    `mode` off | soft (each vote x d / (c + v)) | hard (items with v >= threshold do not
    vote); `count` what v counted when it was last measured.
    """

    mode: str = field(default="off", metadata={
        "help": "soft: scale votes by d/(c+v); hard: drop items with v >= threshold; off: undo pruning.",
        "choices": ("off", *MODES)})
    count: str = field(default=DEFAULT_COUNT, metadata={
        "help": "What v counts: disagreements (votes for another label than the query's; keeps working under "
                "heavy label noise) or wrong-decisions (votes for the winner of a wrong decision, the "
                "visual-memory recipe).",
        "choices": COUNTS})
    c: float = field(default=SOFT_C, metadata={"help": "Soft pruning: factor d/(c+v).", "min_exclusive": 0.0})
    d: float = field(default=SOFT_D, metadata={"help": "Soft pruning: factor d/(c+v).", "min_exclusive": 0.0})
    threshold: int = field(default=HARD_THRESHOLD, metadata={
        "help": "Hard pruning drops items with v >= this (with --count disagreements: k/2 unless given).",
        "min": 1})

    def __post_init__(self) -> None:
        if self.mode not in ("off", *MODES):
            raise InvalidInputError(f"unknown pruning mode {self.mode!r}; choose soft, hard or off")
        if self.count not in COUNTS:
            raise InvalidInputError(f"unknown count {self.count!r}; choose from {', '.join(COUNTS)}")
        soft_factors(np.zeros(1), self.c, self.d)
        hard_keep(np.zeros(1), self.threshold)

    @classmethod
    def stored(cls, data: dict[str, Any]) -> PruneSettings:
        """Settings as a memory saved them. Before these checks the Python API took more, so
        a memory may hold a threshold like 2.5 or true, or a c or d that is NaN or infinite:
        it opens with the threshold as the whole number that keeps the same items (counts
        are whole numbers: v < 2.5 keeps what v < 3 keeps) and a bad c or d at its
        default, said in a warning (its soft votes were NaN or 0)."""
        data = dict(data)
        threshold = data.get("threshold", HARD_THRESHOLD)
        if isinstance(threshold, bool) or (isinstance(threshold, float) and math.isfinite(threshold)):
            data["threshold"] = max(1, math.ceil(threshold))
        for name, default in (("c", SOFT_C), ("d", SOFT_D)):
            value = data.get(name, default)
            if not (_real(value) and 0 < value < math.inf):
                log.warning("the memory's soft-pruning %s=%r is not a finite number > 0 (every soft vote was NaN "
                            "or 0): using %s; `vismem prune --mode soft --%s N` sets another", name, value,
                            default, name)
                data[name] = default
        return cls(**data)

    def factors(self, counts: np.ndarray) -> np.ndarray:
        """Each item's vote multiplier, float64, from its count v (1 unless soft)."""
        counts = np.asarray(counts)
        if self.mode != "soft":
            return np.ones(counts.shape)
        return soft_factors(counts, self.c, self.d)

    @property
    def excluded_from(self) -> int | None:
        """Hard pruning: items with v at or above this do not vote (None: none excluded)."""
        return self.threshold if self.mode == "hard" else None

    def searchable(self, counts: np.ndarray) -> np.ndarray:
        """bool: which items a search may find, from their counts v (under hard pruning, v
        below the threshold; else all)."""
        if self.excluded_from is None:
            return np.ones(np.shape(counts), dtype=bool)
        return np.asarray(counts) < self.excluded_from

    def votes(self, weights: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """bool: which items vote, from their weights and counts v (weight > 0, and found
        by a search: `searchable`)."""
        return (np.asarray(weights) > 0) & self.searchable(counts)

    def replace(self, **changes: object) -> PruneSettings:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def to_dict(self) -> dict:
        return asdict(self)

"""Classifying arrays exactly as a memory does, fast enough to sweep many settings.

`ArrayMemory` holds labelled vectors and their prototypes; `query` finds each
query's neighbours once (up to the largest k wanted) and its similarity to each
class's nearest prototype, and `scores` then votes any `VoteParams` over them with
`decide.vote_matrix`, the batch twin of the decision a `Memory` makes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import faiss
import numpy as np

from ..decide import VoteParams, vote_matrix
from ..prototypes import PrototypeSet


@dataclass(frozen=True)
class Neighbours:
    """Per query: similarities (n, m) best first, memory rows (n, m), class index (n, m), -1 padding;
    prototype similarity per class (n, C)."""

    sims: np.ndarray
    rows: np.ndarray
    label_index: np.ndarray
    prototype_sims: np.ndarray | None

    def kth_distance(self, k: int) -> np.ndarray:
        """Cosine distance to the k-th neighbour (the farthest found when fewer)."""
        m = min(k, self.sims.shape[1])
        sims = self.sims[:, :m]
        last = np.where(np.isfinite(sims), sims, np.nan)
        return 1.0 - np.nanmin(last, axis=1)

    def prototype_distance(self) -> np.ndarray:
        if self.prototype_sims is None:
            raise ValueError("these neighbours were found without prototypes")
        return 1.0 - self.prototype_sims.max(axis=1)


class ArrayMemory:
    """A memory as arrays: vectors float32 (n, dim) unit rows, string labels (n,).

    `classes` fixes the class order of score columns (default: sorted labels);
    `factors` (n,) multiplies each item's vote (soft pruning, item weights); `per_class`
    prototypes per class, fitted on first use unless given as `prototypes`.
    """

    def __init__(self, vectors: np.ndarray, labels: Sequence[Any] | np.ndarray, *,
                 classes: Sequence[Any] | None = None,
                 factors: np.ndarray | None = None, per_class: int = 1, seed: int = 0,
                 prototypes: PrototypeSet | None = None) -> None:
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.labels = np.asarray(labels)
        self.classes = list(classes) if classes is not None else sorted(set(self.labels.tolist()))
        position = {c: i for i, c in enumerate(self.classes)}
        self.label_index = np.array([position[label] for label in self.labels.tolist()], dtype=np.int64)
        self.factors = None if factors is None else np.asarray(factors, dtype=np.float64)
        self.per_class, self.seed = per_class, seed
        self._prototypes = prototypes

    @property
    def prototypes(self) -> PrototypeSet:
        """The class prototypes, fitted on first use (rank and other neighbour votes never need them)."""
        if self._prototypes is None:
            self._prototypes = PrototypeSet.fit(list(range(len(self.labels))), self.vectors, self.labels.tolist(),
                                                per_class=self.per_class, seed=self.seed)
        return self._prototypes

    def __len__(self) -> int:
        return len(self.labels)

    def query(self, queries: np.ndarray, k: int, *, prototypes: bool = True) -> Neighbours:
        """Each query's k nearest rows, and (unless `prototypes` is False) its similarity to
        each class's nearest prototype."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        found = min(k, len(self))
        sims, rows = faiss.knn(queries, self.vectors, found, metric=faiss.METRIC_INNER_PRODUCT)
        if found < k:
            sims = np.hstack([sims, np.full((len(queries), k - found), -np.inf, np.float32)])
            rows = np.hstack([rows, np.full((len(queries), k - found), -1, np.int64)])
        label_index = np.where(rows >= 0, self.label_index[np.maximum(rows, 0)], -1)
        proto = None
        if prototypes:
            labels, per_class = self.prototypes.class_similarities(queries)
            proto = np.full((len(queries), len(self.classes)), -np.inf)
            columns = [self.classes.index(c) for c in labels]
            proto[:, columns] = per_class
        return Neighbours(sims, rows, label_index, proto)

    def scores(self, neighbours: Neighbours, params: VoteParams) -> np.ndarray:
        factors = None
        if self.factors is not None:
            factors = np.where(neighbours.rows >= 0, self.factors[np.maximum(neighbours.rows, 0)], 0.0)
        return vote_matrix(neighbours.sims, neighbours.label_index, len(self.classes), params,
                           factors, neighbours.prototype_sims)

    def predict(self, neighbours: Neighbours, params: VoteParams) -> np.ndarray:
        """Predicted class names (n,)."""
        return np.asarray(self.classes)[self.scores(neighbours, params).argmax(axis=1)]


def holdout_split(labels: Sequence[Any] | np.ndarray, fraction: float = 0.2,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Stratified (train rows, held-out rows): `fraction` of each class held out,
    at least one item of every class kept in train and none held out from singletons."""
    rng = np.random.default_rng(seed)
    label_of = np.asarray(labels)
    train: list[int] = []
    held: list[int] = []
    for label in sorted(set(label_of.tolist())):
        members = rng.permutation(np.flatnonzero(label_of == label))
        n_held = min(int(round(fraction * len(members))), len(members) - 1)
        held += members[:n_held].tolist()
        train += members[n_held:].tolist()
    return np.sort(np.asarray(train, dtype=np.int64)), np.sort(np.asarray(held, dtype=np.int64))


def accuracy(predicted: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean(np.asarray(predicted) == np.asarray(truth))) if len(truth) else 0.0

"""Class prototypes: the mean of each class, or several means per class.

A prototype is the mean of the vectors assigned to it, kept as a float64 sum and a
count, so adding or removing one vector updates it exactly in O(dim): no pass over
the class, no full recompute. With `per_class` = 1 each class has one prototype,
its mean (nearest class mean). With `per_class` = m > 1 a class's first m vectors
seed m prototypes and each later vector joins the nearest one (online k-means);
`fit` runs full k-means (scikit-learn) within each class instead, for a fresh start.

Search is by cosine similarity, so prototypes are compared through their
L2-normalised means.

>>> import numpy as np
>>> p = PrototypeSet(per_class=1)
>>> p.add([1, 2, 3], np.eye(3, dtype=np.float32), ["a", "a", "b"])
>>> p.class_means()[1].round(2).tolist()
[[0.5, 0.5, 0.0], [0.0, 0.0, 1.0]]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import faiss
import numpy as np

from .errors import InvalidInputError


@dataclass
class _Cluster:
    total: np.ndarray  # float64 (dim,) sum of member vectors
    count: int = 0


@dataclass
class PrototypeSet:
    """Prototypes of every class, updated in place by `add` and `remove`."""

    per_class: int = 1
    _classes: dict[str, dict[int, _Cluster]] = field(default_factory=dict)
    _member: dict[int, tuple[str, int]] = field(default_factory=dict)  # id -> (label, cluster)
    _next_cluster: int = 0
    _cache: tuple[np.ndarray, np.ndarray] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.per_class, (int, np.integer)) or self.per_class < 1:
            raise InvalidInputError(f"prototypes per class must be a positive integer, got {self.per_class!r}")

    def __len__(self) -> int:
        return len(self._member)

    def __contains__(self, item_id: int) -> bool:
        return int(item_id) in self._member

    @property
    def labels(self) -> list[str]:
        return sorted(self._classes)

    def assignment(self) -> dict[int, tuple[str, int]]:
        """id -> (label, cluster number) for every member."""
        return dict(self._member)

    # ---- building and editing -----------------------------------------------------

    @classmethod
    def fit(cls, ids: Sequence[int] | np.ndarray, vectors: np.ndarray, labels: Sequence[str],
            per_class: int = 1, seed: int = 0) -> PrototypeSet:
        """Full computation: k-means with `per_class` clusters within each class."""
        item_ids = np.asarray(ids, dtype=np.int64)
        vectors = np.asarray(vectors, dtype=np.float64)
        names = np.asarray(labels)
        assignment: dict[int, tuple[str, int]] = {}
        for label in sorted(set(names.tolist())):
            rows = np.flatnonzero(names == label)
            # k-means++ seeds by row order: order rows by content, so the same items give the
            # same prototypes whatever ids (and so order) their home gave them
            rows = rows[np.lexsort(vectors[rows].T[::-1])]
            # no more prototypes than distinct vectors (a class of one image stored twice):
            # k-means would warn on every fit and leave clusters empty
            m = min(per_class, len(rows)) if per_class == 1 else min(per_class, len(np.unique(vectors[rows], axis=0)))
            if m == 1:
                groups = np.zeros(len(rows), dtype=int)
            else:  # scikit-learn only here: importing it costs seconds, and one prototype needs none
                from sklearn.cluster import KMeans

                groups = KMeans(n_clusters=m, n_init=3, random_state=seed).fit(vectors[rows]).labels_
            assignment.update({int(item_ids[r]): (label, int(g)) for r, g in zip(rows, groups, strict=True)})
        return cls.from_assignment(item_ids, vectors, assignment, per_class)

    @classmethod
    def from_assignment(cls, ids: Sequence[int] | np.ndarray, vectors: np.ndarray,
                        assignment: dict[int, tuple[str, int]], per_class: int = 1) -> PrototypeSet:
        """Prototypes recomputed from scratch as the means of given groups."""
        protos = cls(per_class=per_class)
        numbering: dict[tuple[str, int], int] = {}
        for item_id, vector in zip(np.asarray(ids).tolist(), np.asarray(vectors, dtype=np.float64), strict=False):
            label, group = assignment[item_id]
            if (label, group) not in numbering:
                numbering[(label, group)] = protos._next_cluster
                protos._next_cluster += 1
            protos._join(item_id, vector, label, numbering[(label, group)])
        return protos

    def _join(self, item_id: int, vector: np.ndarray, label: str, cluster: int) -> None:
        clusters = self._classes.setdefault(label, {})
        if cluster not in clusters:
            clusters[cluster] = _Cluster(np.zeros(len(vector), dtype=np.float64))
        clusters[cluster].total += vector
        clusters[cluster].count += 1
        self._member[item_id] = (label, cluster)
        self._cache = None

    def add(self, ids: Sequence[int] | np.ndarray, vectors: np.ndarray, labels: Sequence[str]) -> None:
        """Add members; each joins its class's nearest prototype, or seeds a new one."""
        for item_id, vector, label in zip(np.asarray(ids).tolist(), np.asarray(vectors, np.float64), labels,
                                          strict=False):
            if item_id in self._member:
                raise InvalidInputError(f"item {item_id} is already a prototype member")
            clusters = self._classes.get(label, {})
            if len(clusters) < self.per_class:
                cluster = self._next_cluster
                self._next_cluster += 1
            else:
                numbers = list(clusters)
                means = np.stack([clusters[c].total / clusters[c].count for c in numbers])
                cluster = numbers[int(np.argmin(((means - vector) ** 2).sum(axis=1)))]
            self._join(item_id, vector, label, cluster)

    def remove(self, ids: Sequence[int] | np.ndarray, vectors: np.ndarray) -> None:
        """Take members out (their vectors are needed to subtract them); unknown ids are ignored."""
        for item_id, vector in zip(np.asarray(ids).tolist(), np.asarray(vectors, np.float64), strict=False):
            found = self._member.pop(item_id, None)
            if found is None:
                continue
            label, cluster = found
            group = self._classes[label][cluster]
            group.total -= vector
            group.count -= 1
            if group.count == 0:
                del self._classes[label][cluster]
                if not self._classes[label]:
                    del self._classes[label]
            self._cache = None

    # ---- reading ---------------------------------------------------------------------

    def prototypes(self) -> tuple[np.ndarray, np.ndarray]:
        """(unit vectors float32 (P, dim), class label of each (P,)), classes sorted."""
        if self._cache is None:
            means, owners = [], []
            for label in self.labels:
                for cluster in sorted(self._classes[label]):
                    group = self._classes[label][cluster]
                    means.append(group.total / group.count)
                    owners.append(label)
            if means:
                matrix = np.stack(means)
                matrix /= np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)
            else:
                matrix = np.empty((0, 0))
            self._cache = (matrix.astype(np.float32), np.asarray(owners))
        return self._cache

    def clusters(self) -> tuple[np.ndarray, dict[int, int], np.ndarray, np.ndarray]:
        """Every prototype as a sum: (owner label (P,), member id -> row, float64 sums (P, dim),
        counts (P,)), in `prototypes()` order; what a counterfactual needs to take members out."""
        owners: list[str] = []
        totals: list[np.ndarray] = []
        counts: list[int] = []
        row_of: dict[tuple[str, int], int] = {}
        for label in self.labels:
            for cluster in sorted(self._classes[label]):
                row_of[(label, cluster)] = len(owners)
                owners.append(label)
                totals.append(self._classes[label][cluster].total)
                counts.append(self._classes[label][cluster].count)
        members = {item_id: row_of[key] for item_id, key in self._member.items()}
        matrix = np.stack(totals) if totals else np.empty((0, 0))
        return np.asarray(owners), members, matrix, np.asarray(counts, dtype=np.int64)

    def class_means(self) -> tuple[list[str], np.ndarray]:
        """(labels, float64 (C, dim) plain class means), whatever `per_class` is."""
        labels = self.labels
        means = [sum(g.total for g in self._classes[c].values()) / sum(g.count for g in self._classes[c].values())
                 for c in labels]
        return labels, np.stack(means) if means else np.empty((0, 0))

    def class_similarities(self, queries: np.ndarray) -> tuple[list[str], np.ndarray]:
        """(labels, float64 (n, C)): each query's cosine similarity to each class's nearest prototype."""
        matrix, owners = self.prototypes()
        labels = self.labels
        if not labels:
            return labels, np.empty((len(queries), 0))
        return labels, nearest_per_class(all_similarities(queries, matrix), owners)


def all_similarities(queries: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """queries @ matrix.T, computed by FAISS rather than numpy.

    Search runs in FAISS's OpenMP threads; a numpy matmul here would wake OpenBLAS's own
    pool, whose spinning threads then slow the next search (1.75x single-query latency
    on 2 cores, measured with benchmarks/classify.py).
    """
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    sims, cols = faiss.knn(queries, np.ascontiguousarray(matrix, dtype=np.float32), len(matrix),
                           metric=faiss.METRIC_INNER_PRODUCT)
    out = np.empty((len(queries), len(matrix)), dtype=np.float32)
    np.put_along_axis(out, cols, sims, axis=1)
    return out


def nearest_per_class(similarities: np.ndarray, owners: np.ndarray) -> np.ndarray:
    """Max over each class's columns of a (n, P) similarity matrix -> (n, C).

    `owners` gives each column's class with each class's columns contiguous (as
    `PrototypeSet.prototypes` lists them); output columns follow that class order.
    """
    starts = np.flatnonzero(np.r_[True, owners[1:] != owners[:-1]])
    return np.maximum.reduceat(similarities, starts, axis=1).astype(np.float64)

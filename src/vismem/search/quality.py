"""How good is an index on this memory's data? Recall against exact search (measured on
unseen queries: tuning.py), and the data's local intrinsic dimensionality (which is what
makes approximate search hard).

Pure functions over numpy arrays; the memory calls them with a sample of its vectors.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields

import faiss
import numpy as np
from faiss.contrib.exhaustive_search import knn_ground_truth

from .tuning import EXACT, OWN

RECALL_K = 10
SAMPLE = 200
LID_K = 20


@dataclass(frozen=True)
class Quality:
    """Recall@k of a `type` index, measured with `sample` queries when the memory held
    `size` items, with the search `params` it chose, the 95% interval [`low`, `high`]
    and what the queries were (`measured_on`, see tuning.py: "own vectors" is
    optimistic), and the memory's local intrinsic dimension `lid` (Levina–Bickel MLE).
    `last_id` is the highest item id then: the items measured on are the `size` items
    with ids up to it (ids are never given out twice), so how many of them are gone can
    be told (`calibrate.changed_since`; None: a record written before it was kept)."""

    type: str
    recall: float
    k: int
    sample: int
    size: int
    params: dict
    lid: float | None
    target: float
    measured_on: str = OWN  # records written before unseen queries were used
    low: float | None = None
    high: float | None = None
    last_id: int | None = None

    @classmethod
    def from_dict(cls, found: dict) -> Quality:
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in found.items() if key in known})

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        """What the figure was measured on, e.g. "held-out sample, 200 queries, 95%
        interval 0.931-0.968"; "own vectors (optimistic), ..."; "exact search"."""
        what = self.measured_on + (" (optimistic)" if self.measured_on == OWN else "")
        if self.low is None or self.high is None or self.measured_on == EXACT:
            return what
        return f"{what}, {self.sample} queries, 95% interval {self.low:.3f}-{self.high:.3f}"

    def warning(self) -> str | None:
        """A one-line warning (naming what to do) when recall is below the target, or
        when no search effort reached it and the index searches exhaustively."""
        why = f" at intrinsic dimension ~{self.lid:.0f}" if self.lid else ""
        fix = ("switch with `vismem reindex MEMDIR --index exact`, or lower --target-recall")
        if self.recall < self.target:
            return (f"recall@{self.k} of the {self.type} index is {self.recall:.3f}, below the "
                    f"target {self.target}{why}; approximate search is hard on this data: {fix}")
        if self.params.get("exhaustive"):
            return (f"no search effort of the {self.type} index reaches recall@{self.k} "
                    f"{self.target}{why}, so it searches every vector exactly, as slowly as "
                    f"exact search: {fix}")
        return None


def sample_rows(n: int, size: int = SAMPLE, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=min(size, n), replace=False))


def exact_top(queries: np.ndarray, chunks: Iterable[tuple[np.ndarray, np.ndarray]],
              depth: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-`depth` (ids, similarities) of queries over (ids, vectors) chunks.

    FAISS's own `knn_ground_truth` streams the chunks, so measuring a large memory never
    holds all its vectors; ids not found (fewer than `depth` items) are -1.
    """
    seen: list[np.ndarray] = []

    def blocks():
        for ids, vectors in chunks:
            seen.append(np.asarray(ids, dtype=np.int64))
            yield np.ascontiguousarray(vectors, dtype=np.float32)

    sims, rows = knn_ground_truth(np.ascontiguousarray(queries, np.float32), blocks(), depth,
                                  metric_type=faiss.METRIC_INNER_PRODUCT)
    if not seen:
        return np.full((len(queries), depth), -1, np.int64), sims
    all_ids = np.concatenate(seen)
    found = (rows >= 0) & (sims > np.finfo(np.float32).min)  # FAISS pads with -FLT_MAX
    return np.where(found, all_ids[np.maximum(rows, 0)], -1), np.where(found, sims, -np.inf)


def drop_self(ids: np.ndarray, query_ids: np.ndarray, k: int) -> np.ndarray:
    out = np.full((len(ids), k), -1, dtype=np.int64)
    for i, (row, own) in enumerate(zip(ids, query_ids, strict=True)):
        kept = row[(row != own) & (row >= 0)][:k]
        out[i, : len(kept)] = kept
    return out


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Fraction of the true neighbours (ids >= 0 in `truth`) that `found` contains.

    Like `faiss.contrib.evaluation.knn_intersection_measure`, except that a memory with
    fewer than k other items pads `truth` with -1, and padding is no neighbour to find."""
    hits = total = 0
    for f, t in zip(found, truth, strict=True):
        t = t[t >= 0]
        hits += len(np.intersect1d(f, t))
        total += len(t)
    return hits / total if total else 1.0


def levina_bickel(neighbor_sq_distances: np.ndarray) -> float:
    """Levina–Bickel maximum-likelihood intrinsic dimension from k-NN distances.

    `neighbor_sq_distances` float (n, k): squared distances of each sample point to its
    k nearest other points, ascending. Uses the MacKay–Ghahramani pooling (average the
    inverse estimates, then invert), which is less biased than averaging the estimates.
    """
    return lid_from_inverses(inverse_lid(neighbor_sq_distances))


def inverse_lid(neighbor_sq_distances: np.ndarray) -> np.ndarray:
    """Each point's inverse Levina–Bickel estimate (what `levina_bickel` pools), so that
    estimates from several samples can be pooled: one per point, in order, NaN for a
    point with a duplicate (no scale information) or with fewer than two neighbours."""
    d = np.sqrt(np.maximum(np.asarray(neighbor_sq_distances, dtype=np.float64), 0.0))
    inverses = np.full(len(d), np.nan)
    if d.ndim != 2 or d.shape[1] < 2:
        return inverses
    scaled = (d > 0).all(axis=1)
    # log(T_k / T_j), j < k
    inverses[scaled] = np.log(d[scaled, -1:] / d[scaled, :-1]).sum(axis=1) / (d.shape[1] - 1)
    return inverses


def lid_from_inverses(inverses: np.ndarray) -> float:
    inverses = inverses[np.isfinite(inverses)]
    if len(inverses) == 0:
        return float("nan")
    mean_inverse = float(np.mean(inverses))
    return 1.0 / mean_inverse if mean_inverse > 0 else float("inf")

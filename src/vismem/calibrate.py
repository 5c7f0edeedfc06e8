"""Abstention: a score for "unlike anything in memory", and its calibrated threshold.

The score of a query is d_k + w * d_p: the cosine distance to its k-th nearest item
that votes plus w times the distance to the nearest class prototype. Far from both means out of
distribution. k = 1: on digits and MNIST the nearest item's distance separates unknown
classes better than the 10th's. w = 0 (the nearest item alone) unless `fit_calibration`
measures a prototype mix to separate better on the memory's own data: it holds each
group of classes out in turn as "unknown" and compares the AUROC of every candidate w
(on digits and MNIST the prototype term made it worse; see docs/quality.md).

The threshold is set on the memory's own items, each scored against all the others
(leave-one-out), so that a target fraction (the true-positive rate, 95% by default) scores
at or below it and is answered. Where the memory searches through a feature transform
fitted on its items, each item is scored through a fit made without it (`FOLDS` folds),
as a query is: whitening spreads apart the items it is fitted on, so their scores ran
higher than any query's (200 digits whitened: 0 of 500 new digits abstained for a target
of 5%; 3.6% now). The calibration records how many items it was fitted on and the newest
item id then (ids are never reused), so a memory that gained or lost more than
`STALE_FRACTION` of its items since can say so (`changed_fraction`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Sequence

import faiss
import numpy as np

from .errors import InvalidInputError, whole_number

if TYPE_CHECKING:
    from .evaluation.engine import ArrayMemory

DEFAULT_TPR = 0.95
DEFAULT_OOD_K = 1
MIN_ITEMS = 10  # calibration's least number of items: fewer give no threshold worth the name
PROTOTYPE_WEIGHTS = (0.0, 0.5, 1.0)  # candidates; 0 (nearest item alone) first, kept unless beaten
MIX_MARGIN = 0.005                   # AUROC a mix must gain over the nearest item alone to be chosen
STALE_FRACTION = 0.10

FOLDS = 20                           # fits of a transform, each without a twentieth of the items
AUROC_FOLDS = 5                      # fewer where only AUROCs are compared, per class group
Progress = Callable[[int], None]  # advance(n): n more items scored
# fits the memory's feature transform on these rows (as stored) and returns its `apply`
Refit = Callable[[np.ndarray], Callable[[np.ndarray], np.ndarray]]


@dataclass(frozen=True)
class Calibration:
    """A fitted abstention rule: abstain when d_k + prototype_weight * d_p > threshold.

    `tpr` was the target, `achieved_tpr` what the `held_out` items scored (all of them,
    each left out of the rest in turn) reached. `auroc` maps each candidate prototype
    weight to its mean AUROC with held-out class groups as unknown (empty when the weight
    was given, or the memory has < 3 classes). `items` is how many items voted when it
    was fitted and `max_id` the newest item id then (see `changed_fraction`); `transform`
    names the feature transform the distances went through."""

    threshold: float
    k: int = DEFAULT_OOD_K
    prototype_weight: float = 0.0
    tpr: float = DEFAULT_TPR
    achieved_tpr: float = DEFAULT_TPR
    held_out: int = 0
    items: int | None = None
    auroc: dict[str, float] = field(default_factory=dict)
    max_id: int | None = None
    transform: str = "none"  # `FeatureTransform.key` of the space the distances were measured in

    def score(self, kth_distance: np.ndarray, prototype_distance: np.ndarray) -> np.ndarray:
        return ood_scores(kth_distance, prototype_distance, self.prototype_weight)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def ood_scores(kth_distance: np.ndarray, prototype_distance: np.ndarray,
               prototype_weight: float = 1.0) -> np.ndarray:
    """Higher = more out of distribution: d_k + prototype_weight * d_p, element-wise."""
    if not 0 <= prototype_weight < math.inf:  # inf or NaN: every score NaN, and the threshold with it
        raise InvalidInputError(f"prototype weight must be a finite number >= 0, got {prototype_weight}")
    return np.asarray(kth_distance, np.float64) + prototype_weight * np.asarray(prototype_distance, np.float64)


def calibrate_threshold(in_scores: np.ndarray, tpr: float = DEFAULT_TPR) -> float:
    """Smallest threshold that accepts (score <= threshold) at least `tpr` of in-distribution scores."""
    scores = np.sort(np.asarray(in_scores, np.float64))
    if not 0 < tpr <= 1:
        raise InvalidInputError(f"target TPR must be in (0, 1], got {tpr}")
    if len(scores) == 0:
        raise InvalidInputError("calibration needs held-out in-distribution queries; the memory is too small")
    # the count to accept, rounded up; less a hair, so that 0.56 x 25 (14.000000000000002) is 14
    return float(scores[max(int(np.ceil(tpr * len(scores) - 1e-9)), 1) - 1])


def true_positive_rate(in_scores: np.ndarray, threshold: float) -> float:
    """Fraction of in-distribution queries accepted at `threshold`."""
    return float(np.mean(np.asarray(in_scores) <= threshold))


def auroc(in_scores: np.ndarray, out_scores: np.ndarray) -> float:
    """Area under the ROC curve for telling out-of-distribution (positive) from in."""
    from sklearn.metrics import roc_auc_score

    y = np.r_[np.zeros(len(in_scores)), np.ones(len(out_scores))]
    return float(roc_auc_score(y, np.r_[in_scores, out_scores]))


def fpr_at_tpr(in_scores: np.ndarray, out_scores: np.ndarray, tpr: float = DEFAULT_TPR) -> float:
    """Fraction of out-of-distribution queries wrongly accepted when `tpr` of in-distribution ones are."""
    threshold = calibrate_threshold(in_scores, tpr)
    return float(np.mean(np.asarray(out_scores) <= threshold))


def changed_since(items: int | None, max_id: int | None, ids_now: np.ndarray) -> tuple[int, int] | None:
    """(added, removed) since a fit or a measure made on `items` items whose newest id was
    `max_id`, given the ids now: the ids above max_id, and how many of those items are gone
    (ids are never given out twice). None when it did not record them."""
    if not items or max_id is None:
        return None
    ids_now = np.asarray(ids_now)
    added = int((ids_now > max_id).sum())
    removed = items - int((ids_now <= max_id).sum())
    return added, max(removed, 0)


def changed_fraction(items: int | None, max_id: int | None, ids_now: np.ndarray) -> float | None:
    """Share of a memory added or removed since a fit on `items` items whose newest id was
    `max_id`, given the ids that vote now: (ids above max_id + fitted ids gone) / items.
    None when the fit did not record them."""
    changed = changed_since(items, max_id, ids_now)
    return None if changed is None or not items else sum(changed) / items


def is_stale(fraction: float | None, limit: float = STALE_FRACTION) -> bool:
    """True when more than `limit` of the memory changed since the fit."""
    return fraction is not None and fraction > limit


def class_groups(labels: Sequence[str] | np.ndarray, groups: int = 3, seed: int = 0) -> list[list[str]]:
    """The classes shuffled and split into `groups` (each held out as "unknown" in turn)."""
    classes = np.random.default_rng(seed).permutation(sorted(set(np.asarray(labels).tolist())))
    return [g.tolist() for g in np.array_split(classes, min(groups, len(classes))) if len(g)]


def leave_one_out_distances(vectors: np.ndarray, labels: Sequence[str] | np.ndarray, *, k: int = DEFAULT_OOD_K,
                            per_class: int = 1, seed: int = 0, prototypes: bool = True,
                            memory: ArrayMemory | None = None, rows: np.ndarray | None = None,
                            progress: Progress | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Each item's distance to its k-th nearest other item and to the nearest prototype with
    itself taken out of it: (d_k (n,), d_p (n,) or None); with `rows`, those items' alone.

    This is how far an unseen in-distribution query lies from the whole memory; holding a
    share out instead would measure against a sparser memory and set the threshold too
    high (a 20% hold-out answered 85% of new queries for a target of 80% on digits).
    `memory`: these items as an `ArrayMemory` (same per_class and seed), when the caller
    has one, so its prototypes are not fitted twice."""
    from .evaluation.engine import ArrayMemory
    from .prune import self_neighbours

    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    rows = np.arange(len(vectors)) if rows is None else np.asarray(rows, dtype=np.int64)
    sims, _ = self_neighbours(vectors, k, progress, queries=rows)
    kth = np.where(np.isfinite(sims[:, k - 1]), 1.0 - sims[:, k - 1].astype(np.float64), 2.0)
    if not prototypes:
        return kth, None
    if memory is None:
        memory = ArrayMemory(vectors, labels, per_class=per_class, seed=seed)
    owners, members, totals, counts = memory.prototypes.clusters()
    queries = vectors[rows]
    unit = totals / np.maximum(np.linalg.norm(totals, axis=1, keepdims=True), 1e-12)
    top, cols = faiss.knn(queries, unit.astype(np.float32), min(2, len(unit)), metric=faiss.METRIC_INNER_PRODUCT)
    own = np.array([members[i] for i in rows.tolist()], dtype=np.int64)
    other = np.where(cols[:, 0] != own, top[:, 0], top[:, 1] if top.shape[1] > 1 else -np.inf)
    rest = totals[own] - queries.astype(np.float64)  # the own prototype without this item
    own_sim = (rest * queries).sum(axis=1) / np.maximum(np.linalg.norm(rest, axis=1), 1e-12)
    own_sim = np.where(counts[own] > 1, own_sim, -np.inf)
    return kth, 1.0 - np.maximum(other, own_sim)


def out_of_fit_distances(vectors: np.ndarray, labels: Sequence[str] | np.ndarray, refit: Refit, *,
                         k: int = DEFAULT_OOD_K, per_class: int = 1, seed: int = 0, prototypes: bool = True,
                         folds: int = FOLDS, progress: Progress | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """`leave_one_out_distances` of items as stored, each measured through a transform
    fitted without it, as a query is measured: the items fall in `folds` folds, and each
    fold's items are searched among all the others through a fit on the other folds."""
    n = len(vectors)
    near, proto = np.empty(n), np.empty(n) if prototypes else None
    for fold in np.array_split(np.random.default_rng(seed).permutation(n), min(folds, n)):
        others = np.ones(n, dtype=bool)
        others[fold] = False
        searched = refit(vectors[others])(vectors)
        near[fold], in_fold = leave_one_out_distances(searched, labels, k=k, per_class=per_class, seed=seed,
                                                      prototypes=prototypes, rows=fold, progress=progress)
        if proto is not None:
            proto[fold] = in_fold
    return near, proto


def item_distances(vectors: np.ndarray, labels: Sequence[str] | np.ndarray, refit: Refit | None, **options: Any
                   ) -> tuple[np.ndarray, np.ndarray | None]:
    """How far each item lies from the others as a new query would: leave-one-out in the
    space given, or, with `refit`, out of the fit (`out_of_fit_distances`)."""
    if refit is None:
        return leave_one_out_distances(vectors, labels, **options)
    return out_of_fit_distances(vectors, labels, refit, **options)


def prototype_weight_auroc(vectors: np.ndarray, labels: Sequence[str] | np.ndarray, *, k: int = DEFAULT_OOD_K,
                           weights: Sequence[float] = PROTOTYPE_WEIGHTS, per_class: int = 1,
                           seed: int = 0, refit: Refit | None = None,
                           progress: Progress | None = None) -> dict[str, float]:
    """Mean AUROC of the score d_k + w * d_p for each w, with each class group held out as
    unknown in turn: the known classes' items, each left out of the rest (in), against
    the unknown group's items searched in the known memory (out). With `refit` (see
    `fit_calibration`) the known memory searches through a fit on its own items.
    Empty when there are fewer than 3 classes."""
    from .evaluation.engine import ArrayMemory

    label_of = np.asarray(labels)
    groups = class_groups(label_of, seed=seed)
    if len(groups) < 3:
        return {}
    found: dict[float, list[float]] = {w: [] for w in weights}
    for unknown in groups:
        out_rows = np.isin(label_of, unknown)
        known_x, known_y = vectors[~out_rows], label_of[~out_rows]
        searched = (lambda x: x) if refit is None else refit(known_x)
        known = ArrayMemory(searched(known_x), known_y, per_class=per_class, seed=seed)
        alike = {"folds": AUROC_FOLDS} if refit else {"memory": known}  # (its prototypes, fitted once)
        in_near, in_proto = item_distances(known_x, known_y, refit, k=k, per_class=per_class, seed=seed,
                                           progress=progress, **alike)
        assert in_proto is not None
        nb = known.query(searched(vectors[out_rows]), k)
        if progress:
            progress(int(out_rows.sum()))
        out_near, out_proto = nb.kth_distance(k), nb.prototype_distance()
        for w in weights:
            found[w].append(auroc(ood_scores(in_near, in_proto, w), ood_scores(out_near, out_proto, w)))
    return {f"{w:g}": float(np.mean(a)) for w, a in found.items()}


def choose_prototype_weight(aurocs: dict[str, float], margin: float = MIX_MARGIN) -> float:
    """0 (the nearest item alone) unless a mix beats it by more than `margin` AUROC."""
    if not aurocs or "0" not in aurocs:
        return 0.0
    best = max(aurocs, key=aurocs.__getitem__)
    return float(best) if aurocs[best] > aurocs["0"] + margin else 0.0


def calibration_work(labels: Sequence[str] | np.ndarray, prototype_weight: float | None = None) -> int:
    """How many items `fit_calibration` scores: each item once, and once more per class
    group held out when it measures the prototype weight (every item is in one group's
    known items or that group's unknown ones)."""
    groups = class_groups(labels) if prototype_weight is None else []
    return len(labels) * (1 + (len(groups) if len(groups) >= 3 else 0))


def check_calibration(items: int, *, tpr: float, k: int, prototype_weight: float | None) -> None:
    """Refuse (InvalidInputError) a calibration of `items` voting items that `fit_calibration`
    could not make, before the scoring, which takes minutes on a large memory (k=0 failed
    deep in it, an IndexError), and before a caller shows its progress."""
    if not whole_number(k) or k < 1:
        raise InvalidInputError(f"k must be a whole number >= 1, got {k!r}")
    if not 0 < tpr <= 1:
        raise InvalidInputError(f"target TPR must be in (0, 1], got {tpr}")
    if prototype_weight is not None:
        ood_scores(np.zeros(1), np.zeros(1), prototype_weight)  # a bad weight fails before the scoring
    if items < MIN_ITEMS:
        raise InvalidInputError(f"calibration needs at least {MIN_ITEMS} items; the memory has {items}")
    if k >= items:  # no item has a k-th nearest other: every score would be the 2.0 cap
        raise InvalidInputError(f"k={k} scores each item by its {k}th nearest other item, and the memory has "
                                f"{items} items: give k below {items}")


def fit_calibration(vectors: np.ndarray, labels: Sequence[str] | np.ndarray, *, tpr: float = DEFAULT_TPR,
                    k: int = DEFAULT_OOD_K, prototype_weight: float | None = None, per_class: int = 1,
                    seed: int = 0, ids: np.ndarray | None = None, transform: str = "none",
                    refit: Refit | None = None, progress: Progress | None = None) -> Calibration:
    """Calibrate abstention on a memory's voting items (vectors (n, dim), labels (n,), and
    their `ids`, recorded to tell later how much the memory changed; the vectors as
    searched, through the feature transform named by `transform`). With `refit`, the
    memory searches through a transform fitted on its items, and `vectors` are as stored:
    `refit(rows)` fits it on those rows and returns its `apply`; each item is scored
    through a fit made without it.

    With `prototype_weight` None it is chosen by `prototype_weight_auroc`; the threshold
    is the `tpr` quantile of the items' leave-one-out scores (`item_distances`).
    `progress(n)` follows the scoring: `calibration_work(labels, prototype_weight)` items.
    """
    label_of = np.asarray(labels)
    check_calibration(len(label_of), tpr=tpr, k=k, prototype_weight=prototype_weight)
    aurocs: dict[str, float] = {}
    if prototype_weight is None:
        aurocs = prototype_weight_auroc(vectors, label_of, k=k, per_class=per_class, seed=seed, refit=refit,
                                        progress=progress)
        prototype_weight = choose_prototype_weight(aurocs)
    near, proto = item_distances(vectors, label_of, refit, k=k, per_class=per_class, seed=seed,
                                 prototypes=prototype_weight > 0, progress=progress)
    scores = ood_scores(near, proto if proto is not None else np.zeros_like(near), prototype_weight)
    threshold = calibrate_threshold(scores, tpr)
    return Calibration(threshold, k, float(prototype_weight), tpr, true_positive_rate(scores, threshold),
                       int(len(label_of)), int(len(label_of)), aurocs,
                       int(np.max(ids)) if ids is not None and len(ids) else None, transform)

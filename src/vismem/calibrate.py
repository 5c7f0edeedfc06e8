"""Abstention: a score for "unlike anything in memory", and its calibrated threshold.

The score of a query is d_k + w * d_p: the cosine distance to its k-th nearest item
plus w times the distance to the nearest class prototype. Far from both means out of
distribution. By default k = 1 and w = 1: on digits and MNIST the nearest item's
distance separates unknown classes better than the 10th's (see docs/quality.md).
The threshold is set on held-out in-distribution queries so that a target fraction
(the true-positive rate, 95% by default) scores at or below it and is answered.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .errors import InvalidInputError

DEFAULT_TPR = 0.95
DEFAULT_OOD_K = 1


@dataclass(frozen=True)
class Calibration:
    """A fitted abstention rule: abstain when d_k + prototype_weight * d_p > threshold.

    `tpr` was the target, `achieved_tpr` what `held_out` held-out items reached;
    `items` how many items the memory held when it was fitted."""

    threshold: float
    k: int = DEFAULT_OOD_K
    prototype_weight: float = 1.0
    tpr: float = DEFAULT_TPR
    achieved_tpr: float = DEFAULT_TPR
    held_out: int = 0
    items: int | None = None

    def score(self, kth_distance: np.ndarray, prototype_distance: np.ndarray) -> np.ndarray:
        return ood_scores(kth_distance, prototype_distance, self.prototype_weight)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def ood_scores(kth_distance: np.ndarray, prototype_distance: np.ndarray,
               prototype_weight: float = 1.0) -> np.ndarray:
    """Higher = more out of distribution: d_k + prototype_weight * d_p, element-wise."""
    if prototype_weight < 0:
        raise InvalidInputError(f"prototype weight must be >= 0, got {prototype_weight}")
    return np.asarray(kth_distance, np.float64) + prototype_weight * np.asarray(prototype_distance, np.float64)


def calibrate_threshold(in_scores: np.ndarray, tpr: float = DEFAULT_TPR) -> float:
    """Smallest threshold that accepts (score <= threshold) at least `tpr` of in-distribution scores."""
    scores = np.sort(np.asarray(in_scores, np.float64))
    if not 0 < tpr <= 1:
        raise InvalidInputError(f"target TPR must be in (0, 1], got {tpr}")
    if len(scores) == 0:
        raise InvalidInputError("calibration needs held-out in-distribution queries; the memory is too small")
    return float(scores[int(np.ceil(tpr * len(scores))) - 1])


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

"""What a memory reports about itself (`vismem info`, `GET /stats`): counts, encoder,
settings, store and index, and how far the memory moved since each estimate made on its
items (intrinsic dimension, feature transform, abstention threshold), so that a user
knows when to measure again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .calibrate import changed_fraction, changed_since, is_stale
from .classify import voting_filter
from .store import Filter
from .store.base import Checkpoints

if TYPE_CHECKING:
    from .memory import Memory

DRIFT_SAMPLE = 20_000
# the mean's shift (in spreads of the fitted items) past which `info` advises re-tuning: on
# digits and MNIST through EfficientNet-Lite0, adding a tenth class moves it 0.04, sampling
# half the items 0.01-0.02 (see docs/quality.md)
MEAN_DRIFT_LIMIT = 0.05


def describe(memory: Memory) -> dict[str, Any]:
    """`Memory.info`'s answer. `intrinsic_dim` is the estimate while every item it was
    made on is still here (items added since are counted in `intrinsic_dim_estimate`),
    else None: the last estimate and how its items stand are in `intrinsic_dim_estimate`."""
    store, settings = memory.store, memory.settings
    classes = memory.class_counts()
    described = store.describe()
    estimate = intrinsic_dim_estimate(memory)
    return {
        "path": memory.location,
        "items": len(store),
        "classes": classes,
        "class_count": len(classes),
        "encoder": store.identity.name,
        "encoder_id": store.identity.id,
        "dim": memory.dim,
        **described,
        "intrinsic_dim": estimate["value"] if estimate and not estimate["removed_since"] else None,
        "intrinsic_dim_estimate": estimate,
        "defaults": settings.vote.to_dict(),
        "prototypes_per_class": settings.prototypes_per_class,
        "pruning": {**settings.pruning.to_dict(),
                    "excluded": int(len(store) - len(store.ids(voting_filter(Filter(), settings))))},
        # transform_changed: measured through another transform, so `classify --abstain` refuses it
        "abstain": {**settings.abstention.to_dict(), "changed_since": memory.calibration_changed(),
                    "transform_changed": settings.abstention.transform != memory.transform.key}
        if settings.abstention else None,
        "transform": transform_status(memory, described.get("transform")),
        "checkpoints": checkpoint_status(memory),
    }


def checkpoint_status(memory: Memory) -> dict[str, int] | None:
    """How many checkpoints the memory has, and the item rows they hold (one per item of
    each still here: what they weigh in its database). None where the home keeps none."""
    if not isinstance(memory.store, Checkpoints):
        return None
    found = memory.checkpoints()
    return {"count": len(found), "item_rows": sum(c.kept for c in found)}


def intrinsic_dim_estimate(memory: Memory) -> dict[str, Any] | None:
    """The last intrinsic-dimension estimate (`value`), the item count it was made at
    (`items`), and how many of those items were removed since and how many were added
    (None where the record does not say which items they were). A removal, a rollback
    or a prune leaves it made partly on items that are gone; `compact` estimates again."""
    quality = memory.quality
    if quality is None or quality.lid is None:
        return None
    changed = changed_since(quality.size, quality.last_id, memory.store.ids())
    added, removed = changed if changed is not None else (None, None)
    return {"value": quality.lid, "items": quality.size, "removed_since": removed, "added_since": added}


def transform_status(memory: Memory, described: dict[str, Any] | None) -> dict[str, Any] | None:
    """The fitted feature transform, and how far the memory moved since it was fitted:
    the share of items added or removed, and the shift of the mean (on a sample of up
    to `DRIFT_SAMPLE` items) in units of the fitted items' spread."""
    if described is None or described["name"] == "none":
        return described
    ids = memory.store.ids()
    changed = changed_fraction(described["fitted_items"], described["max_id"], ids)
    sample = np.sort(np.random.default_rng(0).permutation(ids)[:DRIFT_SAMPLE]) if len(ids) else ids
    drift = memory.transform.mean_drift(memory.store.vectors(sample.tolist())[1]) if len(sample) else 0.0
    return {**described, "changed_since": changed, "mean_drift": round(drift, 4),
            "retune": is_stale(changed) or drift > MEAN_DRIFT_LIMIT}

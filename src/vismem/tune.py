"""Choosing the feature transform, k, the vote rule, alpha, tau (and prototypes) on a
memory's own data.

A stratified part of the memory is held out and classified by the rest with every
candidate setting; the most accurate wins. Ties go to the earlier candidate, and the
candidates start with the shipped defaults (no transform first), so a setting is only
changed when it measurably helps on the held-out data.

Each transform is fitted on the rest alone (never on the held-out part) and every vote
setting is tried through it with one prototype per class; 2 and 4 prototypes per class
are then tried through the winning transform only (k-means per class is the slow part).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from .decide import PROTOTYPE_VOTES, VOTES, VoteParams
from .errors import InvalidInputError, brief_repr
from .evaluation.engine import ArrayMemory, accuracy, holdout_split
from .maintenance import no_progress
from .transform import TransformSpec, fit_transform

KS = (1, 3, 5, 10, 15, 20, 30, 50, 100)
ALPHAS = (0.5, 1.0, 2.0, 5.0, 10.0, 20.0)
TAUS = (0.01, 0.02, 0.05, 0.07, 0.1, 0.2)
MIXES = (0.25, 0.5, 0.75)
PER_CLASS = (1, 2, 4)
# measured on digits and MNIST through EfficientNet-Lite0 (docs/quality.md): full whitening
# amplifies noise directions, 10% shrinkage and 128-512 components do not; power 0.5 helps
TRANSFORM_CANDIDATES = (
    TransformSpec("none"),
    TransformSpec("center"),
    TransformSpec("whiten", components=256, shrinkage=0.1),
    TransformSpec("whiten", components=128, shrinkage=0.1, power=0.5),
    TransformSpec("whiten", components=256, shrinkage=0.1, power=0.5),
    TransformSpec("whiten", components=512, shrinkage=0.1, power=0.5),
)


@dataclass
class TuneResult:
    """The winning setting, its held-out accuracy, and every candidate tried.

    `by_transform` gives the best held-out accuracy reached through each transform;
    `default_accuracy` is None when the shipped defaults were not among the candidates
    (another transform asked for, or fewer items than their k)."""

    params: VoteParams
    per_class: int
    accuracy: float
    default_accuracy: float | None
    held_out: int
    trials: list[dict[str, Any]] = field(default_factory=list)
    transform: TransformSpec = field(default_factory=TransformSpec)
    by_transform: dict[str, float] = field(default_factory=dict)

    __repr__ = brief_repr  # long lists shown by their ends and length

    def to_dict(self) -> dict[str, Any]:
        return {"params": self.params.to_dict(), "prototypes_per_class": self.per_class,
                "transform": self.transform.to_dict(), "accuracy": self.accuracy,
                "default_accuracy": self.default_accuracy, "by_transform": self.by_transform,
                "held_out": self.held_out, "trials": len(self.trials)}


def candidates(max_k: int, rules: Sequence[str], per_class: int) -> list[VoteParams]:
    """Every setting to try, the defaults first, and at each k the shipped alpha, tau and
    mix first: where they change nothing (alpha and tau at k=1), a tie keeps them."""
    ks = [k for k in KS if k <= max_k] or [max_k]
    shipped = VoteParams()
    alphas, taus, mixes = (_first(shipped.alpha, ALPHAS), _first(shipped.tau, TAUS), _first(shipped.mix, MIXES))
    out = [shipped] if shipped.k <= max_k else []
    for rule in rules:
        for k in ks if rule != "prototype" else [1]:
            if rule == "rank":
                out += [VoteParams(k=k, vote=rule, alpha=a) for a in alphas]
            elif rule == "softmax" or rule == "prototype":
                out += [VoteParams(k=k, vote=rule, tau=t) for t in taus]
            elif rule == "hybrid":
                out += [VoteParams(k=k, vote=rule, tau=t, mix=m) for t in taus for m in mixes]
            else:
                out.append(VoteParams(k=k, vote=rule))
    return out


def _first(value: float, grid: Sequence[float]) -> list[float]:
    """`grid` with `value` moved to the front."""
    return [value, *(v for v in grid if v != value)]


def _space(vectors: np.ndarray, train: np.ndarray, test: np.ndarray,
           spec: TransformSpec) -> tuple[np.ndarray, np.ndarray] | None:
    """(train, test) vectors through `spec` fitted on train; None where it cannot be fitted."""
    try:
        fitted = fit_transform(vectors[train], spec)
    except InvalidInputError:  # e.g. whitening a memory with no variance: not a candidate
        return None
    return fitted.apply(vectors[train]), fitted.apply(vectors[test])


MOST_HELD_OUT = 0.5  # `vismem tune --held-out`'s most: half of each class still votes


def check_held_out(held_out: float) -> None:
    """Refuse a held-out share that is not a fraction: NaN failed in the split with a
    ValueError, and 1.5 held out all but one item of each class."""
    if not 0 < held_out < 1:  # (NaN too)
        raise InvalidInputError(f"held_out is the fraction of each class held out, between 0 and 1 (`vismem tune "
                                f"--held-out` takes 0.05 to {MOST_HELD_OUT}), got {held_out!r}")


def _check_split(labels: np.ndarray, test: np.ndarray, held_out: float) -> None:
    """Refuse a memory the held-out split cannot measure, naming the fix."""
    classes = len(set(labels.tolist()))
    if classes < 2:
        raise InvalidInputError(f"tuning compares classes, and the memory has {classes}: add items of another class")
    if len(test) < 2:
        most = len(holdout_split(labels.tolist(), MOST_HELD_OUT)[1])
        more = f", or hold out more (`vismem tune --held-out {MOST_HELD_OUT}` holds out {most})" if most >= 2 else ""
        raise InvalidInputError(
            f"tuning holds out {held_out:.0%} of each class (none of a class with one item) and needs at least 2 "
            f"held-out items; of these {len(labels)} items in {classes} classes it held out {len(test)}: add items "
            f"(3 or more per class){more}")


def sweeps(transforms: Sequence[TransformSpec] = TRANSFORM_CANDIDATES, per_class: Sequence[int] = PER_CLASS,
           rules: Sequence[str] = VOTES) -> int:
    """How many sweeps `tune` makes: one per transform, then one per further prototype
    count for the best one (when a prototype vote is among the rules).

        >>> sweeps()
        8
    """
    return len(transforms) + (len(per_class) - 1 if any(r in PROTOTYPE_VOTES for r in rules) else 0)


def tune(vectors: np.ndarray, labels: Sequence[str] | np.ndarray, *,
         rules: Sequence[str] = VOTES, per_class: Sequence[int] = PER_CLASS,
         transforms: Sequence[TransformSpec] = TRANSFORM_CANDIDATES, held_out: float = 0.2, seed: int = 0,
         factors: np.ndarray | None = None, progress: Callable[[int], None] | None = None) -> TuneResult:
    """Pick the transform and vote setting most accurate on a held-out split of (vectors, labels);
    `progress(1)` after each of the `sweeps(...)` sweeps (a transform or prototype count tried:
    the held-out items searched, then every vote setting scored)."""
    check_held_out(held_out)
    labels = np.asarray(labels)
    train, test = holdout_split(labels.tolist(), held_out, seed)
    _check_split(labels, test, held_out)
    if not transforms or not per_class:
        raise InvalidInputError("tuning needs at least one transform and one prototype count")
    truth = labels[test]
    best: tuple[float, VoteParams, int, TransformSpec] | None = None
    trials: list[dict[str, Any]] = []
    default_acc = None
    by_transform: dict[str, float] = {}
    proto_rules = [r for r in rules if r in PROTOTYPE_VOTES]

    def sweep(spec: TransformSpec, space: tuple[np.ndarray, np.ndarray], m: int, tried_rules: Sequence[str]) -> None:
        nonlocal best, default_acc
        train_x, test_x = space
        mem = ArrayMemory(train_x, labels[train], per_class=m, seed=seed,
                          factors=None if factors is None else factors[train])
        max_k = len(train)
        neighbours = mem.query(test_x, min(max(KS), max_k), prototypes=bool(proto_rules))
        for params in candidates(max_k, tried_rules, m):
            acc = accuracy(mem.predict(neighbours, params), truth)
            trials.append({**params.to_dict(), "prototypes_per_class": m, "transform": spec.name, "accuracy": acc})
            by_transform[spec.name] = max(by_transform.get(spec.name, 0.0), acc)
            if params == VoteParams() and m == 1 and spec == TransformSpec():
                default_acc = acc
            if best is None or acc > best[0] + 1e-12:
                best = (acc, params, m, spec)

    first = per_class[0] if proto_rules else 1
    best_space = None  # the winner's vectors: swept again per prototype count, not refitted
    advance = progress or no_progress
    for spec in transforms:
        space = _space(vectors, train, test, spec)
        if space is not None:
            sweep(spec, space, first, rules)
            if best is not None and best[3] is spec:
                best_space = space
        advance(1)
    if best is None or best_space is None:
        raise InvalidInputError("none of the transforms could be fitted on this memory: "
                                + ", ".join(spec.name for spec in transforms))
    for m in per_class[1:] if proto_rules else []:
        sweep(best[3], best_space, m, proto_rules)
        advance(1)
    return TuneResult(best[1], best[2], best[0], default_acc, len(test), trials, best[3], by_transform)

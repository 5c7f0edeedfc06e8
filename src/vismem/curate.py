"""Operations that study a memory's own data and write a setting back into it:
tune (vote defaults), prune (reliability of items), suspects, calibrate (abstention).

Each reads the memory's voting items as arrays, calls the pure functions in
`tune.py`, `prune.py` and `calibrate.py`, and stores the result in the memory's config.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from .calibrate import (DEFAULT_OOD_K, DEFAULT_TPR, MIN_ITEMS, Calibration, calibration_work, check_calibration,
                        fit_calibration)
from .decide import VoteParams
from .errors import (EmptyMemoryError, InvalidInputError, PartlyDoneError, brief_repr, committed_as, committed_since,
                     whole_number)
from .maintenance import Report, unshown
from .memory import Memory
from .prune import DEFAULT_COUNT, HARD_THRESHOLD, SOFT_C, SOFT_D, PruneSettings, self_query, suspect_order
from .transform import TransformSpec, fit_transform
from .tune import TRANSFORM_CANDIDATES, TuneResult, check_held_out, sweeps, tune

log = logging.getLogger("vismem")


@dataclass
class MemoryArrays:
    ids: np.ndarray
    vectors: np.ndarray
    labels: np.ndarray
    weights: np.ndarray
    searchable: np.ndarray  # bool: what a search may find (not hard-pruned, when pruned)


def memory_arrays(memory: Memory, *, voting_only: bool = False, searched: bool = True,
                  pruned: bool = True) -> MemoryArrays:
    """Every item (or only those that can vote) as arrays, ordered by id; `weights` are
    the items' own weights times their pruning factors, 0 for items hard pruning keeps
    from voting, which `searchable` marks as no search finds them (with `pruned` False,
    their own weights alone, and all searchable). `vectors` are as searched (through the
    memory's feature transform), or as stored with `searched` False."""
    ids, vectors, labels, weights, counts = memory.voting_arrays()
    if searched:
        vectors = memory.transform.apply(vectors)
    pruning = memory.pruning
    if voting_only:
        keep = pruning.votes(weights, counts)
        ids, vectors, labels, weights, counts = ids[keep], vectors[keep], labels[keep], weights[keep], counts[keep]
    labels = np.asarray(labels.tolist())
    weights = np.asarray(weights, dtype=np.float64)
    searchable = pruning.searchable(counts) if pruned else np.ones(len(ids), dtype=bool)
    if pruned:  # as a classification searches and weighs each vote
        weights = weights * pruning.factors(counts) * searchable
    if len(ids) == 0:
        raise _no_voters(memory)
    return MemoryArrays(ids, vectors, labels, weights, searchable)


def _no_voters(memory: Memory) -> EmptyMemoryError:
    held = len(memory)
    fix = (f"all {held} items are blocked or pruned: `vismem unblock` them, or `vismem prune {memory.path} "
           "--mode off`" if held else f"add {memory.what_to_add} first")
    return EmptyMemoryError(f"memory at {memory.path} has no items that vote: {fix}")


def _left_out_in_turn(memory: Memory, data: MemoryArrays) -> None:
    """Refuse a self-query with nothing to learn: with no item that votes, every decision
    is empty (suspects said every item agreed; prune scored 0%); with one, no item has
    another to be queried against."""
    voters = int((data.weights > 0).sum())
    if voters == 0:
        raise _no_voters(memory)
    if voters == 1:
        raise InvalidInputError(f"memory at {memory.path} has one item that votes: querying each item against "
                                "the others needs at least two")


def _kNN_params(memory: Memory, k: int | None) -> VoteParams:
    """The memory's default vote, as a neighbour rule (prototype rules vote by rank here)."""
    d = memory.defaults
    # (not `k or d.k`: k=0 must fail in VoteParams, not quietly become the default)
    return VoteParams(k=d.k if k is None else k, vote=d.neighbour_vote, alpha=d.alpha, tau=d.tau)


def tune_memory(memory: Memory, *, held_out: float = 0.2, seed: int = 0, save: bool = True,
                transforms: Sequence[TransformSpec] | None = None, report: Report = unshown) -> TuneResult:
    """Choose the feature transform, k, vote, alpha, tau (and prototypes per class) on a
    held-out split; store them as defaults. A new transform is fitted on every item and the
    index rebuilt through it, as is the one in force when items were added or removed since
    its fit. `report(description, total)` (maintenance.Report) shows the
    two stages: the transforms and prototype counts tried, then the fit and the rebuild.

    `transforms` are the candidates (default: `tune.TRANSFORM_CANDIDATES`; only `none` in a
    home that searches vectors as stored)."""
    check_held_out(held_out)
    if save:  # a memory that cannot keep the result refuses before minutes of tuning
        memory.check_writable()
    data = memory_arrays(memory, voting_only=True, searched=False)
    if transforms is None:
        transforms = TRANSFORM_CANDIDATES if memory.capabilities.feature_transforms else [TransformSpec()]
    held = round(held_out * len(data.labels))
    with report(f"tuning on ~{held:,} held-out items", sweeps(transforms)) as advance:
        result = tune(data.vectors, data.labels, held_out=held_out, seed=seed, factors=data.weights,
                      transforms=transforms, progress=advance)
    if save:  # one commit: a transform that cannot be fitted leaves the vote settings as they were
        changes: dict[str, Any] = {"vote": result.params, "prototypes_per_class": result.per_class}
        with committed_as(result):
            if result.transform == memory.settings.transform and _fitted_on_every_item(memory):
                memory.update_settings(**changes)
            else:  # fitted on every item (n), then each goes into the rebuilt index (n)
                with report("fitting the feature transform, rebuilding the index", 2 * len(memory)) as advance:
                    memory.update_settings(advance, **changes, transform=result.transform)
    return result


def _fitted_on_every_item(memory: Memory) -> bool:
    """Whether the transform in force was fitted on the items held now (none needs no fit):
    `info` says to run `vismem tune` to refit a memory that drifted from it, so tune
    choosing it again refits it when items were added or removed since."""
    if memory.settings.transform == TransformSpec():
        return True
    return (memory.info().get("transform") or {}).get("changed_since") == 0  # (None: not known)


@dataclass
class PruneReport:
    mode: str
    items: int
    wrong_decisions: int
    self_accuracy: float | None
    with_wrong_votes: int
    excluded: int
    purged: list[int] = field(default_factory=list)
    top: list[dict[str, Any]] = field(default_factory=list)
    count: str = DEFAULT_COUNT
    threshold: int = HARD_THRESHOLD
    emptied: list[str] = field(default_factory=list)  # labels hard pruning left no item that votes of

    __repr__ = brief_repr  # long lists shown by their ends and length

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def prune_memory(memory: Memory, mode: str, *, k: int | None = None, threshold: int | None = None,
                 c: float = SOFT_C, d: float = SOFT_D, purge: bool = False, allow_empty_classes: bool = False,
                 count: str = DEFAULT_COUNT, report: Report = unshown) -> PruneReport:
    """Count v by leave-one-out self-query and apply soft or hard pruning (or `off` to undo);
    `report(description, total)` (maintenance.Report) shows the self-query, opened only once
    the checks are passed and the items read (a memory that cannot be pruned refuses first).

    `count` picks what v counts (see `prune.wrong_vote_counts`). The hard threshold
    defaults to 2 wrong decisions, or to half of k disagreements (those are counted on
    every decision, so they run higher).

    Hard pruning that would leave no item to vote (blocked items vote for nothing) is
    refused. One that would exclude every item of a label that votes is done with a
    warning (undone by `off`), and named in `PruneReport.emptied`; with `purge`, which
    deletes them for good, one that would delete every item of a label is refused
    (InvalidInputError, nothing changed) unless `allow_empty_classes`."""
    memory.check_writable()  # every mode writes: refuse before the self-query, not after it
    if purge and mode != "hard":  # (before `off` too, which would have undone pruning and said nothing of it)
        raise InvalidInputError("--purge only applies to --mode hard")
    if allow_empty_classes and not purge:
        raise InvalidInputError("--allow-empty-classes only applies with --purge (without it, pruning deletes "
                                "nothing and an emptied label is only warned of)")
    if mode == "off":
        memory.update_settings(pruning=memory.pruning.replace(mode="off"))
        return PruneReport("off", len(memory), 0, None, 0, 0)
    params = _kNN_params(memory, k)
    if threshold is None:
        threshold = HARD_THRESHOLD if count == "wrong-decisions" else max(HARD_THRESHOLD, params.k // 2)
    state = PruneSettings(mode, count, c, d, threshold)  # bad mode, count, c, d, threshold fail here
    data = memory_arrays(memory, pruned=False)  # counted on the unpruned memory
    _left_out_in_turn(memory, data)
    with report("querying the memory against itself", len(data.ids)) as advance:
        query = self_query(data.vectors, data.labels, params, data.weights, count, advance)
    counts = {int(i): int(v) for i, v in zip(data.ids, query.v, strict=False) if v}
    excluded = sorted(i for i, v in counts.items() if v >= threshold) if mode == "hard" else []
    kept = ~np.isin(data.ids, excluded)
    voters = data.weights > 0  # a blocked item is kept, but votes for nothing
    if excluded and not (kept & voters).any():  # before any change: nothing would vote
        v = np.sort(query.v[voters])
        blocked = len(data.ids) - len(v)
        raise InvalidInputError(
            f"hard pruning at v >= {threshold} would exclude all {len(v)} items"
            + (f" that vote (the other {blocked} {'is' if blocked == 1 else 'are'} blocked)" if blocked else "")
            + f", leaving none to vote (v counts {count} here, from {v[0]} to {v[-1]}, median {v[len(v) // 2]}): "
            "give a higher "
            "--threshold" + (", or --count wrong-decisions" if count != "wrong-decisions" else ""))
    # labels no query could get: every item that voted for them excluded
    emptied = sorted(set(data.labels[voters].tolist()) - set(data.labels[kept & voters].tolist()))
    deleted = sorted(set(data.labels.tolist()) - set(data.labels[kept].tolist()))  # by --purge, every item
    if deleted and purge and not allow_empty_classes:  # before any change: a deletion is for good
        each = "that label" if len(deleted) == 1 else "those labels"
        raise InvalidInputError(
            f"hard pruning at v >= {threshold} with --purge would delete every item labelled "
            f"{' or '.join(map(repr, deleted))}, so no query could get {each} again; nothing was changed: give a "
            "higher --threshold, prune without --purge (undone by --mode off), or add --allow-empty-classes to "
            "delete them all the same")
    if emptied:
        log.warning("%s: hard pruning at v >= %d %s every item labelled %s: no query can get %s",
                    memory.location, threshold, "deletes" if purge else "excludes",
                    " or ".join(map(repr, emptied)), "that label" if len(emptied) == 1 else "those labels")
    order = np.argsort(-query.v, kind="stable")[:10]

    def pruned(purged: list[int]) -> PruneReport:
        return PruneReport(
            # a decision nothing voted in is no wrong decision, nor a right one (eval counts it so)
            mode=mode, items=len(data.ids),
            wrong_decisions=int(((query.predicted >= 0) & (query.predicted != query.label_index)).sum()),
            self_accuracy=float((query.predicted == query.label_index).mean()),
            with_wrong_votes=len(counts), excluded=len(excluded), purged=purged, count=count, threshold=threshold,
            emptied=emptied,
            top=[{"id": int(data.ids[r]), "label": str(data.labels[r]), "v": int(query.v[r]),
                  "factor": float(state.factors(np.array([query.v[r]]))[0])} for r in order if query.v[r] > 0],
        )
    targets = excluded if purge else []

    def made(removed: Any) -> PruneReport:
        """Ctrl-C after the commit: what the prune made, with the ids the store marked it
        with, or (unmarked, as a call returned) those of `targets` the store no longer holds."""
        if not isinstance(removed, list):  # (a mark of another kind says no ids)
            held = {item.id for item in memory.items_as_stored(targets)}
            removed = [i for i in targets if i not in held]
        return pruned(list(removed))

    try:
        with committed_since(memory, made):
            return pruned(memory.apply_pruning(counts, state, targets))  # one change: all of it or nothing
    except PartlyDoneError as exc:  # committed, but the purge of the items deleted was cut off
        exc.done = pruned(list(exc.done or ()))  # what the prune made, as it would have returned it
        raise


@dataclass
class Suspect:
    """An item whose neighbours mostly disagree with its label."""

    id: int
    label: str
    own_vote: float          # share of its neighbours' vote that agrees with its label
    suggested: str           # the label its neighbours vote for
    v: int                   # wrong decisions it took part in
    disagreeing: list[dict[str, Any]]   # evidence: neighbours with another label that voted

    def __repr__(self) -> str:  # a list of 20 suspects: not each one's k neighbours
        return brief_repr(self, counted=("disagreeing",))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def find_suspects(memory: Memory, *, limit: int = 20, k: int | None = None,
                  progress: Callable[[int], None] | None = None) -> list[Suspect]:
    """Items most likely mislabelled, worst first, each with the neighbours that disagree
    (`progress(n)` as n more items are queried)."""
    if not whole_number(limit) or limit < 1:  # 0 listed none, silently
        raise InvalidInputError(f"limit must be a whole number >= 1, got {limit!r}")
    data = memory_arrays(memory)
    _left_out_in_turn(memory, data)
    # v here keeps its first meaning (wrong decisions taken part in); it only orders ties
    query = self_query(data.vectors, data.labels, _kNN_params(memory, k), data.weights, count="wrong-decisions",
                       progress=progress, searchable=data.searchable)
    out: list[Suspect] = []
    for r in suspect_order(query):
        # an item whose neighbours all carry no weight (blocked) got no vote: its
        # "prediction" is the first label, no evidence against its own
        if query.predicted[r] == query.label_index[r] or not query.scores[r].any() or len(out) >= limit:
            continue
        evidence = [
            {"id": int(data.ids[j]), "label": str(data.labels[j]), "distance": float(1.0 - s)}
            for s, j in zip(query.sims[r], query.rows[r], strict=False)
            if j >= 0 and data.labels[j] != data.labels[r] and data.weights[j] > 0  # it voted
        ]
        out.append(Suspect(int(data.ids[r]), str(data.labels[r]), float(query.own_score[r]),
                           query.classes[int(query.predicted[r])], int(query.v[r]), evidence))
    return out


def calibrate_memory(memory: Memory, *, tpr: float = DEFAULT_TPR, k: int = DEFAULT_OOD_K,
                     prototype_weight: float | None = None, seed: int = 0, save: bool = True,
                     report: Report = unshown) -> Calibration:
    """Set the abstention threshold so `tpr` of in-distribution queries are answered, from the
    memory's items each scored against the rest (see `calibrate.fit_calibration`;
    `prototype_weight` None measures whether the prototype distance helps on this memory).
    `report(description, total)` (maintenance.Report) shows the scoring, once the items are read."""
    if save:  # a memory that cannot keep the threshold refuses before scoring every item
        memory.check_writable()
    fitted = not memory.transform.is_identity  # on the items: each is scored through a fit without it
    data = memory_arrays(memory, voting_only=True, searched=not fitted)
    if len(data.labels) < MIN_ITEMS and len(data.labels) < len(memory):  # "the memory has 5" of its 15
        raise InvalidInputError(f"calibration needs at least {MIN_ITEMS} items that vote; {len(data.labels)} of its "
                                f"{len(memory)} items vote (blocked and hard-pruned items do not): unblock some "
                                f"(`vismem unblock {memory.location} --id N`) or add more")
    check_calibration(len(data.labels), tpr=tpr, k=k, prototype_weight=prototype_weight)  # before the bar
    spec = memory.transform.spec
    with report("scoring each item against the others", calibration_work(data.labels, prototype_weight)) as advance:
        result = fit_calibration(data.vectors, data.labels, tpr=tpr, k=k, prototype_weight=prototype_weight,
                                 per_class=memory.settings.prototypes_per_class, seed=seed, ids=data.ids,
                                 transform=memory.transform.key, progress=advance,
                                 refit=(lambda rows: fit_transform(rows, spec).apply) if fitted else None)
    if save:
        with committed_as(result):
            memory.update_settings(abstention=result)
    return result

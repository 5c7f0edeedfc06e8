"""Commands that tune, prune, calibrate and steer a memory: tune, prune, suspects,
calibrate, block, boost, unblock. Each is a thin face over `vismem.curate` / `Memory`."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any, List, Optional

import typer

from ..calibrate import DEFAULT_OOD_K, DEFAULT_TPR
from ..decide import MAX_K
from ..prune import PruneSettings
from ..tune import MOST_HELD_OUT
from ..errors import InvalidInputError
from ..store.base import MAX_WEIGHT, missing_ids, printable
from . import (app, counted, emit, err, interrupted_leaves, one_transaction, only_reads, out, padded, progress_bar,
               reported_as_it_commits, reported_if_cut_off, reported_if_interrupted, widest)
from .commands import (JsonFlag, MemDir, _open, all_have, described_option, exit_if_missing, ids_option, updated,
                       refuse_if_none_done)
from .numbers import number_option

IdsOpt = ids_option()


def pruning_option(name: str, flag: str, **given: Any) -> Any:
    """A prune option from `PruneSettings` (default, help, range)."""
    return described_option(PruneSettings, name, flag, **given)


@app.command()
def tune(
    memdir: Path = MemDir,
    held_out: float = number_option(0.2, "--held-out", min=0.05, max=MOST_HELD_OUT,
                                    help="Fraction of each class held out."),
    seed: int = number_option(0, "--seed", kind=int, min=0, help="Seed of the held-out split."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Report the choice without storing it."),
    transform: str = typer.Option("auto", "--transform", help="Feature transforms to try: auto (none, center and "
                                  "the measured whitenings), or only none, center or whiten."),
    json_out: bool = JsonFlag,
) -> None:
    """Choose the feature transform, k, vote, alpha, tau, mix (and prototypes per class) on a
    held-out split of the memory's own items, and store them as the memory's defaults. A
    new transform is fitted on every item and the index rebuilt through it."""
    from ..curate import tune_memory
    from ..transform import TRANSFORMS
    from ..tune import TRANSFORM_CANDIDATES

    if transform not in ("auto", *TRANSFORMS):
        raise InvalidInputError(f"unknown --transform {transform!r}; choose auto, {', '.join(TRANSFORMS)}")
    candidates = None if transform == "auto" else [t for t in TRANSFORM_CANDIDATES if t.kind == transform]
    if dry_run:
        only_reads("tune --dry-run")
    else:
        interrupted_leaves("the memory's settings are as they were, unless `vismem tune` had saved its choice, in one "
                           "commit at its end (an index it was rebuilding then is rebuilt at the next open)")
    saved = "the memory's new settings are saved (an index it was rebuilding is rebuilt at the next open)"
    with _open(memdir) as memory, \
            reported_as_it_commits(json_out and not dry_run, {}, memory, leaves=saved) as said:
        result = tune_memory(memory, held_out=held_out, seed=seed, save=not dry_run, transforms=candidates,
                             report=partial(progress_bar, transient=True))
        said.update(result.to_dict(), committed=True)
    if json_out:
        emit(result.to_dict())
        return
    p = result.params
    default = ("defaults not tried" if result.default_accuracy is None
               else f"defaults: {result.default_accuracy:.2%}")
    out.print(f"best: transform={result.transform.name} k={p.k} vote={p.vote} alpha={p.alpha} tau={p.tau} "
              f"mix={p.mix} prototypes/class={result.per_class}: {result.accuracy:.2%} on {result.held_out} held-out "
              f"items ({default}; {len(result.trials)} settings tried)")
    out.print("by transform: " + ", ".join(f"{name} {acc:.2%}" for name, acc in result.by_transform.items()))
    out.print("not stored (--dry-run)" if dry_run else "stored as the memory's defaults")


@app.command()
def prune(
    memdir: Path = MemDir,
    mode: str = pruning_option("mode", "--mode", default=...),
    k: Optional[int] = number_option(None, "--k", "-k", kind=int, min=1, max=MAX_K,
                                     help="Neighbours in the self-query [memory default]."),
    threshold: Optional[int] = pruning_option("threshold", "--threshold", default=None),
    c: float = pruning_option("c", "--c"),
    d: float = pruning_option("d", "--d"),
    purge: bool = typer.Option(False, "--purge", help="With --mode hard: delete the dropped items for good."),
    allow_empty_classes: bool = typer.Option(False, "--allow-empty-classes",
                                             help="With --purge: delete even every item of a label."),
    count: str = pruning_option("count", "--count"),
    json_out: bool = JsonFlag,
) -> None:
    """Query the memory against itself (each item left out of its own query), count for
    each item v = votes it cast against the query's label (--count), and prune by v. Reversible with --mode off,
    except --mode hard --purge, which deletes: it refuses (exit 1, nothing changed) to delete every item of a
    label unless --allow-empty-classes."""
    from ..curate import prune_memory

    # (its counts, the removals of --purge and the setting are one commit, at its end)
    interrupted_leaves("the memory's pruning is as it was, unless `vismem prune` had saved it whole, in one commit "
                       "at its end" + (" (with the items --purge deletes)" if purge else "")
                       + ": `vismem info` shows which")
    # its report, said with --json if the command is interrupted or the purge of the items
    # --purge deletes is cut off: `committed` false until its one commit is made
    done: dict[str, Any] = {"mode": mode, "purged": [], "committed": False}
    with reported_if_cut_off(json_out, done), _open(memdir) as memory:
        # (the bar opens once prune_memory has made its checks: a memory it refuses draws none)
        report = prune_memory(memory, mode, k=k, threshold=threshold, c=c, d=d, purge=purge, count=count,
                              allow_empty_classes=allow_empty_classes, report=progress_bar)
        try:  # (prune_memory marks a Ctrl-C after its commit with this report: here it is made too)
            done.update(report.to_dict(), committed=True)
        except KeyboardInterrupt:
            done.update(report.to_dict(), committed=True)
            raise
        asked = memory.defaults.k if k is None else k
    if mode != "off":
        # an item is a neighbour in at most items - 1 queries, so its v can reach no more
        never = mode == "hard" and report.threshold >= report.items
        unreachable = (f"; the hard threshold v >= {report.threshold} cannot be reached, so no item is excluded "
                       "(give a smaller -k or --threshold)") if never else ""
        _warn_if_k_exceeds_items(asked, report.items, unreachable)
    if json_out:
        emit({**report.to_dict(), "unfinished": None})  # as remove and rollback; reported_if_cut_off says one
        return
    if mode == "off":
        out.print("pruning off: every item votes with its own weight again")
        return
    out.print(f"{mode} pruning on {counted(report.items, 'item')}: leave-one-out accuracy "
              f"{report.self_accuracy:.2%}, {counted(report.wrong_decisions, 'wrong decision')}, "
              f"{counted(report.with_wrong_votes, 'item')} with v > 0")
    if mode == "hard":
        verb = "deleted" if purge else "excluded (undo with --mode off)"
        dropped = len(report.purged) if purge else report.excluded
        out.print(f"{counted(dropped, 'item')} with v >= {report.threshold} {verb}")
    width = widest((printable(str(row["label"])) for row in report.top), 10)
    for row in report.top:
        effect = (f"factor {row['factor']:.3g}" if mode == "soft"
                  else "dropped" if row["v"] >= report.threshold else "kept")
        out.print(f"  item {row['id']:>6} label {padded(printable(str(row['label'])), width, right=True)}  "
                  f"v={row['v']}  {effect}")


def _warn_if_k_exceeds_items(k: int, items: int, more: str = "") -> None:
    """Say on stderr when a self-query's k is more than the memory can give: each item is
    queried against the others alone (`prune -k 1000` on 20 items voted 19-NN and its
    default hard threshold 500 excluded nothing, without a word). `more` ends the sentence."""
    if k >= items:
        err.print(f"warning: k={k}, but at most {counted(items - 1, 'neighbour')} voted on an item: the memory holds "
                  f"{counted(items, 'item')}, each queried against the others{more}")


@app.command()
def suspects(
    memdir: Path = MemDir,
    limit: int = number_option(20, "--limit", "-n", kind=int, min=1, help="How many to list."),
    k: Optional[int] = number_option(None, "--k", "-k", kind=int, min=1, max=MAX_K,
                                     help="Neighbours consulted [memory default]."),
    json_out: bool = JsonFlag,
) -> None:
    """List the items most likely mislabelled: those whose neighbours vote for another
    label, worst first, each with the disagreeing neighbours as evidence."""
    from ..curate import find_suspects

    only_reads("suspects")
    with _open(memdir) as memory, progress_bar("querying the memory against itself", len(memory)) as advance:
        found = find_suspects(memory, limit=limit, k=k, progress=advance)
        asked, items = memory.defaults.k if k is None else k, len(memory)
    _warn_if_k_exceeds_items(asked, items)
    if json_out:
        for s in found:
            emit(s.to_dict())
        return
    if not found:
        out.print("no suspects: every item agrees with its neighbours' vote")
    for s in found:
        evidence = ", ".join(f"#{e['id']} {printable(e['label'])} d={e['distance']:.3f}" for e in s.disagreeing[:5])
        out.print(f"item {s.id} labelled {s.label!r}: neighbours say {s.suggested!r} "
                  f"(own label {s.own_vote:.0%} of the vote, v={s.v}); evidence {evidence}")


@app.command()
def calibrate(
    memdir: Path = MemDir,
    tpr: float = number_option(DEFAULT_TPR, "--tpr", min=0.5, max=1.0,
                              help="Share of in-distribution queries to answer."),
    k: int = number_option(DEFAULT_OOD_K, "--k", "-k", kind=int, min=1,
                           help="Score with the distance to this neighbour (below the memory's item count)."),
    prototype_weight: Optional[float] = number_option(
        None, "--prototype-weight", min=0.0, metavar="W",
        help="Weight of the prototype distance in the score (0 = neighbours only) "
        "[default: 0 unless a mix measurably separates held-out classes better on this memory].", show_default=False),
    json_out: bool = JsonFlag,
) -> None:
    """Calibrate abstention: set the out-of-distribution threshold so that --tpr of
    in-distribution queries are answered (each item scored against all the others). Then
    `classify --abstain` uses it."""
    from ..curate import calibrate_memory

    interrupted_leaves("the memory's abstention threshold is as it was, unless `vismem calibrate` had saved the new "
                       "one, in one commit at its end")
    with _open(memdir) as memory, \
            reported_as_it_commits(json_out, {}, memory,
                                   leaves="the memory's new abstention threshold is saved") as said:
        result = calibrate_memory(memory, tpr=tpr, k=k, prototype_weight=prototype_weight, report=progress_bar)
        said.update(result.to_dict(), committed=True)
    if json_out:
        emit(result.to_dict())
    else:
        out.print(f"threshold {result.threshold:.4f} (distance to neighbour {result.k} + {result.prototype_weight:g} "
                  f"x to nearest prototype) answers {result.achieved_tpr:.1%} of the "
                  f"{counted(result.held_out, 'item')}, each left out in turn (target {tpr:.0%})")
        if result.auroc:
            out.print("prototype weight chosen by AUROC with held-out classes as unknown: " + ", ".join(
                f"w={w} {a:.3f}" for w, a in result.auroc.items()))


def _set_weight(memdir: Path, ids: List[int], weight: float, verb: str, json_out: bool,
                said: str | None = None) -> None:
    """Set items' vote weight; `verb` is the --json key, `said` the word for people (`verb`)."""
    interrupted_leaves("nothing: no item's weight was changed (it changes for all of them in one transaction)")
    reported_if_interrupted(json_out, {verb: 0, "ids": [], "weight": weight})
    with _open(memdir) as memory, \
            one_transaction(lambda: all_have(memory, ids, weight=weight), f"the items' weight is {weight:g} now",
                            partial(updated, memory, ids, verb)):
        changed = memory.set_weight(ids, weight)
    refuse_if_none_done(ids, changed)
    missing = missing_ids(ids, changed)
    if json_out:
        # `updated` as PATCH /items answers it; the verb's own count is the same number
        emit({verb: len(changed), "updated": len(changed), "ids": changed, "weight": weight, "missing": missing})
    else:
        out.print(f"{said or verb} {counted(len(changed), 'item')} (weight {weight:g})")
    exit_if_missing(missing)


@app.command()
def block(memdir: Path = MemDir, ids: List[int] = IdsOpt, json_out: bool = JsonFlag) -> None:
    """Stop items from voting (weight 0) without deleting them; undo with `unblock`."""
    _set_weight(memdir, ids, 0.0, "blocked", json_out)


@app.command()
def boost(
    memdir: Path = MemDir,
    ids: List[int] = IdsOpt,
    factor: float = number_option(2.0, "--factor", above=0.0, max=MAX_WEIGHT,
                                  help="The items' vote weight (1 = normal; below 1 counts less; "
                                       "to stop them voting, `vismem block`)."),
    json_out: bool = JsonFlag,
) -> None:
    """Make items' votes count more (weight = --factor)."""
    _set_weight(memdir, ids, factor, "boosted", json_out,
                said="boosted" if factor > 1 else "weighted normally" if factor == 1 else "weakened")


@app.command()
def unblock(memdir: Path = MemDir, ids: List[int] = IdsOpt, json_out: bool = JsonFlag) -> None:
    """Give items their normal vote weight (1) again."""
    _set_weight(memdir, ids, 1.0, "reset", json_out)

"""Checkpoints of a memory and rollbacks: checkpoint, checkpoints, rollback,
delete-checkpoint. Thin faces over `Memory.checkpoint` and its kin."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import typer

from ..errors import CheckpointExistsError, InvalidInputError
from ..store.checkpoints import NAME_RULE, Checkpoint, check_name
from . import (app, counted, emit, interrupted_leaves, one_transaction, out, progress_bar, reported_if_cut_off,
               reported_if_interrupted)
from .commands import JsonFlag, MemDir, _open

if TYPE_CHECKING:
    from ..memory import Memory


def _checked_name(name: str) -> str:
    """A name no checkpoint can have is bad usage (exit 2), refused before the memory opens."""
    try:
        return check_name(name)
    except InvalidInputError as exc:
        raise typer.BadParameter(str(exc)) from None


NameArg = typer.Argument(..., help=f"The checkpoint's name: {NAME_RULE}.", show_default=False,
                         callback=_checked_name)


def _when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M:%S")


@app.command()
def checkpoint(
    memdir: Path = MemDir,
    name: str = NameArg,
    replace: bool = typer.Option(False, "--replace", help="Replace the checkpoint of that name, if there is one."),
    json_out: bool = JsonFlag,
) -> None:
    """Record a named checkpoint of the memory to roll back to: every item's label, vote
    weight, pruning count and relabel history, and the settings (directory memories only).

    Items removed later leave every checkpoint with them: a rollback never brings one back."""
    interrupted_leaves(f"nothing: no checkpoint was made (`vismem checkpoint` makes {name!r} in one transaction)")
    started = time.time()
    said = reported_if_interrupted(json_out, {"name": name, "committed": False})

    def made_now(memory: Memory) -> Checkpoint | None:
        return next((c for c in memory.checkpoints() if c.name == name and c.made_at >= started), None)

    with _open(memdir) as memory, one_transaction(lambda: made_now(memory) is not None,
                                                  f"checkpoint {name!r} is made",
                                                  lambda: {**cast(Checkpoint, made_now(memory)).to_dict(),
                                                           "committed": True}):
        try:
            made = memory.checkpoint(name, replace=replace)
        except CheckpointExistsError as exc:
            raise CheckpointExistsError(f"{exc} (--replace)") from None
        said.update(made.to_dict(), committed=True)
    if json_out:
        emit(made.to_dict())
    else:
        out.print(f"checkpoint {made.name!r} made: {counted(made.items, 'item')}, ids up to {made.last_id}")


@app.command("checkpoints")
def list_checkpoints(memdir: Path = MemDir, json_out: bool = JsonFlag) -> None:
    """List the memory's checkpoints, oldest first (with --json, one line each)."""
    interrupted_leaves("no item was added, removed or changed: `vismem checkpoints` only reads the memory")
    with _open(memdir) as memory:
        found = memory.checkpoints()
    if json_out:
        for each in found:
            emit(each.to_dict())
        return
    if not found:
        out.print(f"no checkpoints (make one with `vismem checkpoint {memdir} NAME`)")
    for each in found:
        gone = each.items - each.kept
        out.print(f"{each.name}  {_when(each.made_at)}  {counted(each.items, 'item')}, ids up to {each.last_id}"
                  + (f"; {gone:,} of them removed since" if gone else ""))


@app.command()
def rollback(memdir: Path = MemDir, name: str = NameArg, json_out: bool = JsonFlag) -> None:
    """Roll the memory back to a checkpoint, in one transaction: items added since are
    removed (and purged), the checkpoint's items get back their labels, weights, pruning
    counts and relabel history, and its settings return (an index setting rebuilds the
    index; whether queries are recorded stays as it is). Items removed since stay
    removed: a removal is final. The checkpoint stays."""
    interrupted_leaves("nothing: the memory is as it was (`vismem rollback` makes its change in one transaction)")
    # its report, said with --json if the command is interrupted or the purge after it is cut off
    done: dict[str, Any] = {"checkpoint": name, "removed_added": 0, "removed_ids": [], "restored": 0,
                            "restored_ids": [], "settings_restored": False}
    with reported_if_cut_off(json_out, done), _open(memdir) as memory:
        purge_left = (f"the memory is rolled back to {name!r}; if this cut the purge of the items removed short, "
                      f"copies of their bytes may stay in {memdir}'s files until `vismem compact {memdir}`")
        # The store marks a Ctrl-C after its commit with its report; one as its call returns,
        # unmarked, still says the items it removed: every one added since the checkpoint
        last_id = next((c.last_id for c in memory.checkpoints() if c.name == name), None) if json_out else None
        added = memory.ids(after=last_id) if last_id is not None else []
        # (transient: the bar moves only where a restored index setting rebuilds the index)
        with one_transaction(lambda: memory.at_checkpoint(name), purge_left,
                             lambda: {"removed_added": len(added), "removed_ids": added, "items": len(memory)}), \
                progress_bar("rebuilding the index", len(memory), transient=True) as advance:
            report = memory.rollback(name, progress=advance)
        done.update(report.to_dict())
    if json_out:
        emit({**report.to_dict(), "unfinished": None})  # as the service answers; reported_if_cut_off says one
        return
    out.print(f"rolled back to {name!r}: removed {counted(report.removed_added, 'item')} added since, restored "
              f"{counted(report.restored, 'item')}" + (", and the settings" if report.settings_restored else "")
              + f"; memory now holds {report.items:,}")
    if report.gone_since:
        out.print(f"{counted(report.gone_since, 'item')} of the checkpoint were removed since and stay removed "
                  "(a removal is final)")
    if report.transform_dropped:
        out.print(f"its {report.transform_dropped} feature transform could not be fitted on the "
                  f"{counted(report.items, 'item')} left (it needs items that vary): dropped, so {memdir} searches its "
                  "vectors as stored; fit one again once there are items (`vismem tune`)")
    if report.calibration_stale:
        out.print("its abstention threshold was measured through another feature transform than the one it has "
                  f"now, so `classify --abstain` refuses it: run `vismem calibrate {memdir}`")


@app.command("delete-checkpoint")
def delete_checkpoint(memdir: Path = MemDir, name: str = NameArg, json_out: bool = JsonFlag) -> None:
    """Delete a checkpoint (no item changes)."""
    interrupted_leaves(f"nothing: checkpoint {name!r} is kept, or deleted whole (one transaction)")
    said = reported_if_interrupted(json_out, {"deleted": None})  # (its name once it is deleted)
    with _open(memdir) as memory, one_transaction(lambda: not any(c.name == name for c in memory.checkpoints()),
                                                  f"checkpoint {name!r} is deleted", lambda: {"deleted": name}):
        memory.delete_checkpoint(name)
        said["deleted"] = name
    if json_out:
        emit({"deleted": name})
    else:
        out.print(f"checkpoint {name!r} deleted")

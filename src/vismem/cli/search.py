"""Search commands: nearest items to images; switching, compacting and tuning the index."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ..decide import VoteParams
from ..errors import InvalidInputError
from ..images import HELD_BY_THE_MEMORY, Skipped
from ..search.choice import AUTO_APPROX_MIN
from ..search.tuning import EXACT, MIN_QUERIES
from ..settings import MemorySettings, describe
from ..store.base import parse_where, printable
from . import (EXIT_SKIPPED, app, counted, emit, err, interrupted_leaves, only_reads, out, padded, progress_bar,
               reported_as_it_commits, widest)
from .commands import (JsonFlag, MemDir, OnlyLabelOpt, OnlySourceOpt, QueriesOpt, WhereOpt, _open, described_option,
                       given_path, in_input_order, load_queries, read_queries, say_unreadable,
                       warn_if_nothing_matches)
from .numbers import number_argument, number_option

K = describe(VoteParams, "k")  # search's k has the vote's default and limits (as POST /search)


@app.command()
def search(
    memdir: Path = MemDir,
    images: Optional[List[Path]] = typer.Argument(None, readable=False, parser=given_path, show_default=False,
                                                  help="Image files to search with."),
    queries: Optional[Path] = QueriesOpt,
    k: int = number_option(K["default"], "--k", "-k", kind=int, min=K["min"], max=K["max"],
                           help="How many nearest items."),
    only_labels: Optional[List[str]] = OnlyLabelOpt,
    only_sources: Optional[List[str]] = OnlySourceOpt,
    where: Optional[List[str]] = WhereOpt,
    json_out: bool = JsonFlag,
) -> None:
    """The k items nearest to each image, nearest first, with no vote.

    With --only-label, --only-source and --where the result still holds k items
    whenever k items match. With --json, one object per image: path and neighbors
    (id, label, source, distance). An unreadable image gives {"path": ..., "error": ...}
    and exit code 3 (1 when no image could be read: an error, each one's reason on stderr).
    With --queries Q.npy, one object per row, in order, with path Q.npy[row].
    """
    only_reads("search")
    conditions = parse_where(where)
    with _open(memdir) as memory:
        if len(memory) == 0:  # answered all the same, as the service does; classify refuses
            err.print(f"warning: memory at {memory.location} is empty: every answer is empty (add "
                      f"{memory.what_to_add} first)")
        else:
            warn_if_nothing_matches(memory, only_labels or None, only_sources or None, conditions)
        asked = read_queries(memory, images, queries, "search with")
        rows = asked.answered(lambda vectors, _: memory.search(
            vectors, k, labels=only_labels or None, sources=only_sources or None, where=conditions), "searching")
    found = list(zip(asked.names, rows, strict=True))
    skipped = asked.skipped
    width = widest((printable(hit.label) for _, row in found for hit in row), 20)
    for item in in_input_order(asked.inputs, asked.kept, found, skipped):
        if isinstance(item, Skipped):
            say_unreadable(item, json_out, "search with")
            continue
        path, row = item
        if json_out:
            emit({"path": str(path), "neighbors": [hit.to_dict() for hit in row]})
            continue
        out.print(printable(path))
        for hit in row:
            out.print(f"  {hit.id:>8}  {padded(printable(hit.label), width)} {hit.distance:.4f}  "
                      f"{printable(hit.source)}")
    if skipped:
        raise typer.Exit(EXIT_SKIPPED)


@app.command()
def reindex(
    memdir: Path = MemDir,
    index: str = described_option(MemorySettings, "index", "--index", default=...),
    target_recall: Optional[float] = number_option(None, "--target-recall", min=0.01, max=1.0,
                                                  help="Recall@10 to tune for [default: keep]."),
    float16: Optional[bool] = typer.Option(None, "--float16/--float32",
                                           help="HNSW vector storage: --float16 for --index hnsw, or auto once it "
                                           "picks HNSW; refused with exact or ivfpq [default: keep]."),
    json_out: bool = JsonFlag,
) -> None:
    """Switch MEMDIR's search index: rebuild it from the store, tune it and measure recall."""
    misplaced = float16 and MemorySettings(index=index, float16=True).float16_misplaced()
    if misplaced:
        raise typer.BadParameter(misplaced, param_hint="'--float16'")
    # (the setting commits first, then the rebuild takes nearly all the time: the common case first)
    interrupted_leaves("the new index setting is saved, and the index cut short is built when the memory is next "
                       "opened; if it was stopped before that setting's one commit, at the start, the setting is "
                       "as it was")
    with _open(memdir) as memory, progress_bar("rebuilding the index", len(memory), transient=True) as advance, \
            reported_as_it_commits(json_out, {"setting": index}, memory, carried=False) as said:
        # (transient: a setting that changes nothing rebuilds nothing, and the bar would stay at 0)
        described = memory.set_index(index, target_recall=target_recall, float16=float16, progress=advance)
        said.update(described, committed=True)
    if json_out:
        emit(described)
        return
    quality = described["quality"] or {}
    out.print(f"index is now {described['type']} (setting {index}): {counted(described['size'], 'vector')}, "
              f"recall@10 {quality.get('recall', 1.0):.3f}, params {described['params']}")


_COMPACTED = "no item was added, removed or changed: the memory is compacted"
# (a server home's compaction, once asked for, goes on without the client)
_COMPACTING_ON_THE_SERVER = ("no item was added, removed or changed: the server was asked to compact and goes on "
                             "without this process (`vismem compact` again waits for it)")


@app.command()
def compact(memdir: Path = MemDir, json_out: bool = JsonFlag) -> None:
    """Reclaim removed items' slots in the index and the store, and re-measure recall.

    Afterwards no file in MEMDIR holds a removed item's vector. Also done automatically
    when more than 20% of an approximate index's slots are removed items.
    """
    interrupted_leaves("no item was added, removed or changed (`vismem compact` rewrites the memory's files, and "
                       "refits a transform fitted on removed items): run it again to finish")
    with _open(memdir) as memory, progress_bar("compacting the index", len(memory), transient=True) as advance, \
            reported_as_it_commits(json_out, {}, memory, leaves=_COMPACTED if memory.capabilities.local_files
                                   else _COMPACTING_ON_THE_SERVER) as said:
        report = memory.compact(progress=advance)
        said.update(report, committed=True)
    if json_out:
        emit(report)
    elif "note" in report:  # a server home compacts on its side
        out.print(f"Milvus compaction {report['compaction']}; {counted(report['size'], 'item')}. {report['note']}")
    else:
        out.print(f"compacted: reclaimed {counted(report['reclaimed'], 'slot')}; index {report['type']} "
                  f"holds {counted(report['size'], 'vector')}, {counted(report['bytes'], 'byte')}")


@app.command("tune-index")
def tune_index(
    memdir: Path = MemDir,
    images: Optional[List[Path]] = typer.Argument(None, readable=False, parser=given_path, show_default=False,
                                                  help="Query images the memory has not seen."),
    queries: Optional[Path] = typer.Option(None, "--queries", help="Query vectors the memory has not seen: "
                                           "a .npy file of float (n, dim)."),
    json_out: bool = JsonFlag,
) -> None:
    """Tune MEMDIR's search effort on your own queries until their recall@10 reaches the
    target recall (exact search when no effort does), and record that figure for `info`.

    Give query images, --queries Q.npy, or neither: then the queries kept with
    `vismem record-queries`. They must not be items of the memory: each would find
    itself. A query image or vector the memory holds (the same content) is left out, with
    a warning saying how many (--json: held_left_out). An unreadable image gives exit
    code 3, the rest are used.
    """
    if images and queries is not None:  # bad usage: exit 2 before the memory opens, as classify's
        raise typer.BadParameter("give query images or --queries Q.npy, not both", param_hint="IMAGES / --queries")
    interrupted_leaves("no item was added, removed or changed: `vismem tune-index` sets only the search effort, in "
                       "one commit at its end")
    with _open(memdir) as memory:
        vectors, skipped = _query_vectors(memory, images or [], queries)
        held = [s for s in skipped if s.reason.startswith(HELD_BY_THE_MEMORY)]
        skipped = [s for s in skipped if s not in held]
        if held:  # each would find itself: recall 1.0 whatever the effort
            err.print(f"warning: left out {len(held)} of the query images: the memory already holds them "
                      f"(each would find itself); tuning on the other {len(vectors)}")
        with reported_as_it_commits(json_out, {}, memory,
                                    leaves="no item was added, removed or changed: the search effort is tuned and "
                                           "saved") as said:
            described = memory.tune_index(vectors)
            said.update(described, committed=True)
        if described["held_left_out"]:  # query vectors, given or recorded, that are items
            given = "query vectors" if queries is not None else "recorded queries"
            err.print(f"warning: left out {described['held_left_out']} of the {given}: the memory already holds "
                      "them (each would find itself); tuning on the rest")
        described["held_left_out"] += len(held)
    quality = described["quality"] or {}
    exact = quality.get("measured_on") == EXACT
    if quality and not exact and quality["sample"] < MIN_QUERIES:
        err.print(f"warning: tuned on only {counted(quality['sample'], 'query')}: the recall's 95% interval is "
                  f"{quality['low']:.3f}-{quality['high']:.3f}; give at least {MIN_QUERIES} for a firm figure")
    if json_out:
        emit(described)
    elif exact:  # nothing was measured or changed: say why, not "recall 1.000 on 0 queries"
        out.print("index exact: exact search finds the true neighbours (recall 1.0): nothing to tune"
                  + (f" (`auto` picks HNSW from {AUTO_APPROX_MIN:,} items)" if described.get("setting") == "auto"
                     else ""))
    else:
        out.print(f"index {described['type']}: params {described['params']}")
        if quality:
            out.print(f"recall      {quality['recall']:.3f} @{quality['k']} (target {quality['target']}) on "
                      f"{quality['measured_on']}, {counted(quality['sample'], 'query')}, 95% interval "
                      f"{quality['low']:.3f}-{quality['high']:.3f}")
    for s in skipped:
        say_unreadable(s, json_out, "tune with")
    if skipped:
        raise typer.Exit(EXIT_SKIPPED)


def _query_vectors(memory, images: List[Path], queries: Optional[Path]):
    """(query vectors, or None for the recorded ones; images that could not be read)."""
    if queries is not None:
        return load_queries(queries, memory.dim), []
    if images:
        vectors, _, skipped = memory.embed_images(images, leave_out_held=True)
        if len(vectors) == 0:
            held = sum(s.reason.startswith(HELD_BY_THE_MEMORY) for s in skipped)
            if held == len(images):
                raise InvalidInputError(f"the memory already holds every query image given ({held}), and each "
                                        "would find itself: tune on images the memory has not seen")
            for s in skipped:  # the error alone would not say why
                if not s.reason.startswith(HELD_BY_THE_MEMORY):
                    say_unreadable(s, False, "tune with")
            raise InvalidInputError(f"none of the {len(images)} query images could be read" + (
                f" or used: the memory already holds {held} of them" if held else ""))
        return vectors, skipped
    return None, []


@app.command("record-queries")
def record_queries(
    memdir: Path = MemDir,
    keep: Optional[int] = number_argument(None, min=0, max=100_000, show_default=False,
                                          help="Keep up to this many real queries; 0: stop, and delete those "
                                               "kept [default: show]."),
    clear: bool = typer.Option(False, "--clear", help="Delete the kept queries now (recording goes on)."),
    json_out: bool = JsonFlag,
) -> None:
    """Keep a uniform sample of MEMDIR's real classify and search queries, to tune the
    search index on (`vismem tune-index MEMDIR`). Off unless you turn it on: queries are
    your users' data. Deleted queries, like removed items, leave no bytes in any file.
    """
    interrupted_leaves("no item was added, removed or changed: `vismem record-queries` changes only which queries "
                       "are kept")
    with _open(memdir) as memory, reported_as_it_commits(json_out, {}, memory) as said:
        state = memory.record_queries(keep, clear=clear)
        said.update(state, committed=True)
    if json_out:
        emit(state)
    elif state["keep"]:
        out.print(f"recording queries: {state['kept']} kept, up to {state['keep']}")
    else:
        out.print(f"not recording queries ({state['kept']} kept)")

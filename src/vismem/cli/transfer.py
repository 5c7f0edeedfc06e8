"""Moving a memory between homes: `vismem export` and `vismem import` (Apache Parquet)."""

from __future__ import annotations

from pathlib import Path

import click
import typer

from ..errors import OutputExistsError
from . import app, counted, emit, err, interrupted_leaves, out, progress_bar, reported_if_interrupted
from .commands import JsonFlag, MemDir, _open, given_path


def _export_file(text: str) -> Path:
    """TARGET: a file; `-` is not stdout (a file named "-" was written), nor is an empty path "."."""
    if text == "-":
        raise typer.BadParameter("export writes a file, not stdout (a Parquet file is written whole, then "
                                 "renamed into place): name a file, e.g. memory.parquet (./- for a file named -)")
    return given_path(text)


def _import_file(text: str) -> Path:
    """SOURCE: a file; `-` is not stdin (a Parquet file's index lies at its end)."""
    if text == "-":
        raise typer.BadParameter("import reads a file, not stdin (a Parquet file's index lies at its end): "
                                 "save the export to a file first (./- for a file named -)")
    try:  # an unreadable file is bad usage, as for any input file argument
        return click.Path(readable=True, path_type=Path).convert(given_path(text), None, None)
    except click.BadParameter as exc:
        raise typer.BadParameter(exc.message) from None


@app.command("export")
def export(
    memdir: Path = MemDir,
    target: Path = typer.Argument(..., help="Parquet file to write.", parser=_export_file, show_default=False),
    thumbnails: bool = typer.Option(False, "--thumbnails", help="Also write each item's thumbnail JPEG (without "
                                    "them, the imported memory's explanation sheets and web page show no pictures)."),
    replace: bool = typer.Option(False, "--replace", help="Replace TARGET if it exists (without it, an existing "
                                 "file is refused and left as it is)."),
    json_out: bool = JsonFlag,
) -> None:
    """Write a memory to an Apache Parquet file: vectors, labels, sources, weights,
    metadata, content hashes, relabel and pruning history, encoder and settings.

    Streams a batch at a time, so a memory larger than RAM can move; the file appears
    only when complete. A TARGET that exists (an earlier export) is refused unless
    --replace. `vismem import` reads it into any home.

    Checkpoints are not exported (an import gives the items new ids, and a Milvus home
    keeps none): the copy starts with none, and the original keeps its own.
    """
    interrupted_leaves(f"nothing: {target} was not written")
    with _open(memdir) as memory:
        with progress_bar("exporting", len(memory)) as advance:
            try:
                count = memory.export_parquet(target, thumbnails=thumbnails, progress=advance,
                                              replace=replace)
            except OutputExistsError:
                raise OutputExistsError(f"{target} exists already: name another file, or replace it "
                                            "(--replace)") from None
        interrupted_leaves(f"{target} is written, whole")
        location = memory.location
        left_out = [c.name for c in memory.checkpoints()]
    if json_out:
        emit({"exported": count, "from": location, "file": str(target), "thumbnails": thumbnails,
              "checkpoints_left_out": left_out})
    else:
        out.print(f"exported {counted(count, 'item')} of {location} to {target}")
    if left_out:
        err.print(f"note: its checkpoints ({', '.join(left_out)}) are not exported: a memory imported from "
                  f"{target} has none; roll back here first (`vismem rollback {memdir} NAME`) to move a "
                  "checkpoint's state")


@app.command("import")
def import_(
    source: Path = typer.Argument(..., help="Parquet file written by `vismem export`.", parser=_import_file,
                                  show_default=False),
    dest: Path = typer.Argument(..., help="New memory: a directory, or milvus://HOST:PORT/COLLECTION.",
                                parser=given_path, show_default=False),
    json_out: bool = JsonFlag,
) -> None:
    """Create a memory at DEST from an export: the same items (with new ids), vectors,
    history, settings and encoder (no checkpoints: an export leaves them out).

    With the exact index it finds the same neighbours in the same order, so it makes the
    same decisions. An approximate index (hnsw, ivfpq) is rebuilt from the vectors and
    tuned again to the same target recall: a query's neighbours may differ within that
    recall, and so may a decision resting on them (`vismem reindex DEST --index exact`
    for identical ones).

    Streams the file a batch at a time. DEST (a directory or Milvus collections) appears
    only once the import is complete: an interrupted import leaves nothing there.
    """
    from ..memory import Memory
    from ..store import holds_memory
    from ..transfer import read_header

    _, total = read_header(source)
    made = f"the memory at {dest} is made, whole"
    interrupted_leaves(f"nothing: no memory was made at {dest}")
    # with --json, Ctrl-C prints this, `imported` once the memory is there, whole
    said = reported_if_interrupted(json_out, {"imported": 0, "file": str(source), "to": str(dest)})
    full: list[bool] = []

    def filled() -> None:  # then moved into place and opened: stopped there, DEST says which
        full.append(True)
        interrupted_leaves(f"the memory was full and being moved into place at {dest}: `vismem info {dest}` "
                           "shows whether it is there, whole; if not, nothing was made")

    try:
        with progress_bar("importing", total) as advance:
            memory = Memory.import_parquet(source, dest, progress=advance, filled=filled)
    except KeyboardInterrupt:
        there = holds_memory(dest) if full else False  # (before `filled`, none of this import's is there)
        if there is not None:
            interrupted_leaves(made if there else f"nothing: no memory was made at {dest}")
        if there:
            said["imported"] = total
        raise
    interrupted_leaves(made)
    said["imported"] = total
    with memory:
        count = len(memory)
        location = memory.location
    if json_out:
        emit({"imported": count, "file": str(source), "to": location})
    else:
        out.print(f"imported {counted(count, 'item')} from {source} into {location}")

"""Index commands: switch a memory's search index, and compact removed items away."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from . import app, emit, out
from .commands import JsonFlag, MemDir, _open


@app.command()
def reindex(
    memdir: Path = MemDir,
    index: str = typer.Option(..., "--index", help="auto|exact|hnsw|ivfpq"),
    target_recall: Optional[float] = typer.Option(None, "--target-recall", min=0.01, max=1.0,
                                                  help="Recall@10 to tune for [default: keep]."),
    float16: Optional[bool] = typer.Option(None, "--float16/--float32",
                                           help="HNSW vector storage [default: keep]."),
    json_out: bool = JsonFlag,
) -> None:
    """Switch MEMDIR's search index: rebuild it from the store, tune it and measure recall."""
    with _open(memdir) as memory:
        described = memory.set_index(index, target_recall=target_recall, float16=float16)
    if json_out:
        emit(described)
        return
    quality = described["quality"] or {}
    out.print(f"index is now {described['type']} (setting {index}): {described['size']} vectors, "
              f"recall@10 {quality.get('recall', 1.0):.3f}, params {described['params']}")


@app.command()
def compact(memdir: Path = MemDir, json_out: bool = JsonFlag) -> None:
    """Reclaim removed items' slots in the index and the store, and re-measure recall.

    Afterwards no file in MEMDIR holds a removed item's vector. Also done automatically
    when more than 20% of an approximate index's slots are removed items.
    """
    with _open(memdir) as memory:
        report = memory.compact()
    if json_out:
        emit(report)
    else:
        out.print(f"compacted: reclaimed {report['reclaimed']} slots; index {report['type']} "
                  f"holds {report['size']} vectors, {report['bytes']:,} bytes")

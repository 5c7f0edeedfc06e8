"""Core commands: create, add, classify, remove, relabel, info, eval, encoders, explain, demo."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, List, NamedTuple, Optional

import typer

if TYPE_CHECKING:
    from ..evaluate import EvalReport
    from ..ingest import AddReport
    from ..memory import Memory

from ..calibrate import STALE_FRACTION
from ..decide import VOTES, VoteParams
from ..errors import InvalidInputError, VismemError
from ..images import Skipped, shown
from ..ingest import MEASURED, conflict_reason, reserved_meta
from ..search.quality import Quality
from ..settings import DEFAULT_ENCODER, OFFLINE_ENCODER, MemorySettings, describe
from ..store.base import (MAX_DIM, InsertResult, check_label, missing_ids, nothing_matched, parse_pairs,
                          parse_where, printable, printable_message)
from . import (BATCHES_KEPT, EXIT_PARTIAL, EXIT_SKIPPED, app, counted, emit, err, interrupted_leaves, one_transaction,
               only_reads, out, padded, progress_bar, reported_if_cut_off, reported_if_interrupted, widest)
from .encoder_options import (BatchSizeOpt, DecodeWorkersOpt, DeviceOpt, PrecisionOpt, RuntimeOpt, encoder_options,
                              encoding, planned_encoding)
from .numbers import number_option

JsonFlag = typer.Option(False, "--json", help="Print JSON lines on stdout, nothing else.")


def _item_id(text: str) -> int:
    try:
        return int(text)
    except ValueError:  # Typer's own message ("unable to parse string as an integer") names no fix
        raise typer.BadParameter(f"{text!r} is not an item id (a whole number); give several as "
                                 "--id 1 --id 2") from None


def given_path(text: str) -> Path:
    """A path argument; an empty one is bad usage, not the current folder (Path("") is ".")."""
    from ..images import EMPTY_PATH

    if not text:
        raise typer.BadParameter(EMPTY_PATH)
    return Path(text)


# (an empty MEMDIR, an unset variable, is bad usage: it named the current folder, where
# `create` made a memory and every other command read or edited one found there)
MemDir = typer.Argument(..., parser=given_path, show_default=False,
                        help="Memory directory, or milvus://HOST:PORT/COLLECTION.")


def ids_option(default: Any = ...) -> Any:
    """`--id`, repeatable; `--id 1,2` is bad usage that says how to give two."""
    return typer.Option(default, "--id", parser=_item_id, help="Item id (repeatable).")


SHIPPED = object()  # described_option's default: the setting's own


def described_option(cls: type, name: str, *flags: str, default: Any = SHIPPED, help: str | None = None) -> Any:
    """A CLI option whose help, default and range come from the settings dataclass `cls`
    (`settings.describe`), so they are declared once. A value out of range or choices
    is bad usage (exit 2), as with any option."""
    found = describe(cls, name)
    limits: dict[str, Any] = {key: found[key] for key in ("min", "max") if key in found}
    if "min_exclusive" in found:
        limits["above"] = found["min_exclusive"]
    if found.get("finite") or limits:  # a float setting, or a whole number with a range
        return number_option(found["default"] if default is SHIPPED else default, *flags,
                             help=found["help"] if help is None else help, callback=_within(found),
                             kind=float if found.get("finite") else int, **limits)
    return typer.Option(found["default"] if default is SHIPPED else default, *flags,
                        help=found["help"] if help is None else help, callback=_within(found), **limits)


def _within(found: dict[str, Any]) -> Callable[[Any], Any]:
    """Checks a setting's choices (`number_option` checks a number's range)."""
    choices = found.get("choices")

    def check(value: Any) -> Any:
        if value is not None and choices is not None and value not in choices:
            raise typer.BadParameter(f"{value!r} is not one of {'|'.join(choices)}")
        return value
    return check


def key_values(option: str) -> Callable[[Any], Any]:
    """Checks KEY=VALUE texts as `parse_where` reads them: a malformed one is bad usage."""
    def check(pairs: Any) -> Any:
        try:
            parse_where(pairs, option)
        except InvalidInputError as exc:
            raise typer.BadParameter(str(exc).removeprefix(f"{option} ")) from None
        return pairs
    return check


def image_meta(pairs: Any) -> Any:
    """`add`'s --meta: KEY=VALUE texts, none naming a key the add measures (bad usage)."""
    key_values("--meta")(pairs)
    problem = reserved_meta(parse_pairs(pairs, "--meta"))
    if problem:
        raise typer.BadParameter(problem)
    return pairs


def vote_option(name: str, *flags: str) -> Any:
    """A vote option from `VoteParams`; unset, the memory's stored default."""
    found = describe(VoteParams, name)
    return described_option(VoteParams, name, *flags, default=None,
                            help=f"{found['help']} [memory default; shipped: {found['default']}]")


def setting_option(name: str, flag: str) -> Any:
    """A `create` option from `MemorySettings`."""
    return described_option(MemorySettings, name, flag)


KOpt = vote_option("k", "--k", "-k")
CounterfactualOpt = typer.Option(
    False, "--counterfactual", help="Also say what would change the decision: the fewest items whose removal "
    "(or blocking) changes its label, and the nearest item of the runner-up class.")
AbstainOpt = typer.Option(False, "--abstain", help="Answer label null when the image is unlike the memory "
                          "(needs `vismem calibrate`).")
VoteOpt = vote_option("vote", "--vote")
AlphaOpt = vote_option("alpha", "--alpha")
TauOpt = vote_option("tau", "--tau")
MixOpt = vote_option("mix", "--mix")
OnlyLabelOpt = typer.Option(None, "--only-label", metavar="LABEL",
                            help="Search only items with this label (repeatable).")
OnlySourceOpt = typer.Option(None, "--only-source", metavar="SOURCE",
                             help="Search only items from this source (repeatable).")
WhereOpt = typer.Option(None, "--where", metavar="KEY=VALUE", callback=key_values("--where"),
                        help="Only items whose metadata KEY equals VALUE (repeatable; all must hold). "
                             "VALUE is read as JSON when it parses (2024, true), else as text.")


def _open(memdir: Path, encoder_options=None) -> Memory:
    from ..memory import Memory

    return Memory.open(memdir, encoder_options=encoder_options)  # a file is refused by the store


def load_npy(path: Path, option: str, *, mapped: bool = False):
    """The array in a .npy file given as `option` (`mapped`: a read-only memory map, read
    as it is used), or a one-line error that names it."""
    import numpy as np

    try:
        with open(path, "rb") as handle:
            if handle.read(6) == b"\x93NUMPY":
                return np.load(path, allow_pickle=False, mmap_mode="r" if mapped else None)
    except (OSError, ValueError) as exc:
        raise InvalidInputError(f"cannot read {option} {path} as a .npy array: {exc}") from None
    raise InvalidInputError(f"{option} {path} is not a .npy file: write one with numpy.save")


def load_labels(path: Path, option: str = "--labels") -> list[str]:
    """Labels from a .npy array of text or integers (3 is the label "3", as in a class
    folder named 3), or a UTF-8 text file with one label per line (blank lines at its
    end ignored; whitespace around a label refused)."""
    if path.suffix != ".npy":
        try:  # utf-8-sig: the byte-order mark some editors write would start the first label
            # (read as text, \r\n and \r end a line as \n does; splitlines would also split
            # a label at a form feed, \x1c-\x1e, NEL or U+2028, putting every later label a row off)
            lines = path.read_text(encoding="utf-8-sig").split("\n")
        except (OSError, ValueError) as exc:
            raise InvalidInputError(f"cannot read {option} {path}: {exc}") from None
        while lines and not lines[-1].strip():
            lines.pop()
        blank = next((n for n, line in enumerate(lines, 1) if not line.strip()), None)
        if blank is not None:
            raise InvalidInputError(f"{option} {path}: line {blank} is blank; give one label per line, "
                                    "the n-th for the n-th vector")
        # whitespace at a line's ends is unseen in the file and in every listing, yet "cat " is a
        # class apart from "cat": a slip of the tool that wrote the file, not a label
        padded = next((n for n, line in enumerate(lines, 1) if line != line.strip()), None)
        if padded is not None:
            raise InvalidInputError(f"{option} {path}: line {padded} ({lines[padded - 1]!r}) starts or ends with "
                                    "whitespace, which would make a class apart from "
                                    f"{lines[padded - 1].strip()!r}; remove it (a .npy array of strings keeps "
                                    "labels as they are)")
        return lines
    array = load_npy(path, option)
    if array.ndim != 1 or array.dtype.kind not in "iuU":
        raise InvalidInputError(f"{option} {path}: expected one label per row, as text or integers, "
                                f"got {array.dtype} {tuple(array.shape)}")
    return [str(label) for label in array.tolist()] if array.dtype.kind in "iu" else array.tolist()


QueriesOpt = typer.Option(None, "--queries", metavar="Q.npy",
                          help="Query vectors instead of images: a .npy array of shape (n, dim) (or one (dim,) "
                               "vector), e.g. embeddings made outside vismem for a memory made with --encoder none.")


QUERY_CHUNK = 4096  # queries answered per call, so that a bar moves over a large --queries file


class Queries(NamedTuple):
    """What a command asked about, read: the vectors of the `kept` inputs (positions in
    `inputs`), a name for each (its path, or Q.npy[row]), and the images not read."""

    inputs: list
    vectors: Any
    kept: list[int]
    names: list[str]
    skipped: list[Skipped]

    def answered(self, answer: Callable[[Any, list[str]], list], doing: str) -> list:
        """`answer(vectors, names)` for every query, in order, a chunk at a time under a
        progress bar that leaves no trace."""
        results: list = []
        with progress_bar(doing, len(self.kept), transient=True) as advance:
            for start in range(0, len(self.kept), QUERY_CHUNK):
                rows = slice(start, start + QUERY_CHUNK)
                results += answer(self.vectors[rows], self.names[rows])
                advance(len(self.names[rows]))
        return results


def read_queries(memory: Memory, images: list[Path] | None, queries: Path | None, verb: str) -> Queries:
    """The queries of `classify` and `search`: image files (encoded, under a progress bar
    that leaves no trace) or a .npy array of vectors (`--queries`), exactly one of them.
    When no image could be read, nothing would be done: an error (exit 1, as `eval` and
    `tune-index` answer it, not 3, done in part), saying each one's reason (`cannot
    {verb} PATH: ...`) first."""
    if bool(images) == (queries is not None):  # bad usage: exit 2, as a missing argument
        raise typer.BadParameter("give image files or --queries Q.npy" + (", not both" if images else ""),
                                 param_hint="IMAGES / --queries")
    if queries is None:
        assert images
        with progress_bar(f"encoding ({encoding(memory)})", len(images), transient=True) as advance:
            vectors, kept, skipped = memory.embed_images(images, progress=advance)
        if not kept:
            for s in skipped:
                say_unreadable(s, False, verb)
            which = "the image given" if len(images) == 1 else f"none of the {len(images):,} images given"
            raise InvalidInputError(f"{which} could {'not ' if len(images) == 1 else ''}be read: nothing to {verb}")
        return Queries(list(images), vectors, kept, [shown(images[i]) for i in kept], skipped)
    matrix = load_queries(queries, memory.dim)
    names = [f"{queries}[{row}]" for row in range(len(matrix))]
    return Queries(names, matrix, list(range(len(matrix))), names, [])


def load_queries(path: Path, dim: int, *, checked: bool = True):
    """The query vectors (n, dim) in a .npy file given as --queries (one (dim,) vector is
    one row), or a one-line error that names the file and the shape expected, or (where
    `checked`) the file and the first row no memory can take, before any is answered."""
    from ..vectors import check_rows, named

    array = load_npy(path, "--queries")
    if array.ndim not in (1, 2) or array.shape[-1] != dim or array.dtype.kind not in "biuf":
        raise InvalidInputError(f"--queries {path}: expected numbers of shape (n, {dim}) for this "
                                f"memory's {dim}-d vectors, got {array.dtype} {tuple(array.shape)}")
    array = array[None, :] if array.ndim == 1 else array
    if checked:  # here, not as each chunk is answered: that counted rows from the chunk
        with named(f"--queries {path}"):
            check_rows(array, dim)
    return array


def refuse_if_none_done(asked: Iterable[int], done: Iterable[int]) -> None:
    """None of the ids asked for exists, so nothing changed: an error (exit 1), said before
    any report is printed."""
    asked = list(asked)
    if asked and not list(done):
        raise VismemError(nothing_matched((), ids=asked))


def refuse_if_none_matched(memory: Memory, *, label: str | None, source: str | None, where: list[str] | None
                           ) -> None:
    """No item has the --label, --source or --where given, so nothing would change: an
    error (exit 1), as for ids none of which exists, naming the labels near a mistyped one."""
    raise VismemError(nothing_matched(memory.class_counts() if label is not None else (), label=label,
                                      source=source, where=where))


def all_have(memory: Memory, ids: Iterable[int], **values: Any) -> bool:
    """Whether the given items that exist (one at least) all hold `values` (label, weight) in
    the store: whether an update to them was committed."""
    items = memory.items_as_stored(list(ids))
    return bool(items) and all(getattr(item, name) == value for item in items for name, value in values.items())


def updated(memory: Memory, ids: list[int], verb: str) -> dict[str, Any]:
    """The report of an update to `ids` that committed (`{verb: n, "ids": [...], "missing": [...]}`),
    read from the store: what --json says when an interruption met its commit."""
    changed = [item.id for item in memory.items_as_stored(ids)]
    return {verb: len(changed), "ids": changed, "missing": missing_ids(ids, changed)}


def exit_if_missing(missing: list[int]) -> None:
    """After the report: ids that were asked for but do not exist (`missing_ids`), named
    on stderr, while the others were done (`refuse_if_none_done` came first): partial
    success, exit 3."""
    if missing:
        err.print(f"no items with ids {missing}; the others were done")
        raise typer.Exit(EXIT_PARTIAL)


def in_input_order(inputs: list, kept: list[int], results: list, skipped: list) -> list:
    """For each input, in the order given: its result if it was read (positions `kept`),
    else the Skipped that says why not, matched by path (an input may be given twice)."""
    from collections import deque

    found = dict(zip(kept, results, strict=True))
    unread: dict[str, deque] = {}
    for s in skipped:
        unread.setdefault(s.path, deque()).append(s)
    ordered = [found[i] if i in found else (unread.get(shown(path)) or deque([None])).popleft()
               for i, path in enumerate(inputs)]
    left = [s for queue in unread.values() for s in queue]  # none, unless a path was renamed
    return [item for item in ordered if item is not None] + left


def say_unreadable(s, json_out: bool, verb: str) -> None:
    """Report an image that could not be read: a JSON line with --json, always a stderr line."""
    if json_out:
        emit({"path": s.path, "error": s.reason})
    err.print(f"cannot {verb} {printable(s.path)}: {printable_message(s.reason)}")


def check_image_path(path: Path, option: str, *, reading: Path | None = None) -> None:
    """Refuse an output path that cannot take an image file, with the fix; `reading`:
    an input file the output must not overwrite."""
    from PIL import Image

    if reading is not None and path.exists() and reading.exists() and path.samefile(reading):
        # the sheet would replace the very photo it explains, and exit 0
        raise InvalidInputError(f"{option} {path} is the image being explained: it would be overwritten; "
                                "give another file name")
    if path.is_dir():
        raise InvalidInputError(f"{option} {path} is a folder: give a file name, e.g. {path / 'explanation.png'}")
    if not path.parent.is_dir():
        raise InvalidInputError(f"{option} {path}: no folder {path.parent}; create it first")
    if Image.registered_extensions().get(path.suffix.lower()) not in Image.SAVE:
        raise InvalidInputError(f"{option} {path}: not an image file name; end it in .png (or .jpg, .webp)")


def save_image(image: Any, path: Path) -> None:
    """Write `image` to `path` (checked by `check_image_path`) whole or not at all: a file
    already there stays as it was when the write fails (a full disk, a format that cannot
    take RGB such as .xbm), as exit 1 promises."""
    from PIL import Image

    from ..files import written_whole

    with written_whole(path) as partial:
        image.save(partial, format=Image.registered_extensions()[path.suffix.lower()])


def _vote_options(k: int | None, vote: str | None, alpha: float | None, tau: float | None,
                  mix: float | None = None) -> dict[str, Any]:
    if vote is not None and vote not in VOTES:
        raise InvalidInputError(f"unknown vote {vote!r}; choose from {', '.join(VOTES)}")
    return {"k": k, "vote": vote, "alpha": alpha, "tau": tau, "mix": mix}


def _decision_options(k: int | None, vote: str | None, alpha: float | None, tau: float | None,
                      mix: float | None, abstain: bool, only_labels: list[str] | None,
                      only_sources: list[str] | None, where: list[str] | None,
                      counterfactual: bool) -> dict[str, Any]:
    """`classify`'s and `explain`'s options as `Memory.classify_vectors` takes them."""
    return _vote_options(k, vote, alpha, tau, mix) | {
        "abstain": abstain, "labels": only_labels or None, "sources": only_sources or None,
        "where": parse_where(where), "counterfactual": counterfactual}


def warn_if_nothing_matches(memory: Memory, labels: list[str] | None, sources: list[str] | None,
                            where: list[tuple[str, Any]] | None) -> None:
    """Say so when a restriction matches no item, most likely a typo (camera=Tablet for
    camera=tablet): every answer would be empty, and `--json` scripts still get them."""
    if labels is None and sources is None and not where:
        return
    if memory.page(labels=labels, sources=sources, where=where, limit=1).total == 0:
        given = ([f"--only-label {label}" for label in labels or ()] + [f"--only-source {s}" for s in sources or ()]
                 + [f"--where {key}={json.dumps(value) if not isinstance(value, str) else value}"
                    for key, value in where or ()])
        err.print(f"warning: no item matches {printable(', '.join(given))}: every answer is empty")


@app.command()
def create(
    memdir: Path = MemDir,
    encoder: str = typer.Option(DEFAULT_ENCODER, "--encoder", "-e",
                                help="Encoder name (see `vismem encoders`), or 'none' for precomputed vectors."),
    weights: Optional[Path] = typer.Option(None, "--weights", metavar="FILE",
                                           help="Local weights file instead of downloading."),
    dim: Optional[int] = number_option(None, "--dim", min=1, max=MAX_DIM, kind=int,
                                       help="Vector dimension, for --encoder none."),
    index: str = setting_option("index", "--index"),
    target_recall: float = setting_option("target_recall", "--target-recall"),
    float16: bool = setting_option("float16", "--float16"),
    token: Optional[str] = typer.Option(None, "--token", help="Milvus token (user:password or API key) for a "
                                        "milvus:// memory; later commands read it from VISMEM_MILVUS_TOKEN."),
    device: Optional[str] = DeviceOpt,
    runtime: str = RuntimeOpt,
    precision: str = PrecisionOpt,
    json_out: bool = JsonFlag,
) -> None:
    """Create an empty memory in MEMDIR (a new or empty directory), or in a Milvus collection
    (milvus://HOST:PORT/COLLECTION; add ?thumbnails=0 to keep no thumbnails there)."""
    import os

    from ..memory import Memory
    from ..store import holds_memory

    misplaced = MemorySettings(index=index, float16=float16).float16_misplaced()
    if misplaced:
        raise typer.BadParameter(misplaced, param_hint="'--float16'")
    if token:
        os.environ["VISMEM_MILVUS_TOKEN"] = token
    name = None if encoder.lower() == "none" else encoder
    # (the store is made under a temporary name and renamed into place: never half made)
    interrupted_leaves(f"the memory at {memdir} was made, empty, or not at all: `vismem info {memdir}` tells which")
    # with --json, Ctrl-C prints whether the memory is there (a directory's is once its
    # database is renamed into place, which `holds_memory` sees; another home's is not known)
    said = reported_if_interrupted(json_out, {"created": False, "path": str(memdir)})
    try:
        with Memory.create(memdir, encoder=name, weights=weights, dim=dim, index=index,
                           target_recall=target_recall, float16=float16,
                           encoder_options=encoder_options(device, runtime, precision)) as memory:
            info = memory.info()
    except KeyboardInterrupt:
        there = holds_memory(memdir)
        said["created"] = "unknown" if there is None else there
        if there is not None:
            interrupted_leaves(f"the memory at {memdir} is made, empty" if there
                               else f"nothing: no memory was made at {memdir}")
        raise
    if json_out:
        emit(info)
    else:
        encoder_words = f"encoder {info['encoder']}" if info["encoder"] else "no encoder: precomputed vectors"
        out.print(f"created memory at {info['path']} ({encoder_words}, {info['dim']}-d)")


@app.command()
def add(
    memdir: Path = MemDir,
    paths: List[Path] = typer.Argument(..., parser=given_path,  # an unreadable one is skipped and said, as in a folder
                                       help="Image files or folders (class-subfolder layout).",
                                       show_default=False),
    label: Optional[str] = typer.Option(None, "--label", "-l", help="Label for every image (overrides subfolders)."),
    source: Optional[str] = typer.Option(None, "--source", "-s", help="Source tag [default: the path given]."),
    batch_size: Optional[int] = number_option(None, "--batch-size", kind=int, min=1, metavar="N",
                                              help="Images per batch (forward pass and commit) [default: fitted "
                                              "to the GPU; on the CPU 32, 256 for the pixels encoder]."),
    allow_duplicates: bool = typer.Option(False, "--allow-duplicates",
                                          help="Add images whose content is already in the memory."),
    meta: Optional[List[str]] = typer.Option(None, "--meta", metavar="KEY=VALUE", callback=image_meta,
                                             help="Metadata for every image, for --where filters (repeatable; "
                                                  f"not {', '.join(MEASURED)}: measured from each image)."),
    ray: Optional[str] = typer.Option(None, "--ray", metavar="ADDRESS",
                                      help="Read, decode and encode on a Ray cluster: 'local' starts one here, "
                                           "'auto' / HOST:PORT / ray://HOST:PORT joins one."),
    device: Optional[str] = DeviceOpt,
    runtime: str = RuntimeOpt,
    precision: str = PrecisionOpt,
    decode_workers: Optional[int] = DecodeWorkersOpt,
    json_out: bool = JsonFlag,
) -> None:
    """Add images to MEMDIR. Each batch is committed atomically.

    With --json, one line per committed batch ({"event": "committed", "ids": [...]}),
    then a summary ({"event": "done", "added": N, "skipped": M, ...}); interrupted, the
    last line is {"event": "interrupted", "added": N, "ids": [...], "unfinished": ...}
    with the batches reported committed: every item the run added, also the batch the
    interrupt met once its commit was made. An image already
    held with the same label is skipped as a duplicate (no error); one skipped as
    unreadable, unlabelled or held under another label gives exit code 3, or 1 when
    none was added and none was held already (an error, each reason on stderr), as when
    the paths hold no image file at all.
    """
    from ..images import find_images

    interrupted_leaves(BATCHES_KEPT)
    kept = reported_if_interrupted(json_out, {"event": "interrupted", "added": 0, "ids": []})

    def committed(ids: list[int]) -> None:
        kept["ids"] += ids
        kept["added"] = len(kept["ids"])
        emit({"event": "committed", "ids": ids})

    with _open(memdir, encoder_options(device, runtime, precision, batch_size, decode_workers)) as memory:
        memory.check_writable()
        found, unreadable = find_images(paths, label=label)  # exactly the files add_images will try
        if not found and not unreadable:  # an empty folder, or a wrong one: as `eval` says it
            given = ", ".join(printable(str(p)) for p in paths)
            raise InvalidInputError(f"no image files in {given}: nothing added")
        total = len(found)
        on_commit = committed if json_out else None
        # on Ray the actors load the encoder; here it would only take time and memory
        with progress_bar(f"adding ({'on Ray' if ray else encoding(memory)})", total) as advance:
            report = memory.add_images(
                paths, label=label, source=source, batch_size=batch_size,
                allow_duplicates=allow_duplicates, meta=parse_pairs(meta, "--meta"),
                progress=advance, on_commit=on_commit, ray=ray,
            )
        count = len(memory)
    refuse_if_none_added(report)
    if json_out:
        emit({"event": "done", **report.to_dict(), "items": count})
    else:
        conflicts = f", {len(report.conflicts)} with a conflicting label" if report.conflicts else ""
        out.print(f"added {counted(len(report.added), 'item')}, skipped {len(report.skipped)} "
                  f"({counted(len(report.duplicates), 'duplicate')}{conflicts}); memory now holds {count:,}")
        for s in report.skipped:
            err.print(f"skipped {printable(s.path)}: {printable_message(s.reason)}")
    if report.errors:
        raise typer.Exit(EXIT_SKIPPED)


def refuse_if_none_added(report: AddReport) -> None:
    """Every input `add` tried was refused (`AddReport.refusal`): an error (exit 1, as
    `classify` answers it), not done in part, saying each one's reason first."""
    refusal = report.refusal()
    if refusal is None:
        return
    for s in report.skipped:
        err.print(f"skipped {printable(s.path)}: {printable_message(s.reason)}")
    raise InvalidInputError(refusal)


ADD_VECTORS_BATCH = 10_000  # rows per commit: 8% slower than one commit at 200k 64-d rows


@app.command("add-vectors")
def add_vectors(
    memdir: Path = MemDir,
    vectors: Path = typer.Option(..., "--vectors", metavar="X.npy", help="A .npy file of shape (n, dim)."),
    labels: Path = typer.Option(..., "--labels", metavar="FILE",
                                help="A .npy array of n strings, or a text file with one label per line."),
    source: str = typer.Option("vectors", "--source", "-s", help="Source tag for every vector."),
    allow_duplicates: bool = typer.Option(False, "--allow-duplicates",
                                          help="Add rows the memory already holds (the same vector as stored)."),
    json_out: bool = JsonFlag,
) -> None:
    """Add precomputed embeddings with labels (for memories made with --encoder none).

    Every row and label is checked before anything is added; then they are added
    10,000 rows per transaction, so a crash keeps every batch committed. A row the
    memory already holds (the same bits once made unit length), or one repeated in the
    file, is skipped, so running the command again after an interruption adds only what
    is missing. A row held under another label is not added either: it is a conflict,
    named with both labels, and the exit code is 3 (relabel the item holding it if the
    row's label is right). With --json, one line: added, ids, skipped, skipped_rows
    ({row, duplicate_of}, rows counted from 0), conflicts, conflict_rows ({row, label,
    duplicate_of, held_label}) and items; interrupted, {"rows_done": N, "added": M, "ids":
    [...], "unfinished": ...}: the first N rows are committed, added (these M ids) or
    skipped, also the batch the interrupt met once its commit was made.
    """
    from ..vectors import named

    interrupted_leaves(f"{BATCHES_KEPT}; running the same command again"
                       f"{' without --allow-duplicates' if allow_duplicates else ''} adds only the rows still missing")
    matrix = load_npy(vectors, "--vectors", mapped=True)  # millions of rows: read a batch at a time
    names = load_labels(labels)
    for row, name in enumerate(names):  # which one, of millions (`add_vectors` checks them too, unnamed)
        try:
            check_label(name)
        except InvalidInputError as exc:
            at = f"row {row} (from 0)" if labels.suffix == ".npy" else f"line {row + 1}"
            raise InvalidInputError(f"--labels {labels}: {at}: {exc}") from None
    rows = len(matrix) if matrix.ndim == 2 else 1  # any other shape is refused by add_vectors
    kept = reported_if_interrupted(json_out, {"rows_done": 0, "added": 0, "ids": []})
    with _open(memdir) as memory, progress_bar("adding vectors", rows) as advance, named(f"--vectors {vectors}"):
        def batch_done(n: int) -> None:  # (called once its batch committed)
            kept["rows_done"] += n
            advance(n)

        def committed(ids: list[int]) -> None:
            kept["ids"] += ids
            kept["added"] = len(kept["ids"])

        added = memory.add_vectors(matrix, names, sources=source, batch_size=ADD_VECTORS_BATCH, progress=batch_done,
                                   on_commit=committed, allow_duplicates=allow_duplicates)
        count = len(memory)
    result = added if isinstance(added, InsertResult) else InsertResult(added)
    if json_out:
        emit({"added": len(result.ids), "ids": result.ids, "skipped": len(result.duplicates),
              "skipped_rows": [{"row": row, "duplicate_of": held} for row, held in result.duplicates],
              "conflicts": len(result.conflicts),
              "conflict_rows": [{"row": row, "label": names[row], "duplicate_of": held, "held_label": held_label}
                                for row, held, held_label in result.conflicts],
              "items": count})
    else:
        conflicts = f", {len(result.conflicts)} held under another label" if result.conflicts else ""
        out.print(f"added {counted(len(result.ids), 'vector')}, skipped {len(result.duplicates)} already held"
                  f"{conflicts}; "
                  f"memory now holds {count:,}")
        for row, held, held_label in result.conflicts:
            err.print(f"row {row}: {conflict_reason(held, held_label, names[row])}")
    if result.conflicts:
        raise typer.Exit(EXIT_PARTIAL)


def one_query(path: Path, row: int | None, dim: int):
    """The one query vector (1, dim) of --queries [--row], and its name Q.npy[row]."""
    from ..vectors import check_rows, named

    matrix = load_queries(path, dim, checked=False)  # only the row explained counts
    if not len(matrix):
        raise InvalidInputError(f"--queries {path} holds no vectors; explain takes one")
    if row is None and len(matrix) != 1:
        raise InvalidInputError(f"--queries {path} holds {counted(len(matrix), 'vector')}; explain takes one: "
                                f"pick it with --row N (0 to {len(matrix) - 1})")
    chosen = row or 0
    if chosen >= len(matrix):
        rows = "row 0" if len(matrix) == 1 else f"rows 0 to {len(matrix) - 1}"
        raise InvalidInputError(f"--row {chosen}: {path} holds {counted(len(matrix), 'vector')} ({rows})")
    query = matrix[chosen : chosen + 1]
    with named(f"--queries {path}"):
        check_rows(query, dim, first_row=chosen)  # a NaN is named by its row in the file
    return query, f"{path}[{chosen}]"


@app.command()
def classify(
    memdir: Path = MemDir,
    images: Optional[List[Path]] = typer.Argument(None, readable=False, parser=given_path, show_default=False,
                                                  help="Image files to classify."),
    queries: Optional[Path] = QueriesOpt,
    k: Optional[int] = KOpt,
    vote: Optional[str] = VoteOpt,
    alpha: Optional[float] = AlphaOpt,
    tau: Optional[float] = TauOpt,
    mix: Optional[float] = MixOpt,
    abstain: bool = AbstainOpt,
    counterfactual: bool = CounterfactualOpt,
    only_labels: Optional[List[str]] = OnlyLabelOpt,
    only_sources: Optional[List[str]] = OnlySourceOpt,
    where: Optional[List[str]] = WhereOpt,
    device: Optional[str] = DeviceOpt,
    runtime: str = RuntimeOpt,
    precision: str = PrecisionOpt,
    batch_size: Optional[int] = BatchSizeOpt,
    decode_workers: Optional[int] = DecodeWorkersOpt,
    json_out: bool = JsonFlag,
) -> None:
    """Classify images and show the neighbours that voted.

    With --json, one object per image: path, label, confidence, abstained, ood_score and
    threshold (null unless --abstain), scores, neighbors (id, label, distance, weight,
    contribution, source, item_weight, prune_factor, relabelled_from; nearest first),
    prototypes (distance to each class), interventions, and the vote used (vote, k, alpha,
    tau, mix; k_used: how many neighbours voted, fewer than k where the memory holds fewer
    items that can vote, with a warning on stderr); with --counterfactual also
    counterfactual (remove / block: the fewest item ids whose removal / blocking changes
    the label, label_after_remove / label_after_block, runner_up, summary). An unreadable
    image gives
    {"path": ..., "error": ...} and exit code 3 (1 when no image could be read: an error,
    each one's reason on stderr). With --queries Q.npy, one object per
    row, in order, with path Q.npy[row].
    """
    from ..explain import decision_table

    only_reads("classify")
    options = _decision_options(k, vote, alpha, tau, mix, abstain, only_labels, only_sources, where, counterfactual)
    with _open(memdir, encoder_options(device, runtime, precision, batch_size, decode_workers)) as memory:
        memory.check_can_decide(**options)  # before any encoding
        warn_if_nothing_matches(memory, options["labels"], options["sources"], options["where"])
        asked = read_queries(memory, images, queries, "classify")
        decisions = asked.answered(lambda vectors, names: memory.classify_vectors(vectors, paths=names, **options),
                                   "classifying")
        skipped = asked.skipped
    for decision in in_input_order(asked.inputs, asked.kept, decisions, skipped):
        if isinstance(decision, Skipped):
            say_unreadable(decision, json_out, "classify")
        elif json_out:
            emit(decision.to_dict())
        else:
            out.print(decision_table(decision))
    if decisions:
        _warn_if_k_capped(decisions[0].vote.k, max(d.k_used for d in decisions))
    if skipped:
        raise typer.Exit(EXIT_SKIPPED)


def _warn_if_k_capped(k: int, k_used: int) -> None:
    """Say on stderr when no query had k neighbours to vote: the k reported is not the
    vote's (a memory of 5 items answered `-k 50` as a 5-NN vote without a word)."""
    if k_used < k:
        err.print(f"warning: k={k}, but at most {counted(k_used, 'neighbour')} voted on a query: the memory (or "
                  f"the part of it that the restriction and pruning let vote) holds no more items (--json: k_used)")


@app.command()
def remove(
    memdir: Path = MemDir,
    ids: Optional[List[int]] = ids_option(None),
    label: Optional[str] = typer.Option(None, "--label", help="Remove every item with this label."),
    source: Optional[str] = typer.Option(None, "--source", help="Remove every item from this source."),
    where: Optional[List[str]] = WhereOpt,
    verify: bool = typer.Option(False, "--verify", help="Then search every file in MEMDIR for the removed "
                                "items' vectors (float32, float16 and the index's own copies) and thumbnails; "
                                "exit 3 if any is left. Content an item still holds too (added again with "
                                "--allow-duplicates) is named, not counted."),
    json_out: bool = JsonFlag,
) -> None:
    """Remove items for good: by --id, --label, --source or --where (exactly one).

    Durable when the command returns, and purged: no file in MEMDIR keeps the removed
    items' vectors or thumbnails. --verify checks that byte for byte. Exit 3 when some
    --id does not exist or --verify finds remnants (the removal itself is committed);
    exit 1 when no --id exists, or no item has the --label or --source or matches
    --where (nothing changed). With --json, as DELETE /items answers: removed, ids,
    missing (the --id given that do not exist), items (left) and unfinished (null, or
    what a purge cut off left); --verify adds verified.
    """
    from ..remnants import find_remnants, fingerprints, holders, unshared

    conditions = parse_where(where)
    if sum(x is not None and x != [] for x in (ids, label, source, conditions)) != 1:
        raise typer.BadParameter("give exactly one of them", param_hint="--id / --label / --source / --where")
    interrupted_leaves("nothing: no item was removed (`vismem remove` removes its items in one transaction)")
    # what committed, said with --json if the command is interrupted or the purge after it is cut off
    done: dict[str, Any] = {"removed": 0, "ids": []}
    with reported_if_cut_off(json_out, done), _open(memdir) as memory:
        if verify and not memory.capabilities.local_files:
            raise InvalidInputError(f"--verify scans a memory's files, and {memory.location} keeps its storage "
                                    "on a Milvus server, which this cannot inspect: there, removed items leave "
                                    "search at once, and their bytes leave the server's files only when it "
                                    "compacts and garbage-collects (run without --verify)")
        targets = memory.targets(ids or None, label=label, source=source, where=conditions)
        if not ids and not targets:
            refuse_if_none_matched(memory, label=label, source=source, where=where)
        prints = fingerprints(memory, targets, report=partial(progress_bar, transient=True)) if verify else []
        # which of them exist, for --json to say should Ctrl-C meet the commit (after it, none does)
        held_ids = [item.id for item in memory.items_as_stored(targets)] if json_out and ids else targets
        # Its purge follows, as the memory closes (here too when interrupted); a purge cut
        # short leaves copies of their bytes in the files until the next, which compact makes.
        purge_left = (f"the removal is committed; if this cut its purge short, copies of the removed items' bytes may "
                      f"stay in {memdir}'s files until `vismem compact {memdir}`")
        with one_transaction(lambda: bool(targets) and not memory.items_as_stored(targets), purge_left,
                             lambda: {"removed": len(held_ids), "ids": held_ids, "items": len(memory)}):
            removed = memory.remove(targets)
        held = holders(prints, memory)  # their content stays, with the item that holds it too
        prints = unshared(prints, memory, held)
        count = len(memory)
        purged = memory.capabilities.verifiable_purge
        said_of_purge = memory.capabilities.purge_said()  # as DELETE /items says it
        missing = missing_ids(ids or [], removed)
        done.update(removed=len(removed), ids=removed, missing=missing, items=count)
    refuse_if_none_done(ids or [], removed)
    # as DELETE /items answers it (unfinished: said by reported_if_cut_off when the purge is cut off)
    report = {"removed": len(removed), "ids": removed, "missing": missing, "items": count, "unfinished": None}
    if verify:  # after close: the index is saved and the store purged
        found, files, scanned = find_remnants(memdir, prints,
                                              report=partial(progress_bar, transient=True, in_bytes=True))
        report["verified"] = {"clean": not found, "fingerprints": len(prints), "files": files,
                              "bytes": scanned, "remnants": [r.to_dict() for r in found],
                              "held_by": [{"id": i, "held_by": held[i]} for i in sorted(held)]}
    report.update(said_of_purge)
    if json_out:
        emit(report)
    else:
        out.print(f"removed {counted(len(removed), 'item')}; memory now holds {count:,}")
        if verify and not found:
            out.print(f"verified: none of {counted(len(prints), 'fingerprint')} of the removed items is in "
                      f"the {counted(files, 'file')} of {memdir} ({counted(scanned, 'byte')})")
    if not purged and removed:
        err.print(f"no search finds the {counted(len(removed), 'item')} removed. Milvus deletes logically: their bytes "
                  "stay in its storage until it compacts (requested now) and garbage-collects, and in its "
                  "message log for its retention time")
    if verify and held:
        err.print(f"note: {_still_held(held)} (added again with --allow-duplicates), so those bytes stay in "
                  f"{memdir}'s files and are not counted as remnants: remove those items too to erase them")
    if verify and found:
        first = found[0]
        err.print(f"warning: removed, but {len(found)} remnants of removed items found, e.g. item "
                  f"{first.item_id}'s {first.kind} in {first.file} at offset {first.offset}")
        raise typer.Exit(EXIT_PARTIAL)
    exit_if_missing(missing)


def _still_held(held: dict[int, int], shown: int = 5) -> str:
    """'item 1's content is still held by item 7; ...' for the first `shown` removed items."""
    said = "; ".join(f"item {i}'s content is still held by item {held[i]}" for i in sorted(held)[:shown])
    return said + (f" (and {len(held) - shown:,} more)" if len(held) > shown else "")


@app.command()
def relabel(
    memdir: Path = MemDir,
    ids: List[int] = ids_option(),
    label: str = typer.Option(..., "--label", help="The new label."),
    json_out: bool = JsonFlag,
) -> None:
    """Give items a new label, without re-encoding anything. An item given another label
    has its pruning count v reset to 0 (v counted its votes under the old label): one that
    hard pruning excluded is searched again, until `vismem prune` counts anew (--json:
    reset_prune_counts, how many were un-pruned so)."""
    interrupted_leaves("nothing: no item was relabelled (`vismem relabel` changes its items in one transaction)")
    reported_if_interrupted(json_out, {"relabelled": 0, "ids": []})
    with _open(memdir) as memory, \
            one_transaction(lambda: all_have(memory, ids, label=label), f"the items are labelled {label!r} now",
                            partial(updated, memory, ids, "relabelled")):
        unpruned = memory.unpruned_by(ids, label)
        changed = memory.relabel(ids, label)
    refuse_if_none_done(ids, changed)
    missing = missing_ids(ids, changed)
    if json_out:
        # `updated`, `label` and `reset_prune_counts` as PATCH /items answers them; `relabelled` is the same count
        emit({"relabelled": len(changed), "updated": len(changed), "ids": changed, "label": label,
              "missing": missing, "reset_prune_counts": unpruned})
    else:
        out.print(f"relabelled {counted(len(changed), 'item')} to {label!r}"
                  + (f"; {counted(unpruned, 'item')} un-pruned (pruning count reset to 0)" if unpruned else ""))
    exit_if_missing(missing)


@app.command()
def info(memdir: Path = MemDir, json_out: bool = JsonFlag) -> None:
    """Show item and class counts, encoder, format version, index, disk use and checkpoints."""
    only_reads("info")
    with _open(memdir) as memory:
        data = memory.info() | {"encoding": planned_encoding(memory)}
    if json_out:
        emit(data)
        return
    from rich.table import Table

    out.print(f"memory      {data['path']}")
    out.print(f"items       {data['items']:,} in {counted(data['class_count'], 'class')}")
    out.print(f"encoder     {data['encoder'] or 'none: precomputed vectors'} ({data['dim']}-d)"
              + (f"  id {data['encoder_id']}" if data["encoder"] else ""))
    if data["encoding"]:
        out.print(f"encoding    {data['encoding']['describe']} (here, by default)")
    out.print(f"format      version {data['format_version']}")
    index = data["index"]
    if data.get("home") == "milvus":
        out.print(f"home        Milvus {data['server_version']}; every read {data['consistency']}")
        out.print(f"index       {index['type']} (setting {index['setting']}), {counted(index['size'], 'vector')}, "
                  f"params {index['params']}")
        out.print("thumbnails  " + ("kept in the item rows (Milvus holds them in its query nodes' memory)"
                                    if data["thumbnails"] else
                                    "not kept (created with ?thumbnails=0): explanations show none"))
        out.print(f"storage     {data['storage']}")
    else:
        out.print(f"index       {index['type']} (setting {index['setting']}), {counted(index['size'], 'vector')}, "
                  f"{counted(index['bytes'], 'byte')} in RAM ({index['bytes_per_vector']:,.0f} per vector), "
                  f"{counted(index['tombstones'], 'removed slot')} not yet compacted")
    quality = index["quality"]
    if quality:
        # quality["size"] is the item count when it was measured, not now
        if quality["measured_on"] == "exact search":  # exact at any size: no count to give
            out.print(f"recall      {quality['recall']:.3f} @{quality['k']}: exact search")
        else:
            out.print(f"recall      {quality['recall']:.3f} @{quality['k']} vs exact search (target "
                      f"{quality['target']}), measured when the memory held {counted(quality['size'], 'item')}, on "
                      f"{Quality.from_dict(quality).describe()}")
        fresh = index.get("fresh_adds")
        if fresh:
            out.print(f"            fresh adds now: {fresh['recall']:.3f} over {counted(fresh['queries'], 'query')} "
                      f"(95% interval {fresh['low']:.3f}-{fresh['high']:.3f})")
        out.print(f"intrinsic   dimension {_intrinsic_dim(data['intrinsic_dim_estimate'], data)}")
    if data.get("recorded_queries"):
        out.print(f"queries     {counted(data['recorded_queries'], 'query')} recorded to tune on "
                  "(`vismem record-queries`)")
    if index["warning"]:
        err.print(f"warning: {index['warning']}")
    _print_footprint(data)
    _print_decisions(data)
    if data["classes"]:
        table = Table("label", "items")
        for label, count in data["classes"].items():
            table.add_row(printable(label), f"{count:,}")
        out.print(table)


def _intrinsic_dim(estimate: dict | None, data: dict) -> str:
    """`info`'s intrinsic dimension and the items it was estimated on, as they stand now: a
    figure made partly on items removed since is no longer the memory's, and says so."""
    if estimate is None:
        return "n/a (not estimated)"
    value, removed, added = estimate["value"], estimate["removed_since"], estimate["added_since"]
    made = f"estimated at {counted(estimate['items'], 'item')}"
    if removed:
        # an estimate takes each item's nearest others: 3 items at least (tuner.own_vectors)
        again = (f"`vismem compact {data['path']}` estimates it again" if data["items"] >= 3
                 else "too few items now to estimate it")
        return (f"not estimated on the items held now: {value:.1f} was {made}, {removed:,} of them removed since"
                + (f" and {added:,} added" if added else "") + f"; {again}")
    return f"{value:.1f} (Levina-Bickel MLE, {made}" + (f"; {added:,} added since)" if added else ")")


def _print_footprint(data: dict) -> None:
    """`info`'s lines on what the memory keeps on disk: its bytes, its checkpoints' rows."""
    if data["disk_bytes"] is not None:
        out.print(f"on disk     {counted(data['disk_bytes'], 'byte')}")
    held = data.get("checkpoints")
    if held is not None:
        out.print(f"checkpoints {held['count']:,}, holding {counted(held['item_rows'], 'item row')} "
                  "(`vismem checkpoints` lists them)" if held["count"] else "checkpoints none")


def _print_decisions(data: dict) -> None:
    """`info`'s lines on how the memory decides: defaults, transform, prototypes, pruning,
    abstention, with a warning when the transform or the calibration is stale."""
    d = data["defaults"]
    out.print(f"defaults    k={d['k']} vote={d['vote']} alpha={d['alpha']} tau={d['tau']} mix={d['mix']}")
    transform = data.get("transform")
    if transform and transform["name"] != "none":
        out.print(f"transform   {transform['name']}: fitted on {counted(transform['fitted_items'], 'item')}, "
                  f"{transform['out_dim']}-d as searched; since then {transform['changed_since']:.0%} of the items "
                  f"changed, the mean moved {transform['mean_drift']:.3f} spreads")
        if transform["retune"]:
            err.print(f"warning: the memory has drifted from its feature transform: run `vismem tune "
                      f"{data['path']}` to refit it")
    elif transform:
        out.print("transform   none (vectors searched as stored; `vismem tune` may choose one)")
    abstain = data["abstain"]
    calibrated = "not calibrated"
    if abstain:
        calibrated = (f"threshold {abstain['threshold']:.4f} (TPR {abstain['tpr']:.0%}, prototype weight "
                      f"{abstain['prototype_weight']:g})")
        if abstain["transform_changed"]:
            calibrated += ", measured through another feature transform"
        elif abstain.get("changed_since") is not None:
            calibrated += f", {abstain['changed_since']:.0%} of the memory changed since"
    out.print(f"decisions   {counted(data['prototypes_per_class'], 'prototype')} per class; "
              f"pruning {data['pruning']['mode']} ({data['pruning']['excluded']:,} excluded); abstention {calibrated}")
    if abstain and (abstain["transform_changed"] or (abstain.get("changed_since") is not None
                                                     and abstain["changed_since"] > STALE_FRACTION)):
        err.print(f"warning: the abstention threshold is stale: run `vismem calibrate {data['path']}` again")


@app.command("eval")
def evaluate(
    memdir: Path = MemDir,
    testdir: Optional[Path] = typer.Argument(None, readable=False, parser=given_path, show_default=False,
                                             help="Test set in class-subfolder layout."),
    queries: Optional[Path] = typer.Option(None, "--queries", metavar="Q.npy",
                                           help="Test vectors instead of a folder: a .npy array (n, dim); "
                                                "their true labels in --labels."),
    labels: Optional[Path] = typer.Option(None, "--labels", metavar="FILE",
                                          help="With --queries: a .npy array of n labels, "
                                          "or a text file with one label per line."),
    k: Optional[int] = KOpt,
    vote: Optional[str] = VoteOpt,
    alpha: Optional[float] = AlphaOpt,
    tau: Optional[float] = TauOpt,
    mix: Optional[float] = MixOpt,
    device: Optional[str] = DeviceOpt,
    runtime: str = RuntimeOpt,
    precision: str = PrecisionOpt,
    batch_size: Optional[int] = BatchSizeOpt,
    decode_workers: Optional[int] = DecodeWorkersOpt,
    json_out: bool = JsonFlag,
) -> None:
    """Accuracy of the memory on a labelled test folder (root/<label>/<image>), or on
    test vectors (--queries Q.npy) with their true labels (--labels).

    A test image or vector the memory holds (the same content) finds itself: it is scored
    all the same, with a warning saying how many (--json: in_memory, in_memory_items).
    A k larger than the memory can give is warned of too (--json: k_used, the most
    neighbours that voted on a test input).
    """
    from ..evaluate import evaluate_folder, evaluate_vectors
    from ..images import find_images

    only_reads("eval")
    options = _vote_options(k, vote, alpha, tau, mix)
    if (testdir is None) == (queries is None) or (labels is None) != (queries is None):
        raise typer.BadParameter("give a test folder, or --queries Q.npy with --labels",
                                 param_hint="TESTDIR / --queries / --labels")
    with _open(memdir, encoder_options(device, runtime, precision, batch_size, decode_workers)) as memory:
        if queries is not None and labels is not None:
            vectors = load_queries(queries, memory.dim)  # (no names: eval reports counts, not rows)
            total, unit = len(vectors), "vectors"
            if not total:
                raise InvalidInputError(f"nothing to evaluate: --queries {queries} has no rows")
            with progress_bar("evaluating", total) as advance:
                report = evaluate_vectors(memory, vectors, load_labels(labels), progress=advance,
                                          name=str(queries), **options)
        else:
            assert testdir is not None
            total, unit = len(find_images([testdir])[0]), "images"
            if not total:
                raise InvalidInputError(f"nothing to evaluate: {testdir} has no images in class subfolders "
                                        "(root/<label>/<image>)")
            with progress_bar(f"evaluating ({encoding(memory)})", total) as advance:
                report = evaluate_folder(memory, testdir, progress=advance, **options)
    if not report.total:
        for s in report.skipped:
            err.print(f"skipped {printable(s.path)}: {printable_message(s.reason)}")
        raise VismemError(f"nothing to evaluate: none of the {total} {unit} in {testdir or queries} could be read")
    if json_out:
        emit(report.to_dict())
    else:
        out.print(f"accuracy {report.accuracy:.2%} on {report.total} {unit} "
                  f"(k={report.vote['k']}, vote={report.vote['vote']})")
        width = widest(map(printable, report.per_class), 12)
        for label, acc in report.per_class.items():
            unanswered = report.abstained.get(label, 0)
            out.print(f"  {padded(printable(label), width, right=True)}  {acc:.2%}"
                      + (f"  ({unanswered} given no label)" if unanswered else ""))
        for s in report.skipped:
            err.print(f"skipped {printable(s.path)}: {printable_message(s.reason)}")
    _warn_if_k_capped(report.vote["k"], report.k_used)
    _warn_of_test_data(report, unit)
    if report.skipped:
        raise typer.Exit(EXIT_SKIPPED)


def _warn_of_test_data(report: EvalReport, unit: str) -> None:
    """What about the test set makes `eval`'s accuracy mislead, on stderr."""
    if report.in_memory:  # as tune-index warns of query images the memory holds
        err.print(f"warning: the memory already holds {len(report.in_memory)} of the {report.total} test {unit} "
                  f"(the same content): each finds itself, so the accuracy overstates what unseen {unit} would "
                  f"get; evaluate on {unit} the memory has not seen (--json: in_memory_items)")
    if report.unknown_labels:
        err.print(f"warning: no item of the memory is labelled {' or '.join(map(repr, report.unknown_labels))}: "
                  "test inputs of these labels cannot be answered right (add such items, or leave them out)")


@app.command()
def explain(
    memdir: Path = MemDir,
    image: Optional[Path] = typer.Argument(None, readable=False, parser=given_path, show_default=False,
                                           help="Image to classify and explain."),
    queries: Optional[Path] = typer.Option(None, "--queries", metavar="Q.npy",
                                           help="A query vector instead of an image: a .npy file of one (dim,) "
                                                "vector, or of (n, dim) with --row."),
    row: Optional[int] = number_option(None, "--row", kind=int, min=0, metavar="N",
                                       help="Which row of --queries to explain (needed when it holds several)."),
    output: Path = typer.Option(Path("explanation.png"), "--out", "-o", metavar="FILE",
                                help="Where to write the sheet (PNG)."),
    k: Optional[int] = KOpt,
    vote: Optional[str] = VoteOpt,
    alpha: Optional[float] = AlphaOpt,
    tau: Optional[float] = TauOpt,
    mix: Optional[float] = MixOpt,
    abstain: bool = AbstainOpt,
    counterfactual: bool = CounterfactualOpt,
    only_labels: Optional[List[str]] = OnlyLabelOpt,
    only_sources: Optional[List[str]] = OnlySourceOpt,
    where: Optional[List[str]] = WhereOpt,
    device: Optional[str] = DeviceOpt,
    runtime: str = RuntimeOpt,
    precision: str = PrecisionOpt,
    json_out: bool = JsonFlag,
) -> None:
    """Write a visual explanation sheet: the query and its neighbours' thumbnails; with
    --counterfactual, also what would change the decision. Decides as `classify` does,
    with the same options; a vector query (--queries) shows as a blank tile, as do
    neighbours with no thumbnail stored (added as vectors, or imported from an export
    written without --thumbnails), which a note on stderr counts."""
    from ..explain import decision_table, explanation_sheet
    from ..images import decode_image

    only_reads("explain")
    if (image is None) == (queries is None) or (row is not None and queries is None):
        raise typer.BadParameter("give an image, or --queries Q.npy (with --row N to pick one of several)",
                                 param_hint="IMAGE / --queries / --row")
    options = _decision_options(k, vote, alpha, tau, mix, abstain, only_labels, only_sources, where, counterfactual)
    check_image_path(output, "--out", reading=image)  # before any work, so a typo wastes nothing
    no_picture: list[int] = []

    def thumbnail(item_id: int) -> bytes | None:
        jpeg = memory.thumbnail(item_id)
        if jpeg is None:
            no_picture.append(item_id)
        return jpeg

    with _open(memdir, encoder_options(device, runtime, precision)) as memory:
        warn_if_nothing_matches(memory, options["labels"], options["sources"], options["where"])
        if image is not None:
            decision = memory.classify([image], **options)[0]
            sheet = explanation_sheet(decision, thumbnail, decode_image(image.read_bytes()))
        else:
            assert queries is not None
            vector, name = one_query(queries, row, memory.dim)
            decision = memory.classify_vectors(vector, paths=[name], **options)[0]
            sheet = explanation_sheet(decision, thumbnail)
        images_expected = memory.encoder_name is not None  # (a memory of vectors has no pictures at all)
    save_image(sheet, output)
    if no_picture and images_expected:
        shown_ids = ", ".join(f"#{i}" for i in no_picture[:10]) + (", ..." if len(no_picture) > 10 else "")
        err.print(f"note: {len(no_picture)} of the {counted(len(decision.neighbors), 'neighbour')} ({shown_ids}) "
                  f"{'has' if len(no_picture) == 1 else 'have'} no thumbnail stored, so the sheet shows blank tiles: "
                  "added as vectors, or imported from an export written without --thumbnails "
                  "(`vismem export --thumbnails` keeps them)")
    if json_out:
        emit({**decision.to_dict(), "sheet": str(output)})
    else:
        out.print(decision_table(decision))
        out.print(f"explanation sheet written to {output}")


@app.command()
def encoders(json_out: bool = JsonFlag) -> None:
    """List the encoders that `create --encoder` accepts."""
    from ..encoders import available_encoders

    names = available_encoders()
    if json_out:
        emit(names)
    else:
        for name, description in names.items():
            out.print(f"{name:22} {description}")


@app.command()
def demo(
    encoder: str = typer.Option(OFFLINE_ENCODER, "--encoder", "-e", help="Encoder for the demo memory."),
    per_class: int = number_option(30, "--per-class", kind=int, min=2, help="Memory exemplars per digit class."),
    workdir: Optional[Path] = typer.Option(None, "--workdir", metavar="DIR",
                                           help="Keep images and memory here [default: a temp dir]."),
    json_out: bool = JsonFlag,
) -> None:
    """Run the whole story on scikit-learn's digits, offline: build, classify, explain, add a class, remove."""
    from ..demo import run_demo

    interrupted_leaves(f"{workdir} keeps what the demo made before this point" if workdir
                       else "nothing: the demo's temporary folder is removed")
    summary = run_demo(encoder=encoder, per_class=per_class, workdir=workdir,
                       say=(lambda *a, **k: None) if json_out else out.print)
    if json_out:
        emit(summary)

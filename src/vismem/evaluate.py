"""Measuring a memory: accuracy on a labelled test folder, or on test vectors with labels."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .errors import InvalidInputError, brief_repr
from .images import NOT_IN_A_CLASS_FOLDER, Skipped, find_images
from .memory import Memory
from .vectors import unit_rows, vector_hashes

CHUNK = 4096  # test vectors classified per call, so that progress is reported


@dataclass
class EvalReport:
    """Accuracy overall and per true class, with the confusion counts behind it."""

    accuracy: float
    total: int
    correct: int
    per_class: dict[str, float]
    confusion: dict[str, dict[str, int]]  # true label -> answered label -> count
    vote: dict[str, Any]
    # true label -> queries given no label (abstained, or no neighbour voted): kept out of
    # `confusion`, whose keys are labels, so that a label spelled "None" stays a label
    abstained: dict[str, int] = field(default_factory=dict)
    skipped: list[Skipped] = field(default_factory=list)
    # true labels of the test set that no item of the memory has: their answers cannot be right
    unknown_labels: list[str] = field(default_factory=list)
    # test images whose content the memory holds, path -> item id: each finds itself (leakage)
    in_memory: dict[str, int] = field(default_factory=dict)
    # the most neighbours that voted on a query: `vote["k"]`, or fewer when the memory
    # holds fewer items that vote (then every query had fewer than k)
    k_used: int = 0

    __repr__ = brief_repr  # long lists shown by their ends and length

    def to_dict(self) -> dict[str, Any]:
        return {
            "accuracy": self.accuracy,
            "total": self.total,
            "correct": self.correct,
            "per_class": self.per_class,
            "confusion": self.confusion,
            "abstained": self.abstained,
            **self.vote,  # k, vote, alpha, tau, mix: the vote these answers came from
            "k_used": self.k_used,
            "skipped": [{"path": s.path, "reason": s.reason} for s in self.skipped],
            "unknown_labels": self.unknown_labels,
            "in_memory": len(self.in_memory),
            "in_memory_items": [{"path": path, "id": item_id} for path, item_id in self.in_memory.items()],
        }


def evaluate_folder(
    memory: Memory,
    testdir: str | Path,
    *,
    progress: Callable[[int], None] | None = None,
    **vote_options: Any,
) -> EvalReport:
    """Classify every image of a class-subfolder test set and score the answers.

    A test image whose content the memory holds is scored on its stored vector, as
    `classify` would answer it, and named in `EvalReport.in_memory`: it finds itself
    among its neighbours, so the accuracy overstates what unseen images would get."""
    memory.check_can_decide(**vote_options)  # before any image is encoded
    files, skipped = find_images([testdir])
    # eval takes no --label: its truth is the folder, so the fix is to move the file
    skipped = [Skipped(s.path, f"{NOT_IN_A_CLASS_FOLDER}: move it into a folder named after its class")
               if s.reason.startswith(NOT_IN_A_CLASS_FOLDER) else s for s in skipped]
    held: dict[int, int] = {}  # position -> item id, found as `add` and `tune-index` find held content
    vectors, kept, unreadable = memory.embed_images([f.path for f in files], progress=progress,
                                                    on_held=held.__setitem__)
    truth = [str(files[i].label) for i in kept]  # files found in class subfolders all have one
    report = evaluate_vectors(memory, vectors, truth, skipped=skipped + unreadable, **vote_options)
    scored = set(kept)  # a held image with no direction is skipped, not scored
    report.in_memory = {str(files[i].path): item_id for i, item_id in sorted(held.items()) if i in scored}
    return report


def evaluate_vectors(
    memory: Memory,
    vectors: np.ndarray,
    labels: Sequence[str],
    *,
    skipped: Sequence[Skipped] = (),
    progress: Callable[[int], None] | None = None,
    name: str = "row",
    **vote_options: Any,
) -> EvalReport:
    """Classify query vectors (n, dim) whose true labels are known and score the answers
    (`skipped`: test inputs that could not be read, reported with the score;
    `progress(n)` as n more are classified, CHUNK at a time).

    A row the memory holds (the same bits once made unit length, as `add_vectors` keeps
    them) finds itself: it is scored all the same and named `name[i]` in
    `EvalReport.in_memory`."""
    # one string is the label of every row, as `add_vectors` takes it: list("cat") would be c, a, t
    labels = [labels] * len(vectors) if isinstance(labels, str) else list(labels)
    if len(labels) != len(vectors):
        raise InvalidInputError(f"{len(vectors)} test vectors but {len(labels)} labels: give one label per vector")
    for label in labels:  # an integer 3 is never the stored label "3": every answer would be scored wrong
        if not isinstance(label, str):
            raise InvalidInputError(f"test labels must be strings, as the memory's are, got {type(label).__name__} "
                                    f"{label!r}: give [str(label) for label in labels]")
    vote = memory.check_can_decide(**vote_options).to_dict()  # the vote every decision uses
    confusion: dict[str, Counter] = defaultdict(Counter)  # None counts the queries given no label
    in_memory: dict[str, int] = {}
    k_used = 0
    for start in range(0, len(vectors), CHUNK):  # only the counts are kept: a million queries fit
        chunk = vectors[start : start + CHUNK]
        decisions = memory.classify_vectors(chunk, **vote_options)
        hashes = vector_hashes(unit_rows(chunk, memory.dim))  # (rows classify refused never get here)
        held = memory.known_content(hashes)
        in_memory.update((f"{name}[{start + i}]", held[h]) for i, h in enumerate(hashes) if h in held)
        for true, decision in zip(labels[start : start + CHUNK], decisions, strict=True):
            confusion[true][decision.label] += 1
            k_used = max(k_used, decision.k_used)
        if progress is not None:
            progress(len(decisions))
    total = len(vectors)
    correct = sum(c[label] for label, c in confusion.items())
    per_class = {label: c[label] / sum(c.values()) for label, c in sorted(confusion.items())}
    return EvalReport(
        accuracy=correct / total if total else 0.0,
        total=total,
        correct=correct,
        per_class=per_class,
        confusion={t: {p: n for p, n in c.items() if p is not None} for t, c in sorted(confusion.items())},
        vote=vote,
        abstained={t: c[None] for t, c in sorted(confusion.items())},
        skipped=list(skipped),
        unknown_labels=sorted(set(confusion) - set(memory.class_counts())),
        in_memory=in_memory,
        k_used=k_used,
    )

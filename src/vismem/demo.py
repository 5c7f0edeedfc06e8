"""`vismem demo`: the whole story on real digits, offline, in about 20 s on 2 cores.

1. Build a memory of digits 1-9 and classify held-out images.
2. Explain one decision through its neighbours.
3. Add the digit 0 as a new class at run time, with no training, and recognise it.
4. Remove one exemplar and show that no search returns it again.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .datasets import load_digits_images, split_per_class, write_image_folder
from .decide import Decision
from .evaluate import evaluate_folder
from .explain import decision_table
from .settings import OFFLINE_ENCODER
from .memory import Memory
from .progress import progress_bar

NEW_CLASS = "0"  # ImageNet features separate 0 well; 9 is the digit they confuse most
TEST_PER_CLASS = 10


def run_demo(
    *,
    encoder: str = OFFLINE_ENCODER,
    per_class: int = 30,
    workdir: str | Path | None = None,
    say: Callable[..., Any] = print,
) -> dict[str, Any]:
    """Run the demo and return a summary of what it measured."""
    if workdir is None:
        with tempfile.TemporaryDirectory(prefix="vismem-demo-") as tmp:
            return _run(Path(tmp), encoder, per_class, say)
    return _run(Path(workdir), encoder, per_class, say)


def encoding(description: str, total: int):
    """A progress bar (stderr) for one step's encoding; it disappears when the step is done."""
    return progress_bar(description, total, transient=True)


def prototype_note(decision: Decision) -> str:
    """What the table's 'prototype distance' line means, for this decision."""
    if not decision.prototypes:
        return ""
    nearest = min(decision.prototypes, key=decision.prototypes.__getitem__)
    agree = "agrees with" if nearest == decision.label else "differs from"
    return ("   'prototype distance': the query's cosine distance to each class's prototype (the mean of\n"
            "   its exemplars' vectors), nearest first: a second opinion that needs no neighbours.\n"
            f"   Here the nearest prototype, '{nearest}', {agree} the neighbours' vote.")


def _run(work: Path, encoder: str, per_class: int, say: Callable[..., Any]) -> dict[str, Any]:
    images, labels = load_digits_images()
    train_idx, test_idx = split_per_class(labels, [per_class, TEST_PER_CLASS], seed=0)
    old = [i for i in train_idx if labels[i] != NEW_CLASS]
    new = [i for i in train_idx if labels[i] == NEW_CLASS]
    test_old = [i for i in test_idx if labels[i] != NEW_CLASS]
    test_new = [i for i in test_idx if labels[i] == NEW_CLASS]
    write_image_folder(work / "train", images, labels, old)
    write_image_folder(work / "new_class", images, labels, new)
    write_image_folder(work / "test_old", images, labels, test_old)
    write_image_folder(work / "test_new", images, labels, test_new)
    say(f"1. Build a memory of digits 1-9 ({len(old)} images, encoder {encoder})")

    memory = Memory.create(work / "memory", encoder=encoder)
    with memory:
        with encoding(f"encoding {len(old)} digits", len(old)) as advance:
            memory.add_images([work / "train"], source="digits-train", progress=advance)
        with encoding(f"classifying {len(test_old)} held-out digits", len(test_old)) as advance:
            before = evaluate_folder(memory, work / "test_old", progress=advance)
        say(f"   accuracy on {before.total} held-out digits 1-9: {before.accuracy:.1%}")

        say("2. Explain one decision: the neighbours that voted")
        first = min((work / "test_old").rglob("*.png"))
        decision = memory.classify([first])[0]
        say(decision_table(decision))
        say(prototype_note(decision))

        say(f"3. Add a class at run time: {len(new)} images of the digit {NEW_CLASS}, no training")
        with encoding(f"encoding {len(new)} new digits", len(new)) as advance:
            memory.add_images([work / "new_class"], source="digits-new-class", progress=advance)
        again = len(test_new) + len(test_old)
        with encoding(f"classifying {again} held-out digits", again) as advance:
            on_new = evaluate_folder(memory, work / "test_new", progress=advance)
            after = evaluate_folder(memory, work / "test_old", progress=advance)
        say(f"   new class '{NEW_CLASS}' recognised: {on_new.accuracy:.1%} of {on_new.total}; "
            f"old classes: {before.accuracy:.1%} -> {after.accuracy:.1%}")

        say("4. Remove one exemplar, exactly")
        victim = decision.neighbors[0].id
        victim_vector = memory.vectors([victim])[1]
        memory.remove([victim])
        everyone = memory.search(victim_vector, k=len(memory))[0]
        returned = any(hit.id == victim for hit in everyone)
        say(f"   removed item {victim}; searched all {len(everyone)} items with its own vector: "
            f"{'STILL RETURNED' if returned else 'never returned'}")
        summary = {
            "encoder": encoder,
            "memory_items": len(memory),
            "accuracy_old_classes": before.accuracy,
            "accuracy_old_classes_after_new_class": after.accuracy,
            "accuracy_new_class": on_new.accuracy,
            "explained": decision.to_dict(),
            "removed_id": victim,
            "removed_id_returned": returned,
        }
    return summary

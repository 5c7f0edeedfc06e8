"""Counterfactual explanations: the cost of one, next to the decision it explains.

For a query's ranked candidates (k + max_removals of them, three classes, one class
leading), time `vismem.counterfactual.counterfactual` (the fewest removals and blocks that
change the label, exact for the neighbour votes) and `vismem.decide.decide` on the same
candidates (the decision itself: its vote over the first k), measured in the same run,
best of --repeats. The ratio says how many decisions one explanation costs.

    python benchmarks/counterfactual.py [--ks 20 100 1000] [--max-removals 50]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from functools import partial

import numpy as np

from vismem.counterfactual import counterfactual
from vismem.decide import VoteParams, decide


def best_of(repeats: int, fn: Callable[[], object]) -> float:
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ks", type=int, nargs="+", default=[20, 100, 1000])
    parser.add_argument("--max-removals", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"candidates = k + {args.max_removals}, labels a/b/c at 60/30/10%, best of {args.repeats}")
    for vote in ("rank", "plurality"):
        for k in args.ks:
            m = k + args.max_removals
            sims = np.sort(rng.uniform(0.2, 0.95, m))[::-1]
            labels = rng.choice(["a", "b", "c"], m, p=[0.6, 0.3, 0.1]).tolist()
            weights = np.ones(m)
            ids = np.arange(m)
            params = VoteParams(k=k, vote=vote, alpha=2.0)
            # bound now: each round of the loop times its own case
            explain = partial(counterfactual, sims, ids, labels, weights, params, max_removals=args.max_removals)
            plain = partial(decide, sims[:k], ids[:k].tolist(), labels[:k], ["s"] * k, weights[:k], params)
            found = explain()
            explained, decided = best_of(args.repeats, explain), best_of(args.repeats, plain)
            removed = "none" if found.remove is None else len(found.remove)
            print(f"{vote:9s} k={k:5d}: counterfactual {1e3 * explained:8.2f} ms (removes {removed}), "
                  f"decide {1e3 * decided:6.3f} ms, ratio {explained / decided:7.1f}x")


if __name__ == "__main__":
    main()

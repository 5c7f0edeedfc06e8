"""Counterfactual explanations: the cost of one, next to the decision it explains.

For a query's ranked candidates (k + max_removals of them), time
`vismem.counterfactual.counterfactual` (the fewest removals and blocks that change the
label: exact for the neighbour votes, greedy for the prototype and hybrid votes) and
`vismem.decide.decide` on the same candidates (the decision itself: its vote over the
first k, with the prototypes' similarities for those votes), measured in the same run,
best of --repeats. The ratio says how many decisions one explanation costs.

Neighbour votes: three classes a/b/c at 60/30/10%, one leading. Prototype and hybrid
votes: the nearest items of a 3,000-item, 10-class memory (64-d, 3 prototypes a class)
to a query between two classes.

    python benchmarks/counterfactual.py [--ks 20 100 1000] [--max-removals 50]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from functools import partial

import numpy as np

from vismem.counterfactual import PrototypeClusters, counterfactual
from vismem.decide import VoteParams, decide


def best_of(repeats: int, fn: Callable[[], object]) -> float:
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def neighbour_case(rng: np.random.Generator, m: int) -> tuple:
    sims = np.sort(rng.uniform(0.2, 0.95, m))[::-1]
    labels = rng.choice(["a", "b", "c"], m, p=[0.6, 0.3, 0.1]).tolist()
    return sims, np.arange(m), labels, None


def prototype_case(rng: np.random.Generator, m: int, n: int = 3000, classes: int = 10, per_class: int = 3,
                   dim: int = 64) -> tuple:
    """The m items nearest a query between two classes, and the prototypes as sums."""
    centres = rng.standard_normal((classes, dim))
    y = rng.integers(0, classes, n)
    x = centres[y] + 1.5 * rng.standard_normal((n, dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    cluster = y * per_class + rng.integers(0, per_class, n)
    totals = np.zeros((classes * per_class, dim))
    np.add.at(totals, cluster, x)
    query = centres[0] + centres[1] + rng.standard_normal(dim)
    query /= np.linalg.norm(query)
    order = np.argsort(-(x @ query))[:m]
    clusters = PrototypeClusters(np.array([f"c{p // per_class}" for p in range(classes * per_class)]), totals,
                                 np.bincount(cluster, minlength=classes * per_class), cluster[order], x[order], query)
    return (x @ query)[order], order, [f"c{c}" for c in y[order]], clusters


def nearest_prototypes(clusters: PrototypeClusters | None) -> dict:
    """`decide`'s prototype argument: each class's cosine distance to its nearest prototype."""
    if clusters is None:
        return {}
    sims = clusters.totals @ clusters.query / np.linalg.norm(clusters.totals, axis=1)
    classes = sorted(set(clusters.labels.tolist()))
    return {"prototypes": {c: 1.0 - float(sims[clusters.labels == c].max()) for c in classes}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ks", type=int, nargs="+", default=[20, 100, 1000])
    parser.add_argument("--max-removals", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"candidates = k + {args.max_removals}, best of {args.repeats}")
    for vote in ("rank", "plurality", "prototype", "hybrid"):
        for k in args.ks:
            m = k + args.max_removals
            case = prototype_case if VoteParams(vote=vote).uses_prototypes else neighbour_case
            sims, ids, labels, clusters = case(rng, m)
            weights = np.ones(m)
            params = VoteParams(k=k, vote=vote, alpha=2.0)
            # bound now: each round of the loop times its own case
            explain = partial(counterfactual, sims, ids, labels, weights, params, max_removals=args.max_removals,
                              prototypes=clusters)
            plain = partial(decide, sims[:k], ids[:k].tolist(), labels[:k], ["s"] * k, weights[:k], params,
                            **nearest_prototypes(clusters))
            found = explain()
            assert found.label == plain().label
            explained, decided = best_of(args.repeats, explain), best_of(args.repeats, plain)
            removed = "none" if found.remove is None else len(found.remove)
            blocked = "none" if found.block is None else len(found.block)
            print(f"{vote:9s} k={k:5d}: counterfactual {1e3 * explained:8.2f} ms (removes {removed}, "
                  f"blocks {blocked}), decide {1e3 * decided:6.3f} ms, ratio {explained / decided:7.1f}x")


if __name__ == "__main__":
    main()

"""Does `vismem tune`'s choice beat the shipped defaults on clean data, when the memory's own
labels (which tune scores candidates against) hold noise?

For each noise level and seed: N items of DATASET form the memory, a share of their labels
flipped to another class; the rest, with true labels, is the clean test. `tune.tune` picks
on a held-out split of the memory (as `vismem tune` does); both its pick and the defaults
are then scored on the clean test. Also shown: what a one-standard-error rule would keep
(the defaults, unless the winner beats them by more than one SE of its held-out accuracy).

    PYTHONPATH=src python benchmarks/tune_noise.py [--dataset digits:pixels] [--items 1400] [--seeds 4]
"""

from __future__ import annotations

import argparse
import math

import numpy as np

from vismem.decide import VoteParams
from vismem.evaluation.data import load_dataset
from vismem.evaluation.engine import ArrayMemory, accuracy
from vismem.transform import TransformSpec, fit_transform
from vismem.tune import tune


def clean_accuracy(x_mem, y_mem, x_test, y_test, params: VoteParams, per_class: int, spec: TransformSpec) -> float:
    """Accuracy on the clean test of a memory of (x_mem, y_mem) voting with these settings."""
    fitted = fit_transform(x_mem, spec)
    memory = ArrayMemory(fitted.apply(x_mem), y_mem, per_class=per_class, seed=0)
    found = memory.query(fitted.apply(x_test), min(params.k, len(x_mem)), prototypes=params.uses_prototypes)
    return accuracy(memory.predict(found, params), y_test)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="digits:pixels")
    parser.add_argument("--items", type=int, default=1400)
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--noise", type=float, nargs="+", default=[0.0, 0.05, 0.10])
    args = parser.parse_args()
    data = load_dataset(args.dataset)
    x, y = data.vectors, np.asarray(data.labels)
    classes = sorted(set(y.tolist()))
    print(f"{args.dataset}: {args.items} in memory, {len(x) - args.items} clean test items; "
          "accuracy on the clean test, tuned vs defaults")
    gains, kept = [], []
    for noise in args.noise:
        for seed in range(args.seeds):
            rng = np.random.default_rng(seed)
            order = rng.permutation(len(x))
            mem_rows, test_rows = order[: args.items], order[args.items :]
            y_mem = y[mem_rows].copy()
            for i in rng.choice(len(y_mem), int(noise * len(y_mem)), replace=False):
                y_mem[i] = rng.choice([c for c in classes if c != y_mem[i]])
            result = tune(x[mem_rows], y_mem, seed=0)
            se = math.sqrt(result.accuracy * (1 - result.accuracy) / result.held_out)
            keeps_default = result.default_accuracy is not None and result.default_accuracy >= result.accuracy - se
            default = clean_accuracy(x[mem_rows], y_mem, x[test_rows], y[test_rows], VoteParams(), 1, TransformSpec())
            tuned = clean_accuracy(x[mem_rows], y_mem, x[test_rows], y[test_rows], result.params, result.per_class,
                                   result.transform)
            gains.append(tuned - default)
            kept.append(0.0 if keeps_default else tuned - default)
            print(f"  noise {noise:.2f} seed {seed}: defaults {default:.4f}, tuned {tuned:.4f} "
                  f"({result.transform.name}, {result.params.vote}, k={result.params.k}, {result.per_class}/class), "
                  f"{tuned - default:+.4f}; one-SE rule keeps the defaults: {keeps_default}")
    print(f"mean gain of tune over the defaults: {np.mean(gains):+.4f} (one-SE rule: {np.mean(kept):+.4f}), "
          f"range {min(gains):+.4f} to {max(gains):+.4f}")


if __name__ == "__main__":
    main()

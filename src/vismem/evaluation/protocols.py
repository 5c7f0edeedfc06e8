"""The evaluation protocols, on embeddings: accuracy against k (with a linear probe),
few-shot, class-incremental, out-of-distribution and label noise.

Each protocol takes a `Dataset` (unit vectors and labels) and returns a plain dict
ready for JSON. Train and test come from one stratified split (`split_dataset`), so
every method, the linear probe included, sees the same data.
"""

from __future__ import annotations

import time
from typing import Any, Sequence

import numpy as np

from ..calibrate import (DEFAULT_OOD_K, DEFAULT_TPR, MIN_ITEMS, auroc, fit_calibration, fpr_at_tpr, ood_scores,
                         true_positive_rate)
from ..decide import NEIGHBOUR_VOTES, VoteParams
from ..prune import COUNTS, HARD_THRESHOLD, SOFT_C, SOFT_D, hard_keep, self_query, soft_factors
from ..errors import InvalidInputError
from ..transform import TransformSpec, fit_transform
from .data import Dataset
from .engine import ArrayMemory, accuracy, holdout_split

PROTOCOLS = ("knn", "fewshot", "incremental", "ood", "noise")
DEFAULT_VOTE = VoteParams()
RANK_ALPHAS = (1.0, 2.0, 3.0, 5.0, 10.0, 20.0)
TUNE_HELD_OUT = 0.2  # `knn`'s tuned setting: share of each train class held out, as `vismem tune` holds out
UNKNOWN_FRACTION, OOD_DRAWS = 0.3, 5  # `ood`: share of the classes held out as unknown; draws of them
DEFAULT_KS = (1, 2, 3, 5, 7, 10, 15, 20, 30, 40, 50, 60, 70, 80, 90, 100)
# `knn` reports every rule through each of these (fitted on the train split alone)
REPORTED_TRANSFORMS = (
    TransformSpec("none"),
    TransformSpec("center"),
    TransformSpec("whiten", components=256, shrinkage=0.1),
    TransformSpec("whiten", components=256, shrinkage=0.1, power=0.5),
)


def split_dataset(data: Dataset, test_fraction: float = 0.3, seed: int = 0):
    """(train vectors, train labels, test vectors, test labels), stratified."""
    train, test = holdout_split(data.labels, test_fraction, seed)
    return data.vectors[train], data.labels[train], data.vectors[test], data.labels[test]


def describe_split(data: Dataset, test_fraction: float = 0.3, seed: int = 0) -> dict[str, int]:
    """The split every protocol uses: train and test sizes, and `test_rows_in_train`, how
    many test rows have an identical row (the same bits) in train: kNN finds such a twin at
    distance 0, so every accuracy flatters, as `eval` warns of test vectors the memory holds."""
    from ..vectors import vector_hashes

    train, test = holdout_split(data.labels, test_fraction, seed)
    hashes = vector_hashes(data.vectors)
    seen = {hashes[r] for r in train.tolist()}
    return {"train": len(train), "test": len(test), "test_rows_in_train": sum(hashes[r] in seen for r in test.tolist())}


def linear_probe(train_x, train_y, test_x, test_y, *, cs: Sequence[float] = (0.1, 1.0),
                 seed: int = 0) -> dict[str, Any]:
    """Logistic regression on the same embeddings; C chosen on a split of train only."""
    fit_rows, val_rows = holdout_split(train_y, 0.2, seed)
    best_c, best_acc = cs[0], -1.0
    if len(val_rows) and len(set(train_y[fit_rows].tolist())) > 1:
        for c in cs:
            model = _probe_model(c).fit(train_x[fit_rows], train_y[fit_rows])
            acc = accuracy(model.predict(train_x[val_rows]), train_y[val_rows])
            if acc > best_acc:
                best_c, best_acc = c, acc
    model = _probe_model(best_c).fit(train_x, train_y)
    return {"accuracy": accuracy(model.predict(test_x), test_y), "C": best_c}


def _probe_model(c: float):
    """Standardised features + multinomial logistic regression (standardising makes lbfgs
    converge in tens of iterations instead of thousands on raw unit vectors)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=500, tol=1e-3))


def knn_curves(train_x, train_y, test_x, test_y, ks: Sequence[int], per_class: Sequence[int] = (1, 4),
               seed: int = 0) -> dict[str, Any]:
    """Accuracy at every k for each neighbour rule (default alpha, tau) and the hybrid, and
    prototypes (1 and several per class), on vectors as given."""
    mem = ArrayMemory(train_x, train_y, per_class=per_class[0], seed=seed)
    neighbours = mem.query(test_x, max(ks))
    curves: dict[str, list[float]] = {}
    for rule in (*NEIGHBOUR_VOTES, "hybrid"):
        curves[rule] = [accuracy(mem.predict(neighbours, VoteParams(k=k, vote=rule)), test_y) for k in ks]
    prototypes = {}
    for m in per_class:
        pm = mem if m == per_class[0] else ArrayMemory(train_x, train_y, per_class=m, seed=seed)
        nb = neighbours if pm is mem else pm.query(test_x, 1)
        prototypes[str(m)] = accuracy(pm.predict(nb, VoteParams(k=1, vote="prototype")), test_y)
    best_rule = max(NEIGHBOUR_VOTES, key=lambda r: max(curves[r]))
    best_i = int(np.argmax(curves[best_rule]))
    # how far rank voting falls below plurality at its worst k >= 10, per alpha (< 0: below)
    wide = [i for i, k in enumerate(ks) if k >= 10]
    margin = {f"{a:g}": min((accuracy(mem.predict(neighbours, VoteParams(k=ks[i], alpha=a)), test_y)
                             - curves["plurality"][i] for i in wide), default=0.0) for a in RANK_ALPHAS}
    return {
        "curves": curves, "prototypes": prototypes,
        "best_knn": {"vote": best_rule, "k": ks[best_i], "accuracy": curves[best_rule][best_i]},
        "rank_ge_plurality_at_k_ge_10": all(
            r >= p - 1e-12 for k, r, p in zip(ks, curves["rank"], curves["plurality"], strict=False) if k >= 10),
        "rank_minus_plurality_worst_k_ge_10_by_alpha": margin,
    }


def accuracy_vs_k(data: Dataset, *, ks: Sequence[int] = DEFAULT_KS, per_class: Sequence[int] = (1, 4),
                  transforms: Sequence[TransformSpec] = REPORTED_TRANSFORMS, test_fraction: float = 0.3,
                  seed: int = 0, probe: bool = True) -> dict[str, Any]:
    """Accuracy against k for every rule through each feature transform (fitted on train
    alone), prototypes, the setting `vismem tune` picks on train, and the linear probe.

    The top-level `curves`, `prototypes`, `best_knn` are those with no transform;
    `transforms` holds the same per transform name."""
    train_x, train_y, test_x, test_y = split_dataset(data, test_fraction, seed)
    ks = [k for k in ks if k <= len(train_y)]
    by_transform: dict[str, Any] = {}
    for spec in transforms:
        try:
            fitted = fit_transform(train_x, spec)
        except InvalidInputError as exc:  # e.g. whitening data with no variance
            by_transform[spec.name] = {"error": str(exc)}
            continue
        by_transform[spec.name] = {"spec": spec.to_dict(), **knn_curves(
            fitted.apply(train_x), train_y, fitted.apply(test_x), test_y, ks, per_class, seed)}
    plain = by_transform.get("none") or knn_curves(train_x, train_y, test_x, test_y, ks, per_class, seed)
    result: dict[str, Any] = {
        "ks": ks, **{key: plain[key] for key in ("curves", "prototypes", "best_knn", "rank_ge_plurality_at_k_ge_10")},
        "transforms": by_transform, "train": int(len(train_y)), "test": int(len(test_y)),
    }
    # the setting `vismem tune` would pick, chosen on train alone, scored on test
    result["tuned"] = _tuned(train_x, train_y, test_x, test_y, seed)
    if probe:
        result["linear_probe"] = linear_probe(train_x, train_y, test_x, test_y, seed=seed)
        if "accuracy" in result["tuned"]:
            result["tuned_minus_probe"] = result["tuned"]["accuracy"] - result["linear_probe"]["accuracy"]
        result["best_knn_minus_probe"] = result["best_knn"]["accuracy"] - result["linear_probe"]["accuracy"]
        for entry in by_transform.values():
            if "best_knn" in entry:
                entry["best_knn_minus_probe"] = entry["best_knn"]["accuracy"] - result["linear_probe"]["accuracy"]
    return result


def _tuned(train_x, train_y, test_x, test_y, seed: int) -> dict[str, Any]:
    """The setting `vismem tune` picks on train alone, scored on test; {"error": why} where
    train is too small to choose one (the other knn figures stand: tune's own error sank them
    all, and named `vismem tune --held-out`, which this does not run)."""
    from ..tune import tune

    held = len(holdout_split(train_y, TUNE_HELD_OUT, seed)[1])
    if held < 2:  # tune's own error would name `vismem tune --held-out`
        return {"error": f"not measured: choosing a setting as `vismem tune` does holds out {TUNE_HELD_OUT:.0%} "
                         f"of each class of the train split (none of a class with one item) and needs at least 2; "
                         f"of {len(train_y)} train items in {len(set(train_y.tolist()))} classes it holds out {held}"}
    try:
        chosen = tune(train_x, train_y, held_out=TUNE_HELD_OUT, seed=seed)
    except InvalidInputError as exc:
        return {"error": f"not measured: {exc}"}
    fitted = fit_transform(train_x, chosen.transform)
    tuned_mem = ArrayMemory(fitted.apply(train_x), train_y, per_class=chosen.per_class, seed=seed)
    tuned_acc = accuracy(tuned_mem.predict(tuned_mem.query(fitted.apply(test_x), chosen.params.k), chosen.params),
                         test_y)
    return {**chosen.params.to_dict(), "prototypes_per_class": chosen.per_class,
            "transform": chosen.transform.name, "accuracy": tuned_acc,
            "held_out_accuracy": chosen.accuracy, "held_out_by_transform": chosen.by_transform}


MIN_DRAWS = 2  # a confidence interval needs two draws at least (`vismem eval-protocols --draws` alike)


def check_draws(draws: int) -> None:
    """Raise InvalidInputError unless `draws` can give an interval: one draw has no spread
    to measure (its interval came out NaN, which is not JSON either)."""
    if isinstance(draws, bool) or not isinstance(draws, (int, np.integer)) or draws < MIN_DRAWS:
        raise InvalidInputError(f"draws must be an integer of at least {MIN_DRAWS} (got {draws!r}): the few-shot "
                                f"figures are a mean and a 95% confidence interval over the draws, and one draw "
                                f"has no interval")


def _mean_ci(values: Sequence[float]) -> dict[str, float]:
    """Mean and 95% confidence interval (Student t) over MIN_DRAWS draws or more."""
    from scipy import stats

    drawn = np.asarray(values, dtype=np.float64)
    half = float(stats.t.ppf(0.975, len(drawn) - 1) * drawn.std(ddof=1) / np.sqrt(len(drawn)))
    return {"mean": float(drawn.mean()), "ci95": half, "draws": int(len(drawn))}


def few_shot(data: Dataset, *, shots: Sequence[int] = (1, 5, 10), draws: int = 10, k: int = 10,
             test_fraction: float = 0.3, seed: int = 0, probe: bool = True) -> dict[str, Any]:
    """n examples per class drawn from train, several draws; kNN (rank), prototypes, probe.

    A class with fewer than n train items gives all it has: `per_class[n]` says how many
    were drawn (`least`, `most`, and `short`: each such class and its count). A shot count
    no class can fill is skipped (`skipped[n]` says why): every draw would be the whole
    train split, which `knn` reports, not an n-shot figure. `shots` lists those run.
    The kNN vote asks for `k` neighbours; `k_used[n]` says how many voted at n shots (the
    items drawn, where they are fewer than k).
    `draws` is at least 2 (InvalidInputError): each figure's interval is over them."""
    check_draws(draws)
    train_x, train_y, test_x, test_y = split_dataset(data, test_fraction, seed)
    rng = np.random.default_rng(seed)
    classes = sorted(set(train_y.tolist()))
    members = {c: np.flatnonzero(train_y == c) for c in classes}
    most = max(len(rows) for rows in members.values())
    out: dict[str, Any] = {}
    per_class: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    k_used: dict[str, int] = {}
    for n in shots:
        if n > most:
            skipped[str(n)] = f"no class has {n} items in the train split (the most is {most})"
            continue
        drawn = {c: min(n, len(rows)) for c, rows in members.items()}
        per_class[str(n)] = {"least": min(drawn.values()), "most": max(drawn.values()),
                             "short": {c: m for c, m in drawn.items() if m < n}}
        k_used[str(n)] = min(k, sum(drawn.values()))  # the items drawn: all vote when fewer than k
        runs: dict[str, list[float]] = {"rank": [], "prototype": [], **({"linear_probe": []} if probe else {})}
        for _ in range(draws):
            rows = np.concatenate([rng.choice(members[c], drawn[c], replace=False) for c in classes])
            mem = ArrayMemory(train_x[rows], train_y[rows], classes=classes)
            nb = mem.query(test_x, min(k, len(rows)))
            runs["rank"].append(accuracy(mem.predict(nb, VoteParams(k=min(k, len(rows)))), test_y))
            runs["prototype"].append(accuracy(mem.predict(nb, VoteParams(k=1, vote="prototype")), test_y))
            if probe:
                model = _probe_model(1.0).fit(train_x[rows], train_y[rows])
                runs["linear_probe"].append(accuracy(model.predict(test_x), test_y))
        out[str(n)] = {method: _mean_ci(values) for method, values in runs.items()}
    return {"shots": [int(n) for n in shots if str(n) in out], "results": out, "per_class": per_class,
            "skipped": skipped, "k": k, "k_used": k_used}


def class_incremental(data: Dataset, *, steps: int = 5, params: VoteParams = DEFAULT_VOTE,
                      test_fraction: float = 0.3, seed: int = 0) -> dict[str, Any]:
    """Add the classes in `steps` groups; after each, accuracy on all seen classes and on
    the old ones before and after the addition, for kNN and nearest class mean."""
    train_x, train_y, test_x, test_y = split_dataset(data, test_fraction, seed)
    classes = np.random.default_rng(seed).permutation(sorted(set(train_y.tolist()))).tolist()
    groups = [g.tolist() for g in np.array_split(np.asarray(classes, dtype=object), min(steps, len(classes)))]
    methods = {"knn": params, "prototype": VoteParams(k=1, vote="prototype")}
    history: dict[str, list[dict[str, Any]]] = {m: [] for m in methods}
    seen: list[str] = []
    previous_old: dict[str, float] = {}
    for step, group in enumerate(groups):
        old = list(seen)
        seen += group
        rows = np.isin(train_y, seen)
        mem = ArrayMemory(train_x[rows], train_y[rows])
        test_rows = np.isin(test_y, seen)
        nb = mem.query(test_x[test_rows], params.k)
        for name, p in methods.items():
            predicted = mem.predict(nb, p)
            truth = test_y[test_rows]
            entry = {"step": step + 1, "classes": len(seen), "new": group, "accuracy": accuracy(predicted, truth)}
            is_old = np.isin(truth, old)
            if old:
                entry["old_before"] = previous_old[name]
                entry["old_after"] = accuracy(predicted[is_old], truth[is_old])
            entry["new_accuracy"] = accuracy(predicted[~is_old], truth[~is_old])
            previous_old[name] = entry["accuracy"]  # all classes seen now are "old" at the next step
            history[name].append(entry)
    return {
        "steps": len(groups), "vote": params.to_dict(),
        "history": history,
        "average_incremental_accuracy": {m: float(np.mean([e["accuracy"] for e in h])) for m, h in history.items()},
        "max_old_class_drop": {m: max([e["old_before"] - e["old_after"] for e in h if "old_after" in e], default=0.0)
                               for m, h in history.items()},
    }


def out_of_distribution(data: Dataset, *, unknown_fraction: float = UNKNOWN_FRACTION, k: int = DEFAULT_OOD_K,
                        tpr: float = DEFAULT_TPR, test_fraction: float = 0.3, seed: int = 0,
                        draws: int = OOD_DRAWS) -> dict[str, Any]:
    """Hold some classes out of memory as unknown; score test queries by kNN distance,
    prototype distance and their sum; AUROC, FPR at `tpr`; and the abstention score and
    threshold `vismem calibrate` fits on the memory alone (its prototype weight chosen
    there), with the TPR and FPR that threshold reaches on test.

    Which classes are unknown matters a lot, so `draws` different draws of them are
    scored; the top-level figures are means over draws, `draws` holds each."""
    check_ood(data, unknown_fraction=unknown_fraction, k=k, test_fraction=test_fraction, seed=seed, draws=draws)
    train_x, train_y, test_x, test_y = split_dataset(data, test_fraction, seed)
    runs = [_ood_draw(train_x, train_y, test_x, test_y, unknown_fraction, k, tpr, seed + i) for i in range(draws)]
    mean = lambda key: float(np.mean([r[key] for r in runs]))  # noqa: E731
    fpr_key = f"fpr_at_{int(tpr * 100)}tpr"
    return {
        "k": k, "target_tpr": tpr,
        "scores": {name: {"auroc": float(np.mean([r["scores"][name]["auroc"] for r in runs])),
                          fpr_key: float(np.mean([r["scores"][name][fpr_key] for r in runs]))}
                   for name in runs[0]["scores"]},
        "prototype_weight_chosen": [r["prototype_weight"] for r in runs],
        "test_tpr_at_threshold": mean("test_tpr_at_threshold"), "test_fpr_at_threshold": mean("test_fpr_at_threshold"),
        "draws": runs,
    }


def _unknown_classes(train_y, test_y, unknown_fraction: float, seed: int) -> list[str]:
    """The classes one draw holds out as unknown: drawn among those with test items, and one
    of those stays known (a class too small to reach the test split would give no unknown
    queries to score)."""
    tested = sorted(set(test_y.tolist()))
    if len(tested) < 2:
        raise InvalidInputError(f"the ood protocol needs test items of at least 2 classes, one held out as "
                                f"unknown; the test split has {len(tested)}: give more items per class")
    classes = np.random.default_rng(seed).permutation(tested).tolist()
    return classes[: min(max(1, int(round(unknown_fraction * len(set(train_y.tolist()))))), len(tested) - 1)]


def check_ood(data: Dataset, *, unknown_fraction: float = UNKNOWN_FRACTION, k: int = DEFAULT_OOD_K,
              test_fraction: float = 0.3, seed: int = 0, draws: int = OOD_DRAWS) -> None:
    """Raise InvalidInputError unless every draw of `out_of_distribution` leaves enough known
    items to calibrate on (checked before any protocol runs: calibration's own error came
    after the others had run, and counted the known items as "the memory")."""
    _, train_y, _, test_y = split_dataset(data, test_fraction, seed)
    least = max(MIN_ITEMS, k + 1)  # calibration scores each item by its k-th nearest other
    for i in range(draws):
        known = int((~np.isin(train_y, _unknown_classes(train_y, test_y, unknown_fraction, seed + i))).sum())
        if known < least:
            raise InvalidInputError(
                f"the ood protocol calibrates abstention on the known classes' train split, {known} items here "
                f"(of {len(data.labels)}: {test_fraction:.0%} of each class held out for testing, some classes as "
                f"unknown), and calibration needs at least {least}: give more items per class, or leave ood out")


def _ood_draw(train_x, train_y, test_x, test_y, unknown_fraction: float, k: int, tpr: float,
              seed: int) -> dict[str, Any]:
    unknown = _unknown_classes(train_y, test_y, unknown_fraction, seed)
    known_rows = ~np.isin(train_y, unknown)
    mem = ArrayMemory(train_x[known_rows], train_y[known_rows])
    in_rows, out_rows = ~np.isin(test_y, unknown), np.isin(test_y, unknown)
    nb = mem.query(test_x, max(k, 10))
    parts = {f"neighbour_{k}_distance": nb.kth_distance(k), "neighbour_10_distance": nb.kth_distance(10),
             "prototype_distance": nb.prototype_distance()}
    parts[f"neighbour_{k}+prototype"] = ood_scores(parts[f"neighbour_{k}_distance"], parts["prototype_distance"])
    # calibration as `vismem calibrate` does it: on the memory itself, prototype weight measured there
    calibration = fit_calibration(train_x[known_rows], train_y[known_rows], tpr=tpr, k=k, seed=seed)
    parts["abstention"] = ood_scores(parts[f"neighbour_{k}_distance"], parts["prototype_distance"],
                                     calibration.prototype_weight)
    return {
        "unknown_classes": unknown,
        "scores": {name: {"auroc": auroc(s[in_rows], s[out_rows]),
                          f"fpr_at_{int(tpr * 100)}tpr": fpr_at_tpr(s[in_rows], s[out_rows], tpr)}
                   for name, s in parts.items()},
        "prototype_weight": calibration.prototype_weight, "calibration_auroc": calibration.auroc,
        "calibrated_threshold": calibration.threshold,
        "test_tpr_at_threshold": true_positive_rate(parts["abstention"][in_rows], calibration.threshold),
        "test_fpr_at_threshold": true_positive_rate(parts["abstention"][out_rows], calibration.threshold),
        "in_queries": int(in_rows.sum()), "out_queries": int(out_rows.sum()),
    }


def corrupt_labels(labels: np.ndarray, fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(noisy labels, mask of corrupted rows): `fraction` of rows get a different random class."""
    rng = np.random.default_rng(seed)
    classes = np.asarray(sorted(set(labels.tolist())))
    noisy = labels.copy()
    flip = rng.permutation(len(labels))[: int(round(fraction * len(labels)))]
    for r in flip:
        noisy[r] = rng.choice(classes[classes != labels[r]])
    mask = np.zeros(len(labels), dtype=bool)
    mask[flip] = True
    return noisy, mask


def label_noise(data: Dataset, *, noise: Sequence[float] = (0.0, 0.2, 0.4, 0.6), params: VoteParams = DEFAULT_VOTE,
                threshold: int = HARD_THRESHOLD, c: float = SOFT_C, d: float = SOFT_D,
                test_fraction: float = 0.3, seed: int = 0) -> dict[str, Any]:
    """Corrupt p of memory labels; accuracy with no, hard and soft pruning (clean test labels)."""
    train_x, train_y, test_x, test_y = split_dataset(data, test_fraction, seed)
    # disagreements are counted on every decision, so they run higher: drop at half of k
    thresholds = {"wrong-decisions": threshold, "disagreements": max(threshold, params.k // 2)}
    rows = []
    for p in noise:
        noisy, flipped = corrupt_labels(train_y, p, seed)
        plain = ArrayMemory(train_x, noisy)
        nb = plain.query(test_x, params.k)
        row: dict[str, Any] = {
            "noise": p,
            "none": accuracy(plain.predict(nb, params), test_y),
            "prototype": accuracy(plain.predict(nb, VoteParams(k=1, vote="prototype")), test_y),
        }
        for count in COUNTS:
            v = self_query(train_x, noisy, params, count=count).v
            keep = hard_keep(v, thresholds[count])
            soft = ArrayMemory(train_x, noisy, factors=soft_factors(v, c, d))
            row[count] = {
                "soft": accuracy(soft.predict(nb, params), test_y),
                "hard": _hard_pruned_accuracy(train_x[keep], noisy[keep], plain.classes, test_x, test_y, params),
                "hard_removed": int((~keep).sum()),
                "hard_removed_were_corrupted": float(flipped[~keep].mean()) if (~keep).any() else 0.0,
            }
        rows.append(row)
    return {"vote": params.to_dict(), "thresholds": thresholds, "c": c, "d": d, "results": rows}


def _hard_pruned_accuracy(train_x, train_y, classes, test_x, test_y, params: VoteParams) -> float:
    """Accuracy of the memory hard pruning left; 0 when it dropped every item (nothing to answer with)."""
    if not len(train_y):
        return 0.0
    hard = ArrayMemory(train_x, train_y, classes=classes)
    return accuracy(hard.predict(hard.query(test_x, params.k), params), test_y)


def check_protocols(protocols: Sequence[str]) -> None:
    """Raise InvalidInputError on a protocol name that is not one (before any data is loaded)."""
    for name in protocols:
        if name not in PROTOCOLS:
            raise InvalidInputError(f"unknown protocol {name!r}; choose from {', '.join(PROTOCOLS)} or all")


def check_data(data: Dataset, test_fraction: float = 0.3, seed: int = 0) -> None:
    """Raise InvalidInputError unless every protocol can run: two classes, and a test split."""
    if len(data.classes) < 2:
        raise InvalidInputError(f"the protocols need at least 2 classes; {data.name} has {len(data.classes)}")
    if not len(holdout_split(data.labels, test_fraction, seed)[1]):
        raise InvalidInputError(f"the protocols hold {test_fraction:.0%} of each class out for testing; "
                                f"{data.name} has too few items per class ({len(data.labels)} items in "
                                f"{len(data.classes)} classes): give at least 2 items of a class")


def run_protocols(data: Dataset, protocols: Sequence[str] = PROTOCOLS, *, seed: int = 0,
                  draws: int = 10, steps: int = 5, probe: bool = True) -> dict[str, Any]:
    """Run the chosen protocols; returns the JSON-ready report with timings."""
    check_protocols(protocols)
    check_data(data, seed=seed)
    if "fewshot" in protocols:
        check_draws(draws)  # before the others run, not after
    if "ood" in protocols:
        check_ood(data, seed=seed)
    report: dict[str, Any] = {"dataset": data.describe(), "seed": seed,
                              "split": describe_split(data, seed=seed)}
    runners = {
        "knn": lambda: accuracy_vs_k(data, seed=seed, probe=probe),
        "fewshot": lambda: few_shot(data, draws=draws, seed=seed, probe=probe),
        "incremental": lambda: class_incremental(data, steps=steps, seed=seed),
        "ood": lambda: out_of_distribution(data, seed=seed),
        "noise": lambda: label_noise(data, seed=seed),
    }
    for name in protocols:
        start = time.perf_counter()
        report[name] = runners[name]()
        report[name]["seconds"] = round(time.perf_counter() - start, 3)
    return report

"""Class prototypes: incremental updates equal a full recompute, in RAM and in a memory on disk."""

import numpy as np
import pytest
from conftest import unit_vectors

from vismem import Memory
from vismem.prototypes import PrototypeSet


def means_by_hand(ids, vectors, labels):
    out = {}
    for label in sorted(set(labels)):
        rows = [i for i, name in enumerate(labels) if name == label]
        m = vectors[rows].astype(np.float64).mean(axis=0)
        out[label] = m
    return out


@pytest.mark.parametrize("per_class", [1, 3])
def test_incremental_equals_full_recompute(per_class):
    rng = np.random.default_rng(0)
    vectors = unit_vectors(300, 16, seed=1)
    labels = [str(x) for x in rng.integers(0, 4, 300)]
    protos = PrototypeSet(per_class=per_class)
    live: set[int] = set()
    for _ in range(30):  # interleaved adds and removes
        new = [i for i in rng.choice(300, 15, replace=False).tolist() if i not in live]
        protos.add(new, vectors[new], [labels[i] for i in new])
        live |= set(new)
        gone = rng.choice(sorted(live), min(6, len(live)), replace=False).tolist()
        protos.remove(gone, vectors[gone])
        live -= set(gone)
    ids = sorted(live)
    full = PrototypeSet.from_assignment(ids, vectors[ids], protos.assignment(), per_class)
    def ordered(p):  # cluster numbers differ between the two; compare class by class, sorted
        matrix, owners = p.prototypes()
        order = np.lexsort((matrix[:, 0], owners))
        return matrix[order], owners[order].tolist()

    np.testing.assert_allclose(ordered(protos)[0], ordered(full)[0], atol=1e-6)
    assert ordered(protos)[1] == ordered(full)[1]
    expected = means_by_hand(ids, vectors[ids], [labels[i] for i in ids])
    names, means = protos.class_means()
    assert names == sorted(expected)
    np.testing.assert_allclose(means, np.stack([expected[n] for n in names]), atol=1e-9)
    assert max(len({c for owner, c in protos.assignment().values() if owner == n}) for n in names) <= per_class


def test_fit_runs_kmeans_within_each_class():
    vectors = unit_vectors(120, 8, seed=2)
    labels = ["a"] * 60 + ["b"] * 60
    protos = PrototypeSet.fit(np.arange(120), vectors, labels, per_class=4)
    matrix, owners = protos.prototypes()
    assert owners.tolist().count("a") == 4 and owners.tolist().count("b") == 4
    classes, sims = protos.class_similarities(vectors[:3])
    assert classes == ["a", "b"] and sims.shape == (3, 2)


def test_memory_keeps_prototypes_in_step_with_edits(tmp_path):
    vectors = unit_vectors(90, 12, seed=3)
    labels = [str(i % 3) for i in range(90)]
    memory = Memory.create(tmp_path / "m", encoder=None, dim=12)
    ids = memory.add_vectors(vectors[:60], labels[:60])
    memory.prototypes()  # built now; every edit below must update it incrementally
    ids += memory.add_vectors(vectors[60:], labels[60:])
    memory.remove(ids[:5])
    memory.relabel(ids[10:14], "2")
    memory.set_weight(ids[20:23], 0.0)  # blocked items stop shaping prototypes
    memory.set_weight(ids[21:22], 2.0)  # ... until unblocked
    incremental = memory.prototypes().class_means()
    memory.close()
    reopened = Memory.open(tmp_path / "m")
    recomputed = reopened.prototypes().class_means()  # a fresh full fit from the store
    assert incremental[0] == recomputed[0]
    np.testing.assert_allclose(incremental[1], recomputed[1], atol=1e-6)
    decision = reopened.classify_vectors(vectors[:1], k=5)[0]
    assert set(decision.prototypes) == {"0", "1", "2"}
    assert reopened.classify_vectors(vectors[:1], k=5, vote="prototype")[0].label == min(
        decision.prototypes, key=decision.prototypes.get)
    reopened.close()


@pytest.mark.filterwarnings("error")  # scikit-learn's ConvergenceWarning on every fit
def test_a_class_of_duplicates_gets_one_prototype_per_distinct_vector():
    """The same image stored twice is common; k-means asked for more clusters than distinct
    vectors warned on every prototype vote. A class gets at most one prototype per distinct
    vector."""
    vectors = np.array([[1, 0, 0], [1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0.6, 0.8]], dtype=np.float32)
    protos = PrototypeSet.fit([1, 2, 3, 4, 5], vectors, ["a", "a", "a", "b", "b"], per_class=3)
    matrix, owners = protos.prototypes()
    assert owners.tolist() == ["a", "b", "b"]
    np.testing.assert_allclose(matrix[0], [1, 0, 0])

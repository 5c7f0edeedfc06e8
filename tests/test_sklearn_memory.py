"""MemoryClassifier over a vismem Memory on disk: the memory's own decisions (as
`Memory.classify_vectors` and `vismem classify` answer), durable adds, exact forgetting,
Pipelines, clones and clear errors. Real memories in tmp_path, real digit vectors."""

import pickle

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from vismem.curate import prune_memory
from vismem.decide import VoteParams
from vismem.errors import MemoryNotFoundError
from vismem.memory import Memory
from vismem.remnants import find_remnants, fingerprints
from vismem.sklearn import MemoryClassifier, MemoryEncoder
from vismem.transform import TransformSpec

from conftest import json_lines


@pytest.fixture(scope="module")
def vectors():
    """Digits as 64-d vectors with string labels: 500 to store, 200 to query."""
    d = load_digits()
    rows = np.random.default_rng(0).permutation(len(d.target))
    x, y = d.data[rows].astype(np.float32), d.target[rows].astype(str)
    return x[:500], y[:500], x[500:700], y[500:700]


def stored(path, x, y) -> Memory:
    memory = Memory.create(path, encoder=None, dim=x.shape[1])
    memory.add_vectors(x, y)
    return memory


def whitened(memory: Memory) -> None:
    memory.set_transform(TransformSpec("whiten", 24, 0.1))


def tuned(memory: Memory) -> None:
    memory.update_settings(vote=VoteParams(k=5, vote="softmax", tau=0.1))


def hybrid_through_whitening(memory: Memory) -> None:
    whitened(memory)
    memory.update_settings(prototypes_per_class=2)


def soft_pruned(memory: Memory) -> None:
    prune_memory(memory, "soft")


def hard_pruned_and_blocked(memory: Memory) -> None:
    prune_memory(memory, "hard")
    memory.set_weight(memory.ids()[::7], 0.0)


@pytest.mark.parametrize(("setup", "params"), [
    (None, {}),
    (tuned, {}),  # unset vote parameters are the memory's defaults
    (hybrid_through_whitening, {"vote": "hybrid", "k": 7, "mix": 0.3}),
    (soft_pruned, {"vote": "rank", "alpha": 1.0}),
    (hard_pruned_and_blocked, {"vote": "plurality", "k": 5}),
    (whitened, {"vote": "prototype", "tau": 0.05}),
])
def test_predict_is_the_memorys_own_decision(tmp_path, vectors, setup, params):
    x, y, tx, _ = vectors
    memory = stored(tmp_path / "m", x, y)
    if setup is not None:
        setup(memory)
    clf = MemoryClassifier(memory=tmp_path / "m", **params).fit()
    assert clf.classes_.tolist() == sorted(set(y.tolist())) and clf.ids_.tolist() == memory.ids()
    with Memory.open(tmp_path / "m") as other:  # as `vismem classify` would open it
        decisions = other.classify_vectors(tx, **params)
        assert clf.transform_.fingerprint == other.transform.fingerprint
        hits = other.search(tx, clf._params.k)
    assert clf.predict(tx).tolist() == [d.label for d in decisions]
    expected = np.array([[d.scores.get(c, 0.0) for c in clf.classes_] for d in decisions])
    np.testing.assert_allclose(clf.predict_proba(tx), expected, atol=1e-12)
    distances, ids = clf.kneighbors(tx)
    assert ids.tolist() == [[h.id for h in row] for row in hits]
    np.testing.assert_allclose(distances, [[max(h.distance, 0.0) for h in row] for row in hits], atol=1e-6)
    if params.get("vote") != "prototype":
        assert ids[:, :3].tolist() == [[n.id for n in d.neighbors[:3]] for d in decisions]


def test_fit_fills_an_empty_memory_and_partial_fit_persists(tmp_path, vectors):
    x, y, tx, ty = vectors
    Memory.create(tmp_path / "m", encoder=None, dim=64).close()
    old = y != "9"
    clf = MemoryClassifier(memory=tmp_path / "m", k=5).fit(x[old], y[old])
    assert "9" not in clf.classes_
    clf.partial_fit(x[~old], y[~old])  # a new class, written to disk, nothing refitted
    assert "9" in clf.classes_ and len(clf.ids_) == len(y)
    before = clf.predict(tx)
    assert (before[ty == "9"] == "9").mean() > 0.8 and clf.score(tx, ty) > 0.9
    ids = clf.ids_
    clf.close()
    with pytest.raises(NotFittedError):
        clf.predict(tx)
    with Memory.open(tmp_path / "m") as reopened:
        assert reopened.ids() == ids.tolist() and reopened.class_counts()["9"] == int((~old).sum())
        found, stored_rows = reopened.vectors(ids[-int((~old).sum()):].tolist())
        rows = x[~old] / np.linalg.norm(x[~old], axis=1, keepdims=True)
        np.testing.assert_allclose(stored_rows, rows, atol=1e-6)
    again = MemoryClassifier(memory=tmp_path / "m", k=5).fit()
    assert again.predict(tx).tolist() == before.tolist()
    with pytest.raises(ValueError, match="already holds 500 items"):  # never added twice
        again.fit(x, y)
    assert len(Memory.open(tmp_path / "m")) == 500


def test_forget_removes_exactly_and_leaves_no_bytes(tmp_path, vectors):
    x, y, tx, _ = vectors
    memory = stored(tmp_path / "m", x, y)
    whitened(memory)
    clf = MemoryClassifier(memory=memory, vote="hybrid").fit()
    ids = np.asarray(memory.ids())
    gone = ids[y == "3"][:30].tolist() + ids[[0, 1, 250]].tolist()
    prints = fingerprints(memory, gone)
    with pytest.raises(ValueError, match="no stored items"):
        clf.forget(gone + [10**6])  # nothing removed when one id is unknown
    assert len(memory) == 500
    clf.forget(gone[:20]).forget(mask=np.isin(clf.ids_, gone[20:]))
    assert not np.isin(clf.ids_, gone).any() and len(clf.ids_) == 500 - len(gone)
    with Memory.open(tmp_path / "m") as reopened:
        assert reopened.items(gone) == [] and not set(reopened.ids()) & set(gone)
    assert find_remnants(tmp_path / "m", prints)[0] == []
    # the memory after forgetting decides as a fresh memory of what remains
    keep = ~np.isin(ids, gone)
    fresh = stored(tmp_path / "fresh", x[keep], y[keep])
    whitened(fresh)
    other = MemoryClassifier(memory=fresh, vote="hybrid").fit()
    assert clf.transform_.fingerprint == other.transform_.fingerprint
    np.testing.assert_allclose(clf.predict_proba(tx), other.predict_proba(tx), atol=1e-6)
    assert clf.predict(tx).tolist() == other.predict(tx).tolist()


def test_explain_uses_the_memorys_counterfactual(tmp_path, vectors):
    x, y, tx, _ = vectors
    memory = stored(tmp_path / "m", x, y)
    clf = MemoryClassifier(memory=memory, k=10).fit()
    q = tx[int(np.argmin(clf.predict_proba(tx).max(axis=1))):][:1]  # the closest call
    why = clf.explain(q)[0]
    decision = memory.classify_vectors(q, k=10, counterfactual=True)[0]
    assert why.label == decision.label == clf.predict(q)[0]
    assert why.neighbors == decision.neighbors and why.counterfactual == decision.counterfactual
    assert [n.id for n in why.neighbors] == clf.kneighbors(q)[1][0].tolist()
    assert sum(why.proba.values()) == pytest.approx(1.0)
    cf = why.counterfactual
    assert cf.remove and clf.forget(cf.remove).predict(q)[0] == cf.label_after_remove != why.label


def test_pipeline_fills_a_memory_and_decides_through_it(tmp_path, vectors):
    x, y, tx, ty = vectors
    Memory.create(tmp_path / "m", encoder=None, dim=64).close()
    pipe = make_pipeline(StandardScaler(), MemoryClassifier(memory=tmp_path / "m", k=5)).fit(x, y)
    assert pipe.score(tx, ty) > 0.9
    with Memory.open(tmp_path / "m") as memory:
        assert len(memory) == len(y)
        assert pipe.predict(tx).tolist() == [d.label for d in memory.classify_vectors(pipe[0].transform(tx), k=5)]


def test_pipeline_from_image_paths_answers_as_vismem_classify(tmp_path, digit_folders, cli):
    train, test = digit_folders
    memdir = tmp_path / "m"
    cli("create", memdir, "--encoder", "pixels", check=True)
    cli("add", memdir, train, check=True)
    paths = sorted(test.rglob("*.png"))
    answered = json_lines(cli("classify", memdir, *paths, "--k", "3", "--json", check=True))
    pipe = make_pipeline(MemoryEncoder("pixels"), MemoryClassifier(memory=memdir, k=3))
    pipe.fit(paths[:1])  # no targets: opens the memory, stores nothing
    assert pipe.predict(paths).tolist() == [a["label"] for a in answered]
    with Memory.open(memdir) as memory:
        assert len(memory) == len(list(train.rglob("*.png")))


def test_clones_share_the_memory_and_never_write_to_it(tmp_path, vectors):
    x, y, tx, _ = vectors
    memory = stored(tmp_path / "m", x[:300], y[:300])
    twin = clone(MemoryClassifier(memory=memory, k=3))
    assert twin.memory is memory and twin.get_params()["k"] == 3
    search = GridSearchCV(MemoryClassifier(memory=tmp_path / "m"), {"k": [1, 5]}, cv=3, error_score="raise")
    with pytest.raises(ValueError, match="clone .* training fold"):
        search.fit(x, y)
    empty = Memory.create(tmp_path / "empty", encoder=None, dim=64)
    with pytest.raises(ValueError, match="clone"):
        GridSearchCV(MemoryClassifier(memory=empty), {"k": [1, 5]}, cv=3, error_score="raise").fit(x, y)
    assert len(empty) == 0 and memory.ids() == list(range(1, 301))
    clf = MemoryClassifier(memory=memory, k=3).fit()
    copy = pickle.loads(pickle.dumps(clf))  # the open memory travels as its location
    assert copy.memory == memory.location and copy.predict(tx).tolist() == clf.predict(tx).tolist()
    copy.close()


def test_bad_input_fails_clearly_and_changes_nothing(tmp_path, vectors):
    x, y, tx, ty = vectors
    with pytest.raises(MemoryNotFoundError, match="encoder=None, dim=D"):
        MemoryClassifier(memory=tmp_path / "nowhere").fit()
    Memory.create(tmp_path / "m", encoder=None, dim=64).close()
    clf = MemoryClassifier(memory=tmp_path / "m")
    with pytest.raises(ValueError, match="empty"):
        clf.fit().predict(tx[:1])
    with pytest.raises(ValueError, match="X has 10 features, but the memory at .* stores 64-d"):
        clf.fit(x[:, :10], y)
    with pytest.raises(ValueError, match="string labels"):
        clf.fit(x, y.astype(int))
    clf.fit(x, y)
    with pytest.raises(ValueError, match="string labels"):  # it scored 0.0: "3" is never 3
        clf.score(tx, ty.astype(int))
    with pytest.raises(ValueError, match="expecting 64 features"):
        clf.predict(tx[:, :10])
    with pytest.raises(ValueError, match="expecting 64 features"):
        clf.partial_fit(x[:5, :10], y[:5])
    with pytest.raises(ValueError, match="feature_transform center, but the memory .* searches through none"):
        MemoryClassifier(memory=tmp_path / "m", feature_transform="center").fit()
    with pytest.raises(ValueError, match="components, shrinkage and power"):
        MemoryClassifier(memory=tmp_path / "m", components=8).fit()
    with pytest.raises(ValueError, match="update_settings"):
        MemoryClassifier(memory=tmp_path / "m", prototypes_per_class=3).fit()
    with pytest.raises(ValueError, match="max_removals"):
        clf.explain(tx[:1], max_removals=3)
    assert len(Memory.open(tmp_path / "m")) == 500


def test_a_query_with_no_weighted_neighbour_is_none_and_scores_as_wrong(tmp_path, vectors):
    x, y, tx, ty = vectors
    with stored(tmp_path / "m", x[:40], y[:40]) as memory:
        clf = MemoryClassifier(memory=memory, k=3).fit()
        query = tx[:4]
        nearest = clf.kneighbors(query[:1], return_distance=False)[0].tolist()
        clf.set_weight(nearest, 0.0)  # every neighbour of the first query is blocked
        predicted = clf.predict(query)
        assert predicted[0] is None and all(p is not None for p in predicted[1:])
        right = float(np.mean(predicted[1:] == ty[1:4]))
        assert clf.score(query, ty[:4]) == pytest.approx(right * 3 / 4)  # the None counts as wrong


def test_set_weight_names_ids_the_memory_does_not_hold(tmp_path, vectors):
    x, y, _, _ = vectors
    with stored(tmp_path / "m", x[:40], y[:40]) as memory:
        clf = MemoryClassifier(memory=memory).fit()
        with pytest.raises(ValueError, match=r"no stored items with ids \[999\] in the memory at"):
            clf.set_weight([1, 999], 0.0)
        assert memory.get(1).weight == 1.0


def test_a_memory_set_after_fit_takes_effect_at_the_next_fit(tmp_path, vectors):
    """set_params(memory=B) after fitting over A: partial_fit wrote into A and predict
    decided with A; from RAM to a memory (or back) predict failed with an AttributeError.
    Until fit is called again, each is a NotFittedError naming the fit to call."""
    x, y, tx, _ = vectors
    stored(tmp_path / "a", x[:100], y[:100]).close()
    stored(tmp_path / "b", x[100:200], y[100:200]).close()
    clf = MemoryClassifier(memory=tmp_path / "a", k=5).fit()
    clf.set_params(memory=tmp_path / "b")
    for call in (lambda: clf.predict(tx[:2]), lambda: clf.partial_fit(x[200:202], y[200:202]),
                 lambda: clf.kneighbors(tx[:2]), lambda: clf.forget(clf.ids_[:1])):
        with pytest.raises(NotFittedError, match=r"was set after .* fitted over the memory at .*a: call fit\(\)"):
            call()
    with Memory.open(tmp_path / "a") as a:
        assert len(a) == 100
    with Memory.open(tmp_path / "b") as b:
        assert clf.fit().ids_.tolist() == b.ids()
    assert clf.set_params(memory=None).fit(x[:50], y[:50]).predict(tx[:2]).shape == (2,)
    assert not hasattr(clf, "memory_")  # the memory it had opened is closed, not kept
    clf.set_params(memory=tmp_path / "a")
    with pytest.raises(NotFittedError, match=r"fitted in RAM: call fit\(\) to decide with that memory"):
        clf.predict(tx[:2])
    clf.fit().set_params(memory=None)
    with pytest.raises(NotFittedError, match=r"call fit\(X, y\) to hold X, y in RAM"):
        clf.predict(tx[:2])


@pytest.mark.parametrize("scale", [1e20, 1e-20, 1e300])
@pytest.mark.parametrize("on_disk", [False, True])
def test_rows_at_any_finite_scale_decide_as_unscaled_in_ram_and_on_disk(tmp_path, vectors, scale, on_disk):
    """In RAM rows were normalised in float32: at 1e20 their squares overflowed (every row
    became zeros, every query a tie), at 1e-20 the norm underflowed to a floor and the rows
    stayed tiny, and float64 rows at 1e300 became inf, then NaN. A memory on disk rescales
    them (`vectors.unit_rows`); both now decide as on the unscaled rows."""
    x, y, tx, _ = vectors
    wide = np.float64 if scale > 1e38 else np.float32  # 1e300 only as float64, as a user would hold it

    def fitted(name, factor):
        memory = None
        if on_disk:
            Memory.create(tmp_path / name, encoder=None, dim=64).close()
            memory = tmp_path / name
        clf = MemoryClassifier(memory=memory, k=5, vote="softmax", tau=0.1)
        clf.fit(x[:300].astype(wide) * factor, y[:300])
        return clf.partial_fit(x[300:].astype(wide) * factor, y[300:])

    plain, scaled = fitted("plain", 1), fitted("scaled", scale)
    queries = tx.astype(wide) * scale
    assert scaled.predict(queries).tolist() == plain.predict(tx).tolist()
    np.testing.assert_allclose(scaled.predict_proba(queries), plain.predict_proba(tx), atol=1e-5)
    distances, ids = scaled.kneighbors(queries[:20], 3)
    np.testing.assert_allclose(distances, plain.kneighbors(tx[:20], 3)[0], atol=1e-5)
    assert ids.tolist() == plain.kneighbors(tx[:20], 3)[1].tolist()


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("on_disk", [False, True])
def test_rows_with_nan_or_infinity_are_refused_in_ram_and_on_disk(tmp_path, vectors, bad, on_disk):
    x, y, tx, _ = vectors
    memory = None
    if on_disk:
        Memory.create(tmp_path / "m", encoder=None, dim=64).close()
        memory = tmp_path / "m"
    broken = x[:50].copy()
    broken[7, 3] = bad
    with pytest.raises(ValueError, match="Input X contains (NaN|infinity)"):
        MemoryClassifier(memory=memory).fit(broken, y[:50])
    clf = MemoryClassifier(memory=memory, k=3).fit(x[:50], y[:50])
    for call in (clf.predict, clf.predict_proba, clf.kneighbors, lambda X: clf.partial_fit(X, y[:50])):
        with pytest.raises(ValueError, match="Input X contains (NaN|infinity)"):
            call(broken)
    assert len(clf.ids_) == 50


@pytest.mark.parametrize("on_disk", [False, True])
def test_score_weights_are_checked_alike_in_ram_and_on_disk(tmp_path, vectors, on_disk):
    """score(X, y, sample_weight=w) with weights summing to 0 raised ZeroDivisionError on
    disk (and in RAM when they were not all zero). scikit-learn's accuracy_score refuses
    all-zero weights (ValueError) and takes negative ones: both paths now refuse a zero sum
    with a ValueError naming it, take negative weights as accuracy_score does, and refuse
    NaN or a wrong length as it does."""
    from sklearn.metrics import accuracy_score

    x, y, tx, ty = vectors
    memory = None
    if on_disk:
        stored(tmp_path / "m", x, y).close()
        memory = tmp_path / "m"
    clf = MemoryClassifier(memory=memory, k=5).fit() if on_disk else MemoryClassifier(k=5).fit(x, y)
    tx, ty = tx[:20], ty[:20]
    for weights in (np.zeros(20), np.r_[1.0, -1.0, np.zeros(18)], np.r_[np.ones(10), -np.ones(10)]):
        with pytest.raises(ValueError, match="sample_weight sums to 0"):
            clf.score(tx, ty, sample_weight=weights)
    negative = np.r_[-1.0, np.full(19, 0.5)]
    predicted = clf.predict(tx)
    assert clf.score(tx, ty, sample_weight=negative) == pytest.approx(
        accuracy_score(ty, predicted, sample_weight=negative))
    weights = np.linspace(0.1, 2, 20)
    assert clf.score(tx, ty, sample_weight=weights) == pytest.approx(
        accuracy_score(ty, predicted, sample_weight=weights))
    with pytest.raises(ValueError, match="NaN"):
        clf.score(tx, ty, sample_weight=np.r_[np.nan, np.ones(19)])
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        clf.score(tx, ty, sample_weight=np.ones(19))


def test_kneighbors_gives_float64_distances_in_ram_and_on_disk(tmp_path, vectors):
    """Distances were float32 in RAM and float64 over the same items on disk: one dtype
    now, float64 as KNeighborsClassifier's default metric gives, with int64 ids, whatever
    the queries' float dtype, after pickling too (which reopens a memory on disk)."""
    x, y, tx, _ = vectors
    stored(tmp_path / "m", x, y).close()
    in_ram = MemoryClassifier(k=5).fit(x, y)
    on_disk = MemoryClassifier(memory=tmp_path / "m", k=5).fit()
    expected = on_disk.kneighbors(tx[:20])[0]
    for clf in (in_ram, pickle.loads(pickle.dumps(in_ram)), on_disk, pickle.loads(pickle.dumps(on_disk))):
        for queries in (tx[:20], tx[:20].astype(np.float64), None):
            distances, ids = clf.kneighbors(queries)
            assert (distances.dtype, ids.dtype) == (np.float64, np.int64)
        np.testing.assert_allclose(clf.kneighbors(tx[:20])[0], expected, atol=1e-6)
        if clf._on_disk:
            clf.close()

"""Feature transforms: the arithmetic of centring and whitening, storage round trips and
what a removed item leaves behind. (What they do to accuracy on real features is measured
by benchmarks/quality.py.)"""

import json

import numpy as np
import pytest

from vismem.errors import InvalidInputError
from vismem.transform import FeatureTransform, TransformSpec, fit_transform, identity


@pytest.fixture(scope="module")
def vectors():
    rng = np.random.default_rng(0)
    # a shared direction dominates (as ImageNet features of digits do), plus class structure
    shared = np.zeros(16)
    shared[0] = 5.0
    x = shared + rng.standard_normal((300, 16)) * np.linspace(2, 0.1, 16)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_none_is_the_identity(vectors):
    t = fit_transform(vectors, "none")
    assert t.is_identity and np.array_equal(t.apply(vectors), vectors)
    assert identity(16).fingerprint == t.fingerprint


def test_center_removes_the_mean(vectors):
    t = fit_transform(vectors, "center")
    out = t.apply(vectors)
    assert np.allclose(np.linalg.norm(out, axis=1), 1, atol=1e-5)
    assert np.allclose(t.mean, vectors.mean(axis=0), atol=1e-6)
    raw_cos = (vectors @ vectors.T).mean()
    assert raw_cos > 0.5 and abs((out @ out.T).mean()) < 0.05  # the shared direction is gone


def test_whitening_decorrelates_the_kept_directions(vectors):
    t = fit_transform(vectors, TransformSpec("whiten", components=8))
    assert t.out_dim == 8 and t.projection.shape == (16, 8)
    projected = (vectors.astype(np.float64) - t.mean) @ t.projection
    np.testing.assert_allclose(np.cov(projected.T, bias=True), np.eye(8), atol=1e-4)
    shrunk = fit_transform(vectors, TransformSpec("whiten", components=8, shrinkage=1.0))
    variances = np.var((vectors.astype(np.float64) - shrunk.mean) @ shrunk.projection, axis=0)
    assert variances.std() / variances.mean() > 0.3  # s = 1: a plain PCA projection keeps the spread
    assert fit_transform(vectors, TransformSpec("whiten", components=500)).out_dim == 16  # capped at the rank


def test_power_transform_and_names(vectors):
    spec = TransformSpec("whiten", components=8, shrinkage=0.1, power=0.5)
    assert spec.name == "whiten-8-s0.1-p0.5" and TransformSpec("center").name == "center"
    t = fit_transform(vectors, spec)
    assert not np.allclose(t.apply(vectors), fit_transform(vectors, TransformSpec("whiten", 8, 0.1)).apply(vectors))


def test_round_trip_through_json_and_fingerprint(vectors):
    for spec in (TransformSpec("none"), TransformSpec("center"), TransformSpec("whiten", 8, 0.1, 0.5)):
        t = fit_transform(vectors, spec)
        back = FeatureTransform.from_dict(json.loads(json.dumps(t.to_dict())))
        assert back.fingerprint == t.fingerprint and back.spec == spec and back.fitted_items == 300
        np.testing.assert_array_equal(back.apply(vectors), t.apply(vectors))
    stored = fit_transform(vectors, "center").to_dict()
    other = fit_transform(vectors[:-1], "center").to_dict()
    assert stored["fingerprint"] != other["fingerprint"]
    stored["mean"] = other["mean"]
    with pytest.raises(InvalidInputError, match="fingerprint"):
        FeatureTransform.from_dict(stored)


def test_a_removed_item_stays_in_a_fitted_mean_until_refit(vectors):
    with_it = fit_transform(vectors, "center")
    without = fit_transform(vectors[:-1], "center")
    # n * mean(all) - (n - 1) * mean(rest) is the removed vector itself: the residue is real
    recovered = 300 * with_it.mean.astype(np.float64) - 299 * without.mean.astype(np.float64)
    np.testing.assert_allclose(recovered, vectors[-1], atol=1e-3)
    assert with_it.fingerprint != without.fingerprint


def test_drift_grows_with_a_new_class(vectors):
    t = fit_transform(vectors, "center")
    assert t.mean_drift(vectors) == pytest.approx(0, abs=1e-6)
    new_class = np.zeros((100, 16), np.float32)
    new_class[:, 5] = 1
    assert t.mean_drift(np.vstack([vectors, new_class])) > t.mean_drift(np.vstack([vectors, new_class[:10]])) > 0.05


@pytest.mark.parametrize("bad", [{"kind": "pca"}, {"kind": "center", "components": 3},
                                 {"kind": "whiten", "shrinkage": 2}, {"kind": "whiten", "power": 0}])
def test_bad_specs_fail_early(bad):
    with pytest.raises(InvalidInputError):
        TransformSpec(**bad)


def test_whitening_identical_vectors_names_the_fix():
    with pytest.raises(InvalidInputError, match="no variance"):
        fit_transform(np.ones((5, 4), np.float32) / 2, "whiten")
    with pytest.raises(InvalidInputError, match="shape"):
        fit_transform(np.ones((5, 4), np.float32), "center").apply(np.ones((2, 3), np.float32))


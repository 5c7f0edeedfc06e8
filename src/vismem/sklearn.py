"""scikit-learn faces of a visual memory: `MemoryClassifier` (vectors -> labels) and
`MemoryEncoder` (images -> vectors), so a `Pipeline` goes from PIL images to labels.

`MemoryClassifier` is a cosine nearest-neighbour memory with vismem's vote rules,
prototypes and feature transforms. Unlike a fitted model it can grow and shrink:
`partial_fit` adds items without refitting anything, `forget` removes items exactly
(what remains equals a fresh `fit` on the items that remain), and `explain` shows who
voted and what would change the label.

>>> import numpy as np
>>> from vismem.sklearn import MemoryClassifier
>>> X = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]])
>>> clf = MemoryClassifier(k=1).fit(X, ["a", "a", "b", "b"])
>>> clf.predict([[0.8, 0.3]]).tolist()
['a']
>>> clf.partial_fit([[0.7, 0.4]], ["c"]).predict([[0.7, 0.4]]).tolist()   # a new class, no refit
['c']
>>> clf.forget([4]).classes_.tolist()                                      # gone, exactly
['a', 'b']
"""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any, Sequence

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin, _fit_context
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from .counterfactual import DEFAULT_MAX_REMOVALS, Counterfactual, PrototypeClusters, counterfactual
from .decide import VOTES, Neighbor, VoteParams, rule_weights
from .encoders import normalize_rows
from .evaluation.engine import ArrayMemory
from .prototypes import PrototypeSet
from .transform import TRANSFORMS, TransformSpec, fit_transform, identity


@dataclass(frozen=True)
class Explanation:
    """One query's decision as `predict` and `predict_proba` make it, with its neighbours
    (`id` as returned by `kneighbors`) and what would change it."""

    label: Any
    proba: dict[Any, float]
    neighbors: list[Neighbor]
    counterfactual: Counterfactual


class MemoryClassifier(ClassifierMixin, BaseEstimator):
    """Classify vectors by the vote of their nearest stored neighbours (cosine similarity).

    Parameters (all keyword-only)
    ----------
    k : int, default=10
        Neighbours that vote.
    vote : {"rank", "softmax", "distance", "plurality", "prototype", "hybrid"}, default="rank"
        Vote rule (see docs/quality.md); "plurality" with `feature_transform="none"` decides as
        `KNeighborsClassifier(metric="cosine", algorithm="brute")` does.
    alpha, tau, mix : float, defaults 2.0, 0.07, 0.5
        Rank vote 1/(alpha + rank); softmax temperature; hybrid share of the prototype vote.
    prototypes_per_class : int, default=1
        Prototypes per class for the prototype and hybrid votes.
    feature_transform : {"none", "center", "whiten"}, default="none"
        Feature transform fitted on the data given to `fit` (see `vismem.transform`), with
        `components`, `shrinkage` and `power` as there.

    Attributes
    ----------
    classes_ : ndarray (n_classes,)  sorted class labels
    ids_ : ndarray (n_items,)  id of each stored item: its row in `fit`'s data, then numbered on
        through `partial_fit`; never reused after `forget`
    transform_ : FeatureTransform  the fitted transform
    n_features_in_ : int

    Rows are L2-normalised before anything else (the memory is cosine); an all-zero row has
    similarity 0 to everything.

    >>> from sklearn.datasets import load_iris
    >>> X, y = load_iris(return_X_y=True)
    >>> round(MemoryClassifier(k=5).fit(X[::2], y[::2]).score(X[1::2], y[1::2]), 2)
    0.95
    """

    _parameter_constraints: dict = {
        "k": [Interval(Integral, 1, None, closed="left")],
        "vote": [StrOptions(set(VOTES))],
        "alpha": [Interval(Real, 0, None, closed="neither")],
        "tau": [Interval(Real, 0, None, closed="neither")],
        "mix": [Interval(Real, 0, 1, closed="both")],
        "prototypes_per_class": [Interval(Integral, 1, None, closed="left")],
        "feature_transform": [StrOptions(set(TRANSFORMS))],
        "components": [Interval(Integral, 1, None, closed="left"), None],
        "shrinkage": [Interval(Real, 0, 1, closed="both")],
        "power": [Interval(Real, 0, 1, closed="right")],
    }

    def __init__(self, *, k: int = 10, vote: str = "rank", alpha: float = 2.0, tau: float = 0.07,
                 mix: float = 0.5, prototypes_per_class: int = 1, feature_transform: str = "none",
                 components: int | None = None, shrinkage: float = 0.0, power: float = 1.0) -> None:
        self.k = k
        self.vote = vote
        self.alpha = alpha
        self.tau = tau
        self.mix = mix
        self.prototypes_per_class = prototypes_per_class
        self.feature_transform = feature_transform
        self.components = components
        self.shrinkage = shrinkage
        self.power = power

    # ---- settings ------------------------------------------------------------------------

    @property
    def _params(self) -> VoteParams:
        return VoteParams(k=int(self.k), vote=self.vote, alpha=float(self.alpha), tau=float(self.tau),
                          mix=float(self.mix))

    def _spec(self) -> TransformSpec:
        return TransformSpec(self.feature_transform, self.components if self.feature_transform == "whiten" else None,
                             float(self.shrinkage), float(self.power))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = False
        return tags

    # ---- building ------------------------------------------------------------------------

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y) -> MemoryClassifier:
        """Store (X, y) as the memory, replacing what it held: X (n, dim), y (n,)."""
        X, y = validate_data(self, X, y, dtype=[np.float32, np.float64])
        check_classification_targets(y)
        self._store(X, y, first_id=0)
        return self

    def _store(self, X: np.ndarray, y: np.ndarray, first_id: int) -> None:
        self.classes_ = np.unique(y)
        self.ids_ = np.arange(first_id, first_id + len(y), dtype=np.int64)
        self._n_ids = first_id + len(y)  # the next id; ids are never reused
        self._y = np.asarray(y)
        self._weights = np.ones(len(y))
        self._held = _Held(X)
        spec = self._spec()
        if spec.kind == "none" and spec.power == 1:
            # nothing to fit: normalising and indexing wait for the first query, as
            # KNeighborsClassifier's brute search also leaves its work to query time
            self.transform_ = identity(X.shape[1])
        else:
            self._refit()

    @property
    def _raw(self) -> np.ndarray:
        """The stored rows, L2-normalised (made on first use)."""
        held = self._held
        if held.raw is None:
            held.raw = normalize_rows(np.asarray(held.given, dtype=np.float32))
            held.given = None
        return held.raw

    @_raw.setter
    def _raw(self, value: np.ndarray) -> None:
        self._held.raw, self._held.given = value, None

    @property
    def _memory(self) -> ArrayMemory:
        """The stored rows as searched: through the transform, with labels and prototypes."""
        held = self._held
        if held.memory is None:
            held.memory = self._array_memory(self.transform_.apply(self._raw), None)
        return held.memory

    @_memory.setter
    def _memory(self, value: ArrayMemory) -> None:
        self._held.memory = value

    def _refit(self) -> None:
        """Fit the transform and prototypes on what is stored now (nothing removed lingers)."""
        self.transform_ = fit_transform(self._raw, self._spec())
        self._memory = self._array_memory(self.transform_.apply(self._raw), None)

    def _array_memory(self, vectors: np.ndarray, prototypes: PrototypeSet | None) -> ArrayMemory:
        if len(self._y):
            memory = ArrayMemory(vectors, self._y, classes=self.classes_.tolist(), factors=self._weights,
                                 per_class=int(self.prototypes_per_class), prototypes=prototypes)
            # prototypes are keyed by id, so partial_fit and forget can update them in place
            if prototypes is None and self._params.uses_prototypes:
                memory._prototypes = PrototypeSet.fit(self.ids_.tolist(), vectors, self._y.tolist(),
                                                      per_class=int(self.prototypes_per_class))
            return memory
        return ArrayMemory(np.empty((0, vectors.shape[1]), np.float32), [], classes=self.classes_.tolist())

    def partial_fit(self, X, y, classes=None) -> MemoryClassifier:
        """Add items (n, dim) with labels (n,) without refitting anything: the transform stays
        as fitted (call `refit_transform` to refit it); new labels become new classes.
        `classes` (all labels, as scikit-learn's incremental learners take) may be given
        on the first call; later labels may still add classes."""
        first = not hasattr(self, "classes_")
        if first:
            self._validate_params()
        X, y = validate_data(self, X, y, dtype=[np.float32, np.float64], reset=first)
        check_classification_targets(y)
        if first or len(self._y) == 0:  # nothing stored (or all forgotten): fit the transform on this batch
            self._store(X, y, first_id=getattr(self, "_n_ids", 0))
            if classes is not None:
                self._widen_classes(np.asarray(classes))
                self._memory = self._array_memory(self._memory.vectors, self._memory._prototypes)
            return self
        raw = normalize_rows(np.asarray(X, dtype=np.float32))
        new_ids = np.arange(self._n_ids, self._n_ids + len(y), dtype=np.int64)
        self._n_ids += len(y)
        prototypes = self._memory._prototypes
        self._widen_classes(np.asarray(y) if classes is None else np.r_[np.asarray(classes), y])
        self.ids_ = np.r_[self.ids_, new_ids]
        self._raw = np.vstack([self._raw, raw])
        self._y = np.r_[self._y, y]
        self._weights = np.r_[self._weights, np.ones(len(y))]
        vectors = np.vstack([self._memory.vectors, self.transform_.apply(raw)])
        if prototypes is not None:
            prototypes.add(new_ids.tolist(), vectors[-len(y):], np.asarray(y).tolist())
        self._memory = self._array_memory(vectors, prototypes)
        return self

    def _widen_classes(self, labels: np.ndarray) -> None:
        self.classes_ = np.unique(np.concatenate([self.classes_, labels]))

    def forget(self, ids: Sequence[int] | np.ndarray | None = None, *,
               mask: np.ndarray | None = None) -> MemoryClassifier:
        """Remove items exactly, by id (see `ids_`) or by a boolean mask over `ids_`.

        The transform and prototypes are refitted on what remains, so the result equals
        `fit` on the remaining items: nothing of a forgotten item is left behind. A class
        with no items left is dropped from `classes_`.
        """
        check_is_fitted(self)
        if (ids is None) == (mask is None):
            raise ValueError("forget needs exactly one of: ids, mask")
        if mask is not None:
            mask = np.asarray(mask, dtype=bool)
            if mask.shape != self.ids_.shape:
                raise ValueError(f"mask must have one entry per stored item ({len(self.ids_)}), got {mask.shape}")
            gone = mask
        else:
            wanted = np.asarray(ids, dtype=np.int64).reshape(-1)
            unknown = np.setdiff1d(wanted, self.ids_)
            if len(unknown):
                raise ValueError(f"no stored items with ids {unknown.tolist()[:10]}")
            gone = np.isin(self.ids_, wanted)
        keep = ~gone
        self.ids_, self._raw, self._y = self.ids_[keep], self._raw[keep], self._y[keep]
        self._weights = self._weights[keep]
        self.classes_ = np.unique(self._y) if len(self._y) else self.classes_[:0]
        if len(self._y):
            self._refit()
        else:  # nothing left to fit on (no trace of the forgotten kept): the next partial_fit fits afresh
            self.transform_ = identity(self.n_features_in_)
            self._memory = self._array_memory(np.empty((0, self.n_features_in_), np.float32), None)
        return self

    def refit_transform(self) -> MemoryClassifier:
        """Refit the feature transform (and prototypes) on every item stored now."""
        check_is_fitted(self)
        self._refit()
        return self

    def set_weight(self, ids: Sequence[int], weight: float) -> MemoryClassifier:
        """Items' vote weight: 0 blocks, > 1 boosts, 1 is normal."""
        check_is_fitted(self)
        rows = np.isin(self.ids_, np.asarray(list(ids), dtype=np.int64))
        self._weights[rows] = float(weight)
        self._memory.factors = self._weights
        return self

    # ---- reading -------------------------------------------------------------------------

    def _queries(self, X) -> np.ndarray:
        check_is_fitted(self)
        X = validate_data(self, X, dtype=[np.float32, np.float64], reset=False)
        if len(self._y) == 0:
            raise ValueError("the memory is empty: every item was forgotten; add items with partial_fit")
        return self.transform_.apply(normalize_rows(np.asarray(X, dtype=np.float32)))

    def predict_proba(self, X) -> np.ndarray:
        """Vote shares float64 (n, n_classes), columns in `classes_` order, rows summing to 1
        (to 0 when every neighbour is blocked)."""
        queries = self._queries(X)
        params = self._params
        neighbours = self._memory.query(queries, params.k, prototypes=params.uses_prototypes)
        return self._memory.scores(neighbours, params)

    def predict(self, X) -> np.ndarray:
        """Labels (n,): the class with the largest vote share (ties: the earlier class)."""
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]

    def kneighbors(self, X=None, n_neighbors: int | None = None, return_distance: bool = True):
        """Cosine distances (n, m) and ids (n, m) of each query's nearest stored items, nearest
        first. With X None, each stored item's neighbours among the others."""
        check_is_fitted(self)
        m = int(self.k if n_neighbors is None else n_neighbors)
        if m < 1:
            raise ValueError(f"n_neighbors must be a positive integer, got {n_neighbors}")
        own = X is None
        available = len(self._y) - int(own)
        if m > available:
            raise ValueError(f"Expected n_neighbors <= n_samples_fit, but n_neighbors = {m}, "
                             f"n_samples_fit = {available}")
        queries = self._memory.vectors if own else self._queries(X)
        found = self._memory.query(queries, m + int(own), prototypes=False)
        rows, sims = found.rows, found.sims
        if own:  # drop each item from its own list (by row, so an exact duplicate still counts)
            keep = rows != np.arange(len(rows))[:, None]
            keep[keep.all(axis=1), -1] = False
            rows, sims = rows[keep].reshape(len(rows), m), sims[keep].reshape(len(rows), m)
        ids = self.ids_[rows]
        return (np.maximum(1.0 - sims, 0.0), ids) if return_distance else ids

    def explain(self, X, *, max_removals: int = DEFAULT_MAX_REMOVALS) -> list[Explanation]:
        """Per query: its label, vote shares, the k neighbours that voted (id, label, distance,
        weight, contribution) and the counterfactual (`vismem.counterfactual`)."""
        queries = self._queries(X)
        params = self._params
        proba = self.predict_proba(X)
        depth = min(params.k + max_removals, len(self._y))
        found = self._memory.query(queries, depth, prototypes=False)
        classes = self.classes_.tolist()
        out = []
        for q, sims, rows, shares in zip(queries, found.sims, found.rows, proba, strict=False):
            labels = [classes[c] for c in self._memory.label_index[rows]]
            weights = self._weights[rows]
            cf = counterfactual(sims, self.ids_[rows], labels, weights, params, ties="class-order",
                                exhaustive=depth == len(self._y), max_removals=max_removals,
                                prototypes=self._clusters(q, rows) if params.uses_prototypes else None)
            voted = rule_weights(sims[: params.k], params) * weights[: params.k]
            if params.vote == "prototype":
                voted = np.zeros_like(voted)
            total = voted.sum()
            neighbours = [Neighbor(int(self.ids_[r]), labels[j], float(1.0 - sims[j]), float(voted[j]),
                                   float(voted[j] / total) if total > 0 else 0.0, "", float(self._weights[r]))
                          for j, r in enumerate(rows[: params.k])]
            label = self.classes_[int(np.argmax(shares))]
            out.append(Explanation(label, dict(zip(classes, shares.tolist(), strict=True)), neighbours, cf))
        return out

    def _clusters(self, query: np.ndarray, rows: np.ndarray) -> PrototypeClusters:
        owners, members, totals, counts = self._memory.prototypes.clusters()
        member = np.array([members.get(int(i), -1) for i in self.ids_[rows]])
        return PrototypeClusters(owners, totals, counts, member, self._memory.vectors[rows], query)


class _Held:
    """The rows given to `fit`, and what is built from them on first use, in one object: a
    query that builds them leaves the estimator's own attributes as they were."""

    def __init__(self, given: np.ndarray) -> None:
        self.given: np.ndarray | None = given
        self.raw: np.ndarray | None = None
        self.memory: ArrayMemory | None = None


class MemoryEncoder(TransformerMixin, BaseEstimator):
    """Images -> embeddings with a registered vismem encoder, for a Pipeline that starts at
    images: `make_pipeline(MemoryEncoder("efficientnet_lite0"), MemoryClassifier())`.

    `encoder` is an encoder name (`vismem encoders` lists them) or a built `Encoder`;
    transform takes a sequence of PIL images or image paths and returns unit vectors
    float32 (n, dim). Nothing is learned: `fit` only builds the encoder.
    """

    def __init__(self, encoder: Any = "efficientnet_lite0", *, weights: str | None = None) -> None:
        self.encoder = encoder
        self.weights = weights

    def fit(self, X=None, y=None) -> MemoryEncoder:
        self.encoder_ = self._build()
        self.n_features_out_ = self.encoder_.dim
        return self

    def _build(self):
        from .encoders import Encoder, create_encoder

        return self.encoder if isinstance(self.encoder, Encoder) else create_encoder(self.encoder, weights=self.weights)

    def transform(self, X: Sequence[Any]) -> np.ndarray:
        from pathlib import Path

        from PIL import Image

        from .errors import InvalidInputError
        from .images import ImageReadError, decode_image

        encoder = getattr(self, "encoder_", None) or self.fit().encoder_
        images = []
        for item in X:
            if isinstance(item, Image.Image):
                images.append(item.convert("RGB"))
                continue
            try:
                images.append(decode_image(Path(item).read_bytes()))
            except (OSError, ImageReadError) as exc:
                raise InvalidInputError(f"cannot encode {item}: {exc}") from None
        return encoder.encode(images) if images else np.empty((0, encoder.dim), np.float32)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.requires_fit = False
        tags.input_tags.two_d_array = False
        return tags

"""scikit-learn faces of a visual memory: `MemoryClassifier` (vectors -> labels) and
`MemoryEncoder` (images -> vectors), so a `Pipeline` goes from PIL images to labels.

`MemoryClassifier` is a cosine nearest-neighbour memory with vismem's vote rules,
prototypes and feature transforms. Unlike a fitted model it can grow and shrink:
`partial_fit` adds items without refitting anything, `forget` removes items exactly
(what remains equals a fresh `fit` on the items that remain), and `explain` shows who
voted and what would change the label. It holds its vectors in RAM, or, given
`memory=`, decides through a `vismem.Memory` on disk (see `MemoryClassifier`).

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

import os
import pickle
from dataclasses import dataclass
from numbers import Integral, Real
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
from sklearn.base import (BaseEstimator, ClassifierMixin, ClassNamePrefixFeaturesOutMixin, TransformerMixin,
                          _fit_context, clone)
from sklearn.exceptions import NotFittedError
from sklearn.metrics import accuracy_score
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_consistent_length, check_is_fitted, validate_data

from .counterfactual import DEFAULT_MAX_REMOVALS, Counterfactual, PrototypeClusters, counterfactual
from .decide import MAX_K, VOTES, Neighbor, VoteParams, neighbour_weights
from .errors import brief_repr, whole_number
from .evaluation.engine import ArrayMemory
from .prototypes import PrototypeSet
from .store.base import check_weight
from .transform import TRANSFORMS, FeatureTransform, TransformSpec, fit_transform, identity
from .vectors import unit_rows

if TYPE_CHECKING:
    from .encoders import Encoder
    from .encoders.base import Recipe
    from .memory import Memory


@dataclass(frozen=True)
class Explanation:
    """One query's decision as `predict` and `predict_proba` make it, with its neighbours
    (`id` as returned by `kneighbors`) and what would change it."""

    label: Any
    proba: dict[Any, float]
    neighbors: list[Neighbor]
    counterfactual: Counterfactual

    def __repr__(self) -> str:  # as a Decision's: not every class's probability, nor every neighbour
        return brief_repr(self, counted=("neighbors",))


class MemoryClassifier(ClassifierMixin, BaseEstimator):
    """Classify vectors by the vote of their nearest stored neighbours (cosine similarity).

    Parameters (all keyword-only)
    ----------
    memory : str, path or `vismem.Memory`, default=None
        None: the estimator holds its items in RAM. Otherwise a memory on disk (a directory
        made by `Memory.create(path, encoder=None, dim=D)` / `vismem create`, or an open
        `Memory`): every decision is then the memory's own, through its index, its stored
        feature transform, its prototypes, its pruning and its item weights, so `predict`
        answers what `Memory.classify_vectors` (`vismem classify`) answers; see "Over a
        memory on disk" below.
    k : int from 1 to 1000, default=None
        Neighbours that vote. None: 10, or over a memory, the memory's default (as set by
        `vismem tune`); likewise for `vote`, `alpha`, `tau` and `mix`. A k above the items
        stored (over a memory: those that can vote) makes `predict`, `predict_proba`,
        `score` and `explain` raise ValueError, as KNeighborsClassifier's predict does
        (the prototype vote asks no neighbours).
    vote : {"rank", "softmax", "distance", "plurality", "prototype", "hybrid"}, default=None
        Vote rule (see docs/quality.md), None: "rank"; "plurality" with no feature transform
        decides as `KNeighborsClassifier(metric="cosine", algorithm="brute")` does.
    alpha, tau, mix : float, defaults None (2.0, 0.07, 0.5)
        Rank vote 1/(alpha + rank); softmax temperature; hybrid share of the prototype vote.
    prototypes_per_class : int, default=None
        Prototypes per class for the prototype and hybrid votes. None: 1, or the memory's.
    feature_transform : {"none", "center", "whiten"}, default=None
        Feature transform fitted on the data given to `fit` (see `vismem.transform`), with
        `components`, `shrinkage` and `power` as there. None: "none", or the memory's.

    Attributes
    ----------
    classes_ : ndarray (n_classes,)  sorted class labels
    ids_ : ndarray (n_items,)  id of each stored item: its row in `fit`'s data, then numbered on
        through `partial_fit`; never reused after `forget` (over a memory: the memory's item ids)
    transform_ : FeatureTransform  the fitted transform (over a memory: the memory's)
    memory_ : Memory  over a memory on disk only: the open memory
    n_features_in_ : int

    Rows are L2-normalised before anything else (the memory is cosine), at any finite scale,
    as on disk (`vectors.unit_rows`); an all-zero row has similarity 0 to everything (a
    memory on disk refuses it: it has no direction).

    Over a memory on disk
    ---------------------
    - `fit()` (or `fit(None)`) opens the memory and reads it: nothing is written. `fit(X)`
      (y None, as a Pipeline fitted without targets passes it) does the same and checks X's
      width. `fit(X, y)` stores (X, y) in the memory only when it holds no items; on a
      memory with items it raises ValueError (use `fit()` to decide with what it holds,
      `partial_fit(X, y)` to add to it), so a user's items are never wiped or added twice.
    - `partial_fit(X, y)` is `Memory.add_vectors`: durable when it returns, the memory's
      transform is not refitted. `forget(ids)` / `forget(mask=)` is `Memory.remove(ids,
      purge=True)`: exact, and the purge refits the memory's transform when removed items
      shaped it. `set_weight` and `refit_transform` change the memory too.
    - Labels on disk are strings: `y` must hold strings (`y.astype(str)`), and `predict`
      returns them. `classes_` and `ids_` are the memory's, read at `fit` and after this
      estimator's own edits (a class another writer added joins `classes_` when a decision
      names it). `predict` returns the memory's label, ties broken by proximity as
      `Memory.classify_vectors` does, and None for a query none of whose neighbours carries
      weight (all blocked or pruned); `score` counts such a query as wrong.
    - `kneighbors` returns the memory's item ids and cosine distances as the index searches
      (through the transform; hard-pruned items are never returned); `explain` uses the
      memory's counterfactual path (`max_removals` fixed at its default there).
    - Settings that belong to the memory are not overridden: `prototypes_per_class` and the
      transform parameters must be unset (None, and `components`, `shrinkage`, `power` at
      their defaults) or equal to the memory's, else fit raises ValueError naming
      `Memory.update_settings` / `Memory.set_transform` (`vismem tune`).
    - `sklearn.base.clone` (as GridSearchCV and cross_val_score make) shares the memory (an
      open `Memory` is not copied), and a clone refuses `fit(X, y)`: fitting it on a
      training fold would write that fold into the shared memory. Grid-search a
      `MemoryClassifier()` in RAM over `Memory.vectors()`, or tune the memory with
      `vismem tune`. Pickling keeps the memory's location and reopens it on load.
    - `close()` closes a memory the estimator opened from a path (a `Memory` passed in is
      the caller's to close) and leaves the estimator unfitted; `fit()` opens it again.
    - `set_params(memory=...)` takes effect at the next `fit`; until then the estimator
      raises NotFittedError rather than decide with, or write into, the memory fitted before.

    >>> from sklearn.datasets import load_iris
    >>> X, y = load_iris(return_X_y=True)
    >>> round(MemoryClassifier(k=5).fit(X[::2], y[::2]).score(X[1::2], y[1::2]), 2)
    0.95
    """

    _parameter_constraints: dict = {
        "memory": [str, os.PathLike, HasMethods(["classify_vectors", "add_vectors", "remove"]), None],
        "k": [Interval(Integral, 1, MAX_K, closed="both"), None],
        "vote": [StrOptions(set(VOTES)), None],
        "alpha": [Interval(Real, 0, None, closed="neither"), None],
        "tau": [Interval(Real, 0, None, closed="neither"), None],
        "mix": [Interval(Real, 0, 1, closed="both"), None],
        "prototypes_per_class": [Interval(Integral, 1, None, closed="left"), None],
        "feature_transform": [StrOptions(set(TRANSFORMS)), None],
        "components": [Interval(Integral, 1, None, closed="left"), None],
        "shrinkage": [Interval(Real, 0, 1, closed="both")],
        "power": [Interval(Real, 0, 1, closed="right")],
    }

    def __init__(self, *, memory: str | os.PathLike | Memory | None = None, k: int | None = None,
                 vote: str | None = None, alpha: float | None = None, tau: float | None = None,
                 mix: float | None = None, prototypes_per_class: int | None = None,
                 feature_transform: str | None = None, components: int | None = None, shrinkage: float = 0.0,
                 power: float = 1.0) -> None:
        self.memory = memory
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
    def _on_disk(self) -> bool:
        return self.memory is not None

    @property
    def _params(self) -> VoteParams:
        """The vote as set here; unset values are VoteParams' defaults, or the memory's."""
        if self._on_disk:
            return self.memory_.vote_params(**self._vote_given)
        return VoteParams(**{name: value for name, value in self._vote_given.items() if value is not None})

    @property
    def _vote_given(self) -> dict[str, Any]:
        return {"k": self.k, "vote": self.vote, "alpha": self.alpha, "tau": self.tau, "mix": self.mix}

    @property
    def _per_class(self) -> int:
        return 1 if self.prototypes_per_class is None else int(self.prototypes_per_class)

    def _spec(self) -> TransformSpec:
        kind = self.feature_transform or "none"
        return TransformSpec(kind, self.components if kind == "whiten" else None, float(self.shrinkage),
                             float(self.power))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = False
        return tags

    def _check_fitted(self) -> None:
        """Fitted, and over the `memory` set now: set_params(memory=...) after fit takes effect
        at the next fit, and until then this estimator would decide with (and partial_fit
        write to) what it was fitted over, or fail with an AttributeError."""
        check_is_fitted(self)
        given, opened = self.memory, getattr(self, "memory_", None)
        if given is None:
            same = opened is None
        elif isinstance(given, (str, os.PathLike)):
            same = opened is not None and getattr(self, "_opened_from", None) == os.fspath(given)
        else:
            same = opened is given
        if not same:
            fitted = "in RAM" if opened is None else f"over the memory at {opened.location}"
            refit = "fit(X, y) to hold X, y in RAM" if given is None else "fit() to decide with that memory"
            raise NotFittedError(f"memory={given!r} was set after this MemoryClassifier was fitted {fitted}: "
                                 f"call {refit}")

    # ---- building ------------------------------------------------------------------------

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X=None, y=None) -> MemoryClassifier:
        """Store (X, y) as the memory, replacing what it held: X (n, dim), y (n,).

        Over a memory on disk: open it and read it; (X, y) are stored only into a memory
        with no items (see the class doc), and `fit()` / `fit(X)` store nothing."""
        if self._on_disk:
            return self._fit_on_disk(X, y)
        if X is None:
            raise ValueError("fit needs X and y (or memory=... to decide with a memory on disk)")
        self.close()  # a memory this estimator was fitted over before memory=None was set
        self.__dict__.pop("memory_", None)
        X, y = validate_data(self, X, y, dtype=[np.float32, np.float64])
        check_classification_targets(y)
        self._store(X, y, first_id=0)
        return self

    def _store(self, X: np.ndarray, y: np.ndarray, first_id: int) -> None:
        held, spec = _Held(X), self._spec()
        transform = None
        if spec.kind != "none" or spec.power != 1:
            # fitted before anything changes: one that cannot be fitted (whitening one item)
            # raises with the estimator as it was
            held.raw, held.given = _unit(X), None
            transform = fit_transform(held.raw, spec)
        self.classes_ = np.unique(y)
        self.ids_ = np.arange(first_id, first_id + len(y), dtype=np.int64)
        self._n_ids = first_id + len(y)  # the next id; ids are never reused
        self._y = np.asarray(y)
        self._weights = np.ones(len(y))
        self._held = held
        if transform is None:
            # nothing to fit: normalising and indexing wait for the first query, as
            # KNeighborsClassifier's brute search also leaves its work to query time
            self.transform_ = identity(X.shape[1])
        else:
            self._search_through(transform)

    @property
    def _raw(self) -> np.ndarray:
        """The stored rows, L2-normalised (made on first use)."""
        held = self._held
        if held.raw is None:
            assert held.given is not None  # (one of the two is always held)
            held.raw = _unit(held.given)
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
        self._search_through(fit_transform(self._raw, self._spec()))

    def _search_through(self, transform: FeatureTransform) -> None:
        """The stored rows as searched through `transform`; prototypes refitted on first use."""
        self.transform_ = transform
        self._memory = self._array_memory(transform.apply(self._raw), None)

    def _array_memory(self, vectors: np.ndarray, prototypes: PrototypeSet | None) -> ArrayMemory:
        if len(self._y):
            return ArrayMemory(vectors, self._y, classes=self.classes_.tolist(), factors=self._weights,
                               per_class=self._per_class, prototypes=prototypes)
        return ArrayMemory(np.empty((0, vectors.shape[1]), np.float32), [], classes=self.classes_.tolist())

    def _voting_memory(self, params: VoteParams) -> ArrayMemory:
        """The stored rows as searched, with their prototypes when `params` vote with them:
        fitted here, not by ArrayMemory, so that they are keyed by id (partial_fit adds to
        them in place) and made of the items that vote (weight > 0), as a memory's are."""
        memory = self._memory
        if params.uses_prototypes and memory._prototypes is None:
            voting = self._weights > 0
            memory._prototypes = PrototypeSet.fit(self.ids_[voting].tolist(), memory.vectors[voting],
                                                  self._y[voting].tolist(), per_class=self._per_class)
        return memory

    def partial_fit(self, X, y, classes=None) -> MemoryClassifier:
        """Add items (n, dim) with labels (n,) without refitting anything: the transform stays
        as fitted (call `refit_transform` to refit it); new labels become new classes.
        `classes` (all labels, as scikit-learn's incremental learners take) may be given
        on the first call; later labels may still add classes."""
        first = not hasattr(self, "classes_")
        if first:
            self._validate_params()
        else:
            self._check_fitted()
        if self._on_disk:
            return self._add_on_disk(X, y, classes, attach=first)
        X, y = validate_data(self, X, y, dtype=[np.float32, np.float64], reset=first)
        check_classification_targets(y)
        if first or len(self._y) == 0:  # nothing stored (or all forgotten): fit the transform on this batch
            widened = None if classes is None else _widened(np.unique(y), np.asarray(classes))
            self._store(X, y, first_id=getattr(self, "_n_ids", 0))
            if widened is not None:
                self.classes_ = widened
                self._memory = self._array_memory(self._memory.vectors, self._memory._prototypes)
            return self
        widened = _widened(self.classes_, np.asarray(y) if classes is None else np.r_[np.asarray(classes), y])
        raw = _unit(X)
        new_ids = np.arange(self._n_ids, self._n_ids + len(y), dtype=np.int64)
        self._n_ids += len(y)
        prototypes = self._memory._prototypes
        self.classes_ = widened
        self.ids_ = np.r_[self.ids_, new_ids]
        self._raw = np.vstack([self._raw, raw])
        self._y = np.r_[self._y, y]
        self._weights = np.r_[self._weights, np.ones(len(y))]
        vectors = np.vstack([self._memory.vectors, self.transform_.apply(raw)])
        if prototypes is not None:
            prototypes.add(new_ids.tolist(), vectors[-len(y):], np.asarray(y).tolist())
        self._memory = self._array_memory(vectors, prototypes)
        return self

    def forget(self, ids: Sequence[int] | np.ndarray | None = None, *,
               mask: np.ndarray | None = None) -> MemoryClassifier:
        """Remove items exactly, by id (see `ids_`) or by a boolean mask over `ids_`.

        The transform and prototypes are refitted on what remains, so the result equals
        `fit` on the remaining items: nothing of a forgotten item is left behind. A class
        with no items left is dropped from `classes_`.
        """
        self._check_fitted()
        if (ids is None) == (mask is None):
            raise ValueError("forget needs exactly one of: ids, mask")
        if self._on_disk:
            return self._forget_on_disk(ids, mask)
        if mask is not None:
            mask = np.asarray(mask, dtype=bool)
            if mask.shape != self.ids_.shape:
                raise ValueError(f"mask must have one entry per stored item ({len(self.ids_)}), got {mask.shape}")
            gone = mask
        else:
            gone = np.isin(self.ids_, self._stored_ids(ids))
        keep = ~gone
        # fitted before anything changes, so a transform that cannot be fitted on what remains
        # (whitening one item) raises with the estimator as it was; with nothing left, no
        # trace of the forgotten is kept and the next partial_fit fits afresh
        transform = fit_transform(self._raw[keep], self._spec()) if keep.any() else identity(self.n_features_in_)
        self.ids_, self._raw, self._y = self.ids_[keep], self._raw[keep], self._y[keep]
        self._weights = self._weights[keep]
        self.classes_ = np.unique(self._y) if len(self._y) else self.classes_[:0]
        self._search_through(transform)
        return self

    def refit_transform(self) -> MemoryClassifier:
        """Refit the feature transform (and prototypes) on every item stored now (over a
        memory on disk: `Memory.set_transform` with its own spec, which rebuilds its index)."""
        self._check_fitted()
        if self._on_disk:
            self.memory_.set_transform(self.memory_.settings.transform)
            self.transform_ = self.memory_.transform
            return self
        self._refit()
        return self

    def _stored_ids(self, ids: Any) -> np.ndarray:
        """`ids` (one or array-like) as a sorted int64 array, or ValueError naming those not stored.
        Only whole numbers are ids, as for a `Memory`: casting read 1.7 and True as item 1."""
        from .memory import given_ids

        one = isinstance(ids, (int, np.integer)) and not isinstance(ids, bool)
        flat = np.asarray(ids).reshape(-1) if isinstance(ids, np.ndarray) else ids
        wanted = np.unique(np.asarray(given_ids([ids] if one else flat), dtype=np.int64))
        if self._on_disk:
            found = {item.id for item in self.memory_.items(wanted.tolist())}
            unknown = [i for i in wanted.tolist() if i not in found]
            where = f" in the memory at {self.memory_.location}"
        else:
            unknown, where = np.setdiff1d(wanted, self.ids_).tolist(), ""
        if unknown:
            raise ValueError(f"no stored items with ids {unknown[:10]}{where}")
        return wanted

    def set_weight(self, ids: Sequence[int], weight: float) -> MemoryClassifier:
        """Items' vote weight, a finite number from 0 to 1e6 as a memory on disk keeps: 0
        blocks, > 1 boosts, 1 is normal (over a memory on disk: `Memory.set_weight`,
        durable). Raises ValueError, changing nothing, for ids it does not hold."""
        self._check_fitted()
        check_weight(weight)
        wanted = self._stored_ids(ids)
        if self._on_disk:
            self.memory_.set_weight(wanted.tolist(), weight)
            return self
        rows = np.isin(self.ids_, wanted)
        if ((self._weights[rows] > 0) != (weight > 0)).any():
            self._memory._prototypes = None  # who shapes them changed: refitted when next voted with
        self._weights[rows] = float(weight)
        self._memory.factors = self._weights
        return self

    # ---- reading -------------------------------------------------------------------------

    def _queries(self, X) -> np.ndarray:
        self._check_fitted()
        X = validate_data(self, X, dtype=[np.float32, np.float64], reset=False)
        if len(self._y) == 0:
            raise ValueError("the memory is empty: every item was forgotten; add items with partial_fit")
        return self.transform_.apply(_unit(X))

    def predict_proba(self, X) -> np.ndarray:
        """Vote shares float64 (n, n_classes), columns in `classes_` order, rows summing to 1
        (to 0 when nothing votes: every neighbour blocked, and no prototype for the votes using them)."""
        if self._on_disk:
            return self._shares(self._decide_on_disk(X))
        queries = self._queries(X)
        params = self._params
        _check_k(params, len(self._y))
        memory = self._voting_memory(params)
        neighbours = memory.query(queries, params.k, prototypes=params.uses_prototypes)
        return memory.scores(neighbours, params)

    def predict(self, X) -> np.ndarray:
        """Labels (n,): the class with the largest vote share (ties: the earlier class; over a
        memory on disk, the memory's label: ties by proximity, None when no neighbour has weight)."""
        if self._on_disk:
            labels = np.array([d.label for d in self._decide_on_disk(X)], dtype=object)
            return labels if any(label is None for label in labels) else labels.astype(self.classes_.dtype)
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]

    def score(self, X, y, sample_weight=None) -> float:
        """Mean accuracy of `predict` on (X, y), as scikit-learn's classifiers score
        (`accuracy_score`: negative weights count against, weights summing to 0 are refused).
        Over a memory on disk a query none of whose neighbours carries weight (predicted None)
        counts as wrong; `y` must hold strings, as for `fit` (3 never equals the label "3")."""
        _check_weight_sum(sample_weight)  # before any query is searched
        if not self._on_disk:
            return super().score(X, y, sample_weight=sample_weight)
        check_consistent_length(X, y, sample_weight)
        truth = _string_labels(y)
        predicted = self.predict(X).tolist()
        right = np.array([p is not None and p == t for p, t in zip(predicted, truth, strict=True)])
        # (right against all-true: accuracy_score checks the weights as in RAM)
        return float(accuracy_score(right, np.ones(len(right), dtype=bool), sample_weight=sample_weight))

    def kneighbors(self, X=None, n_neighbors: int | None = None, return_distance: bool = True):
        """Cosine distances float64 (n, m) and ids int64 (n, m) of each query's nearest stored
        items, nearest first. With X None, each stored item's neighbours among the others."""
        self._check_fitted()
        if n_neighbors is not None and not whole_number(n_neighbors):
            # as KNeighborsClassifier refuses it: int() read 2.5 as 2 and "3" as 3
            raise TypeError(f"n_neighbors must be a positive integer, got {type(n_neighbors).__name__} "
                            f"{n_neighbors!r}")
        m = int(self._params.k if n_neighbors is None else n_neighbors)
        if m < 1:
            raise ValueError(f"n_neighbors must be a positive integer, got {n_neighbors}")
        if self._on_disk:
            return self._kneighbors_on_disk(X, m, return_distance)
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
        # float64, as on disk (1 - each float32 similarity, in Python floats) and as
        # KNeighborsClassifier's default metric returns: one dtype in RAM, on disk, pickled
        return (np.maximum(1.0 - sims.astype(np.float64), 0.0), ids) if return_distance else ids

    def explain(self, X, *, max_removals: int = DEFAULT_MAX_REMOVALS) -> list[Explanation]:
        """Per query: its label, vote shares, the k neighbours that voted (id, label, distance,
        weight, contribution) and the counterfactual (`vismem.counterfactual`)."""
        if self._on_disk:
            return self._explain_on_disk(X, max_removals)
        queries = self._queries(X)
        params = self._params
        _check_k(params, len(self._y))
        depth = min(params.k + max_removals, len(self._y))
        memory = self._voting_memory(params)
        # one search, deep enough for the counterfactual; its first k columns vote
        found = memory.query(queries, depth, prototypes=params.uses_prototypes)
        proba = memory.scores(found, params)
        k = params.k
        votes = neighbour_weights(found.sims[:, :k], found.label_index[:, :k], params,
                                  self._weights[found.rows[:, :k]])
        clusters = memory.prototypes.clusters() if params.uses_prototypes else None
        classes = self.classes_.tolist()
        out = []
        for q, sims, rows, shares, voted in zip(queries, found.sims, found.rows, proba, votes, strict=False):
            labels = [classes[c] for c in self._memory.label_index[rows]]
            weights = self._weights[rows]
            cf = counterfactual(sims, self.ids_[rows], labels, weights, params, ties="class-order",
                                exhaustive=depth == len(self._y), max_removals=max_removals,
                                prototypes=self._clusters(clusters, q, rows) if clusters is not None else None)
            total = voted.sum()
            neighbours = [Neighbor(int(self.ids_[r]), labels[j], float(1.0 - sims[j]), float(voted[j]),
                                   float(voted[j] / total) if total > 0 else 0.0, "", float(self._weights[r]))
                          for j, r in enumerate(rows[: params.k])]
            label = classes[int(np.argmax(shares))]  # a Python value, as proba's keys and the neighbours' labels
            out.append(Explanation(label, dict(zip(classes, shares.tolist(), strict=True)), neighbours, cf))
        return out

    def _clusters(self, clusters: tuple, query: np.ndarray, rows: np.ndarray) -> PrototypeClusters:
        owners, members, totals, counts = clusters  # the prototypes' clusters(), read once per batch
        member = np.array([members.get(int(i), -1) for i in self.ids_[rows]])
        return PrototypeClusters(owners, totals, counts, member, self._memory.vectors[rows], query)

    # ---- over a memory on disk -------------------------------------------------------------

    def _fit_on_disk(self, X, y) -> MemoryClassifier:
        self._attach()
        if X is None:
            if y is not None:
                raise ValueError("fit got y without X")
            return self
        if y is None:  # a Pipeline fitted without targets: check the width, store nothing
            self._validated(X)
            return self
        X, y = self._validated(X, y)
        where = self.memory_.location
        if getattr(self, "_shares_memory", False):
            raise ValueError(
                f"this MemoryClassifier is a clone (as GridSearchCV and cross_val_score make) sharing the memory "
                f"at {where}; fitting it on X, y would write a training fold into that memory. Grid-search a "
                "MemoryClassifier() without memory on Memory.vectors(), or tune the memory with `vismem tune`")
        if len(self.ids_):
            raise ValueError(
                f"the memory at {where} already holds {len(self.ids_)} items, and fit(X, y) only fills an empty "
                "memory (nothing is wiped or added twice): call fit() to decide with what it holds, or "
                "partial_fit(X, y) to add to it")
        self.memory_.add_vectors(X, _string_labels(y))
        self._read_memory()
        return self

    def _attach(self) -> None:
        """Open the memory (or keep the one already open from the same place) and read it."""
        memory = self._open()
        self._check_settings(memory)
        self.memory_ = memory
        self.n_features_in_ = memory.dim
        self._declared: list[str] = []  # classes given to partial_fit, kept even with no items yet
        self._read_memory()

    def _open(self) -> Memory:
        from .errors import MemoryNotFoundError, clause
        from .memory import Memory

        given = self.memory
        assert given is not None  # only a memory on disk is opened
        if not isinstance(given, (str, os.PathLike)):
            self.close()  # one this estimator opened from a path before
            return given
        where = os.fspath(given)
        if hasattr(self, "memory_") and getattr(self, "_opened_from", None) == where:
            return self.memory_
        self.close()  # one this estimator opened from another place
        try:
            memory = Memory.open(where)
        except MemoryNotFoundError as exc:
            raise MemoryNotFoundError(f"{clause(exc)}; for vectors: Memory.create({where!r}, encoder=None, dim=D) or "
                                      f"`vismem create {where} --encoder none --dim D`") from None
        self._opened_from = where
        return memory

    def close(self) -> None:
        """Close the memory this estimator opened from a path (one passed in stays open); the
        estimator is then unfitted, and `fit()` opens the memory again."""
        if getattr(self, "_opened_from", None) is not None and hasattr(self, "memory_"):
            self.memory_.close()
            for name in ("memory_", "classes_", "ids_", "transform_", "n_features_in_"):
                self.__dict__.pop(name, None)
        self._opened_from = None

    def _check_settings(self, memory: Memory) -> None:
        """Parameters that the memory sets itself must be unset here, or agree with it."""
        settings, where = memory.settings, memory.location
        if self.prototypes_per_class is not None and self.prototypes_per_class != settings.prototypes_per_class:
            raise ValueError(
                f"prototypes_per_class={self.prototypes_per_class}, but the memory at {where} keeps "
                f"{settings.prototypes_per_class} per class: leave it None to use the memory's, or change the "
                "memory's with Memory.update_settings(prototypes_per_class=...)")
        if self.feature_transform is None:
            if (self.components, self.shrinkage, self.power) != (None, 0.0, 1.0):
                raise ValueError(
                    f"components, shrinkage and power describe a transform to fit, but the memory at {where} "
                    f"searches through its own ({settings.transform.name}): leave them unset, or refit the "
                    "memory's with Memory.set_transform or `vismem tune`")
        elif self._spec() != settings.transform:
            raise ValueError(
                f"feature_transform {self._spec().name}, but the memory at {where} searches through "
                f"{settings.transform.name}, fitted by the memory: leave feature_transform None to use it, or "
                "refit the memory's with Memory.set_transform or `vismem tune`")

    def _read_memory(self) -> None:
        """classes_, ids_ and transform_ as the memory holds them now."""
        memory = self.memory_
        self.classes_ = np.array(sorted({*memory.class_counts(), *self._declared}), dtype=str)
        self.ids_ = np.asarray(memory.ids(), dtype=np.int64)
        self.transform_ = memory.transform

    def _validated(self, X, y=None):
        """X (and y) checked, X's width against the memory's dimension."""
        dim = self.memory_.dim
        found = validate_data(self, X, dtype=[np.float32, np.float64]) if y is None else \
            validate_data(self, X, y, dtype=[np.float32, np.float64])
        width = self.n_features_in_
        self.n_features_in_ = dim
        if width != dim:
            raise ValueError(f"X has {width} features, but the memory at {self.memory_.location} stores "
                             f"{dim}-d vectors")
        if y is not None:
            check_classification_targets(found[1])
        return found

    def _add_on_disk(self, X, y, classes, *, attach: bool) -> MemoryClassifier:
        if attach:
            self._attach()
        X, y = validate_data(self, X, y, dtype=[np.float32, np.float64], reset=False)
        check_classification_targets(y)
        labels = _string_labels(y)
        if classes is not None:
            self._declared = sorted({*self._declared, *_string_labels(np.asarray(classes))})
        self.memory_.add_vectors(X, labels)
        self._read_memory()
        return self

    def _forget_on_disk(self, ids, mask) -> MemoryClassifier:
        if mask is not None:  # over ids_ as this estimator last read them
            mask = np.asarray(mask, dtype=bool)
            if mask.shape != self.ids_.shape:
                raise ValueError(f"mask must have one entry per stored item ({len(self.ids_)}), got {mask.shape}")
            wanted = self.ids_[mask].tolist()
        else:
            wanted = self._stored_ids(ids).tolist()
        self.memory_.remove(wanted, purge=True)
        self._read_memory()
        return self

    def _decide_on_disk(self, X, **options: Any) -> list:
        self._check_fitted()
        X = validate_data(self, X, dtype=[np.float32, np.float64], reset=False)
        if not len(self.memory_):
            raise ValueError(f"the memory at {self.memory_.location} is empty: add items with partial_fit(X, y)")
        decisions = self.memory_.classify_vectors(X, **self._vote_given, **options)
        short = min((d.k_used for d in decisions), default=0)
        if decisions and short < decisions[0].vote.k:
            _check_k(decisions[0].vote, short, f" (items of the memory at {self.memory_.location} that can vote)")
        if any(label not in self.classes_ for d in decisions for label in d.scores):
            self._read_memory()  # another writer added a class since this estimator last read the memory
        return decisions

    def _shares(self, decisions: list) -> np.ndarray:
        position = {label: c for c, label in enumerate(self.classes_.tolist())}
        proba = np.zeros((len(decisions), len(position)))
        for q, decision in enumerate(decisions):
            for label, share in decision.scores.items():
                proba[q, position[label]] = share
        return proba

    def _kneighbors_on_disk(self, X, m: int, return_distance: bool):
        own = X is None
        if own:  # each stored item's neighbours among the others
            item_ids, queries = self.memory_.vectors()
        else:
            queries = validate_data(self, X, dtype=[np.float32, np.float64], reset=False)
        hits = self.memory_.search(queries, m + int(own))
        if own:
            hits = [[h for h in row if h.id != i][:m] for i, row in zip(item_ids.tolist(), hits, strict=True)]
        if any(len(row) < m for row in hits):
            raise ValueError(f"Expected n_neighbors <= n_samples_fit, but n_neighbors = {m} and the memory at "
                             f"{self.memory_.location} has fewer items that can be returned")
        ids = np.array([[h.id for h in row] for row in hits], dtype=np.int64).reshape(len(hits), m)
        if not return_distance:
            return ids
        distances = np.array([[h.distance for h in row] for row in hits], dtype=np.float64).reshape(len(hits), m)
        return np.maximum(distances, 0.0), ids

    def _explain_on_disk(self, X, max_removals: int) -> list[Explanation]:
        if max_removals != DEFAULT_MAX_REMOVALS:
            raise ValueError(f"over a memory on disk, explain searches {DEFAULT_MAX_REMOVALS} items past k, as "
                             "`vismem explain --counterfactual` does: max_removals cannot be changed")
        decisions = self._decide_on_disk(X, counterfactual=True)
        classes = self.classes_.tolist()
        return [Explanation(d.label, dict(zip(classes, shares.tolist(), strict=True)), d.neighbors, d.counterfactual)
                for d, shares in zip(decisions, self._shares(decisions), strict=True)]

    # ---- copies ----------------------------------------------------------------------------

    def __sklearn_clone__(self) -> MemoryClassifier:
        """As `sklearn.base.clone`, but a memory on disk is shared, not copied, and the
        clone refuses `fit(X, y)` (see the class doc)."""
        if not self._on_disk:
            return super().__sklearn_clone__()
        params = {name: clone(value, safe=False) for name, value in self.get_params(deep=False).items()
                  if name != "memory"}
        twin = type(self)(memory=self.memory, **params)
        twin._shares_memory = True
        return twin

    def __getstate__(self) -> dict[str, Any]:
        """An open memory pickles as its location, reopened on load."""
        state = dict(super().__getstate__())  # object.__getstate__ hands out the live __dict__
        if not isinstance(state.get("memory"), (str, os.PathLike, type(None))):
            state["memory"] = state["memory"].location
        if "memory_" in state:
            state["memory_"] = _Reopen(state["memory_"].location)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        if isinstance(state.get("memory_"), _Reopen):
            from .memory import Memory

            state["memory_"] = Memory.open(state["memory_"].location)
            state["_opened_from"] = None if state.get("memory") is None else os.fspath(state["memory"])
        super().__setstate__(state)


@dataclass(frozen=True)
class _Reopen:
    """Where a pickled estimator's memory lives."""

    location: str


def _check_weight_sum(sample_weight: Any) -> None:
    """ValueError for score weights that sum to 0: accuracy_score raised ZeroDivisionError
    (ValueError only when all were 0); the rest of its checks it makes itself."""
    if sample_weight is None:
        return
    weights = np.asarray(sample_weight)
    if weights.ndim == 1 and weights.dtype.kind in "biuf" and len(weights) and np.isfinite(weights).all() \
            and weights.sum() == 0:
        raise ValueError(f"sample_weight sums to 0 ({len(weights)} weights, {np.count_nonzero(weights)} of them "
                         "not 0): a weighted mean accuracy has no value; give weights with a non-zero sum")


def _unit(X: np.ndarray) -> np.ndarray:
    """Rows (validated: finite float32 or float64) at unit length by the rule of a memory on
    disk (`vectors.unit_rows`: at any finite scale, rescaled before the norm overflows or
    underflows; normalising in float32 made rows near 1e20 zeros and float64 ones past
    float32's range NaN). An all-zero row stays zero, similarity 0 to everything (a memory
    on disk refuses it: it has no direction). Queries too take the batch rule, not
    unit_rows' one-query shortcut, whose norm may differ in its last bit: a row then got
    other vote shares alone than in a batch (scikit-learn's check_methods_subset_invariance)."""
    zero = ~X.any(axis=1)
    if not zero.any():
        return unit_rows(X, X.shape[1])
    rows = np.zeros(X.shape, np.float32)
    if not zero.all():
        rows[~zero] = unit_rows(X[~zero], X.shape[1])
    return rows


def _widened(classes: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """`classes` with `labels` added, or ValueError for labels of another kind: numpy would
    turn every class to a string, so that 3 and "3" became one class and predict changed type."""
    kinds, held = _label_kinds(labels), _label_kinds(classes)
    if held and kinds != held:
        raise ValueError(f"the labels given are {' and '.join(sorted(kinds))}, but this estimator's classes are "
                         f"{' and '.join(sorted(held))} ({classes[:5].tolist()}): give labels of one kind "
                         "(y.astype(...) as fitted)")
    return np.unique(np.concatenate([classes, labels]))


def _label_kinds(labels: np.ndarray) -> set[str]:
    if labels.dtype.kind in "biuf":
        return {"numbers"} if len(labels) else set()
    return {"strings" if isinstance(label, str) else "numbers" if isinstance(label, (Real, np.number)) else
            type(label).__name__ for label in labels.tolist()}


def _string_labels(y: np.ndarray) -> list[str]:
    """Labels for a memory on disk, which keeps strings (and predicts them)."""
    labels = np.asarray(y).tolist()
    if not all(isinstance(label, str) for label in labels):
        raise ValueError(f"a memory on disk keeps labels as strings and predicts them: give string labels "
                         f"(y.astype(str)), got {np.asarray(y).dtype}")
    return labels


class _Held:
    """The rows given to `fit`, and what is built from them on first use, in one object: a
    query that builds them leaves the estimator's own attributes as they were."""

    def __init__(self, given: np.ndarray) -> None:
        self.given: np.ndarray | None = given
        self.raw: np.ndarray | None = None
        self.memory: ArrayMemory | None = None


class MemoryEncoder(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Images -> embeddings with a registered vismem encoder, for a Pipeline that starts at
    images: `make_pipeline(MemoryEncoder("efficientnet_lite0"), MemoryClassifier())`.

    `encoder` is an encoder name (`vismem encoders` lists them) or a built `Encoder`;
    transform takes a sequence of PIL images or image paths and returns unit vectors
    float32 (n, dim). Nothing is learned: `fit` only builds the encoder.

    Pickled (joblib, as a fitted Pipeline is saved), an encoder given by name is built again
    on first use after loading; a built one (`create_encoder(...)`) is built again on load
    from its name, weights file and options, and refused (EncoderError) if its id differs
    there (other weights). One made by hand cannot be pickled: pass it by name.

    `get_feature_names_out` names the dimensions memoryencoder0, memoryencoder1, ... once
    the encoder is built (fit, or a first transform), so `set_output(transform="pandas")`
    works on a Pipeline that starts with it.
    """

    def __init__(self, encoder: Any = "efficientnet_lite0", *, weights: str | None = None) -> None:
        self.encoder = encoder
        self.weights = weights

    def fit(self, X=None, y=None) -> MemoryEncoder:
        self.encoder_ = self._build()
        self.n_features_out_ = self.encoder_.dim
        return self

    @property
    def _n_features_out(self) -> int:
        """For `get_feature_names_out` (ClassNamePrefixFeaturesOutMixin): the encoder's dimension."""
        return self.n_features_out_

    def _build(self):
        from .encoders import Encoder, create_encoder

        return self.encoder if isinstance(self.encoder, Encoder) else create_encoder(self.encoder, weights=self.weights)

    def transform(self, X: Sequence[Any]) -> np.ndarray:
        from pathlib import Path

        from PIL import Image

        from .errors import InvalidInputError
        from .images import ImageReadError, decode_image, upright_rgb
        from .memory import query_images

        encoder = getattr(self, "encoder_", None) or self.fit().encoder_
        images = []
        # one path alone is one image; a numpy image is refused naming PIL.Image.fromarray
        for position, item in enumerate(query_images(X, "MemoryEncoder.transform", vectors_to=None)):
            try:  # a PIL image as its file shows it: upright, full range, over white
                images.append(upright_rgb(item) if isinstance(item, Image.Image)
                              else decode_image(Path(item).read_bytes()))
            except (OSError, ImageReadError) as exc:
                name = f"image {position}" if isinstance(item, Image.Image) else item
                raise InvalidInputError(f"cannot encode {name}: {exc}") from None
        return encoder.encode(images) if images else np.empty((0, encoder.dim), np.float32)

    def __sklearn_clone__(self) -> MemoryEncoder:
        """As `sklearn.base.clone`, but a built `Encoder` is shared, not deep-copied: it is
        frozen (nothing is fitted), and its model runtime (an ONNX Runtime session) cannot
        be copied, so GridSearchCV and cross_val_score over a Pipeline starting with
        MemoryEncoder(create_encoder(...)) failed with a TypeError."""
        from .encoders import Encoder

        if not isinstance(self.encoder, Encoder):
            return super().__sklearn_clone__()
        return type(self)(**self.get_params(deep=False))  # the same Encoder object, every other parameter as set

    def __getstate__(self) -> dict[str, Any]:
        """An encoder given by name pickles as that name and is built again on first use; a
        built `Encoder` (its model runtime, an ONNX Runtime session, cannot be pickled) as
        what `create_encoder` built it from and its id, built again on load, where other
        weights (another id) are refused. One made by hand, not by `create_encoder`, has
        nothing to build it again from: refused here (pickle.PicklingError)."""
        from .encoders import Encoder

        state = dict(super().__getstate__())
        if isinstance(self.encoder, str):
            state.pop("encoder_", None)
        rebuilds: dict[int, _Rebuild] = {}
        for key in ("encoder", "encoder_"):
            if isinstance(value := state.get(key), Encoder):
                if id(value) not in rebuilds:
                    rebuilds[id(value)] = _Rebuild.of(value)
                state[key] = rebuilds[id(value)]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        built: dict[int, Any] = {}
        for key in ("encoder", "encoder_"):
            if isinstance(value := state.get(key), _Rebuild):
                if id(value) not in built:
                    built[id(value)] = value.build()
                state[key] = built[id(value)]
        super().__setstate__(state)

    def __deepcopy__(self, memo: dict[int, Any]) -> MemoryEncoder:
        """A copy sharing a built `Encoder`, as `__sklearn_clone__` does: it is frozen, and
        copying it through pickling would build it again (or refuse one made by hand)."""
        import copy

        from .encoders import Encoder

        memo.update({id(value): value for value in vars(self).values() if isinstance(value, Encoder)})
        twin = memo[id(self)] = object.__new__(type(self))
        twin.__dict__.update(copy.deepcopy(vars(self), memo))
        return twin

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.requires_fit = False
        tags.input_tags.two_d_array = False
        return tags


@dataclass(frozen=True)
class _Rebuild:
    """A pickled MemoryEncoder's built encoder: what `create_encoder` built it from, and
    the id it had."""

    recipe: Recipe
    id: str

    @classmethod
    def of(cls, encoder: Encoder) -> _Rebuild:
        if encoder.recipe is None:
            raise pickle.PicklingError(
                f"MemoryEncoder's encoder {encoder.name} was built by hand, not by "
                "vismem.encoders.create_encoder, so nothing can build it again when it is unpickled: pass "
                "the encoder by name (MemoryEncoder(\"efficientnet_lite0\"); `vismem encoders` lists them, "
                "vismem.encoders.register adds yours), or build it with create_encoder")
        return cls(encoder.recipe, encoder.id)

    def build(self) -> Encoder:
        from .encoders import create_encoder
        from .errors import EncoderError

        recipe = self.recipe
        encoder = create_encoder(recipe.name, weights=recipe.weights, options=recipe.options)
        if encoder.id != self.id:
            weights = f" ({recipe.weights})" if recipe.weights else ""
            raise EncoderError(
                f"the pickled MemoryEncoder's encoder {recipe.name} had id {self.id}, but built again here it "
                f"has id {encoder.id}: its weights{weights} or preprocessing differ on this machine, so its "
                "vectors would not be those the estimator was fitted on; install the weights it was saved "
                "with, or fit the estimator again here")
        return encoder


def _check_k(params: VoteParams, available: int, held: str = "") -> None:
    """Refuse a vote of more neighbours than there are, as KNeighborsClassifier's predict
    does: each k past them was the same vote of every item, a k that meant nothing. The
    prototype vote asks no neighbours."""
    if params.vote != "prototype" and params.k > available:
        raise ValueError(f"Expected n_neighbors <= n_samples_fit, but n_neighbors = {params.k}, n_samples_fit = "
                         f"{available}{held}: k neighbours vote, and only {available} can; set k to at most "
                         f"{available} (set_params(k=...)) or add items with partial_fit")

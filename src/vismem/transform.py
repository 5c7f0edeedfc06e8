"""Feature transforms fitted to a memory's own vectors, applied to stored and query vectors alike.

Frozen ImageNet features of out-of-domain images (digits, documents, medical crops) are
dominated by directions every class shares, so cosine similarity between them says more
about "is a digit" than about "which digit". A transform fitted on the memory removes that:

- `none`:   the vectors as they are;
- `center`: subtract the memory's mean, re-normalise (SimpleShot's "CL2N");
- `whiten`: PCA whitening fitted on the memory: centre, project on the top `components`
  principal directions, divide each by the square root of its variance, re-normalise.
  `shrinkage` s pulls each variance toward their mean first, (1 - s) * lambda + s * mean,
  so s = 1 is a plain PCA projection and s = 0 full whitening; `power` p < 1 first
  maps every feature x to sign(x) * |x|^p (and re-normalises), damping the few
  features that dominate.

A fitted transform is a small value object: `apply(vectors)` is pure, `to_dict` /
`from_dict` round-trip it through JSON (arrays as base64 float32), and `fingerprint`
names its exact content, so an index built through it can say which transform it used.

>>> import numpy as np
>>> x = np.array([[0.98, 0.2], [0.98, -0.2]], dtype=np.float32)   # cosine 0.92: "both digits"
>>> t = fit_transform(x, TransformSpec("center"))
>>> t.apply(x).round(2).tolist()                                    # cosine -1 once the shared part is gone
[[0.0, 1.0], [0.0, -1.0]]

What a removed item leaves behind: the fitted mean and covariance are sums over the items
the transform was fitted on, so an item removed later still shapes them (for one item
in n, by about 1/n of its vector). Exact removal therefore refits the transform on the
items that remain (see docs/quality.md).
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import asdict, dataclass
from functools import cached_property
from typing import Any, Iterable

import numpy as np

from .errors import InvalidInputError

TRANSFORMS = ("none", "center", "whiten")
FORMAT_VERSION = 1


@dataclass(frozen=True)
class TransformSpec:
    """What to fit: the kind and its settings (validated on construction)."""

    kind: str = "none"
    components: int | None = None
    shrinkage: float = 0.0
    power: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in TRANSFORMS:
            raise InvalidInputError(f"unknown transform {self.kind!r}; choose from {', '.join(TRANSFORMS)}")
        if self.components is not None and (not isinstance(self.components, (int, np.integer)) or self.components < 1):
            raise InvalidInputError(f"transform components must be a positive integer, got {self.components!r}")
        if self.components is not None and self.kind != "whiten":
            raise InvalidInputError("components only apply to the whiten transform")
        if not 0 <= self.shrinkage <= 1:
            raise InvalidInputError(f"whitening shrinkage must be between 0 and 1, got {self.shrinkage}")
        if not 0 < self.power <= 1:
            raise InvalidInputError(f"feature power must be in (0, 1], got {self.power}")

    @property
    def name(self) -> str:
        """Short label for reports: `none`, `center`, `whiten-256`, `whiten-128-s0.2-p0.5`."""
        parts = [self.kind]
        if self.kind == "whiten":
            parts.append(str(self.components) if self.components else "all")
            if self.shrinkage:
                parts.append(f"s{self.shrinkage:g}")
        if self.power != 1:
            parts.append(f"p{self.power:g}")
        return "-".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, value: dict[str, Any] | None) -> TransformSpec:
        return cls(**value) if value else cls()


def _unit(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


def _signed_power(vectors: np.ndarray, power: float) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    if power == 1:
        return vectors
    return _unit(np.sign(vectors) * np.abs(vectors) ** power)


@dataclass(frozen=True, eq=False)
class FeatureTransform:
    """A fitted transform: `mean` (dim,) and, for whiten, `projection` (dim, out_dim)."""

    spec: TransformSpec
    dim: int
    fitted_items: int
    mean: np.ndarray | None = None
    projection: np.ndarray | None = None
    spread: float = 0.0  # root-mean-square distance of the fitted items to their mean

    @property
    def out_dim(self) -> int:
        return self.dim if self.projection is None else int(self.projection.shape[1])

    @cached_property  # every search asks
    def is_identity(self) -> bool:
        return self.spec.kind == "none" and self.spec.power == 1

    def apply(self, vectors: np.ndarray) -> np.ndarray:
        """Transformed unit rows float32 (n, out_dim) of vectors (n, dim)."""
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise InvalidInputError(f"transform fitted on {self.dim}-d vectors got shape {tuple(vectors.shape)}")
        if self.is_identity:
            return vectors
        x = _signed_power(vectors, self.spec.power)
        if self.mean is not None:
            x = x - self.mean
        if self.projection is not None:
            x = x @ self.projection
        return _unit(x)

    def mean_drift(self, vectors: np.ndarray) -> float:
        """How far the mean of `vectors` (after `power`) lies from the fitted mean, in units
        of the fitted items' spread: 0 = unchanged; adding one new class of m items to n
        moves it by about m/(n+m) of that class's offset."""
        if self.mean is None or self.spread == 0 or len(vectors) == 0:
            return 0.0
        now = _signed_power(np.asarray(vectors, np.float32), self.spec.power).mean(axis=0, dtype=np.float64)
        return float(np.linalg.norm(now - self.mean) / self.spread)

    @property
    def key(self) -> str:
        """What derived state built through this transform records: `none` for the
        identity (vectors as stored), else the fingerprint."""
        return "none" if self.is_identity else self.fingerprint

    @property
    def fingerprint(self) -> str:
        """16 hex digits naming the exact fitted content (spec and arrays)."""
        digest = hashlib.sha256(json.dumps({"v": FORMAT_VERSION, **self.spec.to_dict(), "dim": self.dim},
                                           sort_keys=True).encode())
        for array in (self.mean, self.projection):
            if array is not None:
                digest.update(np.ascontiguousarray(array, dtype="<f4").tobytes())
        return digest.hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": FORMAT_VERSION, "spec": self.spec.to_dict(), "dim": self.dim,
            "fitted_items": self.fitted_items, "spread": self.spread, "out_dim": self.out_dim,
            "mean": _encode(self.mean), "projection": _encode(self.projection), "fingerprint": self.fingerprint,
        }

    @classmethod
    def from_dict(cls, value: dict[str, Any]) -> FeatureTransform:
        if value.get("version") != FORMAT_VERSION:
            raise InvalidInputError(f"transform format {value.get('version')!r} is not {FORMAT_VERSION}: "
                                    "refit it (`vismem tune`)")
        dim = int(value["dim"])
        mean = _decode(value["mean"], (dim,))
        projection = _decode(value["projection"], (dim, int(value["out_dim"])))
        out = cls(TransformSpec.from_dict(value["spec"]), dim, int(value["fitted_items"]), mean, projection,
                  float(value.get("spread", 0.0)))
        if value.get("fingerprint") not in (None, out.fingerprint):
            raise InvalidInputError("stored transform does not match its fingerprint: refit it (`vismem tune`)")
        return out


def _encode(array: np.ndarray | None) -> str | None:
    return None if array is None else base64.b64encode(np.ascontiguousarray(array, dtype="<f4").tobytes()).decode()


def _decode(text: str | None, shape: tuple[int, ...]) -> np.ndarray | None:
    if text is None:
        return None
    return np.frombuffer(base64.b64decode(text), dtype="<f4").reshape(shape).astype(np.float32)


def identity(dim: int) -> FeatureTransform:
    """The `none` transform for `dim`-d vectors."""
    return FeatureTransform(TransformSpec(), dim, 0)


def fit_transform(vectors: np.ndarray, spec: TransformSpec | str = "none") -> FeatureTransform:
    """Fit `spec` on unit vectors float (n, dim)."""
    x = np.asarray(vectors, dtype=np.float32)
    if x.ndim != 2 or len(x) == 0:
        raise InvalidInputError(f"a transform is fitted on (n, dim) vectors, n >= 1; got shape {x.shape}")
    return fit_transform_chunks([x], spec)


def fit_transform_chunks(chunks: Iterable[np.ndarray], spec: TransformSpec | str = "none") -> FeatureTransform:
    """Fit `spec` on unit vectors given in chunks (each float (n_i, dim)), in one pass: the
    mean and the covariance are accumulated as float64 sums, so a memory larger than RAM
    can be fitted chunk by chunk."""
    spec = TransformSpec(spec) if isinstance(spec, str) else spec
    n, dim, squares = 0, 0, 0.0
    total: np.ndarray | None = None
    gram: np.ndarray | None = None
    for chunk in chunks:
        x = _signed_power(np.asarray(chunk, dtype=np.float32), spec.power).astype(np.float64)
        if not len(x):
            continue
        n, dim = n + len(x), x.shape[1]
        total = x.sum(axis=0) if total is None else total + x.sum(axis=0)
        squares += float((x ** 2).sum())
        if spec.kind == "whiten":
            gram = x.T @ x if gram is None else gram + x.T @ x
    if n == 0 or total is None:
        raise InvalidInputError("a transform is fitted on at least one vector; got none")
    if spec.kind == "none":
        return FeatureTransform(spec, dim, n)
    mean = total / n
    spread = float(np.sqrt(max(squares / n - float(mean @ mean), 0.0)))  # rms distance to the mean
    if spec.kind == "center" or gram is None:
        return FeatureTransform(spec, dim, n, mean.astype(np.float32), None, spread)
    covariance = gram / n - np.outer(mean, mean)
    variances, directions = np.linalg.eigh(covariance)
    variances, directions = variances[::-1], directions[:, ::-1]
    rank = int((variances > 1e-10 * max(variances[0], 1e-30)).sum())
    if rank == 0:
        raise InvalidInputError(f"cannot whiten vectors with no variance (n_samples = {n}, n_features = {dim}, "
                                "all the same direction): add varied items first, or use 'center' or 'none'")
    keep = min(spec.components or rank, rank)
    kept = variances[:keep]
    kept = (1 - spec.shrinkage) * kept + spec.shrinkage * kept.mean()
    projection = directions[:, :keep] / np.sqrt(kept)
    return FeatureTransform(spec, dim, n, mean.astype(np.float32), projection.astype(np.float32), spread)

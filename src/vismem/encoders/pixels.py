"""A model-free baseline: the image's own pixels, downsampled and mean-centred."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import EncoderError
from .base import Encoder, Preprocessing, RuntimeInfo
from .options import EncoderOptions
from .registry import register


@register("pixels", "raw pixels, 16x16 RGB, mean-centred (768-d): instant, no model; a baseline",
          identify=lambda name, weights: ("pixels", "none"), devices=("cpu",), precisions=("fp32",),
          runtimes=())
def build_pixels(weights: str | Path | None = None, options: EncoderOptions | None = None) -> Encoder:
    if weights is not None:
        raise EncoderError("the pixels encoder has no weights; drop --weights")
    # (a --runtime, --device or --precision it cannot run on: refused by create_encoder)
    options = options or EncoderOptions()

    def embed(batch: np.ndarray) -> np.ndarray:
        flat = batch.reshape(len(batch), -1)
        # Centring makes cosine similarity the pixels' correlation: brightness-invariant.
        centred = flat.astype(np.float32) - flat.mean(axis=1, keepdims=True, dtype=np.float32)
        # A uniform grey (black, white) is all brightness: centring left it no direction (all
        # zeros), so it could be neither stored nor searched. It gets the direction centring
        # removes from every image, the constant one: each uniform grey is the same vector,
        # at cosine 0 from every other image. (A uniform colour is not constant across
        # channels: centring keeps its direction, and distinct hues stay apart.)
        centred[(flat == flat[:, :1]).all(axis=1)] = 1.0
        return centred

    prep = Preprocessing(16, 16, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    return Encoder("pixels", 16 * 16 * 3, prep, "none", embed, batch_size=options.batch_size or 256,
                   runtime=RuntimeInfo(decode_workers=options.decode_workers))

"""Encoders by name: one string picks a model, a registry maps names to builders.

Adding an encoder means registering one builder. Builders import their heavy
libraries lazily, so listing or opening a memory does not import torch.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..errors import EncoderError
from .base import Encoder
from .options import EncoderOptions

Builder = Callable[..., Encoder]

_BUILDERS: dict[str, Builder] = {}
_PREFIX_BUILDERS: dict[str, Builder] = {}
_DESCRIPTIONS: dict[str, str] = {}


def register(name: str, description: str, *, prefix: bool = False) -> Callable[[Builder], Builder]:
    """Register a builder under `name`, or for every `name:<model>` when `prefix` is set."""

    def decorate(builder: Builder) -> Builder:
        (_PREFIX_BUILDERS if prefix else _BUILDERS)[name] = builder
        _DESCRIPTIONS[f"{name}:<model>" if prefix else name] = description
        return builder

    return decorate


def available_encoders() -> dict[str, str]:
    """Registered encoder names (and `prefix:<model>` adapters) with a one-line description."""
    return dict(_DESCRIPTIONS)


def create_encoder(name: str, *, weights: str | Path | None = None,
                   options: EncoderOptions | None = None) -> Encoder:
    """Build the encoder called `name`.

    `weights` is an optional local file of model weights (a PyTorch state dict) that
    replaces the encoder's default pretrained weights, for machines with no network.
    `options` say where and how it runs (device, runtime, precision, batch size,
    decode workers); they never change its id.
    """
    if weights is not None and not Path(weights).is_file():
        if Path(weights).is_dir():
            raise EncoderError(f"weights file {weights} is a folder, not a file: give the state dict file in it")
        raise EncoderError(f"weights file not found: {weights}")
    options = (options or EncoderOptions()).with_env()
    if name in _BUILDERS:
        return _BUILDERS[name](weights=weights, options=options)
    prefix, _, model = name.partition(":")
    if model and prefix in _PREFIX_BUILDERS:
        return _PREFIX_BUILDERS[prefix](model, weights=weights, options=options)
    known = ", ".join(sorted(available_encoders()))
    raise EncoderError(f"unknown encoder {name!r}; available: {known}")

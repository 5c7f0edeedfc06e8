"""Encoders: images -> L2-normalised float32 vectors. See `create_encoder`."""

from . import pixels, torch_models  # noqa: F401  (importing registers the builders)
from .base import Encoder, Preprocessing, normalize_rows
from .registry import available_encoders, create_encoder, register

__all__ = [
    "Encoder",
    "Preprocessing",
    "available_encoders",
    "create_encoder",
    "normalize_rows",
    "register",
]

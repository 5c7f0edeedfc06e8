"""Encoders: images -> L2-normalised float32 vectors. See `create_encoder`."""

from . import onnx, pixels, torch_models  # noqa: F401  (importing registers the builders)
from .base import Encoder, Preprocessing, RuntimeInfo, normalize_rows
from .options import EncoderOptions
from .registry import available_encoders, create_encoder, register
from .runtime import EncoderFallbackWarning

__all__ = [
    "Encoder",
    "EncoderFallbackWarning",
    "EncoderOptions",
    "Preprocessing",
    "RuntimeInfo",
    "available_encoders",
    "create_encoder",
    "normalize_rows",
    "register",
]

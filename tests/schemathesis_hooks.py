"""Schemathesis hooks for the service's fuzz test (loaded with SCHEMATHESIS_HOOKS).

The document says file parts are `image/*`, and a schema-valid upload must be a real
image: this strategy makes small PNGs of random size and colours, so every positive
case sends one the server can decode.
"""

from __future__ import annotations

import io

import numpy as np
import schemathesis
from hypothesis import strategies as st
from PIL import Image


@st.composite
def png_images(draw: st.DrawFn) -> bytes:
    width = draw(st.integers(1, 48))
    height = draw(st.integers(1, 48))
    seed = draw(st.integers(0, 2**32 - 1))
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


schemathesis.openapi.media_type("image/png", png_images())


@schemathesis.hook
def map_body(context, body):
    """Schemathesis puts one generated image where the schema has a list of them (`files`),
    and then sends it as a plain field without a file name; make it a list of one."""
    parts = getattr(body, "body", body)
    if isinstance(parts, dict) and isinstance(parts.get("files"), bytes):
        parts["files"] = [parts["files"]]
    return body

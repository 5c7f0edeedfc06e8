"""Schemathesis hooks for the service's fuzz test (loaded with SCHEMATHESIS_HOOKS).

The document says file parts are `image/*`, and a schema-valid upload must be a real
image: this strategy makes small PNGs of random size and colours, so every positive
case sends one the server can decode. Likewise a query `vector` is a JSON array of the
memory's dimension (its `contentSchema`, which the fuzzer does not read): `map_body` puts
one there, of the dimension the test gives in VISMEM_FUZZ_DIM.
"""

from __future__ import annotations

import hashlib
import io
import json
import os

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
    if isinstance(parts, dict) and isinstance(parts.get("vector"), str):
        parts["vector"] = query_vector(parts["vector"], int(os.environ["VISMEM_FUZZ_DIM"]))
    return body


def query_vector(drawn: str, dim: int) -> str:
    """A valid query vector in place of the text the fuzzer drew (the same one for the
    same text, so that a failing case replays)."""
    seed = int.from_bytes(hashlib.sha256(drawn.encode("utf-8", "surrogatepass")).digest()[:8], "little")
    return json.dumps(np.random.default_rng(seed).standard_normal(dim).round(4).tolist())

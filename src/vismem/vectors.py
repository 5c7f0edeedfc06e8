"""Vectors coming in: checked and made unit rows, or refused with a reason.

Every vector a memory takes (`add_vectors`) or is asked about (`search`,
`classify_vectors`, `tune_index`) passes here first, so a bad row fails before anything
is written or searched, naming the row. Search is by cosine similarity: rows are
L2-normalised, at any finite scale (huge values are rescaled before their norm
overflows, tiny ones before it underflows). A row added is known by `vector_hashes`, so
adding it again can be recognised.
"""

from __future__ import annotations

import base64
import hashlib
import math
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from .errors import BadVectorsError, InvalidInputError

# Below this norm a row's squares are float32 subnormals, which keep few bits: at 1e-22 a
# row came out 1% off unit length. 2**-50: squares summing to 2**-100 lose under half a
# float32 ulp up to 2**25 dimensions. Such rows are rescaled first, as huge ones are.
SMALLEST_NORM = 2.0**-50
_SMALLEST_SQUARE = SMALLEST_NORM**2  # (computed once: every single query compares with it)


def as_array(vectors: object, dim: int) -> np.ndarray:
    """`vectors` as a numpy array (a list of rows becomes one), or a BadVectorsError saying
    what was given: np.asarray makes None or a generator a 0-d object array (whose shape
    () named nothing), and raises its own ValueError for rows of unequal lengths."""
    if isinstance(vectors, np.ndarray):  # (a memory map too: it stays one)
        return vectors
    try:
        array = np.asarray(vectors)
    except ValueError:
        raise BadVectorsError(f"vectors must be rows of one length, as an array (n, {dim}) holds them: "
                              "these rows are not") from None
    if array.ndim == 0:
        raise BadVectorsError(f"vectors are an array (n, {dim}) or a list of rows, got {type(vectors).__name__}")
    return array


def as_rows(vectors: np.ndarray, dim: int) -> np.ndarray:
    """`vectors` as rows (n, dim), one vector as one row (an empty one as none), or a clear
    error. Reads no row: a memory map stays one."""
    if vectors.ndim == 1:  # ([] was one row of no values: "got shape (1, 0)")
        vectors = vectors[None, :] if len(vectors) else vectors.reshape(0, dim)
    if vectors.ndim != 2 or vectors.shape[1] != dim:
        raise BadVectorsError(f"expected vectors of dimension {dim}, got shape {tuple(vectors.shape)}")
    return vectors


def unit_rows(vectors: np.ndarray, dim: int, *, queries: bool = False, first_row: int = 0) -> np.ndarray:
    """Item (or, with `queries`, query) vectors as unit float32 rows (n, dim), or a clear
    error (naming rows from `first_row`, for a part of a larger array). Every search pays
    this, so the good case is a handful of numpy calls."""
    if not isinstance(vectors, np.ndarray):
        vectors = as_array(vectors, dim)
    if vectors.ndim == 1:  # `as_rows` inline: every search pays this call
        vectors = vectors[None, :] if len(vectors) else vectors.reshape(0, dim)
    if vectors.ndim != 2 or vectors.shape[1] != dim:
        raise BadVectorsError(f"expected vectors of dimension {dim}, got shape {tuple(vectors.shape)}")
    if vectors.dtype.kind not in "biuf":
        raise BadVectorsError("vectors must be finite numbers")
    # C order: numpy sums a Fortran-order row (a saved `emb.T`) in another order, so its
    # norm, and the row stored, would differ in the last bit and its hash miss the same row
    if vectors.dtype.itemsize > 4 and vectors.dtype.kind == "f":
        with np.errstate(over="ignore"):  # finite values past float32's range: the slow path rescales them
            rows = vectors.astype(np.float32, order="C")
    else:
        rows = np.ascontiguousarray(vectors, dtype=np.float32)  # no copy: the division below makes one
    if queries and len(rows) == 1:
        # One query: the squares summed by BLAS (np.vdot), which overflow to inf
        # without a warning, so no np.errstate and one numpy call where the norm takes
        # two: ~10 us less once FAISS has evicted the caches. The norm may differ from
        # np.linalg.norm's in its last bit; FAISS's inner products round more than
        # that. NaN, inf, overflow and underflow fail the test: the checks below say why.
        squares = float(np.vdot(rows, rows))
        if _SMALLEST_SQUARE <= squares < math.inf:
            return rows / math.sqrt(squares)
    # the norm as np.linalg.norm computes it (stored vectors keep the same bits as ever);
    # NaN or inf anywhere shows in its row's norm
    with np.errstate(over="ignore"):  # huge values overflow to inf: the slow path rescales them
        squares = np.add.reduce(rows * rows, axis=1)
    if len(rows) == 1:
        # one query: the root and the division with a Python float, two numpy calls fewer.
        # Same bits: a float32 square root is the double one rounded, and numpy divides
        # float32 rows by a Python float in float32.
        norm = math.sqrt(float(squares[0]))
        if SMALLEST_NORM <= norm < math.inf:
            return rows / norm
    norms = np.sqrt(squares)
    if not SMALLEST_NORM <= norms.min(initial=math.inf) <= norms.max(initial=0) < math.inf:
        return _rescaled(rows, norms, first_row, vectors)
    return rows / norms[:, None]


def not_finite(wrong: np.ndarray, first_row: int = 0) -> BadVectorsError:
    """The error for the rows at `wrong` (counted from `first_row`), which hold NaN or infinity."""
    return BadVectorsError(f"vectors must be finite numbers: row {first_row + wrong[0]} holds NaN or infinity"
                           + (f", and {len(wrong) - 1} more rows" if len(wrong) > 1 else ""))


CHECK_CHUNK = 4096  # rows made unit at a time by `check_rows`: a large file is never copied whole


def check_rows(vectors: np.ndarray, dim: int, *, first_row: int = 0) -> None:
    """Raise BadVectorsError on the first row of `vectors` (n, dim) that `unit_rows` refuses,
    named by its place in `vectors` (counted from `first_row`). For a caller that answers
    a chunk at a time: the check of each chunk counts rows from the chunk, and comes after
    the chunks before it were answered."""
    for start in range(0, len(vectors), CHECK_CHUNK):
        unit_rows(vectors[start : start + CHECK_CHUNK], dim, queries=True, first_row=first_row + start)


@contextmanager
def named(source: str) -> Iterator[None]:
    """Vectors refused inside say where they came from, `source` (`--queries Q.npy`):
    "row 3" alone does not say which of the files given."""
    try:
        yield
    except BadVectorsError as exc:
        raise BadVectorsError(f"{source}: {exc}") from None


def vector_hashes(rows: np.ndarray) -> list[str]:
    """The content hash of each row as stored (a unit float32 row from `unit_rows`): the
    first 128 bits of the SHA-256 of its bytes, in unpadded URL-safe base64 (22
    characters). 128 bits: two distinct rows colliding by chance is beyond any memory's
    size. Base64, not hex: the hash is indexed twice, and 22 characters instead of 32 made
    100k rows' database 42.2 MB instead of 45.5 (34.1 with no hash), and adding them
    faster. An image's hash is 64 hex digits (the SHA-256 of its file): the two never meet."""
    rows = np.ascontiguousarray(rows, dtype=np.float32)
    if rows.ndim != 2:
        raise InvalidInputError(f"expected rows (n, dim), got shape {tuple(rows.shape)}")
    if not rows.size:
        return []
    data = rows.data.cast("B")  # slices of it are hashed without a copy
    width = rows.shape[1] * 4
    sha256, encode = hashlib.sha256, base64.urlsafe_b64encode
    return [encode(sha256(data[start : start + width]).digest()[:16])[:22].decode()
            for start in range(0, len(data), width)]


def _rescaled(rows: np.ndarray, norms: np.ndarray, first_row: int = 0,
              given: np.ndarray | None = None) -> np.ndarray:
    """The slow path of `unit_rows`: say what is wrong (rows counted from `first_row`),
    or return the unit rows, those whose norm would overflow or lose bits (`norms` out
    of range) rescaled by their largest value first. The other rows are divided as the
    fast path divides them, so a row keeps its bits (and hash) beside a huge one. A row
    of wider floats (`given`) that float32 cannot hold (past its range, or so small that
    its values became subnormal or 0) is rescaled before it is cast: only its direction counts."""
    bad = ~((norms >= SMALLEST_NORM) & (norms < math.inf))  # (a NaN norm is bad too)
    unit = rows / np.where(bad, np.float32(1), norms)[:, None]
    picked = np.flatnonzero(bad)
    source = rows[picked]
    if given is not None and given.dtype.kind == "f" and given.dtype.itemsize > 4:
        lost = ~np.isfinite(source).all(axis=1) | (np.abs(source).max(axis=1, initial=0) < np.finfo(np.float32).tiny)
        if lost.any():
            with np.errstate(over="ignore"):  # (a long double past float64's range stays inf)
                wide = given[picked[lost]].astype(np.float64)
            fits = np.isfinite(wide).all(axis=1) & wide.any(axis=1)
            source = source.copy()
            source[np.flatnonzero(lost)[fits]] = (wide[fits] / np.abs(wide[fits]).max(axis=1, keepdims=True)
                                                  ).astype(np.float32)
    finite = np.isfinite(source).all(axis=1)
    if not finite.all():
        raise not_finite(picked[~finite], first_row)
    if not source.any(axis=1).all():
        zero = picked[~source.any(axis=1)]
        raise BadVectorsError(f"vectors must not be all zeros (cosine similarity needs a direction): "
                                f"row {first_row + zero[0]}" + (f" and {len(zero) - 1} more" if len(zero) > 1 else ""))
    source = source / np.abs(source).max(axis=1, keepdims=True)
    unit[picked] = source / np.sqrt(np.add.reduce(source * source, axis=1))[:, None]
    return unit

"""Image intake: find image files, read them safely, and say why a file was skipped.

Nothing here raises on a bad image file. A corrupt, empty, non-image or oversized file
becomes a `Skipped` record with a reason, and the batch goes on.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from PIL import Image, UnidentifiedImageError

from .errors import InvalidInputError

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
)
# Far above any camera (a 108 MP phone sensor fits), far below what exhausts RAM on decode.
DEFAULT_MAX_PIXELS = 120_000_000


@dataclass(frozen=True)
class ImageFile:
    """An image file to ingest, with the label it takes (None if it has none yet)."""

    path: Path
    label: str | None


@dataclass(frozen=True)
class Skipped:
    """An input that was not used, and why."""

    path: str
    reason: str


class ImageReadError(Exception):
    """Raised by `decode_image`; its message is the skip reason."""


def find_images(
    paths: Iterable[str | Path], label: str | None = None
) -> tuple[list[ImageFile], list[Skipped]]:
    """Expand files and folders into image files with labels.

    A folder in class-subfolder layout (`root/<label>/<image>`) gives each image the
    name of its top subfolder as label, unless `label` is given. Files directly inside
    a folder root have no subfolder; they are skipped unless `label` is given.
    Explicitly named files are always tried, whatever their extension.

    Raises InvalidInputError for a path that does not exist, before anything is read,
    so a typo cannot half-run a batch.
    """
    paths = [Path(p) for p in paths]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise InvalidInputError(f"no such file or folder: {', '.join(missing)}")
    found: list[ImageFile] = []
    skipped: list[Skipped] = []
    for root in paths:
        if root.is_file():
            if label is None:
                skipped.append(Skipped(str(root), "no label: a single file needs --label"))
            else:
                found.append(ImageFile(root, label))
            continue
        for file in sorted(p for p in root.rglob("*") if p.is_file()):
            if file.suffix.lower() not in IMAGE_SUFFIXES:
                if not file.name.startswith("."):
                    skipped.append(Skipped(str(file), "not an image file extension"))
                continue
            relative = file.relative_to(root)
            if label is not None:
                found.append(ImageFile(file, label))
            elif len(relative.parts) >= 2:
                found.append(ImageFile(file, relative.parts[0]))
            else:
                skipped.append(
                    Skipped(str(file), "no label: not inside a class subfolder (pass --label)")
                )
    return found, skipped


def content_hash(data: bytes) -> str:
    """Hex SHA-256 of raw file bytes: the identity of an image's content."""
    return hashlib.sha256(data).hexdigest()


def decode_image(
    data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, draft_size: int | None = None
) -> Image.Image:
    """Decode bytes into an RGB image, refusing anything that is not a sane image.

    `draft_size` lets JPEG decode at a reduced scale when the image is far bigger than
    the encoder needs (Pillow's draft mode), which is much faster.

    Raises ImageReadError with a human-readable reason.
    """
    if not data:
        raise ImageReadError("empty file")
    try:
        with warnings.catch_warnings():
            # We enforce our own pixel limit below; Pillow's warning would only be noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                raise ImageReadError(
                    f"image too large: {width}x{height} pixels exceeds the limit of "
                    f"{max_pixels:,} (possible decompression bomb)"
                )
            if draft_size and image.format == "JPEG":
                image.draft("RGB", (draft_size, draft_size))
            image.load()
            return image.convert("RGB")
    except ImageReadError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageReadError(f"image too large (possible decompression bomb): {exc}") from None
    except UnidentifiedImageError:
        raise ImageReadError("not an image (unrecognised format)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageReadError(f"corrupt image: {exc}") from None


def thumbnail_jpeg(image: Image.Image, size: int = 128, quality: int = 85) -> bytes:
    """A small JPEG of `image`, kept so explanations can show what an exemplar looked like."""
    thumb = image.copy()
    thumb.thumbnail((size, size), Image.Resampling.BICUBIC)
    out = io.BytesIO()
    thumb.save(out, format="JPEG", quality=quality)
    return out.getvalue()

"""Image intake: find image files, read them safely, and say why a file was skipped.

Nothing here raises on a bad image file. A corrupt, empty, non-image or oversized file
becomes a `Skipped` record with a reason, and the batch goes on.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import struct
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

try:  # colour management; Pillow's wheels always ship littlecms, some distro builds do not
    from PIL import ImageCms
except ImportError:  # pragma: no cover
    ImageCms = None  # type: ignore[assignment]

from .errors import InvalidInputError
from .files import no_such_paths
from .store.base import check_label
from .store.sqlite import DB_NAME

# HEIC/HEIF are tried too: without a decoder their skip reason says to convert them.
IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".apng", ".bmp", ".gif", ".webp", ".tif", ".tiff",
     ".ppm", ".pgm", ".pbm", ".pnm", ".avif", ".heic", ".heif"}
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


class ImageTooLargeError(ImageReadError):
    """An image over the pixel limit: its size as said ("WxH = N pixels") and the limit.
    `whose` and `set_by` let a caller name its own limit and what sets it (`vismem serve
    --max-pixels`): one wording for every face."""

    def __init__(self, size: str, limit: int, *, whose: str = "the", set_by: str = "") -> None:
        self.size, self.limit = size, limit
        why = f"set by {set_by}; " if set_by else ""
        super().__init__(f"image too large: {size} exceeds {whose} limit of {limit:,} pixels "
                         f"({why}a guard against decompression bombs)")
        self._said = (whose, set_by)

    def __reduce__(self) -> tuple:  # whole across processes (decode workers, Ray)
        whose, set_by = self._said
        return _too_large, (self.size, self.limit, whose, set_by)


def _too_large(size: str, limit: int, whose: str, set_by: str) -> ImageTooLargeError:
    return ImageTooLargeError(size, limit, whose=whose, set_by=set_by)


def find_images(
    paths: Iterable[str | Path], label: str | None = None
) -> tuple[list[ImageFile], list[Skipped]]:
    """Expand files and folders into image files with labels.

    A folder in class-subfolder layout (`root/<label>/<image>`) gives each image the
    name of its top subfolder as label, unless `label` is given. Files directly inside
    a folder root have no subfolder; they are skipped unless `label` is given.
    Explicitly named files are always tried, whatever their extension. Inside a folder,
    hidden files and folders (`.git`, `.DS_Store`, macOS's `._x.jpg`) and the files
    systems leave beside photos (`Thumbs.db`, `desktop.ini`) are passed over, as is a
    memory's folder (one kept among the photos holds no image of them),
    and symbolic links to folders are followed, each real folder once (a link back up
    the tree ends there; a link to a folder inside the root is passed over, so the folder
    keeps its own name as label).

    Raises InvalidInputError for a path that does not exist, before anything is read,
    so a typo cannot half-run a batch.
    """
    paths = list(paths)
    check_not_empty(paths)
    roots = [Path(p) for p in paths]
    missing = [str(p) for p in roots if not p.exists()]
    if missing:
        raise no_such_paths(missing)
    found: list[ImageFile] = []
    skipped: list[Skipped] = []
    for root in roots:
        if not root.is_dir():
            reason = _unusable(root)
            if reason is None and label is None:
                reason = "no label: a single file needs --label (label=)"
            if reason is None:
                found.append(ImageFile(root, label))
            else:
                skipped.append(Skipped(shown(root), reason))
            continue
        for file in _files_under(root, skipped):
            if file.suffix.lower() not in IMAGE_SUFFIXES:
                skipped.append(Skipped(shown(file), "not an image file extension"))
                continue
            reason = _unusable(file)
            relative = file.relative_to(root)
            if reason is None and label is None:
                reason = _no_label(relative)
            if reason is not None:
                skipped.append(Skipped(shown(file), reason))
            else:
                found.append(ImageFile(file, label if label is not None else relative.parts[0]))
    return found, skipped


EMPTY_PATH = "an empty path names no file or folder (an unset variable?); give . for the current folder"


def check_not_empty(paths: Iterable[object]) -> None:
    """Refuse an empty path text: Path("") is ".", so an unset variable in a script
    would read every image under the current folder."""
    if any(isinstance(p, str) and not p for p in paths):
        raise InvalidInputError(EMPTY_PATH)


NOT_IN_A_CLASS_FOLDER = "no label: not inside a class subfolder"
HELD_BY_THE_MEMORY = "already in the memory"  # a query left out: its content is an item


def _no_label(relative: Path) -> str | None:
    """Why a file at `relative` under a folder root takes no label from it (None: it does)."""
    if len(relative.parts) < 2:
        return (f"{NOT_IN_A_CLASS_FOLDER} (move it into one, or give --label (label=), "
                "which labels every image of the add)")
    try:
        check_label(relative.parts[0])
    except InvalidInputError as exc:  # refused at insert, it would abort the whole add
        return f"folder name is no label: {exc}"
    return None


def _files_under(root: Path, skipped: list[Skipped]) -> list[Path]:
    """Every non-hidden file under `root`, sorted, following links to folders once each;
    a folder that cannot be listed goes to `skipped`."""
    def unlistable(error: OSError) -> None:
        skipped.append(Skipped(shown(Path(error.filename or root)), f"unreadable folder: {error.strerror or error}"))

    # the folders above the root count as walked: a link up to one is a loop too, not a
    # way into the root's siblings (labelled by the link's name)
    seen = {_identity(folder) for folder in Path(os.path.realpath(root)).parents}
    # a link to a folder the walk reaches without links is passed over, wherever it sorts:
    # the folder keeps its images and its label (`all_cats` -> `cat` would take both)
    real: set[tuple[int, int]] = set()
    for folder, folders, _ in os.walk(root):  # links not followed
        real.add(_identity(folder))
        folders[:] = _shown_folders(folders)
    files: list[Path] = []
    for folder, folders, names in os.walk(root, followlinks=True, onerror=unlistable):
        identity = _identity(folder)
        # reached again through a link (a loop, or a twin), or a memory's own files, not images
        if identity in seen or os.path.exists(os.path.join(folder, DB_NAME)):
            folders.clear()
            continue
        seen.add(identity)
        folders[:] = [name for name in _shown_folders(folders) if not _links_into(Path(folder, name), real)]
        files += [Path(folder, name) for name in names if not _passed_over(name)]
    return sorted(files)


# Files an operating system leaves in photo folders (thumbnail caches, folder settings),
# passed over as hidden ones are: every add of a folder copied from Windows was "done in
# part" (exit 3) for its Thumbs.db. (macOS's .DS_Store and ._ files are hidden already.)
SYSTEM_FILES = frozenset({"thumbs.db", "ehthumbs.db", "ehthumbs_vista.db", "desktop.ini", "icon\r"})


def _passed_over(name: str) -> bool:
    return name.startswith(".") or name.casefold() in SYSTEM_FILES


def _shown_folders(names: list[str]) -> list[str]:
    return sorted(name for name in names if not name.startswith("."))


def _links_into(path: Path, folders: set[tuple[int, int]]) -> bool:
    """Whether `path` is a link to one of `folders` (identities)."""
    try:
        return path.is_symlink() and _identity(path) in folders
    except OSError:  # gone meanwhile: the walk says so, or passes it over
        return False


def _identity(folder: str | Path) -> tuple[int, int]:
    status = os.stat(folder)
    return status.st_dev, status.st_ino


def not_a_file(path: Path) -> str:
    """Why `path`, which is no regular file, is skipped, in the words that fit it."""
    if path.is_symlink() and not path.exists():
        return "not a regular file: a broken link"
    if not os.path.lexists(path):
        return "no such file"
    if path.is_dir():
        return "not a regular file: a folder"
    # never opened: reading a pipe waits for a writer, forever
    return "not a regular file: a pipe, socket or device"


def _unusable(path: Path) -> str | None:
    """Why the file at `path` cannot be read as an image, before reading it (None: it can)."""
    if not path.is_file():
        return not_a_file(path)
    try:
        os.fsdecode(os.fsencode(path)).encode("utf-8")
    except UnicodeEncodeError:  # the store and JSON keep text: such a path cannot be kept
        return "file name is not valid UTF-8: rename it"
    return None


def shown(path: str | Path) -> str:
    """`path` as printable text: bytes that are not UTF-8 appear as \\xNN escapes (`str()`
    would keep them as lone surrogates, which strict JSON readers refuse)."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def content_hash(data: bytes) -> str:
    """Hex SHA-256 of raw file bytes: the identity of an image's content."""
    return hashlib.sha256(data).hexdigest()


def decode_image(
    data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, draft_size: int | None = None
) -> Image.Image:
    """Decode bytes into an upright 8-bit sRGB image, refusing anything that is not a sane image.

    The result is what an image viewer shows: the first frame, turned upright by its EXIF
    orientation, every colour mode brought to 8-bit RGB with its real range (see
    `upright_rgb`). `draft_size` lets a JPEG decode at a reduced scale when it is far
    bigger than the encoder needs (Pillow's draft mode), which is much faster; the
    image stays at least `draft_size` on each side.

    Raises ImageReadError with a human-readable reason.
    """
    return decode_sized(data, max_pixels=max_pixels, draft_size=draft_size)[0]


def decode_sized(
    data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, draft_size: int | None = None
) -> tuple[Image.Image, tuple[int, int]]:
    """(`decode_image`'s image, the file's own width and height, turned as the image is):
    a draft decodes a JPEG smaller than the file holds it."""
    if not data:
        raise ImageReadError("empty file")
    # Pillow refuses images above twice its own limit while opening them, before we see
    # their size; quoting whichever limit is lower keeps one limit in every message.
    limit = max_pixels if Image.MAX_IMAGE_PIXELS is None else min(max_pixels, 2 * Image.MAX_IMAGE_PIXELS)
    try:
        with warnings.catch_warnings():
            # We enforce our own pixel limit below; Pillow's warning would only be noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > limit:
                raise ImageTooLargeError(f"{width}x{height} = {width * height:,} pixels", limit)
            if draft_size:
                image.draft("RGB", (draft_size, draft_size))  # a no-op for all but JPEG
            image.load()
            upright, swapped = _upright_rgb(image)
            return upright, (height, width) if swapped else (width, height)
    except ImageReadError:
        raise
    except Image.DecompressionBombError as exc:
        size = re.search(r"\((\d+) pixels\)", str(exc))
        raise ImageTooLargeError(f"{int(size[1]):,} pixels" if size else "its size", limit) from None
    except UnidentifiedImageError:
        raise ImageReadError(_unrecognised(data)) from None
    except (OSError, SyntaxError, ValueError, struct.error) as exc:
        raise ImageReadError(f"corrupt image: {exc}") from None
    except MemoryError:
        raise
    except Exception as exc:  # Pillow's readers raise more kinds (DDS: NotImplementedError) on damaged files
        raise ImageReadError(f"corrupt image: {type(exc).__name__}: {exc}") from None


# Containers whose variants Pillow may have no decoder for (float TIFF, HEIC; AVIF and WebP
# in some builds), so the reason says what the file is instead of "not an image".
_SIGNATURES = {b"II*\0": "TIFF", b"MM\0*": "TIFF"}
_HEIF_BRANDS = {b"heic": "HEIC", b"heix": "HEIC", b"mif1": "HEIF", b"avif": "AVIF"}


def _unrecognised(data: bytes) -> str:
    kind = next((name for magic, name in _SIGNATURES.items() if data.startswith(magic)), None)
    if data[4:8] == b"ftyp":
        kind = _HEIF_BRANDS.get(data[8:12], kind)
    elif data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        kind = "WebP"
    if kind is None:
        return "not an image (unrecognised format)"
    return f"{kind} image that Pillow cannot decode here (an unsupported variant, or damaged): convert it to PNG"


# ---- colour: every mode Pillow opens, as 8-bit sRGB ------------------------------------

GREY_16_BIT = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
WITH_ALPHA = frozenset({"LA", "La", "PA", "RGBA", "RGBa"})
BACKGROUND = (255, 255, 255)  # transparent pixels show as on a white page


def upright_rgb(image: Image.Image) -> Image.Image:
    """Any image Pillow opens -> upright 8-bit sRGB, as a viewer shows it.

    - EXIF orientation (tags 2-8) is applied (`ImageOps.exif_transpose`).
    - 16-bit greyscale maps its full range 0-65535 onto 0-255. 32-bit integer (`I`)
      does the same when its values fit in 16 bits (Pillow's PGM/PNM convention),
      else stretches its own min..max; float (`F`) uses 0-1 or 0-255 when its values
      fit there, else its own min..max. Float images with NaN or infinity are refused.
    - Transparency (alpha, or a palette/colour key) is composited over white.
    - An embedded ICC profile (RGB, grey or CMYK) is honoured by converting to sRGB;
      CIELAB is converted to sRGB. CMYK without a profile and every other mode use
      Pillow's conversion.

    Raises ImageReadError for a mode or pixel data that cannot be shown faithfully.
    """
    return _upright_rgb(image)[0]


def _upright_rgb(image: Image.Image) -> tuple[Image.Image, bool]:
    """(`upright_rgb(image)`, whether turning it upright swapped its width and height)."""
    icc, mode = image.info.get("icc_profile"), image.mode
    upright, swapped = _upright(image)
    image = _eight_bit_opaque(upright, "transparency" in image.info)
    if image.mode == "LAB":
        converted = _icc_to_srgb(image, None)
        if converted is None:
            raise ImageReadError("CIELAB image: converting it needs Pillow with littlecms")
        return converted, swapped
    if icc and image.mode in ("L", "RGB", "CMYK"):
        converted = _icc_to_srgb(image, icc)
        if converted is not None:
            return converted, swapped
    if image.mode == "RGB":
        return image, swapped
    try:
        return image.convert("RGB"), swapped
    except ValueError:
        raise ImageReadError(f"colour mode {mode} is not supported") from None


def _upright(image: Image.Image) -> tuple[Image.Image, bool]:
    """(`image` turned by its EXIF orientation, whether that swapped width and height)."""
    try:
        orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
        if orientation != 1:
            # a copy: a caller's image stays as it was; 5-8 turn it a quarter
            return ImageOps.exif_transpose(image), orientation in (5, 6, 7, 8)
    except (OSError, SyntaxError, ValueError, KeyError, TypeError, struct.error):
        pass  # unreadable EXIF: shown as stored, as viewers do
    return image, False


def _eight_bit_opaque(image: Image.Image, transparent: bool) -> Image.Image:
    """High-depth grey -> L; anything with transparency -> RGB over white; palette -> RGB."""
    mode = image.mode
    if mode in GREY_16_BIT or mode in ("I", "F"):
        values = np.asarray(image)
        grey = _grey_to_8bit(values, mode)
        key = image.info.get("transparency") if transparent else None
        if isinstance(key, (int, float)):  # a colour key (PNG tRNS): pixels of that value are transparent
            grey = np.where(values == key, np.uint8(BACKGROUND[0]), grey)
        return Image.fromarray(grey)
    if mode in WITH_ALPHA or transparent:
        try:
            rgba = image.convert("RGBA")
        except ValueError:
            raise ImageReadError(f"colour mode {mode} is not supported") from None
        return Image.alpha_composite(Image.new("RGBA", image.size, BACKGROUND + (255,)), rgba).convert("RGB")
    return image.convert("RGB") if mode == "P" else image


def _grey_to_8bit(values: np.ndarray, mode: str) -> np.ndarray:
    """One high-depth grey channel -> uint8, mapping its real range onto 0-255."""
    if mode == "F" and not np.isfinite(values).all():
        raise ImageReadError("float image with NaN or infinite pixels: no faithful 8-bit version")
    low, high = (values.min(), values.max()) if values.size else (0, 0)
    if mode in GREY_16_BIT or (mode == "I" and low >= 0 and high <= 65535):
        low, high = 0, 65535
    elif mode == "F" and low >= 0 and high <= 1:
        low, high = 0, 1
    elif mode == "F" and low >= 0 and high <= 255:
        low, high = 0, 255
    scale = 255.0 / (float(high) - float(low)) if high > low else 0.0
    scaled = (values.astype(np.float32) - np.float32(low)) * np.float32(scale)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _icc_to_srgb(image: Image.Image, icc: bytes | None) -> Image.Image | None:
    """`image` (L, RGB or CMYK with ICC profile `icc`, or LAB) in sRGB; None when the
    profile is sRGB already, unreadable, or does not fit the mode (the profile is then
    ignored, as viewers do)."""
    transform = _transform_to_srgb(icc, image.mode) if ImageCms is not None else None
    if transform is None:
        return None
    return ImageCms.applyTransform(image, transform)


@lru_cache(maxsize=32)
def _transform_to_srgb(icc: bytes | None, mode: str) -> ImageCms.ImageCmsTransform | None:
    """A cached transform from profile `icc` (None: CIELAB) to sRGB for `mode`, or None
    when it would change nothing or cannot be built. Cameras reuse a few profiles, so
    each is parsed and tested once per process."""
    try:
        source = ImageCms.createProfile("LAB") if icc is None else ImageCms.ImageCmsProfile(io.BytesIO(icc))
        transform = ImageCms.buildTransform(source, ImageCms.createProfile("sRGB"), mode, "RGB")
    except (ImageCms.PyCMSError, OSError, TypeError, ValueError):
        return None
    if mode in ("RGB", "L"):  # skip profiles that are sRGB already: most photos carry one
        grid = np.stack(np.meshgrid(*[np.arange(0, 256, 17, dtype=np.uint8)] * 3), -1).reshape(-1, 16, 3)
        probe = Image.fromarray(grid) if mode == "RGB" else Image.fromarray(np.ascontiguousarray(grid[..., 0]))
        out = np.asarray(ImageCms.applyTransform(probe, transform), dtype=np.int16)
        if np.abs(out - np.asarray(probe.convert("RGB"), dtype=np.int16)).max() <= 1:
            return None
    return transform


THUMBNAIL_SIZE = 128  # pixels, the longer side


def thumbnail_jpeg(image: Image.Image, size: int = THUMBNAIL_SIZE, quality: int = 85) -> bytes:
    """A small JPEG of `image`, kept so explanations can show what an exemplar looked like."""
    thumb = image.copy()
    thumb.thumbnail((size, size), Image.Resampling.BICUBIC)
    out = io.BytesIO()
    thumb.save(out, format="JPEG", quality=quality)
    return out.getvalue()

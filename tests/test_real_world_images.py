"""Real-world image files, made here: every Pillow mode, EXIF orientations, odd formats.

Each file shows one known upright 8-bit picture (a photo with structure, so a turned or
washed-out image cannot pass). It must decode to that picture and embed, through the real
offline encoder and the real intake path (`prepare_bytes`: draft mode, thumbnails), within
cosine distance 0.02 of the picture itself, or be skipped with a reason. Never silently wrong.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image, ImageCms
from skimage import data

from vismem.embed import encode_prepared, prepare_bytes
from vismem.images import ImageFile, ImageReadError, decode_image, upright_rgb

MAX_DISTANCE = 0.02


def _picture() -> np.ndarray:
    """The upright reference: the cat photo, 360x240 (wider than tall, so turns show)."""
    return np.asarray(Image.fromarray(data.chelsea()).resize((360, 240), Image.Resampling.LANCZOS))


REF = _picture()
GREY = np.asarray(Image.fromarray(REF).convert("L"))
OTHER = np.asarray(Image.fromarray(data.astronaut()).resize((360, 240)))  # a second frame
SQUARE = REF[:, 60:300]  # 240x240


def rgb(grey: np.ndarray) -> np.ndarray:
    return np.repeat(grey[..., None], 3, axis=2)


def save(image: Image.Image, fmt: str, **options) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **options)
    return out.getvalue()


def with_border(picture: np.ndarray, value, width: int = 40) -> np.ndarray:
    """`picture` with a frame of `value` (what transparent pixels must show as)."""
    framed = picture.copy()
    framed[:width], framed[-width:], framed[:, :width], framed[:, -width:] = value, value, value, value
    return framed


def border_mask(shape, width: int = 40) -> np.ndarray:
    return with_border(np.zeros(shape[:2], bool), True, width)


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    body = kind + payload
    return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body))


def png16(samples: np.ndarray) -> bytes:
    """A 16-bit PNG (grey or RGB) written by hand: Pillow cannot write 16-bit colour."""
    height, width = samples.shape[:2]
    colour_type = 2 if samples.ndim == 3 else 0
    rows = samples.astype(">u2").reshape(height, -1).view(np.uint8)
    raw = b"".join(b"\0" + row.tobytes() for row in rows)
    ihdr = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(raw))
            + png_chunk(b"IEND", b""))


def tiff(array: np.ndarray, **options) -> bytes:
    out = io.BytesIO()
    tifffile.imwrite(out, array, **options)
    return out.getvalue()


def linear_srgb_icc() -> bytes:
    """An ICC v2 display profile written by hand: sRGB primaries, gamma 1.0 (linear light).

    Pixels stored in it look far too dark when read as sRGB, so ignoring it shows.
    """
    def s15(v: float) -> bytes:
        return struct.pack(">i", round(v * 65536))

    def xyz(x: float, y: float, z: float) -> bytes:
        return b"XYZ \0\0\0\0" + s15(x) + s15(y) + s15(z)

    text = b"linear sRGB (vismem test)\0"
    desc = b"desc\0\0\0\0" + struct.pack(">I", len(text)) + text + b"\0" * 8 + b"\0" * 70
    curve = b"curv\0\0\0\0" + struct.pack(">IH", 1, 0x0100) + b"\0\0"  # gamma 1.0
    tags = [(b"desc", desc), (b"wtpt", xyz(0.9642, 1.0, 0.8249)),
            (b"rXYZ", xyz(0.4361, 0.2225, 0.0139)), (b"gXYZ", xyz(0.3851, 0.7169, 0.0971)),
            (b"bXYZ", xyz(0.1431, 0.0606, 0.7141)),
            (b"rTRC", curve), (b"gTRC", curve), (b"bTRC", curve)]
    start = 128 + 4 + 12 * len(tags)
    table, body = b"", b""
    for signature, payload in tags:
        payload += b"\0" * (-len(payload) % 4)
        table += signature + struct.pack(">II", start + len(body), len(payload))
        body += payload
    header = (struct.pack(">I4sI4s4s4s", start + len(body), b"\0" * 4, 0x02100000, b"mntr", b"RGB ", b"XYZ ")
              + b"\0" * 12 + b"acsp" + b"\0" * 24 + b"\0" * 4 + s15(0.9642) + s15(1.0) + s15(0.8249)
              + b"\0" * 48)
    return header + struct.pack(">I", len(tags)) + table + body


def to_profile(picture: np.ndarray, icc: bytes) -> Image.Image:
    """`picture` (sRGB) with its pixels re-expressed in profile `icc`."""
    target = ImageCms.ImageCmsProfile(io.BytesIO(icc))
    return ImageCms.profileToProfile(Image.fromarray(picture), ImageCms.createProfile("sRGB"), target)


def stored_for_orientation(upright: np.ndarray, orientation: int) -> np.ndarray:
    """The pixels a camera stores for EXIF `orientation` (EXIF 2.3, 0th row / 0th column),
    written from the standard, independently of Pillow: a viewer must show `upright`."""
    return {
        1: lambda a: a,
        2: lambda a: a[:, ::-1],                 # 0th row top, 0th column right
        3: lambda a: a[::-1, ::-1],              # bottom, right
        4: lambda a: a[::-1, :],                 # bottom, left
        5: lambda a: a.transpose(1, 0, 2),       # left, top
        6: lambda a: np.rot90(a, 1),             # right, top: stored turned 90 degrees anticlockwise
        7: lambda a: np.rot90(a, 1)[:, ::-1],    # right, bottom
        8: lambda a: np.rot90(a, -1),            # left, bottom
    }[orientation](upright)


def exif(orientation: int) -> Image.Exif:
    tags = Image.Exif()
    tags[0x0112] = orientation
    return tags


def transparent(picture: np.ndarray, alpha: np.ndarray, garbage) -> np.ndarray:
    """RGBA of `picture` with `alpha`, colour `garbage` where fully transparent."""
    colour = picture.copy()
    colour[alpha == 0] = garbage
    return np.dstack([colour, alpha])


def palette_with_transparency(fmt: str) -> tuple[bytes, np.ndarray]:
    """A 255-colour palette photo whose border is a transparent index painted black."""
    quantised = Image.fromarray(REF).quantize(255, dither=Image.Dither.NONE)
    indices = np.asarray(quantised).copy()
    indices[border_mask(indices.shape)] = 255
    image = Image.fromarray(indices, "P")
    palette = quantised.getpalette()[: 255 * 3] + [0, 0, 0]
    image.putpalette(palette)
    expected = with_border(np.asarray(quantised.convert("RGB")), 255)
    return save(image, fmt, transparency=255), expected


def animated(fmt: str, **options) -> bytes:
    first, second = Image.fromarray(REF), Image.fromarray(OTHER)
    return save(first, fmt, save_all=True, append_images=[second], **options)


# name -> () -> (file bytes, the upright 8-bit picture a viewer shows, pixel tolerance)
Case = Callable[[], tuple[bytes, np.ndarray, float]]
GREY16 = GREY.astype(np.uint16) * 257
HALF_ALPHA = np.full(GREY.shape, 128, np.uint8)
# Integers and floats beyond 16 bits or 0-255 have no range of their own: their min..max is used.
STRETCHED = np.rint((GREY - GREY.min()) * (255 / (GREY.max() - GREY.min()))).astype(np.uint8)
CASES: dict[str, Case] = {
    # 8-bit modes
    "RGB png": lambda: (save(Image.fromarray(REF), "PNG"), REF, 0),
    "L png": lambda: (save(Image.fromarray(GREY), "PNG"), rgb(GREY), 0),
    "1 png": lambda: (save(Image.fromarray(GREY).convert("1"), "PNG"),
                      rgb(np.asarray(Image.fromarray(GREY).convert("1"), np.uint8) * 255), 0),
    "P png": lambda: (save(Image.fromarray(REF).quantize(256), "PNG"),
                      np.asarray(Image.fromarray(REF).quantize(256).convert("RGB")), 0),
    "P png with transparency": lambda: (*palette_with_transparency("PNG"), 0),
    "P gif with transparency": lambda: (*palette_with_transparency("GIF"), 0),
    "PA tiff": lambda: (save(Image.fromarray(transparent(REF, np.where(border_mask(REF.shape), 0, 255)
                                                         .astype(np.uint8), (0, 0, 0))).convert("PA"), "TIFF"),
                        None, 6),  # expected filled in below
    "LA png": lambda: (save(Image.fromarray(np.dstack([np.where(border_mask(GREY.shape), 0, GREY),
                                                       np.where(border_mask(GREY.shape), 0, 255)])
                                            .astype(np.uint8), "LA"), "PNG"),
                       rgb(with_border(GREY, 255)), 0),
    "RGBA png, transparent border": lambda: (
        save(Image.fromarray(transparent(REF, np.where(border_mask(REF.shape), 0, 255).astype(np.uint8),
                                         (0, 0, 0))), "PNG"), with_border(REF, 255), 0),
    "RGBA png, half transparent": lambda: (
        save(Image.fromarray(np.dstack([REF, HALF_ALPHA])), "PNG"),
        np.rint(REF * (128 / 255) + 255 * (127 / 255)).astype(np.uint8), 1),
    "RGBA webp": lambda: (
        save(Image.fromarray(transparent(REF, np.where(border_mask(REF.shape), 0, 255).astype(np.uint8),
                                         (0, 0, 0))), "WEBP", lossless=True), with_border(REF, 255), 0),
    "CMYK jpeg": lambda: (save(Image.fromarray(REF).convert("CMYK"), "JPEG", quality=95), REF, 4),
    "CMYK tiff": lambda: (save(Image.fromarray(REF).convert("CMYK"), "TIFF"), REF, 1),
    "YCbCr tiff": lambda: (save(Image.fromarray(REF).convert("YCbCr"), "TIFF"), REF, 2),
    "LAB tiff": lambda: (save(ImageCms.profileToProfile(Image.fromarray(REF), ImageCms.createProfile("sRGB"),
                                                        ImageCms.createProfile("LAB"), outputMode="LAB"), "TIFF"),
                         REF, 2),
    # high bit depth
    "I;16 png": lambda: (save(Image.fromarray(GREY16), "PNG"), rgb(GREY), 0),
    "I;16 tiff": lambda: (save(Image.fromarray(GREY16), "TIFF"), rgb(GREY), 0),
    # a colour key (tRNS): the border's grey level 1 (no other pixel has it) is transparent;
    # it showed as the dark grey it stands for
    "I;16 png with a transparent grey": lambda: (
        save(Image.fromarray(with_border(GREY16, 1)), "PNG", transparency=1), rgb(with_border(GREY, 255)), 0),
    "I;16B tiff": lambda: (save(Image.frombytes("I;16B", (360, 240), GREY16.astype(">u2").tobytes()), "TIFF"),
                           rgb(GREY), 0),
    "16-bit grey png, hand-written": lambda: (png16(GREY16), rgb(GREY), 0),
    "16-bit RGB png": lambda: (png16(REF.astype(np.uint16) * 257), REF, 0),
    "16-bit RGB tiff": lambda: (tiff(REF.astype(np.uint16) * 257, photometric="rgb"), REF, 0),
    "12-bit pgm (maxval 4095)": lambda: (
        b"P5\n360 240\n4095\n" + np.rint(GREY * (4095 / 255)).astype(">u2").tobytes(), rgb(GREY), 1),
    "I tiff, 32-bit wide range": lambda: (tiff(GREY.astype(np.int32) * 100_000 - 7_000_000), rgb(STRETCHED), 1),
    "F tiff, 0-1": lambda: (tiff(GREY.astype(np.float32) / 255), rgb(GREY), 0),
    "F tiff, 0-255": lambda: (tiff(GREY.astype(np.float32)), rgb(GREY), 0),
    "F tiff, arbitrary range": lambda: (tiff(GREY.astype(np.float32) * 0.37 - 12), rgb(STRETCHED), 1),
    # JPEG flavours
    "jpeg baseline 4:2:0": lambda: (save(Image.fromarray(REF), "JPEG", quality=92), REF, 4),
    "jpeg progressive": lambda: (save(Image.fromarray(REF), "JPEG", quality=92, progressive=True), REF, 4),
    "jpeg optimised 4:4:4": lambda: (save(Image.fromarray(REF), "JPEG", quality=92, optimize=True,
                                          subsampling=0), REF, 4),
    "jpeg greyscale": lambda: (save(Image.fromarray(GREY), "JPEG", quality=92), rgb(GREY), 4),
    # multi-frame: the first frame is the picture
    "animated gif": lambda: (animated("GIF"),
                             np.asarray(Image.open(io.BytesIO(animated("GIF"))).convert("RGB")), 0),
    "animated webp": lambda: (animated("WEBP", lossless=True), REF, 0),
    "apng": lambda: (animated("PNG"), REF, 0),
    "multi-page tiff": lambda: (animated("TIFF"), REF, 0),
    # other containers
    "tiff lzw": lambda: (save(Image.fromarray(REF), "TIFF", compression="tiff_lzw"), REF, 0),
    "tiff deflate": lambda: (save(Image.fromarray(REF), "TIFF", compression="tiff_adobe_deflate"), REF, 0),
    "bmp RGB": lambda: (save(Image.fromarray(REF), "BMP"), REF, 0),
    "bmp 8-bit grey": lambda: (save(Image.fromarray(GREY), "BMP"), rgb(GREY), 0),
    "webp lossy": lambda: (save(Image.fromarray(REF), "WEBP", quality=90), REF, 5),
    # colour profiles
    "jpeg with sRGB profile": lambda: (
        save(Image.fromarray(REF), "JPEG", quality=92,
             icc_profile=ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()), REF, 4),
    "png with linear-light profile": lambda: (
        save(to_profile(REF, linear_srgb_icc()), "PNG", icc_profile=linear_srgb_icc()), REF, 3),
    "jpeg with linear-light profile": lambda: (
        save(to_profile(REF, linear_srgb_icc()), "JPEG", quality=95, icc_profile=linear_srgb_icc()), REF, 6),
    "png with a broken profile (ignored, as viewers do)": lambda: (
        save(Image.fromarray(REF), "PNG", icc_profile=b"not a profile" * 20), REF, 0),
}


def turned(orientation: int, fmt: str, tolerance: float, **options) -> Case:
    """REF stored as a camera stores it for `orientation`, with the tag that says so."""
    stored = Image.fromarray(np.ascontiguousarray(stored_for_orientation(REF, orientation)))
    tags = {"tiffinfo": {0x0112: orientation}} if fmt == "TIFF" else {"exif": exif(orientation)}
    return lambda: (save(stored, fmt, **tags, **options), REF, tolerance)


# EXIF orientations 1-8 in JPEG (as phones write them), and 6 in the other formats
CASES |= {f"jpeg orientation {o}": turned(o, "JPEG", 4, quality=92) for o in range(1, 9)}
CASES |= {"png orientation 6": turned(6, "PNG", 0), "webp orientation 6": turned(6, "WEBP", 0, lossless=True),
          "tiff orientation 6": turned(6, "TIFF", 0)}


def _pa_expected() -> np.ndarray:
    rgba = transparent(REF, np.where(border_mask(REF.shape), 0, 255).astype(np.uint8), (0, 0, 0))
    colours = np.asarray(Image.fromarray(rgba).convert("PA").convert("RGBA"))[..., :3]
    return with_border(colours, 255)


@dataclass
class Embedded:
    picture: np.ndarray  # what decode_image returned
    vector: np.ndarray
    thumbnail: bytes


class Embedder:
    """Files through the real intake path (`prepare_bytes`: decode with draft mode, thumbnail,
    preprocessing) and the real encoder, in one batch: one forward pass for many files."""

    def __init__(self, encoder) -> None:
        self.encoder = encoder
        self._references: dict[bytes, np.ndarray] = {}

    def files(self, files: dict[str, bytes]) -> dict[str, Embedded]:
        draft = self.encoder.preprocessing.resize_size * 2
        prepared = [prepare_bytes(ImageFile(Path(name), None), data, self.encoder, thumbnails=True)
                    for name, data in files.items()]
        vectors = encode_prepared(self.encoder, prepared)
        return {name: Embedded(np.asarray(decode_image(data, draft_size=draft)), vector, p.thumbnail)
                for (name, data), vector, p in zip(files.items(), vectors, prepared, strict=True)}

    def file(self, data: bytes) -> Embedded:
        return self.files({"file": data})["file"]

    def references(self, pictures: list[np.ndarray]) -> None:
        new = {p.tobytes(): p for p in pictures if p.tobytes() not in self._references}
        if new:
            vectors = self.encoder.encode([Image.fromarray(p) for p in new.values()])
            self._references.update(zip(new, vectors, strict=True))

    def reference(self, picture: np.ndarray) -> np.ndarray:
        """The vector of an upright 8-bit `picture`, encoded directly."""
        self.references([picture])
        return self._references[picture.tobytes()]

    def distance(self, vector: np.ndarray, picture: np.ndarray) -> float:
        """Cosine distance from `vector` to `picture`'s own vector."""
        return 1.0 - float(vector @ self.reference(picture))


@pytest.fixture(scope="module")
def embedder(lite0):
    return Embedder(lite0)


@pytest.fixture(scope="module")
def cases(embedder):
    """Every case of CASES built, embedded and its reference embedded, in two batches."""
    built = {name: make() for name, make in CASES.items()}
    built = {name: (data, _pa_expected() if expected is None else expected, tolerance)
             for name, (data, expected, tolerance) in built.items()}
    embedder.references([expected for _, expected, _ in built.values()])
    embedded = embedder.files({name: data for name, (data, _, _) in built.items()})
    return {name: (embedded[name], expected, tolerance) for name, (_, expected, tolerance) in built.items()}


def mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


@pytest.mark.parametrize("name", list(CASES))
def test_each_file_shows_its_upright_picture_and_embeds_like_it(name, cases, embedder):
    got, expected, tolerance = cases[name]
    assert got.picture.dtype == np.uint8 and got.picture.shape == expected.shape, got.picture.shape
    assert mean_abs_diff(got.picture, expected) <= tolerance + 0.5
    distance = embedder.distance(got.vector, expected)
    assert distance < MAX_DISTANCE, f"{name}: cosine distance {distance:.4f} from its upright 8-bit picture"
    thumb = Image.open(io.BytesIO(got.thumbnail))
    want = Image.fromarray(expected)
    want.thumbnail((128, 128), Image.Resampling.BICUBIC)
    assert thumb.size == want.size and mean_abs_diff(np.asarray(thumb), np.asarray(want)) < 8


@pytest.mark.parametrize("pad", [((0, 0), (1800, 1800), (0, 0)), ((1800, 1800), (0, 0), (0, 0))],
                         ids=["very wide (16:1)", "very tall (1:16)"])
def test_very_wide_and_tall_images_embed_their_centre(pad, embedder):
    """The encoder sees the centre square: here, the square picture in the middle."""
    padded = np.pad(SQUARE, pad, "edge")
    got = embedder.file(save(Image.fromarray(padded), "PNG"))
    assert np.array_equal(got.picture, padded)
    assert embedder.distance(got.vector, SQUARE) < MAX_DISTANCE


def test_sixteen_bit_grey_is_not_white(cases, embedder):
    """Issue 10 item 2, as reported: a 16-bit greyscale PNG was stored as plain white."""
    got, _, _ = cases["I;16 png"]
    assert embedder.distance(got.vector, np.full_like(REF, 255)) > 0.1
    assert np.asarray(Image.open(io.BytesIO(got.thumbnail))).mean() < 200


def test_a_large_turned_jpeg_decodes_in_draft_mode_and_upright(embedder, lite0):
    big = np.asarray(Image.fromarray(REF).resize((2880, 1920), Image.Resampling.BICUBIC))
    data = save(Image.fromarray(np.ascontiguousarray(stored_for_orientation(big, 6))), "JPEG",
                quality=90, exif=exif(6))
    got = embedder.file(data)
    draft = lite0.preprocessing.resize_size * 2
    assert got.picture.shape[1] > got.picture.shape[0], "still lying on its side"
    assert draft <= got.picture.shape[0] < 1920, f"draft mode not used: {got.picture.shape}"
    small = np.asarray(Image.fromarray(got.picture).resize((360, 240), Image.Resampling.LANCZOS))
    assert mean_abs_diff(small, REF) < 4
    assert embedder.distance(got.vector, REF) < MAX_DISTANCE


def test_orientation_errors_would_show(embedder):
    """The picture is not symmetric: each wrong turn moves its pixels and most move its vector."""
    for orientation in range(2, 9):
        turned = np.ascontiguousarray(stored_for_orientation(REF, orientation))
        if turned.shape == REF.shape:
            assert mean_abs_diff(turned, REF) > 20
    sideways = np.ascontiguousarray(stored_for_orientation(REF, 6))
    assert embedder.distance(embedder.reference(sideways), REF) > MAX_DISTANCE


@pytest.mark.parametrize("name, data, reason", [
    ("float with NaN", lambda: tiff(np.where(GREY > 100, np.nan, GREY).astype(np.float32)), "NaN"),
    ("float RGB tiff", lambda: tiff(REF.astype(np.float32) / 255, photometric="rgb"), "TIFF image that Pillow"),
    ("HEIC (no decoder)", lambda: b"\0\0\0\x18ftypheic\0\0\0\0mif1heic" + b"\0" * 64, "HEIC image"),
])
def test_files_that_cannot_be_shown_faithfully_are_skipped_with_a_reason(name, data, reason):
    with pytest.raises(ImageReadError, match=reason):
        decode_image(data())


@pytest.mark.parametrize("mode", ["RGBa", "RGBX", "HSV", "La", "I;16", "F", "CMYK"])
def test_in_memory_images_of_every_mode_become_rgb_or_a_reason(mode):
    """Modes no file format opens to, for images handed to the Python API."""
    base = Image.fromarray(REF)
    image = {"RGBa": base.convert("RGBA").convert("RGBa"), "RGBX": base.convert("RGBX"),
             "HSV": base.convert("HSV"), "La": Image.new("La", base.size),
             "I;16": Image.fromarray(GREY16), "F": Image.fromarray(GREY.astype(np.float32)),
             "CMYK": base.convert("CMYK")}[mode]
    try:
        out = upright_rgb(image)
    except ImageReadError as exc:
        assert mode == "La" and "not supported" in str(exc)
        return
    expected = rgb(GREY) if mode in ("I;16", "F") else REF
    assert out.mode == "RGB" and mean_abs_diff(np.asarray(out), expected) < 3


def test_a_callers_image_is_not_changed(tmp_path):
    stored = Image.fromarray(np.ascontiguousarray(stored_for_orientation(REF, 6)))
    image = Image.open(io.BytesIO(save(stored, "PNG", exif=exif(6))))
    out = upright_rgb(image)
    assert out.size == (360, 240) and image.size == (240, 360)
    assert image.getexif().get(0x0112) == 6


def test_extreme_panorama_is_embedded_without_a_giant_intermediate(lite0):
    """A 40000x8 strip: resized whole to 256 pixels high it would be a 1.3-megapixel-wide,
    983 MB image; only the part the centre crop keeps may be resized."""
    strip = np.zeros((8, 40_000, 3), np.uint8)
    strip[:, 19_999:20_001] = (255, 0, 0)  # a red mark in the middle: the crop must keep it
    pixels = lite0.preprocessing.apply(upright_rgb(Image.fromarray(strip)))
    assert pixels.shape == (224, 224, 3)
    assert pixels[:, 112, 0].min() > 200 and pixels[:, :20].max() < 30 and pixels[:, -20:].max() < 30


# ---- the same files through every door: CLI add/classify/search, thumbnails, Python API, HTTP ----

SIDEWAYS_JPEG = turned(6, "JPEG", 4, quality=92)


@pytest.fixture(scope="module")
def photo_memory(tmp_path_factory):
    """A pixels-encoder memory made by `vismem add`: an upright cat, an astronaut, a 16-bit grey
    cat, and the cat as a phone stores it (sideways, EXIF orientation 6)."""
    from conftest import run_cli_here as run_cli

    root = tmp_path_factory.mktemp("photos")
    for label, name, payload in [("cat", "cat.png", save(Image.fromarray(REF), "PNG")),
                                 ("astronaut", "astronaut.png", save(Image.fromarray(OTHER), "PNG")),
                                 ("grey", "grey16.png", save(Image.fromarray(GREY16), "PNG"))]:
        (root / "train" / label).mkdir(parents=True)
        (root / "train" / label / name).write_bytes(payload)
    (root / "phone.jpg").write_bytes(SIDEWAYS_JPEG()[0])
    memdir = root / "mem"
    run_cli("create", memdir, "--encoder", "pixels", check=True)
    run_cli("add", memdir, root / "train", check=True)
    run_cli("add", memdir, root / "phone.jpg", "--label", "phone", check=True)
    return root, memdir


def test_cli_classify_and_search_see_a_phone_photo_upright(photo_memory):
    from conftest import json_lines
    from conftest import run_cli_here as run_cli

    root, memdir = photo_memory
    (root / "grey8.png").write_bytes(save(Image.fromarray(GREY), "PNG"))
    query = root / "phone.jpg"
    classified = json_lines(run_cli("classify", memdir, query, root / "grey8.png", "--json", "--k", "2"))
    assert [c["path"] for c in classified] == [str(query), str(root / "grey8.png")]
    by_label = {n["label"]: n["distance"] for n in classified[0]["neighbors"]}
    assert by_label["phone"] < 1e-6 and by_label["cat"] < MAX_DISTANCE  # the upright cat, not turned
    grey = classified[1]["neighbors"][0]
    assert grey["label"] == "grey" and grey["distance"] < MAX_DISTANCE  # 16-bit stored as grey, not white
    found = json_lines(run_cli("search", memdir, query, "--json", "--only-label", "cat"))[0]
    assert found["neighbors"][0]["distance"] < MAX_DISTANCE


def test_thumbnails_are_upright_and_keep_their_range(photo_memory):
    from vismem import Memory

    _, memdir = photo_memory
    with Memory.open(memdir) as memory:
        thumbs = {memory.get(i).label: memory.thumbnail(i) for i in memory.ids()}
    phone = Image.open(io.BytesIO(thumbs["phone"]))
    assert phone.size == (128, 85)  # landscape, as the photo was taken
    want = Image.fromarray(REF)
    want.thumbnail((128, 128), Image.Resampling.BICUBIC)
    assert mean_abs_diff(np.asarray(phone), np.asarray(want)) < 8
    grey = np.asarray(Image.open(io.BytesIO(thumbs["grey"])).convert("L"))
    assert abs(float(grey.mean()) - float(GREY.mean())) < 5


def test_python_api_and_http_service_see_a_phone_photo_upright(photo_memory, tmp_path):
    import shutil

    from fastapi.testclient import TestClient

    from vismem import Memory
    from vismem.service import ServiceSettings, create_app

    _, memdir = photo_memory
    copy = tmp_path / "mem"
    shutil.copytree(memdir, copy)
    data = SIDEWAYS_JPEG()[0]
    with Memory.open(copy) as memory:
        decision = memory.classify([Image.open(io.BytesIO(data))], k=2)[0]
        assert {n.label: n.distance for n in decision.neighbors}["cat"] < MAX_DISTANCE
        auth = {"Authorization": "Bearer token-for-tests"}
        with TestClient(create_app(memory, ServiceSettings(token="token-for-tests"))) as client:
            answer = client.post("/classify", files={"file": ("p.jpg", data, "image/jpeg")},
                                 data={"k": "2"}, headers=auth)
            assert answer.status_code == 200, answer.text
            assert {n["label"]: n["distance"] for n in answer.json()["neighbors"]}["cat"] < MAX_DISTANCE
            sixteen = save(Image.fromarray(GREY16), "PNG")
            added = client.post("/items", files=[("files", ("p2.jpg", data, "image/jpeg")),
                                                 ("files", ("g.png", sixteen, "image/png"))],
                                data={"label": "upload", "allow_duplicates": "true"}, headers=auth)
            assert added.status_code == 201, added.text
            phone_id, grey_id = added.json()["ids"]
            thumb = Image.open(io.BytesIO(client.get(f"/items/{phone_id}/thumbnail", headers=auth).content))
            assert thumb.size == (128, 85)
            grey = Image.open(io.BytesIO(client.get(f"/items/{grey_id}/thumbnail", headers=auth).content))
            assert np.asarray(grey).mean() < 200


@pytest.mark.parametrize("orientation", [1, 6])
def test_a_large_jpeg_keeps_its_own_width_and_height(tmp_path, orientation):
    """A JPEG decoded in draft mode (a fraction of its size, for speed) was stored with the
    draft's size: a 1440x960 photo as width 360, height 240 (a PNG of it as 1440x960), so
    `--where width=1440` missed it. Upright, as the photo was taken (a sideways one swaps)."""
    from vismem import Memory

    big = np.asarray(Image.fromarray(REF).resize((1440, 960), Image.Resampling.BICUBIC))
    stored = Image.fromarray(np.ascontiguousarray(stored_for_orientation(big, orientation)))
    (tmp_path / "photos" / "cat").mkdir(parents=True)
    (tmp_path / "photos" / "cat" / "big.jpg").write_bytes(save(stored, "JPEG", quality=90, exif=exif(orientation)))
    (tmp_path / "photos" / "cat" / "big.png").write_bytes(save(stored, "PNG", exif=exif(orientation)))
    with Memory.create(tmp_path / "mem", encoder="pixels") as memory:
        report = memory.add_images(tmp_path / "photos")
        sizes = [(item.meta["width"], item.meta["height"]) for item in memory.store.items(report.added)]
        with_bytes = memory.add_image_bytes([("b.jpg", (tmp_path / "photos" / "cat" / "big.jpg").read_bytes())],
                                            label="cat", source="upload", allow_duplicates=True)
        sizes += [(item.meta["width"], item.meta["height"]) for item in memory.store.items(with_bytes.added)]
    assert sizes == [(1440, 960)] * 3

"""Image intake: layouts, labels, and every kind of bad file, skipped with a reason."""

import struct
import zlib

import pytest
from PIL import Image
from skimage import data

from conftest import json_lines

from vismem.errors import InvalidInputError
from vismem.images import ImageFile, ImageReadError, decode_image, find_images


def png_header_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height pixels (a decompression bomb)."""
    def chunk(kind: bytes, payload: bytes) -> bytes:
        body = kind + payload
        return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def write_bad_files(folder):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "empty.png").write_bytes(b"")
    (folder / "text.jpg").write_text("this is not an image")
    good = folder / "good.png"
    Image.fromarray(data.coffee()).resize((64, 48)).save(good)
    (folder / "truncated.png").write_bytes(good.read_bytes()[:200])
    (folder / "bomb.png").write_bytes(png_header_claiming(200_000, 200_000))
    return {"empty.png": "empty file", "text.jpg": "not an image", "truncated.png": "corrupt",
            "bomb.png": "too large"}


def test_class_subfolders_give_labels(tmp_path):
    for label in ("cat", "cup"):
        (tmp_path / label).mkdir()
        Image.new("RGB", (8, 8)).save(tmp_path / label / "a.png")
    (tmp_path / "loose.png").write_bytes(b"x")
    (tmp_path / "cat" / "notes.txt").write_text("hello")
    found, skipped = find_images([tmp_path])
    assert sorted((f.path.parent.name, f.label) for f in found) == [("cat", "cat"), ("cup", "cup")]
    reasons = {s.path.split("/")[-1]: s.reason for s in skipped}
    assert "class subfolder" in reasons["loose.png"]
    assert "extension" in reasons["notes.txt"]


def test_explicit_label_overrides_subfolders(tmp_path):
    (tmp_path / "cat").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "cat" / "a.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "b.png")
    found, skipped = find_images([tmp_path], label="animal")
    assert {f.label for f in found} == {"animal"} and len(found) == 2 and not skipped


def test_a_single_file_needs_a_label(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    found, skipped = find_images([tmp_path / "a.png"])
    assert not found and "needs --label" in skipped[0].reason
    found, _ = find_images([tmp_path / "a.png"], label="thing")
    assert found[0].label == "thing"


def test_an_image_beside_the_class_folders_is_told_what_label_does(tmp_path):
    """'not inside a class subfolder (pass --label)': doing so gives that one label to every
    image of the add, the cats and dogs beside it too. The reason says so, and names the
    Python argument (label=) beside the option, as the source's reason does."""
    _png(tmp_path / "cat" / "a.png")
    _png(tmp_path / "loose.png", 1)
    _, skipped = find_images([tmp_path])
    assert [s.reason for s in skipped] == [
        "no label: not inside a class subfolder (move it into one, or give --label (label=), "
        "which labels every image of the add)"]
    _, skipped = find_images([tmp_path / "loose.png"])
    assert [s.reason for s in skipped] == ["no label: a single file needs --label (label=)"]


def test_missing_path_fails_before_anything_is_read(tmp_path):
    with pytest.raises(InvalidInputError, match="no such file"):
        find_images([tmp_path, tmp_path / "nope"])


def test_each_bad_file_gets_its_reason(tmp_path):
    expected = write_bad_files(tmp_path)
    for name, reason in expected.items():
        with pytest.raises(ImageReadError, match=reason):
            decode_image((tmp_path / name).read_bytes())
    image = decode_image((tmp_path / "good.png").read_bytes())
    assert image.mode == "RGB" and image.size == (64, 48)


def test_pixel_limit_is_enforced_before_decoding(tmp_path):
    Image.fromarray(data.astronaut()).save(tmp_path / "a.png")
    with pytest.raises(ImageReadError, match="too large"):
        decode_image((tmp_path / "a.png").read_bytes(), max_pixels=1000)


def test_palette_greyscale_and_alpha_images_become_rgb(tmp_path):
    for mode in ("L", "P", "RGBA", "CMYK"):
        Image.new(mode, (10, 12)).save(tmp_path / f"x{mode}.tiff")
        assert decode_image((tmp_path / f"x{mode}.tiff").read_bytes()).mode == "RGB"


@pytest.mark.parametrize("width, height", [(200_000, 200_000), (12_000, 10_001), (11_000, 11_000)])
def test_every_oversized_image_quotes_the_same_limit(width, height):
    """Pillow refuses some sizes itself while opening; the message must not change with size."""
    with pytest.raises(ImageReadError) as raised:
        decode_image(png_header_claiming(width, height))
    message = str(raised.value)
    assert "limit of 120,000,000 pixels" in message and f"{width * height:,} pixels" in message
    assert message.count("limit") == 1


def test_a_limit_above_pillows_own_quotes_the_one_enforced():
    with pytest.raises(ImageReadError, match=f"limit of {2 * Image.MAX_IMAGE_PIXELS:,} pixels"):
        decode_image(png_header_claiming(200_000, 200_000), max_pixels=500_000_000)


def _png(path, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (seed * 40 % 256, 10, 20)).save(path)
    return path


def test_hidden_files_and_folders_are_not_classes_or_images(tmp_path):
    # .git, .thumbnails and macOS's AppleDouble "._x.png" / .DS_Store are not photos
    _png(tmp_path / "cat" / "a.png")
    _png(tmp_path / ".git" / "objects" / "x.png", 1)
    _png(tmp_path / ".thumbnails" / "cat" / "t.png", 2)
    _png(tmp_path / "cat" / ".cache" / "c.png", 3)
    (tmp_path / "cat" / "._a.png").write_bytes(b"\0\5\26\7" + b"\0" * 60)
    (tmp_path / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    found, skipped = find_images([tmp_path])
    assert [(f.path.relative_to(tmp_path).as_posix(), f.label) for f in found] == [("cat/a.png", "cat")]
    assert skipped == []


def test_files_systems_leave_beside_photos_are_passed_over(tmp_path, cli):
    """A folder copied from Windows holds Thumbs.db and desktop.ini: each add of it was
    "done in part" (exit 3), skipping them as non-images. Named alone, a file is still tried."""
    _png(tmp_path / "photos" / "cat" / "a.png")
    for junk in ("cat/Thumbs.db", "cat/desktop.ini", "THUMBS.DB", "ehthumbs.db", "cat/Icon\r"):
        (tmp_path / "photos" / junk).write_bytes(b"\xd0\xcf\x11\xe0 not an image")
    found, skipped = find_images([tmp_path / "photos"])
    assert [f.label for f in found] == ["cat"] and skipped == []
    found, _ = find_images([tmp_path / "photos" / "cat" / "Thumbs.db"], label="cat")
    assert [f.path.name for f in found] == ["Thumbs.db"]
    cli("create", tmp_path / "mem", "--encoder", "pixels", check=True)
    done = cli("add", tmp_path / "mem", tmp_path / "photos", "--json")
    assert done.returncode == 0 and json_lines(done)[-1]["added"] == 1, done.stderr


def test_symlinked_class_folders_are_followed_and_loops_end(tmp_path):
    root, elsewhere = tmp_path / "photos", tmp_path / "elsewhere"
    _png(root / "cat" / "a.png")
    _png(elsewhere / "bird" / "b.png", 1)
    (root / "bird").symlink_to(elsewhere / "bird", target_is_directory=True)
    (root / "cat" / "loop").symlink_to(root, target_is_directory=True)  # a loop back to the root
    (root / "cat" / "self").symlink_to(root / "cat", target_is_directory=True)
    found, skipped = find_images([root])
    assert sorted((f.path.relative_to(root).as_posix(), f.label) for f in found) == [
        ("bird/b.png", "bird"), ("cat/a.png", "cat")]
    assert skipped == []


def test_a_link_up_to_a_folder_above_the_root_ends_there(tmp_path):
    """Adding photos/cat, whose `up` leads to photos: the link walked photos/dog under the
    label 'up' (the loop ended only on reaching photos/cat again)."""
    root = tmp_path / "photos"
    _png(root / "cat" / "kitten" / "a.png")
    _png(root / "dog" / "b.png", 1)
    (root / "cat" / "up").symlink_to(root, target_is_directory=True)
    found, skipped = find_images([root / "cat"])
    assert [(f.path.relative_to(root).as_posix(), f.label) for f in found] == [("cat/kitten/a.png", "kitten")]
    assert skipped == []


def test_a_link_to_a_class_folder_does_not_take_its_images_from_it(tmp_path):
    """`all_cats` -> `cat` sorts first: its images were all labelled 'all_cats' and the real
    folder `cat` was passed over without a word. The real folder keeps its images."""
    root = tmp_path / "photos"
    _png(root / "cat" / "a.png")
    _png(root / "cat" / "inner" / "c.png", 2)
    _png(root / "dog" / "b.png", 1)
    (root / "all_cats").symlink_to(root / "cat", target_is_directory=True)
    (root / "dog" / "inner").symlink_to(root / "cat" / "inner", target_is_directory=True)
    found, skipped = find_images([root])
    assert [(f.path.relative_to(root).as_posix(), f.label) for f in found] == [
        ("cat/a.png", "cat"), ("cat/inner/c.png", "cat"), ("dog/b.png", "dog")]
    assert skipped == []


def test_a_memory_kept_inside_the_photo_folder_is_not_read_as_images(tmp_path, cli):
    """`vismem create photos/mem; vismem add photos/mem photos` listed the memory's own
    files (memory.sqlite, its -wal, index.lock...) as skipped 'not an image file extension'
    and exited 3 on every add, however well it went."""
    _png(tmp_path / "photos" / "cat" / "a.png")
    memdir = tmp_path / "photos" / "mem"
    cli("create", memdir, "--encoder", "pixels", check=True)
    for added in (1, 0):  # again: a duplicate only, still done in full
        result = cli("add", memdir, tmp_path / "photos", "--json")
        assert result.returncode == 0, result.stderr
        done = json_lines(result)[-1]
        assert done["added"] == added and done["skipped"] == 1 - added, done
    assert find_images([tmp_path / "photos"]) == ([ImageFile(tmp_path / "photos" / "cat" / "a.png", "cat")], [])


def test_an_input_that_is_no_regular_file_is_skipped_with_a_reason(tmp_path):
    import os

    os.mkfifo(tmp_path / "pipe.png")  # reading it would wait forever
    (tmp_path / "dangling.png").symlink_to(tmp_path / "gone.png")
    _png(tmp_path / "cat" / "a.png")
    os.mkfifo(tmp_path / "cat" / "pipe.png")
    found, skipped = find_images([tmp_path / "pipe.png", tmp_path / "cat"], label="x")
    assert [f.path.name for f in found] == ["a.png"]
    reasons = {s.path: s.reason for s in skipped}
    assert set(reasons) == {str(tmp_path / "pipe.png"), str(tmp_path / "cat" / "pipe.png")}
    assert all("not a regular file" in r for r in reasons.values())
    found, skipped = find_images([tmp_path], label="x")
    assert "not a regular file" in {s.path: s.reason for s in skipped}[str(tmp_path / "dangling.png")]


def test_a_file_name_that_is_not_utf8_is_skipped_with_a_reason_not_a_crash(tmp_path):
    from vismem import Memory

    import os

    raw = os.fsencode(tmp_path) + b"/photos/dog/caf\xe9.png"
    _png(tmp_path / "photos" / "dog" / "b.png")
    _png(tmp_path / "photos" / "dog" / "c.png", 2)
    os.rename(os.fsencode(tmp_path / "photos" / "dog" / "c.png"), raw)
    with Memory.create(tmp_path / "mem", encoder="pixels") as memory:
        report = memory.add_images([tmp_path / "photos"])
        assert len(report.added) == 1 and len(memory) == 1
    [skip] = report.skipped
    assert "not valid UTF-8" in skip.reason and "rename" in skip.reason
    assert skip.path.endswith("caf\\xe9.png")  # shown, and printable as JSON or text
    skip.path.encode("utf-8")


def test_embedding_a_pipe_or_a_folder_is_skipped_not_a_hang(tmp_path):
    import os
    import threading

    from vismem import Memory

    _png(tmp_path / "photos" / "cat" / "a.png")
    os.mkfifo(tmp_path / "pipe.png")  # opening it to read waits for a writer, forever
    with Memory.create(tmp_path / "mem", encoder="pixels") as memory:
        memory.add_images([tmp_path / "photos"])
        done: dict = {}
        worker = threading.Thread(target=lambda: done.update(out=memory.embed_images(
            [tmp_path / "photos" / "cat" / "a.png", tmp_path / "pipe.png", tmp_path / "photos"])), daemon=True)
        worker.start()
        worker.join(30)
        if worker.is_alive():  # free the stuck reader before failing
            with open(tmp_path / "pipe.png", "wb"):
                pass
            worker.join(30)
            pytest.fail("reading a pipe hung")
    vectors, kept, skipped = done["out"]
    assert kept == [0] and vectors.shape == (1, 768)
    assert [(s.path, "not a regular file" in s.reason) for s in skipped] == [
        (str(tmp_path / "pipe.png"), True), (str(tmp_path / "photos"), True)]


def test_a_damaged_file_that_pillow_refuses_in_an_unusual_way_is_skipped(tmp_path):
    """Pillow's DDS reader raises NotImplementedError for an unknown pixel format: a damaged
    (or misnamed) file must still be a skip reason, not a crash of the whole batch."""
    import io

    out = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 20, 30)).save(out, "DDS")
    damaged = bytearray(out.getvalue())
    damaged[80:84] = struct.pack("<I", 0)  # DDS_PIXELFORMAT.dwFlags
    with pytest.raises(ImageReadError, match="corrupt image"):
        decode_image(bytes(damaged))


def test_a_folder_of_iphone_photos_says_heic_needs_converting(tmp_path):
    """README: HEIC is skipped with its own reason (convert it); in a folder it was passed
    over as 'not an image file extension', which names no fix."""
    from vismem import Memory

    heic = b"\0\0\0\x18ftypheic\0\0\0\0mif1heic" + b"\0" * 64
    (tmp_path / "photos" / "cat").mkdir(parents=True)
    (tmp_path / "photos" / "cat" / "IMG_0001.HEIC").write_bytes(heic)
    (tmp_path / "photos" / "cat" / "IMG_0002.heif").write_bytes(heic)
    with Memory.create(tmp_path / "mem", encoder="pixels") as memory:
        report = memory.add_images([tmp_path / "photos"])
    assert [("HEIC image" in s.reason and "convert it" in s.reason) for s in report.skipped] == [True, True]


def test_a_class_folder_whose_name_is_no_label_skips_its_files_not_the_whole_add(tmp_path):
    """A 201-character or blank folder name used to abort the add at its batch's insert,
    after earlier batches were committed."""
    from vismem import Memory

    _png(tmp_path / "photos" / "cat" / "a.png")
    _png(tmp_path / "photos" / ("x" * 201) / "b.png", 1)
    _png(tmp_path / "photos" / "   " / "c.png", 2)
    with Memory.create(tmp_path / "mem", encoder="pixels") as memory:
        report = memory.add_images([tmp_path / "photos"], batch_size=1)
        assert len(report.added) == 1 and len(memory) == 1
    assert sorted(s.reason.split(":")[0] for s in report.skipped) == ["folder name is no label"] * 2


def test_each_kind_of_input_that_is_no_image_file_is_named_for_what_it_is(tmp_path):
    """A query that is no regular file says which kind: `vismem classify typo.png` was told
    "not a regular file (a folder, broken link, pipe or device)" for a file that is not
    there at all."""
    import os

    from vismem import Memory

    _png(tmp_path / "photos" / "cat" / "a.png")
    os.mkfifo(tmp_path / "pipe.png")
    (tmp_path / "dangling.png").symlink_to(tmp_path / "gone.png")
    inputs = {"typo.png": "no such file", "photos": "not a regular file: a folder",
              "dangling.png": "not a regular file: a broken link",
              "pipe.png": "not a regular file: a pipe, socket or device"}
    with Memory.create(tmp_path / "mem", encoder="pixels") as memory:
        memory.add_images([tmp_path / "photos"])
        _, kept, skipped = memory.embed_images([tmp_path / name for name in inputs])
    assert kept == [] and {s.path: s.reason for s in skipped} == {str(tmp_path / n): r for n, r in inputs.items()}
    (tmp_path / "links").mkdir()
    (tmp_path / "links" / "dangling.png").symlink_to(tmp_path / "gone.png")
    _, skipped = find_images([tmp_path / "pipe.png", tmp_path / "links"], label="x")
    assert [s.reason for s in skipped] == [inputs["pipe.png"], inputs["dangling.png"]]


def test_an_oversized_image_error_crosses_processes_whole():
    """Decode workers and Ray send errors back pickled: an error class whose arguments are
    not its message would fail to unpickle."""
    import pickle

    with pytest.raises(ImageReadError) as raised:
        decode_image(png_header_claiming(12_000, 10_001), max_pixels=1000)
    again = pickle.loads(pickle.dumps(raised.value))
    assert type(again) is type(raised.value) and str(again) == str(raised.value) and again.limit == 1000

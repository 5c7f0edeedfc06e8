"""What a new user types by mistake gets a one-line error or an answer in order, never a
traceback: explain --out, eval on an empty folder, info on a file, add-vectors with a
text file, classify/search with unreadable inputs among readable ones, and the web
service's HEAD and favicon requests."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import json_lines, run_cli_unprivileged
from conftest import run_cli_here as run_cli  # in this process: no process boundary is tested here
from fastapi.testclient import TestClient
from PIL import Image

from vismem import Memory
from vismem.errors import InvalidInputError
from vismem.service import ServiceSettings, create_app


@pytest.fixture(scope="module")
def small_memory(tmp_path_factory, digits):
    """A pixels-encoder memory of 20 digits, and 3 held-out digit files."""
    from vismem.datasets import split_per_class, write_image_folder

    images, labels = digits
    root = tmp_path_factory.mktemp("mistakes")
    train, test = split_per_class(labels, [2, 1], seed=3)
    write_image_folder(root / "train", images, labels, train)
    queries = write_image_folder(root / "test", images, labels, test[:3])
    memdir = root / "mem"
    run_cli("create", memdir, "--encoder", "pixels", check=True)
    run_cli("add", memdir, root / "train", check=True)
    return root, memdir, sorted(queries.rglob("*.png"))


def one_line_error(result, *needles: str) -> str:
    assert result.returncode == 1, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert "Traceback" not in result.stderr and lines[-1].startswith("error: "), result.stderr
    for needle in needles:
        assert needle in lines[-1], lines[-1]
    return lines[-1]


@pytest.mark.parametrize("out, says", [("missing/sheet.png", "no folder"), ("", "is a folder"),
                                       ("sheet.txt", "not an image file name")])
def test_explain_out_is_checked_before_any_work(small_memory, tmp_path, out, says):
    _, memdir, _ = small_memory
    # The image does not exist either: the --out error coming first shows nothing was classified.
    result = run_cli("explain", memdir, tmp_path / "no-such-image.png", "--out", tmp_path / out)
    one_line_error(result, "--out", says)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("target, says", [("missing/m.parquet", "does not exist"), ("", "is a folder"),
                                          ("afile/m.parquet", "does not exist")])
def test_export_target_is_checked_before_any_work(small_memory, tmp_path, target, says):
    _, memdir, _ = small_memory
    (tmp_path / "afile").write_text("not a folder")
    result = run_cli("export", memdir, tmp_path / target)
    one_line_error(result, "cannot write", says)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]  # no partial file anywhere


def test_explain_writes_a_jpeg_sheet_too(small_memory, tmp_path):
    _, memdir, queries = small_memory
    run_cli("explain", memdir, queries[0], "--out", tmp_path / "sheet.jpg", check=True)
    assert Image.open(tmp_path / "sheet.jpg").format == "JPEG"


@pytest.mark.parametrize("given_as", ["the same path", "a link to it"])
def test_explain_does_not_write_its_sheet_over_the_image_it_explains(small_memory, tmp_path, given_as):
    """`explain mem photo.png --out photo.png` replaced the photo with the sheet, exit 0."""
    _, memdir, queries = small_memory
    photo = tmp_path / "photo.png"
    shutil.copy(queries[0], photo)
    before = photo.read_bytes()
    out = photo
    if given_as == "a link to it":
        out = tmp_path / "link.png"
        out.symlink_to(photo)
    one_line_error(run_cli("explain", memdir, photo, "--out", out), "--out", "is the image being explained")
    assert photo.read_bytes() == before


def test_explain_that_cannot_write_its_sheet_leaves_the_file_there_as_it_was(small_memory, tmp_path):
    """A failed write (here XBM, which takes no RGB) emptied the file already at --out,
    while exit 1 says nothing changed."""
    _, memdir, queries = small_memory
    sheet = tmp_path / "sheet.xbm"
    sheet.write_bytes(b"an earlier sheet")
    one_line_error(run_cli("explain", memdir, queries[0], "--out", sheet), "cannot write", "XBM")
    assert sheet.read_bytes() == b"an earlier sheet"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sheet.xbm"]  # no partial file left


def test_eval_with_nothing_to_evaluate_fails(small_memory, tmp_path):
    _, memdir, _ = small_memory
    (tmp_path / "empty").mkdir()
    one_line_error(run_cli("eval", memdir, tmp_path / "empty"), "nothing to evaluate")
    (tmp_path / "unreadable" / "3").mkdir(parents=True)
    (tmp_path / "unreadable" / "3" / "a.png").write_text("not a picture")
    result = run_cli("eval", memdir, tmp_path / "unreadable")
    one_line_error(result, "nothing to evaluate", "none of the 1 images")
    assert "skipped" in result.stderr and "a.png" in result.stderr


def test_info_on_a_regular_file_says_it_is_not_a_memory(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    message = one_line_error(run_cli("info", notes), "is a file, not a memory")
    assert "vismem create" not in message.replace("`vismem create` made", "")


def test_a_memory_is_not_created_among_other_files(tmp_path):
    """`vismem create photos/cat` (meaning `add`) must not make a memory among the photos:
    removing that memory would take them along."""
    photos = tmp_path / "cat"
    photos.mkdir()
    (photos / "a.png").write_bytes(b"a photo")
    one_line_error(run_cli("create", photos, "--encoder", "pixels"), "holds other files", "of its own")
    assert [p.name for p in photos.iterdir()] == ["a.png"]
    (tmp_path / "empty").mkdir()
    assert run_cli("create", tmp_path / "empty", "--encoder", "pixels").returncode == 0


def test_a_memory_is_not_created_or_imported_inside_another_memory_s_folder(tmp_path):
    """A copy imported into the memory's own folder (`vismem import m.parquet m/copy`) was
    made: then `remove --verify` on the memory found the removed item's vector in the
    copy's database ("1 remnants", exit 3), and removing the memory would take the copy."""
    outer = tmp_path / "m"
    with Memory.create(outer, encoder=None, dim=8) as memory:
        memory.add_vectors(np.eye(8, dtype=np.float32), [f"c{i % 2}" for i in range(8)])
        memory.export_parquet(tmp_path / "m.parquet")
    for command in (("import", tmp_path / "m.parquet", outer / "copy"),
                    ("create", outer / "deeper" / "copy", "--encoder", "none", "--dim", "8")):
        one_line_error(run_cli(*command), f"lies in the folder of the memory at {outer}", "outside it")
    assert not (outer / "copy").exists() and not (outer / "deeper").exists()
    assert run_cli("remove", outer, "--id", "3", "--verify").returncode == 0


def test_a_taken_location_is_refused_before_the_encoder_loads(small_memory, tmp_path):
    """`vismem create` where a memory (or other files) already is says so at once, before
    the encoder's weights load: the default, resnet50, would download ~100 MB first, and
    offline it reported the failed download instead. A weights file that does not exist
    is the encoder's own first check, so it must not be reached."""
    missing = tmp_path / "no-such-weights.pt"
    one_line_error(run_cli("create", small_memory[1], "--weights", missing), "a memory already exists at")
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "a.png").write_bytes(b"a photo")
    one_line_error(run_cli("create", photos, "--weights", missing), "holds other files")


def test_add_vectors_with_a_text_file_names_the_format(small_memory, tmp_path):
    _, memdir, _ = small_memory
    text = tmp_path / "vectors.csv"
    text.write_text("0.1,0.2\n")
    labels = tmp_path / "labels.txt"
    labels.write_text("a\n")
    message = one_line_error(run_cli("add-vectors", memdir, "--vectors", text, "--labels", labels),
                             "--vectors", "not a .npy file", "numpy.save")
    assert "pickle" not in message
    np.save(tmp_path / "v.npy", np.ones((1, 768), np.float32))
    (tmp_path / "labels.npy").write_text("a\n")
    one_line_error(run_cli("add-vectors", memdir, "--vectors", tmp_path / "v.npy", "--labels",
                           tmp_path / "labels.npy"), "--labels", "not a .npy file")
    message = one_line_error(run_cli("tune-index", memdir, "--queries", text), "--queries", "not a .npy file")
    assert "pickle" not in message


@pytest.mark.parametrize("command", ["classify", "search"])
def test_a_file_name_that_is_not_utf8_is_named_with_escapes_in_json(small_memory, tmp_path, command):
    """Such a name came out as a lone surrogate ("\\udcff"), which strict JSON readers
    (serde_json) refuse and jq turns into U+FFFD; it reads as `add` names it now."""
    _, memdir, queries = small_memory
    folder = os.fsencode(tmp_path)
    readable, empty = Path(os.fsdecode(folder + b"/photo\xff.png")), Path(os.fsdecode(folder + b"/empty\xff.png"))
    shutil.copy(queries[0], readable)
    empty.write_bytes(b"")
    result = run_cli(command, memdir, empty, readable, queries[1], "--json")
    assert result.returncode == 3, result.stderr
    paths = [answer["path"] for answer in json_lines(result)]
    assert paths == [f"{tmp_path}/empty\\xff.png", f"{tmp_path}/photo\\xff.png", str(queries[1])]
    assert "\\udc" not in result.stdout


@pytest.mark.parametrize("command", ["classify", "search"])
def test_json_answers_come_in_input_order(small_memory, tmp_path, command):
    _, memdir, queries = small_memory
    broken = tmp_path / "broken.png"
    broken.write_text("not a picture")
    inputs = [broken, queries[0], tmp_path / "missing.png", queries[1], broken, queries[2]]
    result = run_cli(command, memdir, *inputs, "--json")
    assert result.returncode == 3, result.stderr
    answers = json_lines(result)
    assert [a["path"] for a in answers] == [str(p) for p in inputs]
    assert ["error" in a for a in answers] == [True, False, True, False, True, False]


@pytest.mark.parametrize("command, verb", [("classify", "classify"), ("search", "search with")])
def test_a_read_when_no_input_could_be_read_is_an_error(small_memory, tmp_path, command, verb):
    """Every image missing or unreadable: nothing was classified, yet the exit code was 3,
    "done in part". It is an error now (exit 1, nothing on stdout, as `eval` and
    `tune-index` answer it), each image's reason said first; some read is still exit 3."""
    _, memdir, queries = small_memory
    broken = tmp_path / "broken.png"
    broken.write_text("not a picture")
    for json_flag in ((), ("--json",)):
        result = run_cli(command, memdir, tmp_path / "missing.png", broken, *json_flag)
        assert one_line_error(result) == f"error: none of the 2 images given could be read: nothing to {verb}"
        assert result.stdout == ""
        assert f"cannot {verb} {tmp_path / 'missing.png'}: no such file" in result.stderr
        assert f"cannot {verb} {broken}: not an image" in result.stderr
    one = run_cli(command, memdir, broken, "--json")
    assert one_line_error(one) == f"error: the image given could not be read: nothing to {verb}" and not one.stdout
    some = run_cli(command, memdir, broken, queries[0], "--json")
    assert some.returncode == 3 and len(json_lines(some)) == 2


# ---- the web service: HEAD and the favicon ---------------------------------------------------

@pytest.fixture
def client(small_memory, tmp_path):
    import shutil

    _, memdir, _ = small_memory
    shutil.copytree(memdir, tmp_path / "mem")
    with Memory.open(tmp_path / "mem") as memory, TestClient(create_app(memory, ServiceSettings())) as c:
        yield c


@pytest.mark.parametrize("path", ["/", "/browse", "/favicon.ico", "/healthz", "/stats", "/items", "/items/1",
                                  "/items/1/thumbnail", "/items/99999", "/docs", "/openapi.json"])
def test_head_answers_like_get(client, path):
    """Every GET answers HEAD too (uptime checks and `curl -I` probe /healthz that way)."""
    got, head = client.get(path), client.head(path)
    assert got.status_code == head.status_code and got.status_code in (200, 404)
    assert head.headers["content-type"] == got.headers["content-type"] and not head.content
    assert head.headers["content-length"] == got.headers["content-length"]


def test_head_on_a_post_only_path_names_the_methods(client):
    refused = client.head("/classify")
    assert refused.status_code == 405 and refused.headers["allow"] == "OPTIONS, POST" and not refused.content
    assert set(client.put("/items").headers["allow"].split(", ")) == {"DELETE", "GET", "HEAD", "OPTIONS", "PATCH",
                                                                      "POST"}


def test_pages_have_an_icon(client):
    icon = client.get("/favicon.ico")
    assert icon.headers["content-type"] == "image/x-icon"
    image = Image.open(io.BytesIO(icon.content))
    assert image.format == "ICO" and (32, 32) in image.info["sizes"]
    for page in ("/", "/browse"):
        assert '<link rel="icon" href="/favicon.ico"' in client.get(page).text


def test_missing_ids_are_partial_success_everywhere(tmp_path, cli):
    """Ids that do not exist (including ones no item could ever have) are listed, the rest
    is done, and the exit code is 3 for every verb that takes ids; 1 when none exists."""
    memdir = tmp_path / "m"
    cli("create", memdir, "--encoder", "none", "--dim", "3", check=True)
    np.save(tmp_path / "x.npy", np.eye(3, dtype=np.float32))
    (tmp_path / "y.txt").write_text("a\nb\nc\n")
    cli("add-vectors", memdir, "--vectors", tmp_path / "x.npy", "--labels", tmp_path / "y.txt", check=True)
    huge = str(2**70)
    for verb, extra in (("relabel", ["--label", "z"]), ("block", []), ("boost", []), ("unblock", []),
                        ("remove", [])):
        result = cli(verb, memdir, "--id", "1", "--id", "99999", "--id", huge, *extra, "--json")
        assert result.returncode == 3, (verb, result.stderr)
        assert "99999" in result.stderr and "Traceback" not in result.stderr
        report = json_lines(result)[0]
        assert report["ids"] == [1] or report.get("removed") == 1, (verb, report)
        # none of them exists: an error, and nothing changed
        for output in ([], ["--json"]):  # and no report of 0 items done before the error
            result = cli(verb, memdir, "--id", "99999", "--id", huge, *extra, *output)
            assert result.returncode == 1 and result.stdout == "", (verb, result.stdout, result.stderr)
            assert result.stderr.strip().splitlines() == [f"error: no items with ids [99999, {huge}]; nothing changed"]


@pytest.mark.parametrize("batch_size", [-1, 0, 2.5, "3", True])
def test_add_images_refuses_a_batch_size_that_is_not_a_positive_integer(tmp_path, batch_size):
    """-1 added nothing and reported nothing; 0 quietly meant the default; floats crashed deep inside."""
    from vismem.errors import InvalidInputError

    (tmp_path / "photos" / "cat").mkdir(parents=True)
    Image.new("RGB", (8, 8), (200, 10, 10)).save(tmp_path / "photos" / "cat" / "a.png")
    with Memory.create(tmp_path / "mem", encoder="pixels") as memory:
        with pytest.raises(InvalidInputError, match="batch_size must be a positive integer"):
            memory.add_images([tmp_path / "photos"], batch_size=batch_size)
        assert len(memory) == 0
        assert len(memory.add_images([tmp_path / "photos"], batch_size=1).added) == 1


@pytest.mark.parametrize("max_pixels", [0, -5, 2.5, "big", True])
def test_max_pixels_that_is_not_a_positive_integer_is_refused_before_any_image_is_read(tmp_path, max_pixels):
    """0 or -5 skipped every image as 'image too large: ... exceeds the limit of -5 pixels
    (possible decompression bomb)'; a text crashed with a TypeError from inside the decoder."""
    (tmp_path / "photos" / "cat").mkdir(parents=True)
    image = tmp_path / "photos" / "cat" / "a.png"
    Image.new("RGB", (8, 8), (200, 10, 10)).save(image)
    with Memory.create(tmp_path / "mem", encoder="pixels") as memory:
        for call in (lambda: memory.add_images([tmp_path / "photos"], max_pixels=max_pixels),
                     lambda: memory.add_image_bytes([("a.png", image.read_bytes())], label="cat", source="upload",
                                                    max_pixels=max_pixels),
                     lambda: memory.embed_images([image], max_pixels=max_pixels)):
            with pytest.raises(InvalidInputError, match="max_pixels must be a positive integer"):
                call()
        assert len(memory) == 0
        assert len(memory.add_images([tmp_path / "photos"], max_pixels=64).added) == 1


def test_progress_counts_the_images_of_a_path_that_is_no_source(tmp_path):
    """The images under a path holding a tab (no source) were skipped before reading and
    never counted: `add`'s bar, whose total counts every image found, ended at 1/3."""
    odd = tmp_path / "tab\there"
    for name in ("a.png", "b.png"):
        (odd / "cat").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), (200, 10, len(name))).save(odd / "cat" / name)
    (tmp_path / "good" / "dog").mkdir(parents=True)
    Image.new("RGB", (8, 8), (10, 200, 10)).save(tmp_path / "good" / "dog" / "c.png")
    done: list[int] = []
    with Memory.create(tmp_path / "mem", encoder="pixels") as memory:
        report = memory.add_images([odd, tmp_path / "good"], progress=done.append)
    assert len(report.added) == 1 and len(report.skipped) == 2
    assert sum(done) == 3


def test_an_empty_path_is_refused_not_read_as_the_current_folder(tmp_path, monkeypatch):
    """Path("") is ".": `vismem add mem "$PHOTOS"` with PHOTOS unset, or add_images(""),
    added every image under the current folder, labelled by its subfolders."""
    (tmp_path / "cat").mkdir()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(tmp_path / "cat" / "a.png")
    monkeypatch.chdir(tmp_path)
    with Memory.create(tmp_path / "mem", encoder="pixels") as memory:
        for given in ("", [tmp_path / "cat", ""]):
            with pytest.raises(InvalidInputError, match="empty path"):
                memory.add_images(given, label="x")
        assert len(memory) == 0
    result = run_cli("add", tmp_path / "mem", "", "--json")
    assert result.returncode == 2 and result.stdout == "" and "empty path" in result.stderr, result.stderr
    with Memory.open(tmp_path / "mem") as memory:
        assert len(memory) == 0
    # the commands that read images: eval of "" evaluated the current folder's class folders
    for command in ("classify", "search", "explain", "eval", "tune-index"):
        result = run_cli(command, tmp_path / "mem", "", "--json")
        assert result.returncode == 2 and result.stdout == "" and "empty path" in result.stderr, (command,
                                                                                                  result.stderr)


def test_one_path_given_alone_is_one_input_not_its_characters(tmp_path):
    """add_images("photos") looked for folders "p", "h", "o", ...; classify("a.png") for files "a", "."."""
    (tmp_path / "photos" / "cat").mkdir(parents=True)
    Image.new("RGB", (8, 8), (200, 10, 10)).save(tmp_path / "photos" / "cat" / "a.png")
    with Memory.create(tmp_path / "mem", encoder="pixels") as memory:
        assert len(memory.add_images(str(tmp_path / "photos")).added) == 1
        assert len(memory.add_images(tmp_path / "photos", allow_duplicates=True).added) == 1
        one = tmp_path / "photos" / "cat" / "a.png"
        for given in (str(one), one):
            [decision] = memory.classify(given)
            assert decision.label == "cat"
            vectors, kept, skipped = memory.embed_images(given)
            assert vectors.shape == (1, 768) and kept == [0] and not skipped


def test_one_label_given_alone_is_every_row_s_label_not_its_characters(tmp_path):
    """add_vectors(x, "ab") labelled two rows "a" and "b" (and three rows "cat": c, a, t);
    one string labels every row, as one source does."""
    x = np.random.default_rng(4).normal(size=(3, 8)).astype(np.float32)
    with Memory.create(tmp_path / "mem", encoder=None, dim=8) as memory:
        ids = memory.add_vectors(x, "cat", sources="cam")
        assert [item.label for item in memory.items(ids)] == ["cat"] * 3
        assert [item.source for item in memory.items(ids)] == ["cam"] * 3

        ids = memory.add_vectors(-x, "dog", metas={"cam": 2})  # one mapping: every row's, as one label
        assert [item.meta for item in memory.items(ids)] == [{"cam": 2}] * 3


def test_metadata_or_a_source_that_cannot_be_stored_is_refused_before_the_first_batch_commits(tmp_path):
    """metas=["x"] failed with AttributeError; a bad one in a later batch came after the
    earlier batches had committed."""
    x = np.random.default_rng(6).normal(size=(4, 8)).astype(np.float32)
    with Memory.create(tmp_path / "mem", encoder=None, dim=8) as memory:
        with pytest.raises(InvalidInputError, match="metadata is a mapping of key to value, one per item, got str"):
            memory.add_vectors(x[:1], ["a"], metas=["x"])
        for bad in ({"year": float("nan")}, None):
            with pytest.raises(InvalidInputError, match="metadata"):
                memory.add_vectors(x, ["a"] * 4, metas=[{}, {}, {}, bad], batch_size=2)
        for source in (123, "\udcff"):  # so are sources
            with pytest.raises(InvalidInputError, match="source"):
                memory.add_vectors(x, ["a"] * 4, sources=["s", "s", "s", source], batch_size=2)
        assert len(memory) == 0


def test_add_images_given_pil_images_says_how_to_add_them(tmp_path):
    """A PIL image (classify takes them) failed inside pathlib with a TypeError."""
    with Memory.create(tmp_path / "mem", encoder="pixels") as memory:
        for given in (Image.new("RGB", (8, 8)), [Image.new("RGB", (8, 8))], [3]):
            with pytest.raises(InvalidInputError, match="add_images takes image files and folders"):
                memory.add_images(given, label="cat")
        with pytest.raises(InvalidInputError, match="add_image_bytes"):
            memory.add_images(Image.new("RGB", (8, 8)), label="cat")
        assert len(memory) == 0


def test_a_memory_says_what_it_is_in_a_notebook(tmp_path):
    """repr(memory) was `<vismem.memory.Memory object at 0x7f...>`."""
    with Memory.create(tmp_path / "mem", encoder=None, dim=8) as memory:
        memory.add_vectors(np.eye(8, dtype=np.float32)[:3], "cat")
        assert repr(memory) == f"<Memory at {tmp_path / 'mem'}: 3 items, 8-d, encoder none (vectors given)>"
    assert repr(memory) == f"<Memory at {tmp_path / 'mem'} (closed): 8-d, encoder none (vectors given)>"


@pytest.mark.parametrize("given, says", [
    ("12", "got str '12'"),  # read as items 1 and 2
    (2, "got int 2 (for one item: [2])"),
    ([1.7], "got float 1.7"),  # read as item 1
    ([True], "got bool True"),  # read as item 1
    (np.array([1.0, 2.0]), "got float64"),
])
def test_ids_that_are_not_whole_numbers_are_refused_not_read_as_other_items(tmp_path, given, says):
    x = np.random.default_rng(5).normal(size=(4, 8)).astype(np.float32)
    with Memory.create(tmp_path / "mem", encoder=None, dim=8) as memory:
        memory.add_vectors(x, ["a", "a", "b", "b"])
        for edit in (memory.remove, memory.items, lambda ids: memory.relabel(ids, "c"),
                     lambda ids: memory.set_weight(ids, 0.0)):
            with pytest.raises(InvalidInputError, match=re.escape(says)):
                edit(given)
        assert [(i.label, i.weight) for i in memory.items([1, 2, 3, 4])] == [("a", 1.0)] * 2 + [("b", 1.0)] * 2
        assert memory.remove(np.array([1, 2])) == [1, 2]  # integer arrays are ids


@pytest.mark.parametrize("option", ["label", "source"])
def test_a_label_or_source_that_is_not_utf8_is_refused_not_a_crash(tmp_path, option):
    """`--label $'caf\\xe9'` from a Latin-1 terminal arrives with a lone surrogate, which
    SQLite cannot store: it raised UnicodeEncodeError from inside the write."""
    from vismem.errors import InvalidInputError

    (tmp_path / "photos" / "cat").mkdir(parents=True)
    Image.new("RGB", (8, 8), (200, 10, 10)).save(tmp_path / "photos" / "cat" / "a.png")
    given = {"label": "cat", option: "caf\udce9"}
    with Memory.create(tmp_path / "mem", encoder="pixels") as memory:
        with pytest.raises(InvalidInputError, match="not valid UTF-8"):
            memory.add_images([tmp_path / "photos"], **given)
        assert len(memory) == 0


def test_tune_on_an_empty_memory_says_one_line(tmp_path):
    # tune's progress bar is transient; where stderr is a log file it must not leave a blank line
    run_cli("create", tmp_path / "m", "--encoder", "pixels", check=True)
    result = run_cli("tune", tmp_path / "m", "--json")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.splitlines() == [one_line_error(result, "add labelled images with `vismem add` first")]


def test_tune_on_too_few_items_per_class_names_the_fix():
    """Two items per class hold none out at 20%: the message says so and how to fix it."""
    from sklearn.datasets import load_digits

    from vismem.errors import InvalidInputError
    from vismem.transform import TransformSpec
    from vismem.tune import tune

    x, y = load_digits(return_X_y=True)
    x, y = x[:20] / np.linalg.norm(x[:20], axis=1, keepdims=True), np.r_[y[:10], y[:10]].astype(str)
    with pytest.raises(InvalidInputError, match=r"held out 0: add items \(3 or more per class\), or hold out more"):
        tune(x, y)
    with pytest.raises(InvalidInputError, match="the memory has 1: add items of another class"):
        tune(x, np.full(20, "a"))
    assert tune(x, y, held_out=0.5, transforms=[TransformSpec()], per_class=[1]).held_out == 10


@pytest.mark.parametrize("per_class, held_out, helps", [(1, "0.2", False), (1, "0.5", False), (2, "0.2", True)])
def test_tune_suggests_holding_out_more_only_where_that_helps(tmp_path, digit_folders, per_class, held_out, helps):
    """One item per class holds none out at any share, and 0.5 is --held-out's most: the
    message said "or hold out more (up to 0.5)" all the same."""
    train, _ = digit_folders
    run_cli("create", tmp_path / "m", "--encoder", "pixels", check=True)
    for label in ("3", "5"):
        for image in sorted((train / label).iterdir())[:per_class]:
            run_cli("add", tmp_path / "m", image, "--label", label, check=True)
    result = run_cli("tune", tmp_path / "m", "--held-out", held_out)
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: tuning holds out {float(held_out):.0%} of each class")
    assert "add items (3 or more per class)" in result.stderr
    assert ("or hold out more (`vismem tune --held-out 0.5` holds out 2)" in result.stderr) is helps


@pytest.mark.parametrize("held_out", [float("nan"), 1.5, 1.0, -0.2])
def test_tune_refuses_a_held_out_share_that_is_not_a_fraction(tmp_path, held_out):
    """The Python API took any held_out: NaN failed in the split with a ValueError
    (a traceback), 1.5 held out all but one item per class and saved what that chose.
    Now each is refused and the memory's defaults are as they were."""
    from sklearn.datasets import load_digits

    from vismem.curate import tune_memory

    x, y = load_digits(return_X_y=True)
    with Memory.create(tmp_path / "m", encoder=None, dim=64) as memory:
        memory.add_vectors(x[:100].astype(np.float32), [str(label) for label in y[:100]])
        before = memory.settings
        with pytest.raises(InvalidInputError, match="held_out is the fraction of each class held out"):
            tune_memory(memory, held_out=held_out)
        assert memory.settings == before


@pytest.mark.parametrize("command", ["add", "eval"])
def test_images_for_a_memory_without_an_encoder_are_refused_before_any_progress(small_memory, tmp_path, command):
    root, _, _ = small_memory
    run_cli("create", tmp_path / "vectors", "--encoder", "none", "--dim", "4", check=True)
    result = run_cli(command, tmp_path / "vectors", root / "train", "--json")
    assert result.stdout == ""
    assert result.stderr.splitlines() == [one_line_error(result, "has no encoder", "vismem add-vectors")]


def test_import_onto_an_existing_memory_says_one_line(small_memory, tmp_path):
    # where stderr is a log, a bar that never moved is not written before the error
    _, memdir, _ = small_memory
    run_cli("export", memdir, tmp_path / "m.parquet", check=True)
    result = run_cli("import", tmp_path / "m.parquet", memdir, "--json")
    assert result.stdout == ""
    assert result.stderr.splitlines() == [one_line_error(result, "already exists")]
    exported = run_cli("export", memdir, tmp_path / "again.parquet", check=True)
    assert "exporting" in exported.stderr and "20/20" in exported.stderr  # finished work still shows its bar


def test_tune_index_on_an_empty_query_file_is_refused(small_memory, tmp_path):
    # zero queries measure nothing: a success here would leave the old figure standing as if re-measured
    _, memdir, _ = small_memory
    np.save(tmp_path / "none.npy", np.zeros((0, 768), np.float32))
    one_line_error(run_cli("tune-index", memdir, "--queries", tmp_path / "none.npy", "--json"), "no query vectors")


def test_weights_for_a_memory_without_an_encoder_are_refused(tmp_path):
    # they were ignored without a word (the pixels encoder, which has none either, refuses them)
    weights = tmp_path / "resnet50.pth"
    weights.write_bytes(b"a state dict")
    one_line_error(run_cli("create", tmp_path / "v", "--encoder", "none", "--dim", "4", "--weights", weights),
                   "without an encoder has no weights", "drop --weights")
    assert not (tmp_path / "v").exists()


def test_a_memory_without_an_encoder_is_described_in_words(tmp_path):
    created = run_cli("create", tmp_path / "v", "--encoder", "none", "--dim", "4", check=True).stdout
    shown = run_cli("info", tmp_path / "v", check=True).stdout
    assert "None" not in created + shown, created + shown
    assert "no encoder: precomputed vectors, 4-d" in created and "none: precomputed vectors (4-d)" in shown
    from conftest import start_server, stop_server

    process, _ = start_server(tmp_path / "v")  # its banner said "encoding with None", "encoder None"
    banner = stop_server(process)
    assert "None" not in banner and "no encoder: this memory takes precomputed 4-d vectors" in banner
    assert "(0 items, encoder none)" in banner


def test_eval_refuses_before_encoding_the_test_set(small_memory, tmp_path):
    # the test set may take minutes to encode: what cannot work is refused first (no progress bar)
    root, _, _ = small_memory
    memdir = tmp_path / "empty"
    run_cli("create", memdir, "--encoder", "pixels", check=True)
    result = run_cli("eval", memdir, root / "test", "--json")
    assert result.stdout == "" and result.stderr.splitlines() == [one_line_error(result, "is empty")]


@pytest.mark.parametrize("command", ["classify", "eval"])
def test_options_are_checked_before_reading_images(small_memory, tmp_path, command):
    # before, an unreadable image meant nothing was classified, so the bad --alpha went unnoticed (exit 3)
    root, memdir, _ = small_memory
    (tmp_path / "3").mkdir()
    (tmp_path / "3" / "bad.png").write_text("not an image")
    result = run_cli(command, memdir, tmp_path / "3" / "bad.png" if command == "classify" else tmp_path,
                     "--alpha", "-1", "--json")
    assert result.returncode == 2 and result.stdout == "" and "progress" not in result.stderr
    assert "Invalid value for '--alpha': -1.0 is not above 0\n" in result.stderr


@pytest.mark.parametrize("command", [["tune", "{mem}", "--dry-run"], ["eval-protocols", "knn", "--memory", "{mem}"]])
def test_a_negative_seed_is_bad_usage(small_memory, command):
    # numpy's generators take no negative seed: before, a traceback after loading the memory
    _, memdir, _ = small_memory
    result = run_cli(*[a.format(mem=memdir) for a in command], "--seed", "-1")
    assert result.returncode == 2 and "--seed" in result.stderr and "Traceback" not in result.stderr


def test_tune_index_with_images_and_query_vectors_is_bad_usage_before_the_memory_opens(small_memory, tmp_path):
    # as `classify` and `search` answer it: exit 2 (it was 1, "error ... nothing changed"), and
    # before the memory opens, so a memory that is not there is not the error given
    _, memdir, queries = small_memory
    np.save(tmp_path / "q.npy", np.ones((3, 768), np.float32))
    for memory in (memdir, tmp_path / "no-memory"):
        result = run_cli("tune-index", memory, queries[0], "--queries", tmp_path / "q.npy", "--json")
        assert result.returncode == 2 and result.stdout == "", (result.returncode, result.stderr)
        assert "give query images or --queries Q.npy, not both" in result.stderr


def test_tune_index_says_why_no_query_image_could_be_read(small_memory, tmp_path):
    # before: only "none of the 2 query images could be read", not which or why
    _, memdir, _ = small_memory
    broken = tmp_path / "broken.png"
    broken.write_text("not a picture")
    result = run_cli("tune-index", memdir, broken, tmp_path, "--json")
    one_line_error(result, "none of the 2 query images could be read")
    assert result.stdout == ""
    assert f"cannot tune with {broken}: not an image" in result.stderr
    assert f"cannot tune with {tmp_path}: not a regular file: a folder" in result.stderr


def test_tune_index_leaves_out_query_images_the_memory_holds(small_memory, tmp_path):
    """A query image that is an item finds itself: recall on it is 1.0 at any effort. Such
    images (known by their content hash, as `add` knows duplicates) are left out with a
    warning saying how many; given only those, tune-index refuses."""
    root, _, queries = small_memory
    memdir = tmp_path / "hnsw"
    run_cli("create", memdir, "--encoder", "pixels", "--index", "hnsw", check=True)
    run_cli("add", memdir, root / "train", check=True)
    items = sorted((root / "train").rglob("*.png"))
    copy = tmp_path / "renamed.png"  # the same content under another name is the same item
    shutil.copy(items[0], copy)
    result = run_cli("tune-index", memdir, *items, copy, *queries, "--json", check=True)
    assert json_lines(result)[0]["quality"]["sample"] == len(queries)  # measured on the unseen ones only
    assert f"left out {len(items) + 1} of the query images: the memory already holds them" in result.stderr
    one_line_error(run_cli("tune-index", memdir, *items, "--json"),
                   f"the memory already holds every query image given ({len(items)})")


def test_tune_index_on_an_empty_memory_is_refused(tmp_path):
    # before: a faiss RuntimeError traceback ('k > 0' failed) from the HNSW tuner
    memdir = tmp_path / "m"
    run_cli("create", memdir, "--encoder", "pixels", "--index", "hnsw", check=True)
    np.save(tmp_path / "q.npy", np.ones((3, 768), np.float32))
    one_line_error(run_cli("tune-index", memdir, "--queries", tmp_path / "q.npy", "--json"), "is empty")


def test_an_empty_memory_of_vectors_names_add_vectors_as_the_fix(tmp_path):
    # it said "add labelled images with `vismem add`", which such a memory refuses
    memdir = tmp_path / "v"
    run_cli("create", memdir, "--encoder", "none", "--dim", "4", check=True)
    np.save(tmp_path / "q.npy", np.eye(4, dtype=np.float32))
    (tmp_path / "q.txt").write_text("a\nb\na\nb\n")
    for command in (("classify", memdir, "--queries", tmp_path / "q.npy"),
                    ("eval", memdir, "--queries", tmp_path / "q.npy", "--labels", tmp_path / "q.txt")):
        message = one_line_error(run_cli(*command), "is empty", "`vismem add-vectors`")
        assert "images" not in message
    # the curation verbs said "add labelled images first" to it too
    for command in (("prune", memdir, "--mode", "soft"), ("calibrate", memdir), ("tune", memdir),
                    ("suspects", memdir)):
        message = one_line_error(run_cli(*command), "no items that vote",
                                 "add labelled vectors with `vismem add-vectors` first")
        assert "images" not in message


def _contrast_model(path: Path) -> str:
    """An onnx:PATH encoder whose vector is each channel's range (max - min): all zeros for
    a uniform image (as the pixels encoder once gave a uniform grey)."""
    import warnings

    import torch

    class Contrast(torch.nn.Module):
        def forward(self, x):
            return x.amax(dim=(2, 3)) - x.amin(dim=(2, 3))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Contrast(), (torch.zeros(2, 3, 8, 8),), str(path), dynamo=True,
                          dynamic_shapes=({0: torch.export.Dim("batch")},))
    return f"onnx:{path}?image_size=8&resize_size=8"


def test_a_uniform_image_is_skipped_with_why_not_stored_or_an_error(tmp_path):
    """An encoder that embeds a uniform image as all zeros: `add` stored it (at the same
    distance from everything), and `classify` failed the whole run with "vectors must not
    be all zeros ...: row 0", naming no image."""
    folder = tmp_path / "images" / "a"
    folder.mkdir(parents=True)
    Image.new("RGB", (8, 8), "white").save(folder / "white.png")
    noise = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    Image.fromarray(noise).save(folder / "noise.png")
    memdir = tmp_path / "mem"
    run_cli("create", memdir, "--encoder", _contrast_model(tmp_path / "contrast.onnx"), check=True)
    added = run_cli("add", memdir, tmp_path / "images", "--json")
    assert added.returncode == 3, added.stderr
    done = json_lines(added)[-1]
    assert done["added"] == 1 and [s["path"] for s in done["skipped_items"]] == [str(folder / "white.png")]
    assert "all zeros" in done["skipped_items"][0]["reason"]
    classified = run_cli("classify", memdir, folder / "white.png", folder / "noise.png", "--json")
    assert classified.returncode == 3, classified.stderr
    white, shown = json_lines(classified)
    assert white["path"] == str(folder / "white.png") and "all zeros" in white["error"]
    assert shown["label"] == "a" and shown["neighbors"][0]["distance"] == pytest.approx(0, abs=1e-5)
    with Memory.open(memdir) as memory:
        with pytest.raises(ValueError, match="cannot classify .*white.png: .*all zeros"):
            memory.classify([folder / "white.png"])
        with TestClient(create_app(memory, ServiceSettings())) as client:
            upload = io.BytesIO()
            Image.new("RGB", (8, 8), "black").save(upload, format="PNG")
            answer = client.post("/classify", files=[("file", ("black.png", upload.getvalue(), "image/png"))])
            assert answer.status_code == 400, answer.text
            assert answer.json()["error"].startswith("black.png: its embedding is all zeros")


def test_eval_says_how_to_label_an_image_outside_the_class_folders(small_memory, tmp_path):
    # the skip reason said "pass --label", an option eval does not have (exit 2 for whoever tried)
    root, memdir, queries = small_memory
    test = tmp_path / "test"
    shutil.copytree(root / "test", test)
    shutil.copy(queries[0], test / "stray.png")
    result = run_cli("eval", memdir, test, "--json")
    assert result.returncode == 3
    skipped = {s["path"]: s["reason"] for s in json.loads(result.stdout)["skipped"]}
    reason = skipped[str(test / "stray.png")]
    assert "--label" not in reason and "class subfolder" in reason and "stray.png" not in reason


def test_eval_names_the_test_labels_the_memory_lacks(small_memory, tmp_path):
    """A test folder of a class the memory does not hold: its images cannot be answered
    right, and eval says which labels those are instead of leaving a bare 0%."""
    root, memdir, _ = small_memory
    test = tmp_path / "test"
    shutil.copytree(root / "test", test)
    first = sorted(p for p in test.iterdir() if p.is_dir())[0]
    first.rename(test / "zebra")
    report = json_lines(run_cli("eval", memdir, test, "--json", check=True))[0]
    assert report["unknown_labels"] == ["zebra"] and report["per_class"]["zebra"] == 0
    said = run_cli("eval", memdir, test, check=True).stderr
    assert "warning: no item of the memory is labelled 'zebra'" in said
    assert json_lines(run_cli("eval", memdir, root / "test", "--json", check=True))[0]["unknown_labels"] == []


def test_a_restriction_no_item_matches_is_named(small_memory):
    """`--where camera=Tablet` where the items say `tablet`: every answer is empty. The
    answers still come (a script gets its JSON), and stderr says which restriction matched
    nothing; a restriction that matches says nothing."""
    _, memdir, queries = small_memory
    for command in ("classify", "search"):
        empty = run_cli(command, memdir, queries[0], "--where", "camera=Tablet", "--only-label", "3", "--json",
                        check=True)
        assert json_lines(empty)[0]["neighbors"] == []
        assert "warning: no item matches --only-label 3, --where camera=Tablet: every answer is empty" \
            in empty.stderr
        matched = run_cli(command, memdir, queries[0], "--only-label", "3", "--json", check=True)
        # (2 items vote for k=10, which the k_used warning says)
        assert json_lines(matched)[0]["neighbors"] and "no item matches" not in matched.stderr


def test_searching_an_empty_memory_says_so(small_memory, tmp_path):
    """`classify` refuses an empty memory; `search` printed each query's path with nothing
    under it (exit 0), and no word of why. The answers still come (a script gets its
    JSON), and stderr says the memory is empty and how to fill it."""
    _, _, queries = small_memory
    run_cli("create", tmp_path / "m", "--encoder", "pixels", check=True)
    for json_flag in ([], ["--json"]):
        result = run_cli("search", tmp_path / "m", queries[0], "--only-label", "3", *json_flag, check=True)
        assert result.stderr == (f"warning: memory at {tmp_path / 'm'} is empty: every answer is empty (add "
                                 "labelled images with `vismem add` first)\n")
    assert json_lines(result) == [{"path": str(queries[0]), "neighbors": []}]


def test_an_unreadable_file_given_by_name_is_answered_in_its_place(small_memory, tmp_path):
    """As one in a folder is: {"path", "error"} in its place, the others answered, exit 3.
    It was a usage error (exit 2, "path ... is not readable") and nothing was classified.
    Root reads any file, so as root the CLI runs without that power (setpriv)."""
    _, memdir, queries = small_memory
    locked = tmp_path / "locked.png"
    shutil.copy(queries[0], locked)
    locked.chmod(0)
    for command in ("classify", "search"):
        result = run_cli_unprivileged(command, memdir, queries[1], locked, "--json")
        assert result.returncode == 3, result.stderr
        answers = [json.loads(line) for line in result.stdout.splitlines()]
        assert answers[0]["path"] == str(queries[1]) and "error" not in answers[0]
        assert answers[1] == {"path": str(locked), "error": "unreadable: Permission denied"}


@pytest.mark.parametrize("damage", ["cut short", "another file", "empty"])
def test_a_damaged_database_is_one_line_that_names_the_way_out(small_memory, tmp_path, damage):
    """Each was a traceback (sqlite3.DatabaseError: file is not a database, database disk
    image is malformed; OperationalError: no such table: config), from every command."""
    _, memdir, queries = small_memory
    broken = tmp_path / "broken"
    shutil.copytree(memdir, broken)
    database = broken / "memory.sqlite"
    original = database.read_bytes()
    database.write_bytes({"cut short": original[:4096], "another file": b"garbage\n" * 100, "empty": b""}[damage])
    for command in (["info"], ["classify", queries[0]]):
        one_line_error(run_cli(command[0], broken, *command[1:]),
                       "is not the database of a vismem memory, or it is damaged", "import an export")


def test_a_database_this_user_cannot_read_is_not_called_damaged(small_memory, tmp_path):
    """It was "not the database of a vismem memory, or it is damaged ... restore the folder
    from a backup": advice that could make a user overwrite good data."""
    _, memdir, _ = small_memory
    locked = tmp_path / "locked"
    shutil.copytree(memdir, locked)
    (locked / "memory.sqlite").chmod(0)
    result = run_cli_unprivileged("info", locked)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "check that this user may read it" in result.stderr and "damaged" not in result.stderr


def test_a_long_label_on_the_explain_sheet_stops_at_its_tile(digit_folders, tmp_path):
    """A label wider than its tile ran on into the next tile's picture and words; it is cut
    to the tile's width with an ellipsis."""
    from PIL import Image

    train, test = digit_folders
    label = "a label far too long to fit under one tile of the sheet " * 2
    folder = tmp_path / "train" / label.strip()
    folder.mkdir(parents=True)
    for image in sorted(train.glob("*/*.png"))[:3]:
        shutil.copy(image, folder / image.name)
    memdir = tmp_path / "mem"
    run_cli("create", memdir, "--encoder", "pixels", check=True)
    run_cli("add", memdir, tmp_path / "train", check=True)
    sheet_path = tmp_path / "why.png"
    run_cli("explain", memdir, sorted(test.glob("*/*.png"))[0], "--out", sheet_path, check=True)
    sheet = np.asarray(Image.open(sheet_path).convert("L"))
    tile, cell_w = 128, 136
    columns = sheet.shape[1] // cell_w
    assert columns == 4  # the query and three neighbours, each with the long label under it
    for column in range(columns - 1):  # the gap between a tile's words and the next tile's
        gap = sheet[tile + 6 :, column * cell_w + tile + 5 : column * cell_w + tile + 11]
        assert gap.min() == 255, f"text in the gap after column {column}"
    words = sheet[tile + 6 : tile + 20, 4 : 4 + tile]
    assert words.min() < 128  # the cut label is still written


def test_labels_in_other_scripts_are_drawn_on_the_explain_sheet_not_as_boxes(digit_folders, tmp_path):
    """Pillow's default font has Latin letters only: "кошка" and "мышка" both came out as
    five empty boxes, so two labels could not be told apart on the sheet. It draws them
    now (DejaVu Sans); Chinese, which that font lacks too, is written as escapes (\\u732b),
    which also tell 猫 from 犬."""
    import hashlib
    import io

    from PIL import Image

    from vismem.explain import explanation_sheet

    train, test = digit_folders
    query = sorted(test.glob("*/*.png"))[0]
    sheets = []
    with Memory.create(tmp_path / "mem", encoder="pixels") as memory:
        memory.add_images(sorted(train.glob("*/*.png"))[:4], label="кошка")
        for label in ("кошка", "мышка", "猫", "犬"):
            if memory.class_counts() != {label: 4}:
                memory.relabel(memory.ids(), label)
            decision = memory.classify([query], k=4)[0]
            assert decision.label == label
            out = io.BytesIO()
            explanation_sheet(decision, memory.thumbnail, Image.open(query)).save(out, format="PNG")
            sheets.append(hashlib.sha256(out.getvalue()).hexdigest())
    assert sheets[0] != sheets[1], "the two Cyrillic labels look alike"
    assert sheets[2] != sheets[3], "the two Chinese labels look alike"


def test_messages_that_quote_another_library_read_as_one_sentence(tmp_path):
    """pyarrow's "...not a parquet file." was joined as "file.; give ..."; torch's reason for
    a bad --weights file was cut at 300 characters, mid-sentence, before its cause."""
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(bytes(range(256)) * 4)
    message = one_line_error(run_cli("import", junk, tmp_path / "copy"), "not a parquet file; give a file written")
    assert ".;" not in message
    weights = tmp_path / "weights.pth"
    weights.write_text("not weights")
    message = one_line_error(run_cli("create", tmp_path / "m", "--encoder", "efficientnet_lite0", "--weights", weights),
                             "not a file of plain tensors: Unsupported operand", "; pass a file saved with")
    assert "PyTorch 2.6" not in message  # torch's paragraph on its defaults, which buried the cause


def test_info_on_an_exact_index_says_what_its_item_count_means(tmp_path):
    """`info` said "recall 1.000 ... at 128 items" of a memory of 150: 128 was the count when
    the record (and the intrinsic dimension) was measured; exact search needs no count."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    with Memory.create(tmp_path / "m", encoder=None, dim=64, index="exact") as memory:
        memory.add_vectors(x[:128], [str(label) for label in y[:128]])
        memory.add_vectors(x[128:150], [str(label) for label in y[128:150]])
        measured = memory.info()["index"]["quality"]["size"]
    said = run_cli("info", tmp_path / "m", check=True).stdout
    assert "items       150" in said and "recall      1.000 @10: exact search" in said
    assert f"at {measured} items" not in said.split("intrinsic")[0]
    assert f"(Levina-Bickel MLE, estimated at {measured} items; {150 - measured} added since)" in said


# ---- labels holding control characters -------------------------------------------------------

# ESC starts a terminal escape (this one clears the screen), CSI (C1) another; NUL, DEL, NEL
# and a tab print as nothing or as a space, so two labels would look alike
CONTROL_LABELS = ["cat\x1b[2J", "cat\x9b31m", "c\x00t", "cat\x7f", "cat\x85", "a\tb"]
# what stays a label: accents, CJK, emoji (a ZWJ sequence too), a space inside
PRINTABLE_LABELS = ["café", "日本", "🐱 cat", "👨\u200d👩\u200d👧", "Dög \"quoted\"", "big cat"]


def older_memory(memdir: Path, changes: str, *values: object) -> None:
    """A memory of 3 vectors (their .npy beside it, v.npy), labelled ok, ok, fine, whose
    two ok items then get `changes` (SQL SET terms) as an older vismem let them in."""
    import sqlite3

    from vismem.store import DB_NAME

    np.save(memdir.parent / "v.npy", np.eye(8, dtype=np.float32)[:3])
    (memdir.parent / "ok.txt").write_text("ok\nok\nfine\n", encoding="utf-8")
    run_cli("create", memdir, "--encoder", "none", "--dim", "8", check=True)
    run_cli("add-vectors", memdir, "--vectors", memdir.parent / "v.npy", "--labels", memdir.parent / "ok.txt",
            check=True)
    with sqlite3.connect(memdir / DB_NAME) as db:
        db.execute(f"UPDATE items SET {changes} WHERE label = 'ok'", values)
    db.close()


@pytest.mark.parametrize("bad", CONTROL_LABELS)
def test_a_label_with_a_control_character_is_refused_everywhere_in_python(tmp_path, bad):
    """`info` printed such labels raw: an escape sequence in a label drove the terminal. A
    new label may hold none; the error shows it escaped, and nothing is added or changed."""
    shown = re.escape(repr(bad))
    with Memory.create(tmp_path / "vec", encoder=None, dim=8) as memory:
        ids = memory.add_vectors(np.eye(8, dtype=np.float32)[:2], ["ok", "ok"])
        with pytest.raises(InvalidInputError, match=f"label {shown} holds the control character"):
            memory.add_vectors(np.eye(8, dtype=np.float32)[2:5], ["ok", bad, "ok"])
        with pytest.raises(InvalidInputError, match=shown):
            memory.add_vectors(np.eye(8, dtype=np.float32)[2:5], np.array(["ok", bad, "ok"]))
        with pytest.raises(InvalidInputError, match=shown):
            memory.relabel(ids, bad)
        with pytest.raises(InvalidInputError, match=shown):
            memory.update(ids, label=bad, weight=2.0)
        assert memory.class_counts() == {"ok": 2} and [i.weight for i in memory.items(ids)] == [1.0, 1.0]
    Image.new("RGB", (8, 8), (200, 10, 10)).save(tmp_path / "a.png")
    with Memory.create(tmp_path / "img", encoder="pixels") as memory:
        with pytest.raises(InvalidInputError, match=shown):
            memory.add_images([tmp_path / "a.png"], label=bad)
        assert len(memory) == 0


def test_printable_labels_in_any_script_are_kept_as_they_are(tmp_path):
    with Memory.create(tmp_path / "vec", encoder=None, dim=8) as memory:
        ids = memory.add_vectors(np.eye(8, dtype=np.float32)[:6], PRINTABLE_LABELS)
        assert [i.label for i in memory.items(ids)] == PRINTABLE_LABELS
        memory.relabel(ids[:1], "ñandú 🐦")
        assert memory.items(ids[:1])[0].label == "ñandú 🐦"
    (tmp_path / "labels.txt").write_text("\n".join(PRINTABLE_LABELS) + "\n", encoding="utf-8")
    np.save(tmp_path / "v.npy", np.eye(8, dtype=np.float32)[:6])
    run_cli("create", tmp_path / "cli", "--encoder", "none", "--dim", "8", check=True)
    run_cli("add-vectors", tmp_path / "cli", "--vectors", tmp_path / "v.npy", "--labels", tmp_path / "labels.txt",
            check=True)
    assert json_lines(run_cli("info", tmp_path / "cli", "--json"))[0]["classes"] == dict.fromkeys(PRINTABLE_LABELS, 1)


def test_the_cli_refuses_a_label_with_a_control_character_and_changes_nothing(tmp_path):
    bad = "cat\x1b[2J"
    shown = repr(bad)  # 'cat\x1b[2J', escaped
    np.save(tmp_path / "v.npy", np.eye(8, dtype=np.float32)[:3])
    run_cli("create", tmp_path / "vec", "--encoder", "none", "--dim", "8", check=True)
    (tmp_path / "labels.txt").write_text(f"ok\n{bad}\nok\n", encoding="utf-8")
    one_line_error(run_cli("add-vectors", tmp_path / "vec", "--vectors", tmp_path / "v.npy",
                           "--labels", tmp_path / "labels.txt"), "line 2", shown, "control character")
    np.save(tmp_path / "labels.npy", np.array(["ok", bad, "ok"]))
    one_line_error(run_cli("add-vectors", tmp_path / "vec", "--vectors", tmp_path / "v.npy",
                           "--labels", tmp_path / "labels.npy"), "row 1 (from 0)", shown, "control character")
    assert json_lines(run_cli("info", tmp_path / "vec", "--json"))[0]["items"] == 0
    (tmp_path / "ok.txt").write_text("ok\nok\nok\n", encoding="utf-8")
    run_cli("add-vectors", tmp_path / "vec", "--vectors", tmp_path / "v.npy", "--labels", tmp_path / "ok.txt",
            check=True)
    one_line_error(run_cli("relabel", tmp_path / "vec", "--id", "1", "--label", bad), shown)
    assert json_lines(run_cli("info", tmp_path / "vec", "--json"))[0]["classes"] == {"ok": 3}

    run_cli("create", tmp_path / "img", "--encoder", "pixels", check=True)
    (tmp_path / "photos" / bad).mkdir(parents=True)
    Image.new("RGB", (8, 8), (200, 10, 10)).save(tmp_path / "photos" / bad / "a.png")
    Image.new("RGB", (8, 8), (10, 200, 10)).save(tmp_path / "b.png")
    one_line_error(run_cli("add", tmp_path / "img", tmp_path / "b.png", "--label", bad), shown)
    # a class folder so named is no label: its images are skipped, saying why (exit 1 when
    # that leaves nothing added)
    folder = run_cli("add", tmp_path / "img", tmp_path / "photos", "--json")
    assert folder.returncode == 1 and folder.stdout == "", folder.stderr
    skipped, error = folder.stderr.strip().splitlines()[-2:]
    assert "folder name is no label" in skipped and shown in skipped, skipped
    assert error == "error: the file given could not be added: nothing changed", error
    assert json_lines(run_cli("info", tmp_path / "img", "--json"))[0]["items"] == 0


def test_a_memory_already_holding_such_a_label_still_opens_but_does_not_import(tmp_path):
    """Labels from before the check stay readable (and can be relabelled away); only a
    new label is refused, so importing an export of such a memory names the label."""
    older_memory(tmp_path / "old", "label = 'o\x1bk'")
    assert json_lines(run_cli("info", tmp_path / "old", "--json"))[0]["classes"] == {"o\x1bk": 2, "fine": 1}
    run_cli("export", tmp_path / "old", tmp_path / "old.parquet", check=True)
    one_line_error(run_cli("import", tmp_path / "old.parquet", tmp_path / "new"), repr("o\x1bk"))
    assert not (tmp_path / "new").exists()
    with Memory.open(tmp_path / "old") as memory:
        memory.relabel(memory.ids(labels=["o\x1bk"]), "ok")
        assert memory.class_counts() == {"ok": 2, "fine": 1}


# ---- sources and metadata holding control characters ----------------------------------------

@pytest.mark.parametrize("bad", CONTROL_LABELS)
def test_a_source_or_metadata_with_a_control_character_is_refused_in_python(tmp_path, bad):
    """`info`, `search` and `classify` printed sources and metadata raw, as they did labels."""
    shown = re.escape(repr(bad))
    x = np.eye(8, dtype=np.float32)[:3]
    with Memory.create(tmp_path / "vec", encoder=None, dim=8) as memory:
        with pytest.raises(InvalidInputError, match=f"source {shown} holds the control character"):
            memory.add_vectors(x, "ok", sources=["s", bad, "s"])
        for meta in ({"note": bad}, {"tags": ["ok", bad]}, {"deep": {"k": bad}}, {"deep": {bad: 1}}):
            with pytest.raises(InvalidInputError, match=f"metadata .*{shown}.* holds the control character"):
                memory.add_vectors(x, "ok", metas=[{}, meta, {}])
        with pytest.raises(InvalidInputError, match="metadata keys are letters, digits and _"):
            memory.add_vectors(x, "ok", metas=[{f"k{bad}": 1}] * 3)
        assert len(memory) == 0
    Image.new("RGB", (8, 8), (200, 10, 10)).save(tmp_path / "a.png")
    with Memory.create(tmp_path / "img", encoder="pixels") as memory:
        with pytest.raises(InvalidInputError, match=f"source {shown}"):
            memory.add_images([tmp_path / "a.png"], label="ok", source=bad)
        with pytest.raises(InvalidInputError, match=shown):
            memory.add_images([tmp_path / "a.png"], label="ok", meta={"note": bad})
        with pytest.raises(InvalidInputError, match=f"image name {re.escape(repr(f'a{bad}.png'))} holds the"):
            memory.add_image_bytes([(f"a{bad}.png", (tmp_path / "a.png").read_bytes())], label="ok", source="s")
        assert len(memory) == 0


def test_the_cli_refuses_a_source_or_metadata_with_a_control_character(tmp_path):
    bad = "cat\x1b[2J"
    np.save(tmp_path / "v.npy", np.eye(8, dtype=np.float32)[:3])
    (tmp_path / "ok.txt").write_text("ok\nok\nok\n", encoding="utf-8")
    run_cli("create", tmp_path / "vec", "--encoder", "none", "--dim", "8", check=True)
    one_line_error(run_cli("add-vectors", tmp_path / "vec", "--vectors", tmp_path / "v.npy", "--labels",
                           tmp_path / "ok.txt", "--source", bad), f"source {bad!r} holds the control character")
    run_cli("create", tmp_path / "img", "--encoder", "pixels", check=True)
    Image.new("RGB", (8, 8), (200, 10, 10)).save(tmp_path / "a.png")
    one_line_error(run_cli("add", tmp_path / "img", tmp_path / "a.png", "--label", "ok", "--source", bad),
                   f"source {bad!r}")
    # the text as given, and as JSON that reads as such a text
    for given in (f"note={bad}", 'note="cat\\u001b[2J"'):
        one_line_error(run_cli("add", tmp_path / "img", tmp_path / "a.png", "--label", "ok", "--meta", given),
                       f"metadata note={bad!r} holds the control character")
    for memdir in ("vec", "img"):
        assert json_lines(run_cli("info", tmp_path / memdir, "--json"))[0]["items"] == 0


def test_a_path_with_a_control_character_is_skipped_as_a_source_not_the_whole_add(tmp_path):
    """The path given is its images' source by default: one holding a control character
    made the whole add fail. Its images are skipped, saying why and what to do; the
    other paths are added, and with --source they are too."""
    folder = tmp_path / "photos\x1b[2J"
    (folder / "cat").mkdir(parents=True)
    Image.new("RGB", (8, 8), (200, 10, 10)).save(folder / "cat" / "a.png")
    single = tmp_path / "b\tc.png"
    Image.new("RGB", (8, 8), (10, 200, 10)).save(single)
    (tmp_path / "fine" / "dog").mkdir(parents=True)
    Image.new("RGB", (8, 8), (10, 10, 200)).save(tmp_path / "fine" / "dog" / "d.png")
    run_cli("create", tmp_path / "img", "--encoder", "pixels", check=True)
    result = run_cli("add", tmp_path / "img", folder, tmp_path / "fine", "--json")
    assert result.returncode == 3, result.stderr
    [skipped] = json_lines(result)[-1]["skipped_items"]
    assert skipped["path"] == str(folder / "cat" / "a.png")
    assert repr(str(folder)) in skipped["reason"] and "--source" in skipped["reason"], skipped
    # given alone, nothing is added: an error, naming the reason and what to do
    result = run_cli("add", tmp_path / "img", single, "--label", "cat", "--json")
    assert "--source" in result.stderr and not result.stdout
    one_line_error(result, "the file given could not be added: nothing changed")
    assert json_lines(run_cli("info", tmp_path / "img", "--json"))[0]["classes"] == {"dog": 1}
    run_cli("add", tmp_path / "img", folder, "--source", "photos", check=True)
    run_cli("add", tmp_path / "img", single, "--label", "cat", "--source", "photos", check=True)
    assert json_lines(run_cli("info", tmp_path / "img", "--json"))[0]["classes"] == {"dog": 1, "cat": 2}


def test_a_memory_already_holding_such_a_source_or_metadata_opens_and_finds_them(tmp_path):
    bad = "s\x1b[2J"
    older_memory(tmp_path / "old", "source = ?, meta = ?", bad, json.dumps({"note": bad}))
    with Memory.open(tmp_path / "old") as memory:
        assert len(memory.ids(sources=[bad])) == 2 and len(memory.ids(where={"note": bad})) == 2
    for restrict in (["--only-source", bad], ["--where", f"note={bad}"]):
        result = run_cli("search", tmp_path / "old", "--queries", tmp_path / "v.npy", "-k", "3", "--json",
                         *restrict)
        assert result.returncode == 0, result.stderr
        assert [n["source"] for n in json_lines(result)[0]["neighbors"]] == [bad, bad]


def test_text_a_memory_already_holds_with_control_characters_is_shown_escaped(tmp_path):
    """Labels and sources from before the check were printed raw: this label turned the
    terminal's text red and this source set its window title. Human output shows them as
    repr escapes them (ordinary Unicode as it is); --json keeps the true strings."""
    label, source = "o\x1b[31mk é", "s\x1b]0;x\x07"
    older_memory(tmp_path / "old", "label = ?, source = ?", label, source)
    memdir, queries = tmp_path / "old", tmp_path / "v.npy"
    (tmp_path / "truth.txt").write_text("fine\nfine\nfine\n", encoding="utf-8")
    said = ""
    for command in (["info", memdir], ["search", memdir, "--queries", queries, "-k", "3"],
                    ["classify", memdir, "--queries", queries, "-k", "3"],
                    ["suspects", memdir, "-k", "2"],
                    ["eval", memdir, "--queries", queries, "--labels", tmp_path / "truth.txt", "-k", "1"],
                    ["search", memdir, "--queries", queries, "--only-source", source + "x"],
                    ["prune", memdir, "--mode", "soft", "-k", "2"]):  # (last: it changes the votes)
        result = run_cli(*command)
        assert result.returncode == 0, (command, result.stderr)
        said = result.stdout + result.stderr
        if "--only-source" in command:  # the warning that nothing matches names the source escaped
            assert "s\\x1b]0;x\\x07x" in said, said
        assert not re.search("[\x00-\x08\x0b-\x1f\x7f-\x9f]", said), (command, said)
    assert "o\\x1b[31mk é" in run_cli("info", memdir).stdout
    assert "s\\x1b]0;x\\x07" in run_cli("search", memdir, "--queries", queries, "-k", "3").stdout
    assert json_lines(run_cli("info", memdir, "--json"))[0]["classes"] == {label: 2, "fine": 1}
    answer = json_lines(run_cli("search", memdir, "--queries", queries, "-k", "3", "--json"))[0]
    assert {n["source"] for n in answer["neighbors"]} == {source, "vectors"}


def test_a_backslash_in_stored_text_is_told_apart_from_an_escaped_control_character(tmp_path):
    """A label holding the four characters `\\x1b` was shown exactly as one holding ESC: the
    escaping was ambiguous. Human output doubles every backslash (`\\\\x1b`), so `\\x1b`
    shown means ESC; --json keeps both true strings."""
    esc, typed = "o\x1bk", "o\\x1bk"  # ESC, and the characters \ x 1 b as a label may hold
    esc_source, typed_source = "s\x1bt", "s\\x1bt"
    memdir = tmp_path / "old"
    older_memory(memdir, "label = ?, source = ?", esc, esc_source)
    np.save(tmp_path / "w.npy", np.eye(8, dtype=np.float32)[3:4])
    (tmp_path / "typed.txt").write_text(typed + "\n", encoding="utf-8")
    run_cli("add-vectors", memdir, "--vectors", tmp_path / "w.npy", "--labels", tmp_path / "typed.txt",
            "--source", typed_source, check=True)
    assert json_lines(run_cli("info", memdir, "--json"))[0]["classes"] == {esc: 2, "fine": 1, typed: 1}

    def row_of(shown: str, lines: list[str]) -> str:
        [row] = [line for line in lines if re.search(rf"(^|[^\\]){re.escape(shown)}\b", line)]
        return row

    info = run_cli("info", memdir, check=True).stdout.splitlines()
    assert row_of("o\\x1bk", info) != row_of("o\\\\x1bk", info), info  # ESC, then the typed one
    assert re.search(r"o\\x1bk\W+2\b", row_of("o\\x1bk", info)), info
    assert re.search(r"o\\\\x1bk\W+1\b", row_of("o\\\\x1bk", info)), info
    searched = run_cli("search", memdir, "--queries", tmp_path / "v.npy", "-k", "4", check=True).stdout
    hits = searched.splitlines()
    # each hit shows its label and its source, each escaped the same way
    assert len([h for h in hits if re.search(r"[^\\]o\\x1bk .* s\\x1bt$", h)]) == 6, searched
    assert len([h for h in hits if re.search(r" o\\\\x1bk .* s\\\\x1bt$", h)]) == 3, searched
    answer = json_lines(run_cli("search", memdir, "--queries", tmp_path / "v.npy", "-k", "4", "--json"))[0]
    assert {(n["label"], n["source"]) for n in answer["neighbors"]} == {(esc, esc_source), ("fine", "vectors"),
                                                                         (typed, typed_source)}


def test_an_error_naming_a_path_with_a_control_character_shows_it_escaped(tmp_path):
    """`error: no memory at /tmp/x<ESC>[2J` sent the escape to the terminal (it cleared the
    screen): the one error line is human output too, and escapes control characters."""
    result = run_cli("info", tmp_path / "no\x1b[2Jmemory")
    line = one_line_error(result, "no memory at", "no\\x1b[2Jmemory")
    assert "\x1b" not in result.stderr, line
# Each whole-number option with a range, out of it: Typer said "Input should be greater than
# or equal to 1" (pydantic's words, naming neither the range nor the other bound), where the
# float options said "-1.0 is not from 0 to 1,000,000".
OUT_OF_RANGE = [
    (("classify", "{mem}", "q.png", "--k", "0"), "'--k' / '-k': 0 is not from 1 to 1,000"),
    (("search", "{mem}", "q.png", "-k", "1001"), "'--k' / '-k': 1001 is not from 1 to 1,000"),
    (("explain", "{mem}", "q.png", "--k", "0"), "'--k' / '-k': 0 is not from 1 to 1,000"),
    (("eval", "{mem}", "test", "--k", "0"), "'--k' / '-k': 0 is not from 1 to 1,000"),
    # prune and suspects vote with k neighbours too: past 1,000 they failed (exit 1) once open
    (("prune", "{mem}", "--mode", "soft", "--k", "0"), "'--k' / '-k': 0 is not from 1 to 1,000"),
    (("prune", "{mem}", "--mode", "soft", "--k", "1001"), "'--k' / '-k': 1001 is not from 1 to 1,000"),
    (("prune", "{mem}", "--mode", "hard", "--threshold", "0"), "'--threshold': 0 is below 1"),
    (("suspects", "{mem}", "--k", "1001"), "'--k' / '-k': 1001 is not from 1 to 1,000"),
    (("suspects", "{mem}", "--limit", "0"), "'--limit' / '-n': 0 is below 1"),
    (("calibrate", "{mem}", "--k", "0"), "'--k' / '-k': 0 is below 1"),
    (("tune", "{mem}", "--seed", "-1"), "'--seed': -1 is below 0"),
    (("eval-protocols", "knn", "--seed", "-1"), "'--seed': -1 is below 0"),
    (("eval-protocols", "fewshot", "--draws", "1"), "'--draws': 1 is below 2"),
    (("eval-protocols", "incremental", "--steps", "1"), "'--steps': 1 is below 2"),
    (("add", "{mem}", "q.png", "--batch-size", "0"), "'--batch-size': 0 is below 1"),
    (("add", "{mem}", "q.png", "--decode-workers", "65"), "'--decode-workers': 65 is not from 0 to 64"),
    (("classify", "{mem}", "q.png", "--batch-size", "0"), "'--batch-size': 0 is below 1"),
    (("explain", "{mem}", "--queries", "q.npy", "--row", "-1"), "'--row': -1 is below 0"),
    (("demo", "--per-class", "1"), "'--per-class': 1 is below 2"),
    (("record-queries", "{mem}", "--", "-1"), "'KEEP': -1 is not from 0 to 100,000"),
    (("record-queries", "{mem}", "100001"), "'KEEP': 100001 is not from 0 to 100,000"),
    (("serve", "{mem}", "--port", "65536"), "'--port': 65536 is not from 0 to 65,535"),
    (("serve", "{mem}", "--max-pixels", "0"), "'--max-pixels': 0 is below 1"),
    (("serve", "{mem}", "--record-write-seconds", "0.5"), "'--record-write-seconds': 0.5 is not from 1 to 86,400"),
    (("serve", "{mem}", "--batch-size", "0"), "'--batch-size': 0 is below 1"),
    (("serve", "{mem}", "--port", "80.5"), "'--port': '80.5' is not a whole number"),
]


@pytest.mark.parametrize("args, says", OUT_OF_RANGE, ids=[" ".join((a[0], *a[-2:])) for a, _ in OUT_OF_RANGE])
def test_a_whole_number_out_of_its_range_says_the_range_as_float_options_do(tmp_path, args, says):
    """Bad usage (exit 2) in the float options' words, before anything is opened or made."""
    memdir = tmp_path / "mem"
    result = run_cli(*[a.format(mem=memdir) for a in args])
    assert result.returncode == 2 and result.stdout == "", (result.returncode, result.stderr)
    assert says in " ".join(result.stderr.split()), result.stderr
    assert "Input should be" not in result.stderr and not memdir.exists()


def test_help_says_each_range_in_the_words_of_its_error(cli):
    """--help showed Typer's `0.0<=x<=1000000.0` and `x>=1` where the error says
    "is not from 0 to 1,000,000" and "is below 1"."""
    from vismem.cli import load_commands

    for command in load_commands().registered_commands:
        name = command.name or command.callback.__name__.replace("_", "-")
        shown = cli(name, "--help", check=True).stdout
        assert not re.search(r"<=\s*x|x\s*[<>]=", shown), (name, shown)
    for args, says in [(("boost",), "[default: 2.0; above 0, at most 1,000,000]"), (("classify",), "[1 to 1,000]"),
                       (("record-queries",), "[0 to 100,000]"), (("serve",), "[default: 8000; 0 to 65,535]"),
                       (("suspects",), "[default: 20; at least 1]"), (("tune",), "[default: 0.2; 0.05 to 0.5]")]:
        assert says in " ".join(cli(*args, "--help").stdout.split()), args


@pytest.mark.parametrize("args", [("classify", "{mem}", "q.png", "--alpha"), ("explain", "{mem}", "q.png", "--tau"),
                                  ("prune", "{mem}", "--mode", "soft", "--c"),
                                  ("prune", "{mem}", "--mode", "soft", "--d")])
def test_an_open_lower_bound_is_said_in_help_and_error_alike(tmp_path, cli, args):
    """--alpha, --tau, --c and --d must be above 0: --help showed no range at all, and
    the error said '0.0 is not above 0.0'."""
    memdir, option = tmp_path / "mem", args[-1]
    for value in ("0", "-1"):
        result = run_cli(*[a.format(mem=memdir) for a in args], value)
        assert result.returncode == 2 and result.stdout == "" and not memdir.exists(), result.stderr
        assert re.search(rf"'{option}': {float(value)} is not above 0$", result.stderr, re.M), result.stderr
    shown = " ".join(cli(args[0], "--help").stdout.split())
    said = shown.split(f" {option} ", 1)[1].split(" --", 1)[0]  # its line in --help
    assert said.endswith("above 0]"), said


def test_add_with_no_input_readable_is_an_error_not_done_in_part(small_memory, tmp_path):
    """`add` of files none of which could be read exited 3, done in part ("added 0 items,
    skipped 1"), though nothing changed: exit 1, as classify and search answer it, with
    each reason on stderr first and nothing on stdout, even with --json. Some added: 3 as
    before; only images already held (the same label): 0, as duplicates do not count."""
    root, memdir, queries = small_memory
    broken = tmp_path / "broken.png"
    broken.write_text("not an image")
    (tmp_path / "notes.png").write_bytes(b"\x89PNG cut short")
    before = json_lines(run_cli("info", memdir, "--json"))[0]["items"]
    for args, says in [((broken, "--label", "x"), "error: the file given could not be read: nothing added"),
                       ((broken, tmp_path / "notes.png", "--label", "x", "--json"),
                        "error: none of the 2 files given could be read: nothing added"),
                       ((broken,), "error: the file given could not be added: nothing changed")]:  # no label
        result = run_cli("add", memdir, *args)
        assert result.returncode == 1 and result.stdout == "", (args, result.returncode, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert lines[-1] == says and f"skipped {broken}: " in result.stderr and "Traceback" not in result.stderr
    assert json_lines(run_cli("info", memdir, "--json"))[0]["items"] == before
    held = sorted((root / "train").rglob("*.png"))[0]
    again = run_cli("add", memdir, held, "--label", held.parent.name)
    assert again.returncode == 0 and "added 0 items, skipped 1 (1 duplicate)" in again.stdout, again.stderr
    mixed = run_cli("add", memdir, held, broken, "--label", held.parent.name)
    assert mixed.returncode == 3, mixed.stderr  # one held, one unreadable: not all is done
    some = run_cli("add", memdir, queries[0], broken, "--label", "x", "--json")
    assert some.returncode == 3 and json_lines(some)[-1]["added"] == 1, some.stderr
    run_cli("remove", memdir, "--id", str(json_lines(some)[-1]["ids"][0]), check=True)  # the module's memory as it was


def test_adding_a_folder_with_no_image_files_is_an_error(tmp_path):
    """An empty folder, or one of hidden files, said 'added 0 items, skipped 0' and exited 0,
    so a wrong path went unnoticed in a script; `eval` of the same folder is an error."""
    (tmp_path / "empty").mkdir()
    (tmp_path / "hidden" / ".git").mkdir(parents=True)  # passed over, as hidden files are
    (tmp_path / "hidden" / ".DS_Store").write_bytes(b"\0")
    run_cli("create", tmp_path / "img", "--encoder", "pixels", check=True)
    for folder in ("empty", "hidden"):
        result = run_cli("add", tmp_path / "img", tmp_path / folder, "--json")
        one_line_error(result, f"no image files in {tmp_path / folder}: nothing added")
        assert not result.stdout


def test_a_misspelt_classify_option_is_named_as_classify_s(tmp_path):
    with (Memory.create(tmp_path / "mem", encoder="pixels") as memory,
          pytest.raises(TypeError, match=r"classify\(\) got an unexpected keyword argument 'kk'")):
        memory.classify([Image.new("RGB", (8, 8))], kk=5)


@pytest.mark.parametrize("given", [[np.zeros((8, 8, 3), np.uint8)], np.zeros((8, 8, 3), np.uint8), [b"\x89PNG"], [3]])
def test_classify_given_pixel_arrays_says_how_to_give_them(tmp_path, given):
    """A numpy image (as scikit-image or OpenCV load it) failed inside pathlib: `TypeError:
    expected str, bytes or os.PathLike object, not ndarray`, no VismemError, no way forward."""
    with Memory.create(tmp_path / "mem", encoder="pixels") as memory:
        memory.add_images([_a_digit_file(tmp_path)], label="cat")
        with pytest.raises(InvalidInputError, match=r"classify takes image files or PIL images, got (ndar|byt|int)"):
            memory.classify(given)
        with pytest.raises(InvalidInputError, match=r"embed_images takes image files or PIL images"):
            memory.embed_images(given)
        with pytest.raises(InvalidInputError, match=r"Image\.fromarray"):
            memory.classify([np.zeros((8, 8, 3), np.uint8)])


def _a_digit_file(folder: Path) -> Path:
    path = folder / "digit.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(path)
    return path


@pytest.mark.parametrize("where", ["camera=phone", ["camera=phone"], ["ab"], [("camera", "phone", "x")], 3])
def test_a_where_that_is_no_mapping_is_refused_saying_what_it_takes(tmp_path, where):
    """`where="camera=phone"` (the CLI's form) failed with `ValueError: not enough values to
    unpack (expected 2, got 1)`; `where=["ab"]` was read as the condition a = "b"."""
    x = np.eye(8, dtype=np.float32)[:3]
    with Memory.create(tmp_path / "mem", encoder=None, dim=8) as memory:
        memory.add_vectors(x, "cat", metas={"camera": "phone", "a": "b"})
        for read in (lambda: memory.search(x[:1], where=where), lambda: memory.classify_vectors(x[:1], where=where),
                     lambda: memory.ids(where=where), lambda: memory.remove(where=where)):
            with pytest.raises(InvalidInputError, match=r"where is a mapping of metadata keys to values, "
                                                        r"such as \{'camera': 'phone'\}"):
                read()
        assert len(memory) == 3
        assert sorted(hit.id for hit in memory.search(x[:1], where=[("camera", "phone")])[0]) == [1, 2, 3]


def test_reports_show_in_a_notebook_without_dumping_every_id(tmp_path):
    """`memory.add_images(["big/"])` as a notebook cell's last line printed every new id:
    megabytes for a million images. Long lists and mappings in a report now show their
    ends and their length; short ones show whole, as before."""
    from vismem import AddReport, RollbackReport
    from vismem.images import Skipped

    big = AddReport(added=list(range(1, 1_000_001)), skipped=[Skipped(f"x{i}.png", "empty file") for i in range(50)])
    shown = repr(big)
    assert len(shown) < 1000, shown[:300]
    assert shown.startswith("AddReport(added=[1, 2, 3,") and "1000000] (1,000,000)" in shown, shown
    assert "Skipped(path='x49.png', reason='empty file')] (50)" in shown, shown
    small = AddReport(added=[1, 2], skipped=[Skipped("a.png", "empty file")])
    assert repr(small) == "AddReport(added=[1, 2], skipped=[Skipped(path='a.png', reason='empty file')])"
    rolled = RollbackReport("a", 10**6, list(range(10**6)), 0, [], 0, False, 5)
    assert len(repr(rolled)) < 600 and "removed_added=1000000" in repr(rolled), repr(rolled)[:300]
    x = np.random.default_rng(0).normal(size=(2000, 8)).astype(np.float32)
    with Memory.create(tmp_path / "mem", encoder=None, dim=8) as memory:
        assert len(repr(memory.add_vectors(x, "a", allow_duplicates=False))) < 600


def test_decisions_show_in_a_notebook_without_every_class(tmp_path):
    """A Decision's repr held every class's prototype distance and score and every
    neighbour in full: ~40 KB per decision over 1,000 classes, so a notebook cell ending in
    a list of decisions flooded the page. It now shows the label, the confidence, whether
    it abstained, the best few scores and how many neighbours voted; every value stays in
    the attributes and in to_dict()."""
    from conftest import unit_vectors

    from vismem.sklearn import MemoryClassifier

    x = unit_vectors(2000, 16)
    labels = [f"class{i % 1000}" for i in range(2000)]
    with Memory.create(tmp_path / "mem", encoder=None, dim=16) as memory:
        memory.add_vectors(x, labels)
        decisions = memory.classify_vectors(x[:20], vote="hybrid", k=50)
        explained = memory.classify_vectors(x[:1], counterfactual=True)[0]
    first = decisions[0]
    shown = repr(first)
    assert len(shown) < 800, shown[:1000]
    assert shown.startswith(f"Decision(label={first.label!r}, confidence={first.confidence!r}, "), shown
    assert "abstained=False" in shown and "neighbors=[...] (50)" in shown, shown
    best = list(first.scores.items())[:3]
    assert "scores={" + ", ".join(f"{k!r}: {v!r}" for k, v in best) + ", ...} (" in shown, shown
    assert "prototypes={" in shown and "...} (1,000)" in shown, shown
    assert len(repr(decisions)) < 20 * 800
    assert len(first.prototypes) == 1000 and len(first.neighbors) == 50  # the data stays whole
    whole = first.to_dict()
    assert len(whole["prototypes"]) == 1000 and len(whole["neighbors"]) == 50 and len(whole["scores"]) > 6
    assert len(repr(explained)) < 1200 and "counterfactual=Counterfactual(label=" in repr(explained), repr(explained)
    model = MemoryClassifier().fit(x, labels)
    explanation = model.explain(x[:1])[0]
    assert len(repr(explanation)) < 1200 and repr(explanation).startswith("Explanation(label="), repr(explanation)


def test_a_missing_item_is_not_found_however_it_is_read(tmp_path, digits):
    """`get` raised for an id the memory does not hold, `thumbnail` returned None, as it
    does for an item that has no thumbnail: a caller could not tell a typo'd id from an
    item added as a vector. Both now raise ItemNotFoundError (an InvalidInputError, as
    before); None means only "this item has none"; bulk `items` still leaves missing ids
    out."""
    from conftest import png_bytes, unit_vectors

    from vismem import ItemNotFoundError
    from vismem.explain import explanation_sheet

    images, _ = digits
    with Memory.create(tmp_path / "mem", encoder="pixels") as memory:
        (image_item,) = memory.add_image_bytes([("a.png", png_bytes(images[0]))], label="a", source="s").added
        (vector_item,) = memory.add_vectors(unit_vectors(1, memory.dim), "b")
        (gone,) = memory.add_vectors(unit_vectors(1, memory.dim, seed=1), "b")
        memory.remove([gone])
        assert memory.thumbnail(image_item)[:2] == b"\xff\xd8"
        assert memory.thumbnail(vector_item) is None and memory.get(vector_item).label == "b"
        for missing in (gone, 999, 0, -1, 2**70):
            for read in (memory.get, memory.thumbnail):
                with pytest.raises(ItemNotFoundError, match=f"^no item with id {missing}$"):
                    read(missing)
        assert issubclass(ItemNotFoundError, InvalidInputError)
        with pytest.raises(InvalidInputError, match="item ids are integers, got bool True"):
            memory.thumbnail(True)
        assert [item.id for item in memory.items([999, vector_item, gone])] == [vector_item]
        # an explanation sheet drawn after a neighbour is removed: a blank tile for it
        decision = memory.classify_vectors(unit_vectors(1, memory.dim, seed=2), k=2)[0]
        memory.remove([decision.neighbors[0].id])
        assert explanation_sheet(decision, memory.thumbnail).size[0] > 0


def test_pickling_a_memory_says_to_send_its_location(tmp_path):
    """pickle (multiprocessing, joblib, copy.deepcopy) said `cannot pickle 'sqlite3.Connection'
    object`: true, but naming neither the Memory nor what to do."""
    import copy
    import pickle

    with Memory.create(tmp_path / "mem", encoder=None, dim=8) as memory:
        memory.add_vectors(np.eye(8, dtype=np.float32)[:3], "cat")
        for send in (pickle.dumps, copy.deepcopy, copy.copy):
            with pytest.raises(TypeError, match=r"cannot pickle a Memory \(memory at .*mem holds an open database\): "
                                                r"send its location and Memory\.open\(location\) it there"):
                send(memory)
        assert len(memory) == 3  # still open and usable


NFC, NFD = "Caf\u00e9", "Cafe\u0301"  # print alike: one character é, or e and a combining accent


def _image(path: Path, colour: tuple[int, int, int]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (24, 16), colour).save(path)
    return path


def test_a_label_or_source_in_nfd_is_kept_in_nfc_and_joins_the_label_typed(tmp_path):
    """A folder copied from a Mac names `Café` in NFD; a label typed is NFC. They were two
    labels printing the same: every label and source is now kept in NFC, however it came."""
    memdir = tmp_path / "mem"
    run_cli("create", memdir, "--encoder", "pixels", check=True)
    run_cli("add", memdir, _image(tmp_path / "mac" / NFD / "a.png", (200, 20, 20)).parent.parent,
            "--source", f"mac-{NFD}", check=True)
    run_cli("add", memdir, _image(tmp_path / "b.png", (20, 200, 20)), "--label", NFC, check=True)
    with Memory.open(memdir) as memory:
        assert memory.class_counts() == {NFC: 2}
        assert [item.source for item in memory.items(memory.ids())] == [f"mac-{NFC}", str(tmp_path / "b.png")]
        memory.add_vectors(memory.store.vectors([1])[1] * -1, NFD, sources="vectors")
        memory.relabel([2], f"{NFD}!")
        assert [item.label for item in memory.items(memory.ids())] == [NFC, f"{NFC}!", NFC]


def test_a_filter_finds_labels_and_sources_a_memory_kept_in_nfd_from_before(tmp_path):
    """A memory written before labels were made NFC may hold them in NFD: a filter typed in
    either form finds them (its restriction is reported once, in NFC), and `remove --label`
    typed in NFC removes them. Relabelling migrates them to NFC."""
    import sqlite3

    from vismem.store import DB_NAME

    memdir = tmp_path / "mem"
    with Memory.create(memdir, encoder=None, dim=4) as memory:
        memory.add_vectors(np.eye(4, dtype=np.float32), [NFC, NFC, "tea", "tea"], sources=["s", "s", NFC, "s"])
    db = sqlite3.connect(memdir / DB_NAME)  # as an older vismem kept them
    with db:
        db.execute("UPDATE items SET label = ? WHERE label = ?", (NFD, NFC))
        db.execute("UPDATE items SET source = ? WHERE source = ?", (NFD, NFC))
    db.close()
    with Memory.open(memdir) as memory:
        assert memory.class_counts() == {NFD: 2, "tea": 2}
        for typed in (NFC, NFD):
            assert memory.ids(labels=[typed]) == [1, 2]
            assert memory.ids(sources=[typed]) == [3]
        decision = memory.classify_vectors(np.eye(4, dtype=np.float32)[:1], labels=[NFC], k=1)[0]
        assert (decision.label, decision.restriction) == (NFD, {"labels": [NFC]})
        memory.relabel(memory.ids(labels=[NFC]), NFC)
        assert memory.class_counts() == {NFC: 2, "tea": 2}
        memory.relabel([1], NFD)  # kept as NFC, as every label given
        memory.add_vectors(-np.eye(4, dtype=np.float32)[:1], "tea", sources=NFD)
    db = sqlite3.connect(memdir / DB_NAME)
    with db:
        db.execute("UPDATE items SET label = ? WHERE label = ?", (NFD, NFC))
    db.close()
    removed = run_cli("remove", memdir, "--label", NFC, "--json", check=True)
    assert json_lines(removed)[0]["ids"] == [1, 2]
    with Memory.open(memdir) as memory:
        assert memory.ids(sources=[NFD]) == [3, 5] and memory.class_counts() == {"tea": 3}


def test_add_refuses_metadata_the_add_measures_itself(tmp_path):
    """`--meta width=5` stood in for every image's measured width. Keys the add sets from
    each image (width, height; and name for an upload) are refused, nothing added."""
    memdir = tmp_path / "mem"
    image = _image(tmp_path / "a.png", (20, 20, 200))
    run_cli("create", memdir, "--encoder", "pixels", check=True)
    refused = run_cli("add", memdir, image, "--label", "x", "--meta", "width=5", "--meta", "height=1")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr
    assert "metadata keys 'width', 'height' are set from each image (width, height are reserved)" \
        in " ".join(refused.stderr.split()), refused.stderr
    with Memory.open(memdir) as memory:
        assert len(memory) == 0
        with pytest.raises(InvalidInputError, match="'height' is set from each image"):
            memory.add_images([image], label="x", meta={"height": 3})
        with pytest.raises(InvalidInputError, match="'name' is set from each image"):
            memory._ingestor().add_prepared([], np.zeros((0, memory.dim), np.float32), source="s",
                                            meta={"name": "given"})
        assert len(memory) == 0
        memory.add_images([image], label="x", meta={"photo_width": 5})
        assert memory.get(1).meta == {"width": 24, "height": 16, "photo_width": 5}


def test_remove_names_every_where_condition_as_typed(tmp_path):
    memdir = tmp_path / "mem"
    with Memory.create(memdir, encoder=None, dim=4) as memory:
        memory.add_vectors(np.eye(4, dtype=np.float32)[:2], "a", metas=[{"k": 1}, {"k": 0}])
    refused = run_cli("remove", memdir, "--where", "k=1", "--where", "k=0")
    one_line_error(refused, "error: no item matches --where k=1 --where k=0 (all must hold); nothing changed")


def test_boost_refuses_a_factor_of_0_which_blocks_and_says_weakened_below_1(tmp_path):
    """`boost --factor 0` said "boosted 1 item (weight 0)": the items stopped voting."""
    memdir = tmp_path / "mem"
    with Memory.create(memdir, encoder=None, dim=4) as memory:
        memory.add_vectors(np.eye(4, dtype=np.float32)[:2], "a")
    for factor in ("0", "-0", "-1"):
        refused = run_cli("boost", memdir, "--id", "1", "--factor", factor)
        assert refused.returncode == 2, refused.stderr
        assert "is not above 0" in refused.stderr
    assert "to stop them voting, `vismem block`" in " ".join(run_cli("boost", "--help", check=True).stdout.split())
    with Memory.open(memdir) as memory:
        assert memory.get(1).weight == 1.0
    assert run_cli("boost", memdir, "--id", "1", "--factor", "0.5", check=True).stdout \
        == "weakened 1 item (weight 0.5)\n"
    assert run_cli("boost", memdir, "--id", "1", "--factor", "3", check=True).stdout == "boosted 1 item (weight 3)\n"


def test_a_restriction_to_labels_that_are_not_strings_is_refused_not_empty(tmp_path):
    """`search(q, labels=[3])` on digits labelled "3" matched nothing and answered empty
    lists without a word (so did classify, ids, page and remove(label=3)); labels are
    kept as strings, so a number is refused, naming the fix."""
    x = np.random.default_rng(7).normal(size=(4, 8)).astype(np.float32)
    with Memory.create(tmp_path / "mem", encoder=None, dim=8) as memory:
        memory.add_vectors(x, ["3", "3", "5", "5"], sources="cam")
        for read in (lambda: memory.search(x, k=2, labels=[3]), lambda: memory.classify_vectors(x, labels=[3]),
                     lambda: memory.ids(labels=[np.int64(3)]), lambda: memory.page(labels=[3]),
                     lambda: memory.remove(label=3)):
            with pytest.raises(InvalidInputError, match=re.escape("give [str(x) for x in labels]")):
                read()
        with pytest.raises(InvalidInputError, match="sources to restrict to are strings, .* got NoneType None"):
            memory.search(x, k=2, sources=[None])
        assert len(memory) == 4
        assert [h.label for h in memory.search(x[:1], k=2, labels=[np.str_("3")])[0]] == ["3", "3"]


def test_labels_that_are_not_strings_are_refused_naming_the_conversion(tmp_path):
    """add_vectors(X, y) with scikit-learn's integer targets said only "labels must be
    strings"; one numpy integer as the label of every row failed with a TypeError from
    list()."""
    x = np.random.default_rng(8).normal(size=(3, 8)).astype(np.float32)
    with Memory.create(tmp_path / "mem", encoder=None, dim=8) as memory:
        for labels in (np.array([0, 1, 2]), np.int64(3), None, 3):
            with pytest.raises(InvalidInputError, match=re.escape("labels.astype(str) for an array")):
                memory.add_vectors(x, labels)
        assert len(memory) == 0
        assert [i.label for i in memory.items(memory.add_vectors(x, np.array([0, 1, 2]).astype(str)))] == \
            ["0", "1", "2"]


def test_no_images_at_all_is_refused_naming_the_call(tmp_path):
    """add_images(None), classify(None) and embed_images(3) failed with a TypeError from
    list()."""
    with Memory.create(tmp_path / "mem", encoder="pixels") as memory:
        for call, taker in ((memory.add_images, "add_images"), (memory.classify, "classify"),
                            (memory.embed_images, "embed_images")):
            for given in (None, 3):
                with pytest.raises(InvalidInputError, match=f"^{taker} takes a list of images, or one alone, got "):
                    call(given)


def test_vectors_that_are_no_array_say_what_was_given(tmp_path):
    """add_vectors([], []) said "got shape (1, 0)" (an empty list was one row of no values),
    None or a generator "got shape ()", and rows of unequal lengths raised numpy's ValueError;
    search, classify_vectors and tune_index alike."""
    from vismem.errors import BadVectorsError

    with Memory.create(tmp_path / "mem", encoder=None, dim=4) as memory:
        memory.add_vectors(np.eye(4, dtype=np.float32), ["a", "b", "c", "d"])
        assert memory.add_vectors([], []) == [] and memory.search([], k=2) == [] \
            and memory.classify_vectors([]) == []
        for read in (lambda v: memory.add_vectors(v, "a"), memory.search, memory.classify_vectors,
                     memory.tune_index):
            for given, says in (((row for row in np.eye(4)), "got generator"), ({"a": 1}, "got dict"),
                                ([[1, 2, 3, 4], [1]], "rows of one length")):
                with pytest.raises(BadVectorsError, match=says):
                    read(given)
        with pytest.raises(BadVectorsError, match=re.escape("an array (n, 4) or a list of rows, got NoneType")):
            memory.search(None)
        assert len(memory) == 4


def test_add_image_bytes_given_other_than_name_bytes_pairs_says_what_it_takes(tmp_path, digits):
    """add_image_bytes([data]) failed while unpacking with "too many values to unpack",
    add_image_bytes(data) with "cannot unpack non-iterable int object"."""
    data = io.BytesIO()
    digits[0][0].save(data, format="PNG")
    data = data.getvalue()
    with Memory.create(tmp_path / "mem", encoder="pixels") as memory:
        for given, says in (([data], "entry 0 is bytes"), (data, "got bytes"),
                            (("a.png", data), "entry 0 is str"), ([("a.png", "b.png")], r"a tuple of \(str, str\)"),
                            (None, "got NoneType")):
            with pytest.raises(InvalidInputError, match=r"takes a list of \(name, bytes\) pairs.*" + says):
                memory.add_image_bytes(given, label="0", source="upload")
        assert len(memory) == 0
        assert len(memory.add_image_bytes([("a.png", data)], label="0", source="upload").added) == 1


def test_a_location_that_is_no_path_is_refused_naming_what_it_is(tmp_path):
    """Memory.create(None, ...) and Memory.open(None) failed inside pathlib with a TypeError
    (a notebook's unset variable); so did a number or bytes."""
    with Memory.create(tmp_path / "mem", encoder=None, dim=4) as memory:
        memory.add_vectors(np.eye(4, dtype=np.float32), "a")
        memory.export_parquet(tmp_path / "mem.parquet")
    for given in (None, 3, b"mem"):
        says = re.escape(f"a memory's location is a folder (a str or a Path) or a URI, got {type(given).__name__}")
        for call in (lambda where: Memory.create(where, encoder=None, dim=4), Memory.open,
                     lambda where: Memory.import_parquet(tmp_path / "mem.parquet", where)):
            with pytest.raises(InvalidInputError, match=says):
                call(given)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mem", "mem.parquet"]


@pytest.mark.parametrize("weight, says", [("2", "got str '2'"), (True, "got bool True"), ("abc", "got str 'abc'"),
                                          ([1], "got list [1]")])
def test_a_weight_that_is_not_a_number_is_refused_not_read_as_one(tmp_path, weight, says):
    """set_weight(ids, "2") set weight 2.0 and set_weight(ids, True) 1.0 (float() read them),
    "abc" raised float's ValueError; MemoryClassifier.set_weight raised numpy's TypeError."""
    from vismem.sklearn import MemoryClassifier

    x = np.eye(4, dtype=np.float32)
    with Memory.create(tmp_path / "mem", encoder=None, dim=4) as memory:
        ids = memory.add_vectors(x, ["a", "a", "b", "b"])
        for edit in (lambda: memory.set_weight(ids[:1], weight), lambda: memory.update(ids[:1], weight=weight),
                     lambda: MemoryClassifier(k=1).fit(x, ["a", "a", "b", "b"]).set_weight([0], weight)):
            with pytest.raises(InvalidInputError, match=re.escape(f"weight must be a finite number from 0 to "
                                                                  f"1,000,000, {says}")):
                edit()
        assert [item.weight for item in memory.items(ids)] == [1.0] * 4
        assert memory.set_weight(ids[:1], np.float32(2.0)) == ids[:1] and memory.get(ids[0]).weight == 2.0


def test_a_decision_s_restriction_is_documented_as_it_is_made(tmp_path):
    """Decision's docstring said the restriction recorded labels/sources, typed as lists of
    strings; it records `where` too, as a mapping."""
    import typing

    from vismem import Decision

    with Memory.create(tmp_path / "mem", encoder=None, dim=4) as memory:
        memory.add_vectors(np.eye(4, dtype=np.float32), ["a", "a", "b", "b"], metas={"cam": 1})
        [decision] = memory.classify_vectors(np.eye(4, dtype=np.float32)[:1], labels=["a"], where={"cam": 1})
    assert decision.restriction == {"labels": ["a"], "where": {"cam": 1}}
    assert "`where` (a mapping)" in " ".join((Decision.__doc__ or "").split())
    assert typing.get_type_hints(Decision)["restriction"] == dict[str, typing.Any] | None


def test_an_empty_memdir_is_bad_usage_not_the_current_folder(tmp_path, monkeypatch):
    """MEMDIR "" (an unset variable: `vismem create "$MEM"`) was the current folder: `create`
    made a memory there, and every other command read or edited one found there. It is bad
    usage now (exit 2) that says what to give, and nothing is made or changed."""
    monkeypatch.chdir(tmp_path)
    for args in [("create", "", "--encoder", "pixels"), ("create", "", "--encoder", "none", "--dim", "8")]:
        result = run_cli(*args)
        assert result.returncode == 2 and "an empty path names no file" in " ".join(result.stderr.split()), result
        assert list(tmp_path.iterdir()) == [], args
    run_cli("create", ".", "--encoder", "none", "--dim", "8", check=True)  # "." still names it
    for args in [("info", ""), ("remove", "", "--label", "a"), ("checkpoint", "", "start"), ("compact", "")]:
        result = run_cli(*args)
        assert result.returncode == 2 and "an empty path names no file" in " ".join(result.stderr.split()), result
    assert run_cli("info", ".", check=True).returncode == 0

"""The Parquet export format on its own: rows in, the same rows out, in bounded batches."""

from __future__ import annotations

import base64
import errno
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import json_lines, unit_vectors
from vismem import Memory
from vismem.errors import OutputExistsError, VismemError
from vismem.transfer import Rows, read_header, read_parquet, write_parquet
from vismem.transform import FeatureTransform, TransformSpec

HEADER = {"encoder": {"name": "efficientnet_lite0", "id": "lite0@abc", "dim": 16, "config": None,
                      "weights_path": None},
          "settings": {"index": "auto", "vote": {"k": 7}}}


def make_rows(start: int, n: int, dim: int = 16, thumbnails: bool = False) -> Rows:
    ids = np.arange(start, start + n, dtype=np.int64) * 3 + 1   # gaps, as after removals
    return Rows(
        ids=ids,
        vectors=unit_vectors(n, dim, seed=start),
        labels=[["cat", "Dög \"quoted\"", "日本"][i % 3] for i in range(n)],
        sources=[f"src-{i % 4}" for i in range(n)],
        paths=[None if i % 5 == 0 else f"/photos/{i}.jpg" for i in range(n)],
        content_hashes=[None if i % 7 == 0 else f"{i:064x}" for i in range(start, start + n)],
        weights=np.array([0.0 if i % 6 == 0 else 1.0 + i / 10 for i in range(n)]),
        metas=[{"camera": "phone", "n": i, "tags": ["a", {"b": None}]} if i % 2 else {} for i in range(n)],
        added_at=1.7e9 + np.arange(n) / 3,
        relabelled_from=[None if i % 3 else "dog" for i in range(n)],
        prune_counts=np.arange(n, dtype=np.int64) % 4,
        thumbnails=[bytes([i % 256]) * (i % 9) if i % 4 else None for i in range(n)] if thumbnails else None,
    )


def concat(parts: list[Rows]) -> dict:
    out: dict = {}
    for name in Rows.__dataclass_fields__:
        values = [getattr(p, name) for p in parts]
        if values[0] is None:
            out[name] = None
        elif isinstance(values[0], np.ndarray):
            out[name] = np.concatenate(values)
        else:
            out[name] = [v for part in values for v in part]
    return out


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        if isinstance(a[name], np.ndarray):
            assert a[name].dtype == b[name].dtype, name
            assert np.array_equal(a[name], b[name]), name
        else:
            assert a[name] == b[name], name


@pytest.mark.parametrize("thumbnails", [False, True])
def test_rows_round_trip_exactly_across_batch_sizes(tmp_path, thumbnails):
    batches = [make_rows(0, 50, thumbnails=thumbnails), make_rows(50, 0, thumbnails=thumbnails),
               make_rows(50, 33, thumbnails=thumbnails)]
    path = tmp_path / "m.parquet"
    assert write_parquet(path, 16, HEADER, iter(batches), thumbnails=thumbnails) == 83
    header, rows = read_header(path)
    assert rows == 83
    assert header["encoder"] == HEADER["encoder"] and header["settings"] == HEADER["settings"]
    assert header["dim"] == 16 and header["thumbnails"] is thumbnails
    for size in (1, 10, 1000):   # reading in any batch size gives back the same rows
        back = list(read_parquet(path, batch_size=size))
        assert max(len(b) for b in back) <= size
        assert_same(concat(back), concat(batches))
    # Vectors are the very float32 bits that went in.
    back_vectors = np.concatenate([b.vectors for b in read_parquet(path)])
    assert back_vectors.tobytes() == np.concatenate([b.vectors for b in batches]).tobytes()


def test_other_parquet_readers_see_plain_columns(tmp_path):
    path = tmp_path / "m.parquet"
    write_parquet(path, 16, HEADER, [make_rows(0, 12)])
    table = pq.read_table(path)
    assert table.column("vector").type == pa.list_(pa.float32(), 16)
    assert json.loads(table.column("meta")[1].as_py()) == {"camera": "phone", "n": 1, "tags": ["a", {"b": None}]}
    assert "thumbnail" not in table.column_names


def test_an_interrupted_export_leaves_no_file(tmp_path):
    path = tmp_path / "m.parquet"

    def failing():
        yield make_rows(0, 5)
        raise RuntimeError("store went away")

    with pytest.raises(RuntimeError):
        write_parquet(path, 16, HEADER, failing())
    assert list(tmp_path.iterdir()) == []


def test_wrong_dimension_is_refused(tmp_path):
    with pytest.raises(VismemError, match="16-d"):
        write_parquet(tmp_path / "m.parquet", 16, HEADER, [make_rows(0, 4, dim=8)])


def test_files_that_are_not_exports_are_refused_with_the_fix(tmp_path):
    plain = tmp_path / "plain.parquet"
    pq.write_table(pa.table({"x": [1, 2]}), plain)
    with pytest.raises(VismemError, match="vismem export"):
        read_header(plain)
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"not parquet at all")
    with pytest.raises(VismemError, match="cannot read"):
        list(read_parquet(junk))
    newer = tmp_path / "newer.parquet"
    write_parquet(newer, 16, {**HEADER, "version": 99}, [make_rows(0, 2)])
    with pytest.raises(VismemError, match="upgrade vismem"):
        read_header(newer)


def test_an_import_of_a_file_not_there_or_a_folder_says_so_as_add_does(tmp_path, cli):
    """`import` of a missing file said `cannot read X as Parquet: [Errno 2] Failed to open
    local file 'X'. Detail: ... ; give a file written by vismem export` as a plain
    VismemError: pyarrow's words, and a fix that was not the fix. It is now the
    InvalidInputError `add` gives a missing path, `no such file or folder: X`; a folder
    says it is one; and nothing is made at the destination."""
    import re

    from vismem.errors import InvalidInputError

    missing, folder, new = tmp_path / "nope.parquet", tmp_path / "a-folder", tmp_path / "new"
    folder.mkdir()
    Memory.create(tmp_path / "mem", encoder=None, dim=4).close()
    add_said = cli("add", tmp_path / "mem", missing, "--label", "a").stderr.strip()
    assert add_said == f"error: no such file or folder: {missing}", add_said
    for path, said in ((missing, f"no such file or folder: {missing}"),
                       (folder, f"{folder} is a folder, not a file: give a file written by `vismem export`")):
        with pytest.raises(InvalidInputError, match="^" + re.escape(said) + "$"):
            Memory.import_parquet(path, new)
        with pytest.raises(InvalidInputError, match="^" + re.escape(said) + "$"):
            read_header(path)
        answer = cli("import", path, new)
        assert (answer.returncode, answer.stderr.strip()) == (1, f"error: {said}"), answer.stderr
        assert not new.exists()


def test_an_import_of_a_named_pipe_is_refused_at_once(tmp_path, cli_process):
    """The check before pyarrow opened a named pipe without blocking, found it readable, and
    pyarrow's own open then waited for a writer that never came: `vismem import FIFO` hung
    for good, deaf to Ctrl-C and SIGTERM (a signal handler waits for the open). It is now
    refused as no regular file, and nothing is made."""
    import re

    from vismem.errors import InvalidInputError

    pipe, new = tmp_path / "pipe", tmp_path / "new"
    os.mkfifo(pipe)
    said = f"{pipe} is not a regular file (a pipe, socket or device): give a file written by `vismem export`"
    answer = cli_process("import", pipe, new, timeout=120)  # first, in a process: a hang fails, not waits
    assert (answer.returncode, answer.stderr.strip()) == (1, f"error: {said}"), answer.stderr
    assert not new.exists()
    with pytest.raises(InvalidInputError, match="^" + re.escape(said) + "$"):
        read_header(pipe)


def test_an_import_of_a_file_it_may_not_read_names_the_file(tmp_path):
    """chmod 000 on an export: `cannot read X as Parquet: [Errno 13] Failed to open local
    file...; give a file written by vismem export`, though it is one. It now says that
    the file cannot be read, and why, as an InvalidInputError naming it. (The CLI's
    argument check refuses it first, as for any unreadable input: exit 2, naming it.)"""
    import subprocess
    import sys

    from conftest import run_cli_unprivileged, unprivileged

    export = tmp_path / "m.parquet"
    write_parquet(export, 16, HEADER, [make_rows(0, 2)])
    export.chmod(0)
    script = ("import sys\nfrom vismem import Memory\nfrom vismem.errors import InvalidInputError\n"
              "try:\n    Memory.import_parquet(sys.argv[1], sys.argv[2])\n"
              "except InvalidInputError as exc:\n    print(exc)\n")
    run = subprocess.run(unprivileged([sys.executable, "-c", script, str(export), str(tmp_path / "new")]),
                         capture_output=True, text=True, timeout=300)
    assert run.stdout.strip() == f"cannot read {export}: permission denied", run.stdout + run.stderr
    answer = run_cli_unprivileged("import", export, tmp_path / "new")
    assert answer.returncode == 2 and str(export) in answer.stderr and "not readable" in answer.stderr, answer.stderr
    assert not (tmp_path / "new").exists()


# ---- whole memories through an export ------------------------------------------------------

def _without_ids(value):
    """Decisions as dicts, without item ids (an import gives new ones)."""
    if isinstance(value, dict):
        return {k: _without_ids(v) for k, v in value.items() if k != "id"}
    if isinstance(value, list):
        return [_without_ids(v) for v in value]
    return value


def _decisions(memory, queries, **options):
    """Every decision of images, without item ids."""
    return _without_ids([d.to_dict() for d in memory.classify(queries, **options)])


def test_an_import_searches_through_the_same_fitted_transform_and_abstains_alike(digit_folders, tmp_path, cli):
    """A memory tuned to a whitening and calibrated: its import decides the same, abstention
    included (the fitted transform was lost: the import searched raw vectors and refused to
    abstain, "calibrated before its feature transform changed")."""
    from vismem import Memory

    train, test = digit_folders
    queries = sorted(test.glob("*/*.png"))[::3]
    with Memory.create(tmp_path / "origin", encoder="pixels") as origin:
        ids = origin.add_images([train]).added
        origin.relabel(ids[:2], "odd")
        origin.set_weight(ids[2:3], 0.0)
        origin.set_transform("whiten")
    cli("calibrate", tmp_path / "origin", check=True)
    with Memory.open(tmp_path / "origin") as origin:
        expected = _decisions(origin, queries, abstain=True)
        fingerprint = origin.transform.fingerprint
        origin.export_parquet(tmp_path / "m.parquet")
    with Memory.import_parquet(tmp_path / "m.parquet", tmp_path / "copy") as copy:
        assert copy.transform.fingerprint == fingerprint
        assert _decisions(copy, queries, abstain=True) == expected


def test_an_import_knows_how_much_changed_since_calibration(digit_folders, tmp_path, cli):
    """The calibration records the newest item id it saw; an import renumbers the items, so
    that id must follow them, or items added since calibrating count as old ones."""
    from vismem import Memory

    train, _ = digit_folders
    folders = sorted(p for p in train.iterdir())
    with Memory.create(tmp_path / "origin", encoder="pixels") as origin:
        first = [i for f in folders[:6] for i in origin.add_images(f, label=f.name).added]
        origin.remove(first[:10])  # gaps in the ids, as after any removal
    cli("calibrate", tmp_path / "origin", check=True)
    with Memory.open(tmp_path / "origin") as origin:
        for folder in folders[6:]:
            origin.add_images(folder, label=folder.name)
        changed = origin.calibration_changed()
        origin.export_parquet(tmp_path / "m.parquet")
    assert changed and changed > 0.5  # positive control: 32 added to the 38 calibrated
    with Memory.import_parquet(tmp_path / "m.parquet", tmp_path / "copy") as copy:
        assert copy.calibration_changed() == changed


@pytest.mark.parametrize("damage", ["one bit", "a run of bytes"])
def test_a_damaged_export_is_refused_and_leaves_nothing(tmp_path, cli, damage):
    """A bit flipped in the vectors' pages imported wrong vectors without a word; a run of
    damaged bytes ended in pyarrow's traceback. Both: `error: ...`, exit 1, no DEST."""
    from vismem import Memory

    with Memory.create(tmp_path / "origin", encoder=None, dim=64) as origin:
        origin.add_vectors(unit_vectors(300, 64, seed=2), [str(i % 3) for i in range(300)])
        origin.export_parquet(tmp_path / "m.parquet")
    column = pq.ParquetFile(tmp_path / "m.parquet").metadata.row_group(0).column(1)
    assert column.path_in_schema == "vector.list.element"
    data = bytearray((tmp_path / "m.parquet").read_bytes())
    start = column.dictionary_page_offset if column.has_dictionary_page else column.data_page_offset
    middle = start + column.total_compressed_size // 2
    for at in [middle] if damage == "one bit" else range(middle, middle + 200):
        data[at] ^= 0x01 if damage == "one bit" else 0x55
    (tmp_path / "bad.parquet").write_bytes(bytes(data))
    result = cli("import", tmp_path / "bad.parquet", tmp_path / "copy", "--json")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.strip().splitlines()[-1].startswith("error: ") and "damaged" in result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.parquet", "m.parquet", "origin"]


def test_an_export_from_a_newer_vismem_or_with_a_broken_header_is_refused_with_the_fix(tmp_path):
    """A setting this vismem does not know (a newer vismem's) ended in a TypeError traceback."""
    from vismem.transfer import import_store

    newer = tmp_path / "newer.parquet"
    write_parquet(newer, 16, {**HEADER, "settings": {**HEADER["settings"], "newer_setting": 3}}, [make_rows(0, 2)])
    with pytest.raises(VismemError, match="does not know.*newer_setting.*upgrade vismem"):
        import_store(newer, tmp_path / "copy")
    table = pq.read_table(newer)
    broken = tmp_path / "broken.parquet"
    pq.write_table(table.replace_schema_metadata({b"vismem": b'{"format": "vismem-memory", "vers'}), broken)
    with pytest.raises(VismemError, match="damaged"):
        import_store(broken, tmp_path / "copy")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.parquet", "newer.parquet"]


@pytest.mark.parametrize("header", [b"[1, 2]", b'"vismem-memory"', b"null",
                                    b'{"format": "vismem-memory", "version": "1", "encoder": {}, "settings": {}}'])
def test_an_export_whose_header_is_json_of_another_shape_is_refused_as_damaged(tmp_path, cli, header):
    """A header that was JSON but not an object ended in an AttributeError traceback; a
    version given as text was "version 1; this vismem reads up to version 1: upgrade vismem"."""
    write_parquet(tmp_path / "m.parquet", 16, HEADER, [make_rows(0, 4)])
    table = pq.read_table(tmp_path / "m.parquet")
    pq.write_table(table.replace_schema_metadata({b"vismem": header}), tmp_path / "bad.parquet")
    result = cli("import", tmp_path / "bad.parquet", tmp_path / "copy")
    assert result.returncode == 1 and result.stdout == ""
    assert "Traceback" not in result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("error: ") and "is damaged" in line and "upgrade" not in line
    assert not (tmp_path / "copy").exists()


def _with_column(table, name, values):
    return table.set_column(table.schema.get_field_index(name), name, values)


@pytest.mark.parametrize("rewrite, why", [
    (lambda t: t.drop_columns(["label"]), "it has no `label` column"),
    (lambda t: _with_column(t, "vector", pa.ListArray.from_arrays(
        pa.array(np.arange(0, 16 * 4 + 1, 16, dtype=np.int32)), t.column("vector").combine_chunks().flatten())),
     "its `vector` column holds list<"),
    (lambda t: _with_column(t, "id", pa.array(["1", "4", "7", "10"])), "its `id` column holds string, not integers"),
    (lambda t: _with_column(t, "weight", pa.array([None, 1.0, 1.0, 1.0], pa.float64())),
     "its `weight` column has empty values"),
])
def test_an_export_whose_columns_another_tool_changed_is_refused_as_damaged(tmp_path, cli, rewrite, why):
    """A file with the vismem header but a column missing, of another type or with empty
    values where the format has none ended in a KeyError or AttributeError traceback (or
    imported string ids). Now: `error: ... is damaged (...)` naming the column, exit 1,
    nothing made."""
    write_parquet(tmp_path / "m.parquet", 16, HEADER, [make_rows(0, 4)])
    table = pq.read_table(tmp_path / "m.parquet")
    pq.write_table(rewrite(table).replace_schema_metadata(table.schema.metadata), tmp_path / "bad.parquet")
    result = cli("import", tmp_path / "bad.parquet", tmp_path / "copy")
    assert result.returncode == 1 and result.stdout == ""
    assert "Traceback" not in result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("error: ") and "is damaged" in line and why in line
    assert not (tmp_path / "copy").exists()


@pytest.mark.parametrize("column, value, why", [
    ("weight", -1.0, "has -1.0 as its weight"), ("weight", float("nan"), "has nan as its weight"),
    ("prune_count", -2, "has -2 as its pruning count"), ("added_at", float("nan"), "has nan as its time added"),
])
def test_an_export_with_a_value_no_memory_holds_is_refused_and_leaves_nothing(tmp_path, cli, column, value, why):
    """A negative weight or pruning count imported as it was (a vote turned around, which
    `set_weight` and `set_prune_counts` refuse), and a NaN weight or time ended in SQLite's
    IntegrityError traceback. Now: `error: ... is damaged (...)` naming the item, exit 1."""
    rows = make_rows(0, 4)
    getattr(rows, {"weight": "weights", "prune_count": "prune_counts"}.get(column, column))[2] = value
    write_parquet(tmp_path / "bad.parquet", 16, HEADER, [rows])
    result = cli("import", tmp_path / "bad.parquet", tmp_path / "copy")
    assert result.returncode == 1 and result.stdout == ""
    assert "Traceback" not in result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("error: ") and "is damaged" in line and f"item {rows.ids[2]} {why}" in line
    assert not (tmp_path / "copy").exists()


def test_an_export_rewritten_with_wider_text_columns_still_imports(tmp_path):
    """Another Parquet writer may store text as large_string: the same values, so it imports."""
    from vismem import Memory

    write_parquet(tmp_path / "m.parquet", 16, HEADER, [make_rows(0, 4)])
    table = pq.read_table(tmp_path / "m.parquet")
    wider = _with_column(table, "label", table.column("label").cast(pa.large_string()))
    pq.write_table(wider.replace_schema_metadata(table.schema.metadata), tmp_path / "wider.parquet")
    with Memory.import_parquet(tmp_path / "wider.parquet", tmp_path / "copy") as memory:
        assert [i.label for i in memory.items(memory.ids())] == make_rows(0, 4).labels


def test_an_export_of_an_older_memory_with_an_all_zero_vector_still_imports(tmp_path):
    """Before vismem skipped uniform images, the pixels encoder stored them as zero vectors;
    the unit-length check on import (for damage) must not refuse such a memory."""
    from vismem.transfer import import_store

    rows = make_rows(0, 6)
    rows.vectors[2] = 0.0
    header = {**HEADER, "encoder": {**HEADER["encoder"], "name": None, "id": None}}
    write_parquet(tmp_path / "old.parquet", 16, header, [rows])
    store = import_store(tmp_path / "old.parquet", tmp_path / "copy")
    try:
        assert len(store) == 6
    finally:
        store.close()


def _digit_memory_tuned_then_grown(path):
    """A memory of sklearn's digits (64-d pixels), with gaps in its ids, whitened on its
    first 280 items and calibrated, then grown by 25 items (a refit would differ; the
    calibration still holds: under 10% changed); returns queries held out of it."""
    from sklearn.datasets import load_digits

    from vismem import Memory
    from vismem.curate import calibrate_memory

    x, y = load_digits(return_X_y=True)
    labels = [str(v) for v in y]
    with Memory.create(path, encoder=None, dim=64) as origin:
        ids = origin.add_vectors(x[:300], labels[:300])
        origin.remove(ids[::15])  # gaps: the import's new ids differ from these
        origin.update_settings(transform=TransformSpec("whiten", components=32, shrinkage=0.1))
        calibrate_memory(origin)
        origin.add_vectors(x[300:325], labels[300:325])
    return x[500:550]


def _without_fitted_transform(source, target):
    """The export as vismem wrote it before exports kept the fitted transform."""
    table = pq.read_table(source)
    header = json.loads(table.schema.metadata[b"vismem"])
    del header["fitted_transform"]
    pq.write_table(table.replace_schema_metadata({b"vismem": json.dumps(header)}), target)


def test_an_import_installs_the_exported_fit_so_it_decides_the_same_after_adds_since_tune(tmp_path, caplog):
    """Items added after `tune`: the import refitted the transform on all of them, so it
    searched a different space (another fingerprint, other neighbours) and had to be
    calibrated again. The export now carries the fit, and the import installs it."""
    from vismem import Memory
    from vismem.transform import fit_transform

    queries = _digit_memory_tuned_then_grown(tmp_path / "origin")
    with Memory.open(tmp_path / "origin") as origin:
        fingerprint = origin.transform.fingerprint
        refit = fit_transform(origin.store.vectors()[1], origin.settings.transform)
        expected = _decisions_of_vectors(origin, queries)
        status = origin.info()["transform"]
        calibrated = origin.calibration_changed()
        origin.export_parquet(tmp_path / "m.parquet")
    assert refit.fingerprint != fingerprint  # positive control: a refit differs
    assert status["changed_since"] > 0 and calibrated > 0
    with caplog.at_level("WARNING", logger="vismem"):
        copy = Memory.import_parquet(tmp_path / "m.parquet", tmp_path / "copy")
    with copy:
        assert not [r for r in caplog.records if "calibrate" in r.getMessage()]
        assert copy.transform.fingerprint == fingerprint
        assert _decisions_of_vectors(copy, queries) == expected
        found = copy.info()["transform"]
        for key in ("fingerprint", "fitted_items", "changed_since", "mean_drift", "retune"):
            assert found[key] == status[key], key
        assert copy.calibration_changed() == calibrated
    with Memory.open(tmp_path / "copy") as reopened:  # kept in its config, as a fit made there
        assert reopened.transform.fingerprint == fingerprint
        assert reopened.info()["transform"]["changed_since"] == status["changed_since"]


def _decisions_of_vectors(memory, queries):
    """`classify_vectors` decisions (label, scores, neighbours), abstention included, without item ids."""
    return _without_ids([d.to_dict() for d in memory.classify_vectors(queries, abstain=True)])


def test_an_export_without_the_fit_still_imports_refitted_and_says_to_calibrate(tmp_path, caplog):
    """An export written before exports kept the fit holds the transform's spec only: the
    import fits it on the items it brings, and as items were added after `tune`, that fit
    differs from the one the calibration was made through: the import says so (and what
    to run)."""
    from vismem import Memory
    from vismem.transform import fit_transform

    _digit_memory_tuned_then_grown(tmp_path / "origin")
    with Memory.open(tmp_path / "origin") as origin:
        fingerprint = origin.transform.fingerprint
        refit = fit_transform(origin.store.vectors()[1], origin.settings.transform)
        origin.export_parquet(tmp_path / "m.parquet")
    _without_fitted_transform(tmp_path / "m.parquet", tmp_path / "old.parquet")
    with caplog.at_level("WARNING", logger="vismem"):
        copy = Memory.import_parquet(tmp_path / "old.parquet", tmp_path / "copy")
    with copy:
        assert copy.transform.fingerprint == refit.fingerprint != fingerprint
        assert copy.info()["transform"]["changed_since"] == 0
    assert any("calibrate" in r.getMessage() and "refitted" in r.getMessage() for r in caplog.records)


def test_an_export_whose_fit_does_not_match_its_fingerprint_is_refused_and_leaves_nothing(tmp_path):
    """The import trusts the exported fit, so a fit altered after export (its arrays no
    longer those its fingerprint names) is refused rather than searched through."""
    from vismem import Memory

    with Memory.create(tmp_path / "origin", encoder=None, dim=16) as origin:
        origin.add_vectors(unit_vectors(30, 16, seed=3), [str(i % 3) for i in range(30)])
        origin.update_settings(transform=TransformSpec("center"))
        origin.export_parquet(tmp_path / "m.parquet")
    table = pq.read_table(tmp_path / "m.parquet")
    header = json.loads(table.schema.metadata[b"vismem"])
    header["fitted_transform"]["fitted"]["mean"] = base64.b64encode(np.zeros(16, "<f4").tobytes()).decode()
    pq.write_table(table.replace_schema_metadata({b"vismem": json.dumps(header)}), tmp_path / "bad.parquet")
    with pytest.raises(VismemError, match="fitted feature transform this vismem cannot read.*export the memory again"):
        Memory.import_parquet(tmp_path / "bad.parquet", tmp_path / "copy")
    assert not (tmp_path / "copy").exists()


def test_an_export_into_the_memory_s_own_folder_is_refused_and_the_memory_kept(tmp_path, cli):
    """`vismem export M M/memory.sqlite` replaced the memory's database with the export,
    said "exported 40 items" and left nothing that opens. Any file in M is refused: the
    store owns them, and `remove --verify` would find removed items in an export there."""
    from vismem import Memory

    with Memory.create(tmp_path / "m", encoder=None, dim=8) as memory:
        memory.add_vectors(unit_vectors(40, 8, seed=4), [str(i % 2) for i in range(40)])
    for target in (tmp_path / "m" / "memory.sqlite", tmp_path / "m" / "copy.parquet", tmp_path / "m" / "."):
        result = cli("export", tmp_path / "m", target)
        assert result.returncode == 1 and "lies in the memory's own folder" in result.stderr, result.stderr
    with Memory.open(tmp_path / "m") as memory:
        assert len(memory) == 40
    assert "copy.parquet" not in {p.name for p in (tmp_path / "m").iterdir()}
    assert cli("export", tmp_path / "m", tmp_path / "out.parquet").returncode == 0


def test_an_export_into_another_memory_s_folder_is_refused_and_that_memory_kept(tmp_path, cli):
    """`vismem export A B/memory.sqlite` replaced memory B's database with A's export:
    B no longer opened. A file in any memory's folder is refused, as one in A's own is."""
    from vismem import Memory

    for name, n in (("a", 10), ("b", 40)):
        with Memory.create(tmp_path / name, encoder=None, dim=8) as memory:
            memory.add_vectors(unit_vectors(n, 8, seed=n), [str(i % 2) for i in range(n)])
    for target in (tmp_path / "b" / "memory.sqlite", tmp_path / "b" / "copy.parquet"):
        result = cli("export", tmp_path / "a", target)
        assert result.returncode == 1 and result.stdout == ""
        assert result.stderr.strip().splitlines()[-1].startswith("error: ")
        assert f"lies in the folder of the memory at {(tmp_path / 'b').resolve()}" in result.stderr
    with Memory.open(tmp_path / "b") as memory:
        assert len(memory) == 40
    assert "copy.parquet" not in {p.name for p in (tmp_path / "b").iterdir()}


@pytest.mark.parametrize("thumbnail", ["not an image", "a 300-pixel PNG"])
def test_an_export_whose_thumbnails_a_memory_would_not_keep_is_refused_and_leaves_nothing(digit_folders, tmp_path,
                                                                                          cli, thumbnail):
    """An export edited or written by another tool, with thumbnails that are not the small
    JPEGs a memory keeps, imported without a word; then `vismem explain` ended in PIL's
    traceback (not an image) or drew a sheet with the pictures over each other (too big)."""
    import io

    from PIL import Image

    train, test = digit_folders
    cli("create", tmp_path / "origin", "--encoder", "pixels", check=True)
    cli("add", tmp_path / "origin", train / "3", train / "7", "--label", "digit", check=True)
    cli("export", tmp_path / "origin", tmp_path / "m.parquet", "--thumbnails", check=True)
    table = pq.read_table(tmp_path / "m.parquet")
    if thumbnail == "not an image":
        replacement = b"not an image"
    else:
        big = io.BytesIO()
        Image.new("RGB", (300, 200), "red").save(big, format="PNG")
        replacement = big.getvalue()
    thumbnails = table.column("thumbnail").to_pylist()
    thumbnails[5] = replacement
    edited = table.set_column(table.schema.get_field_index("thumbnail"), table.schema.field("thumbnail"),
                              pa.array(thumbnails, pa.binary()))
    pq.write_table(edited.replace_schema_metadata(table.schema.metadata), tmp_path / "edited.parquet")
    result = cli("import", tmp_path / "edited.parquet", tmp_path / "copy", "--json")
    assert result.returncode == 1 and result.stdout == "" and "Traceback" not in result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("error: ") and "damaged" in line and "is not a JPEG of at most 128 pixels" in line
    assert not (tmp_path / "copy").exists()
    cli("import", tmp_path / "m.parquet", tmp_path / "copy", check=True)  # the export as written imports
    query = next((test / "3").iterdir())
    cli("explain", tmp_path / "copy", query, "--out", tmp_path / "sheet.png", check=True)


def test_an_import_finds_what_its_help_promises_exact_alike_approximate_within_recall(tmp_path, cli):
    """`import --help` promised "the same decisions"; an HNSW memory's import rebuilds its
    graph, and neighbour lists differed. What it promises now holds: the exact index finds
    the same neighbours in the same order; an approximate index is rebuilt as the same kind,
    tuned again to the same target recall, which it reaches."""
    from sklearn.datasets import load_digits

    from vismem import Memory

    x, y = load_digits(return_X_y=True)
    x, labels = x.astype(np.float32), [str(label) for label in y]
    said = " ".join(cli("import", "--help", check=True).stdout.split())
    assert "With the exact index it finds the same neighbours in the same order" in said
    assert "tuned again to the same target recall: a query's neighbours may differ within that recall" in said
    for kind in ("exact", "hnsw"):
        with Memory.create(tmp_path / kind, encoder=None, dim=64, index=kind, target_recall=0.9) as origin:
            origin.add_vectors(x[:1500], labels[:1500], sources=[f"digit-{i}" for i in range(1500)])
            expected = origin.classify_vectors(x[1500:], k=10)
        cli("export", tmp_path / kind, tmp_path / f"{kind}.parquet", check=True)
        cli("import", tmp_path / f"{kind}.parquet", tmp_path / f"{kind}-copy", check=True)
        with Memory.open(tmp_path / f"{kind}-copy") as copy:
            index = copy.info()["index"]
            assert index["type"] == kind and copy.settings.target_recall == 0.9
            if kind == "exact":
                found = copy.classify_vectors(x[1500:], k=10)
                assert [[(n.source, n.distance) for n in d.neighbors] for d in found] == \
                       [[(n.source, n.distance) for n in d.neighbors] for d in expected]
                assert [d.label for d in found] == [d.label for d in expected]
            else:
                assert index["quality"]["recall"] >= 0.9 or index["params"]["exhaustive"]


def test_the_header_names_the_memory_exported_by_its_absolute_path(tmp_path, monkeypatch, cli):
    """`exported_from` was the path as typed (`m0`), which names nothing once the file moves."""
    monkeypatch.chdir(tmp_path)
    with Memory.create("m0", encoder=None, dim=4) as memory:
        memory.add_vectors(np.eye(4, dtype=np.float32), ["a", "b", "a", "b"])
    cli("export", "m0", "out.parquet", check=True)
    header, rows = read_header(tmp_path / "out.parquet")
    assert rows == 4 and header["exported_from"] == str((tmp_path / "m0").resolve())


def test_an_export_to_a_file_that_exists_is_refused_unless_replace(tmp_path, cli):
    """`vismem export M out.parquet` replaced an earlier export (or any file of that name)
    without a word. It refuses, exit 1, the file untouched, and says how to replace it;
    `--replace` (as `checkpoint --replace`), or `replace=True`, replaces it."""
    with Memory.create(tmp_path / "m", encoder=None, dim=8) as memory:
        memory.add_vectors(unit_vectors(40, 8, seed=4), [str(i % 2) for i in range(40)])
    target = tmp_path / "out.parquet"
    target.write_bytes(b"an earlier export")
    result = cli("export", tmp_path / "m", target)
    assert result.returncode == 1 and result.stdout == "", result.stderr
    assert f"{target} exists already" in result.stderr and "--replace" in result.stderr
    assert target.read_bytes() == b"an earlier export"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".partial")] == []
    with Memory.open(tmp_path / "m") as memory:
        with pytest.raises(VismemError, match="exists already.*replace=True"):
            memory.export_parquet(target)
        assert target.read_bytes() == b"an earlier export"
        assert memory.export_parquet(target, replace=True) == 40
    assert read_header(target)[1] == 40
    report = json_lines(cli("export", tmp_path / "m", target, "--replace", "--json", check=True))[0]
    assert report["exported"] == 40 and read_header(target)[1] == 40


def test_a_dash_or_an_empty_path_for_export_or_import_is_bad_usage_and_makes_nothing(tmp_path, monkeypatch, cli):
    """`vismem export M -` wrote a file named "-" (exit 0) where a user meant stdout;
    `export M ""` (an unset variable) said "cannot write .: it is a folder", `import F ""`
    that the current folder "holds other files". Each is now bad usage (exit 2) that says
    what to give, and nothing is written; ./- still names a file called "-"."""
    monkeypatch.chdir(tmp_path)
    with Memory.create(tmp_path / "m", encoder=None, dim=8) as memory:
        memory.add_vectors(unit_vectors(6, 8, seed=5), ["a", "b"] * 3)
    cli("export", "m", "out.parquet", check=True)
    for args, said in [(("export", "m", "-"), "export writes a file, not stdout"),
                       (("export", "m", ""), "an empty path names no file"),
                       (("import", "-", "new"), "import reads a file, not stdin"),
                       (("import", "", "new"), "an empty path names no file"),
                       (("import", "out.parquet", ""), "an empty path names no file")]:
        result = cli(*args)
        assert result.returncode == 2 and said in " ".join(result.stderr.split()), (args, result.stderr)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["m", "out.parquet"], args
    cli("export", "m", "./-", check=True)
    assert read_header(tmp_path / "-")[1] == 6
    cli("import", "./-", "new", check=True)
    with Memory.open(tmp_path / "new") as memory:
        assert len(memory) == 6


@pytest.mark.parametrize("hard_links", [True, False])
def test_an_export_does_not_replace_a_file_made_while_it_was_written(tmp_path, monkeypatch, hard_links):
    """The export looked for a file at its target before writing, then renamed its whole
    file over the name: a file another process made meanwhile was replaced all the same.
    Without `replace` the last step now moves the file only to a name still free (a hard
    link; on a file system without them, the name taken first), and refuses as before."""
    if not hard_links:  # as FAT and some network file systems answer
        def no_link(*args, **kwargs):
            raise PermissionError(errno.EPERM, "Operation not permitted")
        monkeypatch.setattr(os, "link", no_link)
    with Memory.create(tmp_path / "m", encoder=None, dim=8) as memory:
        memory.add_vectors(unit_vectors(40, 8, seed=4), [str(i % 2) for i in range(40)])
        target = tmp_path / "out.parquet"

        def another_process_writes(done: int) -> None:
            if not target.exists():
                target.write_bytes(b"written meanwhile")

        with pytest.raises(OutputExistsError, match="out.parquet exists already.*replace=True"):
            memory.export_parquet(target, progress=another_process_writes)
        assert target.read_bytes() == b"written meanwhile"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["m", "out.parquet"]  # no partial file left
        target.unlink()
        assert memory.export_parquet(target) == 40  # a name that stays free is written as ever
        assert read_header(target)[1] == 40 and sorted(p.name for p in tmp_path.iterdir()) == ["m", "out.parquet"]
        assert memory.export_parquet(target, progress=another_process_writes, replace=True) == 40
        assert read_header(target)[1] == 40


@pytest.mark.parametrize("spec", ["center", "whiten"])
def test_an_export_after_a_removal_not_yet_purged_carries_no_fit_that_saw_the_removed_item(tmp_path, spec):
    """A fitted mean is the average of the items it saw: n x mean - (n - 1) x mean(rest) is
    a removed item's vector. `remove` without `purge` keeps that fit until the purge refits
    it, and an export in between wrote it in its header: the removed vector could be
    worked out of the file. The export leaves such a fit out; the import fits the spec on
    the items it brings, as the purge refits the original on them."""
    vectors = unit_vectors(12, 8, seed=3)
    with Memory.create(tmp_path / "m", encoder=None, dim=8, index="exact") as memory:
        ids = memory.add_vectors(vectors, ["a"] * 6 + ["b"] * 6)
        memory.set_transform(spec)
        memory.remove([ids[0]])  # not purged yet
        memory.export_parquet(tmp_path / "m.parquet")
        memory.purge()  # refits on the items left
        fingerprint = memory.transform.fingerprint
    header, _ = read_header(tmp_path / "m.parquet")
    fit = header.get("fitted_transform")
    if fit is not None:
        mean = FeatureTransform.from_dict(fit["fitted"]).mean.astype(np.float64)
        rebuilt = len(vectors) * mean - (len(vectors) - 1) * vectors[1:].astype(np.float64).mean(axis=0)
        assert not np.allclose(rebuilt, vectors[0], atol=1e-4)  # the removed vector, from the file
    with Memory.import_parquet(tmp_path / "m.parquet", tmp_path / "copy") as copy:
        assert len(copy) == 11 and copy.transform.fingerprint == fingerprint


def test_explain_says_why_tiles_are_blank_in_a_memory_imported_without_thumbnails(digit_folders, tmp_path, cli):
    """A memory imported from an export written without --thumbnails drew its explanation
    sheet in grey tiles, exit 0, without a word on why (the help spoke only of vectors).
    A note on stderr now counts those neighbours and names the fix (`--json` stdout stays
    the decision alone), and each such tile says "no thumbnail stored"; the memory the
    export came from, and a memory of vectors (no pictures at all), get no note."""
    from PIL import Image

    train, test = digit_folders
    cli("create", tmp_path / "origin", "--encoder", "pixels", check=True)
    cli("add", tmp_path / "origin", train, check=True)
    cli("export", tmp_path / "origin", tmp_path / "m.parquet", check=True)
    cli("import", tmp_path / "m.parquet", tmp_path / "copy", check=True)
    query = sorted(test.glob("*/*.png"))[0]
    said = cli("explain", tmp_path / "origin", query, "--out", tmp_path / "origin.png", "-k", "4", check=True)
    assert "thumbnail" not in said.stderr
    said = cli("explain", tmp_path / "copy", query, "--out", tmp_path / "copy.png", "-k", "4", "--json", check=True)
    decision = json_lines(said)[0]
    ids = ", ".join(f"#{n['id']}" for n in decision["neighbors"])
    assert f"note: 4 of the 4 neighbours ({ids}) have no thumbnail stored" in " ".join(said.stderr.split())
    assert "export --thumbnails" in said.stderr
    tile = Image.open(tmp_path / "copy.png").convert("L").crop((140, 4, 140 + 128, 4 + 128))
    assert tile.getextrema()[0] < 150  # words on the grey, not a plain grey square
    with Memory.create(tmp_path / "vectors", encoder=None, dim=8) as memory:
        memory.add_vectors(unit_vectors(6, 8, seed=2), ["a", "b"] * 3)
    np.save(tmp_path / "q.npy", unit_vectors(1, 8, seed=3)[0])
    said = cli("explain", tmp_path / "vectors", "--queries", tmp_path / "q.npy", "--out", tmp_path / "v.png",
               check=True)
    assert "thumbnail" not in said.stderr

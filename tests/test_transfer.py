"""The Parquet export format on its own: rows in, the same rows out, in bounded batches."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import unit_vectors
from vismem.errors import VismemError
from vismem.transfer import Rows, read_header, read_parquet, write_parquet

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

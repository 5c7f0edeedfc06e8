"""Approximate indexes (FAISS HNSW and IVF-PQ) with deletions, growth, filters and files.

Both keep FAISS rows 0..n-1 in the order items were added, plus two arrays: the item id
of each row (ascending, because the store hands out ids in increasing order) and
whether the row is live. That gives:

- deletion in O(1): the row is marked dead and its vector bytes are zeroed at once, in
  RAM and in the saved files; searches skip dead rows with a FAISS ID selector, so a
  removed item is never returned, and the result is refilled exactly if a row comes back
  short, so a query still gets k live items whenever k exist;
- growth without rebuild: new rows are appended (HNSW inserts into the graph; IVF-PQ
  encodes into its trained lists, and re-clusters only when the number of lists it
  should have, about sqrt(N), has doubled: after 4x growth, so each vector is encoded
  1.3 to 2.3 times in all);
- compaction: when dead rows pass `COMPACT_FRACTION`, the live rows are rebuilt into a
  fresh index, freeing the memory the dead ones held.

Why FAISS HNSW over hnswlib: measured here it built and searched faster, and hnswlib has
no wheel for this Python (see docs/search.md).
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar, Iterator

import faiss
import numpy as np

from .base import MISSING_ID, SearchResult, VectorIndex, pad_result

COMPACT_FRACTION = 0.2   # compact when more than this share of rows are dead
BRUTE_FORCE_MAX = 4096   # a filter this selective is served by exact search over its rows
# FAISS encodes PQ through an (n, m, 256) float table: 8192 rows at m=32 is 268 MB for a
# moment. Adding 1024 rows at a time keeps that spike to 32 MB; smaller chunks did not
# lower the measured build peak, which FAISS doubling its code buffer sets.
PQ_ADD_CHUNK = 1024
# Adds at least this large hand freed heap back to the OS afterwards (see release_freed_memory).
RELEASE_AFTER_ROWS = 1024
META = "meta.json"
FILES_FORMAT = 1
log = logging.getLogger("vismem")


class IndexFileError(Exception):
    """A saved index is missing, damaged or does not fit this memory (so: rebuild it)."""


class RowIndex(VectorIndex):
    """Shared row bookkeeping, deletion, filtering and persistence for FAISS indexes."""

    persistent: ClassVar[bool] = True
    tune_param: ClassVar[str]
    tune_values: ClassVar[tuple[int, ...]]

    def __init__(self, dim: int) -> None:
        super().__init__(dim)
        self._ids = np.empty(1024, dtype=np.int64)
        self._live = np.zeros(1024, dtype=bool)
        self._n_rows = 0
        self._n_live = 0
        self._saved: dict[str, Any] | None = None  # layout of the files last written
        self._dead_since_save: list[int] = []

    # ---- backend hooks ---------------------------------------------------------------

    def _add_rows(self, vectors: np.ndarray, rows: np.ndarray) -> None:
        raise NotImplementedError

    def _search_rows(self, queries: np.ndarray, k: int, selector: Any,
                     selectivity: float) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def _search_plain(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Search every row at the tuned effort (no selector): the common case."""
        raise NotImplementedError

    def _storage(self):
        """The FAISS flat-codes index holding row r's vector as code r."""
        raise NotImplementedError

    def _codes(self) -> np.ndarray:
        """A writable uint8 (rows, code_size) view of the stored vectors."""
        storage = self._storage()
        flat = faiss.rev_swig_ptr(storage.codes.data(), storage.codes.size())
        return flat.reshape(-1, storage.code_size)

    def _vectors(self, rows: np.ndarray) -> np.ndarray:
        """float32 vectors of rows, as stored (exact for float32 storage)."""
        return self._storage().sa_decode(np.ascontiguousarray(self._codes()[rows]))

    def _forget_rows(self, rows: np.ndarray) -> None:
        """Zero (or drop) the stored bytes of dead rows."""
        raise NotImplementedError

    def reserve(self, rows: int) -> None:
        """Size the growable buffers for `rows` rows in all, when that is known ahead (a
        build from the store, compaction): growing to it then never doubles a buffer, which
        would hold the old and new copies at once."""
        if rows > len(self._ids):
            self._ids = np.resize(self._ids, rows)
            self._live = np.resize(self._live, rows)
        _reserve(self._storage().codes, rows * self._storage().code_size)

    def _empty_like(self) -> "RowIndex":
        raise NotImplementedError

    @property
    def params(self) -> dict[str, Any]:
        raise NotImplementedError

    def set_param(self, value: int) -> None:
        setattr(self, self.tune_param, int(value))

    # ---- bookkeeping -----------------------------------------------------------------

    def __len__(self) -> int:
        return self._n_live

    @property
    def n_rows(self) -> int:
        return self._n_rows

    @property
    def tombstones(self) -> int:
        return self._n_rows - self._n_live

    def needs_compaction(self) -> bool:
        return self.tombstones > COMPACT_FRACTION * max(self._n_rows, 1)

    def missing(self, item_id: int) -> bool:
        # Ids arrive in increasing order, so anything at or below the last row is known.
        return self._n_rows == 0 or int(item_id) > int(self._ids[self._n_rows - 1])

    def live_ids(self) -> np.ndarray:
        n = self._n_rows
        return self._ids[:n][self._live[:n]]

    def _rows_of(self, ids: np.ndarray) -> np.ndarray:
        """Rows of the given item ids that are live (unknown or dead ids are dropped)."""
        ids = np.asarray(ids, dtype=np.int64).ravel()
        n = self._n_rows
        if n == 0 or len(ids) == 0:
            return np.empty(0, dtype=np.int64)
        rows = np.minimum(np.searchsorted(self._ids[:n], ids), n - 1)
        ok = (self._ids[rows] == ids) & self._live[rows]
        return rows[ok]

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        ids = np.asarray(ids, dtype=np.int64).ravel()
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, self.dim)
        if np.any(np.diff(ids) <= 0):
            raise ValueError("ids must be added in increasing order (as the store assigns them)")
        n = self._n_rows
        if n:  # catching up from the edit log may replay adds the index already holds
            known = int(np.searchsorted(ids, self._ids[n - 1], side="right"))
            ids, vectors = ids[known:], vectors[known:]  # views: no copy of the batch
        if len(ids) == 0:
            return
        m = len(ids)
        if n + m > len(self._ids):
            capacity = max(len(self._ids) * 2, n + m)
            self._ids = np.resize(self._ids, capacity)
            self._live = np.resize(self._live, capacity)
        rows = np.arange(n, n + m, dtype=np.int64)
        self._add_rows(vectors, rows)
        self._ids[n : n + m] = ids
        self._live[n : n + m] = True
        self._n_rows += m
        self._n_live += m
        if m >= RELEASE_AFTER_ROWS:
            release_freed_memory()

    def remove(self, ids: np.ndarray) -> None:
        rows = self._rows_of(ids)
        if len(rows) == 0:
            return
        self._live[rows] = False
        self._n_live -= len(rows)
        self._forget_rows(rows)
        self._dead_since_save += rows.tolist()

    def compact(self) -> None:
        """Rebuild from the live rows only: dead rows' memory is freed and rows renumbered."""
        live_rows = np.flatnonzero(self._live[: self._n_rows])
        fresh = self._empty_like()
        fresh.reserve(len(live_rows))
        for start in range(0, len(live_rows), 65536):  # bounded extra memory while rebuilding
            chunk = live_rows[start : start + 65536]
            fresh.add(self._ids[chunk], self._vectors(chunk))
        self.__dict__.update(fresh.__dict__)  # the saved files are stale now: save next
        release_freed_memory()

    # ---- search ----------------------------------------------------------------------

    def search(
        self, queries: np.ndarray, k: int, *, allowed_ids: np.ndarray | None = None
    ) -> SearchResult:
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            queries = queries.reshape(-1, self.dim)
        n = self._n_rows
        if allowed_ids is None and self._n_live == n >= k:
            # The common case, kept lean (a single query costs ~100 us of FAISS work, and
            # each numpy call here ~1 us): no filter, no removed rows, enough items.
            sims, rows = self._search_plain(queries, k)
            # FAISS puts missing results (-1) last in a row; a numpy min costs ~3 us, so a
            # single query reads its one last entry instead
            last = rows[:, -1]
            if (last[0] >= 0) if len(last) == 1 else (last.min() >= 0):
                return SearchResult(sims, self._ids[rows])
        if allowed_ids is None:
            allowed_rows = None
            n_allowed = self._n_live
        else:
            allowed_rows = self._rows_of(np.unique(np.asarray(allowed_ids, dtype=np.int64)))
            n_allowed = len(allowed_rows)
        want = min(k, n_allowed)
        if want == 0:
            return pad_result(np.empty((len(queries), 0), np.float32),
                              np.empty((len(queries), 0), np.int64), k)
        if allowed_rows is not None and n_allowed <= BRUTE_FORCE_MAX:
            sims, rows = self._exact_rows(queries, want, allowed_rows)
        else:
            if allowed_rows is not None:
                mask = np.zeros(n, dtype=bool)
                mask[allowed_rows] = True
            else:
                mask = self._live[:n] if self.tombstones else None
            bits = np.packbits(mask, bitorder="little") if mask is not None else None
            selector = faiss.IDSelectorBitmap(n, faiss.swig_ptr(bits)) if bits is not None else None
            sims, rows = self._search_rows(queries, want, selector, n_allowed / n)
            del selector, bits
            short = np.flatnonzero((rows >= 0).sum(axis=1) < want)
            if len(short):  # a graph walk that found too few: refill those rows exactly
                pool = allowed_rows if allowed_rows is not None else np.flatnonzero(self._live[:n])
                sims[short], rows[short] = self._exact_rows(queries[short], want, pool)
        ids = np.where(rows >= 0, self._ids[np.maximum(rows, 0)], MISSING_ID)
        return pad_result(sims.astype(np.float32), ids, k)

    def _exact_rows(self, queries: np.ndarray, k: int, rows: np.ndarray):
        sims, found = faiss.knn(queries, self._vectors(rows), k, metric=faiss.METRIC_INNER_PRODUCT)
        return sims, np.where(found >= 0, rows[np.maximum(found, 0)], -1)

    # ---- reporting -------------------------------------------------------------------

    def bytes_per_vector(self) -> float:
        return self.nbytes() / max(self._n_live, 1)

    def describe(self) -> dict:
        return {
            "type": self.kind,
            "size": len(self),
            "rows": self._n_rows,
            "tombstones": self.tombstones,
            "bytes": self.nbytes(),
            "bytes_per_vector": round(self.bytes_per_vector(), 1),
            "params": self.params,
        }

    # ---- files -----------------------------------------------------------------------

    def _state(self) -> tuple[bytes | None, dict[str, np.ndarray], dict[str, Any]]:
        """(FAISS blob, extra arrays, layout) to save. FAISS writes a flat-codes index's
        codes at the end of its file (IndexRefine adds a 4-byte k_factor after them); we
        check that, so removals can zero a row's bytes in the file in place."""
        blob = faiss.serialize_index(self._faiss).tobytes()
        codes = self._codes()
        for tail in (0, 4):
            offset = len(blob) - tail - codes.nbytes
            if blob[offset : len(blob) - tail] == codes.tobytes():
                return blob, {}, {"codes_offset": offset, "code_size": codes.shape[1]}
        raise RuntimeError("unexpected FAISS file layout: cannot scrub removed rows in place")

    def _restore(self, blob: bytes | None, arrays: dict[str, np.ndarray], meta: dict) -> None:
        raise NotImplementedError

    def save(self, directory: Path, extra: dict[str, Any]) -> None:
        """Write the index to `directory` (crash-safe: meta.json is written last)."""
        directory.mkdir(parents=True, exist_ok=True)
        (directory / META).unlink(missing_ok=True)  # a crash mid-save then reads as missing
        blob, arrays, layout = self._state()
        n = self._n_rows
        arrays = {"ids": self._ids[:n].copy(), "live": self._live[:n].copy(), **arrays}
        files: dict[str, dict] = {}
        if blob is not None:
            files["index.faiss"] = _write(directory / "index.faiss", blob,
                                          checked=layout.get("codes_offset", len(blob)))
        else:
            (directory / "index.faiss").unlink(missing_ok=True)
        for name, array in arrays.items():
            path = directory / f"{name}.npy"
            tmp = path.with_suffix(".npy.tmp")
            with open(tmp, "wb") as f:
                np.save(f, array)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            # live/vector files are scrubbed in place on removal, so only their size is fixed
            files[path.name] = {"size": path.stat().st_size,
                                "crc32": _crc(path.read_bytes()) if name == "ids" else None}
        meta = {"format": FILES_FORMAT, "kind": self.kind, "dim": self.dim, "params": self.params,
                "rows": n, "live": self._n_live, "files": files, **layout, **extra}
        _write(directory / META, json.dumps(meta).encode(), checked=None)
        _fsync_dir(directory)
        self._saved = {"rows": n, **layout, "array_offsets": {
            name: _npy_data_offset(directory / f"{name}.npy") for name in arrays}}
        self._dead_since_save = []

    def scrub_saved(self, directory: Path) -> None:
        """Zero, in the saved files, the bytes of rows removed since the last save."""
        if self._saved is None or not self._dead_since_save:
            return
        rows = [r for r in self._dead_since_save if r < self._saved["rows"]]
        if rows:
            self._scrub_files(directory, np.asarray(rows, dtype=np.int64))
        self._dead_since_save = []

    def _scrub_files(self, directory: Path, rows: np.ndarray) -> None:
        live_at = self._saved["array_offsets"]["live"]
        size, base = self._saved["code_size"], self._saved["codes_offset"]
        for name, offset, width in (("live.npy", live_at, 1), ("index.faiss", base, size)):
            with open(directory / name, "r+b") as f:
                for row in rows.tolist():
                    f.seek(offset + row * width)
                    f.write(bytes(width))
                f.flush()
                os.fsync(f.fileno())

    @classmethod
    def load(cls, directory: Path, dim: int) -> tuple["RowIndex", dict]:
        """Read a saved index; raises IndexFileError if it is missing or damaged."""
        try:
            return cls._read(directory, dim)
        except IndexFileError:
            raise
        except (KeyError, TypeError, ValueError, OSError, RuntimeError) as exc:
            raise IndexFileError(f"damaged: {type(exc).__name__} {exc}") from exc

    @classmethod
    def _read(cls, directory: Path, dim: int) -> tuple["RowIndex", dict]:
        meta_path = directory / META
        if not meta_path.is_file():
            raise IndexFileError("no saved index")
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError) as exc:
            raise IndexFileError(f"unreadable {META}: {exc}") from exc
        if meta.get("format") != FILES_FORMAT or meta.get("kind") != cls.kind or meta.get("dim") != dim:
            raise IndexFileError("saved index is of another kind, format or dimension")
        blob = None
        arrays: dict[str, np.ndarray] = {}
        for name, expect in meta["files"].items():
            path = directory / name
            if not path.is_file() or path.stat().st_size != expect["size"]:
                raise IndexFileError(f"{name} is missing or has the wrong size")
            data = path.read_bytes()
            if name == "index.faiss":
                if _crc(data[: meta.get("codes_offset", len(data))]) != expect["crc32"]:
                    raise IndexFileError(f"{name} is damaged (checksum)")
                blob = data
                continue
            if expect["crc32"] is not None and _crc(data) != expect["crc32"]:
                raise IndexFileError(f"{name} is damaged (checksum)")
            try:
                arrays[name[:-4]] = np.load(path)
            except ValueError as exc:
                raise IndexFileError(f"{name} is damaged: {exc}") from exc
        n = meta["rows"]
        ids, live = arrays.pop("ids", None), arrays.pop("live", None)
        if ids is None or live is None or len(ids) != n or len(live) != n or \
                (n > 1 and np.any(np.diff(ids) <= 0)):
            raise IndexFileError("row ids are damaged")
        index = cls(dim, **meta["params"])
        try:
            index._restore(blob, arrays, meta)
        except (RuntimeError, ValueError, KeyError, TypeError) as exc:
            raise IndexFileError(f"index data is damaged: {exc}") from exc
        index._ids, index._live = ids.astype(np.int64), live.astype(bool)
        index._n_rows, index._n_live = n, int(index._live.sum())
        index._saved = {"rows": n, **{k: meta[k] for k in ("codes_offset", "code_size") if k in meta},
                        "array_offsets": {f[:-4]: _npy_data_offset(directory / f)
                                          for f in meta["files"] if f.endswith(".npy")}}
        return index, meta


class HNSWIndex(RowIndex):
    """FAISS HNSW graph over float32 (or float16) vectors, cosine similarity."""

    kind = "hnsw"
    tune_param = "ef_search"
    tune_values = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024)

    def __init__(self, dim: int, *, m: int = 32, ef_construction: int = 80,
                 ef_search: int = 64, float16: bool = False) -> None:
        super().__init__(dim)
        self.m, self.ef_construction, self.ef_search, self.float16 = m, ef_construction, ef_search, float16
        self._faiss = self._new_faiss()
        self._applied = None  # search setting last written into the FAISS object

    def _new_faiss(self):
        if self.float16:
            index = faiss.IndexHNSWSQ(self.dim, faiss.ScalarQuantizer.QT_fp16, self.m,
                                      faiss.METRIC_INNER_PRODUCT)
        else:
            index = faiss.IndexHNSWFlat(self.dim, self.m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = self.ef_construction
        return index

    @property
    def params(self) -> dict[str, Any]:
        return {"m": self.m, "ef_construction": self.ef_construction,
                "ef_search": self.ef_search, "float16": self.float16}

    def _empty_like(self) -> "HNSWIndex":
        return HNSWIndex(self.dim, **self.params)

    def _storage(self):
        return faiss.downcast_index(self._faiss.storage)

    def _add_rows(self, vectors: np.ndarray, rows: np.ndarray) -> None:
        self._faiss.add(vectors)

    def _forget_rows(self, rows: np.ndarray) -> None:
        # The graph keeps the dead node's links (so walks still pass through it), but its
        # vector is zeroed now: the removed bytes do not linger until compaction.
        self._codes()[rows] = 0

    def _search_plain(self, queries, k):
        ef = self.ef_search if self.ef_search >= k else k
        if self._applied != ef:  # a SWIG attribute write costs as much as a small search
            self._faiss.hnsw.efSearch = self._applied = ef
        return _faiss_search(self._faiss, queries, k)

    def _search_rows(self, queries, k, selector, selectivity):
        if selector is None and selectivity == 1.0:
            return self._search_plain(queries, k)
        params = faiss.SearchParametersHNSW()
        # A filter hides part of the graph; widen the beam so k matches are still found.
        params.efSearch = int(min(max(self.ef_search, k) / max(selectivity, 0.05), 4096))
        if selector is not None:
            params.sel = selector
        return self._faiss.search(queries, k, params=params)

    def nbytes(self) -> int:
        hnsw = self._faiss.hnsw
        graph = hnsw.neighbors.size() * 4 + hnsw.offsets.size() * 8 + hnsw.levels.size() * 4
        return int(self._codes().nbytes + graph + self._n_rows * 9)

    def _restore(self, blob, arrays, meta) -> None:
        self._faiss = faiss.deserialize_index(np.frombuffer(blob, dtype=np.uint8))
        self._applied = None
        if self._faiss.ntotal != meta["rows"]:
            raise ValueError("row count does not match")


class IVFPQIndex(RowIndex):
    """FAISS IVF with product-quantised codes, re-ranked with float16 vectors (IndexRefine).

    PQ codes alone rarely reach 0.95 recall@10, so the best `k * k_factor` candidates are
    re-scored by FAISS against float16 copies (half of float32). Until enough vectors
    exist to train the quantisers (`train_min`), search is exact over the float16 copies.
    """

    kind = "ivfpq"
    tune_param = "nprobe"
    # (nprobe, k_factor) by rising cost, raising both in turn: probing more lists finds
    # the candidates, re-ranking more of them with float16 vectors repairs PQ's coarse
    # ranking, which is what caps recall on data of higher intrinsic dimension. Measured
    # at 50k x 512-d (intrinsic 32): (64, 128) reaches 0.985 faster than (512, 64) 0.959.
    tune_values = ((1, 4), (2, 4), (4, 4), (4, 8), (8, 8), (8, 16), (16, 16), (16, 32),
                   (32, 32), (32, 64), (64, 64), (64, 128), (128, 128), (128, 256),
                   (256, 256), (512, 512))

    def __init__(self, dim: int, *, nlist: int | None = None, m: int | None = None,
                 nprobe: int = 16, k_factor: int = 4, train_min: int = 10_000,
                 auto_nlist: bool | None = None) -> None:
        super().__init__(dim)
        self.nlist, self.nprobe, self.k_factor, self.train_min = nlist, nprobe, k_factor, train_min
        # a given nlist is kept; a chosen one (sqrt(N)) is re-chosen as the memory grows
        self.auto_nlist = nlist is None if auto_nlist is None else auto_nlist
        self.m = m or pq_subquantizers(dim)
        self._sq = faiss.IndexScalarQuantizer(dim, faiss.ScalarQuantizer.QT_fp16,
                                              faiss.METRIC_INNER_PRODUCT)
        self._ivf = None
        self._faiss = self._sq  # what gets saved: the float16 store, then IndexRefine
        self._applied = None

    def set_param(self, value) -> None:
        self.nprobe, self.k_factor = (int(v) for v in value)

    @property
    def params(self) -> dict[str, Any]:
        return {"nlist": self.nlist, "m": self.m, "nprobe": self.nprobe,
                "k_factor": self.k_factor, "train_min": self.train_min, "auto_nlist": self.auto_nlist}

    @property
    def trained(self) -> bool:
        return self._ivf is not None

    def _empty_like(self) -> "IVFPQIndex":
        fresh = IVFPQIndex(self.dim, **self.params)
        if self._ivf is not None:  # keep the trained quantisers: compaction never retrains
            ivf = faiss.clone_index(self._ivf)
            ivf.reset()
            fresh._use(ivf)
        return fresh

    def _use(self, ivf) -> None:
        # IndexRefine insists both parts hold as many vectors when it is made; ours differ
        # by the removed rows (gone from the IVF lists, zeroed in the float16 store).
        self._ivf = ivf
        self._applied = None
        self._empty_sq = faiss.IndexScalarQuantizer(self.dim, faiss.ScalarQuantizer.QT_fp16,
                                                    faiss.METRIC_INNER_PRODUCT)
        self._faiss = faiss.IndexRefine(faiss.IndexFlatIP(self.dim), self._empty_sq)
        self._faiss.own_fields = False
        self._faiss.base_index = ivf
        self._faiss.refine_index = self._sq
        self._faiss.ntotal = self._sq.ntotal

    def _storage(self):
        return self._sq

    def _add_rows(self, vectors: np.ndarray, rows: np.ndarray) -> None:
        self._sq.add(vectors)  # row r is code r
        live = self._n_live + len(rows)
        if self._ivf is not None and self.auto_nlist and _nlist_for(live) >= 2 * self.nlist:
            log.warning("re-clustering the IVF-PQ index for %d vectors (about %d lists, was %d)",
                        live, _nlist_for(live), self.nlist)
            self._train(rows, retrain=True)
        elif self._ivf is not None:
            self._add_to_lists(self._ivf, rows, vectors)
            self._faiss.ntotal = self._sq.ntotal
        elif live >= max(self.train_min, 256):  # 8-bit PQ: 256 points per codebook
            self._train(rows)

    def _train(self, adding: np.ndarray, retrain: bool = False) -> None:
        """Train the quantisers on the live rows (removed ones are zeroed) and encode them."""
        live = np.concatenate([self._live[: self._n_rows], np.ones(len(adding), dtype=bool)])
        live_rows = np.flatnonzero(live)
        n = len(live_rows)
        nlist = _nlist_for(n) if retrain else min(self.nlist or _nlist_for(n), n // 39)
        old_nlist = self.nlist
        ivf = new_ivfpq(self.dim, nlist, self.m)
        ivf.train(self._vectors(live_rows[training_sample(len(live_rows), nlist)]))
        ivf.set_direct_map_type(faiss.DirectMap.Hashtable)  # O(1) removal by id
        self._add_to_lists(ivf, live_rows)
        if retrain:  # probe the same share of the (now more) lists until re-tuned
            self.nprobe = max(1, round(self.nprobe * nlist / old_nlist))
        self.nlist = nlist
        self._use(ivf)
        self._faiss.ntotal = self._sq.ntotal

    def _add_to_lists(self, ivf, rows: np.ndarray, vectors: np.ndarray | None = None) -> None:
        """PQ-encode rows into the IVF lists under their row numbers (removals shrink
        ntotal, so ids are explicit), PQ_ADD_CHUNK rows at a time, on one thread.
        `vectors` are the rows' vectors, by default decoded from the float16 copies."""
        with one_faiss_thread():
            for start in range(0, len(rows), PQ_ADD_CHUNK):
                part = rows[start : start + PQ_ADD_CHUNK]
                chunk = self._vectors(part) if vectors is None else vectors[start : start + PQ_ADD_CHUNK]
                ivf.add_with_ids(chunk, part)

    def _forget_rows(self, rows: np.ndarray) -> None:
        self._codes()[rows] = 0
        if self._ivf is not None:  # PQ codes leave the lists at once (no tombstone there)
            self._ivf.remove_ids(faiss.IDSelectorArray(rows))

    def _search_plain(self, queries, k):
        if self._ivf is None:
            return _faiss_search(self._sq, queries, k)
        # the plain case sets the index's own fields: no per-call parameter objects
        if self._applied != (self.nprobe, self.k_factor):
            self._ivf.nprobe, self._faiss.k_factor = self._applied = (self.nprobe, self.k_factor)
        return _faiss_search(self._faiss, queries, k)

    def _search_rows(self, queries, k, selector, selectivity):
        if selector is None and selectivity == 1.0:
            return self._search_plain(queries, k)
        if self._ivf is None:
            params = faiss.SearchParameters()
            params.sel = selector
            return self._sq.search(queries, k, params=params)
        nprobe = int(min(self.nprobe / max(selectivity, 0.05), self.nlist))
        ivf_params = faiss.SearchParametersIVF()
        ivf_params.nprobe = nprobe
        if selector is not None:
            ivf_params.sel = selector
        params = faiss.IndexRefineSearchParameters()
        params.k_factor = self.k_factor
        params.base_index_params = ivf_params
        return self._faiss.search(queries, k, params=params)

    def nbytes(self) -> int:
        n = self._n_rows
        total = self._codes().nbytes + n * 9
        if self._ivf is not None:
            total += self._ivf.ntotal * (self._ivf.code_size + 8 + 16)  # code, id, direct map
            total += self._ivf.nlist * self.dim * 4
        return int(total)

    def _restore(self, blob, arrays, meta) -> None:
        loaded = faiss.deserialize_index(np.frombuffer(blob, dtype=np.uint8))
        self._applied = None
        if isinstance(loaded, faiss.IndexRefine):
            self._faiss = loaded  # owns both parts; keep it alive with them
            self._sq = faiss.downcast_index(loaded.refine_index)
            self._ivf = faiss.downcast_index(loaded.base_index)
            self.nlist = self._ivf.nlist
        else:
            self._sq = self._faiss = loaded
        if self._sq.ntotal != meta["rows"]:
            raise ValueError("row count does not match")


def _faiss_search(index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """`index.search(queries, k)` through FAISS's C entry point. FAISS's Python wrapper
    would re-check and re-convert the queries `RowIndex.search` has just checked (float32,
    C-contiguous, (n, dim)); for a single query that repeated work is a few percent."""
    n = len(queries)
    sims = np.empty((n, k), dtype=np.float32)
    rows = np.empty((n, k), dtype=np.int64)
    index.search_c(n, faiss.swig_ptr(queries), k, faiss.swig_ptr(sims), faiss.swig_ptr(rows))
    return sims, rows


def _reserve(vector, size: int) -> None:
    """Give a FAISS byte vector capacity for `size` bytes, keeping its contents.

    SWIG offers no `reserve`, but std::vector never gives capacity back on a shrinking
    `resize`, so growing to `size` and back leaves it reserved (its pages are touched now,
    which the filled index would do anyway)."""
    used = vector.size()
    if size > used and vector.is_owned:
        vector.resize(size)
        vector.resize(used)


@contextmanager
def one_faiss_thread() -> Iterator[None]:
    """Run FAISS on this thread alone for a while.

    FAISS's OpenMP loops over a few hundred rows cost more to start and join than they
    save, and when other work keeps the cores busy, threads spinning at each join stall
    one another: adding 20k x 512-d to an IVF-PQ 256 rows at a time took 62 s on two
    threads and 0.55 s on one (load average 4, two cores)."""
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(threads)


def release_freed_memory() -> None:
    """Return freed heap pages to the OS (glibc `malloc_trim`; a no-op elsewhere).

    FAISS grows its buffers by reallocating; the smaller old copies are freed into
    glibc's heap, which keeps them resident (they are not at the heap's top), so a
    100k-vector IVF-PQ build ended holding 70 MB of freed memory above its 104 MB index."""
    if _malloc_trim is not None:
        _malloc_trim(0)


def _find_malloc_trim():
    try:
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


_malloc_trim = _find_malloc_trim()


MAX_NLIST = 65536


def _nlist_for(n: int) -> int:
    """IVF lists for n vectors: sqrt(n), and at least 39 training points per list."""
    return int(min(np.clip(np.sqrt(n), 16, MAX_NLIST), n // 39))


def new_ivfpq(dim: int, nlist: int, m: int) -> faiss.IndexIVFPQ:
    """An untrained IVF-PQ (8-bit codes, inner product) with training kept affordable.

    Training dominates build time; candidates are re-ranked with float16 vectors, so
    codebooks trained on fewer points with fewer k-means rounds lose no final recall.
    """
    index = faiss.IndexIVFPQ(faiss.IndexFlatIP(dim), dim, nlist, m, 8, faiss.METRIC_INNER_PRODUCT)
    index.cp.niter = 10
    index.pq.cp.niter = 15
    index.pq.cp.max_points_per_centroid = 32
    index.pq.cp.min_points_per_centroid = 16  # (FAISS warns below its default of 39)
    return index


def training_sample(n: int, nlist: int) -> np.ndarray:
    """Rows to train IVF-PQ on: FAISS's recommended 39 per list (at least 256 x 39 for the
    PQ codebooks), no more, since the float32 sample is the largest transient of a build."""
    size = min(n, max(39 * nlist, 256 * 39))
    return np.sort(np.random.default_rng(0).choice(n, size=size, replace=False))


def pq_subquantizers(dim: int) -> int:
    """PQ sub-vectors: about one byte per 16 dimensions, dividing dim exactly."""
    m = max(1, dim // 16)
    while dim % m:
        m -= 1
    return m


def _crc(data: bytes) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


def _write(path: Path, data: bytes, *, checked: int | None) -> dict:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return {"size": len(data), "crc32": _crc(data[:checked]) if checked is not None else None}


def _npy_data_offset(path: Path) -> int:
    with open(path, "rb") as f:
        major, _ = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
        read(f)
        return f.tell()


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

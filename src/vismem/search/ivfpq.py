"""IVF-PQ: FAISS inverted lists of product-quantised codes, re-ranked with float16 copies.

Growth without rebuild: new vectors are encoded into the trained lists, and the index
re-clusters only when the number of lists it should have, about sqrt(N), has doubled:
after 4x growth, so each vector is encoded 1.3 to 2.3 times in all.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import faiss
import numpy as np

from .calls import faiss_search, selected
from .rows import RowIndex
from .runtime import one_faiss_thread

# FAISS encodes PQ through an (n, m, 256) float table: 8192 rows at m=32 is 268 MB for a
# moment. Adding 1024 rows at a time keeps that spike to 32 MB; smaller chunks did not
# lower the measured build peak, which FAISS doubling its code buffer sets.
PQ_ADD_CHUNK = 1024
MAX_NLIST = 65536
log = logging.getLogger("vismem")


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
                 auto_nlist: bool | None = None, exhaustive: bool = False) -> None:
        super().__init__(dim, exhaustive)
        self.nlist, self.nprobe, self.k_factor, self.train_min = nlist, nprobe, k_factor, train_min
        # a given nlist is kept; a chosen one (sqrt(N)) is re-chosen as the memory grows
        self.auto_nlist = nlist is None if auto_nlist is None else auto_nlist
        self.m = m or pq_subquantizers(dim)
        self._sq: Any = faiss.IndexScalarQuantizer(dim, faiss.ScalarQuantizer.QT_fp16,
                                                   faiss.METRIC_INNER_PRODUCT)
        self._ivf: Any = None  # the IndexIVFPQ, once trained
        self._faiss: Any = self._sq  # what gets saved: the float16 store, then IndexRefine
        self._applied: tuple[int, int] | None = None  # effort last written into the FAISS objects

    def _set_effort(self, value) -> None:
        self.nprobe, self.k_factor = (int(v) for v in value)

    @property
    def params(self) -> dict[str, Any]:
        return {"nlist": self.nlist, "m": self.m, "nprobe": self.nprobe,
                "k_factor": self.k_factor, "train_min": self.train_min, "auto_nlist": self.auto_nlist,
                "exhaustive": self.exhaustive}

    @property
    def trained(self) -> bool:
        return self._ivf is not None

    def _empty_like(self) -> IVFPQIndex:
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
        if self._ivf is not None and self.auto_nlist and _nlist_for(live) >= 2 * self._ivf.nlist:
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
        old_nlist = self.nlist or nlist
        ivf = new_ivfpq(self.dim, nlist, self.m)
        ivf.train(self._vectors(live_rows[training_sample(len(live_rows), nlist)]))
        ivf.set_direct_map_type(faiss.DirectMap.Hashtable)  # type: ignore[attr-defined]  # O(1) removal by id
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

    @contextmanager
    def held_out(self, ids: np.ndarray) -> Iterator[None]:
        """Take live items out of the lists and out of search for a while, then put them
        back (re-encoded from their float16 copies). The lists never depended on them, so
        meanwhile they are unseen queries, except that they may have been among the
        vectors the quantisers were trained on."""
        rows = self._rows_of(ids)
        self._restrictions.clear()
        self._live[rows] = False
        self._n_live -= len(rows)
        if self._ivf is not None and len(rows):
            self._ivf.remove_ids(faiss.IDSelectorArray(rows))
        try:
            yield
        finally:
            self._restrictions.clear()
            self._live[rows] = True
            self._n_live += len(rows)
            if self._ivf is not None and len(rows):
                self._add_to_lists(self._ivf, rows)

    def _forget_rows(self, rows: np.ndarray) -> None:
        self._codes()[rows] = 0
        if self._ivf is not None:  # PQ codes leave the lists at once (no tombstone there)
            self._ivf.remove_ids(faiss.IDSelectorArray(rows))

    def _search_plain(self, queries, k):
        if self._ivf is None:
            return faiss_search(self._sq, queries, k)
        # the plain case sets the index's own fields: no per-call parameter objects
        if self._applied != (self.nprobe, self.k_factor):
            self._ivf.nprobe, self._faiss.k_factor = self._applied = (self.nprobe, self.k_factor)
        return faiss_search(self._faiss, queries, k)

    def _tuned_effort(self) -> tuple[int, int]:
        return self.nprobe, self.k_factor

    def _effort_in(self, params: dict[str, Any]) -> tuple[int, int]:
        return int(params.get("nprobe", self.nprobe)), int(params.get("k_factor", self.k_factor))

    def _restricted_index(self):
        return self._sq if self._ivf is None else self._faiss

    def _restricted_params(self, selector, k, selectivity):
        if self._ivf is None:  # untrained: exact over the float16 copies
            return selected(selector)
        ivf_params = faiss.SearchParametersIVF()
        # A filter hides part of each list; probe more lists so k matches are still found.
        ivf_params.nprobe = int(min(self.nprobe / max(selectivity, 0.05), self.nlist))
        ivf_params.sel = selector
        params = faiss.IndexRefineSearchParameters()
        params.k_factor = self.k_factor
        params.base_index_params = ivf_params  # (FAISS's wrapper keeps it alive with params)
        return params

    def nbytes(self) -> int:
        n = self._n_rows
        total = self._codes().nbytes + n * 9
        if self._ivf is not None:
            total += self._ivf.ntotal * (self._ivf.code_size + 8 + 16)  # code, id, direct map
            total += self._ivf.nlist * self.dim * 4
        return int(total)

    def _restore(self, loaded: Any, meta: dict) -> None:
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

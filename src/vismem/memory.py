"""`Memory`: the public face of vismem, tying encoder, store, search and decision.

    images --encoder--> vectors --store--> durable memory --index--> neighbours --decide--> Decision

The store is the truth; the in-RAM index and metadata are derived from it at open,
kept in step by every edit made through this object, and reloaded when another
process commits to the same directory. The index's own lifecycle (which kind, saving,
catching up, measuring recall, compaction) is `search.lifecycle.ManagedIndex`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
from PIL import Image

from .calibrate import ood_scores
from .decide import Decision, VoteParams, decide
from .embed import PreparedImage, batched, encode_prepared, prepare_bytes, prepare_in_batches
from .encoders import Encoder, create_encoder, normalize_rows
from .errors import EmptyMemoryError, EncoderError, InvalidInputError, MemoryExistsError
from .images import DEFAULT_MAX_PIXELS, ImageFile, ImageReadError, Skipped, find_images, upright_rgb
from .prototypes import PrototypeSet
from .prune import PruneState
from .search import MISSING_ID, VectorIndex
from .search.lifecycle import DEFAULT_TARGET_RECALL, ManagedIndex, check_index_options
from .search.quality import Quality
from .store import DB_NAME, FORMAT_VERSION, Item, MemoryStore, NewItem, check_label, check_meta_key

DEFAULT_ENCODER = "resnet50"
Progress = Callable[[int], None]


@dataclass
class AddReport:
    """What `add_images` did: new ids, and every input it did not add, with why."""

    added: list[int] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)

    @property
    def duplicates(self) -> list[Skipped]:
        return [s for s in self.skipped if s.reason.startswith("duplicate")]

    @property
    def errors(self) -> list[Skipped]:
        """Skipped for being unreadable or unlabelled (not merely duplicates)."""
        return [s for s in self.skipped if not s.reason.startswith("duplicate")]

    def to_dict(self) -> dict[str, Any]:
        return {
            "added": len(self.added),
            "ids": self.added,
            "skipped": len(self.skipped),
            "skipped_items": [{"path": s.path, "reason": s.reason} for s in self.skipped],
        }


@dataclass(frozen=True)
class Hit:
    """A search result: an item and its cosine distance to the query."""

    id: int
    label: str
    source: str
    distance: float


class Memory:
    """An editable visual memory in one directory.

    >>> mem = Memory.create("pets", encoder="efficientnet_lite0")   # doctest: +SKIP
    >>> mem.add_images(["photos/"])                                  # doctest: +SKIP
    >>> mem.classify(["query.jpg"])[0].label                         # doctest: +SKIP

    Each call first catches up with what other processes committed to the directory.
    Threads sharing one Memory should set `auto_refresh = False` and call `refresh()`
    where no other thread is using it, as the HTTP service does.
    """

    def __init__(self, store: MemoryStore) -> None:
        self.store = store
        self._encoder: Encoder | None = None
        self._managed = ManagedIndex(store, set_config=self.set_config)
        self._unpurged = False  # the store's log may still hold removed rows' older copies
        self.auto_refresh = True  # see `_catch_up`
        self._load()

    # ---- open / create -----------------------------------------------------------------

    @classmethod
    def create(
        cls,
        path: str | Path,
        *,
        encoder: str | None = DEFAULT_ENCODER,
        weights: str | Path | None = None,
        dim: int | None = None,
        index: str = "auto",
        target_recall: float = DEFAULT_TARGET_RECALL,
        float16: bool = False,
    ) -> "Memory":
        """Create an empty memory at `path` (a directory).

        `encoder` names a registered encoder; its weights are loaded now, so a missing
        download fails here, before anything is written. `encoder=None` makes a
        memory for precomputed vectors of dimension `dim`, with no encoder.

        `index` is the search backend: `exact`, `hnsw`, `ivfpq`, or `auto` (exact below
        AUTO_APPROX_MIN items, then HNSW, or IVF-PQ when float32 vectors would not fit in
        half the RAM). Approximate indexes tune their search effort until recall@10,
        measured against exact search on the memory's own vectors, reaches
        `target_recall`. `float16` stores HNSW vectors as float16 (half the memory).
        """
        check_index_options(index, target_recall)
        path = Path(path)
        if (path / DB_NAME).exists():
            raise MemoryExistsError(f"a memory already exists at {path}")
        if encoder is None:
            if not isinstance(dim, int) or dim < 1:
                raise InvalidInputError("a memory without an encoder needs a positive --dim")
            config = {"encoder": None, "encoder_id": None, "encoder_config": None,
                      "weights_path": None, "dim": dim}
            built = None
        else:
            built = create_encoder(encoder, weights=weights)
            if dim is not None and dim != built.dim:
                raise InvalidInputError(f"encoder {encoder} makes {built.dim}-d vectors, not {dim}")
            config = {
                "encoder": built.name,
                "encoder_id": built.id,
                "encoder_config": built.describe(),
                "weights_path": str(Path(weights).resolve()) if weights else None,
                "dim": built.dim,
            }
        config |= {"index": index, "target_recall": target_recall, "float16": bool(float16),
                   "defaults": VoteParams().to_dict()}
        memory = cls(MemoryStore.create(path, config))
        memory._encoder = built
        return memory

    @classmethod
    def open(cls, path: str | Path) -> "Memory":
        """Open an existing memory; raises MemoryNotFoundError if there is none."""
        return cls(MemoryStore.open(path))

    def close(self) -> None:
        """Save the index if it changed, purge removed bytes, and close the store."""
        try:
            self._managed.save_if_dirty()
            if self._unpurged or self._managed.unpurged:
                self.purge()
        finally:
            self.store.close()

    def __enter__(self) -> "Memory":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _load(self) -> None:
        """(Re)load metadata from the store and open (or rebuild) the search index."""
        self._load_metadata()
        self._managed.open(self._meta)

    def _load_metadata(self) -> None:
        self._seen_version = self.store.data_version()
        self.store.config = self.store._read_config()
        rows = self.store.vote_metadata()
        self._meta: dict[int, tuple[str, str, float]] = {r[0]: (r[1], r[2], r[3]) for r in rows}
        self._pruning = PruneState.from_config(self.store.config.get("pruning"))
        self._excluded = self._pruning.excluded()
        self._protos: PrototypeSet | None = None  # built on first use, then kept in step
        self._hashes: dict[str, int] = {}  # content hash -> an item holding that content
        self._hash_of: dict[int, str] = {}
        for item_id, _, _, _, digest in rows:
            if digest is not None:
                self._hashes.setdefault(digest, item_id)
                self._hash_of[item_id] = digest

    def is_stale(self) -> bool:
        """True when another process has committed since this object last loaded."""
        return self.store.data_version() != self._seen_version

    def refresh(self) -> None:
        """Catch up if another process has committed to this memory since we last looked."""
        if not self.is_stale():
            return
        self._load_metadata()
        self._managed.catch_up(self._meta)

    def _catch_up(self) -> None:
        # Every call refreshes first, unless its owner refreshes at safe points itself: a
        # server whose reader threads share this object must not reload under each other.
        if self.auto_refresh:
            self.refresh()

    # ---- the search index: its lifecycle lives in search/lifecycle.py --------------------

    @property
    def _index(self) -> VectorIndex:
        """The search index itself (search it directly; edit it through `_managed`)."""
        return self._managed.index

    @property
    def quality(self) -> Quality | None:
        """Recall and intrinsic dimension last measured on this memory's own vectors."""
        return self._managed.quality

    def set_index(self, kind: str, *, target_recall: float | None = None,
                  float16: bool | None = None) -> dict[str, Any]:
        """Switch the memory's search index (rebuilt from the store, then measured)."""
        target = self.store.config.get("target_recall", DEFAULT_TARGET_RECALL) \
            if target_recall is None else target_recall
        check_index_options(kind, target)
        self._catch_up()
        self._managed.set_kind(kind, self._meta, target_recall=target, float16=float16)
        self._seen_version = self.store.data_version()
        return self.info()["index"]

    def compact(self) -> dict[str, Any]:
        """Reclaim removed items' slots in the index and the store; re-measure recall.

        Afterwards no file in the memory directory holds a removed vector's bytes.
        """
        self._catch_up()
        self.store.vacuum()  # purges the store
        self._unpurged = False
        self._seen_version = self.store.data_version()
        reclaimed = self._managed.compact(self._meta)
        return {"reclaimed": reclaimed, **self._index.describe()}

    # ---- properties ------------------------------------------------------------------

    @property
    def path(self) -> Path:
        return self.store.path

    @property
    def dim(self) -> int:
        return self.store.dim

    @property
    def encoder_name(self) -> str | None:
        return self.store.config["encoder"]

    @property
    def defaults(self) -> VoteParams:
        return VoteParams(**self.store.config.get("defaults", {}))

    @property
    def pruning(self) -> PruneState:
        return self._pruning

    # ---- prototypes: members are the items that can vote (weight > 0, not hard-pruned) ---

    def prototypes(self) -> PrototypeSet:
        """The class prototypes, built on first use and updated by every edit after."""
        self._catch_up()
        if self._protos is None:
            ids, vectors = self.store.vectors()
            keep = np.array([self._votes(int(i)) for i in ids], dtype=bool)
            self._protos = PrototypeSet.fit(
                ids[keep], vectors[keep], [self._meta[int(i)][0] for i in ids[keep]],
                per_class=int(self.store.config.get("prototypes_per_class", 1)))
        return self._protos

    def _votes(self, item_id: int) -> bool:
        return self._meta[item_id][2] > 0 and item_id not in self._excluded

    def _sync_prototypes(self, ids: Sequence[int], vectors: np.ndarray | None = None) -> None:
        """Re-place changed items among the prototypes: out with the old, in if they vote."""
        if self._protos is None or not len(ids):
            return
        if vectors is None:
            ids, vectors = self._stored_vectors(list(ids))
        self._protos.remove(ids, vectors)
        keep = [j for j, i in enumerate(ids) if int(i) in self._meta and self._votes(int(i))]
        self._protos.add([ids[j] for j in keep], vectors[keep], [self._meta[int(ids[j])][0] for j in keep])

    def set_config(self, key: str, value: Any) -> None:
        """Write one config value (defaults, pruning, abstention...) and apply it here."""
        self.store.set_config(key, value)
        if key in ("pruning", "prototypes_per_class"):
            self._load()
        self._seen_version = self.store.data_version()

    def __len__(self) -> int:
        self._catch_up()
        return len(self._meta)

    @property
    def encoder(self) -> Encoder:
        """The memory's encoder, loaded on first use and checked against the stored id."""
        if self._encoder is None:
            name = self.encoder_name
            if name is None:
                raise EncoderError(
                    f"memory at {self.path} has no encoder: it stores precomputed vectors; "
                    "add them with add_vectors / `vismem add-vectors`"
                )
            encoder = create_encoder(name, weights=self.store.config.get("weights_path"))
            if encoder.id != self.store.config["encoder_id"]:
                raise EncoderError(
                    f"encoder {name} now has id {encoder.id}, but this memory was built with "
                    f"{self.store.config['encoder_id']}: its weights or preprocessing changed, "
                    "so new vectors would not be comparable"
                )
            self._encoder = encoder
        return self._encoder

    def use_encoder(self, encoder: Encoder) -> None:
        """Use an already-built encoder (shared between memories); must match the memory."""
        if encoder.id != self.store.config["encoder_id"]:
            raise EncoderError(
                f"encoder {encoder.id} does not match this memory's {self.store.config['encoder_id']}"
            )
        self._encoder = encoder

    # ---- adding ----------------------------------------------------------------------

    def add_images(
        self,
        paths: Iterable[str | Path],
        *,
        label: str | None = None,
        source: str | None = None,
        batch_size: int | None = None,
        allow_duplicates: bool = False,
        meta: dict[str, Any] | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        progress: Progress | None = None,
        on_commit: Callable[[list[int]], None] | None = None,
    ) -> AddReport:
        """Add image files and folders (class-subfolder layout gives labels).

        `meta` is stored with every image (beside its width and height), for
        `search(where=...)`, `classify_vectors(where=...)` and `remove(where=...)`.

        Each batch is committed in one transaction, so an interruption keeps every
        finished batch and no partial item. Unreadable files are skipped with a reason.
        An image whose content is already in the memory is skipped as a duplicate
        (it would only vote twice); with `allow_duplicates` it is added again, reusing
        the stored vector instead of re-encoding it.

        `progress(n)` is called as n more files are done; `on_commit(ids)` after each
        committed batch.
        """
        if label is not None:
            check_label(label)
        for key in meta or {}:
            check_meta_key(key)  # before any image is encoded
        self._catch_up()
        report = AddReport()
        encoder = self.encoder
        paths = [Path(p) for p in paths]
        files: list[tuple[ImageFile, str]] = []
        for root in paths:
            found, skipped = find_images([root], label=label)
            report.skipped += skipped
            files += [(f, source if source is not None else str(root)) for f in found]
        source_of = {id(f): src for f, src in files}
        known = {} if allow_duplicates else self._hashes
        for chunk, prepared, skipped in prepare_in_batches(
            [f for f, _ in files], encoder, batch_size or encoder.batch_size,
            known_hashes=known, thumbnails=True, max_pixels=max_pixels,
        ):
            report.skipped += skipped
            new_items = self._new_items(encode_prepared(encoder, prepared), prepared,
                                        lambda p: source_of[id(p.file)], allow_duplicates, report,
                                        meta=meta)
            ids = self.store.insert(new_items)
            self._apply_added(ids, new_items)
            report.added += ids
            if on_commit and ids:
                on_commit(ids)
            if progress:
                progress(len(chunk))
        self._seen_version = self.store.data_version()
        self._managed.after_growth(self._meta)
        return report

    def add_image_bytes(
        self,
        images: Sequence[tuple[str, bytes]],
        *,
        label: str,
        source: str,
        allow_duplicates: bool = False,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> AddReport:
        """Add images given as (name, bytes), e.g. uploads, all with one label and source.

        The name only appears in reports and in the item's `meta["name"]`; it is never
        opened as a path. Unreadable images are skipped with a reason, as in `add_images`.
        """
        check_label(label)
        encoder = self.encoder
        report = AddReport()
        for chunk in batched(list(images), encoder.batch_size):
            prepared: list[PreparedImage] = []
            for name, data in chunk:
                try:
                    prepared.append(prepare_bytes(ImageFile(Path(name), label), data, encoder,
                                                  thumbnails=True, max_pixels=max_pixels))
                except ImageReadError as exc:
                    report.skipped.append(Skipped(name, str(exc)))
            done = self.add_prepared(prepared, encode_prepared(encoder, prepared),
                                     source=source, allow_duplicates=allow_duplicates)
            report.added += done.added
            report.skipped += done.skipped
        return report

    def add_prepared(
        self,
        prepared: Sequence[PreparedImage],
        vectors: np.ndarray,
        *,
        source: str,
        allow_duplicates: bool = False,
    ) -> AddReport:
        """Insert images already decoded (`embed.prepare_bytes`) and encoded, in one transaction.

        `vectors` holds one row per prepared image that carries pixels, in order. This is
        the second half of `add_image_bytes`, for callers that encode elsewhere (the HTTP
        service batches encoding across requests). Duplicates are checked here, against
        the memory as it is now.
        """
        self._catch_up()
        if not allow_duplicates:
            prepared = [p if p.known_as is not None or p.content_hash not in self._hashes
                        else replace(p, known_as=self._hashes[p.content_hash]) for p in prepared]
        report = AddReport()
        new_items = self._new_items(vectors, prepared, lambda p: source, allow_duplicates,
                                    report, keep_paths=False)
        ids = self.store.insert(new_items)
        self._apply_added(ids, new_items)
        report.added += ids
        self._seen_version = self.store.data_version()
        self._managed.after_growth(self._meta)  # uploads grow it too: re-measure, maybe switch kind
        return report

    def _new_items(self, vectors, prepared, source_of, allow_duplicates, report,
                   keep_paths: bool = True, meta: dict[str, Any] | None = None) -> list[NewItem]:
        """NewItems for prepared images; `vectors` has a row for each one with pixels."""
        vectors = iter(vectors)
        batch_hashes: dict[str, str] = {}
        items: list[NewItem] = []
        for p in prepared:
            vector = next(vectors) if p.pixels is not None else None
            if p.known_as is not None:
                report.skipped.append(Skipped(str(p.file.path), f"duplicate of item {p.known_as}"))
                continue
            if not allow_duplicates and p.content_hash in batch_hashes:
                report.skipped.append(
                    Skipped(str(p.file.path), f"duplicate of {batch_hashes[p.content_hash]}")
                )
                continue
            batch_hashes[p.content_hash] = str(p.file.path)
            sized = {"width": p.size[0], "height": p.size[1], **(meta or {})}
            items.append(
                NewItem(
                    vector=vector,
                    label=p.file.label,
                    source=source_of(p),
                    # an uploaded image's name is the client's, not a path on this machine
                    path=str(p.file.path.resolve()) if keep_paths else None,
                    content_hash=p.content_hash,
                    meta=sized if keep_paths else {**sized, "name": str(p.file.path)},
                    thumbnail=p.thumbnail,
                )
            )
        return items

    def add_vectors(
        self,
        vectors: np.ndarray,
        labels: Sequence[str],
        *,
        sources: Sequence[str] | str = "vectors",
        metas: Sequence[dict[str, Any]] | None = None,
    ) -> list[int]:
        """Add precomputed embeddings float (n, dim) with one string label each.

        Vectors are L2-normalised on the way in (search is by cosine similarity).
        All are added in one transaction. Returns the new ids.
        """
        vectors = self._check_vectors(vectors)
        labels = list(labels)
        if len(labels) != len(vectors):
            raise InvalidInputError(f"{len(vectors)} vectors but {len(labels)} labels")
        for label in labels:
            check_label(label)
        sources = [sources] * len(labels) if isinstance(sources, str) else list(sources)
        metas = list(metas) if metas is not None else [{}] * len(labels)
        if len(sources) != len(labels) or len(metas) != len(labels):
            raise InvalidInputError("sources and metas must have one entry per vector")
        self._catch_up()
        items = [NewItem(vector=v, label=l, source=s, meta=m)
                 for v, l, s, m in zip(vectors, labels, sources, metas)]
        ids = self.store.insert(items)
        self._apply_added(ids, items)
        self._seen_version = self.store.data_version()
        self._managed.after_growth(self._meta)
        return ids

    def _apply_added(self, ids: list[int], items: Sequence[NewItem]) -> None:
        if not ids:
            return
        self._managed.add(np.asarray(ids, dtype=np.int64), np.stack([i.vector for i in items]))
        for item_id, item in zip(ids, items):
            self._meta[item_id] = (item.label, item.source, item.weight)
            if item.content_hash is not None:
                self._hashes.setdefault(item.content_hash, item_id)
                self._hash_of[item_id] = item.content_hash
        voting = [j for j, i in enumerate(ids) if self._votes(i)] if self._protos is not None else []
        if voting:
            self._protos.add([ids[j] for j in voting], np.stack([items[j].vector for j in voting]),
                             [items[j].label for j in voting])

    def _check_vectors(self, vectors: np.ndarray) -> np.ndarray:
        vectors = np.asarray(vectors)
        if vectors.ndim == 1:
            vectors = vectors[None, :]
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise InvalidInputError(
                f"expected vectors of dimension {self.dim}, got shape {tuple(vectors.shape)}"
            )
        if not np.issubdtype(vectors.dtype, np.number) or not np.isfinite(vectors).all():
            raise InvalidInputError("vectors must be finite numbers")
        return normalize_rows(vectors.astype(np.float32))

    # ---- reading: embed, search, classify ----------------------------------------------

    def embed_images(
        self,
        images: Sequence[str | Path | Image.Image],
        *,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        progress: Progress | None = None,
    ) -> tuple[np.ndarray, list[int], list[Skipped]]:
        """Encode paths or PIL images. Returns (vectors, positions kept, skipped).

        An image whose content is already in the memory reuses the stored vector.
        """
        encoder = self.encoder
        vectors = np.empty((len(images), self.dim), dtype=np.float32)
        kept: list[int] = []
        skipped: list[Skipped] = []
        pil = [(i, im) for i, im in enumerate(images) if isinstance(im, Image.Image)]
        if pil:
            vectors[[i for i, _ in pil]] = encoder.encode([upright_rgb(im) for _, im in pil])
            kept += [i for i, _ in pil]
        on_disk = [(i, ImageFile(Path(p), None)) for i, p in enumerate(images)
                   if not isinstance(p, Image.Image)]
        position = {id(f): i for i, f in on_disk}
        for chunk, prepared, bad in prepare_in_batches(
            [f for _, f in on_disk], encoder, encoder.batch_size, known_hashes=self._hashes, max_pixels=max_pixels
        ):
            skipped += bad
            fresh = iter(encode_prepared(encoder, prepared))
            reuse = [p.known_as for p in prepared if p.known_as is not None]
            stored = dict(zip(*self._stored_vectors(reuse))) if reuse else {}
            for p in prepared:
                i = position[id(p.file)]
                vectors[i] = stored[p.known_as] if p.known_as is not None else next(fresh)
                kept.append(i)
            if progress:
                progress(len(chunk))
        kept.sort()
        return vectors[kept], kept, skipped

    def _stored_vectors(self, ids: list[int]) -> tuple[list[int], np.ndarray]:
        found, vectors = self.store.vectors(ids)
        return found.tolist(), vectors

    def search(
        self,
        vectors: np.ndarray,
        k: int = 10,
        *,
        labels: Sequence[str] | None = None,
        sources: Sequence[str] | None = None,
        where: dict[str, Any] | None = None,
    ) -> list[list[Hit]]:
        """k nearest items for each query vector, nearest first.

        `labels` / `sources` restrict the search to items with those values, `where` to
        items whose metadata has every given key = value; the result still holds k
        items whenever that many match.
        """
        queries = self._check_vectors(vectors)
        if not isinstance(k, (int, np.integer)) or k < 1:
            raise InvalidInputError(f"k must be a positive integer, got {k!r}")
        self._catch_up()
        result = self._index.search(queries, int(k), allowed_ids=self._allowed(labels, sources, where))
        hits = []
        for sims, ids in zip(result.similarities, result.ids):
            row = []
            for sim, item_id in zip(sims, ids):
                if item_id == MISSING_ID:
                    break
                label, source, _ = self._meta[int(item_id)]
                row.append(Hit(int(item_id), label, source, float(1.0 - sim)))
            hits.append(row)
        return hits

    def _allowed(self, labels, sources, where=None) -> np.ndarray | None:
        if labels is None and sources is None and not where and not self._excluded:
            return None
        labels = set(labels) if labels is not None else None
        sources = set(sources) if sources is not None else None
        matching = set(self.store.ids_where(meta=where)) if where else None
        return np.fromiter(
            (i for i, (lab, src, _) in self._meta.items()
             if (labels is None or lab in labels) and (sources is None or src in sources)
             and (matching is None or i in matching) and i not in self._excluded),
            dtype=np.int64,
        )

    def classify_vectors(
        self,
        vectors: np.ndarray,
        *,
        k: int | None = None,
        vote: str | None = None,
        alpha: float | None = None,
        tau: float | None = None,
        mix: float | None = None,
        labels: Sequence[str] | None = None,
        sources: Sequence[str] | None = None,
        where: dict[str, Any] | None = None,
        paths: Sequence[str | None] | None = None,
        abstain: bool = False,
    ) -> list[Decision]:
        """Classify query vectors (n, dim). Unset vote options take the memory's defaults.

        `labels` / `sources` restrict the query to those items. With `abstain`, a
        query whose out-of-distribution score exceeds the calibrated threshold
        (see `vismem calibrate`) gets label None and `abstained` True.
        """
        defaults = self.defaults
        params = VoteParams(
            k=defaults.k if k is None else k,
            rule=defaults.rule if vote is None else vote,
            alpha=defaults.alpha if alpha is None else alpha,
            tau=defaults.tau if tau is None else tau,
            mix=defaults.mix if mix is None else mix,
        )
        calibration = self.store.config.get("abstain") if abstain else None
        if abstain and not calibration:
            raise InvalidInputError(
                f"memory at {self.path} has no abstention threshold: run `vismem calibrate {self.path}` first"
            )
        queries = self._check_vectors(vectors)
        self._catch_up()
        if not self._meta:
            raise EmptyMemoryError(
                f"memory at {self.path} is empty: add labelled images with `vismem add` first"
            )
        depth = max(params.k, calibration["k"]) if calibration else params.k
        result = self._index.search(queries, depth, allowed_ids=self._allowed(labels, sources, where))
        classes, proto_sims = self.prototypes().class_similarities(queries)
        if labels is not None:  # a restricted query only sees those classes' prototypes
            chosen = [j for j, c in enumerate(classes) if c in set(labels)]
            classes, proto_sims = [classes[j] for j in chosen], proto_sims[:, chosen]
        restriction = {key: (sorted(set(values)) if key != "where" else values) for key, values in
                       (("labels", labels), ("sources", sources), ("where", where))
                       if values is not None} or None
        relabelled = self.store.config.get("relabelled", {})
        paths = list(paths) if paths is not None else [None] * len(queries)
        decisions = []
        for sims, ids, path, proto_row in zip(result.similarities, result.ids, paths, proto_sims):
            live = ids != MISSING_ID
            ids, sims = ids[live], sims[live]
            meta = [self._meta[int(i)] for i in ids[: params.k]]
            decision = decide(
                sims[: params.k],
                ids[: params.k].tolist(),
                [m[0] for m in meta],
                [m[1] for m in meta],
                np.array([m[2] for m in meta], dtype=np.float64),
                params,
                path=path,
                prune_factors=np.array([self._pruning.factor(i) for i in ids[: params.k]]),
                relabelled_from=[relabelled.get(str(int(i))) for i in ids[: params.k]],
                prototypes=_prototype_distances(classes, proto_row),
                restriction=restriction,
            )
            if calibration:
                kth = 1.0 - float(sims[: calibration["k"]][-1]) if len(sims) else 2.0
                nearest = min(decision.prototypes.values(), default=2.0)
                score = ood_scores(kth, nearest, calibration.get("prototype_weight", 1.0))
                decision = decision.abstain(float(score), calibration["threshold"])
            decisions.append(decision)
        return decisions

    def classify(
        self, images: Sequence[str | Path | Image.Image], **options: Any
    ) -> list[Decision]:
        """Classify image paths or PIL images; options as for `classify_vectors`.

        Raises InvalidInputError naming the first image that cannot be read.
        """
        vectors, kept, skipped = self.embed_images(images)
        if skipped:
            raise InvalidInputError(f"cannot classify {skipped[0].path}: {skipped[0].reason}")
        paths = [str(p) if not isinstance(p, Image.Image) else None for p in images]
        return self.classify_vectors(vectors, paths=paths, **options)

    # ---- editing ---------------------------------------------------------------------

    def remove(
        self,
        ids: Iterable[int] | None = None,
        *,
        label: str | None = None,
        source: str | None = None,
        where: dict[str, Any] | None = None,
        purge: bool = False,
    ) -> list[int]:
        """Remove items by ids, or every item with a label, a source or metadata values.

        Returns the removed ids. Removal is durable when this returns, and a removed item
        is never returned by a search again. Older copies of its bytes stay in the
        SQLite log and the saved index until `purge` (or `purge=True` here), which
        `close`, `compact`, the CLI and the service run; so one removal costs one
        small commit.
        """
        chosen = sum(x is not None for x in (ids, label, source, where))
        if chosen != 1:
            raise InvalidInputError("remove needs exactly one of: ids, label, source, where")
        self._catch_up()
        if ids is not None:
            targets = [int(i) for i in ids]
        else:
            targets = self.store.ids_where(label=label, source=source, meta=where)
        gone_vectors = self._stored_vectors(targets) if self._protos is not None else None
        removed = self.store.delete(targets)
        if not removed:
            return removed
        self._unpurged = True  # the store's log still holds older copies of the rows
        if gone_vectors is not None:
            self._protos.remove(*gone_vectors)
        self._managed.remove(np.asarray(removed, dtype=np.int64))
        for item_id in removed:
            self._meta.pop(item_id, None)
            digest = self._hash_of.pop(item_id, None)
            if digest is not None and self._hashes.get(digest) == item_id:
                survivors = self.store.ids_with_hash(digest)  # copies added with allow_duplicates
                if survivors:
                    self._hashes[digest] = survivors[0]
                else:
                    del self._hashes[digest]
        self._seen_version = self.store.data_version()
        if self._managed.compact_if_needed(self._meta):
            purge = True  # compaction promises the bytes are gone
        if purge:
            self.purge()
        return removed

    def purge(self) -> None:
        """Drop removed items' older copies from every file of the memory, now.

        Afterwards no file in the memory directory holds a removed vector's bytes.
        """
        self.store.purge()
        self._managed.scrub()
        self._unpurged = False

    def relabel(self, ids: Iterable[int], label: str) -> list[int]:
        """Give items a new label (no re-encoding). Returns the ids that exist."""
        return self._update(list(ids), label=label)

    def set_weight(self, ids: Iterable[int], weight: float) -> list[int]:
        """Set items' vote weight: 0 blocks, >1 boosts, 1 is normal."""
        return self._update(list(ids), weight=float(weight))

    def update(self, ids: Iterable[int], *, label: str | None = None,
               weight: float | None = None) -> list[int]:
        """Relabel and/or reweight items in one transaction. Returns the ids that exist."""
        change = {key: value for key, value in (("label", label), ("weight", weight))
                  if value is not None}
        if not change:
            raise InvalidInputError("update needs a new label or a weight")
        if "weight" in change:
            change["weight"] = float(change["weight"])
        return self._update(list(ids), **change)

    def _update(self, ids: list[int], **change: Any) -> list[int]:
        self._catch_up()
        updated = self.store.update(ids, **change)
        if "label" in change:  # remember the first label, so explanations show the relabel
            history = dict(self.store.config.get("relabelled", {}))
            for item_id in updated:
                old = history.setdefault(str(item_id), self._meta[item_id][0])
                if old == change["label"]:
                    del history[str(item_id)]
            self.store.set_config("relabelled", history)
        for item_id in updated:
            label, source, weight = self._meta[item_id]
            self._meta[item_id] = (change.get("label", label), source, change.get("weight", weight))
        self._sync_prototypes(updated)
        self._seen_version = self.store.data_version()
        return updated

    def get(self, item_id: int) -> Item:
        items = self.store.items([item_id])
        if not items:
            raise InvalidInputError(f"no item with id {item_id}")
        return items[0]

    # ---- reporting -------------------------------------------------------------------

    def class_counts(self) -> dict[str, int]:
        self._catch_up()
        return dict(sorted(Counter(m[0] for m in self._meta.values()).items()))

    def info(self) -> dict[str, Any]:
        """What `vismem info` shows: counts, encoder, format, index (with measured recall,
        intrinsic dimension and a warning when recall is below target), disk use."""
        self._catch_up()
        config = self.store.config
        classes = self.class_counts()
        quality = self.quality
        return {
            "path": str(self.path),
            "items": len(self._meta),
            "classes": classes,
            "class_count": len(classes),
            "encoder": config["encoder"],
            "encoder_id": config["encoder_id"],
            "dim": self.dim,
            "format_version": int(config.get("format_version", FORMAT_VERSION)),
            "index": self._managed.describe(),
            "intrinsic_dim": quality.lid if quality else None,
            "defaults": self.defaults.to_dict(),
            "prototypes_per_class": int(config.get("prototypes_per_class", 1)),
            "pruning": {"mode": self._pruning.mode, "excluded": len(self._excluded)},
            "abstain": config.get("abstain"),
            "disk_bytes": self.store.disk_bytes(),
        }


def _prototype_distances(classes: Sequence[str], similarities: np.ndarray) -> dict[str, float]:
    """Class -> cosine distance to its nearest prototype, for the classes that have one."""
    finite = np.isfinite(similarities)
    return dict(zip(np.asarray(classes, dtype=object)[finite].tolist(), (1.0 - similarities[finite]).tolist()))

"""Bulk ingestion on a Ray cluster: `vismem add --ray ADDRESS`, `Memory.add_images(ray=...)`.

    driver   find files: (path, label, source) rows
    pass 1   read + SHA-256 (Ray tasks) -> hashes to the driver, which asks the store which
             it holds, one query per batch: those are skipped (or copied) without decoding
    pass 2   read + decode + preprocess (Ray tasks, one CPU each)
             -> encode (a pool of encoder actors: one per GPU when the cluster has GPUs,
                else CPU actors that leave CPUs free for decoding)
    driver   commits through the memory's one commit path, a batch per transaction

Encoding and decoding scale with the cluster; the memory is written only by the driver,
in committed batches, so an interrupted run keeps every finished batch, and running it
again hashes every file but decodes and encodes only what is not in the memory yet
(reading each file twice is the price of that). Files must be readable under the same
path on every node (a shared filesystem); vismem and the encoder's weights must be
installed there too. Unreadable or undecodable files are skipped with the reason, as by
`add`. Vectors equal those of a plain `add` (same encoder, same preprocessing).
"""

from __future__ import annotations

import logging
import re
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .embed import PreparedImage, decode_pixels
from .encoders import EncoderOptions, Preprocessing
from .errors import EncoderError, VismemError
from .images import DEFAULT_MAX_PIXELS, ImageFile, ImageReadError, Skipped, content_hash
from .settings import EncoderIdentity

if TYPE_CHECKING:
    from .ingest import AddReport, Ingestor

LOCAL = "local"         # `--ray local`: start a Ray on this machine for this run
HASH_BATCH = 256        # files per hashing task, and per store lookup


@dataclass(frozen=True)
class RayPlan:
    """How the encoding stage is laid out: `actors` encoder actors of `cpus` CPUs and
    `gpus` GPUs each; decoding runs in tasks of one CPU on what is left."""

    actors: int
    cpus: float
    gpus: float

    def to_dict(self) -> dict[str, Any]:
        return {"actors": self.actors, "cpus_per_actor": self.cpus, "gpus_per_actor": self.gpus}


def plan_for(resources: Mapping[str, float], actors: int | None = None) -> RayPlan:
    """The encoder pool for a cluster's resources (`ray.cluster_resources()`).

    One actor per GPU when there are GPUs. Without, half the CPUs encode and the rest
    read and decode, at least one CPU each: two actors of one CPU on a 2-CPU node left
    the read stage no CPU, and the pipeline hung.

    >>> plan_for({"CPU": 2.0})
    RayPlan(actors=1, cpus=1.0, gpus=0.0)
    >>> plan_for({"CPU": 16.0, "GPU": 2.0})
    RayPlan(actors=2, cpus=1.0, gpus=1.0)
    """
    cpus = float(resources.get("CPU", 0))
    gpus = float(resources.get("GPU", 0))
    if cpus < 2:
        raise VismemError(f"the Ray cluster has {cpus:g} CPUs: Ray ingestion needs at least 2 "
                          "(one to read and decode, one to encode)")
    if gpus >= 1:
        return RayPlan(actors or int(gpus), 1.0, 1.0)
    most = int(cpus) - 1
    return RayPlan(min(actors or max(1, int(cpus) // 2), most), 1.0, 0.0)


# ---- what runs on the cluster (plain functions over Ray Data batches) --------------------

def hash_files(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Pass 1: each file's SHA-256, or why it cannot be read."""
    hashes, errors = [], []
    for path in batch["path"]:
        try:
            hashes.append(content_hash(Path(path).read_bytes()))
            errors.append("")
        except OSError as exc:
            hashes.append("")
            errors.append(f"unreadable: {exc.strerror or exc}")
    return {**batch, "hash": np.asarray(hashes, dtype=object), "error": np.asarray(errors, dtype=object)}


def decode_files(batch: dict[str, np.ndarray], preprocessing: Preprocessing, max_pixels: int) -> dict[str, np.ndarray]:
    """Pass 2: read, decode and preprocess each file (pixels, thumbnail, size), or why not."""
    side = preprocessing.image_size
    pixels = np.zeros((len(batch["path"]), side, side, 3), dtype=np.uint8)
    thumbs, widths, heights, errors = [], [], [], []
    for k, path in enumerate(batch["path"]):
        try:
            data = Path(path).read_bytes()
            if content_hash(data) != batch["hash"][k]:
                raise ImageReadError("changed while being added: add it again")
            pixels[k], thumb, size = decode_pixels(data, preprocessing, True, max_pixels)
            thumbs.append(thumb)
            widths.append(size[0])
            heights.append(size[1])
            errors.append("")
        except (OSError, ImageReadError) as exc:
            thumbs.append(b"")
            widths.append(0)
            heights.append(0)
            errors.append(str(exc) if isinstance(exc, ImageReadError) else f"unreadable: {exc.strerror or exc}")
    return {**batch, "pixels": pixels, "thumbnail": np.asarray(thumbs, dtype=object),
            "width": np.asarray(widths), "height": np.asarray(heights), "error": np.asarray(errors, dtype=object)}


class EncodeActor:
    """An encoder loaded once per actor, with the memory's encoder options on the actor's
    device; encodes the rows that decoded."""

    def __init__(self, name: str, weights: str | None, encoder_id: str, options: EncoderOptions) -> None:
        from .encoders import create_encoder

        self.encoder = create_encoder(name, weights=weights, options=options)
        if self.encoder.id != encoder_id:
            raise EncoderError(f"encoder {name} on this Ray node has id {self.encoder.id}, the memory's is "
                               f"{encoder_id}: install the same weights and vismem on every node")

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ok = np.asarray([not e for e in batch["error"]], dtype=bool)
        vectors = np.zeros((len(ok), self.encoder.dim), dtype=np.float32)
        if ok.any():
            vectors[ok] = self.encoder.embed_preprocessed(batch["pixels"][ok])
        out = {key: value for key, value in batch.items() if key != "pixels"}
        return {**out, "vector": vectors}


def actor_options(options: EncoderOptions | None, plan: RayPlan, encoder: str | None = None) -> EncoderOptions:
    """The memory's encoder options as an actor runs them: on its GPU when it has one and
    the encoder can use it, else on the CPU; decoding is the cluster's tasks' job, not the actor's.

    >>> actor_options(EncoderOptions(runtime="onnx"), RayPlan(1, 1.0, 0.0))
    EncoderOptions(device='cpu', runtime='onnx', precision='auto', batch_size=None, decode_workers=0)
    >>> actor_options(None, RayPlan(1, 1.0, 1.0), "pixels").device
    'cpu'
    """
    from .encoders.registry import supports_device

    gpu = plan.gpus and (encoder is None or supports_device(encoder, "cuda"))
    return replace(options or EncoderOptions(), device="cuda" if gpu else "cpu", decode_workers=0)


# ---- the driver ---------------------------------------------------------------------------

def add_files_on_ray(ingestor: Ingestor, paths: Sequence[str | Path], *, address: str = LOCAL,
                     label: str | None = None, source: str | None = None, batch_size: int | None = None,
                     allow_duplicates: bool = False, meta: Mapping[str, Any] | None = None,
                     max_pixels: int = DEFAULT_MAX_PIXELS, actors: int | None = None,
                     options: EncoderOptions | None = None,
                     progress: Callable[[int], None] | None = None,
                     on_commit: Callable[[list[int]], None] | None = None) -> AddReport:
    """Add image files and folders, reading, decoding and encoding them on a Ray cluster
    (`address`: "local" starts one here; "auto", "HOST:PORT" or "ray://HOST:PORT" joins
    one). `options`: the encoder options the actors run (their device is their own:
    CUDA on GPU nodes, else the CPU). Same result and report as `Ingestor.add_files`."""
    from .ingest import AddReport

    report = AddReport()
    files = ingestor.files(paths, label=label, source=source, report=report, progress=progress)
    if not files:
        return report
    with _ray(address) as ray:
        plan = plan_for(ray.cluster_resources(), actors)
        fresh = _pass_one(ray, ingestor, files, report, allow_duplicates=allow_duplicates, meta=meta,
                          progress=progress, on_commit=on_commit)
        if fresh:
            _pass_two(ray, ingestor, fresh, plan, report, batch_size=batch_size or ingestor.encoder.batch_size,
                      allow_duplicates=allow_duplicates, meta=meta, max_pixels=max_pixels,
                      options=actor_options(options, plan, ingestor.store.identity.name), progress=progress,
                      on_commit=on_commit)
    return report


def _rows(files: Sequence[tuple[ImageFile, str]]) -> list[dict[str, str]]:
    return [{"path": str(f.path.resolve()), "given": str(f.path), "label": f.label or "", "source": src}
            for f, src in files]


def _pass_one(ray: Any, ingestor: Ingestor, files: Sequence[tuple[ImageFile, str]], report: AddReport, *,
              allow_duplicates: bool, meta: Mapping[str, Any] | None, progress: Callable[[int], None] | None,
              on_commit: Callable[[list[int]], None] | None) -> list[dict[str, str]]:
    """Hash every file on the cluster; commit what the store already holds (skips or
    copies), and return the rest."""
    fresh: list[dict[str, str]] = []
    hashed = in_order(ray.data.from_items(_rows(files))).map_batches(hash_files, batch_size=HASH_BATCH, num_cpus=1)
    for batch in hashed.iter_batches(batch_size=HASH_BATCH, batch_format="numpy"):
        rows = _unbatch(batch)
        bad = [r for r in rows if r["error"]]
        report.skipped += [Skipped(r["given"], r["error"]) for r in bad]
        good = [r for r in rows if not r["error"]]
        held = ingestor.store.known_hashes([r["hash"] for r in good])
        known = [r for r in good if r["hash"] in held]
        if known:
            prepared = [PreparedImage(_file(r), r["hash"], known_as=held[r["hash"]]) for r in known]
            ingestor.commit_encoded(prepared, np.empty((0, ingestor.encoder.dim), np.float32), _source_of(known),
                                    report, allow_duplicates=allow_duplicates, meta=meta, on_commit=on_commit)
        fresh += [r for r in good if r["hash"] not in held]
        if progress:
            progress(len(bad) + len(known))
    return fresh


def _pass_two(ray: Any, ingestor: Ingestor, fresh: list[dict[str, str]], plan: RayPlan, report: AddReport, *,
              batch_size: int, allow_duplicates: bool, meta: Mapping[str, Any] | None, max_pixels: int,
              options: EncoderOptions, progress: Callable[[int], None] | None,
              on_commit: Callable[[list[int]], None] | None) -> None:
    """Decode and encode the files the store does not hold; commit them batch by batch."""
    encoder = ingestor.encoder
    ds = decode_and_encode(ray, fresh, plan, ingestor.store.identity, encoder.preprocessing, options,
                           batch_size=batch_size, max_pixels=max_pixels)
    for batch in ds.iter_batches(batch_size=batch_size, batch_format="numpy"):
        rows = _unbatch(batch)
        bad = [r for r in rows if r["error"]]
        good = [r for r in rows if not r["error"]]
        report.skipped += [Skipped(r["given"], r["error"]) for r in bad]
        prepared = [PreparedImage(_file(r), r["hash"], thumbnail=r["thumbnail"] or None,
                                  size=(int(r["width"]), int(r["height"]))) for r in good]
        vectors = np.asarray([r["vector"] for r in good], dtype=np.float32).reshape(len(good), encoder.dim)
        ingestor.commit_encoded(prepared, vectors, _source_of(good), report, allow_duplicates=allow_duplicates,
                                meta=meta, on_commit=on_commit)
        if progress:
            progress(len(rows))


def decode_and_encode(ray: Any, fresh: list[dict[str, str]], plan: RayPlan, identity: EncoderIdentity,
                      preprocessing: Preprocessing, options: EncoderOptions, *, batch_size: int,
                      max_pixels: int) -> Any:
    """Pass 2 as a Ray Dataset: decoding tasks, then the encoder actors.

    Each decoding task asks for the memory its worst case takes: one image of `max_pixels`
    decoded (4 bytes a pixel, as PIL may hold it while converting) and its batch of
    preprocessed pixels. That keeps a node with little RAM from decoding more huge images at
    once than it holds, and keeps Ray Data from fusing decoding into the encoder actors
    (it fuses maps whose resource requests are equal): fused, a CPU-only cluster decoded
    inside the actors and left the CPUs kept for decoding idle."""
    blocks = max(1, min(len(fresh) // batch_size, 4 * plan.actors * 8))
    side = preprocessing.image_size
    ds = in_order(ray.data.from_items(fresh, override_num_blocks=blocks))
    ds = ds.map_batches(decode_files, batch_size=batch_size, num_cpus=1,
                        memory=4 * max_pixels + 3 * side * side * batch_size,
                        fn_kwargs={"preprocessing": preprocessing, "max_pixels": max_pixels})
    return ds.map_batches(EncodeActor, batch_size=batch_size, compute=ray.data.ActorPoolStrategy(size=plan.actors),
                          num_cpus=plan.cpus, num_gpus=plan.gpus or None,
                          fn_constructor_args=(identity.name, identity.weights_path, identity.id, options))


def in_order(ds: Any) -> Any:
    """`ds`, yielding its rows in input order (Ray's `preserve_order`): items get ids in the
    order of the files, as a plain add gives them. Ray Data otherwise yields blocks as they
    finish, and with two or more encoder actors that order changed from run to run. Set on
    the dataset's own context (`from_items` takes a deep copy of the process-wide one, and
    its maps share it), so the caller's other datasets keep their setting."""
    ds.context.execution_options.preserve_order = True  # (Dataset.context: a Ray DeveloperAPI)
    return ds


def _unbatch(batch: Mapping[str, np.ndarray]) -> list[dict[str, Any]]:
    n = len(next(iter(batch.values())))
    return [{key: value[k] for key, value in batch.items()} for k in range(n)]


def _file(row: Mapping[str, Any]) -> ImageFile:
    return ImageFile(Path(row["given"]), row["label"] or None)


def _source_of(rows: Sequence[Mapping[str, Any]]) -> Callable[[PreparedImage], str]:
    by_path = {str(r["given"]): str(r["source"]) for r in rows}
    return lambda p: by_path[str(p.file.path)]


def check_reachable(address: str, timeout: float = 10.0) -> None:
    """Raise VismemError when nothing answers at a HOST:PORT or ray://HOST:PORT address:
    `ray.init` retries such an address for minutes, printing its own log lines meanwhile.
    Other addresses ("local", "auto") are Ray's to resolve."""
    found = re.fullmatch(r"(?:ray://)?\[?([^\[\]/]+?)\]?:(\d+)", address)
    if found is None:
        return
    try:
        socket.create_connection((found[1], int(found[2])), timeout=timeout).close()
    except OSError as exc:
        raise VismemError(f"no Ray cluster answers at {address} ({exc.strerror or exc}): check the address, or "
                          "start a cluster there (`ray start --head`); `--ray local` starts one for this run") from None


class _ray:
    """`with _ray(address) as ray`: a Ray connection for one run; a Ray started here is
    stopped after it, a cluster joined is only left."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.started = False

    def __enter__(self) -> Any:
        try:
            import ray
        except ImportError as exc:
            raise VismemError('ingestion on Ray needs Ray Data: pip install "vismem[ray]"') from exc
        check_reachable(self.address)
        if not ray.is_initialized():
            ray.init(address=None if self.address == LOCAL else self.address, include_dashboard=False,
                     log_to_driver=False, configure_logging=False)
            self.started = True
        ray.data.DataContext.get_current().enable_progress_bars = False
        for name in ("ray", "ray.data"):  # Ray Data logs each dataset's plan at INFO (set on import)
            logging.getLogger(name).setLevel(logging.WARNING)
        return ray

    def __exit__(self, *exc: object) -> None:
        if self.started:
            import ray

            ray.shutdown()

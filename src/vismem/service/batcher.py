"""Encoder work off the event loop, batched across requests that arrive together.

Requests hand in preprocessed pixels and await their vectors. One worker task takes
whatever is queued (up to `max_batch` images) and runs one forward pass in a thread,
so while a batch is encoding the next one gathers: under load, batches grow by
themselves and nobody waits for a timer.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np

from ..encoders import Encoder
from .loops import needs_new_loop


@dataclass
class BatchStats:
    batches: int = 0
    images: int = 0
    largest: int = 0

    def to_dict(self) -> dict[str, float]:
        mean = self.images / self.batches if self.batches else 0.0
        return {"batches": self.batches, "images": self.images, "largest_batch": self.largest,
                "mean_batch": round(mean, 2)}


@dataclass
class _Job:
    pixels: np.ndarray  # uint8 (n, H, W, 3)
    future: asyncio.Future = field(repr=False)


class EncodeBatcher:
    """`await batcher.encode(pixels)` -> L2-normalised float32 vectors (n, dim)."""

    def __init__(self, encoder: Encoder, executor: Executor, max_batch: int | None = None) -> None:
        self.encoder = encoder
        self.max_batch = max_batch or encoder.batch_size
        self.stats = BatchStats()
        self._executor = executor
        self._queue: asyncio.Queue[_Job] | None = None
        self._worker: asyncio.Task | None = None
        self._waiting = 0  # jobs handed in and not answered yet
        self._binding = threading.Lock()  # two loops' threads must not both make a worker

    async def encode(self, pixels: np.ndarray) -> np.ndarray:
        if len(pixels) == 0:
            return np.empty((0, self.encoder.dim), dtype=np.float32)
        loop = asyncio.get_running_loop()
        with self._binding:
            # the queue and the worker belong to one loop: made again for a new one (loops.py)
            if self._worker is None or self._worker.done() or needs_new_loop(
                    self._worker.get_loop(), self._waiting == 0, "the encoder's batcher"):
                self._queue = asyncio.Queue()
                self._worker = loop.create_task(self._run())
            future = loop.create_future()
            assert self._queue is not None  # made with the worker, above
            self._queue.put_nowait(_Job(pixels, future))
            self._waiting += 1
        try:
            return await future
        finally:
            with self._binding:
                self._waiting -= 1

    async def close(self) -> None:
        worker, self._worker = self._worker, None
        # a worker of another loop is cancelled with that loop's tasks when it ends
        if worker is not None and worker.get_loop() is asyncio.get_running_loop():
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        queue = self._queue
        assert queue is not None
        while True:
            jobs = [await queue.get()]
            count = len(jobs[0].pixels)
            while count < self.max_batch and not queue.empty():
                jobs.append(queue.get_nowait())
                count += len(jobs[-1].pixels)
            batch = np.concatenate([job.pixels for job in jobs])
            try:
                vectors = await loop.run_in_executor(
                    self._executor, self.encoder.embed_preprocessed, batch
                )
            except Exception as exc:  # hand the failure to every waiting request
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(exc)
                continue
            self.stats.batches += 1
            self.stats.images += len(batch)
            self.stats.largest = max(self.stats.largest, len(batch))
            start = 0
            for job in jobs:
                end = start + len(job.pixels)
                if not job.future.done():
                    job.future.set_result(vectors[start:end])
                start = end

"""Cross-request batching: the faces of concurrent requests go through the networks together.

Requests put jobs (the aligned face pairs of a verify, the faces of an embed) on a bounded queue. One loop takes
the first job, keeps taking jobs until the batch holds ``max_faces`` faces or ``max_wait_s`` has passed since the
first, and runs the batch on one worker thread: ``Verifier.score_pairs`` classifies every face of every verify job
in one call and runs E_F and E_P concurrently, each on its route's faces; ``Verifier.embed_faces`` does the same
for embed jobs. Each request then gets its own part back. A full queue is refused at once (``QueueFull``: the
service answers 503 with Retry-After) rather than letting latency grow without bound.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

from ..verifier import EmbedResult, Face, Verifier, VerifyResult
from .metrics import Metrics


class QueueFull(Exception):
    """The batch queue is full: the caller should retry later."""


@dataclass
class _Job:
    kind: Literal["verify", "embed"]
    items: list[Any]  # verify: (Face, Face) pairs; embed: Faces
    future: asyncio.Future[list[Any]] = field(repr=False)

    @property
    def faces(self) -> int:
        return 2 * len(self.items) if self.kind == "verify" else len(self.items)


class Batcher:
    def __init__(self, verifier: Verifier, max_faces: int, max_wait_s: float, max_queue: int, metrics: Metrics) -> None:
        self.verifier = verifier
        self.max_faces = max_faces
        self.max_wait_s = max_wait_s
        self.metrics = metrics
        self._max_queue = max_queue
        self._queue: asyncio.Queue[_Job] | None = None
        self._task: asyncio.Task[None] | None = None
        # One thread: the backend runs one batch at a time, and batches stay in arrival order.
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="bfm-batch")

    async def start(self) -> None:
        self._queue = asyncio.Queue(maxsize=self._max_queue)
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """After the requests in flight: what is queued is finished, then the loop ends."""
        if self._queue is not None:
            await self._queue.join()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._worker.shutdown(wait=True)

    async def verify(self, pairs: list[tuple[Face, Face]]) -> list[VerifyResult]:
        return await self._submit("verify", pairs)

    async def embed(self, faces: list[Face]) -> list[EmbedResult]:
        return await self._submit("embed", faces)

    async def _submit(self, kind: Literal["verify", "embed"], items: list[Any]) -> list[Any]:
        assert self._queue is not None, "Batcher.start() first"
        job = _Job(kind, items, asyncio.get_running_loop().create_future())
        try:
            self._queue.put_nowait(job)
        except asyncio.QueueFull:
            raise QueueFull from None
        self.metrics.queue_depth = self._queue.qsize()
        return await job.future

    async def _run(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            deadline = loop.time() + self.max_wait_s
            while sum(job.faces for job in batch) < self.max_faces:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), remaining))
                except TimeoutError:
                    break
            self.metrics.queue_depth = self._queue.qsize()
            self.metrics.batch(sum(job.faces for job in batch))
            try:
                results = await loop.run_in_executor(self._worker, self._process, batch)
            except Exception as exc:  # noqa: BLE001 - every waiting request must hear of it
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(exc)
            else:
                for job, result in zip(batch, results):
                    if not job.future.done():  # a request that timed out has stopped waiting
                        job.future.set_result(result)
            finally:
                for _ in batch:
                    self._queue.task_done()

    def _process(self, batch: list[_Job]) -> list[list[Any]]:
        pairs = [pair for job in batch if job.kind == "verify" for pair in job.items]
        faces = [face for job in batch if job.kind == "embed" for face in job.items]
        verified = iter(self.verifier.score_pairs(pairs))
        embedded = iter(self.verifier.embed_faces(faces))
        return [[next(verified if job.kind == "verify" else embedded) for _ in job.items] for job in batch]

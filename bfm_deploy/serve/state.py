"""What every route of one bfm-serve app shares, in one typed object (``app.state.service``), and the work the
routes have in common: decoding and aligning on the worker pool, batching with a timeout, the gallery's thread.

``ServiceState`` exists from ``create_app`` on (options, metrics); its ``lifespan`` opens the rest (``Running``:
the verifier, its threads, the batcher, the gallery) before the first request and closes it after the last.
Routes get it through the ``Service`` dependency.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, TypeVar

import numpy as np
from fastapi import Depends, FastAPI, Request

from ..bundle import default_bundle
from ..contract import CROP_SIZE
from ..errors import BfmError
from ..images import ImageLimits, decode_image
from ..verifier import Face, FaceFeatures, Verifier
from .batcher import Batcher, QueueFull
from .explaining import Explaining
from .detail import in_photo_pixels
from .failures import Refused
from .inputs import Blob
from .metrics import Metrics
from .options import ServeOptions

if TYPE_CHECKING:
    from ..gallery import Gallery

T = TypeVar("T")


@dataclass
class Running:
    """What the lifespan opens."""

    verifier: Verifier
    pool: ThreadPoolExecutor  # decoding and detection: --workers threads
    batcher: Batcher
    gallery_pool: ThreadPoolExecutor  # one thread: the gallery's connection lives there
    gallery: Gallery | None
    explaining: Explaining  # /v1/explain's networks, loaded when first asked


@dataclass
class ServiceState:
    options: ServeOptions
    metrics: Metrics = field(default_factory=Metrics)
    limits: ImageLimits = field(default_factory=ImageLimits)
    running: Running | None = None
    ready: bool = False

    @asynccontextmanager
    async def lifespan(self, _app: FastAPI) -> AsyncIterator[None]:
        await self._start()
        try:
            yield
        finally:
            await self._stop()

    async def _start(self) -> None:
        options = self.options
        verifier = Verifier(options.bundle or default_bundle(), backend=options.backend, detector=options.detector,
                            batch_size=max(2, options.max_batch))
        pool = ThreadPoolExecutor(options.workers, thread_name_prefix="bfm-decode")
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(pool, _warm_up, verifier)  # the first request should not pay for loading
        batcher = Batcher(verifier, options.max_batch, options.max_wait_ms / 1000, options.queue_size, self.metrics)
        await batcher.start()
        gallery_pool = ThreadPoolExecutor(1, thread_name_prefix="bfm-gallery")
        gallery = None
        if options.gallery is not None:
            from ..gallery import Gallery

            where = options.gallery
            gallery = await loop.run_in_executor(gallery_pool, lambda: Gallery.open(where, verifier.bundle, create=True))
        self.running = Running(verifier, pool, batcher, gallery_pool, gallery, Explaining())
        self.ready = True

    async def _stop(self) -> None:
        self.ready = False
        running = self.running
        if running is None:
            return
        await running.batcher.stop()  # uvicorn has let the requests in flight finish; what they queued finishes too
        if running.gallery is not None:
            await asyncio.get_running_loop().run_in_executor(running.gallery_pool, running.gallery.close)
        running.gallery_pool.shutdown(wait=True)
        running.pool.shutdown(wait=True)
        running.explaining.close()
        running.verifier.close()

    def _running(self) -> Running:
        if self.running is None:
            raise Refused(503, "not ready: loading the bundle")
        return self.running

    @property
    def verifier(self) -> Verifier:
        return self._running().verifier

    @property
    def batcher(self) -> Batcher:
        return self._running().batcher

    @property
    def explaining(self) -> Explaining:
        return self._running().explaining

    async def faces_of(self, blobs: list[Blob], aligned: bool, located: bool = False) -> list[Face | BfmError]:
        """Decode and align on the worker pool, off the event loop; an image's failure stays its own. ``located``:
        each face's detection in its uploaded photo's pixels (``detail.in_photo_pixels``), not the working copy's."""
        verifier, limits = self.verifier, self.limits
        # A photo is decoded no larger than detection works on (a large JPEG at 1/2..1/8 scale by libjpeg), as
        # bfm-verify decodes a file: a request then holds at most --max-pairs images of that size, not of 40
        # megapixels each, and gets the offline answer. An aligned crop is decoded as it is (its size is checked).
        max_side = None if aligned else verifier.aligner.config.work_side

        def work() -> list[Face | BfmError]:
            images: list[np.ndarray | BfmError] = []
            for name, data in blobs:
                try:
                    images.append(decode_image(data, name, limits, max_side))  # its errors name the upload already
                except BfmError as exc:
                    images.append(exc)
            good = [(blob, image) for blob, image in zip(blobs, images) if not isinstance(image, BfmError)]
            # the aligner sees arrays, so its errors ("no face found") get the upload's name here
            aligned_faces = verifier.prepare_many([image for _, image in good], aligned=aligned)
            prepared = iter(BfmError(f"{name}: {face}") if isinstance(face, BfmError)
                            else in_photo_pixels(face, data, name, image) if located else face
                            for ((name, data), image), face in zip(good, aligned_faces))
            return [image if isinstance(image, BfmError) else next(prepared) for image in images]

        return await asyncio.get_running_loop().run_in_executor(self._running().pool, work)

    async def batched(self, call: Awaitable[list[T]]) -> list[T]:
        """A batcher call within --timeout-s: a full queue is a 503, a late answer a 504."""
        try:
            return await asyncio.wait_for(call, self.options.timeout_s)
        except QueueFull:
            raise Refused(503, "busy: the batch queue is full, retry shortly") from None
        except TimeoutError:
            raise Refused(504, f"no answer within {self.options.timeout_s:g} s (--timeout-s)") from None

    def need_gallery(self) -> Gallery:
        gallery = self._running().gallery
        if gallery is None:
            raise Refused(404, "no gallery here: start bfm-serve with --gallery FOLDER|postgresql://...")
        return gallery

    async def in_gallery(self, work: Callable[[Gallery], T]) -> T:
        """``work(gallery)`` on the gallery's thread (its connection lives there)."""
        gallery = self.need_gallery()
        return await asyncio.get_running_loop().run_in_executor(self._running().gallery_pool, work, gallery)

    async def features_of(self, blobs: list[Blob], aligned: bool) -> list[FaceFeatures | BfmError]:
        """Each image's mask probability and both embeddings (what a gallery stores and matches), or its error."""
        faces = await self.faces_of(blobs, aligned)
        good = [f for f in faces if not isinstance(f, BfmError)]
        running = self._running()
        computed = iter(await asyncio.get_running_loop().run_in_executor(
            running.gallery_pool, running.verifier.features, good) if good else [])
        return [f if isinstance(f, BfmError) else next(computed) for f in faces]


def service_state(request: Request) -> ServiceState:
    state: ServiceState = request.app.state.service
    return state


Service = Annotated[ServiceState, Depends(service_state)]


def _warm_up(verifier: Verifier) -> None:
    crop = np.zeros((CROP_SIZE, CROP_SIZE, 3), np.uint8)
    verifier.score_pairs([(Face(crop), Face(crop))])
    verifier.prepare_many([np.zeros((160, 160, 3), np.uint8)])  # loads the detector; no face is the answer

"""The HTTP service: mask-routed verification and embedding with cross-request batching (FastAPI on uvicorn).

    POST /v1/verify        two images (multipart fields a, b; or JSON {"a": base64, "b": base64}) -> what
                           bfm-verify --json prints
    POST /v1/verify/batch  JSON {"pairs": [{"a": ..., "b": ...}, ...]} -> {"results": [...]}, an error per pair
    POST /v1/embed         images (multipart field images, repeated; or JSON {"images": [...]}) -> each face's
                           embedding from the extractor its mask state needs, with its mask probability
    with --gallery (bfm_deploy.gallery: a folder, or postgresql://... shared by replicas):
    POST   /v1/gallery/enroll      JSON {"identity": name, "images": [base64, ...], "extend": false} -> face ids
    POST   /v1/gallery/identify    JSON {"images": [...], "top_k": 5} -> per probe what bfm-gallery identify says
    DELETE /v1/gallery/identities/{identity}; GET /v1/gallery/identities
    GET  /healthz /readyz /metrics /docs

Clients send bytes, never paths on the server. Every failure is a JSON ``{"error": "one line"}``: 401 without a
valid key, 413 for a body or image over the limits, 422 for an image that is not one or holds no face, 503 with
Retry-After when the batch queue is full, 504 past the request timeout.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.routing import Match

from ..bundle import default_bundle
from ..errors import BfmError
from ..images import ImageLimits, decode_image
from ..verifier import Face, Verifier
from .auth import key_accepted, read_key_file
from .batcher import Batcher, QueueFull
from .metrics import Metrics

OPEN_PATHS = ("/healthz", "/readyz", "/metrics", "/docs", "/openapi.json")


@dataclass
class ServeOptions:
    bundle: Path | str | None = None  # default: the default bundle
    backend: str = "auto"
    detector: str = "auto"
    host: str = "127.0.0.1"
    port: int = 8000
    max_batch: int = 64  # faces per batch, across requests
    max_wait_ms: float = 5.0  # how long a batch waits for more requests after its first
    queue_size: int = 256  # jobs waiting for a batch; beyond it: 503
    timeout_s: float = 30.0  # per request
    max_body_mb: float = 32.0
    max_pairs: int = 64  # per /v1/verify/batch request, images per /v1/embed request
    workers: int = 2  # decoding and detection threads
    api_key_file: Path | None = None
    gallery: str | None = None  # a gallery folder or PostgreSQL connection string: the /v1/gallery/ endpoints

    def check(self) -> None:
        if self.api_key_file is None and self.host not in ("127.0.0.1", "localhost", "::1"):
            raise BfmError(f"refusing to serve on {self.host} without --api-key-file (without keys bfm-serve "
                           "listens on 127.0.0.1 only)")
        for name in ("max_batch", "queue_size", "max_pairs", "workers"):
            if getattr(self, name) < 1:
                raise BfmError(f"--{name.replace('_', '-')} must be >= 1")
        if self.max_wait_ms < 0 or self.timeout_s <= 0 or self.max_body_mb <= 0:
            raise BfmError("--max-wait-ms must be >= 0, --timeout-s and --max-body-mb > 0")


class _Failure(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": " ".join(str(message).split())}, status_code=status, headers=headers)


class _BodyLimit:
    """ASGI middleware, outermost: the whole body is read here, at most ``limit`` bytes, before anything parses it.

    A declared length over the limit is a 413 before a byte is read; a chunked body is a 413 as soon as its bytes
    pass the limit (so memory holds at most ``limit`` per request); a client that goes away mid-upload gets no
    answer and leaves no traceback, only a count in ``bfm_errors_total{kind="client_disconnected"}``. The app
    then reads the body from memory."""

    def __init__(self, app: Any, limit: int, metrics: Metrics) -> None:
        self.app, self.limit, self.metrics = app, limit, metrics

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        message = f"request body over the {self.limit / 2**20:g} MiB limit (--max-body-mb)"
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            self.metrics.error("http_413")
            return await _error(413, message)(scope, receive, send)
        chunks, seen = [], 0
        while True:
            event = await receive()
            if event["type"] == "http.disconnect":
                self.metrics.error("client_disconnected")
                return None
            body = event.get("body", b"")
            seen += len(body)
            if seen > self.limit:
                self.metrics.error("http_413")
                return await _error(413, message)(scope, receive, send)
            chunks.append(body)
            if not event.get("more_body", False):
                break
        replay = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]
        chunks.clear()

        async def buffered() -> Any:
            return replay.pop() if replay else await receive()  # after the body: the disconnect, when it comes

        await self.app(scope, buffered, send)


def create_app(options: ServeOptions) -> FastAPI:
    options.check()
    digests = read_key_file(options.api_key_file) if options.api_key_file is not None else ()
    metrics = Metrics()
    limits = ImageLimits()
    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        verifier = Verifier(options.bundle or default_bundle(), backend=options.backend, detector=options.detector,
                            batch_size=max(2, options.max_batch))
        pool = ThreadPoolExecutor(options.workers, thread_name_prefix="bfm-decode")
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(pool, _warm_up, verifier)  # the first request should not pay for loading
        batcher = Batcher(verifier, options.max_batch, options.max_wait_ms / 1000, options.queue_size, metrics)
        await batcher.start()
        gallery_pool = ThreadPoolExecutor(1, thread_name_prefix="bfm-gallery")  # the gallery's one connection
        if options.gallery is not None:
            from ..gallery import Gallery

            state["gallery"] = await loop.run_in_executor(
                gallery_pool, lambda: Gallery.open(options.gallery, verifier.bundle, create=True))  # type: ignore[arg-type]
        state.update(verifier=verifier, pool=pool, batcher=batcher, gallery_pool=gallery_pool, ready=True)
        try:
            yield
        finally:
            state["ready"] = False
            await batcher.stop()  # uvicorn has let the requests in flight finish; what they queued finishes too
            if "gallery" in state:
                await loop.run_in_executor(gallery_pool, state["gallery"].close)
            gallery_pool.shutdown(wait=True)
            pool.shutdown(wait=True)
            verifier.close()

    app = FastAPI(title="bfm", description="Masked-face verification by balanced feature matching", lifespan=lifespan)

    def template(request: Request) -> str:
        """The route a request matched, as written (``/v1/gallery/identities/{identity:path}``), never its
        path: metric labels then stay few, and carry no name a client sent."""
        for route in app.router.routes:
            match, _ = route.matches(request.scope)
            if match == Match.FULL:
                return str(getattr(route, "path", "other"))
        return "unmatched"

    @app.middleware("http")
    async def guard(request: Request, call_next: Callable[[Request], Awaitable[Any]]) -> Any:
        started = time.perf_counter()
        endpoint = template(request)
        if request.url.path.startswith("/v1/") and digests:
            presented = request.headers.get("x-api-key") or _bearer(request.headers.get("authorization"))
            if not key_accepted(presented, digests):
                metrics.error("unauthorized")
                response = _error(401, "missing or wrong API key (X-API-Key or Authorization: Bearer)")
                metrics.request(endpoint, 401, time.perf_counter() - started)
                return response
        response = await call_next(request)
        metrics.request(endpoint, response.status_code, time.perf_counter() - started)
        return response

    @app.exception_handler(_Failure)
    async def failure(_request: Request, exc: _Failure) -> JSONResponse:
        metrics.error(f"http_{exc.status}")
        headers = {"Retry-After": "1"} if exc.status == 503 else None
        return _error(exc.status, str(exc), headers)

    @app.exception_handler(HTTPException)
    async def http_error(_request: Request, exc: HTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        return _error(422, f"invalid request: {'.'.join(str(p) for p in first.get('loc', ()))} {first.get('msg', '')}")

    @app.exception_handler(Exception)
    async def bug(_request: Request, exc: Exception) -> JSONResponse:
        metrics.error("internal")
        return _error(500, f"internal error ({type(exc).__name__}); this is a bug in bfm-serve")

    async def faces_of(blobs: list[tuple[str, bytes]], aligned: bool) -> list[Face | BfmError]:
        """Decode and align on the worker pool, off the event loop; an image's failure stays its own."""
        def work() -> list[Face | BfmError]:
            images: list[np.ndarray | BfmError] = []
            for name, data in blobs:
                try:
                    images.append(decode_image(data, name, limits))  # its errors name the upload already
                except BfmError as exc:
                    images.append(exc)
            good = [(name, image) for (name, _), image in zip(blobs, images) if not isinstance(image, BfmError)]
            # the aligner sees arrays, so its errors ("no face found") get the upload's name here
            aligned_faces = state["verifier"].prepare_many([image for _, image in good], aligned=aligned)
            prepared = iter(BfmError(f"{name}: {face}") if isinstance(face, BfmError) else face
                            for (name, _), face in zip(good, aligned_faces))
            return [image if isinstance(image, BfmError) else next(prepared) for image in images]

        return await asyncio.get_running_loop().run_in_executor(state["pool"], work)

    async def batched(call: Awaitable[list[Any]]) -> list[Any]:
        try:
            return await asyncio.wait_for(call, options.timeout_s)
        except QueueFull:
            raise _Failure(503, "busy: the batch queue is full, retry shortly") from None
        except TimeoutError:
            raise _Failure(504, f"no answer within {options.timeout_s:g} s (--timeout-s)") from None

    @app.post("/v1/verify")
    async def verify(request: Request) -> dict[str, Any]:
        fields, aligned = await _read_images(request, ("a", "b"))
        a, b = await faces_of([fields["a"], fields["b"]], aligned)
        for face in (a, b):
            if isinstance(face, BfmError):
                raise _Failure(422, str(face))
        (result,) = await batched(state["batcher"].verify([(a, b)]))
        return result.to_dict()  # type: ignore[no-any-return]

    @app.post("/v1/verify/batch")
    async def verify_batch(request: Request) -> dict[str, Any]:
        body = await _json(request)
        pairs = body.get("pairs")
        if not isinstance(pairs, list) or not pairs or not all(isinstance(p, dict) for p in pairs):
            raise _Failure(422, 'expected {"pairs": [{"a": base64, "b": base64}, ...]}')
        if len(pairs) > options.max_pairs:
            raise _Failure(413, f"{len(pairs)} pairs in one request; at most {options.max_pairs} (--max-pairs)")
        blobs = [(f"pairs[{i}].{side}", _b64(p.get(side), f"pairs[{i}].{side}")) for i, p in enumerate(pairs)
                 for side in ("a", "b")]
        faces = await faces_of(blobs, _flag(body, "aligned"))
        good = [(faces[2 * i], faces[2 * i + 1]) for i in range(len(pairs))
                if not isinstance(faces[2 * i], BfmError) and not isinstance(faces[2 * i + 1], BfmError)]
        scored = iter(await batched(state["batcher"].verify(good)) if good else [])
        results = []
        for i in range(len(pairs)):
            error = next((f for f in faces[2 * i: 2 * i + 2] if isinstance(f, BfmError)), None)
            results.append({"error": str(error)} if error is not None else next(scored).to_dict())
        return {"results": results}

    @app.post("/v1/embed")
    async def embed(request: Request) -> dict[str, Any]:
        blobs, aligned = await _read_image_list(request, options.max_pairs)
        faces = await faces_of(blobs, aligned)
        good = [f for f in faces if not isinstance(f, BfmError)]
        embedded = iter(await batched(state["batcher"].embed(good)) if good else [])
        return {"faces": [{"error": str(f)} if isinstance(f, BfmError) else next(embedded).to_dict() for f in faces]}

    def need_gallery() -> None:
        if "gallery" not in state:
            raise _Failure(404, "no gallery here: start bfm-serve with --gallery FOLDER|postgresql://...")

    async def in_gallery(work: Callable[[Any], Any]) -> Any:
        """``work(gallery)`` on the gallery's thread (its connection lives there); BfmErrors as HTTP errors."""
        from ..gallery import AlreadyEnrolled, NotEnrolled

        need_gallery()
        try:
            return await asyncio.get_running_loop().run_in_executor(state["gallery_pool"], work, state["gallery"])
        except AlreadyEnrolled as exc:
            raise _Failure(409, str(exc)) from None
        except NotEnrolled as exc:
            raise _Failure(404, str(exc)) from None
        except BfmError as exc:
            raise _Failure(422, str(exc)) from None

    async def features_of(blobs: list[tuple[str, bytes]], aligned: bool) -> list[Any]:
        faces = await faces_of(blobs, aligned)
        good = [f for f in faces if not isinstance(f, BfmError)]
        computed = iter(await asyncio.get_running_loop().run_in_executor(
            state["gallery_pool"], state["verifier"].features, good) if good else [])
        return [f if isinstance(f, BfmError) else next(computed) for f in faces]

    @app.post("/v1/gallery/enroll")
    async def gallery_enroll(request: Request) -> dict[str, Any]:
        body = await _json(request)
        from ..gallery.gallery import check_identity

        identity = body.get("identity")
        if not isinstance(identity, str) or not identity.strip():
            raise _Failure(422, 'expected {"identity": name, "images": [base64, ...]}')
        try:
            identity = check_identity(identity)
        except BfmError as exc:
            raise _Failure(422, str(exc)) from None
        blobs = _image_list(body, options.max_pairs)
        need_gallery()  # no gallery: 404 before any image is decoded
        aligned, extend = _flag(body, "aligned"), _flag(body, "extend")
        features = await features_of(blobs, aligned)
        failed = next((f for f in features if isinstance(f, BfmError)), None)
        if failed is not None:
            raise _Failure(422, f"{failed}; nothing enrolled")
        ids = await in_gallery(lambda g: g.add(identity, features, [name for name, _ in blobs],
                                               extend=extend))
        return {"identity": identity, "face_ids": ids, "masked": sum(f.masked for f in features)}

    @app.post("/v1/gallery/identify")
    async def gallery_identify(request: Request) -> dict[str, Any]:
        body = await _json(request)
        blobs = _image_list(body, options.max_pairs)
        top_k = body.get("top_k", 5)
        if not isinstance(top_k, int) or isinstance(top_k, bool) or not 1 <= top_k <= 100:
            raise _Failure(422, "top_k must be an integer in 1..100")
        need_gallery()
        features = await features_of(blobs, _flag(body, "aligned"))
        good = [f for f in features if not isinstance(f, BfmError)]
        found = iter(await in_gallery(lambda g: [g.identify(f, top_k=top_k, note=f.note).to_dict() for f in good]))
        return {"probes": [{"error": str(f)} if isinstance(f, BfmError) else next(found) for f in features]}

    @app.delete("/v1/gallery/identities/{identity:path}")  # a name may hold "/": every enrolable name is removable
    async def gallery_remove(identity: str) -> dict[str, Any]:
        return {"identity": identity, "removed": await in_gallery(lambda g: g.remove(identity))}

    @app.get("/v1/gallery/identities")
    async def gallery_list() -> dict[str, Any]:
        people, open_set = await in_gallery(lambda g: (g.identities(), g.open_set()))
        return {"identities": [{"identity": n, "faces": f, "masked": m} for n, f, m in people], "open_set": open_set}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        if not state.get("ready"):
            return _error(503, "not ready: loading the bundle")
        verifier: Verifier = state["verifier"]
        return JSONResponse({"status": "ready", "bundle": verifier.bundle.name, "backend": verifier.backend.name,
                             "detector": verifier.detector_name, "pid": os.getpid()})  # pid: which replica

    @app.get("/metrics")
    async def metrics_text() -> PlainTextResponse:
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    app.add_middleware(_BodyLimit, limit=int(options.max_body_mb * 2**20), metrics=metrics)  # outermost
    return app


def _warm_up(verifier: Verifier) -> None:
    crop = np.zeros((112, 112, 3), np.uint8)
    verifier.score_pairs([(Face(crop), Face(crop))])
    verifier.prepare_many([np.zeros((160, 160, 3), np.uint8)])  # loads the detector; no face is the answer


def _bearer(header: str | None) -> str | None:
    if header and header.lower().startswith("bearer "):
        return header[7:].strip()
    return None


def _b64(value: Any, name: str) -> bytes:
    if not isinstance(value, str):
        raise _Failure(422, f"{name}: expected a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise _Failure(422, f"{name}: not valid base64") from None


def _flag(body: dict[str, Any], key: str) -> bool:
    """A JSON boolean option: ``true``/``false`` or absent (false); ``"false"``, 0 or null is a 422, never
    read as Python's bool() would read it."""
    value = body.get(key, False)
    if not isinstance(value, bool):
        raise _Failure(422, f"{key} must be a JSON boolean (true or false), got {json.dumps(value)[:40]}")
    return value


def _form_flag(form: Any, key: str) -> bool:
    """A multipart boolean field: true/false, 1/0 or yes/no (any case), or absent (false); anything else a 422."""
    value = form.get(key)
    if value is None:
        return False
    text = str(value).strip().lower()
    if text not in ("1", "true", "yes", "0", "false", "no"):
        raise _Failure(422, f"{key} must be true or false, got {str(value)[:40]!r}")
    return text in ("1", "true", "yes")


async def _json(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except RecursionError:
        raise _Failure(422, "the body's JSON is nested too deeply") from None
    except ValueError:
        raise _Failure(422, "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise _Failure(422, "expected a JSON object")
    return body


async def _read_images(request: Request, names: tuple[str, ...]) -> tuple[dict[str, tuple[str, bytes]], bool]:
    """Named images from a multipart form (file fields) or a JSON object (base64 strings), and ``aligned``."""
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        form = await request.form()
        found = {}
        for name in names:
            upload = form.get(name)
            if not isinstance(upload, UploadFile):
                raise _Failure(422, f"missing file field {name!r}")
            found[name] = (upload.filename or name, await upload.read())
        return found, _form_flag(form, "aligned")
    body = await _json(request)
    return {name: (name, _b64(body.get(name), name)) for name in names}, _flag(body, "aligned")


def _image_list(body: dict[str, Any], limit: int) -> list[tuple[str, bytes]]:
    """A JSON body's ``"images": [base64, ...]``, counted before any is decoded."""
    images = body.get("images")
    if not isinstance(images, list):
        raise _Failure(422, 'expected {"images": [base64, ...]}')
    _check_count(len(images), limit)
    return [(f"images[{i}]", _b64(v, f"images[{i}]")) for i, v in enumerate(images)]


def _check_count(count: int, limit: int) -> None:
    if not count:
        raise _Failure(422, "no images")
    if count > limit:
        raise _Failure(413, f"{count} images in one request; at most {limit} (--max-pairs)")


async def _read_image_list(request: Request, limit: int) -> tuple[list[tuple[str, bytes]], bool]:
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        form = await request.form()
        uploads = [u for u in form.getlist("images") if isinstance(u, UploadFile)]
        blobs = [(u.filename or f"images[{i}]", await u.read()) for i, u in enumerate(uploads)]
        _check_count(len(blobs), limit)
        return blobs, _form_flag(form, "aligned")
    body = await _json(request)
    return _image_list(body, limit), _flag(body, "aligned")

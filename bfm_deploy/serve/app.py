"""The HTTP service: mask-routed verification and embedding with cross-request batching (FastAPI on uvicorn).

    POST /v1/verify        two images (multipart fields a, b; or JSON {"a": base64, "b": base64}) -> what
                           bfm-verify --json prints; with the query ?detail=true also "faces": per face its
                           aligned crop (PNG data URL), the detector's box and 5 landmarks in the uploaded
                           photo's pixels and its score (null for aligned inputs)
    POST /v1/verify/batch  JSON {"pairs": [{"a": ..., "b": ...}, ...]} -> {"results": [...]}, an error per pair
    POST /v1/embed         images (multipart field images, repeated; or JSON {"images": [...]}) -> each face's
                           embedding from the extractor its mask state needs, with its mask probability
    POST /v1/explain       two images, as /v1/verify -> {"result": its answer, "faces": [each face's guided-
                           backpropagation map and overlay (PNG data URLs), mask_region_share]}; 501 without torch
    with --gallery (bfm_deploy.gallery: a folder, or postgresql://... shared by replicas):
    POST   /v1/gallery/enroll      JSON {"identity": name, "images": [base64, ...], "extend": false} -> face ids
    POST   /v1/gallery/identify    JSON {"images": [...], "top_k": 5} -> per probe what bfm-gallery identify says
    DELETE /v1/gallery/identities/{identity}; GET /v1/gallery/identities
    GET  /healthz /readyz /metrics /docs
    GET  /  and /ui/{file}  the web page (routes/page.py): static files only, open; it calls the API above with
                           the key the person types

Clients send bytes, never paths on the server. Every failure is a JSON ``{"error": "one line"}``: 401 without a
valid key, 403 for a browser's request on behalf of another site (``origin``: its Origin, or a Host that is not
loopback on a server without keys), 413 for a body or image over the limits, 422 for an image that is not one or holds no face, 503 with
Retry-After when the batch queue is full, 504 past the request timeout, 500 when the inference backend fails
(``bfm_deploy.serve.failures`` has the table).

The routes live in ``routes/`` (one router per group), the request bodies in ``schemas``, what they share in
``state.ServiceState``; this module puts them together with the middleware (body limit, API keys, metrics) and
the error handlers.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.routing import BaseRoute, Match

from ..errors import BfmError
from .auth import key_accepted, read_key_file
from .body_limit import BodyLimit
from .failures import answer_for, error_response
from .metrics import Metrics
from .options import ServeOptions
from .origin import check_origin_option, refusal
from .routes import explain, gallery, health, page, verify
from .schemas import add_request_schemas
from .state import ServiceState

__all__ = ["ServeOptions", "create_app"]

OPEN_PATHS = ("/healthz", "/readyz", "/metrics", "/docs", "/openapi.json")


def create_app(options: ServeOptions) -> FastAPI:
    options.check()
    digests = read_key_file(options.api_key_file) if options.api_key_file is not None else ()
    service = ServiceState(options)
    app = FastAPI(title="bfm", description="Masked-face verification by balanced feature matching",
                  lifespan=service.lifespan)
    app.state.service = service
    routers = (verify.router, explain.router, gallery.router, health.router, page.router)
    for router in routers:
        app.include_router(router)
    app.add_exception_handler(BfmError, _bfm_error)  # type: ignore[arg-type]  # Starlette types handlers loosely
    app.add_exception_handler(HTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _invalid)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _bug)
    # the routes as written, for metric labels: FastAPI keeps an included router as one opaque entry of app.routes
    routes = [r for r in app.router.routes if isinstance(r, BaseRoute) and hasattr(r, "path")] + \
        [r for router in routers for r in router.routes]
    allowed = frozenset(check_origin_option(origin) for origin in options.allow_origins)
    app.middleware("http")(KeysAndMetrics(digests, service.metrics, routes, allowed))
    app.add_middleware(BodyLimit, limit=options.max_body_bytes, metrics=service.metrics)  # outermost
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


class KeysAndMetrics:
    """HTTP middleware: browsers' cross-site requests refused (``origin``), an API key for /v1/ (when the server
    has keys), and every answer counted by route."""

    def __init__(self, digests: tuple[str, ...], metrics: Metrics, routes: list[BaseRoute],
                 allowed_origins: frozenset[str] = frozenset()) -> None:
        self.digests, self.metrics, self.routes = digests, metrics, routes
        self.allowed_origins = allowed_origins

    async def __call__(self, request: Request, call_next: Callable[[Request], Awaitable[Any]]) -> Any:
        started = time.perf_counter()
        endpoint = _template(request, self.routes)
        refused = refusal(request.method, request.url.scheme, request.headers, self.allowed_origins,
                          bool(self.digests))
        if refused is not None:
            self.metrics.error("cross_site")
            self.metrics.request(endpoint, 403, time.perf_counter() - started)
            return error_response(403, refused)
        if request.url.path.startswith("/v1/") and self.digests:
            presented = request.headers.get("x-api-key") or _bearer(request.headers.get("authorization"))
            if not key_accepted(presented, self.digests):
                self.metrics.error("unauthorized")
                response = error_response(401, "missing or wrong API key (X-API-Key or Authorization: Bearer)")
                self.metrics.request(endpoint, 401, time.perf_counter() - started)
                return response
        response = await call_next(request)
        self.metrics.request(endpoint, response.status_code, time.perf_counter() - started)
        return response


def _template(request: Request, routes: list[BaseRoute]) -> str:
    """The route a request matched, as written (``/v1/gallery/identities/{identity:path}``), never its path:
    metric labels then stay few, and carry no name a client sent."""
    for route in routes:
        match, _ = route.matches(request.scope)
        if match == Match.FULL:
            return str(getattr(route, "path", "other"))
    return "unmatched"


def _bearer(header: str | None) -> str | None:
    if header and header.lower().startswith("bearer "):
        return header[7:].strip()
    return None


def _metrics(request: Request) -> Metrics:
    service: ServiceState = request.app.state.service
    return service.metrics


async def _bfm_error(request: Request, exc: BfmError) -> JSONResponse:
    """Every expected failure, by its type (``failures.answer_for``): handled here, so no traceback is logged."""
    answer = answer_for(exc)
    _metrics(request).error(answer.kind)
    return error_response(answer.status, str(exc), answer.headers)


async def _http_error(_request: Request, exc: HTTPException) -> JSONResponse:
    return error_response(exc.status_code, str(exc.detail))


async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
    first = exc.errors()[0] if exc.errors() else {}
    return error_response(422, f"invalid request: {'.'.join(str(p) for p in first.get('loc', ()))} "
                               f"{first.get('msg', '')}")


async def _bug(request: Request, exc: Exception) -> JSONResponse:
    _metrics(request).error("internal")
    return error_response(500, f"internal error ({type(exc).__name__}); this is a bug in bfm-serve")


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document with the request bodies' schemas added (the routes read their bodies themselves)."""
    if app.openapi_schema is None:
        document = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        app.openapi_schema = add_request_schemas(document)
    return app.openapi_schema

"""ASGI middleware, outermost: the whole body is read here, at most ``limit`` bytes, before anything parses it."""

from __future__ import annotations

from typing import Any

from .failures import error_response
from .metrics import Metrics


class BodyLimit:
    """A declared length over the limit is a 413 before a byte is read; a chunked body is a 413 as soon as its bytes
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
            return await error_response(413, message)(scope, receive, send)
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
                return await error_response(413, message)(scope, receive, send)
            chunks.append(body)
            if not event.get("more_body", False):
                break
        replay = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]
        chunks.clear()

        async def buffered() -> Any:
            return replay.pop() if replay else await receive()  # after the body: the disconnect, when it comes

        await self.app(scope, buffered, send)

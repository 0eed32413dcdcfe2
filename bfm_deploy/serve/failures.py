"""Which HTTP answer each failure gets: one table, read by the app's one ``BfmError`` handler.

    Refused(status, ...)          its own status: 413 over a limit, 503 busy (with Retry-After), 504 late, 404
    AlreadyEnrolled               409
    NotEnrolled                   404
    BackendError                  500: the inference runtime failed, not the caller
    InputError, NoFaceError,
    any other BfmError            422: the request cannot be used as it is

Every answer is ``{"error": "one line"}``.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.responses import JSONResponse

from ..errors import BackendError, BfmError


class Refused(BfmError):
    """A request refused with a status of its own (a limit, a full queue, the timeout, no gallery)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Answer:
    status: int
    kind: str  # the bfm_errors_total label it is counted under
    headers: dict[str, str] | None = None


def answer_for(exc: BfmError) -> Answer:
    from ..gallery.store import AlreadyEnrolled, NotEnrolled  # the gallery loads only where it is used

    if isinstance(exc, Refused):
        return Answer(exc.status, f"http_{exc.status}", {"Retry-After": "1"} if exc.status == 503 else None)
    if isinstance(exc, BackendError):
        return Answer(500, "backend")
    status = 409 if isinstance(exc, AlreadyEnrolled) else 404 if isinstance(exc, NotEnrolled) else 422
    return Answer(status, f"http_{status}")


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": " ".join(str(message).split())}, status_code=status, headers=headers)

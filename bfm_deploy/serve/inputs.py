"""A request's images as named bytes: from a JSON body (base64, through ``schemas``) or a multipart form (files).

A name is what an error about that image says: the upload's file name, or its place in the JSON body (``a``,
``pairs[2].b``, ``images[0]``). Nothing here decodes an image; the state's worker pool does.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from starlette.datastructures import UploadFile

from .failures import Refused
from .schemas import Body, EmbedRequest, VerifyRequest, parse, too_many

Blob = tuple[str, bytes]  # (name, encoded image)


async def read_json(request: Request) -> dict[str, Any]:
    """The body as a JSON object; nesting too deep for the parser, broken JSON or another type is a 422."""
    try:
        body = await request.json()
    except RecursionError:
        raise Refused(422, "the body's JSON is nested too deeply") from None
    except ValueError:
        raise Refused(422, "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise Refused(422, "expected a JSON object")
    return body


async def json_body(request: Request, model: type[Body], max_items: int) -> Body:
    return parse(model, await read_json(request), max_items)


def is_form(request: Request) -> bool:
    return request.headers.get("content-type", "").startswith("multipart/form-data")


async def verify_images(request: Request, max_items: int) -> tuple[Blob, Blob, bool]:
    """/v1/verify's two images, ``a`` and ``b``, and ``aligned``."""
    if is_form(request):
        form = await request.form()
        found = []
        for name in ("a", "b"):
            upload = form.get(name)
            if not isinstance(upload, UploadFile):
                raise Refused(422, f"missing file field {name!r}")
            found.append((upload.filename or name, await upload.read()))
        return found[0], found[1], form_flag(form, "aligned")
    body = await json_body(request, VerifyRequest, max_items)
    return ("a", body.a), ("b", body.b), body.aligned


async def image_list(request: Request, max_items: int) -> tuple[list[Blob], bool]:
    """/v1/embed's images (at most ``max_items``, counted before any is read) and ``aligned``."""
    if is_form(request):
        form = await request.form()
        uploads = [u for u in form.getlist("images") if isinstance(u, UploadFile)]
        if not uploads:
            raise Refused(422, "no images")
        over = too_many(len(uploads), max_items, "images")
        if over:
            raise Refused(413, over)
        return [(u.filename or f"images[{i}]", await u.read()) for i, u in enumerate(uploads)], \
            form_flag(form, "aligned")
    body = await json_body(request, EmbedRequest, max_items)
    return named(body.images), body.aligned


def named(images: list[bytes]) -> list[Blob]:
    return [(f"images[{i}]", data) for i, data in enumerate(images)]


def form_flag(form: Any, key: str) -> bool:
    """A multipart boolean field: true/false, 1/0 or yes/no (any case), or absent (false); anything else a 422."""
    value = form.get(key)
    if value is None:
        return False
    text = str(value).strip().lower()
    if text not in ("1", "true", "yes", "0", "false", "no"):
        raise Refused(422, f"{key} must be true or false, got {str(value)[:40]!r}")
    return text in ("1", "true", "yes")

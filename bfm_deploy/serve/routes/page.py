"""GET / and /ui/{name}: the web page (``bfm_deploy/serve/static``), open like /docs because it is only files.

The page holds no data and computes nothing: in the browser it calls the /v1/ API with the key the person types,
so every answer it shows passed the same key check as any other client's. These routes answer only a file that
lies in the static folder, looked up by its bare name (a name with a path in it cannot match the route, and a
name that is not a file there is a 404), so nothing else on the server can be read through them.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from ..failures import Refused

STATIC = Path(__file__).resolve().parents[1] / "static"
PAGE_PATHS = ("/", "/ui/{name}")  # the routes below: open, like app.OPEN_PATHS
MEDIA_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
               ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}
# The browser may load the page's parts from this server only, and send requests to it only: no other host gets
# a photo or the key, even through an injected tag. Pictures are the person's own files (blob:) or the API's
# data: URLs; the camera preview is a media stream.
POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
          "media-src 'self' blob: mediastream:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
          "frame-ancestors 'none'")
HEADERS = {"Content-Security-Policy": POLICY, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
           "Cache-Control": "no-cache"}

router = APIRouter()


@router.get("/", include_in_schema=False)
async def index() -> FileResponse:
    return _answer("index.html")


@router.get("/ui/{name}", include_in_schema=False)
async def static_file(name: str) -> FileResponse:
    return _answer(name)


def _answer(name: str) -> FileResponse:
    path = STATIC / name
    # compared by name against the folder's listing, never resolved from what the client sent
    if path.suffix not in MEDIA_TYPES or name not in {p.name for p in STATIC.iterdir() if p.is_file()}:
        raise Refused(404, "not found")
    return FileResponse(path, media_type=MEDIA_TYPES[path.suffix], headers=HEADERS)

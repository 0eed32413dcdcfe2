"""bfm-serve's web page from the server's side: ``/v1/verify?detail=true`` (crops, and boxes in the uploaded photo's
pixels), and the page's open routes, which serve the static folder's files and nothing else: every other route
still needs the key. (The page itself, in a browser: tests/test_page_browser.py.)"""

from __future__ import annotations

import base64
import http.client
import io
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from bfm_deploy.serve.app import OPEN_PATHS, ServeOptions, create_app  # noqa: E402
from bfm_deploy.serve.process import ServerProcess  # noqa: E402
from bfm_deploy.serve.routes.page import PAGE_PATHS, STATIC  # noqa: E402
from bfm_deploy.verifier import Verifier  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "engines" / "demo"
PHOTO = REPO / "examples" / "zakayev_1.jpg"
MASKED = REPO / "examples" / "zakayev_3_masked.jpg"
KEY = "page-key-51c2"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("page")
    (tmp / "keys.txt").write_text(f"{KEY}\n")
    running = ServerProcess(DEMO, "ort", ("--api-key-file", str(tmp / "keys.txt")), log=tmp / "serve.log")
    yield running
    running.stop()


def _verify(server: ServerProcess, a: bytes, b: bytes, query: str = "", **form: str) -> Any:  # an httpx.Response
    return httpx.post(f"{server.url}/v1/verify{query}", files={"a": ("a.jpg", a), "b": ("b.jpg", b)}, data=form,
                      headers={"X-API-Key": KEY}, timeout=60)


def _read(path: Path) -> np.ndarray:
    image = cv2.imread(str(path))
    assert image is not None, path
    return image


def _jpeg(image: np.ndarray, exif_orientation: int | None = None) -> bytes:
    from PIL import Image  # matplotlib's dependency; OpenCV writes no EXIF

    picture = Image.fromarray(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
    exif = Image.Exif()
    if exif_orientation is not None:
        exif[0x0112] = exif_orientation
    out = io.BytesIO()
    picture.save(out, format="JPEG", quality=95, exif=exif.tobytes())
    return out.getvalue()


def _box(answer: dict[str, Any], side: int) -> np.ndarray:
    face = answer["faces"][side]
    return np.array(face["box"] + [v for point in face["landmarks"] for v in point])


def test_detail_adds_crops_and_boxes_in_the_photos_pixels_and_changes_nothing_else(server: ServerProcess) -> None:
    small = _read(PHOTO)
    plain = _verify(server, PHOTO.read_bytes(), MASKED.read_bytes())
    detailed = _verify(server, PHOTO.read_bytes(), MASKED.read_bytes(), "?detail=true")
    assert plain.status_code == detailed.status_code == 200, detailed.text
    assert "faces" not in plain.json()
    answer = detailed.json()
    assert {k: v for k, v in answer.items() if k != "faces"} == plain.json()
    with Verifier(DEMO, backend="ort") as verifier:
        want = [verifier.prepare(PHOTO), verifier.prepare(MASKED)]
    for face, prepared in zip(answer["faces"], want):
        header, data = face["crop"].split(",", 1)
        assert header == "data:image/png;base64"
        crop = cv2.imdecode(np.frombuffer(base64.b64decode(data), np.uint8), cv2.IMREAD_COLOR)
        assert crop is not None and np.array_equal(crop, prepared.crop)  # exactly the crop the networks saw (PNG is lossless)
        x1, y1, x2, y2 = face["box"]
        assert 0 <= x1 < x2 < small.shape[1] and 0 <= y1 < y2 < small.shape[0]
        assert len(face["landmarks"]) == 5 and all(x1 <= x <= x2 and y1 <= y <= y2 for x, y in face["landmarks"])
        assert 0.5 < face["detector_score"] <= 1
    # A photo larger than the aligner's working size (1280): its box comes back in the large photo's pixels.
    large = cv2.resize(small, None, fx=6, fy=6, interpolation=cv2.INTER_CUBIC)  # 1500 px: decoded at 1/2, then shrunk
    big = _verify(server, _jpeg(large), PHOTO.read_bytes(), "?detail=true").json()
    assert big["faces"][0]["box"][2] > 1000
    np.testing.assert_allclose(_box(big, 0), (_box(answer, 0) + 0.5) * 6 - 0.5, atol=12)  # 2 px of the original


def test_detail_follows_a_jpegs_exif_turn(server: ServerProcess) -> None:
    upright = cv2.resize(_read(PHOTO), None, fx=6, fy=4, interpolation=cv2.INTER_CUBIC)  # 1500 x 1000
    reference = _verify(server, _jpeg(upright), PHOTO.read_bytes(), "?detail=true").json()
    # stored turned a quarter clockwise, with orientation 8: "turn it back a quarter anticlockwise to show it"
    stored = cv2.rotate(upright, cv2.ROTATE_90_CLOCKWISE)
    turned = _verify(server, _jpeg(stored, exif_orientation=8), PHOTO.read_bytes(), "?detail=true").json()
    assert turned["score"] == pytest.approx(reference["score"], abs=0.02)  # the same face, upright for the detector
    np.testing.assert_allclose(_box(turned, 0), _box(reference, 0), atol=8)


def test_detail_for_aligned_crops_and_a_bad_flag(server: ServerProcess, data_dir: Path) -> None:
    crops = sorted((data_dir / "lfw" / "aligned112").glob("A*/*.jpg"))[:2]
    answer = _verify(server, crops[0].read_bytes(), crops[1].read_bytes(), "?detail=1", aligned="true")
    assert answer.status_code == 200, answer.text
    for face in answer.json()["faces"]:
        assert (face["box"], face["landmarks"], face["detector_score"]) == (None, None, None)
        assert face["crop"].startswith("data:image/png;base64,")
    refused = _verify(server, crops[0].read_bytes(), crops[1].read_bytes(), "?detail=maybe", aligned="true")
    assert refused.status_code == 422 and "detail" in refused.json()["error"]
    spec = httpx.get(f"{server.url}/openapi.json").json()["paths"]["/v1/verify"]["post"]
    assert [p["name"] for p in spec["parameters"]] == ["detail"] and "box" in spec["parameters"][0]["description"]


def _filled(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x", path)


def _routes(routes: list[Any]) -> Iterator[Any]:
    """Every route, also those of the included routers (FastAPI keeps each as one entry holding its router)."""
    for route in routes:
        inner = getattr(route, "original_router", None)
        yield from _routes(inner.routes) if inner is not None else [route]


def test_only_the_documented_paths_and_the_static_files_answer_without_a_key(tmp_path: Path) -> None:
    """Every route the app has, asked without a key: the open ones answer, every other one is a 401 (the page
    routes add files, never a way around the key)."""
    from fastapi.testclient import TestClient

    (tmp_path / "keys.txt").write_text(f"{KEY}\n")
    app = create_app(ServeOptions(bundle=DEMO, backend="ort", api_key_file=tmp_path / "keys.txt",
                                  gallery=str(tmp_path / "gallery")))
    fastapi_pages = {app.redoc_url, app.swagger_ui_oauth2_redirect_url}  # FastAPI's own HTML for /docs
    open_paths = set(OPEN_PATHS) | set(PAGE_PATHS) | fastapi_pages
    client = TestClient(app)  # no lifespan: nothing is loaded, and none is needed to refuse
    seen = set()
    for route in _routes(app.routes):
        path = getattr(route, "path", None)
        for method in sorted(getattr(route, "methods", None) or ()):
            if method == "HEAD" or path is None:
                continue
            seen.add(path)
            status = client.request(method, _filled(path)).status_code
            if path in open_paths:
                assert status != 401, (method, path)
            else:
                assert path.startswith("/v1/") and status == 401, (method, path, status)
    assert set(PAGE_PATHS) <= seen and any(p.startswith("/v1/gallery") for p in seen)
    with TestClient(app) as running:  # the files themselves, as the folder holds them
        assert running.get("/").content == (STATIC / "index.html").read_bytes()
        for file in ("app.js", "style.css", "index.html"):
            answer = running.get(f"/ui/{file}")
            assert answer.status_code == 200 and answer.content == (STATIC / file).read_bytes()
            assert "default-src 'none'" in answer.headers["content-security-policy"]
        assert running.get("/v1/verify", headers={"X-API-Key": KEY}).status_code == 405  # the key still opens /v1/


@pytest.mark.parametrize("path", ["/ui/../app.py", "/ui/%2e%2e/app.py", "/ui/..%2fapp.py", "/ui/%2e%2e%2fapp.py",
                                  "/ui/..%2f..%2fserve%2fapp.py", "/ui/%2e%2e%2f%2e%2e%2fbundle.py", "/ui/",
                                  "/ui/__init__.py", "/ui/.", "/ui/..", "/ui//etc/passwd", "/ui/%2fetc%2fpasswd",
                                  "/ui/app.js%00.py", "/ui/app.js/", "/../app.py", "/static/app.js"])
def test_the_static_routes_serve_no_other_file(server: ServerProcess, path: str) -> None:
    """Sent as written (http.client does not normalise dot segments the way httpx and browsers do)."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    connection.request("GET", path)
    answer = connection.getresponse()
    body = answer.read()
    connection.close()
    if answer.status == 307:  # Starlette's trailing-slash redirect, to the static file itself
        assert path == "/ui/app.js/" and answer.getheader("location", "").endswith("/ui/app.js")
    else:
        assert answer.status in (400, 404), (path, answer.status)
    assert b"import" not in body and b"root:" not in body

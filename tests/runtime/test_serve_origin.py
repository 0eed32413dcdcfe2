"""Web pages of other sites cannot use a bfm-serve through their visitors' browsers (``serve/origin.py``): a
cross-origin POST (a form or a text/plain fetch, which need no preflight) is refused, and a server without keys
answers loopback Host names only (DNS rebinding). Clients that send no Origin are untouched."""

from __future__ import annotations

from pathlib import Path

import pytest

from bfm_deploy.errors import BfmError
from bfm_deploy.serve.origin import check_origin_option, refusal
from bfm_deploy.serve.options import ServeOptions

DEMO = Path(__file__).resolve().parents[2] / "engines" / "demo"
LOCAL = {"host": "127.0.0.1:8000"}


@pytest.mark.parametrize(("method", "headers", "has_keys", "refused"), [
    ("POST", LOCAL, False, None),  # curl, the Client: no Origin
    ("POST", {**LOCAL, "origin": "http://127.0.0.1:8000"}, False, None),  # the page bfm-serve serves
    ("POST", {"host": "localhost:8000", "origin": "http://LOCALHOST:8000"}, False, None),
    ("POST", {"host": "[::1]:8000", "origin": "http://[::1]:8000"}, False, None),
    ("POST", {**LOCAL, "origin": "https://evil.example"}, False, "cross-origin request from 'https://evil.example'"),
    ("POST", {**LOCAL, "origin": "http://127.0.0.1:9000"}, False, "cross-origin"),  # another port: another site
    ("POST", {**LOCAL, "origin": "null"}, False, "cross-origin request from 'null'"),  # sandboxed frame, file://
    ("DELETE", {**LOCAL, "origin": "https://evil.example"}, True, "cross-origin"),  # a key does not make it ours
    ("POST", {**LOCAL, "sec-fetch-site": "cross-site"}, True, "cross-site request refused"),
    ("GET", {**LOCAL, "origin": "https://evil.example"}, False, None),  # reads: the browser keeps the answer
    ("GET", {"host": "rebound.evil.example:8000"}, False, "Host 'rebound.evil.example:8000' is not this server"),
    ("POST", {"host": "rebound.evil.example:8000", "origin": "http://rebound.evil.example:8000"}, False, "is not this server"),
    ("GET", {"host": "bfm.example.org"}, True, None),  # with keys a server may have any name
    ("GET", {"host": "127.0.0.1:notaport"}, False, "is not this server"),
])
def test_refusal(method: str, headers: dict[str, str], has_keys: bool, refused: str | None) -> None:
    answer = refusal(method, "http", headers, frozenset(), has_keys)
    if refused is None:
        assert answer is None
    else:
        assert answer is not None and refused in answer and "\n" not in answer


def test_allowed_origins_are_matched_as_browsers_write_them() -> None:
    allowed = frozenset({check_origin_option("https://Bfm.Example.org")})
    assert allowed == {"https://bfm.example.org:443"}
    headers = {"host": "10.0.0.5:8000", "origin": "https://bfm.example.org"}
    assert refusal("POST", "http", headers, allowed, True) is None
    assert refusal("POST", "http", {**headers, "origin": "https://other.example.org"}, allowed, True) is not None
    for bad in ("bfm.example.org", "ftp://x", "https://x/path", "https://"):
        with pytest.raises(BfmError, match="--allow-origin"):
            check_origin_option(bad)
    with pytest.raises(BfmError, match="--allow-origin"):
        ServeOptions(allow_origins=("https://x/path",)).check()
    assert ServeOptions.from_strings({"allow_origins": "https://a.example, https://b.example"}).allow_origins == (
        "https://a.example", "https://b.example")


def test_the_app_refuses_before_any_route_runs() -> None:
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from bfm_deploy.serve.app import create_app

    client = TestClient(create_app(ServeOptions(bundle=DEMO, backend="ort")), base_url="http://127.0.0.1:8000")
    page = client.get("/")  # no lifespan: nothing is loaded, and the page needs nothing
    assert page.status_code == 200
    rebound = client.get("/", headers={"host": "rebound.evil.example:8000"})
    assert rebound.status_code == 403 and "is not this server" in rebound.json()["error"]
    forged = client.post("/v1/gallery/enroll", content=b'{"identity": "x", "images": []}',
                         headers={"origin": "https://evil.example", "content-type": "text/plain"})
    assert forged.status_code == 403 and forged.json()["error"].startswith("cross-origin request")
    metrics = client.get("/metrics").text
    assert 'bfm_errors_total{kind="cross_site"} 2' in metrics

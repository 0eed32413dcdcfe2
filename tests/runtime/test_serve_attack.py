"""bfm-serve and its gallery against an attacker and a careless client: each case is a request (or a start-up)
that once gave a 500, a traceback, an unbounded metric or a silent misreading, and must now get its documented
answer. A real server in a subprocess on a loopback port (1 MiB body limit, an API key, a gallery)."""

from __future__ import annotations

import base64
import json
import re
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from bfm_deploy.serve.process import ServerProcess, free_port  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "engines" / "demo"
KEY = "attack-key-19c2"
FACE = REPO / "examples" / "zakayev_1.jpg"
EXPOSITION_LINE = re.compile(r'^(# TYPE \w+ \w+|\w+(\{(\w+="([^"\\]|\\.)*",?)*\})? [0-9.e+-]+|)$')


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("attack")
    (tmp / "keys.txt").write_text(KEY + "\n")
    running = ServerProcess(DEMO, "ort", ("--api-key-file", str(tmp / "keys.txt"), "--max-body-mb", "1",
                                          "--gallery", str(tmp / "gallery")), log=tmp / "serve.log")
    yield running
    code = running.stop()
    log = (tmp / "serve.log").read_text()
    assert "Traceback" not in log, log[-3000:]
    assert code in (0, -15)


@pytest.fixture()
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers={"X-API-Key": KEY}, timeout=60) as client:
        yield client


def _face_b64() -> str:
    return base64.b64encode(FACE.read_bytes()).decode()


def _metrics(server: ServerProcess) -> str:
    return httpx.get(f"{server.url}/metrics", timeout=30).text


def _count(text: str, pattern: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if re.match(pattern, line))


def _error_of(response: httpx.Response) -> str:
    body = response.json()
    assert set(body) == {"error"} and "\n" not in body["error"]
    return str(body["error"])


# ---- bodies -----------------------------------------------------------------------------------------------------


def test_a_chunked_body_over_the_limit_is_413_like_a_declared_one(http: httpx.Client) -> None:
    declared = http.post("/v1/verify", content=b"x" * (2 * 2**20), headers={"Content-Type": "application/json"})
    chunked = http.post("/v1/verify", content=(b"x" * 65536 for _ in range(32)),  # 2 MiB, no Content-Length
                        headers={"Content-Type": "application/json"})
    assert declared.status_code == chunked.status_code == 413
    assert "1 MiB limit" in _error_of(chunked)


@pytest.mark.parametrize("body, message", [
    (b"[" * 100_000, "nested too deeply"),
    (b'{"a": ' * 50_000, "nested too deeply"),
    (b"{not json", "not valid JSON"),
    (b"\xff\xfe", "not valid JSON"),
    (b"[1, 2]", "expected a JSON object"),
], ids=["100k-brackets", "50k-objects", "broken", "not-utf8", "array"])
def test_malformed_json_is_422(http: httpx.Client, body: bytes, message: str) -> None:
    response = http.post("/v1/verify", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 422 and message in _error_of(response)


@pytest.mark.parametrize("path, field, value", [
    ("/v1/verify", "aligned", "false"), ("/v1/verify", "aligned", 0), ("/v1/verify", "aligned", None),
    ("/v1/embed", "aligned", "true"), ("/v1/gallery/identify", "aligned", "no"),
    ("/v1/gallery/enroll", "extend", "false"), ("/v1/gallery/enroll", "aligned", 1),
])
def test_booleans_are_json_booleans_only(http: httpx.Client, path: str, field: str, value: object) -> None:
    body: dict[str, object] = {"a": _face_b64(), "b": _face_b64(), "images": [_face_b64()], "identity": "bool-case",
                               field: value}
    response = http.post(path, json=body)
    assert response.status_code == 422 and f"{field} must be a JSON boolean" in _error_of(response)


def test_a_multipart_flag_is_true_false_or_an_error(http: httpx.Client) -> None:
    files = {"a": ("a.jpg", FACE.read_bytes()), "b": ("b.jpg", FACE.read_bytes())}
    assert http.post("/v1/verify", files=files, data={"aligned": "false"}).status_code == 200
    refused = http.post("/v1/verify", files=files, data={"aligned": "maybe"})
    assert refused.status_code == 422 and "aligned must be true or false" in _error_of(refused)


def test_extend_false_keeps_the_409_guard(http: httpx.Client) -> None:
    first = http.post("/v1/gallery/enroll", json={"identity": "guarded", "images": [_face_b64()]})
    assert first.status_code == 200
    again = http.post("/v1/gallery/enroll", json={"identity": "guarded", "images": [_face_b64()], "extend": False})
    assert again.status_code == 409
    extended = http.post("/v1/gallery/enroll", json={"identity": "guarded", "images": [_face_b64()], "extend": True})
    assert extended.status_code == 200


# ---- names ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, message", [
    ("\ud800", "lone surrogate"), ("a\udfffb", "lone surrogate"), (".", "cannot be an identity"),
    ("..", "cannot be an identity"), ("nul\x00byte", "control character"), ("tab\there", "control character"),
    ("x" * 257, "at most 256"),
], ids=["surrogate", "inner-surrogate", "dot", "dotdot", "nul", "tab", "too-long"])
def test_names_that_could_not_be_stored_or_removed_are_refused_at_enrolment(http: httpx.Client, name: str,
                                                                            message: str) -> None:
    body = json.dumps({"identity": name, "images": [_face_b64()]})  # json.dumps writes "\ud800" as an escape
    response = http.post("/v1/gallery/enroll", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 422 and message in _error_of(response)


@pytest.mark.parametrize("name", ["a/b", "../etc/passwd", "50%", "a?b#c", "名前 with space", "quote\"d"])
def test_every_enrolable_name_is_removable_through_the_client(server: ServerProcess, name: str) -> None:
    with server.client(api_key=KEY) as client:
        client.gallery_enroll(name, [FACE])
        assert name in {p["identity"] for p in client.gallery_list()["identities"]}
        assert client.gallery_remove(name) == 1
        assert name not in {p["identity"] for p in client.gallery_list()["identities"]}


def test_removing_an_impossible_name_is_404(http: httpx.Client) -> None:
    response = http.delete("/v1/gallery/identities/%ED%A0%80")  # the UTF-8 bytes of a lone surrogate
    assert response.status_code == 404


# ---- browsers on behalf of other sites (serve/origin.py) --------------------------------------------------------


def test_a_page_of_another_site_cannot_post_through_a_browser(server: ServerProcess, http: httpx.Client) -> None:
    """A form or text/plain fetch needs no preflight, and the body is read as JSON all the same: the Origin the
    browser adds is what tells it apart, also when the key is right (a key in the page's script)."""
    body = json.dumps({"identity": "csrf", "images": [_face_b64()]})
    forged = http.post("/v1/gallery/enroll", content=body,
                       headers={"content-type": "text/plain", "origin": "https://evil.example"})
    assert forged.status_code == 403 and "cross-origin request" in _error_of(forged)
    assert "csrf" not in {p["identity"] for p in http.get("/v1/gallery/identities").json()["identities"]}
    own = http.post("/v1/verify", json={"a": _face_b64(), "b": _face_b64()},
                    headers={"origin": server.url})  # the page bfm-serve serves: same origin
    assert own.status_code == 200 and own.json()["same"] is True


# ---- metrics ----------------------------------------------------------------------------------------------------


def test_metrics_label_routes_not_paths_and_stay_valid(server: ServerProcess, http: httpx.Client) -> None:
    secret = 'Jane "the secret" Doe\\'
    with server.client(api_key=KEY) as client:
        client.gallery_enroll(secret, [FACE])
        client.gallery_remove(secret)
    before = len(_metrics(server))
    with httpx.Client(base_url=server.url, timeout=30) as anonymous:
        for i in range(300):
            anonymous.get(f"/made-up/{i}/{'x' * 50}")
            anonymous.get(f"/v1/made-up-{i}")
    text = _metrics(server)
    assert "secret" not in text and "made-up" not in text
    assert len(text) - before < 2000  # 600 distinct paths add at most a few label sets
    assert 'endpoint="/v1/gallery/identities/{identity:path}"' in text and 'endpoint="unmatched"' in text
    bad = [line for line in text.splitlines() if not EXPOSITION_LINE.match(line)]
    assert not bad, bad[:5]


# ---- faults -----------------------------------------------------------------------------------------------------


def _drop_mid_upload(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"POST /v1/verify HTTP/1.1\r\nHost: x\r\nX-API-Key: " + KEY.encode() +
                     b"\r\nContent-Type: application/json\r\nContent-Length: 500000\r\n\r\n" + b"{" * 2000)


def test_clients_that_drop_mid_upload_leave_no_trace_but_a_count(server: ServerProcess) -> None:
    internal_before = _count(_metrics(server), r'bfm_errors_total\{kind="internal"\}')
    for _ in range(40):
        _drop_mid_upload(server.port)
    with server.client(api_key=KEY) as client:
        assert client.verify(FACE, FACE)["same"] is True  # still serving
    text = _metrics(server)
    assert _count(text, r'bfm_errors_total\{kind="internal"\}') == internal_before
    assert _count(text, r'bfm_errors_total\{kind="client_disconnected"\}') >= 40
    assert server.log is not None and "Traceback" not in server.log.read_text()


def test_no_request_of_this_suite_got_a_500(server: ServerProcess) -> None:
    assert _count(_metrics(server), r'bfm_requests_total\{.*status="5\d\d"') == 0


# ---- start-up ---------------------------------------------------------------------------------------------------


def _serve(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bfm_deploy.serve.cli", "--backend", "ort", *args],
                          capture_output=True, text=True, timeout=120)


def test_start_up_failures_are_one_line_before_anything_listens(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        in_use = _serve("--bundle", str(DEMO), "--port", str(port))
    not_a_bundle = _serve("--bundle", str(tmp_path), "--port", str(free_port()))
    damaged = tmp_path / "gallery"
    damaged.mkdir()
    (damaged / "gallery.sqlite").write_bytes(b"SQLite format 3\x00" + b"\x13" * 4000)
    with pytest.raises(sqlite3.DatabaseError):
        sqlite3.connect(damaged / "gallery.sqlite").execute("select * from sqlite_master").fetchall()
    bad_gallery = _serve("--bundle", str(DEMO), "--port", str(free_port()), "--gallery", str(damaged))
    for result, message in ((in_use, f"cannot listen on 127.0.0.1:{port}"), (not_a_bundle, "is not a bundle"),
                            (bad_gallery, "")):
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
        assert "bfm-serve on http" not in result.stdout + result.stderr and "Traceback" not in result.stderr

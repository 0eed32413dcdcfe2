"""bfm-serve's web page in a real browser: headless Chromium (Debian's ``chromium`` and ``chromium-driver``) drives the
page against a real bfm-serve on a loopback port, with an API-key file and a gallery, through chromedriver's W3C
WebDriver HTTP API (plain urllib: no client library).

Screenshots for the README, only when asked:
    BFM_UI_SCREENSHOTS=benchmarks/results/ui python -m pytest -q tests/test_page_browser.py
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from bfm_deploy.atomic import atomic_path  # noqa: E402
from bfm_deploy.serve.process import ServerProcess, free_port  # noqa: E402
from bfm_deploy.verifier import Verifier  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "engines" / "demo"
EXAMPLES = REPO / "examples"
KEY = "browser-key-93b1"
ELEMENT = "element-6066-11e4-a52e-4f735466cecf"  # the W3C name of an element reference
DESKTOP, PHONE = (900, 700), (390, 844)


def _chromium() -> tuple[str, str]:
    browser = next((found for name in ("chromium", "chromium-browser", "google-chrome")
                    if (found := shutil.which(name))), None)
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        pytest.skip("no headless Chromium here: apt-get install chromium chromium-driver (.ci/run does)")
    return browser, driver


class WebDriverError(Exception):
    pass


class Browser:
    """One Chromium session over chromedriver's HTTP API: the few W3C WebDriver commands these tests need."""

    def __init__(self, browser: str, driver: str, log: Path) -> None:
        self.port = free_port()
        self.driver = subprocess.Popen([driver, f"--port={self.port}"], stdout=log.open("w"), stderr=subprocess.STDOUT)
        self.base = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 20
        while not self._ready():
            if time.monotonic() > deadline or self.driver.poll() is not None:
                self.driver.kill()
                raise WebDriverError(f"chromedriver did not start: {log.read_text()[-300:]}")
            time.sleep(0.1)
        args = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
                f"--window-size={DESKTOP[0]},{DESKTOP[1]}", "--use-fake-device-for-media-stream",
                "--use-fake-ui-for-media-stream"]  # a synthetic camera, allowed without asking
        capabilities = {"browserName": "chrome", "goog:chromeOptions": {"binary": browser, "args": args}}
        self.session = self._call("POST", "/session", {"capabilities": {"alwaysMatch": capabilities}})["sessionId"]
        self.phone(False)

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.base}/status", timeout=2) as answer:
                return bool(json.load(answer)["value"]["ready"])
        except (OSError, ValueError, KeyError):
            return False

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body if body is not None else {}).encode() if method == "POST" else None
        request = urllib.request.Request(self.base + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=60) as answer:
                return json.load(answer)["value"]
        except urllib.error.HTTPError as exc:
            raise WebDriverError(json.load(exc)["value"].get("message", "").splitlines()[0]) from None

    def command(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        return self._call(method, f"/session/{self.session}{path}", body)

    def open(self, url: str) -> None:
        self.command("POST", "/url", {"url": url})

    def element(self, css: str) -> str:
        return str(self.command("POST", "/element", {"using": "css selector", "value": css})[ELEMENT])

    def type(self, css: str, text: str) -> None:
        """Keys into a field; for a file input, the files' paths, one a line (what a person picks)."""
        self.command("POST", f"/element/{self.element(css)}/value", {"text": text})

    def click(self, css: str) -> None:
        self.command("POST", f"/element/{self.element(css)}/click")

    def text(self, css: str) -> str:
        return str(self.command("GET", f"/element/{self.element(css)}/text"))

    def run(self, script: str, *args: Any) -> Any:
        return self.command("POST", "/execute/sync", {"script": script, "args": list(args)})

    def wait(self, script: str, *args: Any, timeout_s: float = 30) -> Any:
        """Until ``script`` returns something true; what it returned."""
        deadline = time.monotonic() + timeout_s
        while not (value := self.run(script, *args)):
            if time.monotonic() > deadline:
                raise WebDriverError(f"timed out waiting for: {script}")
            time.sleep(0.05)
        return value

    def drop(self, css: str, path: Path) -> None:
        """Drag-and-drop of a file onto ``css``, as the browser delivers it: a drop event with its DataTransfer."""
        self.run("""const [css, name, data] = arguments;
            const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], name, {type: "image/jpeg"}));
            document.querySelector(css).dispatchEvent(
              new DragEvent("drop", {dataTransfer: transfer, bubbles: true, cancelable: true}));""",
                 css, path.name, base64.b64encode(path.read_bytes()).decode())

    def phone(self, on: bool) -> None:
        """The viewport of a phone (390 CSS pixels wide, touch, mobile layout) or of the desktop window."""
        width, height = PHONE if on else DESKTOP
        self.command("POST", "/goog/cdp/execute", {"cmd": "Emulation.setDeviceMetricsOverride", "params": {
            "width": width, "height": height, "deviceScaleFactor": 1, "mobile": on}})

    def screenshot(self, path: Path) -> None:
        """A 40-colour PNG of the viewport: a screenshot is mostly flat colour, its photos dither, and the three
        stay under 90 KB together (the tree's size limit, tests/test_gpu_check.py). Octree quantising keeps the
        thin box and landmark colours that median cut merges into the photos'."""
        from PIL import Image

        png = base64.b64decode(self.command("GET", "/screenshot"))
        with Image.open(io.BytesIO(png)) as image:
            palette = image.convert("RGB").quantize(colors=40, method=Image.Quantize.FASTOCTREE)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            palette.save(tmp, format="PNG", optimize=True)

    def close(self) -> None:
        try:
            self._call("DELETE", f"/session/{self.session}")
        finally:
            self.driver.terminate()
            self.driver.wait(timeout=20)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("page")
    (tmp / "keys.txt").write_text(f"{KEY}\n")
    running = ServerProcess(DEMO, "ort", ("--api-key-file", str(tmp / "keys.txt"), "--gallery", str(tmp / "gallery")),
                            log=tmp / "serve.log")
    yield running
    running.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    found = _chromium()
    session = Browser(*found, log=tmp_path_factory.mktemp("chromedriver") / "chromedriver.log")
    yield session
    session.close()


@pytest.fixture
def page(browser: Browser, server: ServerProcess) -> Browser:
    """The page, freshly loaded in its desktop size, with the key typed in."""
    browser.phone(False)
    browser.open(f"{server.url}/")
    browser.run("sessionStorage.clear()")
    browser.open(f"{server.url}/")
    browser.type("#api-key", KEY)
    return browser


def _screenshot(browser: Browser, name: str) -> None:
    folder = os.environ.get("BFM_UI_SCREENSHOTS")
    if folder:
        browser.screenshot(Path(folder) / name)


def _api(server: ServerProcess, method: str, path: str, **kwargs: Any) -> Any:  # an httpx.Response
    return httpx.request(method, f"{server.url}{path}", headers={"X-API-Key": KEY}, timeout=120, **kwargs)


def _verified(page: Browser) -> str:
    """After a click on Verify: the decision shown, or the error line."""
    page.wait("return !document.querySelector('#result').hidden || !document.querySelector('#verify-error').hidden")
    return page.text("#decision") if page.run("return !document.querySelector('#result').hidden") else \
        page.text("#verify-error")


def _explained(page: Browser) -> None:
    page.wait("return document.querySelector('#explain-status').hidden")


def _no_horizontal_overflow(page: Browser) -> None:
    widths = page.run("return [document.documentElement.scrollWidth, document.body.scrollWidth, window.innerWidth]")
    assert widths[2] == PHONE[0] and max(widths[:2]) <= widths[2], widths


def test_verify_reads_the_decision_of_a_same_and_a_different_pair(page: Browser, server: ServerProcess) -> None:
    same, different = (EXAMPLES / "zakayev_1.jpg", EXAMPLES / "zakayev_3_masked.jpg"), \
        (EXAMPLES / "zakayev_1.jpg", EXAMPLES / "pacheco_1.jpg")
    with Verifier(DEMO, backend="ort") as verifier:
        want = [verifier.verify(*same), verifier.verify(*different)]
    assert [w.same for w in want] == [True, False]  # the pairs are what their names say
    page.type("#slot-a .file", str(same[0]))
    page.drop("#slot-b .drop", same[1])  # one by the file picker, one by drag-and-drop
    page.click("#verify")
    assert _verified(page) == "Same person"
    assert page.text("#score") == f"{want[0].score:.4f}" and page.text("#case").startswith(f"{want[0].case}:")
    assert page.text("#route").startswith(want[0].route)
    assert page.text("#face-b figcaption").startswith(f"B: mask {100 * want[0].mask_probability[1]:.1f}%")
    crops = page.wait("const sizes = [...document.querySelectorAll('#face-a img, #face-b img')].map("
                      "(i) => [i.naturalWidth, i.naturalHeight]); return sizes.every((s) => s[0]) && sizes")
    assert crops == [[112, 112], [112, 112]]  # the aligned crops the API sent back
    box = page.run("const r = document.querySelector('#slot-a .marks rect'); return r && "
                   "[+r.getAttribute('x'), +r.getAttribute('width'), document.querySelector('#slot-a img').naturalWidth]")
    assert box and 0 <= box[0] and box[0] + box[1] <= box[2]  # the detector's box, inside the photo
    assert len(page.run("return document.querySelectorAll('#slot-b .marks circle')")) == 5
    _explained(page)
    _check_explanation(page, server, same)
    _screenshot(page, "verify.png")
    page.phone(True)
    _no_horizontal_overflow(page)
    page.run("document.querySelector('#result').scrollIntoView()")
    _screenshot(page, "verify_phone.png")
    page.phone(False)
    page.type("#slot-b .file", str(different[1]))
    page.click("#verify")
    assert _verified(page) == "Different people"
    assert page.text("#score") == f"{want[1].score:.4f}"
    _explained(page)


def _check_explanation(page: Browser, server: ServerProcess, pair: tuple[Path, Path]) -> None:
    """The page shows what POST /v1/explain answers for the pair: both overlays and shares, or its one error line
    (a server without torch: 501; before the endpoint existed: 404)."""
    answer = _api(server, "POST", "/v1/explain", files={"a": (pair[0].name, pair[0].read_bytes()),
                                                         "b": (pair[1].name, pair[1].read_bytes())})
    if answer.status_code == 200:
        assert page.run("return document.querySelector('#explain-error').hidden")
        shown = page.run("return [...document.querySelectorAll('#explain img')].map((i) => i.src)")
        assert shown == [face["overlay"] for face in answer.json()["faces"]]
        assert f"{100 * answer.json()['faces'][0]['mask_region_share']:.1f}%" in page.text("#explain-a figcaption")
    else:
        assert page.text("#explain-error") == answer.json()["error"]
        assert page.run("return document.querySelector('#explain').hidden")


def test_a_photo_without_a_face_and_a_wrong_key_show_the_apis_line(page: Browser, server: ServerProcess,
                                                                   tmp_path: Path) -> None:
    blank, face = tmp_path / "wall.png", EXAMPLES / "zakayev_1.jpg"
    cv2.imwrite(str(blank), np.full((240, 320, 3), 180, np.uint8))
    page.type("#slot-a .file", str(blank))
    page.type("#slot-b .file", str(face))
    page.click("#verify")
    want = _api(server, "POST", "/v1/verify", files={"a": (blank.name, blank.read_bytes()),
                                                     "b": (face.name, face.read_bytes())}).json()["error"]
    assert want.startswith("wall.png: no face found") and _verified(page) == want
    page.run("document.querySelector('#api-key').value = ''")
    page.type("#api-key", "wrong")
    page.click("#verify")
    page.wait("return document.querySelector('#verify-error').textContent.includes('API key')")
    assert page.text("#verify-error") == "missing or wrong API key (X-API-Key or Authorization: Bearer)"
    assert page.run("return document.querySelector('#result').hidden")
    assert page.run("return sessionStorage.getItem('bfm-api-key')") == "wrong"  # the tab's storage only
    assert page.run("return localStorage.length") == 0 and page.run("return document.cookie") == ""


def test_a_camera_snapshot_is_a_photo_like_any_other(page: Browser) -> None:
    """Chromium's synthetic camera shows a test pattern: the snapshot fills the slot and, holding no face, is
    answered with the API's line for it."""
    assert page.run("return !document.querySelector('#slot-a .camera').hidden")
    page.click("#slot-a .camera")
    page.wait("return !document.querySelector('#slot-a .camera-box').hidden")
    page.click("#slot-a .snap")
    page.wait("return document.querySelector('#slot-a img').naturalWidth > 0")
    page.type("#slot-b .file", str(EXAMPLES / "zakayev_1.jpg"))
    page.click("#verify")
    assert _verified(page).startswith("camera-a.jpg: no face found in image")


def test_gallery_enrol_identify_list_and_remove(page: Browser, server: ServerProcess) -> None:
    page.click("#tab-gallery")
    page.wait("return !document.querySelector('#gallery').hidden")
    page.type("#enroll-name", "zakayev")
    page.type("#enroll-files", "\n".join(str(EXAMPLES / n) for n in ("zakayev_1.jpg", "zakayev_3.jpg")))
    page.click("#enroll button[type=submit]")
    page.wait("return !document.querySelector('#enroll-answer').hidden || !document.querySelector('#gallery-error').hidden")
    assert page.text("#enroll-answer") == "enrolled zakayev: 2 faces (0 masked)"
    page.wait("return document.querySelector('#identities .name')")
    assert page.text("#identities li") .startswith("zakayev")
    probes = [EXAMPLES / "zakayev_3_masked.jpg", EXAMPLES / "pacheco_1.jpg"]
    page.type("#identify-files", "\n".join(map(str, probes)))
    page.run("document.querySelector('#identify-k').value = '1'")
    page.click("#identify button[type=submit]")
    page.wait("return document.querySelectorAll('#identify-answer .probe').length === 2")
    want = _api(server, "POST", "/v1/gallery/identify", json={
        "images": [base64.b64encode(p.read_bytes()).decode() for p in probes], "top_k": 1}).json()["probes"]
    shown = page.run("return [...document.querySelectorAll('#identify-answer .who')].map((p) => p.dataset.identity)")
    assert shown == [p["identity"] or "" for p in want] == ["zakayev", ""]
    assert page.text("#identify-answer .probe:nth-child(2) .who").startswith("pacheco_1.jpg: unknown")
    assert len(page.run("return document.querySelectorAll('#identify-answer tr')")) == 2 * 2  # header + top-1 each
    _screenshot(page, "gallery.png")
    page.phone(True)
    _no_horizontal_overflow(page)
    page.phone(False)
    page.click("#identities .remove")
    page.wait("return document.querySelector('#identities').textContent.includes('nobody enrolled')")
    assert _api(server, "GET", "/v1/gallery/identities").json()["identities"] == []


def test_without_a_gallery_the_page_says_so(browser: Browser, tmp_path: Path) -> None:
    bare = ServerProcess(DEMO, "ort", log=tmp_path / "serve.log")  # no key, no gallery
    try:
        browser.phone(False)
        browser.open(f"{bare.url}/#gallery")
        browser.wait("return !document.querySelector('#gallery-error').hidden")
        assert browser.text("#gallery-status").startswith("This server has no gallery")
        assert browser.text("#gallery-error") == httpx.get(f"{bare.url}/v1/gallery/identities").json()["error"]
        assert browser.run("return document.querySelector('#gallery').hidden")
    finally:
        bare.stop()

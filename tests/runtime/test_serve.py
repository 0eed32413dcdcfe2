"""bfm-serve as a client meets it: the real server in a subprocess on a loopback port, spoken to over HTTP."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from bfm_deploy.datasets import read_lfw_pairs, read_mfr2_pairs  # noqa: E402
from bfm_deploy.serve import Client  # noqa: E402
from bfm_deploy.serve.client import ServiceError  # noqa: E402
from bfm_deploy.serve.process import ServerProcess  # noqa: E402
from bfm_deploy.verifier import Verifier  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "engines" / "demo"
KEY = "test-key-7f3a"


class Server(ServerProcess):
    """The demo bundle on ort behind an API-key file (one key in clear, one as its digest), logged to a file."""

    def __init__(self, tmp: Path, *args: str) -> None:
        keys = tmp / "keys.txt"
        keys.write_text(f"# one key in clear, one as its digest\n{KEY}\nsha256:{'0' * 64}\n")
        self.log_file = tmp / "serve.log"
        super().__init__(DEMO, "ort", ("--api-key-file", str(keys), *args), log=self.log_file)

    def client(self, key: str | None = KEY) -> Client:  # type: ignore[override]
        return Client(self.url, api_key=key)

    def stopped_cleanly(self) -> bool:
        """After SIGTERM: no traceback, and uvicorn's exit by the signal it got after a graceful shutdown (as
        systemd expects of a service) or 0."""
        code = self.stop()
        return code in (0, -signal.SIGTERM) and "Traceback" not in self.log_file.read_text()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("serve")
    running = Server(tmp, "--max-wait-ms", "30", "--gallery", str(tmp / "gallery"))
    yield running
    assert running.stopped_cleanly(), running.log_file.read_text()


def _pairs(data_dir: Path) -> list[tuple[Path, Path]]:
    lfw = read_lfw_pairs(data_dir / "lfw" / "pairs.txt", data_dir / "lfw" / "raw-fold1")
    lfw = [p for p in lfw if p.left.is_file() and p.right.is_file()][:4]
    mfr2 = read_mfr2_pairs(data_dir / "mfr2" / "pairs.txt", data_dir / "mfr2")[::106][:6]  # both kinds, masks
    return [(p.left, p.right) for p in lfw + mfr2]


def test_decisions_match_the_verifier_on_real_photos(server: Server, data_dir: Path) -> None:
    pairs = _pairs(data_dir)
    with Verifier(DEMO, backend="ort") as verifier:
        expected = [r.to_dict() for r in verifier.verify_many(pairs)]
    with server.client() as client:
        one_by_one = [client.verify(a, b) for a, b in pairs]
        batch = client.verify_batch(pairs)
    assert {r["route"] for r in expected} == {"full", "partial"}  # both routes are exercised
    for want, got, got_batch in zip(expected, one_by_one, batch):
        for result in (got, got_batch):
            assert (result["same"], result["route"], result["case"]) == (want["same"], want["route"], want["case"])
            assert result["score"] == pytest.approx(want["score"], abs=1e-5)
            assert result["threshold"] == want["threshold"]
            assert result["mask_probability"] == pytest.approx(want["mask_probability"], abs=1e-5)


def test_embed_routes_each_face_and_the_service_endpoints(server: Server, data_dir: Path) -> None:
    photo = REPO / "examples" / "zakayev_1.jpg"
    masked = REPO / "examples" / "zakayev_3_masked.jpg"
    with Verifier(DEMO, backend="ort") as verifier:
        want = verifier.embed([masked], route="partial")[0]
    with server.client() as client:
        faces = client.embed([photo, masked])
        assert [f["route"] for f in faces] == ["full", "partial"]
        assert np.dot(np.array(faces[1]["embedding"]), want) == pytest.approx(1.0, abs=1e-5)
        assert faces[1]["mask_probability"] > 0.5 > faces[0]["mask_probability"]
        assert client.ready()["bundle"] == "demo"
        text = client.metrics()
    assert 'bfm_requests_total{endpoint="/v1/embed",status="200"}' in text and "bfm_batch_faces_count" in text
    import httpx

    assert httpx.get(f"{server.url}/healthz").json() == {"status": "alive"}
    assert httpx.get(f"{server.url}/docs").status_code == 200
    assert "/v1/verify" in httpx.get(f"{server.url}/openapi.json").json()["paths"]


def test_gallery_endpoints_enrol_identify_remove_and_refuse_bad_input(server: Server, data_dir: Path) -> None:
    photos = sorted((data_dir / "lfw" / "raw-fold1").glob("*/*.jpg"))
    others = {p.parent.name: p for p in photos if not p.parent.name.startswith("Zakayev")}
    strangers = list(others.values())[:3]
    with server.client() as client:
        assert client.gallery_enroll("zakayev", [REPO / "examples" / "zakayev_1.jpg"]) == \
            {"identity": "zakayev", "face_ids": [1], "masked": 0}
        for path in strangers[:2]:
            client.gallery_enroll(path.parent.name, [path])
        masked, unmasked, stranger = client.gallery_identify(
            [REPO / "examples" / "zakayev_3_masked.jpg", REPO / "examples" / "zakayev_3.jpg", strangers[2]], top_k=2)
        assert masked["identity"] == "zakayev" and masked["masked"] and masked["candidates"][0]["route"] == "partial"
        assert unmasked["identity"] == "zakayev" and unmasked["candidates"][0]["route"] == "full"
        assert stranger["identity"] is None and len(stranger["candidates"]) == 2
        before = client.gallery_list()
        assert [p["identity"] for p in before["identities"]] == sorted(["zakayev", *(p.parent.name for p in strangers[:2])])
        blank = cv2.imencode(".png", np.full((200, 200, 3), 120, np.uint8))[1].tobytes()
        for call, status, message in (
            (lambda: client.gallery_enroll("zakayev", [REPO / "examples" / "zakayev_3.jpg"]), 409, "already enrolled"),
            (lambda: client.gallery_enroll("someone", [REPO / "examples" / "pacheco_1.jpg", blank]), 422, "no face found"),
            (lambda: client.gallery_remove("nobody"), 404, "not enrolled"),
        ):
            with pytest.raises(ServiceError) as err:
                call()
            assert err.value.status == status and message in str(err.value) and "\n" not in str(err.value)
        assert client.gallery_list() == before  # nothing stored, nothing lost
        assert client.gallery_remove("zakayev") == 1
        assert client.gallery_identify([REPO / "examples" / "zakayev_3.jpg"])[0]["identity"] is None


def test_keys_limits_and_bad_images_are_one_line_errors(server: Server, tmp_path: Path) -> None:
    good = REPO / "examples" / "zakayev_1.jpg"
    with server.client(key=None) as anonymous, pytest.raises(ServiceError) as err:
        anonymous.verify(good, good)
    assert err.value.status == 401
    with server.client(key="wrong") as wrong, pytest.raises(ServiceError) as err:
        wrong.verify(good, good)
    assert err.value.status == 401
    blank = cv2.imencode(".png", np.full((200, 200, 3), 120, np.uint8))[1].tobytes()
    cases = {
        b"": "is empty (0 bytes)",
        good.read_bytes()[:3000]: "truncated JPEG",
        b"hello, I am text\n": "not an image format bfm decodes",
        blank: "no face found",
    }
    with server.client() as client:
        for data, message in cases.items():
            with pytest.raises(ServiceError) as err:
                client.verify(data, good)
            assert err.value.status == 422 and message in str(err.value) and "\n" not in str(err.value)
        with pytest.raises(ServiceError) as err:
            client.verify(b"\xff" * (33 * 2**20), good)  # over the 32 MiB body limit
        assert err.value.status == 413
        results = client.verify_batch([(good, good), (blank, good)])
        assert results[0]["same"] is True and "no face found" in results[1]["error"]


def test_batches_form_across_concurrent_requests(server: Server) -> None:
    before = _batch_count(server)
    pairs = [(REPO / "examples" / "zakayev_1.jpg", REPO / "examples" / "zakayev_3.jpg")] * 16
    answers: list[dict] = []

    def one(a: Path, b: Path) -> None:
        with server.client() as client:
            answers.append(client.verify(a, b))

    threads = [threading.Thread(target=one, args=pair) for pair in pairs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(answers) == 16 and all(a["same"] for a in answers)
    batches = _batch_count(server) - before
    assert batches < 16, f"{batches} batches for 16 concurrent requests: no cross-request batching"


def _batch_count(server: Server) -> int:
    with server.client() as client:
        line = next(row for row in client.metrics().splitlines() if row.startswith("bfm_batch_faces_count"))
    return int(line.split()[-1])


def test_a_full_queue_is_503_and_shutdown_finishes_requests_in_flight(tmp_path: Path, data_dir: Path) -> None:
    crop = sorted((data_dir / "lfw" / "aligned112").glob("A*/*.jpg"))[0].read_bytes()  # aligned: no detection
    busy = Server(tmp_path, "--queue-size", "1", "--max-batch", "2", "--max-wait-ms", "0", "--max-pairs", "64")
    try:
        statuses: list[int] = []

        def one() -> None:
            with busy.client() as client:
                try:
                    client.verify_batch([(crop, crop)] * 32, aligned=True)
                    statuses.append(200)
                except ServiceError as exc:
                    statuses.append(exc.status)

        threads = [threading.Thread(target=one) for _ in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert 503 in statuses and 200 in statuses, statuses
        # A long request in flight when SIGTERM comes is answered, then the server exits cleanly.
        done: list[int] = []

        def long_one() -> None:
            with busy.client() as client:
                done.append(len(client.verify_batch([(crop, crop)] * 64, aligned=True)))

        worker = threading.Thread(target=long_one)
        worker.start()
        time.sleep(0.3)
        busy.proc.send_signal(signal.SIGTERM)
        worker.join(timeout=90)
        assert done == [64]
        assert busy.stopped_cleanly(), busy.log_file.read_text()
    finally:
        if busy.proc.poll() is None:
            os.kill(busy.proc.pid, signal.SIGKILL)


def test_ray_serve_two_replicas_answer_as_the_verifier(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    ray_server = Server(tmp_path, "--ray", "--replicas", "2")
    try:
        replicas: set[int] = set()
        deadline = time.monotonic() + 60  # the second replica may still be loading its bundle

        def ask() -> None:
            with ray_server.client() as c:
                replicas.add(c.ready()["pid"])

        while len(replicas) < 2 and time.monotonic() < deadline:
            threads = [threading.Thread(target=ask) for _ in range(8)]  # concurrent calls spread over replicas
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        with ray_server.client() as client:
            pairs = [(REPO / "examples" / "zakayev_1.jpg", REPO / "examples" / name)
                     for name in ("zakayev_3.jpg", "zakayev_3_masked.jpg", "pacheco_1.jpg")]
            got = [client.verify(a, b) for a, b in pairs]
        with Verifier(DEMO, backend="ort") as verifier:
            want = [r.to_dict() for r in verifier.verify_many(pairs)]
        assert len(replicas) == 2, replicas  # Ray spread the calls over both replicas
        for g, w in zip(got, want):
            assert (g["same"], g["route"], g["case"]) == (w["same"], w["route"], w["case"])
            assert g["score"] == pytest.approx(w["score"], abs=1e-5)
        with ray_server.client(key=None) as anonymous, pytest.raises(ServiceError) as err:
            anonymous.verify(*pairs[0])
        assert err.value.status == 401
    finally:
        code = ray_server.stop(timeout_s=120)
    assert code in (0, 15, -signal.SIGTERM), ray_server.log_file.read_text()[-2000:]

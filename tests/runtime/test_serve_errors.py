"""Whose fault a failure is decides its HTTP status: bad input 4xx, a failing inference backend 5xx (a one-line JSON
error, counted, and no traceback in the server's log), and the ort backend says which of the two it was."""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from bfm_deploy.backends import create_backend  # noqa: E402
from bfm_deploy.bundle import Bundle  # noqa: E402
from bfm_deploy.errors import BackendError, BfmError, InputError, NoFaceError  # noqa: E402
from bfm_deploy.gallery.store import AlreadyEnrolled, NotEnrolled  # noqa: E402
from bfm_deploy.serve.failures import Refused, answer_for  # noqa: E402
from bfm_deploy.serve.process import ServerProcess  # noqa: E402

DEMO = Path(__file__).resolve().parents[2] / "engines" / "demo"
FAILING_BATCH = 7  # faces: the size at which the server below has onnxruntime refuse a run

# Loaded by the server's interpreter (PYTHONPATH): a batch of FAILING_BATCH rows reaches the real runtime with a
# shape the graph does not take, so onnxruntime itself raises, as it would on a fault of its own.
SITECUSTOMIZE = f"""
import onnxruntime

_run = onnxruntime.InferenceSession.run


def run(self, output_names, input_feed, run_options=None):
    (name, batch), = input_feed.items()
    if batch.shape[0] == {FAILING_BATCH}:
        input_feed = {{name: batch[:, :, :50]}}
    return _run(self, output_names, input_feed, run_options)


onnxruntime.InferenceSession.run = run
"""


@pytest.mark.parametrize("error, status, kind", [
    (InputError("x"), 422, "http_422"),
    (NoFaceError("x"), 422, "http_422"),
    (BfmError("x"), 422, "http_422"),  # a plain BfmError keeps the answer it always had
    (BackendError("x"), 500, "backend"),
    (AlreadyEnrolled("x"), 409, "http_409"),
    (NotEnrolled("x"), 404, "http_404"),
    (Refused(413, "x"), 413, "http_413"),
])
def test_each_kind_of_failure_has_its_status(error: BfmError, status: int, kind: str) -> None:
    answer = answer_for(error)
    assert (answer.status, answer.kind, answer.headers) == (status, kind, None)
    assert answer_for(Refused(503, "busy")).headers == {"Retry-After": "1"}


def test_the_ort_backend_reports_a_failed_run_as_a_backend_error() -> None:
    with create_backend("ort", Bundle.load(DEMO)) as backend:
        assert backend.infer("full", np.zeros((2, 3, 112, 112), np.float32)).shape == (2, 512)
        for run, name in ((lambda: backend.infer("full", np.zeros((2, 3, 50, 50), np.float32)), "full"),
                          (lambda: backend.detect(np.zeros((1, 4, 32, 32), np.float32)), "detector")):
            with pytest.raises(BackendError) as failed:
                run()
            message = str(failed.value)
            assert message.startswith(f"ort backend: {name} failed on ") and "INVALID_ARGUMENT" in message
            assert "\n" not in message


@pytest.fixture()
def failing_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ServerProcess]:
    (tmp_path / "sitecustomize.py").write_text(SITECUSTOMIZE)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])))
    server = ServerProcess(DEMO, "ort", ("--quiet",), log=tmp_path / "serve.log")
    yield server
    server.stop()


def test_a_failing_backend_is_a_500_with_one_line_and_no_traceback(failing_server: ServerProcess,
                                                                   data_dir: Path) -> None:
    crops = sorted((data_dir / "lfw" / "aligned112").glob("A*/*.jpg"))[:FAILING_BATCH]
    images = [base64.b64encode(p.read_bytes()).decode() for p in crops]
    with httpx.Client(base_url=failing_server.url, timeout=60) as http:
        failed = http.post("/v1/embed", json={"images": images, "aligned": True})
        served = http.post("/v1/embed", json={"images": images[:2], "aligned": True})  # the server carries on
        metrics = http.get("/metrics").text
    assert failed.status_code == 500
    assert set(failed.json()) == {"error"} and "\n" not in failed.json()["error"]
    assert failed.json()["error"].startswith("ort backend: classifier failed on ")
    assert served.status_code == 200 and len(served.json()["faces"]) == 2
    assert re.search(r'^bfm_errors_total\{kind="backend"\} 1$', metrics, re.M), metrics
    assert 'kind="internal"' not in metrics
    assert failing_server.stop() in (0, -15)
    log = failing_server.log.read_text() if failing_server.log is not None else ""
    assert "Traceback" not in log, log[-3000:]

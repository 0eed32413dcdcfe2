"""POST /v1/explain on a real bfm-serve: the decision /v1/verify gives with each face's map, or 501 without torch."""

from __future__ import annotations

import base64
import importlib.util
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from bfm_deploy.serve.client import ServiceError  # noqa: E402
from bfm_deploy.serve.process import ServerProcess  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "engines" / "demo"
KEY = "explain-key-51c2"
HAS_TORCH = importlib.util.find_spec("torch") is not None


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("explain")
    (tmp / "keys.txt").write_text(KEY + "\n")
    running = ServerProcess(DEMO, "ort", ("--api-key-file", str(tmp / "keys.txt")), log=tmp / "serve.log")
    yield running
    running.stop()


def _png(data_url: str) -> np.ndarray:
    head, _, payload = data_url.partition(",")
    assert head == "data:image/png;base64"
    image = cv2.imdecode(np.frombuffer(base64.b64decode(payload), np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    return image


def test_explain_answers_the_verify_result_with_a_map_per_face(server: ServerProcess, data_dir: Path) -> None:
    a = data_dir / "mfr2" / "AdrianDunbar" / "AdrianDunbar_0001.png"  # masked
    b = data_dir / "mfr2" / "AdrianDunbar" / "AdrianDunbar_0002.png"  # unmasked: case 2, E_P
    with server.client(KEY) as client:
        verified = client.verify(a, b)
        if not HAS_TORCH:
            with pytest.raises(ServiceError) as refused:
                client.explain(a, b)
            assert refused.value.status == 501 and "pip install 'bfm[explain]'" in str(refused.value)
            return
        answer = client.explain(a, b)
    assert answer["result"] == verified
    assert [face["network"] for face in answer["faces"]] == [verified["route"]] * 2 == ["partial"] * 2
    for face in answer["faces"]:
        assert _png(face["map"]).shape == _png(face["overlay"]).shape == (112, 112, 3)
        assert 0.0 <= face["mask_region_share"] <= 1.0


def test_explain_needs_the_key_and_reports_a_faceless_image(server: ServerProcess) -> None:
    blank = REPO / "bfm_deploy" / "assets" / "parity" / "pacheco_1.jpg"
    grey = cv2.imencode(".png", np.full((200, 200, 3), 128, np.uint8))[1].tobytes()
    with server.client(None) as anonymous, pytest.raises(ServiceError) as refused:
        anonymous.explain(blank, blank)
    assert refused.value.status == 401
    with server.client(KEY) as client, pytest.raises(ServiceError) as faceless:
        client.explain(grey, blank)
    assert faceless.value.status == 422 and "no face" in str(faceless.value)


def test_without_torch_explaining_is_a_501_naming_the_extra() -> None:
    """The server's side of a missing extra, in a process where torch cannot be imported (CI's torch-free stage
    has no serve extra either, so this is where that answer is checked)."""
    import subprocess
    import sys

    code = ("import sys; sys.modules['torch'] = None\n"
            "from pathlib import Path\n"
            "from bfm_deploy.serve.explaining import Explaining\n"
            "from bfm_deploy.serve.failures import Refused\n"
            "try:\n"
            "    Explaining()._load(Path(sys.argv[1]))\n"
            "except Refused as exc:\n"
            "    print(exc.status, exc)\n")
    run = subprocess.run([sys.executable, "-c", code, str(DEMO)], capture_output=True, text=True, timeout=120,
                         cwd=REPO)
    assert run.returncode == 0, run.stderr[-1500:]
    status, _, message = run.stdout.strip().partition(" ")
    assert status == "501" and "pip install 'bfm[explain]'" in message, run.stdout

"""The shipped demo bundle answers the example photos correctly, out of the box (ONNX Runtime on CPU)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "engines" / "demo"
EXAMPLES = ROOT / "examples"


def verify(a: str, b: str) -> tuple[int, dict]:
    cmd = [sys.executable, "-m", "bfm_deploy.verify_cli", str(EXAMPLES / a), str(EXAMPLES / b),
           "--bundle", str(DEMO), "--backend", "ort", "--json"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, json.loads(done.stdout)


def test_demo_bundle_is_valid_and_licensed() -> None:
    from bfm_deploy.bundle import Bundle

    bundle = Bundle.load(DEMO)  # checks the manifest and every ONNX sha256
    manifest = json.loads((DEMO / "manifest.json").read_text())
    assert "non-commercial" in manifest["licence"].lower()
    assert set(manifest["thresholds"]) == {"full", "partial"}
    assert bundle is not None


@pytest.mark.parametrize(
    ("a", "b", "exit_code", "case"),
    [
        ("zakayev_1.jpg", "zakayev_3.jpg", 0, 1),
        ("zakayev_1.jpg", "pacheco_1.jpg", 1, 1),
        ("zakayev_1.jpg", "zakayev_3_masked.jpg", 0, 2),
        ("pacheco_1.jpg", "zakayev_3_masked.jpg", 1, 2),
    ],
)
def test_bfm_verify_on_example_photos(a: str, b: str, exit_code: int, case: int) -> None:
    code, result = verify(a, b)
    assert code == exit_code
    assert result["same"] is (exit_code == 0)
    assert result["case"] == case
    assert result["route"] == ("full" if case == 1 else "partial")

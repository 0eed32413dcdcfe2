"""tools/saliency_share.py grows its table one trained extractor at a time (``--append``), and refuses to put
shares measured on other crops beside the earlier ones."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "tools" / "saliency_share.py"), *args], capture_output=True,
                          text=True, timeout=120, cwd=ROOT)


def test_append_refuses_faces_found_by_another_detector(tmp_path: Path) -> None:
    earlier = tmp_path / "share.json"
    report = {"data": "MFR2", "detected_with": "engines/demo", "detected": 1, "missed": 0,
              "methods": [{"name": "E_F", "bundle": "engines/demo", "network": "full"}]}
    earlier.write_text(json.dumps(report))
    result = _run("--compare", "E_P (x)=work_dirs/bundles/x:partial", "--append", "--json-out", str(earlier))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: {earlier} measured faces found by engines/demo; pass --detect-with engines/demo")
    assert json.loads(earlier.read_text()) == report  # nothing written

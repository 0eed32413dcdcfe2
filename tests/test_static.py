"""Static checks as tests: ruff and mypy run with the README's test command (``pytest``), and so in CI.

Their configuration lives in pyproject.toml ([tool.ruff]) and setup.cfg ([mypy] sections).
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, check=False)


def test_ruff_is_clean() -> None:
    if importlib.util.find_spec("ruff") is None:
        pytest.skip("ruff is not installed (pip install -e .[dev])")
    result = _run("ruff", "check", "bfm_deploy", "bfm_models", "bfm_train", "tools", "benchmarks", "tests")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_is_clean() -> None:
    if importlib.util.find_spec("mypy") is None:
        pytest.skip("mypy is not installed (pip install -e .[dev])")
    # a stable cache folder, so that reruns take seconds
    result = _run("mypy", "--cache-dir", str(ROOT / "work_dirs" / "cache" / "mypy"), "bfm_deploy", "bfm_models", "bfm_train")
    assert result.returncode == 0, result.stdout + result.stderr

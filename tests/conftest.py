from __future__ import annotations

from pathlib import Path

import pytest

from bfm_deploy.datasets import default_data_dir


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The shared real-face data (``$BFM_DATA`` or ../shared/data); tests that need it skip without it."""
    root = default_data_dir()
    if not (root / "lfw" / "aligned112").is_dir():
        pytest.skip(f"shared face data not found at {root} (set BFM_DATA)")
    return root

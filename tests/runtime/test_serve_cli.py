"""bfm-serve without its extras: one line naming the extra that installs what is missing (``bfm_deploy.optional``),
exit 2 and no traceback, before anything is loaded."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bfm_deploy.optional import install_hint

ROOT = Path(__file__).resolve().parents[2]


def _serve_without(blocked: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``bfm-serve ARGS`` in a fresh interpreter where ``blocked`` imports as if not installed."""
    code = (f"import sys; sys.modules[{blocked!r}] = None\n"
            "from bfm_deploy.serve.cli import main\n"
            f"sys.argv = ['bfm-serve', *{list(args)!r}]\nmain()\n")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)


# ``installed``: what must be there for ``blocked`` to be the first thing found missing (the CLI checks fastapi, then
# uvicorn, then ray); the torch-free CI stage installs no serve extra, and a case that cannot happen there is skipped.
@pytest.mark.parametrize("blocked, args, feature, extra, installed", [
    ("uvicorn", (), "bfm-serve", "serve", ("fastapi",)),
    ("fastapi", (), "bfm-serve", "serve", ()),
    ("ray.serve", ("--ray",), "bfm-serve --ray", "ray", ("fastapi", "uvicorn")),
])
def test_a_missing_extra_is_one_line_with_its_install_hint(blocked: str, args: tuple[str, ...], feature: str,
                                                           extra: str, installed: tuple[str, ...]) -> None:
    for name in installed:
        pytest.importorskip(name)
    done = _serve_without(blocked, *args)
    assert done.returncode == 2, done.stderr
    assert f"{feature} needs {blocked.split('.')[0]} (" in done.stderr, done.stderr
    assert install_hint(extra) in done.stderr
    assert "Traceback" not in done.stderr and done.stderr.strip().count("\n") == 0, done.stderr

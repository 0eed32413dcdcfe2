"""The service part of the GPU check: ``bfm-serve`` on the torch backend, batched against batch-size-1.

It is ``bfm-bench --serve`` (``bfm_deploy.bench.serve_load``) run on the GPU: two real servers on loopback ports,
the offline ``Verifier.verify_many`` beside them in the same run. The GPU machine has no FastAPI or uvicorn and
cannot install from a registry, so ``--pack-data`` also downloads the serve extra's wheels that it lacks into
``DIR/wheels``; here they are unpacked into a folder put on ``sys.path`` and on the servers' ``PYTHONPATH``
(nothing is installed into the machine's environment). Without them the part reports why it did not run.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

from bfm_deploy.errors import BfmError

from data import SERVICE_PAIRS

# What bfm-serve imports beyond what the GPU machine's image has (its package list is in the device notes):
# the wheels --pack-data keeps. anyio, h11 and typing-extensions are there too, but pydantic-core and starlette
# need recent ones (typing_extensions.Sentinel, for one), so those travel as well; click, httpx and idna do not.
SERVE_MODULES = ("fastapi", "uvicorn", "httpx", "python_multipart")
PACKED_WHEELS = ("fastapi", "starlette", "uvicorn", "pydantic", "pydantic_core", "annotated_types",
                 "annotated_doc", "typing_inspection", "python_multipart", "opentelemetry_api", "typing_extensions",
                 "anyio", "h11")
# The GPU machine's Python (see the device notes: Python 3.12 on x86-64).
TARGET_PYTHON = ("3.12", "manylinux2014_x86_64")


def missing_modules() -> list[str]:
    return [m for m in SERVE_MODULES if importlib.util.find_spec(m) is None]


def serve_requirements() -> list[str]:
    """The serve extra's requirements as the installed bfm declares them (setup.cfg: one place for the pins)."""
    from importlib.metadata import PackageNotFoundError, requires

    try:
        declared = requires("bfm") or []
    except PackageNotFoundError:
        raise BfmError("bfm is not installed here: --pack-data reads the serve extra's pins from its metadata") from None
    return [r.split(";")[0].strip() for r in declared if r.replace(" ", "").endswith('extra=="serve"')]


def pack_wheels(target: Path) -> int:
    """Download the serve extra for the GPU machine's Python into ``target`` and keep only the wheels it
    lacks; the number kept. Needs a package index (run it where ``pip install`` works)."""
    target.mkdir(parents=True, exist_ok=True)
    version, platform = TARGET_PYTHON
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--dest", str(target), "--only-binary=:all:",
               "--python-version", version, "--platform", platform, "--implementation", "cp",
               *serve_requirements()]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise BfmError(f"pip download of the serve extra's wheels failed: {last}")
    kept = 0
    for wheel in sorted(target.glob("*.whl")):
        if wheel.name.split("-")[0].lower() in PACKED_WHEELS:
            kept += 1
        else:
            wheel.unlink()
    return kept


def use_wheels(wheels: Path, site: Path) -> int:
    """Unpack the carried wheels into ``site`` and put it on this process's and its children's import path,
    when the serve modules are missing here; the number of wheels unpacked."""
    if not missing_modules() or not wheels.is_dir():
        return 0
    found = sorted(wheels.glob("*.whl"))
    for wheel in found:
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(site)
    # Here (the client side) after the machine's own packages, which torch has already loaded; the servers get
    # the unpacked set first, so that pydantic-core finds the typing-extensions it was resolved with.
    sys.path.append(str(site))
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH")) if p)
    importlib.invalidate_caches()
    return len(found)


def run_service(bundle: Path, data_dir: Path, device: str, site: Path) -> dict[str, Any]:
    """The load benchmark on the torch backend (it takes the GPU where there is one): the report of
    ``bfm-bench --serve``, or ``{"measured": False, "why": ...}`` where the serve extra is missing."""
    unpacked = use_wheels(data_dir / "wheels", site)
    missing = missing_modules()
    if missing:
        return {"measured": False, "why": f"the serve extra is not importable here ({', '.join(missing)} missing; "
                                          "--pack-data carries its wheels)"}
    from bfm_deploy.bench.serve_load import ServeLoadOptions, run_serve_load

    if device == "cuda":
        options = ServeLoadOptions(bundle, data_dir, backend="torch", levels=(1, 16, 64), requests=512,
                                   seconds=30.0, pairs=SERVICE_PAIRS, offline_runs=3)
    else:  # the dry run: every step at the smallest size
        options = ServeLoadOptions(bundle, data_dir, backend="torch", levels=(1, 2), requests=4, seconds=30.0,
                                   pairs=4, offline_runs=1)
    report = run_serve_load(options)
    return {"measured": True, "wheels_unpacked": unpacked, **report}

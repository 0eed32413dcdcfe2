"""bfm as a user installs it: a wheel (not editable) in a new environment, used from a folder outside the repo."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SOURCES = ["bfm_deploy", "bfm_models", "bfm_train", "packaging", "engines/demo", "setup.cfg", "pyproject.toml", "README.md", "LICENSE"]


def _copy_sources(dest: Path) -> Path:
    """The files a build reads, copied so that the build's own scratch folders never land in the checkout."""
    for rel in SOURCES:
        src, dst = REPO / rel, dest / rel
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build"))
        else:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, dst)
    return dest


def _pip(python: Path | str, command: str, *args: str) -> None:
    # No index and no build isolation: the build backend (setuptools, from the dev extra) and the dependencies are
    # those of the environment the tests run in, so the test passes or fails the same on any machine.
    result = subprocess.run([str(python), "-m", "pip", command, "-q", "--no-deps", "--no-build-isolation", "--no-index",
                             *args], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-1500:] + result.stderr[-1500:]


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """bfm's wheel and the demo bundle's, both built by this environment's Python."""
    src = _copy_sources(tmp_path_factory.mktemp("src"))
    out = tmp_path_factory.mktemp("wheel")
    _pip(sys.executable, "wheel", str(src), str(src / "packaging" / "bfm-demo-bundle"), "-w", str(out))
    (bfm,) = out.glob("bfm-*.whl")
    (bundle,) = out.glob("bfm_demo_bundle-*.whl")
    return bfm, bundle


@pytest.fixture(scope="module")
def wheel(wheels: tuple[Path, Path]) -> Path:
    return wheels[0]


def test_wheel_carries_licences_and_type_markers(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    licences = [n for n in names if ".dist-info/licenses/" in n]
    assert any(n.endswith("/licenses/LICENSE") for n in licences)
    assert any(n.endswith("PRETRAINED_LICENCE.md") for n in licences)
    assert "bfm_models/PRETRAINED_LICENCE.md" in names  # beside the code that loads those weights
    assert "bfm_deploy/py.typed" in names and "bfm_train/py.typed" in names
    assert "bfm_deploy/assets/yunet/LICENSE" in names
    assert not any(n.startswith(("tests/", "engines/", "work_dirs/")) for n in names)
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "License: Apache-2.0" in metadata or "License-Expression: Apache-2.0" in metadata


def test_installed_bfm_verify_outside_the_repo_matches_the_checkout(wheels: tuple[Path, Path], tmp_path: Path,
                                                                   data_dir: Path) -> None:
    venv = tmp_path / "venv"
    # The new environment sees this one's packages (numpy, onnxruntime, pip, ...) but gets its own bfm. Not by
    # --system-site-packages: made from inside a virtual environment, that shows the base interpreter's packages,
    # not this environment's. A path line in a .pth file is only appended to sys.path (the .pth files there, such
    # as an editable bfm's finder, are not run), after the new environment's own site-packages.
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    own = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         check=True, capture_output=True, text=True).stdout.strip()
    outer = dict.fromkeys(sysconfig.get_paths()[key] for key in ("purelib", "platlib"))
    (Path(own) / "outer_environment.pth").write_text("".join(f"{path}\n" for path in outer))
    _pip(python, "install", *map(str, wheels))  # wheels only: nothing is built with the new environment's tools
    env = {k: v for k, v in os.environ.items() if k not in ("BFM_BUNDLE", "BFM_DATA", "PYTHONPATH")}
    where = subprocess.run([str(python), "-c", "import bfm_deploy.bundle as b; print(b.__file__); print(b.default_bundle())"],
                           cwd=tmp_path, env=env, check=True, capture_output=True, text=True).stdout.split()
    assert where[0].startswith(str(venv)) and where[1].startswith(str(venv))  # the installed copy, its own bundle
    folder = data_dir / "lfw" / "raw-fold1" / "Abel_Pacheco"
    photos = [str(folder / "Abel_Pacheco_0001.jpg"), str(folder / "Abel_Pacheco_0002.jpg")]
    installed = subprocess.run([str(venv / "bin" / "bfm-verify"), *photos, "--json", "--backend", "ort"], cwd=tmp_path, env=env,
                               capture_output=True, text=True)
    assert installed.returncode == 0, installed.stderr
    checkout = subprocess.run([sys.executable, "-m", "bfm_deploy.verify_cli", *photos, "--json", "--backend", "ort"], cwd=REPO, env=env,
                              capture_output=True, text=True)
    assert checkout.returncode == 0, checkout.stderr
    assert json.loads(installed.stdout) == json.loads(checkout.stdout)
    assert json.loads(installed.stdout)["same"] is True

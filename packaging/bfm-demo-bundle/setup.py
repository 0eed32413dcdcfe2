"""The demo bundle (``engines/demo``) as a package of its own, for bfm installed without the repository:

    pip install ./packaging/bfm-demo-bundle        # from the repository root, after pip install .

``bfm_deploy.bundle.default_bundle`` finds it, so every tool runs with no ``--bundle`` from any folder. The
bundle's files are copied from ``engines/demo`` when the package is built (listed by its manifest, so a
stray file never ships), and its weights keep their licence: derived from insightface's w600k_mbf, for
non-commercial research only (the notice ships as the package's licence file).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
SOURCE = HERE.parents[1] / "engines" / "demo"
LICENCE = HERE.parents[1] / "bfm_models" / "PRETRAINED_LICENCE.md"


def bundle_files() -> list[Path]:
    manifest = json.loads((SOURCE / "manifest.json").read_text())
    files = [SOURCE / "manifest.json"]
    files += [SOURCE / entry["file"] for entry in manifest["models"].values()]
    if manifest.get("detector"):
        files.append(SOURCE / manifest["detector"]["file"])
    return files


class BuildWithBundle(build_py):
    """The ordinary build, plus the bundle's files under ``bfm_demo_bundle/bundle``."""

    def run(self) -> None:
        super().run()
        target = Path(self.build_lib) / "bfm_demo_bundle" / "bundle"
        target.mkdir(parents=True, exist_ok=True)
        for path in bundle_files():
            shutil.copyfile(path, target / path.name)
        shutil.copyfile(LICENCE, Path(self.build_lib) / "bfm_demo_bundle" / "PRETRAINED_LICENCE.md")


setup(
    name="bfm-demo-bundle",
    version="0.1.0",
    description="The bfm demo model bundle (MobileFaceNet extractors, mask classifier, SCRFD detector)",
    license="LicenseRef-insightface-non-commercial-research",
    packages=["bfm_demo_bundle"],
    python_requires=">=3.10",
    cmdclass={"build_py": BuildWithBundle},
    zip_safe=False,
)

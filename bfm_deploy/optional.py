"""Optional dependencies, imported in one way with one message: ``require("fastapi", "serve")``.

An extra is a name in setup.cfg's ``[options.extras_require]``; a module missing from it fails with the line
that installs it, never with an ImportError traceback.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import BfmError

# What each extra is for, in the message's words.
EXTRAS = {
    "train": "training and export",
    "serve": "the HTTP service",
    "ray": "Ray Serve replicas",
    "gallery": "large and PostgreSQL galleries",
    "gpu": "TensorRT engines and CUDA",
    "openvino": "the OpenVINO CPU backend",
    "explain": "explanations (bfm-explain)",
}


def install_hint(extra: str) -> str:
    """The command that installs ``extra`` (with the editable form for a checkout)."""
    if extra not in EXTRAS:
        raise ValueError(f"unknown extra {extra!r}")  # a programming error
    return f"pip install 'bfm[{extra}]' (from a checkout: pip install -e '.[{extra}]')"


def require(module: str, extra: str, feature: str | None = None) -> ModuleType:
    """Import ``module`` or fail with one line naming ``feature`` and the extra that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        what = feature or EXTRAS[extra]
        raise BfmError(f"{what} needs {module.split('.')[0]} ({exc}): {install_hint(extra)}") from None

"""Is TensorRT usable here? One place that turns every way of not having it into a one-line BfmError."""

from __future__ import annotations

import importlib

from ..errors import BfmError
from ..optional import install_hint


def require_tensorrt() -> str:
    """Import tensorrt and return its version, or raise BfmError saying why it is not usable."""
    try:
        module = importlib.import_module("tensorrt")
    except (ImportError, OSError) as exc:
        # The bindings import but fail to load libnvinfer when the native libraries are missing (OSError or
        # ImportError), and the module is absent entirely without the 'gpu' extra.
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise BfmError(
            f"TensorRT is not available ({reason}); install the gpu extra ({install_hint('gpu')}) "
            "on a machine with an NVIDIA GPU"
        ) from None
    version = getattr(module, "__version__", None)
    if not isinstance(version, str):
        raise BfmError("the tensorrt module has no __version__; is it the NVIDIA TensorRT package?")
    major = version.split(".", 1)[0]
    if not major.isdigit() or int(major) < 10:
        raise BfmError(f"TensorRT {version} is too old: bfm needs TensorRT >= 10 (named-tensor API)")
    return version

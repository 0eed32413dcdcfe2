"""Inference backends by name: ``create_backend("ort" | "openvino" | "trt" | "torch" | "auto", bundle, ...)``.

Each backend module registers itself in ``BACKENDS`` (``base.py``) with what it needs; the modules import
without their heavy dependencies (TensorRT, torch and CUDA are imported when a backend is created), so a
deployment without them still works: a backend whose dependencies or hardware are missing raises ``BfmError``
(``auto`` skips it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import BfmError
from ..optional import install_hint

# Imported for their registrations, in the order of the --backend choices: auto, trt, ort, openvino, torch.
from . import auto, trt, ort, openvino_backend, torch_backend  # noqa: F401
from .auto import nvidia_gpu_present
from .base import BACKENDS, Backend, BackendEntry

if TYPE_CHECKING:
    from ..bundle import Bundle

BACKEND_NAMES: tuple[str, ...] = BACKENDS.names()  # for click.Choice and the Verifier's check


def create_backend(name: str, bundle: Bundle, **kwargs: Any) -> Backend:
    """Create backend ``name`` (``auto``, ``trt``, ``ort``, ``torch``) for ``bundle``.

    ``kwargs`` go to the backend's constructor (e.g. ``device="cpu"`` for ort and torch); unknown names fail
    with one line listing the choices.
    """
    entry = BACKENDS.get(name)
    try:
        return entry.create(bundle, **kwargs)
    except ImportError as exc:
        hint = f"; it needs {entry.needs}" + (f": {install_hint(entry.extra)}" if entry.extra else "")
        raise BfmError(f"backend {name!r} is not available: {exc}{hint}") from None


__all__ = ["BACKENDS", "BACKEND_NAMES", "Backend", "BackendEntry", "create_backend", "nvidia_gpu_present"]

"""Inference backends by name: ``create_backend("ort" | "trt" | "torch" | "auto", bundle, ...)``.

Every backend module is imported only when asked for, so a deployment without TensorRT or torch still
works; a backend whose dependencies or hardware are missing raises ``BfmError`` (``auto`` skips it).
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import BfmError
from .base import NETWORKS, Backend, Network

if TYPE_CHECKING:
    from ..bundle import Bundle

BACKEND_NAMES: tuple[str, ...] = ("auto", "trt", "ort", "torch")


def _load_class(module: str, name: str) -> type[Backend]:
    """The ``Backend`` subclass called ``name`` in ``bfm_deploy.backends.<module>``; BfmError if unavailable."""
    try:
        mod = importlib.import_module(f"{__name__}.{module}")
    except ImportError as exc:
        raise BfmError(f"backend {name!r} is not available: {exc}") from None
    for value in vars(mod).values():
        if isinstance(value, type) and issubclass(value, Backend) and getattr(value, "name", None) == name:
            return value
    raise BfmError(f"backend {name!r} is not available: {mod.__name__} defines no Backend named {name!r}")


def _ort(bundle: Bundle, **kwargs: Any) -> Backend:
    return _load_class("ort", "ort")(bundle, **kwargs)  # type: ignore[call-arg]


def _trt(bundle: Bundle, **kwargs: Any) -> Backend:
    return _load_class("trt", "trt")(bundle, **kwargs)  # type: ignore[call-arg]


def _torch(bundle: Bundle, **kwargs: Any) -> Backend:
    return _load_class("torch_backend", "torch")(bundle, **kwargs)  # type: ignore[call-arg]


_FACTORIES: dict[str, Callable[..., Backend]] = {"ort": _ort, "trt": _trt, "torch": _torch}


def nvidia_gpu_present() -> bool:
    """Cheap check before trying GPU backends (importing TensorRT or torch just to find no GPU costs seconds).

    On Linux the NVIDIA driver lists its GPUs under /proc/driver/nvidia/gpus; elsewhere we cannot tell
    cheaply and let the backends find out.
    """
    if not sys.platform.startswith("linux"):
        return True
    gpus = Path("/proc/driver/nvidia/gpus")
    return gpus.is_dir() and any(gpus.iterdir())


def _auto(bundle: Bundle) -> Backend:
    """The fastest backend that works here: trt (GPU), ort on CUDA, torch on CUDA, then ort on CPU.

    Each candidate is simply tried: TensorRT needs its engines and a GPU, ort decides CUDA from the
    providers its sessions really got, torch needs a GPU to be worth choosing over ort on CPU.
    """
    from .ort import cuda_provider_available
    from .torch_backend import torch_cuda_available

    candidates: list[tuple[str, dict[str, Any]]] = []
    if nvidia_gpu_present():
        candidates.append(("trt", {}))
        if cuda_provider_available():
            candidates.append(("ort", {"device": "cuda"}))
        if torch_cuda_available():
            candidates.append(("torch", {"device": "cuda"}))
    for name, extra in candidates:
        try:
            return _FACTORIES[name](bundle, **extra)
        except (BfmError, ImportError):
            continue  # not available here; the next candidate is slower but works
    return _ort(bundle, device="cpu")


def create_backend(name: str, bundle: Bundle, **kwargs: Any) -> Backend:
    """Create backend ``name`` (``auto``, ``trt``, ``ort``, ``torch``) for ``bundle``.

    ``kwargs`` go to the backend's constructor (e.g. ``device="cpu"`` for ort and torch).
    """
    if name == "auto":
        if kwargs:
            raise BfmError(f"backend 'auto' takes no options (got {', '.join(kwargs)}); name a backend instead")
        return _auto(bundle)
    if name not in _FACTORIES:
        raise BfmError(f"unknown backend {name!r}; choose one of {', '.join(BACKEND_NAMES)}")
    try:
        return _FACTORIES[name](bundle, **kwargs)
    except ImportError as exc:
        raise BfmError(f"backend {name!r} is not available: {exc}") from None


__all__ = ["BACKEND_NAMES", "NETWORKS", "Backend", "Network", "create_backend"]

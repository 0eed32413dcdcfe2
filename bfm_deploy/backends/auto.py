"""``--backend auto``: the fastest registered backend that works here, else ort on the CPU.

On a machine with an NVIDIA GPU each backend registered with an ``AutoTry`` is tried in registration order
(trt, ort on CUDA, torch on CUDA): TensorRT needs its engines and a GPU, ort decides CUDA from the providers its
sessions really got, torch needs a GPU to be worth choosing over ort on the CPU. Then, on any machine, openvino where it is
installed and the CPU has AVX-512 (about twice ort's speed there; its parity gate must pass). The first that
opens wins.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import BfmError
from ..registry import Registry
from .base import BACKENDS, Backend, BackendEntry

if TYPE_CHECKING:
    from ..bundle import Bundle

CPU_FALLBACK = "ort"  # what works everywhere: the base install's backend, on the CPU


def nvidia_gpu_present() -> bool:
    """Cheap check before trying GPU backends (importing TensorRT or torch just to find no GPU costs seconds).

    On Linux the NVIDIA driver lists its GPUs under /proc/driver/nvidia/gpus; elsewhere we cannot tell
    cheaply and let the backends find out.
    """
    if not sys.platform.startswith("linux"):
        return True
    gpus = Path("/proc/driver/nvidia/gpus")
    return gpus.is_dir() and any(gpus.iterdir())


def choose(bundle: Bundle, backends: Registry[BackendEntry], gpu_present: bool) -> Backend:
    """The auto rule over ``backends``: on a GPU machine each entry with a GPU ``AutoTry`` in order, then each
    with a CPU one (openvino, on an AVX-512 CPU), each's cheap check asked only when the ones before it
    failed; then ``CPU_FALLBACK`` on the CPU."""
    for where in ("gpu", "cpu") if gpu_present else ("cpu",):
        for name in backends:
            tried = backends.get(name).auto
            if tried is None or tried.on != where or (tried.available is not None and not tried.available()):
                continue
            try:
                return backends.get(name).create(bundle, **tried.options)
            except (BfmError, ImportError):
                continue  # not available here; the next candidate is slower but works
    return backends.get(CPU_FALLBACK).create(bundle, device="cpu")


def create_auto(bundle: Bundle, **options: Any) -> Backend:
    if options:
        raise BfmError(f"backend 'auto' takes no options (got {', '.join(options)}); name a backend instead")
    return choose(bundle, BACKENDS, nvidia_gpu_present())


BACKENDS.register("auto", BackendEntry(create_auto, needs="nothing: it picks the fastest backend that works here"))

"""Describe the machine a benchmark ran on, and measure its matrix-multiply throughput as the yardstick.

Results from a shared 2-core box move with the load, so every report records the load average at start and
end, and the efficiency figure divides by a matmul rate measured in the same run rather than a data-sheet peak.
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..cpu_features import capabilities
from .stats import median


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The ``model name`` of the first CPU in /proc/cpuinfo; falls back to ``platform.processor()``."""
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages (what ``uptime`` prints), or None where the OS has none."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def describe_machine() -> dict[str, Any]:
    import onnxruntime

    return {
        "cpu_model": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "onnxruntime": onnxruntime.__version__,
        "onnxruntime_providers": onnxruntime.get_available_providers(),
        "cpu_features": capabilities(),  # what decides a CPU backend's kernels (openvino: BF16 or FP32)
        "load_average_start": load_average(),
        # thread pools size themselves from these when set (numpy's BLAS, onnxruntime's OpenMP builds)
        "thread_env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
                       if k in os.environ},
    }


@dataclass(frozen=True)
class MatmulRate:
    """Median GFLOP/s of an ``n x n`` float32 matmul (2 n^3 FLOPs per product) with numpy's BLAS."""

    n: int
    repeats: int
    gflops: float
    gflops_runs: list[float]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def measure_matmul(n: int = 1024, repeats: int = 7) -> MatmulRate:
    """Time ``repeats`` products after one warm-up; the median rejects a run disturbed by other work."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    out = np.empty((n, n), dtype=np.float32)
    np.matmul(a, b, out=out)  # warm-up: BLAS thread pool start, page faults
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        np.matmul(a, b, out=out)
        rates.append(2.0 * n**3 / (time.perf_counter() - start) / 1e9)
    return MatmulRate(n=n, repeats=repeats, gflops=median(rates), gflops_runs=[round(r, 2) for r in rates])

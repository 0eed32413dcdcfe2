"""Batch-size sweep of one network on one backend: latency percentiles and faces/s after warm-up."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from ..contract import INPUT_SHAPE
from ..backends.base import Backend, Network
from ..errors import BfmError
from .stats import LatencySummary, median_of_runs, summarise_run



@dataclass(frozen=True)
class TimingConfig:
    """How hard to measure. Every reported figure is the median over ``runs`` runs of timed calls.

    A run lasts about ``run_seconds`` (at least ``min_calls`` and at most ``max_calls`` calls), so small
    batches get many calls and large ones a few. A batch whose single call takes longer than
    ``max_call_seconds`` ends the sweep: larger batches would only be slower per call.
    """

    runs: int = 5
    run_seconds: float = 1.0
    min_calls: int = 3
    max_calls: int = 200
    warmup_calls: int = 2
    max_call_seconds: float = 20.0

    def __post_init__(self) -> None:
        if self.runs < 1 or self.min_calls < 1 or self.max_calls < self.min_calls or self.warmup_calls < 1:
            raise BfmError(f"invalid timing configuration: {self}")


QUICK = TimingConfig(runs=3, run_seconds=0.15, min_calls=2, max_calls=30, warmup_calls=1, max_call_seconds=3.0)


@dataclass(frozen=True)
class SweepPoint:
    network: str
    backend: str
    batch: int
    calls_per_run: int
    summary: LatencySummary

    def as_dict(self) -> dict[str, Any]:
        return {
            "network": self.network,
            "backend": self.backend,
            "batch": self.batch,
            "calls_per_run": self.calls_per_run,
            **self.summary.as_dict(),
        }


def random_batch(batch: int, seed: int = 0) -> np.ndarray:
    """A normalised NCHW batch in [-1, 1]; the networks' cost does not depend on the pixel values."""
    rng = np.random.default_rng(seed)
    return rng.uniform(-1.0, 1.0, size=(batch, *INPUT_SHAPE)).astype(np.float32)


def time_calls(call: Callable[[], object], faces_per_call: int, config: TimingConfig) -> tuple[LatencySummary, int]:
    """Warm up, size the runs from the warm-up time, then take the median of ``config.runs`` runs."""
    warm = []
    for _ in range(config.warmup_calls):
        start = time.perf_counter()
        call()
        warm.append(time.perf_counter() - start)
    per_call = max(min(warm), 1e-6)
    if per_call > config.max_call_seconds:
        raise _TooSlow(per_call)
    calls = int(min(config.max_calls, max(config.min_calls, math.ceil(config.run_seconds / per_call))))
    runs = []
    for _ in range(config.runs):
        seconds = []
        for _ in range(calls):
            start = time.perf_counter()
            call()
            seconds.append(time.perf_counter() - start)
        runs.append(summarise_run(seconds, faces_per_call))
    return median_of_runs(runs), calls


class _TooSlow(Exception):
    def __init__(self, seconds: float) -> None:
        super().__init__(f"one call took {seconds:.1f} s")
        self.seconds = seconds


def sweep_network(
    backend: Backend,
    network: Network,
    batches: Sequence[int],
    config: TimingConfig,
    on_point: Callable[[], None] = lambda: None,
) -> tuple[list[SweepPoint], str | None]:
    """Time ``network`` at each batch size, smallest first; stop at the first batch that does not fit.

    "Does not fit" is an allocation failure (MemoryError, or the backend's own out-of-memory error) or a
    call slower than ``config.max_call_seconds``; the reason is returned so the report can say so.
    """
    points: list[SweepPoint] = []
    for batch in sorted(batches):
        try:
            x = random_batch(batch)
            summary, calls = time_calls(partial(backend.infer, network, x), batch, config)
        except _TooSlow as slow:
            return points, f"stopped before batch {batch}: {slow} (limit {config.max_call_seconds} s)"
        except MemoryError:
            return points, f"stopped at batch {batch}: out of memory"
        except BfmError:
            raise
        except Exception as exc:  # backends raise their own runtime errors on allocation failure
            if "memory" in str(exc).lower() or "alloc" in str(exc).lower():
                return points, f"stopped at batch {batch}: {str(exc).splitlines()[0][:200]}"
            raise
        points.append(SweepPoint(network, backend.name, batch, calls, summary))
        on_point()
    return points, None

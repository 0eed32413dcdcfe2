"""Summary statistics for timings: percentiles of one run, medians across repeated runs."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from ..errors import BfmError


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) with linear interpolation between order statistics.

    Same definition as ``numpy.percentile``'s default, written out so the runtime side needs no numpy
    call for it and the tests can check it by hand.
    """
    if not values:
        raise BfmError("percentile of an empty sample")
    if not 0.0 <= q <= 100.0:
        raise BfmError(f"percentile must be in [0, 100], got {q}")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100.0
    low = math.floor(position)
    high = math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def median(values: Sequence[float]) -> float:
    return percentile(values, 50.0)


@dataclass(frozen=True)
class LatencySummary:
    """One timed configuration: latency percentiles in milliseconds and throughput in faces per second."""

    p50_ms: float
    p90_ms: float
    p99_ms: float
    faces_per_s: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def summarise_run(seconds: Sequence[float], faces_per_call: int) -> LatencySummary:
    """Percentiles of one run of timed calls; throughput from the total time of the run (not the median)."""
    if faces_per_call <= 0:
        raise BfmError(f"faces per call must be positive, got {faces_per_call}")
    ms = [s * 1000.0 for s in seconds]
    total = sum(seconds)
    return LatencySummary(
        p50_ms=percentile(ms, 50.0),
        p90_ms=percentile(ms, 90.0),
        p99_ms=percentile(ms, 99.0),
        faces_per_s=faces_per_call * len(seconds) / total if total > 0 else math.inf,
    )


def median_of_runs(runs: Sequence[LatencySummary]) -> LatencySummary:
    """Each figure is the median of that figure over repeated runs, so one disturbed run cannot move it."""
    if not runs:
        raise BfmError("no runs to summarise")
    return LatencySummary(
        p50_ms=median([r.p50_ms for r in runs]),
        p90_ms=median([r.p90_ms for r in runs]),
        p99_ms=median([r.p99_ms for r in runs]),
        faces_per_s=median([r.faces_per_s for r in runs]),
    )

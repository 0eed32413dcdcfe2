"""Prometheus text exposition for the service, without a client library: counters, gauges, histograms."""

from __future__ import annotations

import bisect
import threading
from collections import defaultdict

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def escape(value: str) -> str:
    """A label value as the exposition format needs it: backslash, double quote and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(labels: tuple[tuple[str, str], ...]) -> str:
    return "{" + ",".join(f'{k}="{escape(v)}"' for k, v in labels) + "}" if labels else ""


class Histogram:
    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.total += value


class Metrics:
    """Thread-safe: the event loop and the batch worker both record."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[tuple[tuple[str, str], ...], int] = defaultdict(int)
        self.errors: dict[str, int] = defaultdict(int)
        self.latency: dict[str, Histogram] = {}
        self.batch_faces = Histogram(BATCH_BUCKETS)
        self.queue_depth = 0

    def request(self, endpoint: str, status: int, seconds: float) -> None:
        with self._lock:
            self.requests[(("endpoint", endpoint), ("status", str(status)))] += 1
            self.latency.setdefault(endpoint, Histogram(LATENCY_BUCKETS_S)).observe(seconds)

    def error(self, kind: str) -> None:
        with self._lock:
            self.errors[kind] += 1

    def batch(self, faces: int) -> None:
        with self._lock:
            self.batch_faces.observe(faces)

    def render(self) -> str:
        with self._lock:
            lines = ["# TYPE bfm_requests_total counter"]
            lines += [f"bfm_requests_total{_labels(k)} {v}" for k, v in sorted(self.requests.items())]
            lines.append("# TYPE bfm_errors_total counter")
            lines += [f"bfm_errors_total{_labels((('kind', k),))} {v}" for k, v in sorted(self.errors.items())]
            lines.append("# TYPE bfm_queue_depth gauge")
            lines.append(f"bfm_queue_depth {self.queue_depth}")
            lines.append("# TYPE bfm_request_seconds histogram")
            for endpoint, hist in sorted(self.latency.items()):
                lines += _histogram("bfm_request_seconds", hist, (("endpoint", endpoint),))
            lines.append("# TYPE bfm_batch_faces histogram")
            lines += _histogram("bfm_batch_faces", self.batch_faces, ())
        return "\n".join(lines) + "\n"


def _histogram(name: str, hist: Histogram, labels: tuple[tuple[str, str], ...]) -> list[str]:
    lines, running = [], 0
    for bound, count in zip((*hist.buckets, float("inf")), hist.counts):
        running += count
        le = "+Inf" if bound == float("inf") else f"{bound:g}"
        lines.append(f"{name}_bucket{_labels((*labels, ('le', le)))} {running}")
    lines.append(f"{name}_sum{_labels(labels)} {hist.total:g}")
    lines.append(f"{name}_count{_labels(labels)} {running}")
    return lines

"""``bfm-bench --serve``: the service under load, beside the offline ``Verifier`` on the same pairs.

Two real servers are started on free loopback ports: the batched one (``--max-batch 64``, 5 ms wait) and a
batch-size-1 one (one pair a batch, no wait). For each concurrency level, that many client threads send
``/v1/verify`` requests (base64 JSON, aligned LFW crops: the networks, not detection, are measured) until the
level's request count or time budget is spent. Throughput (pairs/s) is the steady rate: from the moment as many
responses have come back as there are clients (every client has been through one round trip) to the moment the
last request is handed out (from then on fewer clients are busy than the level says). Ramp-up and drain are
left out because at 64 clients and 192 requests they are most of the run; each level sends at least 8 requests
per client so that the window spans many batches, and the whole run's rate is kept beside it (``overall_pairs_per_s``).
p50/p99 latency over all requests, per level and server;
``Verifier.verify_many`` on the same pairs, in the same run, is the offline reference. The report names the backend
each side really ran (``--backend openvino`` is ``openvino-f32`` or ``openvino-bf16``, as the server's ``/readyz``
says). Traffic goes to 127.0.0.1 only and every loop is bounded in count and time.
"""

from __future__ import annotations

import statistics
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..datasets import read_lfw_pairs
from ..errors import BfmError
from .machine import describe_machine

LEVELS = (1, 4, 16, 64)
SERVERS = {"batched": ("--max-batch", "64", "--max-wait-ms", "5"), "batch-1": ("--max-batch", "2", "--max-wait-ms", "0")}


@dataclass(frozen=True)
class ServeLoadOptions:
    bundle: Path
    data_dir: Path
    backend: str = "ort"
    levels: tuple[int, ...] = LEVELS
    requests: int = 192  # per level and server
    seconds: float = 60.0  # per level and server, at most
    pairs: int = 64  # distinct LFW pairs the requests cycle through
    offline_runs: int = 3


def _load(url: str, pairs: list[tuple[bytes, bytes]], clients: int, requests: int, seconds: float) -> dict[str, Any]:
    from ..serve.client import Client

    latencies: list[float] = []
    finished: list[float] = []  # perf_counter at each successful response
    errors: list[str] = []
    lock = threading.Lock()
    counter = iter(range(requests))
    stop_at = time.monotonic() + seconds
    drain_at = float("inf")  # when the first client found no request left: from then on fewer are busy

    def worker() -> None:
        nonlocal drain_at
        with Client(url, timeout_s=seconds + 30) as client:
            while time.monotonic() < stop_at:
                with lock:
                    i = next(counter, None)
                    if i is None:
                        drain_at = min(drain_at, time.perf_counter())
                if i is None:
                    return
                a, b = pairs[i % len(pairs)]
                started = time.perf_counter()
                try:
                    client.verify(a, b, aligned=True)
                except Exception as exc:  # noqa: BLE001 - counted, reported
                    with lock:
                        errors.append(str(exc)[:120])
                    continue
                with lock:
                    finished.append(time.perf_counter())
                    latencies.append(finished[-1] - started)

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    begun = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - begun
    steady = _steady_rate(sorted(finished), clients, min(drain_at, begun + wall))
    ms = np.array(latencies) * 1000 if latencies else np.array([np.nan])
    return {"clients": clients, "completed": len(latencies), "errors": len(errors), "first_error": errors[0] if errors else None,
            "wall_s": round(wall, 3), "pairs_per_s": round(steady if steady is not None else len(latencies) / wall, 2),
            "steady": steady is not None, "overall_pairs_per_s": round(len(latencies) / wall, 2),
            "p50_ms": round(float(np.percentile(ms, 50)), 2), "p99_ms": round(float(np.percentile(ms, 99)), 2)}


def _steady_rate(finished: list[float], clients: int, until: float) -> float | None:
    """Responses per second after the ``clients``-th response and up to ``until`` (the last hand-out, or the
    end of the time budget); None when that window holds no response."""
    if len(finished) <= clients:
        return None
    start = finished[clients - 1]
    count = sum(start < t <= until for t in finished)
    return count / (until - start) if count and until > start else None


def run_serve_load(options: ServeLoadOptions) -> dict[str, Any]:
    from ..serve.process import ServerProcess
    from ..verifier import Verifier

    lfw = read_lfw_pairs(options.data_dir / "lfw" / "pairs.txt", options.data_dir / "lfw" / "aligned112")
    chosen = lfw[: options.pairs]
    if not chosen:
        raise BfmError(f"no LFW pairs under {options.data_dir / 'lfw'} (pass --data-dir)")
    pairs = [(p.left.read_bytes(), p.right.read_bytes()) for p in chosen]
    # Offline reference: the same number of verifications the service gets at a level, through verify_many.
    offline_items = [(chosen[i % len(chosen)].left, chosen[i % len(chosen)].right) for i in range(options.requests)]
    with Verifier(options.bundle, backend=options.backend) as verifier:
        offline_backend = verifier.backend.name
        list(verifier.verify_many(offline_items[:8], aligned=True))  # warm-up
        rates = []
        for _ in range(options.offline_runs):
            started = time.perf_counter()
            list(verifier.verify_many(offline_items, aligned=True))
            rates.append(len(offline_items) / (time.perf_counter() - started))
    offline = round(statistics.median(rates), 2)
    servers: dict[str, list[dict[str, Any]]] = {}
    server_backends: dict[str, str] = {}
    for name, extra in SERVERS.items():
        server = ServerProcess(options.bundle, options.backend, ("--queue-size", "1024", "--quiet", *extra))
        try:
            with server.client() as client:
                server_backends[name] = str(client.ready()["backend"])
            _load(server.url, pairs, 1, 8, options.seconds)  # warm-up
            servers[name] = [_load(server.url, pairs, level, max(options.requests, 8 * level), options.seconds)
                             for level in options.levels]
        finally:
            server.stop()
    batched = {row["clients"]: row for row in servers["batched"]}
    single = {row["clients"]: row for row in servers["batch-1"]}
    ratios = {
        f"batched_vs_offline_at_{c}": round(batched[c]["pairs_per_s"] / offline, 3) for c in options.levels
    } | {f"batched_vs_batch1_at_{c}": round(batched[c]["pairs_per_s"] / max(single[c]["pairs_per_s"], 1e-9), 3)
         for c in options.levels}
    return {"format": "bfm-bench-serve/1", "machine": describe_machine(), "bundle": str(options.bundle),
            "backend": options.backend, "offline_backend": offline_backend, "server_backends": server_backends,
            "requests_per_level": options.requests, "distinct_pairs": len(pairs),
            "offline_verify_many_pairs_per_s": offline, "offline_runs": rates, "servers": servers, "ratios": ratios}


def format_serve_table(report: dict[str, Any]) -> str:
    rows = [f"backend {report['offline_backend']}; offline Verifier.verify_many: "
            f"{report['offline_verify_many_pairs_per_s']:.1f} pairs/s (median of {len(report['offline_runs'])})",
            f"{'server':<8} {'clients':>7} {'pairs/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6} {'vs offline':>10}"]
    for name, levels in report["servers"].items():
        for row in levels:
            rows.append(f"{name:<8} {row['clients']:>7} {row['pairs_per_s']:>8.1f} {row['p50_ms']:>8.1f} "
                        f"{row['p99_ms']:>8.1f} {row['errors']:>6} "
                        f"{row['pairs_per_s'] / report['offline_verify_many_pairs_per_s']:>10.2f}")
    return "\n".join(rows)


def plot_serve(report: dict[str, Any], path: Path) -> None:
    from ..plotting import pyplot, save_png

    plt = pyplot()
    fig, (rate_ax, lat_ax) = plt.subplots(1, 2, figsize=(10, 3.8))
    for name, levels in report["servers"].items():
        clients = [r["clients"] for r in levels]
        rate_ax.plot(clients, [r["pairs_per_s"] for r in levels], marker="o", label=name)
        lat_ax.plot(clients, [r["p50_ms"] for r in levels], marker="o", label=f"{name} p50")
        lat_ax.plot(clients, [r["p99_ms"] for r in levels], marker="x", linestyle="--", label=f"{name} p99")
    rate_ax.axhline(report["offline_verify_many_pairs_per_s"], color="grey", linestyle=":", label="offline verify_many")
    rate_ax.set(xscale="log", xlabel="concurrent clients", ylabel="pairs/s", title="throughput")
    lat_ax.set(xscale="log", yscale="log", xlabel="concurrent clients", ylabel="ms", title="latency per request")
    for ax in (rate_ax, lat_ax):
        ax.legend(fontsize=7)
    save_png(fig, path)

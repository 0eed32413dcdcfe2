"""bfm-serve's resident memory under 64 clients, per --max-batch and --workers (benchmarks/results/serve_memory.md).

    python benchmarks/serve_memory/measure.py --json-out benchmarks/results/serve_memory.json

For each configuration a real bfm-serve (the demo bundle on ort, ``--queue-size 1024`` so that nothing is refused)
is started on a free loopback port; ``--clients`` threads send ``/v1/verify`` requests until ``--requests`` have
been answered, while a sampler reads the server's RSS (psutil) every 0.25 s. Aligned LFW crops measure the
networks and the batcher (``--max-batch``); raw LFW photos add decoding and detection on the ``--workers``
threads. Each configuration runs ``--repeats`` times on a fresh server; the medians are reported. Traffic goes to
127.0.0.1 only, and every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import base64
import json
import statistics
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]  # no stubs installed

from bfm_deploy.atomic import atomic_write_text
from bfm_deploy.bench.machine import describe_machine
from bfm_deploy.datasets import read_lfw_pairs
from bfm_deploy.serve.process import ServerProcess

REPO = Path(__file__).resolve().parents[2]
MIB = 2**20


@dataclass(frozen=True)
class Config:
    photos: str  # "aligned" (112x112 crops, no detection) or "raw" (LFW photos: decoding and detection)
    max_batch: int
    workers: int


def _bodies(data_dir: Path, photos: str, count: int = 64) -> list[bytes]:
    folder = data_dir / "lfw" / ("aligned112" if photos == "aligned" else "raw-fold1")
    pairs = [p for p in read_lfw_pairs(data_dir / "lfw" / "pairs.txt", folder) if p.left.is_file() and p.right.is_file()]
    if not pairs:
        raise SystemExit(f"no LFW pairs under {folder}")
    return [json.dumps({"a": base64.b64encode(p.left.read_bytes()).decode(),
                        "b": base64.b64encode(p.right.read_bytes()).decode(),
                        "aligned": photos == "aligned"}).encode() for p in pairs[:count]]


def _one_run(config: Config, bodies: list[bytes], bundle: Path, clients: int, requests: int,
             seconds: float) -> dict[str, Any]:
    import httpx

    server = ServerProcess(bundle, "ort", ("--max-batch", str(config.max_batch), "--workers", str(config.workers),
                                           "--queue-size", "1024", "--quiet"))
    try:
        process = psutil.Process(server.proc.pid)
        ready = process.memory_info().rss
        samples: list[tuple[float, int, int]] = []  # (seconds, answered so far, rss)
        answered, errors, lock, stop = [0], [0], threading.Lock(), threading.Event()
        started = time.monotonic()

        def sample() -> None:
            while not stop.is_set():
                samples.append((time.monotonic() - started, answered[0], process.memory_info().rss))
                stop.wait(0.25)

        handed = iter(range(requests))
        deadline = started + seconds

        def client() -> None:
            with httpx.Client(base_url=server.url, timeout=seconds + 30,
                              headers={"Content-Type": "application/json"}) as http:
                while time.monotonic() < deadline:
                    with lock:
                        i = next(handed, None)
                    if i is None:
                        return
                    ok = http.post("/v1/verify", content=bodies[i % len(bodies)]).status_code == 200
                    with lock:
                        answered[0] += ok
                        errors[0] += not ok

        sampler = threading.Thread(target=sample)
        sampler.start()
        threads = [threading.Thread(target=client) for _ in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.monotonic() - started
        stop.set()
        sampler.join()
        after = process.memory_info().rss
    finally:
        server.stop()
    half = next((rss for _, n, rss in samples if n >= requests // 2), after)
    ten_s = next((rss for s, _, rss in samples if s >= 10), after)
    return {"ready_mib": round(ready / MIB, 1), "after_10s_mib": round(ten_s / MIB, 1),
            "after_half_mib": round(half / MIB, 1), "after_mib": round(after / MIB, 1),
            "peak_mib": round(max(rss for _, _, rss in samples) / MIB, 1), "answered": answered[0],
            "errors": errors[0], "wall_s": round(wall, 1), "pairs_per_s": round(answered[0] / wall, 1)}


def _median(runs: list[dict[str, Any]], key: str) -> float:
    return round(statistics.median(run[key] for run in runs), 1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bundle", type=Path, default=REPO / "engines" / "demo")
    parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--max-batch", default="8,32,64,128", help="aligned crops, --workers 2: these batch sizes")
    parser.add_argument("--workers", default="1,2,4,8", help="raw photos, --max-batch 64: these worker counts")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--requests", type=int, default=600, help="answered requests per run")
    parser.add_argument("--seconds", type=float, default=240.0, help="per run, at most")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args(argv)
    configs = [Config("aligned", int(b), 2) for b in args.max_batch.split(",") if b] + \
              [Config("raw", 64, int(w)) for w in args.workers.split(",") if w]
    bodies = {photos: _bodies(args.data_dir, photos) for photos in {c.photos for c in configs}}
    rows = []
    for config in configs:
        runs = [_one_run(config, bodies[config.photos], args.bundle, args.clients, args.requests, args.seconds)
                for _ in range(args.repeats)]
        row = {"photos": config.photos, "max_batch": config.max_batch, "workers": config.workers, "runs": runs}
        row |= {f"median_{k}": _median(runs, k) for k in ("ready_mib", "after_10s_mib", "after_half_mib",
                                                          "after_mib", "peak_mib", "pairs_per_s")}
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "runs"}), flush=True)
    report = {"format": "bfm-serve-memory/1", "machine": describe_machine(), "bundle": str(args.bundle),
              "clients": args.clients, "requests": args.requests, "repeats": args.repeats,
              "command": " ".join(["python", "benchmarks/serve_memory/measure.py", *sys.argv[1:]]), "rows": rows}
    if args.json_out is not None:
        # compact: the tracked tree travels to the GPU machine under 64 MiB (tests/test_gpu_check.py)
        atomic_write_text(args.json_out, json.dumps(report, separators=(",", ":")) + "\n")


if __name__ == "__main__":
    main()

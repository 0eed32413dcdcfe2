"""``bfm-bench --latency`` with several CPU backends: the whole pipeline on each, beside ort, in one run.

What a user compares when choosing a backend: aligned ``verify_many`` (faces/s), raw photos through detection
(faces/s), batch-1 ``verify`` of two photos (ms, after start-up) and start-up itself (cache cold and warm where
the backend has a cache). The backends take turns round by round, so that a change in the machine's load
falls on all of them; each figure is the median over rounds and each ratio divides medians of this run.
Decisions are compared with ort's on every pair measured. After the timed rounds, one more round of batch-1
calls runs with timers around the backend's networks, to show where a single pair's time goes.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..backends import create_backend
from ..backends.base import Backend
from ..bundle import Bundle
from ..errors import BfmError
from ..results import VerifyResult
from ..verifier import Verifier
from .stages import StageClock, TimedBackend
from .stats import median

REFERENCE = "ort"
BATCH1_STAGES = ("detect", "classify", "extract")  # the backend's networks, as TimedBackend names them


@dataclass(frozen=True)
class CompareConfig:
    rounds: int = 3
    batch_size: int = 64
    batch1_calls: int = 20  # verify() calls of one raw pair per round
    startups: int = 2  # start-up timings per cache state and backend


def compare_backends(bundle_dir: Path, names: Sequence[str], aligned: Sequence[tuple[np.ndarray, np.ndarray]],
                     raw: Sequence[tuple[Path, Path]], config: CompareConfig,
                     progress: Callable[[], None] = lambda: None) -> dict[str, Any]:
    """Time ``names`` (ort first: the reference) on the same decoded aligned pairs and raw photo files."""
    names = [REFERENCE, *[n for n in names if n != REFERENCE]]
    bundle = Bundle.load(bundle_dir)
    rows: dict[str, dict[str, Any]] = {}
    verifiers: dict[str, Verifier] = {}
    try:
        for name in names:
            try:
                rows[name] = {"startup_s": _startups(name, bundle, config.startups)}
                backend = _create(name, bundle)
            except BfmError as exc:
                rows[name] = {"available": False, "reason": str(exc)}
                continue
            rows[name].update(available=True, backend=backend.describe(),
                              startup=getattr(backend, "startup", dict)())
            verifiers[name] = Verifier(bundle, backend, batch_size=config.batch_size)
        if REFERENCE not in verifiers:
            raise BfmError("the comparison needs the ort backend as its reference")
        timings: dict[str, dict[str, list[float]]] = {n: {"aligned": [], "raw": [], "batch1": []} for n in verifiers}
        decisions: dict[str, dict[str, list[bool]]] = {}
        for _ in range(config.rounds + 1):  # the first round warms every backend up and is not counted
            for name, verifier in verifiers.items():
                aligned_s, aligned_same = _verify_timed(verifier, aligned, aligned=True)
                raw_s, raw_same = _verify_timed(verifier, raw, aligned=False)
                batch1 = [_verify_timed(verifier, [raw[i % len(raw)]], aligned=False)[0]
                          for i in range(config.batch1_calls)]
                timings[name]["aligned"].append(2 * len(aligned) / aligned_s)
                timings[name]["raw"].append(2 * len(raw) / raw_s)
                timings[name]["batch1"].append(1000.0 * median(batch1))
                decisions[name] = {"aligned": aligned_same, "raw": raw_same}
                progress()
        for name in timings:
            for key in timings[name]:
                timings[name][key] = timings[name][key][1:]
        for name, verifier in verifiers.items():
            rows[name]["batch1_split_ms"] = _batch1_split(bundle, verifier, raw, config)
            progress()
    finally:
        for verifier in verifiers.values():
            verifier.backend.close()
    reference = timings[REFERENCE]
    for name, runs in timings.items():
        rows[name].update(
            aligned_faces_per_s=median(runs["aligned"]), raw_faces_per_s=median(runs["raw"]),
            batch1_verify_ms=median(runs["batch1"]), runs=runs,
            aligned_vs_ort=median(runs["aligned"]) / median(reference["aligned"]),
            raw_vs_ort=median(runs["raw"]) / median(reference["raw"]),
            batch1_vs_ort=median(runs["batch1"]) / median(reference["batch1"]),
            same_decisions_as_ort=_agreement(decisions[name], decisions[REFERENCE]))
    return {"reference": REFERENCE, "rounds": config.rounds, "aligned_pairs": len(aligned), "raw_pairs": len(raw),
            "batch_size": config.batch_size, "batch1_calls_per_round": config.batch1_calls,
            "definition": "faces/s of Verifier.verify_many on decoded aligned crops and on raw photo files (decode, "
            "detect, align); batch-1: median ms of one verify() of two raw photos; medians over rounds, backends "
            "taking turns; ratios of this run's medians (batch1_vs_ort < 1 is faster)", "backends": rows}


def _create(name: str, bundle: Bundle, cache_dir: Path | None = None) -> Backend:
    if name.startswith("openvino") and cache_dir is not None:
        return create_backend(name, bundle, cache_dir=cache_dir)
    return create_backend(name, bundle, device="cpu") if name == REFERENCE else create_backend(name, bundle)


def _startups(name: str, bundle: Bundle, count: int) -> dict[str, float]:
    """Median seconds to create the backend: with an empty cache (cold) and again with it filled (warm)."""
    if not name.startswith("openvino"):
        return {"warm": median([_startup(name, bundle, None) for _ in range(count)])}
    cold, warm = [], []
    for _ in range(count):
        with tempfile.TemporaryDirectory(prefix="bfm-ov-cache-") as cache:
            cold.append(_startup(name, bundle, Path(cache)))
            warm.append(_startup(name, bundle, Path(cache)))
    return {"cold": median(cold), "warm": median(warm)}


def _startup(name: str, bundle: Bundle, cache_dir: Path | None) -> float:
    start = time.perf_counter()
    _create(name, bundle, cache_dir).close()
    return time.perf_counter() - start


def _verify_timed(verifier: Verifier, pairs: Sequence[Any], aligned: bool) -> tuple[float, list[bool]]:
    """Seconds of one ``verify_many`` over ``pairs`` and its same/different answers."""
    start = time.perf_counter()
    results = list(verifier.verify_many(pairs, aligned=aligned))
    seconds = time.perf_counter() - start
    return seconds, [r.same for r in results if isinstance(r, VerifyResult)]


def _batch1_split(bundle: Bundle, verifier: Verifier, raw: Sequence[tuple[Path, Path]], config: CompareConfig
                  ) -> dict[str, float]:
    """Where the median batch-1 ``verify`` of ``batch1_calls`` spent its ms: the detector, the classifier, the
    extractors and the rest (decoding, letterbox, SCRFD decoding, alignment, pre-processing, Python). One call's
    split, so that its parts add up to its time (medians taken part by part would not)."""
    clock = StageClock()
    timed = Verifier(bundle, TimedBackend(verifier.backend, clock), batch_size=config.batch_size)
    calls: list[dict[str, float]] = []
    for i in range(config.batch1_calls + 1):  # the first call builds the timed verifier's detector
        clock.reset()
        seconds = _verify_timed(timed, [raw[i % len(raw)]], aligned=False)[0]
        spent = {stage: clock.seconds.get(stage, 0.0) for stage in BATCH1_STAGES}
        calls.append({**spent, "rest": seconds - sum(spent.values()), "call": seconds})
    middle = sorted(calls[1:], key=lambda call: call["call"])[(len(calls) - 2) // 2]
    return {stage: round(1000.0 * value, 2) for stage, value in middle.items()}


def _agreement(got: dict[str, list[bool]], want: dict[str, list[bool]]) -> float:
    pairs = [(a, b) for key in want for a, b in zip(got[key], want[key])]
    return sum(a == b for a, b in pairs) / len(pairs) if pairs else 1.0


def format_comparison(report: dict[str, Any]) -> str:
    lines = ["backend        aligned f/s   x ort   raw f/s   x ort   batch-1 ms   x ort   start cold/warm s   same",
             "-" * 100]
    for name, row in report["backends"].items():
        if not row.get("available"):
            lines.append(f"{name:<14} unavailable: {row.get('reason', '')}")
            continue
        start = row["startup_s"]
        started = f"{start.get('cold', float('nan')):.2f}/{start['warm']:.2f}"
        lines.append(f"{name:<14} {row['aligned_faces_per_s']:>11.1f} {row['aligned_vs_ort']:>7.2f} "
                     f"{row['raw_faces_per_s']:>9.1f} {row['raw_vs_ort']:>7.2f} {row['batch1_verify_ms']:>12.1f} "
                     f"{row['batch1_vs_ort']:>7.2f} {started:>19} {100 * row['same_decisions_as_ort']:>6.1f}%")
    lines += ["", "batch-1 verify, where the time goes (ms, the median call of a timed round)",
              "backend        detector   classifier   extractors   rest   call", "-" * 64]
    for name, row in report["backends"].items():
        if row.get("available") and "batch1_split_ms" in row:
            split = row["batch1_split_ms"]
            lines.append(f"{name:<14} {split['detect']:>8.1f} {split['classify']:>12.1f} {split['extract']:>12.1f} "
                         f"{split['rest']:>6.1f} {split['call']:>6.1f}")
    return "\n".join(lines)

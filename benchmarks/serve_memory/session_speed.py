"""The extractor's speed under three onnxruntime session settings, interleaved in one process (benchmarks/results/serve_memory.md).

    python benchmarks/serve_memory/session_speed.py [--rounds 12]

Each round runs the same five batches (64, 37, 12, 64, 50 faces, the sizes a serving batcher makes) through
``full.onnx`` of the demo bundle under each setting, in alternating order, so that a busy machine slows all
settings alike; the median faces/s of the rounds is printed per setting.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

GRAPH = Path(__file__).resolve().parents[2] / "engines" / "demo" / "full.onnx"
SETTINGS = {"arena and patterns (before)": (True, True), "patterns off (bfm now)": (True, False),
            "arena off": (False, True)}


def session(arena: bool, patterns: bool) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.enable_cpu_mem_arena, options.enable_mem_pattern = arena, patterns
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # as the ort backend sets it
    options.log_severity_level = 3
    return ort.InferenceSession(str(GRAPH), sess_options=options, providers=["CPUExecutionProvider"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=12)
    args = parser.parse_args()
    sessions = {name: session(*flags) for name, flags in SETTINGS.items()}
    input_name = next(iter(sessions.values())).get_inputs()[0].name
    rng = np.random.default_rng(0)
    batches = [rng.standard_normal((size, 3, 112, 112), dtype=np.float32) for size in (64, 37, 12, 64, 50)]
    faces = sum(len(batch) for batch in batches)
    for s in sessions.values():  # every shape once before timing
        for batch in batches:
            s.run(None, {input_name: batch})
    rates: dict[str, list[float]] = {name: [] for name in sessions}
    for round_ in range(args.rounds):
        order = list(sessions.items())
        for name, s in order if round_ % 2 == 0 else order[::-1]:
            started = time.perf_counter()
            for batch in batches:
                s.run(None, {input_name: batch})
            rates[name].append(faces / (time.perf_counter() - started))
    for name, values in rates.items():
        print(f"{name}: median {statistics.median(values):.1f} faces/s over {len(values)} rounds "
              f"(min {min(values):.1f}, max {max(values):.1f})")


if __name__ == "__main__":
    main()

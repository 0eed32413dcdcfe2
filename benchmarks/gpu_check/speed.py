"""Throughput and latency: each fast-path choice against the simpler one it replaces, in the same run.

A ladder of variants adds one choice at a time (FP32 -> FP16 -> channels-last -> cuDNN benchmark mode -> pinned
buffers -> CUDA graphs -> uint8 upload normalised on the device), and BF16 stands beside FP16. (CUDA graphs were
chosen over ``torch.compile``: compiling each batch size would cost minutes of the check's 8.) A float variant's time includes the
host normalisation (``preprocess``) it needs, because the uint8 variant's point is to drop that and three
quarters of the bytes copied.
"""

from __future__ import annotations

import copy
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bfm_deploy.backends.torch_lane import Form, Lane, Normalisation, place_module
from bfm_deploy.backends.torch_options import TorchOptions
from bfm_deploy.tensor import preprocess


@dataclass(frozen=True)
class Variant:
    name: str
    options: TorchOptions
    form: Form
    replaces: str  # the variant it is measured against ("" for the baseline)


def ladder(device: str) -> list[Variant]:
    if device != "cuda":  # what a CPU can run: the plain path, and device normalisation with channels-last
        return [Variant("fp32 eager", TorchOptions.plain("fp32"), "float", ""),
                Variant("fp32 +channels-last +uint8", TorchOptions(channels_last=True, gpu_normalise=True), "uint8",
                        "fp32 eager")]
    fp16 = TorchOptions.plain("fp16")
    cl = fp16.with_(channels_last=True)
    bench = cl.with_(cudnn_benchmark=True)
    pinned = bench.with_(pinned=True)
    graphs = pinned.with_(cuda_graphs=True)
    return [
        Variant("fp32 eager", TorchOptions.plain("fp32"), "float", ""),
        Variant("fp16 eager", fp16, "float", "fp32 eager"),
        Variant("bf16 eager", TorchOptions.plain("bf16"), "float", "fp16 eager"),
        Variant("fp16 +channels-last", cl, "float", "fp16 eager"),
        Variant("fp16 +cl +cudnn-benchmark", bench, "float", "fp16 +channels-last"),
        Variant("fp16 +cl +pinned", pinned, "float", "fp16 +cl +cudnn-benchmark"),
        Variant("fp16 +cl +pinned +graphs", graphs, "float", "fp16 +cl +pinned"),
        Variant("fp16 fast (+uint8 upload)", graphs.with_(gpu_normalise=True), "uint8", "fp16 +cl +pinned +graphs"),
        Variant("bf16 fast", graphs.with_(gpu_normalise=True, precision="bf16"), "uint8", "fp16 fast (+uint8 upload)"),
    ]


@dataclass
class Timing:
    model: str
    variant: str
    replaces: str
    batch: int
    latency_ms: float
    faces_per_s: float


def median_ms(run: Callable[[], Any], min_seconds: float, min_runs: int = 3, warmup: int = 2) -> float:
    """Median wall time of ``run`` (which must wait for the device itself) after ``warmup`` calls (never timed:
    they capture the CUDA graphs and let cuDNN pick its algorithms)."""
    for _ in range(warmup):
        run()
    samples: list[float] = []
    start = time.perf_counter()
    while len(samples) < min_runs or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter()
        run()
        samples.append((time.perf_counter() - t0) * 1000.0)
    return statistics.median(samples)


def sweep(model_name: str, model: Any, crops: np.ndarray, batches: Sequence[int], device: str,
          min_seconds: float, runs: int, log: Callable[[str], None]) -> list[Timing]:
    """Every ladder variant of ``model`` (a CPU FP32 module, copied per variant) at every batch size."""
    import torch

    timings = []
    for variant in ladder(device):
        options = variant.options.with_(max_batch=max(batches), graph_batches=tuple(batches)).resolve(device)
        # cuDNN's benchmark mode is process-wide: this script owns it, and sets it per variant so that the plain
        # variants run without it whatever an earlier backend chose
        torch.backends.cudnn.benchmark = options.cudnn_benchmark
        lane = Lane(place_module(copy.deepcopy(model), options), options, Normalisation(127.5, 127.5, True),
                    threading.Lock())
        for b in batches:
            part = crops[:b]
            if variant.form == "uint8":
                run = lambda lane=lane, part=part: lane.run(part, "uint8")  # noqa: E731
            else:
                run = lambda lane=lane, part=part: lane.run(preprocess(list(part)), "float")  # noqa: E731
            ms = median_ms(run, min_seconds, min_runs=runs, warmup=max(runs, 2))
            timings.append(Timing(model_name, variant.name, variant.replaces, b, ms, b / ms * 1000.0))
        log(f"  {model_name} {variant.name}: " + ", ".join(f"{t.batch}:{t.faces_per_s:.0f}" for t in timings
                                                            if t.variant == variant.name and t.model == model_name))
        lane.close()
        del lane
        if device == "cuda":
            torch.cuda.empty_cache()
    return timings

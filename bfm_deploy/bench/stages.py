"""Per-stage wall time of the verification pipeline, measured from outside the pipeline's code.

The benchmark must not edit the runtime to time it, so it wraps the public functions the pipeline calls
(``load_image``, the detector, ``align_face``, the backend's ``infer``) with timers for the duration of a run
and puts the originals back afterwards. Stages nest (a detector may call the aligner), so the clock keeps a
stack and charges each stage only its *own* time: the stage totals add up to at most the wall time, and the
remainder is reported as ``other`` (routing, batching, pre-processing, Python).
"""

from __future__ import annotations

import contextlib
import functools
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from ..backends.base import Backend, Network


class StageClock:
    """Exclusive (self) time per stage name, with nesting, for the thread that created it.

    Work that the pipeline hands to its thread pool (decoding and aligning photos) is not timed stage by
    stage: those calls pass through untimed, and their wall time is charged to the main-thread stage that
    waits for them (``decode_align``).
    """

    def __init__(self) -> None:
        self._owner = threading.get_ident()
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._stack: list[list[Any]] = []  # [stage, start of the current uninterrupted slice]

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        if threading.get_ident() != self._owner:
            yield
            return
        now = time.perf_counter()
        if self._stack:  # pause the enclosing stage
            outer = self._stack[-1]
            self.seconds[outer[0]] += now - outer[1]
        self._stack.append([name, now])
        try:
            yield
        finally:
            end = time.perf_counter()
            stage, start = self._stack.pop()
            self.seconds[stage] += end - start
            self.calls[stage] += 1
            if self._stack:  # resume the enclosing stage
                self._stack[-1][1] = end

    def timed(self, name: str, func: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with self.stage(name):
                return func(*args, **kwargs)

        wrapper.__bfm_bench_original__ = func  # type: ignore[attr-defined]
        return wrapper

    def reset(self) -> None:
        self.seconds.clear()
        self.calls.clear()


@contextlib.contextmanager
def patch_everywhere(original: Any, replacement: Any, package: str = "bfm_deploy") -> Iterator[int]:
    """Replace every module-level reference to ``original`` in ``package``'s loaded modules, then restore.

    ``from .images import load_image`` copies the reference into the importing module, so patching only
    the defining module would miss the call sites. Yields how many references were replaced.
    """
    replaced: list[tuple[Any, str]] = []
    for name, module in list(sys.modules.items()):
        if module is None or not (name == package or name.startswith(package + ".")):
            continue
        if name.startswith(f"{package}.bench"):
            continue  # our own references stay untimed
        for attr, value in list(vars(module).items()):
            if value is original:
                setattr(module, attr, replacement)
                replaced.append((module, attr))
    try:
        yield len(replaced)
    finally:
        for module, attr in replaced:
            setattr(module, attr, original)


@contextlib.contextmanager
def patch_method(cls: type, name: str, clock: StageClock, stage: str) -> Iterator[None]:
    """Time ``cls.name`` (a method) under ``stage`` for the duration of the block."""
    original = cls.__dict__[name]
    setattr(cls, name, clock.timed(stage, original))
    try:
        yield
    finally:
        setattr(cls, name, original)


class TimedBackend(Backend):
    """A backend that charges the classifier's time to ``classify`` and the extractors' to ``extract``.

    Concurrent jobs are charged to ``extract`` when they contain an extractor (they overlap, so their
    time cannot be split between networks).
    """

    def __init__(self, inner: Backend, clock: StageClock) -> None:
        self.inner = inner
        self.clock = clock
        self.name = inner.name

    @staticmethod
    def _stage(networks: list[str]) -> str:
        return "classify" if networks == ["classifier"] else "extract"

    def infer(self, network: Network, batch: np.ndarray) -> np.ndarray:
        with self.clock.stage(self._stage([network])):
            return self.inner.infer(network, batch)

    def detect(self, batch: np.ndarray) -> list[np.ndarray]:
        with self.clock.stage("detect"):
            return self.inner.detect(batch)

    def detect_canvases(self, canvases: np.ndarray, mean: float, std: float,
                        reverse_channels: bool) -> list[np.ndarray]:
        # the inner backend's own path (openvino's takes uint8 canvases into its graph), not the base class's
        with self.clock.stage("detect"):
            return self.inner.detect_canvases(canvases, mean, std, reverse_channels)

    def infer_concurrent(self, jobs: dict[Network, np.ndarray]) -> dict[Network, np.ndarray]:
        with self.clock.stage(self._stage([n for n, b in jobs.items() if len(b)])):
            return self.inner.infer_concurrent(jobs)

    def close(self) -> None:
        self.inner.close()

    def __getattr__(self, name: str) -> Any:  # device, sessions, ...: whatever the pipeline asks the backend
        return getattr(self.inner, name)

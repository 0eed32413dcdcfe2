"""OpenVINO backend (the openvino extra): the bundle's four graphs compiled for this CPU.

onnxruntime's CPU provider leaves much of an AVX-512 CPU unused; OpenVINO's kernels ran E_F 2.2x faster here
(benchmarks/results/openvino_cpu.md). Precision ``auto`` is BF16 where AMX does the matrix work and FP32
elsewhere (``cpu_features``: on AVX-512 BF16 without AMX, BF16 was the slower one). Because it compiles the
graphs itself, every start passes the parity gate (``parity.py``) against onnxruntime on real faces before it
is used; the verdict is kept beside OpenVINO's compiled-model cache, keyed by the graphs' hashes, the OpenVINO
version, the precision and the CPU, so a second start reads both and runs no reference.

E_F and E_P of one batch run concurrently as two asynchronous requests; each thread that calls ``infer`` takes
its own request from a pool (an ``InferRequest`` serves one caller at a time).
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from ..atomic import atomic_write_text
from ..contract import NETWORKS, Network
from ..cpu_features import avx512, bf16_capable, bf16_fast, capabilities, cpu_flags
from ..errors import BackendError, BfmError
from ..optional import require
from . import parity
from .base import BACKENDS, AutoTry, Backend, BackendEntry

if TYPE_CHECKING:
    from ..bundle import Bundle

Precision = Literal["auto", "bf16", "f32"]
DETECTOR = "detector"


def default_cache_dir() -> Path:
    """``$BFM_OPENVINO_CACHE``, else ``$XDG_CACHE_HOME/bfm/openvino`` (``~/.cache/bfm/openvino``)."""
    if os.environ.get("BFM_OPENVINO_CACHE"):
        return Path(os.environ["BFM_OPENVINO_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "bfm" / "openvino"


def resolve_precision(precision: str, flags: frozenset[str] | None = None) -> Literal["bf16", "f32"]:
    """``auto``: BF16 where AMX makes it the fast one, else FP32; ``bf16`` needs a CPU that computes it."""
    if precision not in ("auto", "bf16", "f32"):
        raise BfmError(f"openvino backend: unknown precision {precision!r} (auto, bf16 or f32)")
    if precision == "bf16" and not bf16_capable(flags):
        raise BfmError("openvino backend: bf16 needs a CPU with AMX or AVX-512 BF16; this one has neither (use f32)")
    if precision == "auto":
        return "bf16" if bf16_fast(flags) else "f32"
    return "bf16" if precision == "bf16" else "f32"


class _Compiled:
    """One compiled graph and a pool of its inference requests (one per concurrent caller)."""

    def __init__(self, compiled: Any, outputs: Sequence[str] | None) -> None:
        self.model = compiled
        self.outputs = [compiled.output(name) for name in outputs] if outputs else [compiled.output(0)]
        self._idle: queue.SimpleQueue[Any] = queue.SimpleQueue()

    @contextmanager
    def request(self) -> Iterator[Any]:
        try:
            request = self._idle.get_nowait()
        except queue.Empty:
            request = self.model.create_infer_request()
        try:
            yield request
        finally:
            self._idle.put(request)


class OpenVinoBackend(Backend):
    name = "openvino"  # the instance's: openvino-f32 or openvino-bf16

    def __init__(self, bundle: Bundle, device: Literal["auto", "cpu"] = "auto", precision: Precision = "auto",
                 cache_dir: str | os.PathLike[str] | None = None, threads: int = 0, check_parity: bool = True) -> None:
        ov = require("openvino", "openvino", "the openvino backend")
        if device not in ("auto", "cpu"):
            raise BfmError(f"openvino backend: unknown device {device!r} (it runs on the CPU: auto or cpu)")
        started = time.perf_counter()
        self.device = "cpu"
        self.precision = resolve_precision(precision)
        # what ran, precision included: feature caches and reports key on the name, and the two differ in bits
        self.name = f"openvino-{self.precision}"
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.openvino_version = str(ov.get_version()).split("-")[0]
        core = ov.Core()
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            core.set_property({"CACHE_DIR": str(self.cache_dir)})
        except OSError as exc:
            raise BfmError(f"openvino backend: cannot use the cache folder {self.cache_dir}: {exc.strerror}") from None
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": self.precision, "PERFORMANCE_HINT": "LATENCY"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        self._graphs: dict[str, _Compiled] = {}
        files: dict[str, tuple[Path, Sequence[str] | None]] = {
            network: (bundle.models[network].file, [bundle.models[network].output_name]) for network in NETWORKS}
        if bundle.detector is not None:
            files[DETECTOR] = (bundle.detector.file, list(bundle.detector.output_names))
        for name, (path, outputs) in files.items():
            try:
                compiled = core.compile_model(self._read_model(core, path), "CPU", config)
            except Exception as exc:  # noqa: BLE001 - OpenVINO raises RuntimeError and its own types
                raise BfmError(f"openvino backend: cannot compile {path}: {_first_line(exc)}") from None
            self._graphs[name] = _Compiled(compiled, outputs)
        self.loaded_from_cache = all(_loaded_from_cache(g.model) for g in self._graphs.values())
        self.parity: dict[str, Any] | None = None
        if check_parity:
            self.parity = self._check_parity(bundle)
        self.startup_s = time.perf_counter() - started

    @staticmethod
    def _read_model(core: Any, path: Path) -> Any:
        """The graph as OpenVINO reads it (the one seam the parity tests alter)."""
        return core.read_model(str(path))

    def _check_parity(self, bundle: Bundle) -> dict[str, Any]:
        verdict = self.cache_dir / f"parity-{self._parity_key(bundle)}.json"
        try:
            return {**json.loads(verdict.read_text()), "cached": True}
        except (OSError, ValueError):
            pass
        from .ort import OrtBackend

        with OrtBackend(bundle, device="cpu") as reference:
            report = parity.measure(bundle, reference, self)
        parity.check(report, self.name)  # raises before a passing verdict could be written
        atomic_write_text(verdict, json.dumps(report.to_dict()) + "\n")
        return {**report.to_dict(), "cached": False}

    def _parity_key(self, bundle: Bundle) -> str:
        hashes = [bundle.models[n].sha256 for n in NETWORKS] + ([bundle.detector.sha256] if bundle.detector else [])
        facts = [*hashes, self.openvino_version, self.precision, *sorted(cpu_flags()),
                 f"gate {parity.MIN_COSINE} {parity.MAX_MASK_PROBABILITY_DIFF} {parity.MIN_BOX_IOU} {parity.MAX_LANDMARK_PX}"]
        return hashlib.sha256("\n".join(facts).encode()).hexdigest()[:24]

    def infer(self, network: Network, batch: np.ndarray) -> np.ndarray:
        (out,) = self._run(network, batch)
        return out

    def detect(self, batch: np.ndarray) -> list[np.ndarray]:
        if DETECTOR not in self._graphs:
            return super().detect(batch)
        return self._run(DETECTOR, batch)

    def _run(self, name: str, batch: np.ndarray) -> list[np.ndarray]:
        graph = self._graphs[name]
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        with graph.request() as request:
            try:
                request.infer({0: batch})
            except Exception as exc:  # noqa: BLE001 - every OpenVINO failure, whatever its type
                raise BackendError(f"openvino backend: {name} failed on {list(batch.shape)}: {_first_line(exc)}") from None
            return [np.array(request.get_tensor(port).data, dtype=np.float32) for port in graph.outputs]

    def infer_concurrent(self, jobs: dict[Network, np.ndarray]) -> dict[Network, np.ndarray]:
        # Both requests are started before either is waited for: OpenVINO runs them on its own threads.
        live = {network: np.ascontiguousarray(batch, dtype=np.float32) for network, batch in jobs.items() if len(batch)}
        if len(live) < 2:
            return {network: self.infer(network, batch) for network, batch in live.items()}
        with _requests([self._graphs[n] for n in live]) as requests:
            try:
                for request, batch in zip(requests, live.values()):
                    request.start_async({0: batch})
                for request in requests:
                    request.wait()
            except Exception as exc:  # noqa: BLE001
                raise BackendError(f"openvino backend: {', '.join(live)} failed: {_first_line(exc)}") from None
            return {network: np.array(request.get_tensor(self._graphs[network].outputs[0]).data, dtype=np.float32)
                    for network, request in zip(live, requests)}

    def describe(self) -> dict[str, Any]:
        # what decides the numbers, the same on every start (how this start went: ``startup``)
        return {"name": self.name, "device": self.device, "precision": self.precision,
                "openvino": self.openvino_version, "cpu": capabilities()}

    def startup(self) -> dict[str, Any]:
        """How this start went: seconds, whether the compiled models and the parity verdict came from the cache."""
        return {"cache_dir": str(self.cache_dir), "loaded_from_cache": self.loaded_from_cache,
                "startup_s": round(self.startup_s, 3), "parity": self.parity}

    def close(self) -> None:
        self._graphs = {}

    def __repr__(self) -> str:
        return f"OpenVinoBackend(precision={self.precision!r})"


@contextmanager
def _requests(graphs: Sequence[_Compiled]) -> Iterator[list[Any]]:
    with ExitStack() as stack:
        yield [stack.enter_context(graph.request()) for graph in graphs]


def _loaded_from_cache(compiled: Any) -> bool:
    try:
        return bool(compiled.get_property("LOADED_FROM_CACHE"))
    except Exception:  # noqa: BLE001 - older OpenVINO has no such property
        return False


def _first_line(exc: BaseException) -> str:
    return (" ".join(str(exc).split())[:300]) or type(exc).__name__


def openvino_pays() -> bool:
    """What ``auto`` asks before trying this backend on a CPU: installed, and an AVX-512 CPU (where it was
    measured twice ort's speed; on other CPUs ort stays the choice until a measurement says otherwise)."""
    import importlib.util

    return importlib.util.find_spec("openvino") is not None and avx512()


def _create_precision(precision: Precision) -> Any:
    def create(bundle: Bundle, **options: Any) -> OpenVinoBackend:
        return OpenVinoBackend(bundle, **{**options, "precision": precision})

    return create


NEEDS = "OpenVINO (x86 CPUs; BF16 where the CPU has AMX or AVX-512 BF16)"
BACKENDS.register("openvino", BackendEntry(OpenVinoBackend, needs=NEEDS, extra="openvino",
                                           auto=AutoTry({}, openvino_pays, on="cpu")))
# The same backend held to one precision: what --backend names to compare them (bfm-bench --latency --backend all).
BACKENDS.register("openvino-f32", BackendEntry(_create_precision("f32"), needs=NEEDS, extra="openvino"))
BACKENDS.register("openvino-bf16", BackendEntry(_create_precision("bf16"), needs=NEEDS, extra="openvino"))

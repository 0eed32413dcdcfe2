"""OpenVINO backend (the openvino extra): the bundle's four graphs compiled for this CPU.

onnxruntime's CPU provider leaves much of an AVX-512 CPU unused; OpenVINO's kernels ran E_F 2.2x faster here
(benchmarks/results/openvino_cpu.md). Precision ``auto`` is BF16 where AMX does the matrix work and FP32
elsewhere (``cpu_features``: on AVX-512 BF16 without AMX, BF16 was the slower one). Because it compiles the
graphs itself, every start passes the parity gate (``parity.py``) against onnxruntime on real faces before it
is used; the verdict is kept beside OpenVINO's compiled-model cache, keyed by the graphs' hashes, the OpenVINO
version, the precision and the CPU, so a second start reads both and runs no reference.

E_F and E_P of one batch run concurrently as two asynchronous requests; each thread that calls ``infer`` takes
its own request from a pool (an ``InferRequest`` serves one caller at a time).

The detector takes the letterboxed uint8 canvases themselves: BGR to RGB, the float conversion and the
normalisation are the first steps of its compiled graph (OpenVINO's ``PrePostProcessor``), not numpy's. SCRFD is
small and its activations outgrow the caches in large batches: one image a request, on a stream per core (the
``THROUGHPUT`` hint, one thread each), took raw photos through the pipeline at 1.88x ort's rate against 1.63x for
the same graph on whole 32-image requests (benchmarks/results/openvino_cpu.md). So a batch of photos is spread
over the streams image by image, and a single photo takes a ``LATENCY`` compilation that puts every core on it.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from ..atomic import atomic_write_text
from ..contract import NETWORKS, Network
from ..cpu_features import avx512, bf16_capable, bf16_fast, capabilities, cpu_flags
from ..detect.spec import DetectorSpec
from ..errors import BackendError, BfmError
from ..optional import require
from . import parity
from .base import BACKENDS, AutoTry, Backend, BackendEntry

if TYPE_CHECKING:
    from ..bundle import Bundle

Precision = Literal["auto", "bf16", "f32"]
DETECTOR = "detector"  # the graph as exported: NCHW float32 batches (``detect``), compiled on first use
# The detector on uint8 canvases (``detect_canvases``): one image on every core, and a stream per core.
DETECTOR_ONE = "detector-latency"
DETECTOR_STREAMS = "detector-streams"
COMPILED_AS = f"detector as {DETECTOR_ONE} and {DETECTOR_STREAMS} on single uint8 canvases, inputs shared"


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
        self.streams = max(1, int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
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
        # Threads not pinned to cores: the runtime shares this CPU with its own decoding and alignment threads (and,
        # in bfm-serve, with HTTP); a pinned thread waits for its one core where it could have taken the other
        # (E_F on two faces on this busy 2-core machine: 39.2 ms pinned, 35.9 unpinned, medians of 40).
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": self.precision, "PERFORMANCE_HINT": "LATENCY",
                                  "ENABLE_CPU_PINNING": False}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        self._ov, self._core, self._config = ov, core, config
        self._graphs: dict[str, _Compiled] = {}
        self._compiling = threading.Lock()  # the float detector, compiled by the first caller of ``detect``
        self._detector = bundle.detector
        for network in NETWORKS:
            entry = bundle.models[network]
            self._graphs[network] = self._compile(entry.file, [entry.output_name], config)
        if self._detector is not None:
            outputs = list(self._detector.output_names)
            self._graphs[DETECTOR_ONE] = self._compile(self._detector.file, outputs, config, self._detector)
            streams = {**config, "PERFORMANCE_HINT": "THROUGHPUT"}
            self._graphs[DETECTOR_STREAMS] = self._compile(self._detector.file, outputs, streams, self._detector)
        self.loaded_from_cache = all(_loaded_from_cache(g.model) for g in self._graphs.values())
        self.parity: dict[str, Any] | None = None
        if check_parity:
            self.parity = self._check_parity(bundle)
        self.startup_s = time.perf_counter() - started

    @staticmethod
    def _read_model(core: Any, path: Path) -> Any:
        """The graph as OpenVINO reads it (the one seam the parity tests alter)."""
        return core.read_model(str(path))

    def _compile(self, path: Path, outputs: Sequence[str], config: dict[str, Any],
                 canvases: DetectorSpec | None = None) -> _Compiled:
        """``path`` compiled with ``config``; with ``canvases``, as a detector that takes uint8 canvases."""
        try:
            model = self._read_model(self._core, path)
            if canvases is not None:
                model = _on_canvases(self._ov, model, canvases)
            compiled = self._core.compile_model(model, "CPU", config)
        except Exception as exc:  # noqa: BLE001 - OpenVINO raises RuntimeError and its own types
            raise BfmError(f"openvino backend: cannot compile {path}: {_first_line(exc)}") from None
        return _Compiled(compiled, outputs)

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
                 f"gate {parity.MIN_COSINE} {parity.MAX_MASK_PROBABILITY_DIFF} {parity.MIN_BOX_IOU} {parity.MAX_LANDMARK_PX}",
                 COMPILED_AS]  # a verdict on graphs compiled otherwise says nothing about these
        return hashlib.sha256("\n".join(facts).encode()).hexdigest()[:24]

    def infer(self, network: Network, batch: np.ndarray) -> np.ndarray:
        (out,) = self._run(network, batch)
        return out

    def detect(self, batch: np.ndarray) -> list[np.ndarray]:
        if self._detector is None:
            return super().detect(batch)
        with self._compiling:
            if DETECTOR not in self._graphs:
                self._graphs[DETECTOR] = self._compile(self._detector.file, list(self._detector.output_names),
                                                       self._config)
        return self._run(DETECTOR, batch)

    def detect_canvases(self, canvases: np.ndarray, mean: float, std: float,
                        reverse_channels: bool) -> list[np.ndarray]:
        spec = self._detector
        if (spec is None or (mean, std, reverse_channels) != (spec.mean, spec.std, spec.channel_order == "RGB")
                or canvases.dtype != np.uint8 or canvases.shape[1:] != (spec.input_size, spec.input_size, 3)):
            return super().detect_canvases(canvases, mean, std, reverse_channels)  # not what the graph was built for
        canvases = np.ascontiguousarray(canvases)
        if len(canvases) == 1:
            return self._run(DETECTOR_ONE, canvases)
        graph = self._graphs[DETECTOR_STREAMS]
        found: list[list[np.ndarray]] = []
        # One image a request, as many requests in flight as the graph has streams; results are taken in the
        # order the requests were started (the images are alike, so the oldest is the next to finish).
        with _requests([graph] * min(graph.streams, len(canvases))) as requests:
            try:
                for index, request in enumerate(requests):
                    request.start_async({0: canvases[index : index + 1]}, share_inputs=True)
                for index in range(len(canvases)):
                    request = requests[index % len(requests)]
                    request.wait()
                    found.append([np.array(request.get_tensor(port).data) for port in graph.outputs])
                    if index + len(requests) < len(canvases):
                        request.start_async({0: canvases[index + len(requests) : index + len(requests) + 1]},
                                            share_inputs=True)
            except Exception as exc:  # noqa: BLE001 - every OpenVINO failure, whatever its type
                for request in requests:
                    request.cancel()
                raise BackendError(f"openvino backend: detector failed on {list(canvases.shape)}: "
                                   f"{_first_line(exc)}") from None
        return [np.concatenate([outputs[k] for outputs in found]) for k in range(len(graph.outputs))]

    def _run(self, name: str, batch: np.ndarray) -> list[np.ndarray]:
        graph = self._graphs[name]
        batch = np.ascontiguousarray(batch) if name == DETECTOR_ONE else np.ascontiguousarray(batch, dtype=np.float32)
        with graph.request() as request:
            try:
                # share_inputs: the request reads our array in place (it outlives the call) instead of a copy
                # set as a new tensor (two canvases in one request of the dynamic-batch detector: 8.3 ms copied,
                # 6.1 shared; E_F and the classifier on two faces: 12.9 against 12.6)
                request.infer({0: batch}, share_inputs=True)
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
                    request.start_async({0: batch}, share_inputs=True)
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


def _on_canvases(ov: Any, model: Any, spec: DetectorSpec) -> Any:
    """The detector graph taking one 1 x S x S x 3 BGR uint8 canvas: channel order, float conversion and
    ``(x - mean) / std`` become its first operations (what ``bfm_deploy.tensor.to_nchw`` does on the host)."""
    colour = ov.preprocess.ColorFormat
    # Static shapes, batch included (every request carries one canvas): faster kernels and no shape inference
    # per call; two photos on the streams took 5.9 ms against 6.8 with a dynamic batch, one photo 3.6 against 4.3.
    model.reshape({0: ov.PartialShape([1, 3, spec.input_size, spec.input_size])})
    steps = ov.preprocess.PrePostProcessor(model)
    steps.input().tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC")).set_color_format(
        colour.BGR)
    steps.input().model().set_layout(ov.Layout("NCHW"))
    convert = steps.input().preprocess()
    if spec.channel_order == "RGB":
        convert.convert_color(colour.RGB)
    convert.convert_element_type(ov.Type.f32).mean(spec.mean).scale(spec.std)
    return steps.build()


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

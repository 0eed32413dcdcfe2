"""ONNX Runtime backend: one InferenceSession per network, CUDA where onnxruntime-gpu finds a GPU."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from ..errors import BackendError, BfmError
from .base import NETWORKS, Backend, Network

if TYPE_CHECKING:
    import onnxruntime as ort

    from ..bundle import Bundle

Device = Literal["auto", "cpu", "cuda"]
CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"


def cuda_provider_available() -> bool:
    """Whether this onnxruntime build offers CUDA at all (it may still fail to find a GPU at session creation)."""
    import onnxruntime as ort

    return CUDA_PROVIDER in ort.get_available_providers()


class OrtBackend(Backend):
    """Runs the bundle's ONNX graphs with onnxruntime.

    ``device="auto"`` asks for CUDA first when the build has it; whether a GPU was really found is decided
    from the created session's providers (onnxruntime silently falls back to CPU), not from
    ``ort.get_device()``, which only reports how the wheel was built.
    """

    name = "ort"

    def __init__(self, bundle: Bundle, device: Device = "auto", intra_op_threads: int = 0) -> None:
        import onnxruntime as ort

        if device not in ("auto", "cpu", "cuda"):
            raise BfmError(f"ort backend: unknown device {device!r} (auto, cpu or cuda)")
        want_cuda = device != "cpu" and CUDA_PROVIDER in ort.get_available_providers()
        if device == "cuda" and not want_cuda:
            raise BfmError("ort backend: CUDA requested but this onnxruntime has no CUDAExecutionProvider "
                           "(pip install onnxruntime-gpu)")
        providers = [CUDA_PROVIDER, CPU_PROVIDER] if want_cuda else [CPU_PROVIDER]
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads  # 0 lets onnxruntime pick
        # No spin-waiting between ops: the runtime shares the CPU with its own decoding and alignment threads
        # (and, in bfm-serve, with HTTP and the request threads); spinning idle threads took that CPU.
        # Measured: bfm-serve at 16 clients 44.0 -> 48.5 pairs/s, offline verify_many 56.5 -> 57.2.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3  # warnings about unused initialisers etc. are noise for users
        # No memory patterns: a pattern is one block per input shape, planned for that shape, and the arena keeps
        # the largest of them all; under the batches of bfm-serve (any size up to --max-batch) the process grew to
        # 769 MiB at --max-batch 64 and 1,276 MiB at 128, now 577 and 878, flat, at the same speed
        # (benchmarks/results/serve_memory.md). The arena stays: without it glibc's heap fragments under many
        # small batches (652 MiB at --max-batch 8 and growing, against 315). Outputs are the same bits.
        options.enable_mem_pattern = False
        self._sessions: dict[Network, ort.InferenceSession] = {}
        self._io: dict[Network, tuple[str, str]] = {}
        for network in NETWORKS:
            entry = bundle.models[network]
            try:
                session = ort.InferenceSession(str(entry.file), sess_options=options, providers=providers)
            except Exception as exc:  # onnxruntime raises its own exception types for unreadable graphs
                raise BfmError(f"ort backend: cannot load {entry.file}: {str(exc).splitlines()[0]}") from None
            self._sessions[network] = session
            self._io[network] = (entry.input_name, entry.output_name)
        self._detector: ort.InferenceSession | None = None
        self._detector_io: tuple[str, list[str]] = ("", [])
        if bundle.detector is not None:
            self._detector = self._detector_session(bundle, options, providers)
            self._detector_io = (bundle.detector.input_name, list(bundle.detector.output_names))
        on_gpu = all(s.get_providers()[0] == CUDA_PROVIDER for s in self._sessions.values())
        if device == "cuda" and not on_gpu:
            self.close()
            raise BfmError("ort backend: CUDAExecutionProvider is installed but found no usable GPU")
        self.device: Literal["cpu", "cuda"] = "cuda" if on_gpu else "cpu"
        self._pool = ThreadPoolExecutor(max_workers=len(NETWORKS), thread_name_prefix="bfm-ort")

    def infer(self, network: Network, batch: np.ndarray) -> np.ndarray:
        input_name, output_name = self._io[network]
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        (out,) = _run(self._sessions[network], [output_name], {input_name: batch}, network)
        return np.asarray(out, dtype=np.float32)

    @staticmethod
    def _detector_session(bundle: Bundle, options: ort.SessionOptions, providers: list[str]) -> ort.InferenceSession:
        import onnxruntime as ort

        spec = bundle.detector
        assert spec is not None
        try:
            session = ort.InferenceSession(str(spec.file), sess_options=options, providers=providers)
        except Exception as exc:
            raise BfmError(f"ort backend: cannot load {spec.file}: {str(exc).splitlines()[0]}") from None
        inputs = [i.name for i in session.get_inputs()]
        outputs = {o.name for o in session.get_outputs()}
        if inputs != [spec.input_name] or not set(spec.output_names) <= outputs:
            raise BfmError(f"bundle {bundle.root}: {spec.file.name} does not match its manifest entry "
                           f"(graph inputs {inputs}, manifest input {spec.input_name!r} and outputs "
                           f"{list(spec.output_names)}); re-export the bundle")
        return session

    def detect(self, batch: np.ndarray) -> list[np.ndarray]:
        if self._detector is None:
            return super().detect(batch)
        spec_input, spec_outputs = self._detector_io
        return _run(self._detector, spec_outputs, {spec_input: np.ascontiguousarray(batch, dtype=np.float32)}, "detector")

    def infer_concurrent(self, jobs: dict[Network, np.ndarray]) -> dict[Network, np.ndarray]:
        # onnxruntime releases the GIL inside run(), so one thread per session overlaps the networks.
        live = {network: batch for network, batch in jobs.items() if len(batch)}
        if len(live) < 2:
            return {network: self.infer(network, batch) for network, batch in live.items()}
        futures = {network: self._pool.submit(self.infer, network, batch) for network, batch in live.items()}
        return {network: future.result() for network, future in futures.items()}

    def close(self) -> None:
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=True)
        self._sessions = {}
        self._detector = None

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "device": self.device, "precision": "f32"}

    def __repr__(self) -> str:
        return f"OrtBackend(device={self.device!r})"


def _run(session: ort.InferenceSession, outputs: list[str], feeds: dict[str, np.ndarray], name: str) -> list[np.ndarray]:
    """``session.run``, its failure a ``BackendError``: onnxruntime raises its own exception types (Fail,
    RuntimeException, InvalidArgument, ...), which callers would otherwise meet as unexpected bugs."""
    try:
        return list(session.run(outputs, feeds))
    except Exception as exc:  # noqa: BLE001 - every onnxruntime failure, whatever its type
        shapes = ", ".join(f"{key} {list(value.shape)}" for key, value in feeds.items())
        message = " ".join(str(exc).split())[:300] or type(exc).__name__  # BfmError keeps it to one line
        raise BackendError(f"ort backend: {name} failed on {shapes}: {message}") from None


from .base import BACKENDS, AutoTry, BackendEntry  # noqa: E402  (registration only, kept apart from the backend)

BACKENDS.register("ort", BackendEntry(OrtBackend, needs="onnxruntime (onnxruntime-gpu for CUDA)",
                                      auto=AutoTry({"device": "cuda"}, cuda_provider_available)))

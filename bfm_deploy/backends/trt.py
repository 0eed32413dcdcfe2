"""TensorRT backend: the bundle's prebuilt FP16 engines, one execution context and one CUDA stream per network.

Each network owns pinned host buffers and device buffers sized for the engine profile's max batch, so a
batch is: copy into pinned memory -> async H2D -> ``execute_async_v3`` -> async D2H, all on its own stream.
``infer_concurrent`` queues full and partial on their streams before waiting on either, so they overlap.

Engines are refused (one-line BfmError with the rebuild command) when their manifest does not match the
running TensorRT, the GPU or the bundle's ONNX files. tensorrt is imported only when a backend is created.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from ..cuda_runtime import CudaRuntime, DeviceBuffer, PinnedBuffer, Stream
from ..engine.availability import require_tensorrt
from ..engine.sources import BundleLike, load_bundle, read_input_chw, read_sources
from ..engine.spec import (
    ENGINE_MANIFEST,
    BatchProfile,
    EngineManifest,
    GpuInfo,
    RuntimeFacts,
    check_manifest,
    engine_dir,
    missing_engines_message,
    rebuild_command,
)
from ..contract import NETWORKS, Network, sha256_file
from ..errors import BfmError
from .base import BACKENDS, AutoTry, Backend, BackendEntry

if TYPE_CHECKING:
    import tensorrt as trt


@dataclass
class _Slot:
    """Everything one network needs to run: engine, context, stream and its four buffers."""

    engine: trt.ICudaEngine
    context: trt.IExecutionContext
    stream: Stream
    input_name: str
    output_name: str
    output_width: int
    host_in: PinnedBuffer
    host_out: PinnedBuffer
    device_in: DeviceBuffer
    device_out: DeviceBuffer

    def close(self) -> None:
        for resource in (self.host_in, self.host_out, self.device_in, self.device_out, self.stream):
            resource.close()


@dataclass
class _DetectorSlot:
    """The detector's engine: one input, several outputs (scores, boxes, keypoints per stride), own stream."""

    context: trt.IExecutionContext
    stream: Stream
    input_name: str
    chw: tuple[int, int, int]
    min_batch: int  # smaller batches are padded with zeros up to the profile's minimum
    max_batch: int
    host_in: PinnedBuffer
    device_in: DeviceBuffer
    outputs: list[tuple[str, tuple[int, ...], PinnedBuffer, DeviceBuffer]]  # name, shape per image, buffers

    def close(self) -> None:
        for _, _, host, device in self.outputs:
            host.close()
            device.close()
        for resource in (self.host_in, self.device_in, self.stream):
            resource.close()


class TrtBackend(Backend):
    name = "trt"

    def __init__(self, bundle: BundleLike, device: int | str = 0, verbose: bool = False) -> None:
        """``bundle``: a ``Bundle`` or its folder; ``device``: a CUDA device index, ``"cuda"`` or ``"cuda:N"``."""
        self._slots: dict[str, _Slot] = {}
        index = device_index(device)
        require_tensorrt()
        import tensorrt as trt

        loaded = load_bundle(bundle)
        self._bundle_dir = loaded.root
        self._cuda = CudaRuntime(index)
        props = self._cuda.properties()
        facts = RuntimeFacts(str(trt.__version__), GpuInfo(props.name, props.major, props.minor))
        sources = read_sources(loaded)
        self._chw = read_input_chw(loaded)
        folder = engine_dir(self._bundle_dir, facts)
        if not (folder / ENGINE_MANIFEST).is_file():
            raise BfmError(missing_engines_message(self._bundle_dir, facts, _profile_hint(self._bundle_dir)))
        manifest = EngineManifest.load(folder / ENGINE_MANIFEST)
        check_manifest(manifest, facts, {n: s.sha256 for n, s in sources.items()}, self._bundle_dir)
        self.profile = manifest.profile
        self._logger = trt.Logger(trt.Logger.INFO if verbose else trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self._detector: _DetectorSlot | None = None
        try:
            for network in NETWORKS:
                self._slots[network] = self._load(folder, manifest, network)
            if "detector" in sources:
                self._detector = self._load_detector(folder, manifest, sources["detector"].chw or self._chw)
        except BaseException:
            self.close()
            raise

    def _load(self, folder: Path, manifest: EngineManifest, network: str) -> _Slot:
        import tensorrt as trt

        entry = manifest.engines[network]
        path = folder / entry.file
        engine = self._deserialize(folder, manifest, network)
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        io = {name: engine.get_tensor_mode(name) for name in names}
        if io.get(entry.input) != trt.TensorIOMode.INPUT or io.get(entry.output) != trt.TensorIOMode.OUTPUT:
            raise BfmError(f"{path}: expected input {entry.input!r}, output {entry.output!r}; engine has {names}")
        for name in (entry.input, entry.output):
            if engine.get_tensor_dtype(name) != trt.DataType.FLOAT:
                raise BfmError(f"{path}: tensor {name!r} is {engine.get_tensor_dtype(name)}, expected float32")
        output_width = int(engine.get_tensor_shape(entry.output)[-1])
        if output_width <= 0:
            raise BfmError(f"{path}: output {entry.output!r} has no fixed width")
        context = engine.create_execution_context()
        if context is None:
            raise BfmError(f"TensorRT could not create an execution context for {path} (out of GPU memory?)")
        max_batch = self.profile.max
        owned: list[PinnedBuffer | DeviceBuffer | Stream] = []  # freed again if a later allocation fails
        try:
            host_in = _own(owned, self._cuda.pinned((max_batch, *self._chw), np.float32))
            host_out = _own(owned, self._cuda.pinned((max_batch, output_width), np.float32))
            device_in = _own(owned, self._cuda.device_buffer(host_in.nbytes))
            device_out = _own(owned, self._cuda.device_buffer(host_out.nbytes))
            stream = _own(owned, self._cuda.stream())
            # The buffers never move, so their addresses are bound once.
            if not (
                context.set_tensor_address(entry.input, device_in.ptr)
                and context.set_tensor_address(entry.output, device_out.ptr)
            ):
                raise BfmError(f"TensorRT refused the buffer addresses for {path}")
        except BaseException:
            for resource in owned:
                resource.close()
            raise
        return _Slot(engine, context, stream, entry.input, entry.output, output_width,
                     host_in, host_out, device_in, device_out)

    def _deserialize(self, folder: Path, manifest: EngineManifest, network: str) -> trt.ICudaEngine:
        entry = manifest.engines[network]
        path = folder / entry.file
        if not path.is_file() or sha256_file(path) != entry.sha256:
            raise BfmError(
                f"{path} is missing or does not match its sha256 in {ENGINE_MANIFEST}; rebuild with: "
                f"{rebuild_command(self._bundle_dir, manifest.profile)}"
            )
        engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
        if engine is None:
            raise BfmError(f"TensorRT could not deserialize {path}")
        return engine

    def _load_detector(self, folder: Path, manifest: EngineManifest, chw: tuple[int, int, int]) -> _DetectorSlot:
        """Buffers for the detector's profile maximum; each output's per-image shape is read from the context
        once the input shape is fixed (the graph's anchor counts follow from its letterbox size)."""
        entry = manifest.engines["detector"]
        engine = self._deserialize(folder, manifest, "detector")
        context = engine.create_execution_context()
        if context is None:
            raise BfmError("TensorRT could not create an execution context for the detector (out of GPU memory?)")
        max_batch = entry.max_batch or manifest.profile.max
        if not context.set_input_shape(entry.input, (max_batch, *chw)):
            raise BfmError(f"the detector engine refused input shape {[max_batch, *chw]}; rebuild it")
        owned: list[PinnedBuffer | DeviceBuffer | Stream] = []
        try:
            host_in = _own(owned, self._cuda.pinned((max_batch, *chw), np.float32))
            device_in = _own(owned, self._cuda.device_buffer(host_in.nbytes))
            outputs = []
            for name in entry.outputs or [entry.output]:
                dims = context.get_tensor_shape(name)
                shape = tuple(int(dims[i]) for i in range(len(dims)))
                host = _own(owned, self._cuda.pinned(shape, np.float32))
                device = _own(owned, self._cuda.device_buffer(host.nbytes))
                if not context.set_tensor_address(name, device.ptr):
                    raise BfmError(f"TensorRT refused the buffer address of detector output {name!r}")
                outputs.append((name, shape[1:], host, device))
            stream = _own(owned, self._cuda.stream())
            if not context.set_tensor_address(entry.input, device_in.ptr):
                raise BfmError("TensorRT refused the detector's input buffer address")
        except BaseException:
            for resource in owned:
                resource.close()
            raise
        min_batch = min(manifest.profile.min, max_batch)
        return _DetectorSlot(context, stream, entry.input, chw, min_batch, max_batch, host_in, device_in, outputs)

    def detect(self, batch: np.ndarray) -> list[np.ndarray]:
        slot = self._detector
        if slot is None:
            return super().detect(batch)
        if batch.ndim != 4 or tuple(batch.shape[1:]) != slot.chw:
            raise BfmError(f"detector batch must be [N, {', '.join(map(str, slot.chw))}], got {list(batch.shape)}")
        parts: list[list[np.ndarray]] = [[] for _ in slot.outputs]
        for start in range(0, len(batch), slot.max_batch):
            chunk = np.ascontiguousarray(batch[start : start + slot.max_batch], dtype=np.float32)
            rows = len(chunk)
            padded = _launch(slot.context, slot.stream, slot.input_name, slot.host_in, slot.device_in, chunk,
                             slot.min_batch, slot.chw)
            for _, shape, host, device in slot.outputs:
                slot.stream.copy_to_host(host, device, padded * int(np.prod(shape)) * 4)
            slot.stream.synchronize()
            for i, (_, _, host, _) in enumerate(slot.outputs):
                parts[i].append(host.array[:rows].copy())
        return [np.concatenate(p) for p in parts]

    def _check_batch(self, batch: np.ndarray) -> np.ndarray:
        if batch.ndim != 4 or tuple(batch.shape[1:]) != self._chw:
            raise BfmError(f"expected a batch of shape [N, {', '.join(map(str, self._chw))}], got {list(batch.shape)}")
        return np.ascontiguousarray(batch, dtype=np.float32)

    def _enqueue(self, slot: _Slot, chunk: np.ndarray) -> int:
        """Queue one chunk (at most max batch) on the slot's stream; returns the rows to read back."""
        padded = _launch(slot.context, slot.stream, slot.input_name, slot.host_in, slot.device_in, chunk,
                         self.profile.min, self._chw)
        slot.stream.copy_to_host(slot.host_out, slot.device_out, padded * slot.output_width * 4)
        return len(chunk)

    def infer(self, network: Network, batch: np.ndarray) -> np.ndarray:
        return self.infer_concurrent({network: batch})[network]

    def infer_concurrent(self, jobs: dict[Network, np.ndarray]) -> dict[Network, np.ndarray]:
        """Run each network on its own stream; chunk i of every network is in flight before any wait."""
        if not self._slots:
            raise BfmError("trt backend used after close()")
        batches = {network: self._check_batch(batch) for network, batch in jobs.items()}
        results: dict[Network, list[np.ndarray]] = {network: [] for network in batches}
        step = self.profile.max
        longest = max((len(b) for b in batches.values()), default=0)
        for start in range(0, longest, step):
            queued: list[tuple[Network, _Slot, int]] = []
            try:
                for network, batch in batches.items():
                    chunk = batch[start : start + step]
                    if len(chunk):
                        slot = self._slots[network]
                        queued.append((network, slot, self._enqueue(slot, chunk)))
            except BaseException:
                self._drain()  # let queued work finish before anyone touches these buffers again
                raise
            for network, slot, rows in queued:
                slot.stream.synchronize()
                results[network].append(slot.host_out.array[:rows].copy())
        return {
            network: np.concatenate(parts) if parts else np.empty((0, self._width(network)), np.float32)
            for network, parts in results.items()
        }

    def _drain(self) -> None:
        for slot in self._slots.values():
            try:
                slot.stream.synchronize()
            except BfmError:
                pass  # already failing; the original error is the one to report

    def _width(self, network: str) -> int:
        return self._slots[network].output_width

    def close(self) -> None:
        slots, self._slots = getattr(self, "_slots", {}), {}
        for slot in slots.values():
            slot.close()
        detector, self._detector = getattr(self, "_detector", None), None
        if detector is not None:
            detector.close()


def _launch(context: trt.IExecutionContext, stream: Stream, input_name: str, host_in: PinnedBuffer,
            device_in: DeviceBuffer, chunk: np.ndarray, min_batch: int, chw: tuple[int, int, int]) -> int:
    """Copy ``chunk`` in and queue one execution on ``stream``; returns the batch it ran (a profile may not
    accept batches below its minimum, so smaller ones are padded with zeros)."""
    rows = len(chunk)
    padded = max(rows, min_batch)
    host_in.array[:rows] = chunk
    if padded > rows:
        host_in.array[rows:padded] = 0.0
    stream.copy_to_device(device_in, host_in, padded * int(np.prod(chw)) * 4)
    if not context.set_input_shape(input_name, (padded, *chw)):
        raise BfmError(f"TensorRT refused input shape {[padded, *chw]} for {input_name!r} (minimum batch {min_batch})")
    if not context.execute_async_v3(stream.handle):
        raise BfmError("TensorRT execute_async_v3 failed (see the TensorRT log)")
    return padded


_R = TypeVar("_R", PinnedBuffer, DeviceBuffer, Stream)


def _own(owned: list[PinnedBuffer | DeviceBuffer | Stream], resource: _R) -> _R:
    owned.append(resource)
    return resource


def device_index(device: int | str) -> int:
    """0 for "cuda"/"auto", N for N or "cuda:N"; TensorRT has no CPU mode."""
    if isinstance(device, int) and not isinstance(device, bool) and device >= 0:
        return device
    if device in ("cuda", "auto"):
        return 0
    if isinstance(device, str) and device.startswith("cuda:") and device[5:].isdigit():
        return int(device[5:])
    raise BfmError(f"trt backend: device must be a CUDA device ('cuda', 'cuda:N' or N), got {device!r}")


def _profile_hint(bundle_dir: Path) -> BatchProfile:
    """The batch profile of any engines already in the bundle (for the rebuild command), else the default."""
    for manifest_path in sorted(bundle_dir.glob(f"trt-*/{ENGINE_MANIFEST}")):
        try:
            return EngineManifest.load(manifest_path).profile
        except BfmError:
            continue
    return BatchProfile()


BACKENDS.register("trt", BackendEntry(
    TrtBackend, needs="an NVIDIA GPU, TensorRT and engines built for it by bfm-build-engine", extra="gpu",
    auto=AutoTry()))  # no cheap check: opening it is the check (engines, GPU, TensorRT)

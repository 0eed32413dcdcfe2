"""Thin, checked wrappers over the CUDA runtime from cuda-python: streams, pinned host and device buffers,
asynchronous copies.

cuda-python returns ``(error, value...)`` tuples instead of raising; ``CudaRuntime.check`` turns a non-success
code into a one-line ``BfmError``. Importing this module never fails: a missing cuda-python or driver surfaces
as ``BfmError`` when a ``CudaRuntime`` is created. Nothing here imports torch or tensorrt.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import BfmError

try:
    # cuda-python >= 12.6 (12.x and 13.x) lays the runtime bindings out as cuda.bindings.runtime.
    from cuda.bindings import runtime as cudart

    _IMPORT_ERROR: str | None = None
except ImportError as exc:  # no cuda-python, or one too old for the cuda.bindings layout
    _IMPORT_ERROR = str(exc)

# Errors that mean "this machine cannot run CUDA at all" rather than "a call went wrong".
_NO_DRIVER_ERRORS = (
    "cudaErrorInsufficientDriver",
    "cudaErrorNoDevice",
    "cudaErrorInitializationError",
    "cudaErrorStubLibrary",
    "cudaErrorDevicesUnavailable",
    "cudaErrorSystemDriverMismatch",
)


@dataclass(frozen=True)
class DeviceProperties:
    index: int
    name: str
    major: int
    minor: int
    total_memory: int


class CudaRuntime:
    """One CUDA device, checked on creation. Owns no memory itself; buffers and streams free their own."""

    def __init__(self, device: int = 0) -> None:
        if _IMPORT_ERROR is not None:
            raise BfmError(f"cuda-python (>= 12.6, cuda.bindings layout) is not importable: {_IMPORT_ERROR}")
        count = self._check_driver(cudart.cudaGetDeviceCount(), "cudaGetDeviceCount")
        if count < 1:
            raise BfmError("no CUDA driver or GPU: cudaGetDeviceCount found 0 devices")
        if not 0 <= device < count:
            raise BfmError(f"CUDA device {device} does not exist ({count} device(s) found)")
        self.device = device
        self.check(cudart.cudaSetDevice(device), "cudaSetDevice")

    def _check_driver(self, result: tuple[Any, ...], what: str) -> Any:
        err = result[0]
        if err != cudart.cudaError_t.cudaSuccess and self._error_name(err) in _NO_DRIVER_ERRORS:
            raise BfmError(f"no CUDA driver or GPU: {what} returned {self._describe(err)}")
        return self.check(result, what)

    @staticmethod
    def _error_name(err: Any) -> str:
        ok, name = cudart.cudaGetErrorName(err)
        return name.decode() if ok == cudart.cudaError_t.cudaSuccess else str(err)

    def _describe(self, err: Any) -> str:
        ok, text = cudart.cudaGetErrorString(err)
        detail = text.decode() if ok == cudart.cudaError_t.cudaSuccess else ""
        return f"{self._error_name(err)} ({detail})" if detail else self._error_name(err)

    def check(self, result: tuple[Any, ...], what: str) -> Any:
        """Unwrap a cuda-python result tuple: raise on error, else return the value (None, one, or a tuple)."""
        err = result[0]
        if err != cudart.cudaError_t.cudaSuccess:
            raise BfmError(f"CUDA call {what} failed: {self._describe(err)}")
        values = result[1:]
        if not values:
            return None
        return values[0] if len(values) == 1 else values

    def properties(self) -> DeviceProperties:
        props = self.check(cudart.cudaGetDeviceProperties(self.device), "cudaGetDeviceProperties")
        raw_name = props.name
        name = raw_name.split(b"\0", 1)[0].decode() if isinstance(raw_name, bytes) else str(raw_name)
        return DeviceProperties(self.device, name, int(props.major), int(props.minor), int(props.totalGlobalMem))

    def stream(self) -> Stream:
        return Stream(self)

    def pinned(self, shape: tuple[int, ...], dtype: np.dtype[Any] | type = np.float32) -> PinnedBuffer:
        return PinnedBuffer(self, shape, np.dtype(dtype))

    def device_buffer(self, nbytes: int) -> DeviceBuffer:
        return DeviceBuffer(self, nbytes)

    def synchronize(self) -> None:
        self.check(cudart.cudaDeviceSynchronize(), "cudaDeviceSynchronize")


class Stream:
    """A non-blocking CUDA stream (it does not serialise with the legacy default stream)."""

    def __init__(self, runtime: CudaRuntime) -> None:
        self._rt = runtime
        self._stream: Any = runtime.check(
            cudart.cudaStreamCreateWithFlags(cudart.cudaStreamNonBlocking), "cudaStreamCreateWithFlags"
        )

    @property
    def handle(self) -> int:
        """The raw ``cudaStream_t`` as an integer, as TensorRT's ``execute_async_v3`` and torch want it."""
        if self._stream is None:
            raise BfmError("CUDA stream used after close()")
        return int(self._stream)

    def synchronize(self) -> None:
        self._rt.check(cudart.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")

    def copy_to_device(self, dst: DeviceBuffer, src: PinnedBuffer, nbytes: int) -> None:
        """Queue a host-to-device copy of the first ``nbytes`` of ``src`` (pinned, so truly asynchronous)."""
        _check_fits(nbytes, src.nbytes, dst.nbytes)
        kind = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._rt.check(cudart.cudaMemcpyAsync(dst.ptr, src.ptr, nbytes, kind, self._stream), "cudaMemcpyAsync H2D")

    def copy_to_host(self, dst: PinnedBuffer, src: DeviceBuffer, nbytes: int) -> None:
        _check_fits(nbytes, src.nbytes, dst.nbytes)
        kind = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._rt.check(cudart.cudaMemcpyAsync(dst.ptr, src.ptr, nbytes, kind, self._stream), "cudaMemcpyAsync D2H")

    def copy_ptr(self, dst: int, src: int, nbytes: int, to_device: bool) -> None:
        """Copy between raw pointers (e.g. a torch tensor's ``data_ptr()``) and this runtime's buffers."""
        if nbytes < 0:
            raise BfmError(f"negative copy size {nbytes}")
        kinds = cudart.cudaMemcpyKind
        kind = kinds.cudaMemcpyHostToDevice if to_device else kinds.cudaMemcpyDeviceToHost
        self._rt.check(cudart.cudaMemcpyAsync(dst, src, nbytes, kind, self._stream), "cudaMemcpyAsync")

    def close(self) -> None:
        if self._stream is not None:
            self._rt.check(cudart.cudaStreamDestroy(self._stream), "cudaStreamDestroy")
            self._stream = None


class PinnedBuffer:
    """Page-locked host memory with a numpy view: the only kind of host memory CUDA copies asynchronously."""

    def __init__(self, runtime: CudaRuntime, shape: tuple[int, ...], dtype: np.dtype[Any]) -> None:
        self._rt = runtime
        self.shape = tuple(int(s) for s in shape)
        self.dtype = dtype
        self.nbytes = int(np.prod(self.shape, dtype=np.int64)) * dtype.itemsize
        if self.nbytes <= 0:
            raise BfmError(f"pinned buffer of shape {self.shape} is empty")
        self.ptr: int = int(runtime.check(cudart.cudaMallocHost(self.nbytes), "cudaMallocHost"))
        raw = (ctypes.c_uint8 * self.nbytes).from_address(self.ptr)
        self.array: np.ndarray[Any, Any] = np.ctypeslib.as_array(raw).view(dtype).reshape(self.shape)

    def close(self) -> None:
        if self.ptr:
            self.array = np.empty((0,), dtype=self.dtype)  # drop the view before the memory goes
            self._rt.check(cudart.cudaFreeHost(self.ptr), "cudaFreeHost")
            self.ptr = 0


class DeviceBuffer:
    def __init__(self, runtime: CudaRuntime, nbytes: int) -> None:
        if nbytes <= 0:
            raise BfmError(f"device buffer of {nbytes} bytes")
        self._rt = runtime
        self.nbytes = int(nbytes)
        self.ptr: int = int(runtime.check(cudart.cudaMalloc(self.nbytes), "cudaMalloc"))

    def close(self) -> None:
        if self.ptr:
            self._rt.check(cudart.cudaFree(self.ptr), "cudaFree")
            self.ptr = 0


def _check_fits(nbytes: int, *capacities: int) -> None:
    if nbytes < 0 or any(nbytes > cap for cap in capacities):
        raise BfmError(f"copy of {nbytes} bytes does not fit buffers of {min(capacities)} bytes")

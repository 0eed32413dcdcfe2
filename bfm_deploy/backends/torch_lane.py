"""One network's path onto a torch device: upload, normalise, forward, download, with the fast-path choices.

A ``Lane`` owns what a network needs to run without sharing: its CUDA stream, its pinned host buffers and its
captured CUDA graphs, behind a lock (the service detects on worker threads while its batcher runs the
extractors). ``submit`` queues a chunk and ``collect`` waits for it, so that ``infer_concurrent`` can queue E_F
and E_P on their two streams before waiting for either. torch is imported when a lane is made.

Inputs come in one of two forms (``Form``): ``float`` (NCHW float32, already normalised on the host, the
``Backend.infer`` contract) or ``uint8`` (NHWC uint8 images, BGR, normalised on the device by
``normalise_uint8`` exactly as ``bfm_deploy.tensor.to_nchw`` does on the host).
"""

from __future__ import annotations

import threading
from contextlib import nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from .torch_options import Resolved

if TYPE_CHECKING:
    import torch

Form = Literal["float", "uint8"]


@dataclass(frozen=True)
class Normalisation:
    """What turns a uint8 image into the network's input: ``(x - mean) / std``, BGR -> RGB if ``reverse``."""

    mean: float
    std: float
    reverse_channels: bool


def normalise_uint8(images: torch.Tensor, norm: Normalisation) -> torch.Tensor:
    """NHWC uint8 -> NCHW float32 ``(x - mean) * (1 / std)``, the same float32 operations in the same order as
    ``bfm_deploy.tensor.to_nchw``, so the result is bit-identical to the host's. The result keeps the NHWC
    memory order (a channels-last tensor), which is what the convolutions want on the GPU."""
    import torch

    x = images.permute(0, 3, 1, 2)
    if norm.reverse_channels:
        x = x.flip(1)
    # float32 scalars, as to_nchw's np.float32(mean) and np.float32(1.0 / std)
    mean, scale = float(np.float32(norm.mean)), float(np.float32(1.0 / norm.std))
    return torch.mul(torch.sub(x.to(torch.float32), mean), scale)


def place_module(model: Any, options: Resolved) -> Any:
    """``model`` in eval mode on the device, in the options' precision and memory format."""
    import torch

    model = model.eval().to(options.device)
    if options.precision != "fp32":
        model = model.to({"fp16": torch.float16, "bf16": torch.bfloat16}[options.precision])
    if options.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


class Lane:
    """Runs ``model`` on batches of at most ``options.max_batch`` on ``device`` (see the module doc)."""

    def __init__(self, model: Any, options: Resolved, norm: Normalisation, capture_lock: threading.Lock) -> None:
        import torch

        self._torch = torch
        self.options = options
        self.norm = norm
        self._model = model
        self._dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[options.precision]
        self._cuda = options.device == "cuda"
        self._lock = threading.Lock()
        self._capture_lock = capture_lock  # one capture at a time across lanes
        self.stream = torch.cuda.Stream() if self._cuda and options.streams else None
        self._pinned_in: dict[tuple[Form, tuple[int, ...]], Any] = {}
        self._pinned_out: dict[int, Any] = {}
        self._graphs: dict[tuple[Form, tuple[int, ...], int], _Captured] = {}

    # -- the public pair: queue a chunk, then wait for it ------------------------------------------------------

    def submit(self, batch: np.ndarray, form: Form) -> _Pending:
        """Queue ``batch`` (at most max_batch) on this lane's stream; the lane stays locked until ``collect``."""
        self._lock.acquire()
        try:
            with self._stream_context(), self._torch.inference_mode():
                raw = self._upload(batch, form)
                outputs = self._forward(raw, form, len(batch))
                return _Pending(self, len(batch), self._download(outputs, len(batch)))
        except BaseException:
            self._lock.release()
            raise

    def run(self, batch: np.ndarray, form: Form) -> list[np.ndarray]:
        """Every output of the model for ``batch`` of any size, as float32 host arrays."""
        if not len(batch):  # no chunk to queue; the model still gives each output's empty shape
            with self._lock, self._torch.inference_mode():
                raw = self._torch.from_numpy(np.ascontiguousarray(batch)).to(self.options.device)
                return [t.cpu().numpy() for t in self._call(raw, form)]
        step = self.options.max_batch
        parts = [self.submit(batch[i : i + step], form).collect() for i in range(0, len(batch), step)]
        return [np.concatenate([p[k] for p in parts]) for k in range(len(parts[0]))]

    # -- the steps ---------------------------------------------------------------------------------------------

    def _stream_context(self) -> Any:
        return self._torch.cuda.stream(self.stream) if self.stream is not None else nullcontext()

    def _upload(self, batch: np.ndarray, form: Form) -> torch.Tensor:
        torch = self._torch
        batch = np.ascontiguousarray(batch, dtype=np.uint8 if form == "uint8" else np.float32)
        if not self.options.pinned:
            return torch.from_numpy(batch).to(self.options.device)
        key = (form, batch.shape[1:])
        host = self._pinned_in.get(key)
        if host is None:  # preallocated once per input form and shape, at the chunk size
            host = torch.empty((self.options.max_batch, *batch.shape[1:]), dtype=torch.from_numpy(batch).dtype,
                               pin_memory=True)
            self._pinned_in[key] = host
        n = len(batch)
        host.numpy()[:n] = batch  # the previous chunk's copy is done: collect synchronised the stream
        return host[:n].to(self.options.device, non_blocking=True)

    def _prepare(self, raw: torch.Tensor, form: Form) -> torch.Tensor:
        torch = self._torch
        x = normalise_uint8(raw, self.norm) if form == "uint8" else raw
        fmt = torch.channels_last if self.options.channels_last else torch.contiguous_format
        return x.to(dtype=self._dtype, memory_format=fmt)

    def _call(self, raw: torch.Tensor, form: Form) -> list[torch.Tensor]:
        out = self._model(self._prepare(raw, form))
        return [t.float() for t in (out if isinstance(out, (list, tuple)) else [out])]

    def _forward(self, raw: torch.Tensor, form: Form, n: int) -> list[torch.Tensor]:
        if not self.options.cuda_graphs:
            return self._call(raw, form)
        bucket = self.options.bucket(n)
        key = (form, tuple(raw.shape[1:]), bucket)
        captured = self._graphs.get(key)
        if captured is None:
            captured = self._capture(raw, form, bucket)
            self._graphs[key] = captured
        captured.static_in[:n].copy_(raw)  # padding rows keep whatever they held: rows are independent
        captured.graph.replay()
        return [t[:n] for t in captured.static_out]

    def _capture(self, raw: torch.Tensor, form: Form, bucket: int) -> _Captured:
        torch = self._torch
        static_in = torch.zeros((bucket, *raw.shape[1:]), dtype=raw.dtype, device=raw.device)
        with self._capture_lock:
            # Warm-up on a side stream first (cuDNN picks its algorithms, lazy initialisation happens), as the
            # CUDA graph documentation asks; "thread_local" lets other lanes keep running during the capture.
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(2):
                    self._call(static_in, form)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, capture_error_mode="thread_local"):
                static_out = self._call(static_in, form)
        return _Captured(graph, static_in, static_out)

    def _download(self, outputs: list[torch.Tensor], n: int) -> list[Any]:
        if not self.options.pinned:
            return outputs  # copied (synchronously) in collect
        torch = self._torch
        hosts = []
        for k, out in enumerate(outputs):
            host = self._pinned_out.get(k)
            if host is None or tuple(host.shape[1:]) != tuple(out.shape[1:]):
                host = torch.empty((self.options.max_batch, *out.shape[1:]), dtype=torch.float32, pin_memory=True)
                self._pinned_out[k] = host
            host[:n].copy_(out, non_blocking=True)
            hosts.append(host)
        return hosts

    def _finish(self, n: int, staged: list[Any]) -> list[np.ndarray]:
        try:
            if self._cuda:
                (self.stream or self._torch.cuda.current_stream()).synchronize()
            if self.options.pinned:  # the buffers are reused by the next chunk: copy out
                return [t.numpy()[:n].copy() for t in staged]
            return [t[:n].cpu().numpy() for t in staged]  # fresh tensors of this chunk alone: no copy needed
        finally:
            self._lock.release()

    def close(self) -> None:
        with self._lock:
            self._graphs.clear()
            self._pinned_in.clear()
            self._pinned_out.clear()


@dataclass
class _Captured:
    graph: Any  # torch.cuda.CUDAGraph
    static_in: Any
    static_out: list[Any]


@dataclass
class _Pending:
    lane: Lane
    n: int
    staged: list[Any]

    def collect(self) -> list[np.ndarray]:
        """Wait for the chunk and return its outputs (float32 host arrays); unlocks the lane."""
        return self.lane._finish(self.n, self.staged)


def run_concurrently(jobs: list[tuple[Lane, np.ndarray, Form]]) -> list[list[np.ndarray]]:
    """Each (lane, batch, form) job's outputs; chunk by chunk, every lane's chunk queued before any is awaited,
    so lanes with their own streams overlap on the device."""
    if not jobs:
        return []
    step = min(lane.options.max_batch for lane, _, _ in jobs)
    results: list[list[list[np.ndarray]]] = [[] for _ in jobs]
    for start in range(0, max(len(batch) for _, batch, _ in jobs), step):
        pending: list[tuple[int, _Pending]] = []
        try:
            for i, (lane, batch, form) in enumerate(jobs):
                if start < len(batch):
                    pending.append((i, lane.submit(batch[start : start + step], form)))
        finally:  # every submitted chunk is collected, even when a later submit failed: it unlocks its lane
            for i, p in pending:
                results[i].append(p.collect())
    return [[np.concatenate([part[k] for part in parts]) for k in range(len(parts[0]))] for parts in results]


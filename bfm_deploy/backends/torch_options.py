"""How the torch backend runs its networks: each fast-path choice on its own switch.

Every choice of the CUDA fast path replaces a simpler one, and the GPU check (``benchmarks/gpu_check``) times
each against what it replaces in the same run, so each can be turned off alone. ``None`` means "the default
for the device": on CUDA everything on (FP16) except CUDA graphs, on the CPU everything off (FP32, contiguous,
eager, pageable copies, one stream, normalised on the host), so that CPU results are those of the plain path.
CUDA graphs stay opt-in until the GPU check has run them: a captured graph that replays stale buffers would
give wrong embeddings, not an error, so that choice waits for its parity figure.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from ..errors import BfmError

Precision = Literal["auto", "fp32", "fp16", "bf16"]
DetectorEngine = Literal["auto", "torch", "onnxruntime"]

# Batch sizes captured as CUDA graphs, each the first time a batch needs it; a batch is padded to the next one.
# Powers of two waste at most half a batch, and the largest is the chunk size of bigger batches.
DEFAULT_GRAPH_BATCHES: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256)


@dataclass(frozen=True)
class TorchOptions:
    """The torch backend's execution choices (``None``: the device's default, see the module doc)."""

    precision: Precision = "auto"  # auto: fp16 on CUDA, fp32 on the CPU; bf16 has FP32's range, FP16's speed
    channels_last: bool | None = None  # NHWC activations: what cuDNN's FP16 tensor-core convolutions want
    pinned: bool | None = None  # CUDA: preallocated pinned host buffers, asynchronous copies
    cuda_graphs: bool | None = None  # CUDA: replay captured graphs at fixed batch sizes (no per-layer launches)
    streams: bool | None = None  # CUDA: one stream per network, so infer_concurrent overlaps E_F and E_P
    gpu_normalise: bool | None = None  # uint8 crops cross PCIe (a quarter of float32's bytes), normalised there
    detector: DetectorEngine = "auto"  # auto: the torch module on CUDA, onnxruntime on the CPU (~6x faster there)
    graph_batches: tuple[int, ...] = DEFAULT_GRAPH_BATCHES
    max_batch: int = 256  # pinned buffers hold this many faces; larger batches run in chunks of it
    cudnn_benchmark: bool | None = None  # CUDA: let cuDNN time its algorithms per shape (process-wide setting)

    def __post_init__(self) -> None:
        if self.precision not in ("auto", "fp32", "fp16", "bf16"):
            raise BfmError(f"torch backend: unknown precision {self.precision!r} (auto, fp32, fp16 or bf16)")
        if self.detector not in ("auto", "torch", "onnxruntime"):
            raise BfmError(f"torch backend: unknown detector engine {self.detector!r} (auto, torch or onnxruntime)")
        if self.max_batch < 1:
            raise BfmError(f"torch backend: max_batch must be at least 1, got {self.max_batch}")
        if not self.graph_batches or any(b < 1 for b in self.graph_batches):
            raise BfmError("torch backend: graph_batches must be positive batch sizes")

    @classmethod
    def plain(cls, precision: Precision = "auto") -> TorchOptions:
        """The simple path every fast choice is measured against: eager, contiguous, pageable copies, one
        stream, host normalisation (the detector still on the device)."""
        return cls(precision=precision, channels_last=False, pinned=False, cuda_graphs=False, streams=False,
                   gpu_normalise=False, cudnn_benchmark=False)

    def resolve(self, device: str) -> Resolved:
        """Concrete choices for ``device`` ("cpu" or "cuda"); BfmError for a CUDA-only choice on the CPU."""
        cuda = device == "cuda"
        precision = self.precision if self.precision != "auto" else ("fp16" if cuda else "fp32")
        if not cuda:
            if precision == "fp16":
                raise BfmError("torch backend: FP16 is only supported on CUDA")
            for name in ("pinned", "cuda_graphs", "streams", "cudnn_benchmark"):
                if getattr(self, name):
                    raise BfmError(f"torch backend: {name} needs CUDA (the device is the CPU)")
        graph_batches = tuple(sorted({b for b in self.graph_batches if b <= self.max_batch} | {self.max_batch}))
        return Resolved(
            device=device,
            precision=precision,
            channels_last=_default(self.channels_last, cuda),
            pinned=_default(self.pinned, cuda),
            cuda_graphs=bool(self.cuda_graphs),  # opt-in: see the module doc
            streams=_default(self.streams, cuda),
            gpu_normalise=_default(self.gpu_normalise, cuda),
            detector_in_torch=self.detector == "torch" or (self.detector == "auto" and cuda),
            graph_batches=graph_batches,
            max_batch=self.max_batch,
            cudnn_benchmark=_default(self.cudnn_benchmark, cuda),
        )

    def with_(self, **changes: object) -> TorchOptions:
        return replace(self, **changes)  # type: ignore[arg-type]


def _default(value: bool | None, cuda: bool) -> bool:
    return cuda if value is None else value


@dataclass(frozen=True)
class Resolved:
    """``TorchOptions`` made concrete for one device."""

    device: str
    precision: str  # fp32, fp16 or bf16
    channels_last: bool
    pinned: bool
    cuda_graphs: bool
    streams: bool
    gpu_normalise: bool
    detector_in_torch: bool
    graph_batches: tuple[int, ...]  # ascending, the last is max_batch
    max_batch: int
    cudnn_benchmark: bool

    def bucket(self, n: int) -> int:
        """The captured batch size a batch of ``n`` (at most ``max_batch``) is padded to."""
        if not 1 <= n <= self.max_batch:
            raise BfmError(f"torch backend: a chunk of {n} faces is outside 1..{self.max_batch}")
        return next(b for b in self.graph_batches if b >= n)

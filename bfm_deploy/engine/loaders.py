"""Small composable TensorRT build steps, in the spirit of Polygraphy's loaders (our own code).

Each loader is a callable object holding its settings; calling it does the work. They compose as
``EngineFromNetwork(NetworkFromOnnxPath(path, logger), CreateConfig(...))()`` -> serialized engine bytes.

Written against the TensorRT >= 10 named-tensor API only. This module imports tensorrt at the top, so import
it only after ``require_tensorrt()`` succeeded (the CLI and the trt backend do that).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

import tensorrt as trt

from ..atomic import atomic_write_bytes
from ..errors import BfmError
from .spec import BatchProfile

if TYPE_CHECKING:
    from typing_extensions import Buffer


def host_bytes(memory: trt.IHostMemory) -> bytes:
    """Copy a TensorRT ``IHostMemory`` out. It implements the buffer protocol in C++, which the generated
    stubs cannot express, hence the cast."""
    return bytes(memoryview(cast("Buffer", memory)))


@dataclass
class ParsedNetwork:
    """A parsed ONNX graph; the builder and parser must outlive the network, so they travel together."""

    builder: trt.Builder
    network: trt.INetworkDefinition
    parser: trt.OnnxParser


@dataclass
class NetworkFromOnnxPath:
    path: Path
    logger: trt.ILogger

    def __call__(self) -> ParsedNetwork:
        builder = trt.Builder(self.logger)
        # Explicit batch is the only mode in TensorRT >= 10, so no creation flags are needed.
        network = builder.create_network(0)
        parser = trt.OnnxParser(network, self.logger)
        if not parser.parse_from_file(str(self.path)):
            errors = "; ".join(parser.get_error(i).desc() for i in range(parser.num_errors))
            raise BfmError(f"TensorRT could not parse {self.path}: {errors or 'unknown parser error'}")
        return ParsedNetwork(builder, network, parser)


@dataclass
class TimingCacheFile:
    """A timing cache kept in a file: loaded before a build, saved (atomically) after it.

    Kernel timings dominate build time; reusing them across the three networks and across rebuilds turns
    minutes into seconds. A cache from another TensorRT version or GPU is ignored by TensorRT's own check.
    """

    path: Path

    def load_into(self, config: trt.IBuilderConfig) -> None:
        data = self.path.read_bytes() if self.path.is_file() else b""
        cache = config.create_timing_cache(data)
        if not config.set_timing_cache(cache, False):
            # A mismatching cache (other TensorRT/GPU) is refused: start from an empty one instead.
            config.set_timing_cache(config.create_timing_cache(b""), False)

    def save_from(self, config: trt.IBuilderConfig) -> None:
        serialized = config.get_timing_cache().serialize()
        atomic_write_bytes(self.path, host_bytes(serialized))


def fp16_flag() -> trt.BuilderFlag | None:
    """``BuilderFlag.FP16`` where this TensorRT still has it (10.x); TensorRT 11 only builds strongly typed."""
    flag: trt.BuilderFlag | None = getattr(trt.BuilderFlag, "FP16", None)
    return flag


def needs_fp16_graph() -> bool:
    """True where FP16 must come from the graph itself (TensorRT >= 11: strongly typed networks only)."""
    return fp16_flag() is None


@dataclass
class CreateConfig:
    """Builder settings. ``fp16_graph``: the ONNX graph is already FP16 (see ``fp16_onnx``), so no flag."""

    fp16: bool
    profile: BatchProfile
    input_name: str
    chw: tuple[int, int, int]
    workspace_bytes: int
    timing_cache: TimingCacheFile | None = None
    fp16_graph: bool = False

    def __call__(self, parsed: ParsedNetwork) -> trt.IBuilderConfig:
        config = parsed.builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, self.workspace_bytes)
        if self.fp16 and not self.fp16_graph:
            flag = fp16_flag()
            if flag is None:
                raise BfmError(
                    f"TensorRT {trt.__version__} has no FP16 builder flag (it builds strongly typed networks "
                    "only): convert the graph to FP16 first (bfm_deploy.engine.fp16_onnx)"
                )
            config.set_flag(flag)
        self._check_input(parsed.network)
        profile = parsed.builder.create_optimization_profile()
        low, opt, high = (trt.Dims(shape) for shape in self.profile.shapes(self.chw))
        profile.set_shape(self.input_name, low, opt, high)
        if config.add_optimization_profile(profile) < 0:
            raise BfmError(f"TensorRT refused the batch profile {self.profile} for input {self.input_name!r}")
        if self.timing_cache is not None:
            self.timing_cache.load_into(config)
        return config

    def _check_input(self, network: trt.INetworkDefinition) -> None:
        names = [network.get_input(i).name for i in range(network.num_inputs)]
        if self.input_name not in names:
            raise BfmError(f"the ONNX graph has inputs {names}, the bundle manifest names {self.input_name!r}")


@dataclass
class EngineFromNetwork:
    network: NetworkFromOnnxPath
    config: CreateConfig

    def __call__(self) -> bytes:
        parsed = self.network()
        config = self.config(parsed)
        serialized = parsed.builder.build_serialized_network(parsed.network, config)
        if serialized is None:
            raise BfmError(f"TensorRT failed to build an engine from {self.network.path} (see the log above)")
        if self.config.timing_cache is not None:
            self.config.timing_cache.save_from(config)
        return host_bytes(serialized)


def make_logger(verbose: bool = False) -> trt.ILogger:
    return trt.Logger(trt.Logger.INFO if verbose else trt.Logger.WARNING)


def tensorrt_version() -> str:
    return str(trt.__version__)


def deserialize(runtime: trt.Runtime, path: str | os.PathLike[str]) -> trt.ICudaEngine:
    engine = runtime.deserialize_cuda_engine(Path(path).read_bytes())
    if engine is None:
        raise BfmError(f"TensorRT could not deserialize {path}")
    return engine

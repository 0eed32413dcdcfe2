"""Build the three FP16 engines of a bundle and their engine manifest, all in one atomic folder."""

from __future__ import annotations

import tempfile
from datetime import datetime, UTC
from pathlib import Path

from .. import __version__
from ..atomic import atomic_dir
from ..cuda_runtime import CudaRuntime
from ..errors import BfmError
from ..optional import install_hint
from ..progress import progress
from .loaders import (
    CreateConfig,
    EngineFromNetwork,
    NetworkFromOnnxPath,
    TimingCacheFile,
    make_logger,
    needs_fp16_graph,
    tensorrt_version,
)
from .sources import DETECTOR_MAX_BATCH, BundleLike, load_bundle, read_input_chw, read_sources
from .spec import (
    ENGINE_MANIFEST,
    BatchProfile,
    BuildOptions,
    EngineEntry,
    GpuInfo,
    RuntimeFacts,
    build_manifest,
    default_timing_cache_path,
    engine_dir,
    sha256_bytes,
)


def runtime_facts(device: int = 0) -> RuntimeFacts:
    props = CudaRuntime(device).properties()
    return RuntimeFacts(tensorrt_version(), GpuInfo(props.name, props.major, props.minor))


def build_engines(bundle: BundleLike, options: BuildOptions, device: int = 0, verbose: bool = False) -> Path:
    """Write ``BUNDLE/trt-<version>-sm<cc>/`` with one engine per network (and the detector, where the bundle
    has one: its own batch profile up to ``DETECTOR_MAX_BATCH`` at its fixed letterbox size); returns that folder."""
    loaded = load_bundle(bundle)
    sources = read_sources(loaded)
    chw = read_input_chw(loaded)
    facts = runtime_facts(device)
    target = engine_dir(loaded.root, facts)
    if target.exists() and not options.overwrite:
        raise BfmError(f"{target} exists; pass --overwrite to rebuild it")
    cache = TimingCacheFile(options.timing_cache or default_timing_cache_path(facts))
    logger = make_logger(verbose)
    entries: dict[str, EngineEntry] = {}
    fp16_graph = needs_fp16_graph()
    with atomic_dir(target, overwrite=True) as tmp, tempfile.TemporaryDirectory(prefix="bfm-fp16-") as scratch:
        for network in progress(list(sources), desc="building FP16 engines", unit="engine"):
            source = sources[network]
            profile = options.profile if source.chw is None else _detector_profile(options.profile)
            config = CreateConfig(
                fp16=True,
                profile=profile,
                input_name=source.input,
                chw=source.chw or chw,
                workspace_bytes=options.workspace_bytes,
                timing_cache=cache,
                fp16_graph=fp16_graph,
            )
            onnx_path = _fp16_graph(source.onnx, Path(scratch)) if fp16_graph else source.onnx
            data = EngineFromNetwork(NetworkFromOnnxPath(onnx_path, logger), config)()
            file_name = f"{network}.engine"
            (tmp / file_name).write_bytes(data)
            entries[network] = EngineEntry(
                file=file_name,
                onnx_sha256=source.sha256,
                sha256=sha256_bytes(data),
                input=source.input,
                output=source.output,
                outputs=list(source.outputs),
                max_batch=profile.max if source.chw is not None else 0,
            )
        created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        tools = {"bfm": __version__, "fp16": "fp16 graph" if fp16_graph else "builder flag"}
        manifest = build_manifest(facts, options, entries, created, tools=tools)
        (tmp / ENGINE_MANIFEST).write_text(manifest.to_json(), encoding="utf-8")
    return target


def _detector_profile(profile: BatchProfile) -> BatchProfile:
    top = min(profile.max, DETECTOR_MAX_BATCH)
    return BatchProfile(min=min(profile.min, top), opt=min(profile.opt, top), max=top)


def _fp16_graph(onnx_path: Path, scratch: Path) -> Path:
    """TensorRT >= 11 takes FP16 from the graph: convert a copy (the engine manifest keeps the original's sha256)."""
    try:
        from .fp16_onnx import convert_to_fp16
    except ImportError:
        raise BfmError(
            "TensorRT >= 11 builds FP16 engines only from FP16 graphs, which bfm-build-engine makes with the "
            f"onnx package: {install_hint('gpu')}"
        ) from None
    return convert_to_fp16(onnx_path, scratch / onnx_path.name)

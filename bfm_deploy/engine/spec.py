"""Pure-Python rules for TensorRT engines: batch profiles, folder names, the engine manifest and its checks.

Nothing here imports tensorrt or cuda, so the rules are testable on any machine; the builder
(``build.py``) and the trt backend feed them the facts they read from TensorRT and the GPU.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..contract import NETWORKS
from ..errors import BfmError

ENGINE_MANIFEST = "engine_manifest.json"
ENGINE_FORMAT = "bfm-engines"
ENGINE_FORMAT_VERSION = 1
PRECISION = "fp16"


@dataclass(frozen=True)
class BatchProfile:
    """The optimisation profile over the batch axis: TensorRT tunes for ``opt`` and accepts min..max."""

    min: int = 1
    opt: int = 32
    max: int = 256

    def __post_init__(self) -> None:
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (self.min, self.opt, self.max)):
            raise BfmError(f"batch profile values must be integers, got {self.min}/{self.opt}/{self.max}")
        if not 1 <= self.min <= self.opt <= self.max:
            raise BfmError(
                f"batch profile needs 1 <= min <= opt <= max, got min={self.min} opt={self.opt} max={self.max}"
            )

    def shapes(self, chw: tuple[int, int, int]) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        """(min, opt, max) NCHW shapes for ``IOptimizationProfile.set_shape``."""
        return ((self.min, *chw), (self.opt, *chw), (self.max, *chw))


@dataclass(frozen=True)
class GpuInfo:
    name: str
    major: int
    minor: int

    @property
    def compute_capability(self) -> str:
        return f"{self.major}.{self.minor}"


@dataclass(frozen=True)
class RuntimeFacts:
    """What the running machine offers: compared against an engine manifest before loading engines."""

    tensorrt_version: str
    gpu: GpuInfo


def engine_dir_name(tensorrt_version: str, gpu: GpuInfo) -> str:
    """``trt-<version>-sm<major><minor>``: engines are only valid for one TensorRT version and GPU architecture."""
    if not re.fullmatch(r"[0-9A-Za-z.+_-]+", tensorrt_version):
        raise BfmError(f"unexpected TensorRT version string {tensorrt_version!r}")
    return f"trt-{tensorrt_version}-sm{gpu.major}{gpu.minor}"


def engine_dir(bundle_dir: str | os.PathLike[str], facts: RuntimeFacts) -> Path:
    return Path(bundle_dir) / engine_dir_name(facts.tensorrt_version, facts.gpu)


def default_timing_cache_path(facts: RuntimeFacts, cache_root: str | os.PathLike[str] | None = None) -> Path:
    """Where the timing cache lives unless ``--timing-cache`` says otherwise.

    Timing entries are only valid for one TensorRT version and GPU, so the file name carries both; the
    folder is shared across bundles so that rebuilding any bundle reuses earlier kernel timings.
    """
    if cache_root is None:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        cache_root = Path(base) / "bfm"
    return Path(cache_root) / f"timing-{engine_dir_name(facts.tensorrt_version, facts.gpu)}.cache"




def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class EngineEntry:
    """One network's engine: its file, the ONNX it came from and the tensor names it exposes."""

    file: str
    onnx_sha256: str
    sha256: str
    input: str
    output: str
    outputs: list[str] = field(default_factory=list)  # every output of a multi-output engine (the detector)
    max_batch: int = 0  # this engine's own profile maximum (the detector's); 0: the manifest's profile


@dataclass(frozen=True)
class EngineManifest:
    tensorrt_version: str
    gpu: GpuInfo
    profile: BatchProfile
    engines: dict[str, EngineEntry]
    precision: str = PRECISION
    workspace_bytes: int = 0
    created: str = ""
    format: str = ENGINE_FORMAT
    format_version: int = ENGINE_FORMAT_VERSION
    tools: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        data: dict[str, Any] = {
            "format": self.format,
            "format_version": self.format_version,
            "created": self.created,
            "tensorrt_version": self.tensorrt_version,
            "gpu": {"name": self.gpu.name, "compute_capability": self.gpu.compute_capability},
            "precision": self.precision,
            "profile": asdict(self.profile),
            "workspace_bytes": self.workspace_bytes,
            "engines": {name: asdict(entry) for name, entry in self.engines.items()},
            "tools": dict(self.tools),
        }
        return json.dumps(data, indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str = ENGINE_MANIFEST) -> EngineManifest:
        try:
            data = json.loads(text)
            if data.get("format") != ENGINE_FORMAT:
                raise BfmError(f"{source}: not an engine manifest (format {data.get('format')!r})")
            if data.get("format_version") != ENGINE_FORMAT_VERSION:
                raise BfmError(f"{source}: unsupported format_version {data.get('format_version')!r}")
            major, minor = (int(v) for v in str(data["gpu"]["compute_capability"]).split("."))
            engines = {name: EngineEntry(**entry) for name, entry in data["engines"].items()}
            return cls(
                tensorrt_version=str(data["tensorrt_version"]),
                gpu=GpuInfo(str(data["gpu"]["name"]), major, minor),
                profile=BatchProfile(**data["profile"]),
                engines=engines,
                precision=str(data["precision"]),
                workspace_bytes=int(data.get("workspace_bytes", 0)),
                created=str(data.get("created", "")),
                tools={str(k): str(v) for k, v in data.get("tools", {}).items()},
            )
        except BfmError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise BfmError(f"{source}: malformed engine manifest ({type(exc).__name__}: {exc})") from None

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> EngineManifest:
        path = Path(path)
        if not path.is_file():
            raise BfmError(f"no engine manifest at {path}")
        return cls.from_json(path.read_text(encoding="utf-8"), source=str(path))


@dataclass(frozen=True)
class BuildOptions:
    """The ``bfm-build-engine`` options, kept so that a refusal can print the command that rebuilds."""

    profile: BatchProfile = BatchProfile()
    workspace_gb: float = 4.0
    timing_cache: Path | None = None
    overwrite: bool = False

    def __post_init__(self) -> None:
        if not self.workspace_gb > 0:
            raise BfmError(f"--workspace-gb must be positive, got {self.workspace_gb}")

    @property
    def workspace_bytes(self) -> int:
        return int(self.workspace_gb * (1 << 30))


def rebuild_command(bundle_dir: str | os.PathLike[str], profile: BatchProfile) -> str:
    """The exact ``bfm-build-engine`` command that rebuilds a bundle's engines with the same batch profile."""
    return " ".join(
        [
            "bfm-build-engine",
            shlex.quote(str(bundle_dir)),
            f"--min-batch {profile.min} --opt-batch {profile.opt} --max-batch {profile.max}",
            "--overwrite",
        ]
    )


def manifest_differences(
    manifest: EngineManifest, facts: RuntimeFacts, onnx_sha256: dict[str, str]
) -> list[str]:
    """What makes these engines unusable here, each as 'what: engine has X, here Y'; empty when they fit.

    TensorRT engines are tied to the exact TensorRT version and GPU model that built them, and to the ONNX
    graph they were built from: a re-exported bundle with stale engines would silently run old weights.
    """
    diffs: list[str] = []
    if manifest.tensorrt_version != facts.tensorrt_version:
        diffs.append(f"TensorRT version: engines {manifest.tensorrt_version}, running {facts.tensorrt_version}")
    if manifest.gpu.compute_capability != facts.gpu.compute_capability:
        diffs.append(
            f"GPU compute capability: engines sm{manifest.gpu.major}{manifest.gpu.minor}, "
            f"this GPU sm{facts.gpu.major}{facts.gpu.minor}"
        )
    if manifest.gpu.name != facts.gpu.name:
        diffs.append(f"GPU: engines built on {manifest.gpu.name!r}, this GPU is {facts.gpu.name!r}")
    expected = [*NETWORKS, *(["detector"] if "detector" in onnx_sha256 else [])]
    for network in expected:
        entry = manifest.engines.get(network)
        if entry is None:
            diffs.append(f"{network}: no engine in the manifest")
        elif network in onnx_sha256 and entry.onnx_sha256 != onnx_sha256[network]:
            diffs.append(
                f"{network}.onnx sha256: engine built from {entry.onnx_sha256[:12]}, "
                f"bundle has {onnx_sha256[network][:12]}"
            )
    return diffs


def check_manifest(
    manifest: EngineManifest,
    facts: RuntimeFacts,
    onnx_sha256: dict[str, str],
    bundle_dir: str | os.PathLike[str],
) -> None:
    """Raise a one-line BfmError naming every difference and the command that rebuilds the engines."""
    diffs = manifest_differences(manifest, facts, onnx_sha256)
    if diffs:
        raise BfmError(
            f"TensorRT engines in {bundle_dir} do not match: {'; '.join(diffs)}; "
            f"rebuild with: {rebuild_command(bundle_dir, manifest.profile)}"
        )


def missing_engines_message(bundle_dir: str | os.PathLike[str], facts: RuntimeFacts, profile: BatchProfile) -> str:
    found = sorted(p.name for p in Path(bundle_dir).glob("trt-*") if p.is_dir())
    also = f" (found {', '.join(found)}, built for another TensorRT/GPU)" if found else ""
    return (
        f"no TensorRT engines for TensorRT {facts.tensorrt_version} on sm{facts.gpu.major}{facts.gpu.minor} "
        f"in {bundle_dir}{also}; build them with: {rebuild_command(bundle_dir, profile)}"
    )


def build_manifest(
    facts: RuntimeFacts,
    options: BuildOptions,
    entries: dict[str, EngineEntry],
    created: str,
    tools: dict[str, str] | None = None,
) -> EngineManifest:
    missing = [n for n in NETWORKS if n not in entries]
    if missing:
        raise BfmError(f"engine manifest lacks engines for {', '.join(missing)}")
    return EngineManifest(
        tensorrt_version=facts.tensorrt_version,
        gpu=facts.gpu,
        profile=options.profile,
        engines={n: entries[n] for n in [*NETWORKS, *(["detector"] if "detector" in entries else [])]},
        precision=PRECISION,
        workspace_bytes=options.workspace_bytes,
        created=created,
        tools=dict(tools or {}),
    )

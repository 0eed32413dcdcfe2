"""GPU check: does bfm's GPU code give CPU-identical answers, and how fast is it?

Needs a CUDA GPU with PyTorch and cuda-python; TensorRT is optional (checked where importable).
1. bundle: ``--bundle DIR``, else the shipped ``engines/demo``, else ``WORK/bundle`` exported with
   ``bfm-export --from-pretrained w600k_mbf`` (random mask classifier) the first time;
2. reference: the torch backend on CPU (FP32) on real LFW faces where the shared data is present, else on
   seeded random crops;
3. checks, each against the reference: torch CUDA backend (FP16); the cuda-python path (pinned host buffers,
   async H2D/D2H copies on two CUDA streams, full and partial running concurrently under torch); TensorRT
   (engines built with bfm-build-engine's code if missing). Pass: cosine >= 0.999 for every embedding and the
   same decisions (mask class and same/different per pair);
4. a timing table (batch 1, 32, 128: latency and faces/s) for every path that ran.
Exit 0 when every check passes, 1 when one fails, 2 (one line) when the machine cannot run it.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import click
import numpy as np

from bfm_deploy.cli_support import one_line_errors
from bfm_deploy.errors import BfmError

MIN_COSINE = 0.999
BATCHES = (1, 32, 128)
NETWORKS = ("classifier", "full", "partial")
# A mask decision whose CPU logit margin is below this may flip at FP16 legitimately (the classifier of an
# exported w600k_mbf bundle is random); such near-ties are reported but not counted as failures.
TIE_MARGIN = 1e-2


@dataclass
class Check:
    path: str
    network: str
    min_cosine: float
    decisions_differ: int
    near_ties: int
    ok: bool


@dataclass
class Timing:
    path: str
    batch: int
    latency_ms: float
    faces_per_s: float


def preflight() -> Any:
    """The CUDA runtime wrapper, or exit 2 before importing torch when this machine has no usable GPU."""
    from bfm_deploy.cuda_runtime import CudaRuntime

    try:
        runtime = CudaRuntime(0)
    except BfmError as exc:
        raise BfmError(f"no CUDA GPU usable here ({exc}); run this on a machine with an NVIDIA GPU") from None
    import torch

    if not torch.cuda.is_available():
        raise BfmError("no CUDA GPU for PyTorch here (torch.cuda.is_available() is False; a CPU-only torch build?)")
    return runtime


SHIPPED_BUNDLE = Path(__file__).resolve().parents[2] / "engines" / "demo"


def ensure_bundle(bundle: Path | None, work: Path) -> Path:
    """The given bundle, else the shipped demo bundle (the torch path rebuilds it from its ONNX, so it needs no
    onnx or safetensors package on the GPU machine), else a w600k_mbf export into ``work``."""
    if bundle is not None:
        return bundle
    if (SHIPPED_BUNDLE / "manifest.json").is_file():
        return SHIPPED_BUNDLE
    target = work / "bundle"
    if not (target / "manifest.json").is_file():
        click.echo(f"exporting w600k_mbf to {target} (bfm-export, first run only)")
        cmd = [sys.executable, "-m", "bfm_train.export.cli", "--from-pretrained", "w600k_mbf", "--classifier", "random",
               "--thresholds", "full=0.35,partial=0.30", "--out", str(target), "--overwrite"]
        if subprocess.run(cmd).returncode != 0:
            raise BfmError(f"bfm-export failed (command: {' '.join(cmd)})")
    return target


def load_faces(count: int, seed: int = 0) -> tuple[np.ndarray, str]:
    """``count`` preprocessed crops (N, 3, 112, 112): real aligned LFW faces where available."""
    import cv2

    from bfm_deploy.datasets import default_data_dir

    root = default_data_dir() / "lfw" / "aligned112"
    files = sorted(root.glob("*/*.jpg"))[:count] if root.is_dir() else []
    if len(files) == count:
        bgr = np.stack([cv2.imread(str(f), cv2.IMREAD_COLOR) for f in files])
        source = f"{count} real LFW faces from {root}"
    else:
        bgr = np.random.default_rng(seed).integers(0, 256, (count, 112, 112, 3), dtype=np.uint8)
        source = f"{count} seeded random crops (no shared data at {root})"
    rgb = bgr[..., ::-1].astype(np.float32)
    return np.ascontiguousarray(((rgb - 127.5) / 127.5).transpose(0, 3, 1, 2)), source


def compare(
    path: str, reference: dict[str, np.ndarray], got: dict[str, np.ndarray], threshold: dict[str, float]
) -> list[Check]:
    checks = []
    for network, ref in reference.items():
        out = got[network]
        if network == "classifier":
            margin = ref[:, 1] - ref[:, 0]
            differ = (np.argmax(ref, 1) != np.argmax(out, 1))
            ties = int(np.sum(differ & (np.abs(margin) < TIE_MARGIN)))
            cos = _cosine_rows(ref, out)
            checks.append(Check(path, network, cos, int(differ.sum()) - ties, ties, int(differ.sum()) == ties))
            continue
        cos = _cosine_rows(ref, out)
        same_ref = _pair_scores(ref) >= threshold[network]
        same_got = _pair_scores(out) >= threshold[network]
        differ = int(np.sum(same_ref != same_got))
        checks.append(Check(path, network, cos, differ, 0, cos >= MIN_COSINE and differ == 0))
    return checks


def _normalise(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True).clip(1e-12)


def _cosine_rows(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.min(np.sum(_normalise(a) * _normalise(b), axis=1)))


def _pair_scores(emb: np.ndarray) -> np.ndarray:
    """Scores of pairs (i, i+1): a fixed set of same/different decisions to compare between paths."""
    e = _normalise(emb)
    return np.sum(e[:-1] * e[1:], axis=1)


def time_it(run: Callable[[], Any], iterations: int) -> float:
    """Median wall time (ms) of ``run`` after warm-up; ``run`` must synchronise the GPU itself."""
    for _ in range(3):
        run()
    samples = []
    for _ in range(iterations):
        start = time.perf_counter()
        run()
        samples.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(samples)


class StreamPath:
    """full and partial on their own cuda-python streams: pinned host -> async H2D -> torch -> async D2H."""

    def __init__(self, runtime: Any, bundle: Any, max_batch: int) -> None:
        import torch

        from bfm_deploy.backends.torch_backend import torch_modules

        self.torch = torch
        modules, _ = torch_modules(bundle, ("full", "partial"))  # weights.safetensors, or rebuilt from the ONNX
        self.models: dict[str, Any] = {}
        self.streams: dict[str, Any] = {}
        self.host_in: dict[str, Any] = {}
        self.host_out: dict[str, Any] = {}
        self.device_in: dict[str, Any] = {}
        for network in ("full", "partial"):
            self.models[network] = modules[network].cuda().half()
            self.streams[network] = runtime.stream()
            self.host_in[network] = runtime.pinned((max_batch, 3, 112, 112), np.float32)
            self.host_out[network] = runtime.pinned((max_batch, bundle.embedding_size), np.float32)
            self.device_in[network] = torch.empty((max_batch, 3, 112, 112), dtype=torch.float32, device="cuda")

    def run(self, jobs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self.torch
        torch.cuda.synchronize()  # device_in was allocated on torch's stream
        outputs = {}
        for network, batch in jobs.items():  # queue everything first: the two streams overlap
            n, stream = len(batch), self.streams[network]
            self.host_in[network].array[:n] = batch
            stream.copy_ptr(self.device_in[network].data_ptr(), self.host_in[network].ptr, batch.nbytes, to_device=True)
            with torch.cuda.stream(torch.cuda.ExternalStream(stream.handle)), torch.inference_mode():
                out = self.models[network](self.device_in[network][:n].half()).float().contiguous()
            stream.copy_ptr(self.host_out[network].ptr, out.data_ptr(), out.numel() * 4, to_device=False)
            outputs[network] = (n, out)  # keep `out` alive until its stream is done
        result = {}
        for network, (n, _) in outputs.items():
            self.streams[network].synchronize()
            result[network] = self.host_out[network].array[:n].copy()
        return result

    def close(self) -> None:
        for group in (self.host_in, self.host_out, self.streams):
            for item in group.values():
                item.close()


def trt_backend(bundle: Any, max_batch: int) -> tuple[Any, str]:
    """A TrtBackend (building engines first if this TensorRT/GPU has none), or None and why not."""
    from bfm_deploy.engine.availability import require_tensorrt

    try:
        version = require_tensorrt()
    except BfmError as exc:
        return None, str(exc)
    from bfm_deploy.backends.trt import TrtBackend
    from bfm_deploy.engine.build import build_engines, runtime_facts
    from bfm_deploy.engine.spec import BatchProfile, BuildOptions, engine_dir

    if not (engine_dir(bundle.root, runtime_facts()) / "engine_manifest.json").is_file():
        click.echo(f"building FP16 engines with TensorRT {version}")
        build_engines(bundle, BuildOptions(profile=BatchProfile(1, 32, max_batch)))
    return TrtBackend(bundle), f"TensorRT {version}"


def _default_work() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "bfm" / "gpu-check"


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--bundle", type=click.Path(file_okay=False, path_type=Path),
              help="Bundle to check (default: engines/demo, else export w600k_mbf into WORK/bundle).")
@click.option("--work", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where the exported bundle and results.json go "
                   "[default: $BFM_GPU_CHECK_WORKDIR or ~/.cache/bfm/gpu-check].")
@click.option("--iterations", default=20, show_default=True, help="Timed runs per batch size.")
@one_line_errors
def main(bundle: Path | None, work: Path | None, iterations: int) -> None:
    runtime = preflight()
    from bfm_deploy.backends import create_backend
    from bfm_deploy.bundle import Bundle

    work = work or Path(os.environ.get("BFM_GPU_CHECK_WORKDIR") or _default_work())
    loaded = Bundle.load(ensure_bundle(bundle, work))
    props = runtime.properties()
    click.echo(f"GPU {props.name} (sm{props.major}{props.minor}), bundle {loaded.root}")
    faces, source = load_faces(max(BATCHES))
    click.echo(f"inputs: {source}")
    threshold = {"full": loaded.threshold("full"), "partial": loaded.threshold("partial")}

    cpu = create_backend("torch", loaded, device="cpu")
    reference = {n: cpu.infer(n, faces) for n in NETWORKS}
    cpu.close()

    checks: list[Check] = []
    timings: list[Timing] = []
    gpu = create_backend("torch", loaded, device="cuda")
    checks += compare("torch-cuda-fp16", reference, {n: gpu.infer(n, faces) for n in NETWORKS}, threshold)
    for b in BATCHES:
        ms = time_it(lambda: gpu.infer("full", faces[:b]), iterations)
        timings.append(Timing("torch-cuda-fp16 full", b, ms, b / ms * 1000))

    streams = StreamPath(runtime, loaded, max(BATCHES))
    got = streams.run({"full": faces, "partial": faces})
    checks += compare("cuda-python streams", {k: reference[k] for k in got}, got, threshold)
    for b in BATCHES:
        ms = time_it(lambda: streams.run({"full": faces[:b], "partial": faces[:b]}), iterations)
        timings.append(Timing("cuda-python streams full+partial", b, ms, 2 * b / ms * 1000))
    streams.close()
    gpu.close()

    trt, why = trt_backend(loaded, max(BATCHES))
    if trt is None:
        click.echo(f"TensorRT path skipped: {why}")
    else:
        checks += compare(f"trt ({why})", reference, {n: trt.infer(n, faces) for n in NETWORKS}, threshold)
        both = trt.infer_concurrent({"full": faces, "partial": faces})
        checks += compare("trt concurrent", {k: reference[k] for k in both}, both, threshold)
        for b in BATCHES:
            ms = time_it(lambda: trt.infer("full", faces[:b]), iterations)
            timings.append(Timing("trt full", b, ms, b / ms * 1000))
            ms = time_it(lambda: trt.infer_concurrent({"full": faces[:b], "partial": faces[:b]}), iterations)
            timings.append(Timing("trt full+partial concurrent", b, ms, 2 * b / ms * 1000))
        trt.close()

    click.echo(f"\n{'path':40} {'network':10} {'min cos':>9} {'decisions differ':>17} {'near ties':>9}  result")
    for c in checks:
        verdict = "ok" if c.ok else "FAIL"
        click.echo(f"{c.path:40} {c.network:10} {c.min_cosine:9.5f} {c.decisions_differ:17d} {c.near_ties:9d}  {verdict}")
    click.echo(f"\n{'path':40} {'batch':>5} {'latency ms':>11} {'faces/s':>10}")
    for t in timings:
        click.echo(f"{t.path:40} {t.batch:5d} {t.latency_ms:11.2f} {t.faces_per_s:10.0f}")
    results = {"gpu": asdict(props), "inputs": source, "checks": [asdict(c) for c in checks],
               "timings": [asdict(t) for t in timings], "tensorrt": why}
    work.mkdir(parents=True, exist_ok=True)
    (work / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    failed = [c for c in checks if not c.ok]
    if failed:
        click.echo(f"\nFAILED: {', '.join(f'{c.path}/{c.network}' for c in failed)}", err=True)
        sys.exit(1)
    click.echo(f"\nall {len(checks)} checks passed; results in {work / 'results.json'}")


if __name__ == "__main__":
    main()

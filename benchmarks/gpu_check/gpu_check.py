"""GPU check: do bfm's GPU paths give the CPU's answers on real faces, and how fast is each choice?

    PYTHONPATH=. python benchmarks/gpu_check/gpu_check.py            # or benchmarks/gpu_check/run.sh
    PYTHONPATH=. python benchmarks/gpu_check/gpu_check.py --device cpu   # small dry run of the same code

Runs from the working tree alone (numpy, OpenCV, onnxruntime and torch; matplotlib optional), on the
shipped ``engines/demo`` (the torch backend rebuilds its networks and detector from the ONNX graphs):
1. parity on real LFW pairs (aligned crops and raw fold-1 photos) and MFR2 pairs (photos, detected): each
   device path (the fast path in FP16 and BF16, the plain FP16 path) against the torch backend on the CPU
   (FP32, detector on onnxruntime): embeddings cosine >= 0.999, the same mask decisions, the same top faces
   (landmarks within 1 px), the same same/different decisions (near ties reported apart);
2. throughput at batch 1..1024 for a random-init IResNet-50 and the bundle's MobileFaceNet, each fast-path
   choice beside the simpler one it replaces (``speed.py``); E_F and E_P on one stream and on two;
3. the routed pipeline (``Verifier.verify_many``) on aligned crops against E_F alone, and on raw photos;
   batch-1 verify latency (MobileFaceNet);
4. TensorRT parity where TensorRT is importable;
5. the service (``service.py``): ``bfm-serve`` batched against batch-size-1 under 1, 16 and 64 clients, beside
   the offline ``Verifier.verify_many``, as ``bfm-bench --serve`` measures it.
Faces come from ``--data-dir`` (default ``$BFM_DATA``, else ../shared/data); ``--pack-data DIR`` copies what the
check reads on a GPU (2.1 MB: the device tool carries at most 64 MiB with the working tree, which holds
58 MiB) plus the serve extra's wheels that the GPU machine lacks (3.4 MB), to carry to a GPU machine without the
shared data (then ``BFM_DATA=DIR``). ``--parts`` runs any of ``parity`` (with the pipeline and latency),
``speed`` (the throughput ladder and the streams) and ``service``.
Writes ``gpu_check.json`` (after each part, so a run cut short keeps what it measured) and ``gpu_check.png`` to
``--out`` (default ``$OUT``, else ~/.cache/bfm/gpu-check).
Exit 0: every required parity check passed (targets and the BF16 option's parity are reported, met or not); 1: a
parity check failed; 2: this machine cannot run the check, or bad input (one line); 3: a part of the check crashed
(its traceback at once on stderr and in the JSON; the other parts still run and the report is written).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from bfm_deploy.errors import BfmError

HERE = Path(__file__).resolve().parent
SHIPPED_BUNDLE = HERE.parents[1] / "engines" / "demo"
# The targets (H200): r50 FP16 at batch 256 (a quarter of the dense FP16 floor), routed vs E_F alone,
# batch-1 verify latency of MobileFaceNet.
R50_FACES_PER_S = 15_700
ROUTED_OVER_EF = 0.9
VERIFY_LATENCY_MS = 2.0
SERVICE_BATCHED_OVER_BATCH1 = 5.0  # the serving issue's target at 16 clients


@dataclass(frozen=True)
class CheckConfig:
    device: Literal["cuda", "cpu"]  # "cpu": the dry run
    bundle: Path
    data_dir: Path
    out: Path
    batches: tuple[int, ...]
    models: tuple[str, ...]  # throughput sweep: "r50" (random init), "mbf" (the bundle's E_F)
    lfw_pairs: int
    raw_pairs: int
    mfr2_pairs: int
    pipeline_pairs: int
    min_seconds: float  # per throughput figure
    latency_runs: int
    runs: int  # at least this many timed runs per figure (after as many warm-up runs)

    @classmethod
    def for_device(cls, device: Literal["cuda", "cpu"], bundle: Path, data_dir: Path, out: Path) -> CheckConfig:
        from data import PACKED_PAIRS

        if device == "cuda":  # every pair that --pack-data carries
            return cls(device, bundle, data_dir, out, tuple(2 ** i for i in range(11)), ("r50", "mbf"),
                       **PACKED_PAIRS, pipeline_pairs=1024, min_seconds=0.25,
                       latency_runs=200, runs=3)
        # the dry run exercises every step of the check at the smallest size (a CPU test runs it)
        return cls(device, bundle, data_dir, out, (1, 2), ("mbf",), lfw_pairs=4, raw_pairs=2, mfr2_pairs=2,
                   pipeline_pairs=2, min_seconds=0.0, latency_runs=1, runs=1)


def echo(text: str) -> None:
    print(text, flush=True)


class Sections:
    """Runs each part of the check; a part that raises is reported loudly (its traceback on stderr at once, and
    in the JSON) while the other parts still run, so that one session on a GPU brings back every figure that
    can be had. Any crash makes the exit status 3."""

    def __init__(self) -> None:
        self.crashed: list[dict[str, str]] = []

    def run(self, name: str, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except Exception as exc:  # noqa: BLE001 - recorded and re-signalled through the exit status
            text = traceback.format_exc()
            print(text, file=sys.stderr, flush=True)
            echo(f"CRASHED: {name}: {type(exc).__name__}: {exc}")
            self.crashed.append({"section": name, "error": f"{type(exc).__name__}: {exc}", "traceback": text})
            return None


def preflight(device: str) -> str:
    """A one-line description of the device, or BfmError (exit 2) when this machine cannot run the check."""
    try:
        import torch
    except ImportError as exc:
        raise BfmError(f"the GPU check needs torch ({exc})") from None
    if device == "cpu":
        return f"CPU ({platform.processor() or platform.machine()}), torch {torch.__version__}"
    if not torch.cuda.is_available():
        raise BfmError("no CUDA GPU usable here (torch.cuda.is_available() is False); run it on a GPU machine, "
                       "or --device cpu for the small dry run")
    props = torch.cuda.get_device_properties(0)
    return f"{props.name} (sm{props.major}{props.minor}, {props.total_memory / 2**30:.0f} GiB), torch {torch.__version__}"


def device_paths(device: str) -> dict[str, Any]:
    from bfm_deploy.backends.torch_options import TorchOptions

    if device == "cuda":
        # The default CUDA path, the same with CUDA graphs (opt-in until this parity holds), the plain path.
        return {"fast fp16": TorchOptions(), "fast fp16 +graphs": TorchOptions(cuda_graphs=True),
                "plain fp16": TorchOptions.plain(), "fast bf16": TorchOptions(precision="bf16", cuda_graphs=True)}
    return {"cpu +cl +uint8 +torch detector": TorchOptions(channels_last=True, gpu_normalise=True, detector="torch")}


# BF16 is an option, not the default: its parity rows say whether it is as accurate as FP16 (the issue's
# condition for using it) and do not fail the check.
INFORMATIONAL_PATHS = ("fast bf16",)


def run_paths(cfg: CheckConfig, bundle: Any, sets: Any, crops: np.ndarray,
              sections: Sections) -> tuple[list[Any], dict[str, Any]]:
    """Parity of every device path against the CPU reference, and with the same backend the routed pipeline's
    speed, E_F alone and batch-1 verify latency."""
    from bfm_deploy.backends.torch_backend import TorchBackend
    from bfm_deploy.detect import open_detector
    from bfm_deploy.images import load_image
    from bfm_deploy.verifier import Verifier

    from parity import detection_row, network_rows, pair_row, reference_outputs

    rows: list[Any] = []
    pipeline: dict[str, Any] = {}
    photos = list(dict.fromkeys(p for name in ("lfw-raw", "mfr2") for pair in sets.named()[name][0]
                                for p in (pair.left, pair.right)))
    images = [load_image(p) for p in photos]
    parity_crops = crops[: min(len(crops), 512)]
    reference = TorchBackend(bundle, device="cpu")  # no reference, no parity: a crash here ends the section
    ref_out = reference_outputs(reference, parity_crops)  # once, for every path compared with it
    ref_faces = open_detector("bundle", bundle, reference).detect_batch(images)  # type: ignore[attr-defined]
    ref_pairs = {}
    with Verifier(bundle, backend=reference, batch_size=256) as v:
        for name, (pairs, aligned) in sets.named().items():
            start = time.perf_counter()
            ref_pairs[name] = list(v.verify_many([(p.left, p.right) for p in pairs], aligned=aligned, errors="collect"))
            pipeline[f"cpu reference: {name} faces/s"] = 2 * len(pairs) / (time.perf_counter() - start)
    echo(f"reference (torch on the CPU, FP32): {sum(map(len, ref_pairs.values()))} pairs, {len(images)} photos")

    def one_path(path: str, options: Any) -> None:
        with TorchBackend(bundle, device=cfg.device, options=options) as backend:
            echo(f"{path}: {backend!r}")
            found = network_rows(path, ref_out, backend, parity_crops, bundle.mask_threshold)
            found.append(detection_row(path, ref_faces, open_detector("bundle", bundle, backend).detect_batch(images)))  # type: ignore[attr-defined]
            with Verifier(bundle, backend=backend, batch_size=256) as v:
                for name, (pairs, aligned) in sets.named().items():
                    got = list(v.verify_many([(p.left, p.right) for p in pairs], aligned=aligned, errors="collect"))
                    found.append(pair_row(path, name, ref_pairs[name], got, bundle.mask_threshold))
                for row in found:
                    row.required = path not in INFORMATIONAL_PATHS
                rows.extend(found)
                echo(f"parity {path}: " + ("ok" if all(r.ok for r in found) else "FAILED"))
                pipeline.update(sections.run(f"pipeline {path}", pipeline_speed, cfg, path, backend, v, sets, crops) or {})

    for path, options in device_paths(cfg.device).items():
        sections.run(f"parity {path}", one_path, path, options)
    trt = sections.run("tensorrt", trt_parity, bundle, ref_out, parity_crops)
    rows += trt[0] if trt else []
    pipeline["tensorrt"] = trt[1] if trt else "crashed"
    reference.close()
    return rows, pipeline


def pipeline_speed(cfg: CheckConfig, label: str, backend: Any, v: Any, sets: Any, crops: np.ndarray) -> dict[str, float]:
    """The routed pipeline on aligned crops beside E_F alone on the same faces, on raw photos (decoding,
    detection, alignment included), and batch-1 verify latency."""
    from bfm_deploy.tensor import preprocess

    from speed import median_ms

    pairs = [(crops[2 * i], crops[2 * i + 1]) for i in range(cfg.pipeline_pairs)]
    faces = np.stack([c for pair in pairs for c in pair])
    raw = [(p.left, p.right) for p in sets.lfw_raw]
    def timed(run: Any) -> float:
        return median_ms(run, cfg.min_seconds, min_runs=cfg.runs, warmup=cfg.runs)

    def ef_alone() -> None:  # the same way in as the Verifier takes: uint8 crops or the host-normalised tensor
        for i in range(0, len(faces), 256):
            chunk = faces[i : i + 256]
            backend.infer_crops("full", chunk) if backend.takes_uint8 else backend.infer("full", preprocess(list(chunk)))

    ef = timed(ef_alone)
    routed = timed(lambda: list(v.verify_many(pairs, aligned=True)))
    raw_ms = timed(lambda: list(v.verify_many(raw, errors="collect")))
    a, b = pairs[0]
    latency = median_ms(lambda: v.verify(a, b, aligned=True), 0.0, min_runs=cfg.latency_runs, warmup=cfg.runs)
    return {f"{label}: E_F alone, aligned, faces/s": len(faces) / ef * 1000,
            f"{label}: routed, aligned, faces/s": len(faces) / routed * 1000,
            f"{label}: routed / E_F alone": ef / routed,
            f"{label}: routed, raw photos, faces/s": 2 * len(raw) / raw_ms * 1000,
            f"{label}: batch-1 verify latency ms (mbf)": latency}


def trt_parity(bundle: Any, ref_out: dict[str, np.ndarray], crops: np.ndarray) -> tuple[list[Any], str]:
    """TensorRT against the reference's outputs ``ref_out`` for ``crops`` where TensorRT is importable (engines
    built first if missing)."""
    from bfm_deploy.engine.availability import require_tensorrt

    from parity import network_rows

    try:
        version = require_tensorrt()
    except BfmError as exc:
        return [], f"skipped: {exc}"
    from bfm_deploy.backends.trt import TrtBackend
    from bfm_deploy.engine.build import build_engines, runtime_facts
    from bfm_deploy.engine.spec import BatchProfile, BuildOptions, engine_dir

    if not (engine_dir(bundle.root, runtime_facts()) / "engine_manifest.json").is_file():
        echo(f"building FP16 engines with TensorRT {version}")
        build_engines(bundle, BuildOptions(profile=BatchProfile(1, 32, 256)))
    with TrtBackend(bundle) as trt:
        want = {network: out[:256] for network, out in ref_out.items()}
        return network_rows(f"trt {version}", want, trt, crops[:256], bundle.mask_threshold), f"TensorRT {version}"


def run_speed(cfg: CheckConfig, bundle: Any, crops: np.ndarray, sections: Sections) -> tuple[list[Any], dict[str, float]]:
    """The throughput ladder for each model, and E_F + E_P on one stream against two (CUDA)."""
    from bfm_deploy.backends.torch_backend import TorchBackend, torch_modules
    from bfm_deploy.backends.torch_options import TorchOptions
    from bfm_models import create_model

    from speed import median_ms, sweep

    timings: list[Any] = []
    modules, _ = torch_modules(bundle, ("full",))
    models = {"mbf": modules["full"], "r50": create_model("r50").eval()}
    for name in cfg.models:
        timings += sections.run(f"throughput {name}", sweep, name, models[name], crops, cfg.batches, cfg.device,
                                cfg.min_seconds, cfg.runs, echo) or []
    streams: dict[str, float] = {}

    def two_streams() -> None:
        for two in (False, True):
            with TorchBackend(bundle, device="cuda", options=TorchOptions(streams=two)) as backend:
                for b in (32, 256):
                    ms = median_ms(lambda b=b: backend.infer_concurrent_crops({"full": crops[:b], "partial": crops[:b]}),
                                   cfg.min_seconds, cfg.runs)
                    streams[f"E_F+E_P concurrent, {'two streams' if two else 'one stream'}, batch {b}, faces/s"] = (
                        2 * b / ms * 1000)

    if cfg.device == "cuda":
        sections.run("two streams", two_streams)
    return timings, streams


def targets(cfg: CheckConfig, timings: list[Any], pipeline: dict[str, Any],
            service: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's GPU targets, met or missed (a figure that a crash left out is missed, with no value)."""
    if cfg.device != "cuda":
        return []
    r50 = [t.faces_per_s for t in timings if t.model == "r50" and t.batch == 256 and t.variant.startswith("fp16")]
    figures = [("r50 FP16 faces/s at batch 256 (best fp16 variant)", max(r50) if r50 else None, R50_FACES_PER_S, 1),
               ("routed / E_F alone on aligned crops (fast fp16)", pipeline.get("fast fp16: routed / E_F alone"),
                ROUTED_OVER_EF, 1),
               ("batch-1 verify latency ms, mbf (fast fp16)", pipeline.get("fast fp16: batch-1 verify latency ms (mbf)"),
                VERIFY_LATENCY_MS, -1),
               ("service pairs/s, batched / batch-1 server at 16 clients",
                service.get("ratios", {}).get("batched_vs_batch1_at_16"), SERVICE_BATCHED_OVER_BATCH1, 1)]
    return [{"what": what, "value": value, "need": f"{'>=' if sign > 0 else '<'} {need}",
             "met": value is not None and (value >= need if sign > 0 else value < need)}
            for what, value, need, sign in figures]


def torch_flags() -> dict[str, Any]:
    """torch's process-wide settings that change FP32 speed (TF32) and kernel choice, as the run left them."""
    import torch

    return {"cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
            "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32, "cudnn_benchmark": torch.backends.cudnn.benchmark}


# parity: parity + pipeline + latency; speed: the throughput ladder + streams; service: bfm-serve under load
PARTS = ("parity", "speed", "service")


def check(cfg: CheckConfig, parts: tuple[str, ...] = PARTS) -> int:
    from bfm_deploy.bundle import Bundle

    from data import aligned_crops, load_pairs
    from report import print_tables, write_json, write_png

    started = time.perf_counter()
    device = preflight(cfg.device)
    echo(f"device: {device}; bundle {cfg.bundle}; data {cfg.data_dir}; parts {', '.join(parts)}")
    bundle = Bundle.load(cfg.bundle)
    sets = load_pairs(cfg.data_dir, cfg.lfw_pairs, cfg.raw_pairs, cfg.mfr2_pairs)
    crops = aligned_crops(sets.lfw_aligned, max(max(cfg.batches), 2 * cfg.pipeline_pairs))
    cfg.out.mkdir(parents=True, exist_ok=True)
    sections = Sections()
    rows: list[Any] = []
    timings: list[Any] = []
    pipeline: dict[str, Any] = {}
    tensorrt: Any = "not run"
    service: dict[str, Any] = {"measured": False, "why": "not run (--parts)"}

    def report() -> dict[str, Any]:
        """The report as it stands; written after each part, so that a run cut short still leaves its figures."""
        data = {
            "device": device, "mode": cfg.device, "parts": list(parts),
            "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()},
            "batches": list(cfg.batches), "pair_counts": {k: len(v[0]) for k, v in sets.named().items()},
            "parity": [asdict(r) for r in rows], "throughput": [asdict(t) for t in timings], "pipeline": pipeline,
            "targets": targets(cfg, timings, pipeline, service), "tensorrt": tensorrt, "service": service,
            "float_variants_include_host_preprocess": True, "torch_flags": torch_flags(),
            "crashed": sections.crashed, "seconds": round(time.perf_counter() - started, 1),
        }
        write_json(cfg.out / "gpu_check.json", data)
        return data

    if "parity" in parts:
        found: tuple[list[Any], dict[str, Any]] = sections.run("parity", run_paths, cfg, bundle, sets, crops,
                                                               sections) or ([], {})
        rows, pipeline = found
        tensorrt = pipeline.pop("tensorrt", "not reached")
        echo(f"parity and pipeline done at {time.perf_counter() - started:.0f} s")
        report()
    if "speed" in parts:
        timings, streams = run_speed(cfg, bundle, crops, sections)
        pipeline.update(streams)
    if "service" in parts:
        from service import run_service

        service = sections.run("service", run_service, cfg.bundle, cfg.data_dir, cfg.device,
                               cfg.out / "serve-site") or {"measured": False, "why": "crashed (traceback in crashed)"}
        echo(f"service done at {time.perf_counter() - started:.0f} s")
    final = report()
    print_tables(final, echo)
    sections.run("plot", write_png, cfg.out / "gpu_check.png", final["throughput"], device)
    final = report()  # again, should the plot have crashed
    echo(f"wrote {cfg.out / 'gpu_check.json'} and gpu_check.png ({final['seconds']} s)")
    if sections.crashed:
        print(f"error: {len(sections.crashed)} parts of the check crashed: "
              f"{', '.join(c['section'] for c in sections.crashed)} (tracebacks above and in the JSON)", file=sys.stderr)
        return 3
    failed = [f"{r.path}/{r.check}" for r in rows if not r.ok and r.required]
    if failed or ("parity" in parts and not rows):
        print(f"FAILED parity: {', '.join(failed) or 'no parity rows'}", file=sys.stderr)
        return 1
    informational = [f"{r.path}/{r.check}" for r in rows if not r.ok]
    echo(f"all {len(rows) - len(informational)} required parity checks passed"
         + (f"; informational (not required) failed: {', '.join(informational)}" if informational else ""))
    return 0


def _default_out() -> Path:
    if os.environ.get("OUT"):
        return Path(os.environ["OUT"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "bfm" / "gpu-check"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                        help="cuda (the check), or cpu: a small dry run of the same code")
    parser.add_argument("--bundle", type=Path, default=SHIPPED_BUNDLE)
    parser.add_argument("--data-dir", type=Path, default=None, help="shared data [default: $BFM_DATA, ../shared/data]")
    parser.add_argument("--out", type=Path, default=None, help="results folder [default: $OUT, ~/.cache/bfm/gpu-check]")
    parser.add_argument("--parts", default=",".join(PARTS),
                        help="which parts to run: parity (with the pipeline and latency), speed (the throughput ladder), service")
    parser.add_argument("--pack-data", type=Path, metavar="DIR",
                        help="copy the faces a GPU run reads, and the serve wheels it lacks, into DIR (to carry) and exit")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(HERE))  # the check's own modules, wherever it is run from
    try:
        from bfm_deploy.datasets import default_data_dir

        data_dir = args.data_dir or default_data_dir()
        if args.pack_data:
            from data import pack

            from service import pack_wheels

            files, size = pack(data_dir, args.pack_data)
            echo(f"copied {files} files ({size / 1e6:.1f} MB) to {args.pack_data}")
            echo(f"kept {pack_wheels(args.pack_data / 'wheels')} wheels of the serve extra in {args.pack_data / 'wheels'}")
            return 0
        parts = tuple(p for p in args.parts.split(",") if p)
        if not parts or set(parts) - set(PARTS):
            raise BfmError(f"--parts takes {' and/or '.join(PARTS)}, comma-separated; got {args.parts!r}")
        return check(CheckConfig.for_device(args.device, args.bundle, data_dir, args.out or _default_out()), parts)
    except BfmError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception:  # a bug or a broken machine: loud, with the whole traceback
        traceback.print_exc()
        print("error: the GPU check crashed (traceback above)", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())

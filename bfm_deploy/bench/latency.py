"""``bfm-bench --latency``: network sweeps per backend, the routed pipeline, routing overhead, efficiency."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..backends import create_backend
from ..backends.base import Backend
from ..contract import NETWORKS
from ..bundle import Bundle
from ..errors import BfmError
from ..progress import progress
from . import pipeline
from .backend_compare import CompareConfig, compare_backends, format_comparison
from .machine import describe_machine, load_average, measure_matmul
from .stats import median
from .sweep import TimingConfig, sweep_network

BACKENDS = ("ort", "openvino-f32", "openvino-bf16", "torch", "trt")
# CPU backends whose whole pipeline is also timed beside ort when more than one of them is (backend_compare.py)
COMPARED = ("ort", "openvino", "openvino-f32", "openvino-bf16")
DEFAULT_BATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
QUICK_BATCHES = (1, 4, 16)
OVERHEAD_TARGET = 0.90


@dataclass(frozen=True)
class LatencyOptions:
    bundle: Path
    data_dir: Path
    backends: tuple[str, ...] = ("ort",)
    batches: tuple[int, ...] = DEFAULT_BATCHES
    timing: TimingConfig = field(default_factory=TimingConfig)
    pipeline: pipeline.PipelineConfig = field(default_factory=pipeline.PipelineConfig)
    threads: int = 0  # onnxruntime intra-op threads; 0 = its default (one per physical core)
    matmul_n: int = 1024
    quick: bool = False


def _create(name: str, bundle: Bundle, threads: int) -> Backend:
    """The backend on this machine's best device; ort on CPU gets the requested thread count."""
    if name == "ort":
        return create_backend("ort", bundle, intra_op_threads=threads)
    return create_backend(name, bundle)


def _progress(total: int, desc: str) -> Any:
    return progress(total=total, desc=desc, unit="step", leave=False)


def run_latency(options: LatencyOptions) -> dict[str, Any]:
    bundle = Bundle.load(options.bundle)
    machine = describe_machine()
    machine["ort_intra_op_threads"] = options.threads or "default (physical cores)"
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    matmul_before = measure_matmul(options.matmul_n)

    sweeps: list[dict[str, Any]] = []
    backends_info: dict[str, Any] = {}
    cpu_backend: Backend | None = None
    pipeline_report: dict[str, Any] = {}
    comparison: dict[str, Any] | None = None
    try:
        for name in options.backends:
            try:
                backend = _create(name, bundle, options.threads)
            except BfmError as exc:
                backends_info[name] = {"available": False, "reason": str(exc)}
                continue
            backends_info[name] = {"available": True, "device": getattr(backend, "device", "unknown"), "stopped": {},
                                   "described": backend.describe(), "startup": getattr(backend, "startup", dict)()}
            with _progress(len(NETWORKS) * len(options.batches), f"sweep {name}") as bar:
                for network in NETWORKS:
                    points, stopped = sweep_network(backend, network, options.batches, options.timing, bar.update)
                    sweeps += [{**p.as_dict(), "backend": name} for p in points]  # the name asked for
                    if stopped:
                        backends_info[name]["stopped"][network] = stopped
            if name == "ort" and cpu_backend is None:
                cpu_backend = backend  # the pipeline is measured on ort (CPU here), the runtime's default
            else:
                backend.close()
        if cpu_backend is None:
            cpu_backend = _create("ort", bundle, options.threads)
        pipeline_report = _pipeline(bundle, cpu_backend, options)
        compared = [n for n in options.backends if n in COMPARED and backends_info.get(n, {}).get("available")]
        if len(compared) > 1:
            comparison = _comparison(options, compared)
    finally:
        if cpu_backend is not None:
            cpu_backend.close()
    matmul_after = measure_matmul(options.matmul_n)
    machine["load_average_end"] = load_average()

    matmul_gflops = median(matmul_before.gflops_runs + matmul_after.gflops_runs)
    extractor_macs = bundle.models["full"].macs
    reference = next(row for row in pipeline_report["prevalence"] if row["masked_pairs"] == 0.0)
    extractor_gflops = reference["extractor_alone_faces_per_s"] * 2 * extractor_macs / 1e9
    routing_overhead = reference["ratio"]
    return {
        "kind": "bfm-bench latency",
        "started": started,
        "quick": options.quick,
        "bundle": {"path": str(options.bundle), "name": bundle.name,
                   "architectures": {n: bundle.models[n].architecture for n in NETWORKS},
                   "macs": {n: bundle.models[n].macs for n in NETWORKS}},
        "machine": machine,
        "timing": asdict(options.timing),
        "routing_overhead": routing_overhead,
        "routing_overhead_target": OVERHEAD_TARGET,
        "routing_overhead_meets_target": routing_overhead >= OVERHEAD_TARGET,
        "compute_efficiency": extractor_gflops / matmul_gflops,
        "efficiency": {
            "extractor_gflops": extractor_gflops,
            "extractor_flops_per_face": 2 * extractor_macs,
            "matmul_gflops": matmul_gflops,
            "matmul": {"n": options.matmul_n, "before": matmul_before.as_dict(), "after": matmul_after.as_dict()},
            "definition": "E_F alone at the pipeline batch size (ort, faces/s x 2 x manifest MACs) / median numpy "
            "float32 matmul GFLOP/s measured before and after in this run",
        },
        "routing_overhead_definition": "routed Verifier.verify_many faces/s / E_F-alone faces/s on the same decoded "
        "aligned LFW crops, both with pre-processing, batch 64, 0% added masks; median of per-run ratios",
        "backends": backends_info,
        "sweep": sweeps,
        "pipeline": pipeline_report,
        "backend_comparison": comparison,
    }


def _comparison(options: LatencyOptions, names: Sequence[str]) -> dict[str, Any]:
    """The whole pipeline on each CPU backend, beside ort (``backend_compare``), on the pipeline's pairs."""
    cfg = options.pipeline
    aligned = pipeline.decode_pairs(pipeline.lfw_pairs(options.data_dir, "aligned112", cfg.pairs))
    raw = pipeline.lfw_pairs(options.data_dir, "raw-fold1", min(max(cfg.raw_pairs, 16), 600))
    config = CompareConfig(rounds=max(1, cfg.runs), batch_size=cfg.batch_size,
                           batch1_calls=5 if options.quick else 20)
    with _progress(len(names) * (config.rounds + 1), "backends") as bar:
        return compare_backends(options.bundle, names, aligned, raw, config, bar.update)


def _pipeline(bundle: Bundle, backend: Backend, options: LatencyOptions) -> dict[str, Any]:
    cfg = options.pipeline
    data_dir = options.data_dir
    aligned_paths = pipeline.lfw_pairs(data_dir, "aligned112", cfg.pairs)
    raw_paths = pipeline.lfw_pairs(data_dir, "raw-fold1", min(cfg.raw_pairs, 600)) if cfg.raw_pairs else []
    decoded = pipeline.decode_pairs(aligned_paths)
    masked, masked_source = pipeline.masked_crops(bundle, data_dir, cfg.masked_dir, limit=max(1, len(decoded)))
    steps = (cfg.runs + 1) * (2 if raw_paths else 1) + cfg.runs * len(cfg.prevalences) + (cfg.runs if raw_paths else 0)
    report: dict[str, Any] = {"config": {**asdict(cfg), "masked_dir": str(cfg.masked_dir) if cfg.masked_dir else None},
                              "backend": backend.name, "masked_source": masked_source}
    with _progress(steps, "pipeline") as bar:
        report["aligned"] = pipeline.stage_split(bundle, backend, aligned_paths, True, cfg, bar.update)
        if raw_paths:
            report["raw"] = pipeline.stage_split(bundle, backend, raw_paths, False, cfg, bar.update, cfg.detector)
            report["raw_comparison"] = pipeline.raw_comparison(bundle, backend, raw_paths, cfg, bar.update)
        report["prevalence"] = [
            {"masked_pairs": p, **pipeline.overhead(bundle, backend, pipeline.mix_pairs(decoded, masked, p), cfg,
                                                    bar.update)}
            for p in cfg.prevalences
        ]
    return report


def parse_batches(text: str) -> tuple[int, ...]:
    try:
        batches = tuple(sorted({int(v) for v in text.split(",") if v.strip()}))
    except ValueError:
        raise BfmError(f"--batches must be comma-separated integers, got {text!r}") from None
    if not batches or batches[0] < 1:
        raise BfmError(f"--batches must be positive integers, got {text!r}")
    if batches[-1] > 4096:
        raise BfmError(f"--batches above 4096 are not supported, got {batches[-1]}")
    return batches


def backend_names(value: str) -> tuple[str, ...]:
    """``--backend``'s backends to time: all of them; ``auto``: TensorRT and ort where a GPU is, else ort; another
    CPU backend with ort beside it (the reference its pipeline is compared with)."""
    if value == "all":
        return BACKENDS
    if value in COMPARED and value != "ort":
        return ("ort", value)
    if value == "auto":
        from ..backends import nvidia_gpu_present

        return ("trt", "ort") if nvidia_gpu_present() else ("ort",)
    return (value,)


def format_latency_table(report: dict[str, Any], networks: Sequence[str] = NETWORKS) -> str:
    rows = [f"{'backend':<7} {'network':<10} {'batch':>5} {'p50 ms':>9} {'p90 ms':>9} {'p99 ms':>9} {'faces/s':>9}"]
    for p in report["sweep"]:
        if p["network"] in networks:
            rows.append(f"{p['backend']:<7} {p['network']:<10} {p['batch']:>5} {p['p50_ms']:>9.2f} {p['p90_ms']:>9.2f} "
                        f"{p['p99_ms']:>9.2f} {p['faces_per_s']:>9.1f}")
    for name, info in report["backends"].items():
        if not info["available"]:
            rows.append(f"{name}: not measured ({info['reason']})")
        for network, why in info.get("stopped", {}).items():
            rows.append(f"{name}/{network}: {why}")
    pipe = report["pipeline"]
    for key in ("aligned", "raw"):
        if key in pipe:
            s = pipe[key]
            split = ", ".join(f"{k} {v:.2f}" for k, v in s["ms_per_pair"].items() if v >= 0.005)
            rows.append(f"\npipeline, {s['input']}: {s['faces_per_s']:.1f} faces/s over {s['pairs']} pairs; "
                        f"batch p50/p90/p99 {s['batch_latency_ms']['p50']:.0f}/{s['batch_latency_ms']['p90']:.0f}/"
                        f"{s['batch_latency_ms']['p99']:.0f} ms")
            rows.append(f"  ms per pair: {split}")
    if "raw_comparison" in pipe:
        c = pipe["raw_comparison"]
        fps = c["faces_per_s"]
        rows.append(f"\nraw photos ({c['photos']}), faces/s: runtime ({c['runtime_detector']}) {fps['runtime']:.1f}, "
                    f"runtime with mtcnn {fps['mtcnn']:.1f}, reference SCRFD-640 + E_F {fps['reference']:.1f}; "
                    f"runtime/no-fallback {c['runtime_over_no_fallback']:.2f}, "
                    f"runtime/mtcnn {c['runtime_over_mtcnn']:.2f}, runtime/reference {c['runtime_over_reference']:.2f}")
    first = pipe["prevalence"][0]
    rows.append(f"\nmask prevalence (aligned crops in memory, {first['faces']} faces, batch {first['batch_size']}): "
                "routed / E_F alone")
    for row in pipe["prevalence"]:
        rows.append(f"  {row['masked_pairs']:>4.0%} masked pairs -> routed partial {row['routes']['partial_fraction']:.0%}: "
                    f"{row['routed_faces_per_s']:.1f} vs {row['extractor_alone_faces_per_s']:.1f} faces/s, "
                    f"ratio {row['ratio']:.3f}")
    eff = report["efficiency"]
    rows.append(f"\nrouting_overhead {report['routing_overhead']:.3f} (target >= {OVERHEAD_TARGET}); "
                f"compute_efficiency {report['compute_efficiency']:.3f} = {eff['extractor_gflops']:.1f} GFLOP/s E_F / "
                f"{eff['matmul_gflops']:.1f} GFLOP/s matmul")
    if report.get("backend_comparison"):
        rows.append("\nthe pipeline on each CPU backend, beside ort (medians over rounds, backends taking turns):")
        rows.append(format_comparison(report["backend_comparison"]))
    m = report["machine"]
    rows.append(f"machine: {m['cpu_model']}, {m['logical_cpus']} CPUs, onnxruntime {m['onnxruntime']}, "
                f"load {m['load_average_start']} -> {m['load_average_end']}")
    return "\n".join(rows)

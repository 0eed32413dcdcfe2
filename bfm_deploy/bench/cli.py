"""``bfm-bench``: measure the paper's cost claim (``--flops``) and the runtime's latency (``--latency``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import click

from ..cli_options import (backend_option, bfm_command, bundle_option, data_dir_option, detector_option, emit_json,
                           json_option, note, plot_option, quiet_option)
from ..cli_support import one_line_errors
from ..errors import BfmError
from ..registry import Registry
from . import latency
from .pipeline import PipelineConfig
from .sweep import QUICK, TimingConfig

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class BenchRequest:
    """Every bfm-bench flag but the mode's: each mode reads the ones it documents."""

    sizes: str | None
    queries: int | None
    concurrency: str | None
    requests: int | None
    backbone: str
    bundle: Path
    backend: str
    batches: str | None
    runs: int | None
    pairs: int | None
    raw_pairs: int | None
    masked_dir: Path | None
    data_dir: Path
    threads: int
    quick: bool
    json_out: str | None
    plot_path: Path | None
    detector: str


@dataclass(frozen=True)
class BenchMode:
    """What ``bfm-bench --NAME`` measures: its flag's help and how it runs."""

    help: str
    run: Callable[[BenchRequest], None]


MODES: Registry[BenchMode] = Registry("bench mode")


def _mode(name: str, help: str) -> Callable[[Callable[[BenchRequest], None]], Callable[[BenchRequest], None]]:
    def register(run: Callable[[BenchRequest], None]) -> Callable[[BenchRequest], None]:
        MODES.register(name, BenchMode(help, run))
        return run

    return register


def _flag(name: str) -> str:
    return f"--{name}"


def _param(name: str) -> str:
    return f"mode_{name.replace('-', '_')}"  # apart from every other flag's parameter


def _mode_flags(func: F) -> F:
    """One ``--NAME`` flag per registered mode, in registration order."""
    for name in reversed(MODES.names()):  # click lists the last-applied option first
        func = click.option(_flag(name), _param(name), is_flag=True, help=MODES.get(name).help)(func)
    return func


def _choose_mode_message() -> str:
    flags = [_flag(name) for name in MODES]
    return f"choose what to measure: {', '.join(flags[:-1])} or {flags[-1]} (one of them)"


@_mode("flops", "Parameters, MACs and FLOPs of C, E_F, E_P vs the paper.")
def _flops(request: BenchRequest) -> None:
    if request.plot_path is not None:
        raise BfmError("--plot applies to --latency only")
    from .flops import flops_report, format_flops_table

    report = flops_report(request.backbone)
    click.echo(format_flops_table(report), err=request.json_out == "-")
    emit_json(request.json_out, report)


@_mode("latency", "Latency and throughput of a bundle.")
def _latency(request: BenchRequest) -> None:
    quick = request.quick
    timing: TimingConfig = QUICK if quick else TimingConfig()
    if request.runs is not None:
        timing = replace(timing, runs=request.runs)
    pipeline = PipelineConfig(
        pairs=request.pairs if request.pairs is not None else (8 if quick else 300),
        raw_pairs=request.raw_pairs if request.raw_pairs is not None else (4 if quick else 40),
        runs=timing.runs,
        masked_dir=request.masked_dir,
        detector=request.detector,
    )
    options = latency.LatencyOptions(
        bundle=request.bundle,
        data_dir=request.data_dir,
        backends=latency.backend_names(request.backend),
        batches=latency.parse_batches(request.batches) if request.batches else (
            latency.QUICK_BATCHES if quick else latency.DEFAULT_BATCHES),
        timing=timing,
        pipeline=pipeline,
        threads=request.threads,
        quick=quick,
    )
    report = latency.run_latency(options)
    click.echo(latency.format_latency_table(report), err=request.json_out == "-")
    emit_json(request.json_out, report)
    if request.plot_path is not None:
        from .plot import plot_sweep

        m = report["machine"]
        plot_sweep(report["sweep"], request.plot_path,
                   f"bundle {report['bundle']['name']} on {m['cpu_model']} ({m['logical_cpus']} CPUs), "
                   f"onnxruntime {m['onnxruntime']}, load {m['load_average_start']}")
        note(f"wrote {request.plot_path}")


@_mode("serve", "bfm-serve under load, batched and batch-1, beside offline verify_many.")
def _serve(request: BenchRequest) -> None:
    from .serve_load import LEVELS, ServeLoadOptions, format_serve_table, plot_serve, run_serve_load

    quick, concurrency = request.quick, request.concurrency
    try:
        levels = tuple(int(v) for v in concurrency.split(",")) if concurrency else ((1, 4) if quick else LEVELS)
    except ValueError:
        raise BfmError(f"--concurrency must be comma-separated counts, got {concurrency!r}") from None
    if not levels or min(levels) < 1 or max(levels) > 256:
        raise BfmError("--concurrency counts must be in 1..256")
    options = ServeLoadOptions(bundle=request.bundle, data_dir=request.data_dir,
                               backend="ort" if request.backend == "auto" else request.backend,
                               levels=levels, requests=request.requests or (32 if quick else 192),
                               seconds=20.0 if quick else 60.0)
    report = run_serve_load(options)
    click.echo(format_serve_table(report), err=request.json_out == "-")
    emit_json(request.json_out, report)
    if request.plot_path is not None:
        plot_serve(report, request.plot_path)
        note(f"wrote {request.plot_path}")


@_mode("gallery-scale", "The gallery at scale: enrol and search time, memory per template, IVF recall vs exact "
       "(synthetic templates).")
def _gallery(request: BenchRequest) -> None:
    from .gallery_scale import GalleryBenchOptions, format_gallery_table, plot_gallery, run_gallery_bench

    quick, sizes = request.quick, request.sizes
    try:
        counts = tuple(int(v) for v in sizes.split(",")) if sizes else ((2000, 20000) if quick else (10_000, 100_000, 1_000_000))
    except ValueError:
        raise BfmError(f"--sizes must be comma-separated template counts, got {sizes!r}") from None
    if not counts or min(counts) < 100 or max(counts) > 10_000_000:
        raise BfmError("--sizes counts must be in 100..10000000")
    report = run_gallery_bench(GalleryBenchOptions(bundle=request.bundle, sizes=counts,
                                                   queries=request.queries or (50 if quick else 300),
                                                   single_enrolments=20 if quick else 100))
    click.echo(format_gallery_table(report), err=request.json_out == "-")
    emit_json(request.json_out, report)
    if request.plot_path is not None:
        plot_gallery(report, request.plot_path)
        note(f"wrote {request.plot_path}")


@bfm_command()
@_mode_flags
@click.option("--sizes", default=None, help="--gallery-scale: gallery sizes in templates, e.g. 10000,100000,1000000 (the default; --quick: 2000,20000).")
@click.option("--queries", type=click.IntRange(10, 100000), default=None,
              help="--gallery-scale: probes per size (default 300, a third of it at 1M; --quick 50).")
@click.option("--concurrency", default=None, help="--serve: client counts, e.g. 1,4,16,64 (the default; --quick: 1,4).")
@click.option("--requests", type=click.IntRange(8, 100000), default=None,
              help="--serve: requests per level and server (default 192, --quick 32; at least 8 a client), each level at most 60 s.")
@click.option("--backbone", default="r50", show_default=True, help="--flops: extractor architecture (r18, r34, r50, r100, mbf).")
@bundle_option
@backend_option(extra=("all",), help="--latency: backends to time (auto: trt and ort where a GPU is, else ort; all: every one).")
@click.option("--batches", default=None, help="--latency: batch sizes, e.g. 1,2,4,8,16,32,64,128,256 (the default; "
              "--quick: 1,4,16).")
@click.option("--runs", type=click.IntRange(1, 100), default=None, help="Repeated runs per figure (default 5, --quick 3).")
@click.option("--pair-count", "pairs", type=click.IntRange(1, 6000), default=None,
              help="How many aligned LFW pairs the pipeline runs (default 300, --quick 8).")
@click.option("--raw-pair-count", "raw_pairs", type=click.IntRange(0, 600), default=None,
              help="How many raw-photo LFW pairs (with detection) it runs (default 40, --quick 4; 0 skips).")
@click.option("--masked-dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Aligned 112x112 masked crops for the mask-prevalence sweep (default: MFR2's masked photos).")
@data_dir_option
@click.option("--threads", type=click.IntRange(0, 256), default=0, show_default=True,
              help="onnxruntime intra-op threads (0: one per physical core).")
@click.option("--quick", is_flag=True, help="Fewer batches, pairs and repeats: the same report in about a minute.")
@json_option
@plot_option(help="--latency: latency and throughput against batch size (PNG).")
@detector_option
@quiet_option
@one_line_errors
def main(sizes: str | None, queries: int | None, concurrency: str | None, requests: int | None, backbone: str,
         bundle: Path, backend: str, batches: str | None, runs: int | None, pairs: int | None, raw_pairs: int | None,
         masked_dir: Path | None, data_dir: Path, threads: int, quick: bool, json_out: str | None,
         plot_path: Path | None, detector: str, **modes: bool) -> None:
    """Measure the cost claim of the paper (--flops) or the latency of a bundle (--latency).

    \b
    bfm-bench --flops --backbone r50 --json-out flops_r50.json
    bfm-bench --latency --bundle engines/demo --quick --json-out latency.json --plot latency.png
    bfm-bench --serve --json-out serve.json --plot serve.png
    bfm-bench --gallery-scale --json-out gallery.json --plot gallery.png
    """
    chosen = [name for name in MODES if modes[_param(name)]]
    if len(chosen) != 1:
        raise BfmError(_choose_mode_message())
    MODES.get(chosen[0]).run(BenchRequest(
        sizes=sizes, queries=queries, concurrency=concurrency, requests=requests, backbone=backbone, bundle=bundle,
        backend=backend, batches=batches, runs=runs, pairs=pairs, raw_pairs=raw_pairs, masked_dir=masked_dir,
        data_dir=data_dir, threads=threads, quick=quick, json_out=json_out, plot_path=plot_path, detector=detector))

"""``bfm-bench``: measure the paper's cost claim (``--flops``) and the runtime's latency (``--latency``)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import click

from ..cli_options import (backend_option, bfm_command, bundle_option, data_dir_option, detector_option, emit_json,
                           json_option, note, plot_option, quiet_option)
from ..cli_support import one_line_errors
from ..errors import BfmError
from . import latency
from .pipeline import PipelineConfig
from .sweep import QUICK, TimingConfig


@bfm_command()
@click.option("--flops", is_flag=True, help="Parameters, MACs and FLOPs of C, E_F, E_P vs the paper.")
@click.option("--latency", "latency_mode", is_flag=True, help="Latency and throughput of a bundle.")
@click.option("--serve", "serve_mode", is_flag=True, help="bfm-serve under load, batched and batch-1, beside offline verify_many.")
@click.option("--gallery-scale", "gallery_mode", is_flag=True,
              help="The gallery at scale: enrol and search time, memory per template, IVF recall vs exact (synthetic templates).")
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
def main(flops: bool, latency_mode: bool, serve_mode: bool, gallery_mode: bool, sizes: str | None,
         queries: int | None, concurrency: str | None, requests: int | None, backbone: str, bundle: Path, backend: str, batches: str | None, runs: int | None,
         pairs: int | None, raw_pairs: int | None, masked_dir: Path | None, data_dir: Path, threads: int,
         quick: bool, json_out: str | None, plot_path: Path | None, detector: str) -> None:
    """Measure the cost claim of the paper (--flops) or the latency of a bundle (--latency).

    \b
    bfm-bench --flops --backbone r50 --json-out flops_r50.json
    bfm-bench --latency --bundle engines/demo --quick --json-out latency.json --plot latency.png
    bfm-bench --serve --json-out serve.json --plot serve.png
    bfm-bench --gallery-scale --json-out gallery.json --plot gallery.png
    """
    if flops + latency_mode + serve_mode + gallery_mode != 1:
        raise BfmError("choose what to measure: --flops, --latency, --serve or --gallery-scale (one of them)")
    if gallery_mode:
        _gallery(bundle, sizes, queries, quick, json_out, plot_path)
        return
    if serve_mode:
        _serve(bundle, data_dir, backend, concurrency, requests, quick, json_out, plot_path)
        return
    if flops:
        if plot_path is not None:
            raise BfmError("--plot applies to --latency only")
        from .flops import flops_report, format_flops_table

        report = flops_report(backbone)
        click.echo(format_flops_table(report), err=json_out == "-")
        emit_json(json_out, report)
        return

    timing: TimingConfig = QUICK if quick else TimingConfig()
    if runs is not None:
        timing = replace(timing, runs=runs)
    pipeline = PipelineConfig(
        pairs=pairs if pairs is not None else (8 if quick else 300),
        raw_pairs=raw_pairs if raw_pairs is not None else (4 if quick else 40),
        runs=timing.runs,
        masked_dir=masked_dir,
        detector=detector,
    )
    options = latency.LatencyOptions(
        bundle=bundle,
        data_dir=data_dir,
        backends=latency.backend_names(backend),
        batches=latency.parse_batches(batches) if batches else (latency.QUICK_BATCHES if quick else latency.DEFAULT_BATCHES),
        timing=timing,
        pipeline=pipeline,
        threads=threads,
        quick=quick,
    )
    report = latency.run_latency(options)
    click.echo(latency.format_latency_table(report), err=json_out == "-")
    emit_json(json_out, report)
    if plot_path is not None:
        from .plot import plot_sweep

        m = report["machine"]
        plot_sweep(report["sweep"], plot_path,
                   f"bundle {report['bundle']['name']} on {m['cpu_model']} ({m['logical_cpus']} CPUs), "
                   f"onnxruntime {m['onnxruntime']}, load {m['load_average_start']}")
        note(f"wrote {plot_path}")


def _gallery(bundle: Path, sizes: str | None, queries: int | None, quick: bool, json_out: str | None,
             plot_path: Path | None) -> None:
    from .gallery_scale import GalleryBenchOptions, format_gallery_table, plot_gallery, run_gallery_bench

    try:
        counts = tuple(int(v) for v in sizes.split(",")) if sizes else ((2000, 20000) if quick else (10_000, 100_000, 1_000_000))
    except ValueError:
        raise BfmError(f"--sizes must be comma-separated template counts, got {sizes!r}") from None
    if not counts or min(counts) < 100 or max(counts) > 10_000_000:
        raise BfmError("--sizes counts must be in 100..10000000")
    report = run_gallery_bench(GalleryBenchOptions(bundle=bundle, sizes=counts, queries=queries or (50 if quick else 300),
                                                   single_enrolments=20 if quick else 100))
    click.echo(format_gallery_table(report), err=json_out == "-")
    emit_json(json_out, report)
    if plot_path is not None:
        plot_gallery(report, plot_path)
        note(f"wrote {plot_path}")


def _serve(bundle: Path, data_dir: Path, backend: str, concurrency: str | None, requests: int | None, quick: bool,
           json_out: str | None, plot_path: Path | None) -> None:
    from .serve_load import LEVELS, ServeLoadOptions, format_serve_table, plot_serve, run_serve_load

    try:
        levels = tuple(int(v) for v in concurrency.split(",")) if concurrency else ((1, 4) if quick else LEVELS)
    except ValueError:
        raise BfmError(f"--concurrency must be comma-separated counts, got {concurrency!r}") from None
    if not levels or min(levels) < 1 or max(levels) > 256:
        raise BfmError("--concurrency counts must be in 1..256")
    options = ServeLoadOptions(bundle=bundle, data_dir=data_dir, backend="ort" if backend == "auto" else backend,
                               levels=levels, requests=requests or (32 if quick else 192),
                               seconds=20.0 if quick else 60.0)
    report = run_serve_load(options)
    click.echo(format_serve_table(report), err=json_out == "-")
    emit_json(json_out, report)
    if plot_path is not None:
        plot_serve(report, plot_path)
        note(f"wrote {plot_path}")

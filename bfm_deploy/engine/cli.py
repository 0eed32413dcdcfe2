"""``bfm-build-engine``: FP16 TensorRT engines for a model bundle."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..bundle import Bundle, default_bundle
from ..cli_options import bfm_command, quiet_option
from ..cli_support import one_line_errors
from .availability import require_tensorrt
from .spec import ENGINE_MANIFEST, BatchProfile, BuildOptions


@bfm_command()
@click.argument("bundle", required=False, type=click.Path(file_okay=False, path_type=Path))
@click.option("--min-batch", default=1, show_default=True, help="Smallest batch the engines accept.")
@click.option("--opt-batch", default=32, show_default=True, help="Batch TensorRT tunes the kernels for.")
@click.option("--max-batch", default=256, show_default=True, help="Largest batch the engines accept.")
@click.option("--workspace-gb", default=4.0, show_default=True, help="TensorRT workspace memory pool limit (GiB).")
@click.option(
    "--timing-cache",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Timing cache file, read before and updated after the builds "
    "[default: ~/.cache/bfm/timing-trt-<version>-sm<cc>.cache].",
)
@click.option("--device", default=0, show_default=True, help="CUDA device index to build for.")
@click.option("--overwrite", is_flag=True, help="Replace engines already built for this TensorRT and GPU.")
@click.option("--verbose", is_flag=True, help="Show TensorRT's INFO log.")
@quiet_option
@one_line_errors
def main(
    bundle: Path | None,
    min_batch: int,
    opt_batch: int,
    max_batch: int,
    workspace_gb: float,
    timing_cache: Path | None,
    device: int,
    overwrite: bool,
    verbose: bool,
) -> None:
    """Build one FP16 TensorRT engine per network (classifier, full, partial) of BUNDLE (default: $BFM_BUNDLE,
    else the demo bundle, as --bundle everywhere).

    Engines go to BUNDLE/trt-<TensorRT version>-sm<compute capability>/ with engine_manifest.json (TensorRT
    version, GPU, precision, batch profile, sha256 of each source ONNX and engine), written atomically;
    prints that folder and manifest as JSON. Needs TensorRT >= 10 and a CUDA GPU.
    """
    bundle = bundle if bundle is not None else Path(default_bundle())  # as --bundle defaults everywhere
    Bundle.load(bundle)  # a wrong path or a broken bundle is the first thing to hear about, GPU or not
    require_tensorrt()
    options = BuildOptions(
        profile=BatchProfile(min_batch, opt_batch, max_batch),
        workspace_gb=workspace_gb,
        timing_cache=timing_cache,
        overwrite=overwrite,
    )
    from .build import build_engines  # imports tensorrt: only after require_tensorrt() succeeded

    target = build_engines(bundle, options, device=device, verbose=verbose)
    manifest = json.loads((target / ENGINE_MANIFEST).read_text(encoding="utf-8"))
    click.echo(json.dumps({"engine_dir": str(target), "manifest": manifest}, indent=2))

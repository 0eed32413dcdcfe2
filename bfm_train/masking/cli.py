"""``bfm-mask``: turn an identity-folder face data set into its synthetically masked twin."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from bfm_deploy.cli_options import bfm_command, quiet_option
from bfm_deploy.progress import quiet
from bfm_deploy.cli_support import one_line_errors
from bfm_deploy.errors import BfmError

from .dataset import REPORT_NAME, RunConfig, list_images, run
from .masker import MaskConfig
from .preview import check_preview_path, write_preview
from .shapes import DRAWN_TYPES


def _types(value: str) -> tuple[str, ...]:
    types = tuple(t.strip().lower() for t in value.split(",") if t.strip())
    if not types:
        raise BfmError("--types needs at least one mask type")
    return types


@bfm_command()
@click.argument("src", type=click.Path(file_okay=False, path_type=Path))
@click.argument("dst", type=click.Path(file_okay=False, path_type=Path))
@click.option("--types", default=",".join(DRAWN_TYPES), show_default=True,
              help="Comma-separated mask types, one picked per image; with --templates also the template "
              "folder's types (e.g. gas).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Global seed; each image's seed also depends on its relative path.")
@click.option("--workers", type=click.IntRange(1, 64), default=min(4, os.cpu_count() or 1), show_default=True,
              help="Worker processes.")
@click.option("--aligned/--raw", default=None,
              help="Images are ArcFace-aligned crops (known face box) / raw photos (HOG face detection). "
              "Default: 112x112 images are aligned crops, others raw.")
@click.option("--templates", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="MaskTheFace-format template folder (masks.cfg + RGBA PNGs).")
@click.option("--template-share", type=click.FloatRange(0.0, 1.0), default=0.5, show_default=True,
              help="With --templates: share of masks taken from templates rather than drawn.")
@click.option("--straps/--no-straps", default=True, show_default=True, help="Draw ear loops / head straps.")
@click.option("--fabrics", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Folder of printed-fabric images (e.g. masktheface/textures) for patterned cloth masks, tiled "
              "without seams.")
@click.option("--fabric-share", type=click.FloatRange(0.0, 1.0), default=0.5, show_default=True,
              help="With --fabrics: share of drawn cloth masks printed with a fabric.")
@click.option("--print-share", type=click.FloatRange(0.0, 1.0), default=0.0, show_default=True,
              help="Share of drawn cloth masks (not printed with --fabrics) given a randomly generated print.")
@click.option("--low-share", type=click.FloatRange(0.0, 1.0), default=0.0, show_default=True,
              help="Share of drawn masks worn low, under the nose.")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="Mask only the first N images (sorted): a quick look at the settings; rerun without it to go on.")
@click.option("--preview", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write a contact sheet (originals next to masked) to this .png/.jpg.")
@click.option("--preview-count", type=click.IntRange(1, 400), default=16, show_default=True,
              help="Image pairs on the contact sheet.")
@quiet_option
@one_line_errors
def main(
    src: Path,
    dst: Path,
    types: str,
    seed: int,
    workers: int,
    aligned: bool | None,
    templates: Path | None,
    template_share: float,
    straps: bool,
    fabrics: Path | None,
    fabric_share: float,
    print_share: float,
    low_share: float,
    limit: int | None,
    preview: Path | None,
    preview_count: int,
) -> None:
    """Mask every face in SRC/<identity>/*.jpg|png into DST/<identity>/ (same names and formats).

    Resumable: outputs that exist are skipped. Writes DST/mask_report.json (counts per type, images without
    a face, errors) and prints a JSON summary.

    Example: bfm-mask data/lfw/aligned112 data/lfw/masked112 --seed 0 --workers 2 --preview masked.png
    """
    if preview is not None:
        check_preview_path(preview)
    mask = MaskConfig(types=_types(types), seed=seed, template_dir=templates, template_share=template_share,
                      straps=straps, fabric_dir=fabrics, fabric_share=fabric_share, print_share=print_share,
                      low_share=low_share)
    cfg = RunConfig(src=src, dst=dst, mask=mask, aligned=aligned, workers=workers, limit=limit, progress=not quiet())
    report = run(cfg)
    summary = {k: v for k, v in report.items() if k != "images"}
    summary["report"] = str(dst / REPORT_NAME)
    if preview is not None:
        shown = write_preview(src, dst, list_images(src), report["images"], preview, preview_count)
        summary["preview"] = {"path": str(preview), "pairs": shown}
    click.echo(json.dumps(summary))
    if report["errors"]:  # a run that masked less than it was given must not look like a success
        first = report["errors"][0]
        raise BfmError(f"{len(report['errors'])} of {report['total_images']} images could not be masked (first: "
                       f"{first['path']}: {first['error']}); the others are done, see {dst / REPORT_NAME}")

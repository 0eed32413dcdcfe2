"""``bfm-real-masks SOURCE OUT``: real photos with and without masks, detected and aligned as the runtime does."""

from __future__ import annotations

from pathlib import Path

import click

from .cli_options import backend_option, bfm_command, bundle_option, detector_option, emit_json, json_option, note, quiet_option
from .cli_support import one_line_errors


@bfm_command()
@click.argument("source", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--overwrite", is_flag=True, help="Replace OUT when it exists (it is swapped in only when complete).")
@bundle_option
@backend_option()
@detector_option
@json_option
@quiet_option
@one_line_errors
def main(source: Path, out: Path, overwrite: bool, bundle: Path, backend: str, detector: str,
         json_out: str | None) -> None:
    """Build OUT/{train,val,test}/{with_mask,without_mask}/*.png from SOURCE, a copy of
    chandrikadeb7/Face-Mask-Detection (a checkout or its bare git directory), with OUT/split.tsv and
    OUT/report.json. The split follows each file's bytes (sha256), so it is the same on every machine."""
    from .backends import create_backend
    from .bundle import Bundle
    from .detect import open_aligner
    from .errors import BfmError
    from .real_masks import build

    if out.exists() and not overwrite:
        raise BfmError(f"{out} exists; pass --overwrite to rebuild it")
    loaded = Bundle.load(bundle)
    with open_aligner(detector, loaded, create_backend(backend, loaded)) as aligner:
        report = build(source, out, aligner, overwrite=overwrite)
    for split, labels in report["counts"].items():
        parts = [f"{label} {c['faces']}/{c['photos']}" for label, c in labels.items()]
        note(f"{split}: faces found in " + ", ".join(parts))
    note(f"found by: {', '.join(f'{k} {v}' for k, v in report['found_by'].items())}; wrote {out}")
    emit_json(json_out, report)

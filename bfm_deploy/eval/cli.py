"""``bfm-eval``: verification accuracy with 10-fold cross-validated thresholds, per case, as in the paper."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import click

from ..cli_options import (backend_option, method_bundle_option, bfm_command, data_dir_option, fpir_option, open_set_report_option, detector_option, emit_json,
                           json_option, note, plot_option, quiet_option)
from ..cli_support import one_line_errors
from ..errors import BfmError
from .api import DEFAULT_SEED, PROTOCOLS, EvalOptions, Kind, run_eval, run_identification, run_landmarks
from .identification import table as identification_table
from .identification import write_det_plot
from .report import table, write_plot


HELP_TEMPLATE = """Verification accuracy of bundles on LFW, masked LFW, MFR2 or a generic pairs file.

\b
Protocol (the paper's, as insightface's verification.py): pairs are cut into
folds (LFW's own 10; otherwise 10 contiguous blocks), each fold is scored with
the accuracy-maximising threshold of the other folds, and the mean and
standard deviation of the fold accuracies are reported. A routed bundle is
scored on its routed scores pooled over both routes (one threshold per fold,
not the bundle's per-route thresholds; accuracy at those is shown too).
Also: EER, TAR at FAR 1e-3, accuracy per matching case (1 both unmasked,
2 one masked, 3 both masked) and the classifier's mask accuracy. All rates
are percentages.

\b
Data sets (--data-dir holds lfw/ and mfr2/ as in the shared data):
{datasets}

\b
Methods: --bundle SPEC and/or --compare NAME=SPEC (repeatable), where
  SPEC := BUNDLE_DIR[:routed|:full|:partial]
BUNDLE_DIR alone (or :routed) is the paper's system: the classifier routes
each pair to the full extractor (both unmasked) or the partial one. :full or
:partial uses that one extractor for every pair, no classifier (a baseline).
JSON result names: the method name ('bundle' for --bundle); for masked-lfw
'masked-lfw/case3' with --bundle alone, else 'masked-lfw/case3/NAME'.

\b
Example:
  bfm-eval --dataset lfw --bundle engines/demo --folds 6-10 --json-out lfw.json
  bfm-eval --dataset mfr2 --compare "Baseline 1=engines/b1:full" \\
      "Baseline 2=engines/b2:full" "ours=engines/demo" --plot mfr2.png
"""


def _datasets_help() -> str:
    """The "Data sets" lines of --help, one entry per registered protocol (a long name on a line of its own)."""
    indent = " " * 14
    entries = []
    for name in PROTOCOLS:
        head = f"  {name:<10}  " if len(name) <= 10 else f"  {name}\n{indent}"
        body = textwrap.fill(PROTOCOLS.get(name).help, width=78, initial_indent=indent, subsequent_indent=indent,
                             break_on_hyphens=False)
        entries.append(head + body[len(indent):])
    return "\n".join(entries)


HELP = HELP_TEMPLATE.replace("{datasets}", _datasets_help())


@bfm_command(help=HELP)
@click.option("--dataset", "dataset", metavar="|".join(PROTOCOLS), help="Which protocol to run.")
@data_dir_option
@click.option("--pairs-file", type=click.Path(path_type=Path), default=None,
              help="pairs: the pairs file (default DATA_DIR/pairs.txt).")
@click.option("--detect", is_flag=True,
              help="pairs: detect and align faces (loose crops) instead of reading aligned crops.")
@method_bundle_option
@click.option("--compare", "compare", metavar="NAME=SPEC", multiple=True,
              help="Methods for a side-by-side table: repeat the flag, or list more NAME=SPEC after it.")
@click.option("--folds", "folds", metavar="SPEC", default=None,
              help="Evaluate only these 1-based folds, e.g. 6-10 or 1,3,5-7 (cross-validated among themselves).")
@click.option("--pairs-per-fold", type=int, default=None, metavar="N",
              help="Quick run: keep the first N/2 same and N/2 different pairs of each fold.")
@backend_option()
@click.option("--batch-size", type=int, default=64, show_default=True)
@detector_option
@click.option("--photos", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="landmarks: folder of <identity>/<photo> raw photos (default DATA_DIR/lfw/raw-fold1).")
@click.option("--seed", type=int, default=DEFAULT_SEED, show_default=True, help="masked-lfw: masking seed.")
@click.option("--mask-templates/--no-mask-templates", default=True, show_default=True,
              help="masked-lfw: mix in MaskTheFace templates from DATA_DIR/masktheface when present.")
@click.option("--cache-dir", type=click.Path(path_type=Path), default=None,
              help="masked-lfw: where masked images are kept (default work_dirs/cache/masked-lfw-seed<SEED>).")
@fpir_option
@open_set_report_option
@json_option
@plot_option(help="ROC curves and per-route score histograms (PNG); lfw-identification: DET curves.")
@quiet_option
@click.argument("more_compare", nargs=-1, metavar="[NAME=SPEC]...")
@one_line_errors
def main(dataset: str | None, data_dir: Path, pairs_file: Path | None, detect: bool, bundle: str | None,
         compare: tuple[str, ...], more_compare: tuple[str, ...], folds: str | None, pairs_per_fold: int | None, backend: str, batch_size: int, detector: str,
         photos: Path | None, seed: int, mask_templates: bool, cache_dir: Path | None, fpir: float,
         open_set_report: Path | None, json_out: str | None, plot_path: Path | None) -> None:
    # click options take one value each; the paper-style '--compare A=x B=y C=z' leaves B and C as arguments.
    if more_compare and not compare:
        raise BfmError(f"unexpected argument {more_compare[0]!r} (methods to compare follow --compare)")
    options = EvalOptions(
        dataset=dataset or "", bundle=bundle, compare=compare + more_compare, data_dir=data_dir, pairs_file=pairs_file,
        detect=detect, folds=folds, pairs_per_fold=pairs_per_fold, backend=backend, batch_size=batch_size,
        detector=detector, seed=seed, mask_templates=mask_templates, cache_dir=cache_dir, photos=photos,
    )
    if open_set_report is not None and options.dataset != "lfw-identification":
        raise BfmError("--open-set is for --dataset lfw-identification")
    options.check()
    output = Output(json_out, plot_path, fpir, open_set_report)
    _RUNS[PROTOCOLS.get(options.dataset).kind](options, output)


@dataclass(frozen=True)
class Output:
    """Where a run's report goes, and the flags of one kind of protocol."""

    json_out: str | None
    plot_path: Path | None
    fpir: float  # identification: the FPIR its thresholds are set at
    open_set_report: Path | None  # identification: a report to calibrate the open-set thresholds on

    @property
    def to_stdout(self) -> bool:
        return self.json_out == "-"  # the JSON is the output then: the table and notes go to stderr


def _landmarks(options: EvalOptions, output: Output) -> None:
    report = run_landmarks(options)
    click.echo(f"detector {report['detector']} on {report['photos_dir']}: {report['found']} of {report['photos']} "
               f"photos with a face; landmark error median {report['median_px']:.2f} px, p90 {report['p90_px']:.2f} px, "
               f"median {report['median_inter_ocular']:.4f} of the inter-ocular distance; "
               f"{report['median_px_after_mean_offset']:.2f} px after removing the mean offset per point",
               err=output.to_stdout)
    emit_json(output.json_out, report)


def _identification(options: EvalOptions, output: Output) -> None:
    from .identification import open_set_thresholds, read_report

    open_set = open_set_thresholds(read_report(output.open_set_report)) if output.open_set_report is not None else None
    report = run_identification(options, target_fpir=output.fpir, open_set=open_set)
    click.echo(identification_table(report), err=output.to_stdout)
    emit_json(output.json_out, report)
    if output.plot_path is not None:
        write_det_plot(output.plot_path, report)
        note(f"wrote {output.plot_path}")


def _verification(options: EvalOptions, output: Output) -> None:
    run = run_eval(options)
    click.echo(table(run.results), err=output.to_stdout)
    for line in run.notes:
        click.echo(f"note: {line}", err=output.to_stdout)
    emit_json(output.json_out, run.to_json())
    if output.plot_path is not None:
        write_plot(output.plot_path, run.results)
        note(f"wrote {output.plot_path}")
    note(f"{run.pairs} pairs per set, {run.methods} method(s), {run.seconds:.1f} s")


# How each kind of protocol is run and reported (which kind a --dataset is: PROTOCOLS).
_RUNS: dict[Kind, Callable[[EvalOptions, Output], None]] = {
    "verification": _verification, "landmarks": _landmarks, "identification": _identification}

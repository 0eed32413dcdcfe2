"""``bfm-eval``: verification accuracy with 10-fold cross-validated thresholds, per case, as in the paper."""

from __future__ import annotations

import time
from pathlib import Path

import click

from ..bundle import Bundle, default_bundle
from ..cli_options import (BUNDLE_HELP, backend_option, bfm_command, data_dir_option, detector_option, emit_json,
                           json_option, note, plot_option, quiet_option)
from ..cli_support import one_line_errors
from ..errors import BfmError
from . import protocols
from .faces import DetectingLoader
from .folds import parse_fold_spec
from .methods import collect_methods, parse_spec
from .report import table, to_json, write_plot
from .run import ModelFactory, evaluate, load_bundles
from .scoring import FaceModel

DATASETS = ("lfw", "masked-lfw", "mfr2", "pairs", "landmarks")
DEFAULT_SEED = 0

HELP = """Verification accuracy of bundles on LFW, masked LFW, MFR2 or a generic pairs file.

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
  lfw         lfw/pairs.txt on the aligned lfw/aligned112 crops
  masked-lfw  the same pairs masked by bfm_deploy.masking (fixed --seed, keyed
              by image path, cached under --cache-dir), evaluated twice:
              masked-lfw/case3 (both sides masked) and masked-lfw/case2 (one
              side masked, left on even pair indices, right on odd)
  mfr2        mfr2/pairs.txt, faces detected (--detector, default the
              bundle's detector) and aligned, cases from mfr2_labels.txt
  pairs       a file of 'img1 img2 same(0/1) [masked1 masked2]' lines, paths
              relative to it (--pairs-file, default DATA_DIR/pairs.txt);
              aligned 112x112 crops unless --detect
  landmarks   not verification: the --detector's landmark error on raw
              photos against lfw/landmarks5.txt (--photos, default
              DATA_DIR/lfw/raw-fold1; e.g. a copy masked by bfm-mask --raw)

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
  bfm-eval --dataset lfw --bundle engines/demo --folds 6-10 --json lfw.json
  bfm-eval --dataset mfr2 --compare "Baseline 1=engines/b1:full" \\
      "Baseline 2=engines/b2:full" "ours=engines/demo" --plot mfr2.png
"""


def _open_verifier(backend: str, batch_size: int) -> ModelFactory:
    def open_model(bundle: Bundle) -> FaceModel:
        from ..verifier import Verifier  # imports onnxruntime: only once there is something to run

        return Verifier(bundle, backend=backend, batch_size=max(2, batch_size))

    return open_model


@bfm_command(help=HELP)
@click.option("--dataset", "dataset", metavar="|".join(DATASETS), help="Which protocol to run.")
@data_dir_option
@click.option("--pairs-file", type=click.Path(path_type=Path), default=None,
              help="pairs: the pairs file (default DATA_DIR/pairs.txt).")
@click.option("--detect", is_flag=True,
              help="pairs: detect and align faces (loose crops) instead of reading aligned crops.")
@click.option("--bundle", "bundle", metavar="SPEC", default=None,
              help="The bundle to evaluate (a folder, or FOLDER:full / FOLDER:partial for one route), reported as "
                   "'bundle'; without --compare it defaults as everywhere: " + BUNDLE_HELP.split("(default: ")[1].rstrip(").") + ".")
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
@json_option
@plot_option(help="ROC curves and per-route score histograms (PNG).")
@quiet_option
@click.argument("more_compare", nargs=-1, metavar="[NAME=SPEC]...")
@one_line_errors
def main(dataset: str | None, data_dir: Path | None, pairs_file: Path | None, detect: bool, bundle: str | None,
         compare: tuple[str, ...], more_compare: tuple[str, ...], folds: str | None, pairs_per_fold: int | None, backend: str, batch_size: int, detector: str,
         photos: Path | None, seed: int, mask_templates: bool, cache_dir: Path | None, json_out: str | None,
         plot_path: Path | None) -> None:
    started = time.perf_counter()
    if dataset not in DATASETS:
        raise BfmError(f"unknown or missing --dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    if batch_size < 2:
        raise BfmError(f"--batch-size must be at least 2, got {batch_size}")
    if pairs_per_fold is not None and (pairs_per_fold < 2 or pairs_per_fold % 2):
        raise BfmError(f"--pairs-per-fold must be an even number of at least 2, got {pairs_per_fold}")
    if seed < 0:
        raise BfmError(f"--seed must be >= 0, got {seed}")
    # click options take one value each; the paper-style '--compare A=x B=y C=z' leaves B and C as arguments.
    if more_compare and not compare:
        raise BfmError(f"unexpected argument {more_compare[0]!r} (methods to compare follow --compare)")
    if bundle is None and not compare:
        bundle = default_bundle()
    if dataset == "landmarks":
        _landmarks(bundle, detector, data_dir, photos, json_out)
        return
    methods = collect_methods(bundle, compare + more_compare)
    if not data_dir.is_dir() and not (dataset == "pairs" and pairs_file is not None):
        raise BfmError(f"data dir {data_dir} not found (pass --data-dir or set BFM_DATA)")
    base = _base_set(dataset, data_dir, pairs_file, detect, DetectingLoader(detector), folds, pairs_per_fold)
    # Bundles before detection and masking: a broken one should fail before minutes of work.
    bundles = load_bundles(methods, _open_verifier(backend, batch_size), batch_size)
    if isinstance(base.load, DetectingLoader):
        # 'auto' and 'bundle' mean the detector of the first method's bundle: what its users get.
        base.load.bundle = bundles[methods[0].bundle.resolve()].bundle
        base.load.prefetch(base.images)
    evalsets = [base] if dataset != "masked-lfw" else _masked_lfw(base, data_dir, seed, mask_templates, cache_dir)
    results = evaluate(evalsets, methods, bundles)

    pairs = len(evalsets[0].pairs)
    to_stdout = json_out == "-"  # the JSON is the output then: the table and notes go to stderr
    click.echo(table(results), err=to_stdout)
    for line in _notes(evalsets, folds):
        click.echo(f"note: {line}", err=to_stdout)
    emit_json(json_out, to_json(dataset, pairs, results))
    if plot_path is not None:
        write_plot(plot_path, results)
        note(f"wrote {plot_path}")
    note(f"{pairs} pairs per set, {len(methods)} method(s), {time.perf_counter() - started:.1f} s")


def _landmarks(bundle: str | None, detector: str, data_dir: Path, photos: Path | None,
               json_out: str | None) -> None:
    from ..detect import open_detector
    from .landmarks import LandmarkSet, landmark_errors, read_reference

    loaded = Bundle.load(parse_spec("bundle", bundle).bundle) if bundle else None
    opened = open_detector(detector, loaded)
    photos = photos or data_dir / "lfw" / "raw-fold1"
    report = landmark_errors(opened, LandmarkSet(photos, read_reference(data_dir / "lfw" / "landmarks5.txt")))
    report = {"detector": opened.name, "choice": detector, "photos_dir": str(photos), **report}
    summary = (f"detector {opened.name} on {photos}: {report['found']} of {report['photos']} photos with a face; "
               f"landmark error median {report['median_px']:.2f} px, p90 {report['p90_px']:.2f} px, "
               f"median {report['median_inter_ocular']:.4f} of the inter-ocular distance; "
               f"{report['median_px_after_mean_offset']:.2f} px after removing the mean offset per point")
    click.echo(summary, err=json_out == "-")  # with --json on stdout, the JSON alone is the output
    emit_json(json_out, report)


def _base_set(dataset: str, data_dir: Path, pairs_file: Path | None, detect: bool, detecting: DetectingLoader,
              fold_spec: str | None, pairs_per_fold: int | None) -> protocols.EvalSet:
    if dataset in ("lfw", "masked-lfw"):
        base = protocols.lfw(data_dir)
    elif dataset == "mfr2":
        base = protocols.mfr2(data_dir, detecting)
    else:
        loader = detecting if detect else protocols.load_aligned
        base = protocols.generic(pairs_file or data_dir / "pairs.txt", loader)
    if fold_spec is not None:
        base = protocols.select_folds(base, parse_fold_spec(fold_spec, protocols.fold_count(base.pairs)))
    if pairs_per_fold is not None:
        base = protocols.first_pairs_per_fold(base, pairs_per_fold // 2)
    return base


def _masked_lfw(base: protocols.EvalSet, data_dir: Path, seed: int, use_templates: bool,
                cache_dir: Path | None) -> list[protocols.EvalSet]:
    from .masked_lfw import MaskedImageCache, MaskSettings, masked_lfw_sets

    root = cache_dir or Path("work_dirs") / "cache" / f"masked-lfw-seed{seed}"
    templates = data_dir / "masktheface"  # masks.cfg beside templates/, MaskTheFace's layout
    settings = MaskSettings(seed, templates if use_templates and (templates / "masks.cfg").is_file() else None)
    return masked_lfw_sets(base, MaskedImageCache(root, data_dir / "lfw" / "aligned112", settings))


def _notes(evalsets: list[protocols.EvalSet], fold_spec: str | None) -> list[str]:
    notes = [note for evalset in evalsets for note in evalset.notes]
    loader = evalsets[0].load
    if isinstance(loader, DetectingLoader):
        notes += loader.notes()
    different = sum(not p.same for p in evalsets[0].pairs)
    if 0 < different < 1000:
        notes.append(f"{different} different pairs: TAR@FAR=1e-3 is the TAR at zero false accepts")
    if fold_spec is not None:
        notes.append(f"folds {fold_spec} only: each is scored with the threshold chosen on the others")
    notes.append("accuracy: one cross-validated threshold per fold, chosen on the pooled scores of both routes "
                 "(the paper's protocol), not the bundle's per-route thresholds")
    return notes

"""``bfm-eval`` as a Python function: ``run_eval(EvalOptions(dataset="lfw", folds="6-10"))``; the CLI is a thin
layer over it (its flags are these fields), as ``bfm-export`` is over ``export_bundle``."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..bundle import Bundle, default_bundle
from ..datasets import default_data_dir
from ..errors import BfmError
from . import protocols
from .faces import DetectingLoader
from .folds import parse_fold_spec
from .methods import collect_methods, parse_spec
from .report import to_json
from .run import ModelFactory, evaluate, load_bundles
from .scoring import FaceModel

DATASETS = ("lfw", "masked-lfw", "mfr2", "pairs", "landmarks", "lfw-identification")
DEFAULT_SEED = 0


@dataclass
class EvalOptions:
    dataset: str
    bundle: str | None = None  # SPEC (FOLDER or FOLDER:full|partial); default without compare: the default bundle
    compare: tuple[str, ...] = ()  # NAME=SPEC methods for a side-by-side table
    data_dir: Path = field(default_factory=default_data_dir)
    pairs_file: Path | None = None  # dataset pairs (default DATA_DIR/pairs.txt)
    detect: bool = False  # dataset pairs: detect and align loose crops
    folds: str | None = None  # e.g. "6-10"
    pairs_per_fold: int | None = None  # quick run: the first N/2 same and N/2 different pairs of each fold
    backend: str = "auto"
    batch_size: int = 64
    detector: str = "auto"
    seed: int = DEFAULT_SEED  # masked-lfw: masking seed
    mask_templates: bool = True  # masked-lfw: MaskTheFace templates when present
    cache_dir: Path | None = None  # masked-lfw: where masked images are kept
    photos: Path | None = None  # landmarks: <identity>/<photo> raw photos (default DATA_DIR/lfw/raw-fold1)

    def check(self) -> None:
        if self.dataset not in DATASETS:
            raise BfmError(f"unknown or missing --dataset {self.dataset!r}; choose one of {', '.join(DATASETS)}")
        if self.batch_size < 2:
            raise BfmError(f"--batch-size must be at least 2, got {self.batch_size}")
        if self.pairs_per_fold is not None and (self.pairs_per_fold < 2 or self.pairs_per_fold % 2):
            raise BfmError(f"--pairs-per-fold must be an even number of at least 2, got {self.pairs_per_fold}")
        if self.seed < 0:
            raise BfmError(f"--seed must be >= 0, got {self.seed}")


@dataclass
class EvalRun:
    """What one evaluation measured: per set and method, with the notes that qualify the figures."""

    dataset: str
    pairs: int  # per set
    methods: int
    results: list[Any]
    notes: list[str]
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return to_json(self.dataset, self.pairs, self.results)


def run_eval(options: EvalOptions) -> EvalRun:
    """The paper's protocol on ``options.dataset`` (not ``landmarks``: that is ``run_landmarks``)."""
    started = time.perf_counter()
    options.check()
    if options.dataset == "landmarks":
        raise BfmError("dataset landmarks measures a detector: use run_landmarks")
    bundle = options.bundle if options.bundle is not None or options.compare else default_bundle()
    methods = collect_methods(bundle, options.compare)
    data_dir = options.data_dir
    if not data_dir.is_dir() and not (options.dataset == "pairs" and options.pairs_file is not None):
        raise BfmError(f"data dir {data_dir} not found (pass --data-dir or set BFM_DATA)")
    base = _base_set(options.dataset, data_dir, options.pairs_file, options.detect, DetectingLoader(options.detector),
                     options.folds, options.pairs_per_fold)
    # Bundles before detection and masking: a broken one should fail before minutes of work.
    bundles = load_bundles(methods, _open_verifier(options.backend, options.batch_size), options.batch_size)
    if isinstance(base.load, DetectingLoader):
        # 'auto' and 'bundle' mean the detector of the first method's bundle: what its users get.
        base.load.bundle = bundles[methods[0].bundle.resolve()].bundle
        base.load.prefetch(base.images)
    evalsets = [base] if options.dataset != "masked-lfw" else _masked_lfw(
        base, data_dir, options.seed, options.mask_templates, options.cache_dir)
    results = evaluate(evalsets, methods, bundles)
    return EvalRun(options.dataset, len(evalsets[0].pairs), len(methods), results, _notes(evalsets, options.folds),
                   time.perf_counter() - started)


def run_landmarks(options: EvalOptions) -> dict[str, Any]:
    """A detector's landmark error on raw photos against ``lfw/landmarks5.txt`` (``dataset landmarks``)."""
    from ..detect import open_detector
    from .landmarks import LandmarkSet, landmark_errors, read_reference

    options.check()
    bundle = options.bundle if options.bundle is not None or options.compare else default_bundle()
    loaded = Bundle.load(parse_spec("bundle", bundle).bundle) if bundle else None
    opened = open_detector(options.detector, loaded)
    photos = options.photos or options.data_dir / "lfw" / "raw-fold1"
    report = landmark_errors(opened, LandmarkSet(photos, read_reference(options.data_dir / "lfw" / "landmarks5.txt")))
    return {"detector": opened.name, "choice": options.detector, "photos_dir": str(photos), **report}


def _open_verifier(backend: str, batch_size: int) -> ModelFactory:
    def open_model(bundle: Bundle) -> FaceModel:
        from ..verifier import Verifier  # imports onnxruntime: only once there is something to run

        return Verifier(bundle, backend=backend, batch_size=max(2, batch_size))

    return open_model


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
    from .masked_lfw import masked_lfw_sets

    return masked_lfw_sets(base, _mask_cache(data_dir, seed, use_templates, cache_dir))


def _mask_cache(data_dir: Path, seed: int, use_templates: bool, cache_dir: Path | None) -> Any:
    from .masked_lfw import MaskedImageCache, MaskSettings

    root = cache_dir or Path("work_dirs") / "cache" / f"masked-lfw-seed{seed}"
    templates = data_dir / "masktheface"  # masks.cfg beside templates/, MaskTheFace's layout
    settings = MaskSettings(seed, templates if use_templates and (templates / "masks.cfg").is_file() else None)
    return MaskedImageCache(root, data_dir / "lfw" / "aligned112", settings)


def run_identification(options: EvalOptions, max_probes_per_identity: int = 10, target_fpir: float = 0.01,
                       open_set: dict[str, Any] | None = None) -> dict[str, Any]:
    """Open-set identification on LFW (``dataset lfw-identification``; protocol in ``eval.identification``);
    ``open_set``: per-route thresholds calibrated on training folds (``open_set_thresholds``)."""
    from ..verifier import Verifier
    from .identification import evaluate_identification, lfw_identification

    options.check()
    if options.compare:
        raise BfmError("lfw-identification compares its own methods (routed, E_F alone, E_P alone): drop --compare")
    bundle = Bundle.load(parse_spec("bundle", options.bundle or default_bundle()).bundle)
    folds = [f + 1 for f in parse_fold_spec(options.folds or "6-10", 10)]
    protocol = lfw_identification(options.data_dir, folds, max_probes_per_identity)
    images = sorted({p for _, p in protocol.gallery} | {p for _, p in protocol.mated} | set(protocol.non_mated))
    masked = _mask_cache(options.data_dir, options.seed, options.mask_templates, options.cache_dir).ensure(images)
    from ..progress import stage

    stage(f"lfw-identification: {len(images)} faces of folds {options.folds or '6-10'}")
    with Verifier(bundle, backend=options.backend, batch_size=max(2, options.batch_size)) as verifier:
        return evaluate_identification(verifier, protocol, masked, target_fpir, open_set,
                                       cache_dir=(options.cache_dir or Path("work_dirs") / "cache") / "features")


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

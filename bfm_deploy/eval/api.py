"""``bfm-eval`` as a Python function: ``run_eval(EvalOptions(dataset="lfw", folds="6-10"))``; the CLI is a thin
layer over it (its flags are these fields), as ``bfm-export`` is over ``export_bundle``."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..bundle import Bundle, default_bundle
from ..datasets import default_data_dir
from ..errors import BfmError
from ..registry import Registry
from . import protocols
from .faces import DetectingLoader
from .folds import parse_fold_spec
from .methods import collect_methods, parse_spec
from .report import to_json
from .run import ModelFactory, evaluate, load_bundles
from .scoring import FaceModel

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
        if self.dataset not in PROTOCOLS:
            raise BfmError(f"unknown or missing --dataset {self.dataset!r}; choose one of {', '.join(PROTOCOLS)}")
        if self.batch_size < 2:
            raise BfmError(f"--batch-size must be at least 2, got {self.batch_size}")
        if self.pairs_per_fold is not None and (self.pairs_per_fold < 2 or self.pairs_per_fold % 2):
            raise BfmError(f"--pairs-per-fold must be an even number of at least 2, got {self.pairs_per_fold}")
        if self.seed < 0:
            raise BfmError(f"--seed must be >= 0, got {self.seed}")


Kind = Literal["verification", "landmarks", "identification"]
PairsOf = Callable[[EvalOptions, DetectingLoader], protocols.EvalSet]
SetsOf = Callable[[protocols.EvalSet, EvalOptions], list[protocols.EvalSet]]


@dataclass(frozen=True)
class EvalProtocol:
    """A ``--dataset``: what it measures, its ``--help`` text and, for verification, its pairs."""

    kind: Kind  # verification: run_eval; landmarks: run_landmarks; identification: run_identification
    help: str  # bfm-eval --help's description under "Data sets"
    pairs: PairsOf | None = None  # verification: the pairs and how their images are loaded
    sets: SetsOf | None = None  # verification: the sets evaluated from those pairs (None: the pairs themselves)


PROTOCOLS: Registry[EvalProtocol] = Registry("dataset")


def _verification(name: str, help: str, sets: SetsOf | None = None) -> Callable[[PairsOf], PairsOf]:
    def register(pairs: PairsOf) -> PairsOf:
        PROTOCOLS.register(name, EvalProtocol("verification", help, pairs, sets))
        return pairs

    return register


def _data_dir(options: EvalOptions) -> Path:
    if not options.data_dir.is_dir():
        raise BfmError(f"data dir {options.data_dir} not found (pass --data-dir or set BFM_DATA)")
    return options.data_dir


def _masked_lfw_sets(base: protocols.EvalSet, options: EvalOptions) -> list[protocols.EvalSet]:
    from .masked_lfw import masked_lfw_sets

    return masked_lfw_sets(base, _mask_cache(options.data_dir, options.seed, options.mask_templates, options.cache_dir))


@_verification("lfw", "lfw/pairs.txt on the aligned lfw/aligned112 crops")
def _lfw(options: EvalOptions, detecting: DetectingLoader) -> protocols.EvalSet:
    return protocols.lfw(_data_dir(options))


_verification("masked-lfw", "the same pairs masked by bfm_train.masking (fixed --seed, keyed by image path, cached "
              "under --cache-dir), evaluated twice: masked-lfw/case3 (both sides masked) and masked-lfw/case2 (one "
              "side masked, left on even pair indices, right on odd)", sets=_masked_lfw_sets)(_lfw)


@_verification("mfr2", "mfr2/pairs.txt, faces detected (--detector, default the bundle's detector) and aligned, "
               "cases from mfr2_labels.txt")
def _mfr2(options: EvalOptions, detecting: DetectingLoader) -> protocols.EvalSet:
    return protocols.mfr2(_data_dir(options), detecting)


@_verification("pairs", "a file of 'img1 img2 same(0/1) [masked1 masked2]' lines, paths relative to it "
               "(--pairs-file, default DATA_DIR/pairs.txt); aligned 112x112 crops unless --detect")
def _pairs(options: EvalOptions, detecting: DetectingLoader) -> protocols.EvalSet:
    loader = detecting if options.detect else protocols.load_aligned
    return protocols.generic(options.pairs_file or _data_dir(options) / "pairs.txt", loader)


PROTOCOLS.register("landmarks", EvalProtocol(
    "landmarks", "not verification: the --detector's landmark error on raw photos against lfw/landmarks5.txt "
    "(--photos, default DATA_DIR/lfw/raw-fold1; e.g. a copy masked by bfm-mask --raw)"))
PROTOCOLS.register("lfw-identification", EvalProtocol(
    "identification", "not verification: open-set 1:N identification on LFW folds (--folds, default the test "
    "folds 6-10), routed against E_F and E_P alone, unmasked and masked (--fpir, --open-set)"))


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
    protocol = PROTOCOLS.get(options.dataset)
    if protocol.kind == "landmarks":
        raise BfmError("dataset landmarks measures a detector: use run_landmarks")
    if protocol.kind == "identification":
        raise BfmError(f"dataset {options.dataset} is open-set identification: use run_identification")
    bundle = options.bundle if options.bundle is not None or options.compare else default_bundle()
    methods = collect_methods(bundle, options.compare)
    base = verification_pairs(options, DetectingLoader(options.detector))
    # Bundles before detection and masking: a broken one should fail before minutes of work.
    bundles = load_bundles(methods, _open_verifier(options.backend, options.batch_size), options.batch_size)
    if isinstance(base.load, DetectingLoader):
        # 'auto' and 'bundle' mean the detector of the first method's bundle: what its users get.
        base.load.bundle = bundles[methods[0].bundle.resolve()].bundle
        base.load.prefetch(base.images)
    evalsets = [base] if protocol.sets is None else protocol.sets(base, options)
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


def verification_pairs(options: EvalOptions, detecting: DetectingLoader) -> protocols.EvalSet:
    """The pairs of verification protocol ``options.dataset``, cut to ``--folds`` and ``--pairs-per-fold``."""
    pairs = PROTOCOLS.get(options.dataset).pairs
    if pairs is None:
        raise BfmError(f"dataset {options.dataset} is not a verification protocol")
    base = pairs(options, detecting)
    if options.folds is not None:
        base = protocols.select_folds(base, parse_fold_spec(options.folds, protocols.fold_count(base.pairs)))
    if options.pairs_per_fold is not None:
        base = protocols.first_pairs_per_fold(base, options.pairs_per_fold // 2)
    return base


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

"""The routed verification pipeline under the clock: stage split, mask prevalence, routing overhead.

Three measurements, all through the public ``Verifier`` (never a re-implementation of it):

- stage split: ``verify_many`` on LFW pairs read from disk, aligned crops and raw photos, with timers
  wrapped around the public functions it calls (``stages.py``);
- routing overhead: the routed pipeline against the extractor alone on the same faces, both from decoded
  crops in memory, both with the runtime's pre-processing, batch 64, run alternately so that a change in
  the load of this shared machine hits both sides of the ratio;
- mask prevalence: the same ratio with 0%, 25%, 50%, 100% of pairs holding a masked face, reporting the
  route split the classifier actually produced (the masked faces are real crops, the routing is not forced).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..contract import CROP_SIZE
from .. import alignment, images, routing, tensor, verifier
from ..backends.base import Backend
from ..bundle import Bundle
from ..datasets import MASK_FREE_LABEL, read_lfw_pairs, read_mfr2_labels
from ..errors import BfmError
from .stages import StageClock, TimedBackend, patch_everywhere, patch_method
from .stats import median, percentile

STAGES = ("decode", "detector_setup", "decode_align", "detect", "align", "preprocess", "classify", "extract", "compare")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


@dataclass(frozen=True)
class PipelineConfig:
    pairs: int = 300  # aligned LFW pairs (fold 1 has 600)
    raw_pairs: int = 40  # raw-photo pairs: MTCNN on CPU dominates, so fewer
    batch_size: int = 64  # faces per network call, the Verifier's batch_size
    runs: int = 5
    prevalences: tuple[float, ...] = (0.0, 0.25, 0.5, 1.0)
    masked_dir: Path | None = None  # aligned 112x112 masked crops; default: MFR2's masked photos, aligned here
    detector: str = "auto"  # the runtime's detector for raw photos (--detector grammar)

    def __post_init__(self) -> None:
        if self.pairs < 1 or self.raw_pairs < 0 or self.runs < 1:
            raise BfmError(f"invalid pipeline settings: pairs={self.pairs}, raw_pairs={self.raw_pairs}, runs={self.runs}")
        if self.batch_size < 2 or self.batch_size % 2:
            raise BfmError(f"batch size must be an even number >= 2 (pairs go in whole), got {self.batch_size}")
        if any(not 0.0 <= p <= 1.0 for p in self.prevalences):
            raise BfmError(f"mask prevalences must be in [0, 1], got {list(self.prevalences)}")
        if 0.0 not in self.prevalences:
            raise BfmError("mask prevalences must include 0 (the reference for the routing overhead)")


# ---- inputs --------------------------------------------------------------------------------------------


def lfw_pairs(data_dir: Path, folder: str, count: int) -> list[tuple[Path, Path]]:
    """The first ``count`` pairs of LFW ``pairs.txt`` (fold 1 first) with images under ``lfw/<folder>``."""
    pairs_file = data_dir / "lfw" / "pairs.txt"
    root = data_dir / "lfw" / folder
    if not pairs_file.is_file() or not root.is_dir():
        raise BfmError(f"LFW data not found under {data_dir / 'lfw'} (need pairs.txt and {folder}/; set --data-dir)")
    pairs = [(p.left, p.right) for p in read_lfw_pairs(pairs_file, root)[:count]]
    missing = [str(path) for pair in pairs for path in pair if not path.is_file()]
    if missing:
        raise BfmError(f"{len(missing)} LFW images missing, e.g. {missing[0]}")
    return pairs


def masked_crops(bundle: Bundle, data_dir: Path, masked_dir: Path | None, limit: int) -> tuple[list[np.ndarray], str]:
    """Aligned crops of masked faces and a description of where they came from.

    ``--masked-dir`` holds ready 112x112 crops; otherwise MFR2's photos labelled with a mask are detected and
    aligned here (once, untimed), as the runtime would align them.
    """
    if masked_dir is not None:
        files = sorted(p for p in Path(masked_dir).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)[:limit]
        if not files:
            raise BfmError(f"no images in --masked-dir {masked_dir}")
        crops = [images.load_image(p) for p in files]
        wrong = [f for f, c in zip(files, crops) if c.shape[:2] != (CROP_SIZE, CROP_SIZE)]
        if wrong:
            raise BfmError(f"--masked-dir must hold aligned 112x112 crops; {wrong[0]} is not")
        return crops, f"{len(crops)} aligned crops from {masked_dir}"
    labels_file = data_dir / "mfr2" / "mfr2_labels.txt"
    if not labels_file.is_file():
        raise BfmError(f"no masked faces: {labels_file} not found (pass --masked-dir with aligned masked crops)")
    from ..detect import open_aligner

    labelled = read_mfr2_labels(labels_file, data_dir / "mfr2")
    paths = sorted(p for p, label in labelled.items() if label != MASK_FREE_LABEL and p.is_file())[:limit]
    with open_aligner("auto", bundle) as aligner:
        crops = [item.crop for item in aligner.align_many(paths) if not isinstance(item, BfmError)]
        name = aligner.detector.name
    if not crops:
        raise BfmError(f"{name} aligned none of MFR2's masked photos; pass --masked-dir")
    return crops, f"{len(crops)} MFR2 photos labelled with a mask, aligned with {name}"


def mix_pairs(
    pairs: Sequence[tuple[np.ndarray, np.ndarray]], masked: Sequence[np.ndarray], prevalence: float
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``pairs`` with the second face of the first ``round(prevalence * n)`` pairs replaced by masked crops."""
    count = round(prevalence * len(pairs))
    return [(a, masked[i % len(masked)]) if i < count else (a, b) for i, (a, b) in enumerate(pairs)]


def decode_pairs(pairs: Sequence[tuple[Path, Path]]) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(images.load_image(a), images.load_image(b)) for a, b in pairs]


# ---- stage split ---------------------------------------------------------------------------------------


@contextmanager
def instrumented(clock: StageClock) -> Iterator[list[str]]:
    """Timers around the public functions the pipeline calls; yields the hooks that were installed."""
    import bfm_deploy.detect as detect
    from ..detect import face as detect_face
    from ..detect.host import HostDetector

    hooks: list[tuple[Callable[..., Any], str]] = [
        (images.load_image, "decode"),
        (alignment.align_face, "align"),
        (detect.open_detector, "detector_setup"),
        (tensor.preprocess, "preprocess"),
        (routing.mask_probability, "classify"),
        (tensor.l2_normalise, "compare"),
    ]
    installed = []
    with ExitStack() as stack:
        for func, stage in hooks:
            if stack.enter_context(patch_everywhere(func, clock.timed(stage, func))):
                installed.append(f"{func.__module__}.{func.__name__} -> {stage}")
        for cls, method, stage in (
            (detect_face.FaceAligner, "__init__", "detector_setup"),
            (detect_face.FaceAligner, "align_many", "decode_align"),
            (detect.NetworkDetector, "detect_batch", "detect"),
            (HostDetector, "detect_batch", "detect"),
        ):
            stack.enter_context(patch_method(cls, method, clock, stage))
            installed.append(f"{cls.__module__}.{cls.__name__}.{method} -> {stage}")
        installed.append("Backend.infer(classifier) -> classify, Backend.infer/infer_concurrent(full, partial) -> extract")
        yield installed


def _chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def run_verifier(verifier_obj: verifier.Verifier, pairs: Sequence[tuple[Any, Any]], aligned: bool) -> tuple[list[float], list[Any]]:
    """Verify ``pairs`` one Verifier batch at a time; returns the wall time of each batch and the results."""
    seconds, results = [], []
    for chunk in _chunks(pairs, verifier_obj.batch_size // 2):
        start = time.perf_counter()
        results += list(verifier_obj.verify_many(chunk, aligned=aligned, errors="collect"))
        seconds.append(time.perf_counter() - start)
    return seconds, results


def route_split(results: Sequence[Any]) -> dict[str, Any]:
    ok = [r for r in results if isinstance(r, verifier.VerifyResult)]
    cases = Counter(r.case for r in ok)
    return {
        "pairs": len(results),
        "failed": len(results) - len(ok),
        "partial_fraction": (sum(r.route == "partial" for r in ok) / len(ok)) if ok else None,
        "cases": {routing.CASE_NAMES[c]: cases.get(c, 0) for c in sorted(routing.CASE_NAMES)},
    }


def stage_split(
    bundle: Bundle, backend: Backend, pairs: Sequence[tuple[Path, Path]], aligned: bool, config: PipelineConfig,
    progress: Callable[[], None], detector: str = "auto",
) -> dict[str, Any]:
    """Median over runs of per-pair time by stage, plus batch latency percentiles and throughput."""
    clock = StageClock()
    per_run: list[dict[str, float]] = []
    calls: list[dict[str, int]] = []
    batch_seconds: list[list[float]] = []
    walls: list[float] = []
    results: list[Any] = []
    with instrumented(clock) as hooks:
        for _ in range(config.runs + 1):  # the first run is the warm-up
            # a fresh Verifier per run, built inside the hooks: it looks the detector up lazily
            v = verifier.Verifier(bundle, TimedBackend(backend, clock), batch_size=config.batch_size,
                                  detector=detector)
            clock.reset()
            start = time.perf_counter()
            seconds, results = run_verifier(v, pairs, aligned)
            wall = time.perf_counter() - start
            v.close()
            split = {stage: clock.seconds.get(stage, 0.0) for stage in STAGES}
            split["other"] = max(0.0, wall - sum(split.values()))
            per_run.append(split)
            calls.append(dict(clock.calls))
            batch_seconds.append(seconds)
            walls.append(wall)
            progress()
    per_run, batch_seconds, walls, calls = per_run[1:], batch_seconds[1:], walls[1:], calls[1:]
    n = len(pairs)
    ms_per_pair = {stage: 1000.0 * median([run[stage] for run in per_run]) / n for stage in [*STAGES, "other"]}
    wall = median(walls)
    return {
        "input": "aligned 112x112 crops (files)" if aligned else "raw 250x250 photos (files): detect + align",
        "detector": None if aligned else detector,
        "pairs": n,
        "faces": 2 * n,
        "runs": config.runs,
        "faces_per_s": median([2 * n / w for w in walls]),
        "ms_per_pair": ms_per_pair,
        "share": {stage: ms / (1000.0 * wall / n) for stage, ms in ms_per_pair.items()},
        # how often each stage's timers were entered in one run (nested hooks of one stage count each),
        # e.g. detector_setup > 1 would mean the detector is rebuilt during the run
        "timer_entries_per_run": {stage: calls[-1].get(stage, 0) for stage in STAGES},
        "batch_latency_ms": {
            f"p{q}": median([percentile(run, q) * 1000.0 for run in batch_seconds]) for q in (50, 90, 99)
        },
        "routes": route_split(results),
        "hooks": hooks,
    }


# ---- routing overhead and mask prevalence --------------------------------------------------------------


def extractor_alone(backend: Backend, bundle: Bundle, crops: Sequence[np.ndarray], batch_size: int) -> float:
    """Seconds for E_F alone on ``crops`` with the runtime's pre-processing, ``batch_size`` faces per call."""
    start = time.perf_counter()
    for chunk in _chunks(crops, batch_size):
        backend.infer("full", tensor.preprocess(chunk, bundle.input.mean, bundle.input.std))
    return time.perf_counter() - start


def overhead(
    bundle: Bundle, backend: Backend, pairs: Sequence[tuple[np.ndarray, np.ndarray]], config: PipelineConfig,
    progress: Callable[[], None],
) -> dict[str, Any]:
    """Routed faces/s over extractor-alone faces/s on the same faces; the ratio is the median of per-run ratios."""
    v = verifier.Verifier(bundle, backend, batch_size=config.batch_size)
    crops = [face for pair in pairs for face in pair]
    faces = len(crops)
    # warm-up both paths on one batch: sessions allocate their buffers on the first call of a shape
    run_verifier(v, pairs[: config.batch_size // 2], aligned=True)
    extractor_alone(backend, bundle, crops[: config.batch_size], config.batch_size)
    routed_fps: list[float] = []
    alone_fps: list[float] = []
    ratios: list[float] = []
    results: list[Any] = []
    for _ in range(config.runs):
        start = time.perf_counter()
        _, results = run_verifier(v, pairs, aligned=True)
        routed = faces / (time.perf_counter() - start)
        alone = faces / extractor_alone(backend, bundle, crops, config.batch_size)
        routed_fps.append(routed)
        alone_fps.append(alone)
        ratios.append(routed / alone)
        progress()
    v.close()
    return {
        "faces": faces,
        "batch_size": config.batch_size,
        "routed_faces_per_s": median(routed_fps),
        "extractor_alone_faces_per_s": median(alone_fps),
        "ratio": median(ratios),
        "ratio_runs": [round(r, 4) for r in ratios],
        "routes": route_split(results),
    }


# ---- raw photos: the runtime against today's detector and a hand-written peer ---------------------------


def raw_comparison(
    bundle: Bundle, backend: Backend, pairs: Sequence[tuple[Path, Path]], config: PipelineConfig,
    progress: Callable[[], None],
) -> dict[str, Any]:
    """Faces/s on raw photo pairs of three pipelines, run in turn within each run so that a change in the
    machine's load hits all three, and the median of the per-run ratios:

    - ``runtime``: ``Verifier.verify_many`` with ``config.detector`` (by default the bundle's: what users get);
    - ``no_fallback``: the same without the bundle's fallback chain: on photos whose faces the detector finds at
      once the chain must cost nothing (``runtime_over_no_fallback`` near 1);
    - ``mtcnn``: the same with ``--detector mtcnn``, the runtime's detector before the bundle carried one;
    - ``reference``: ``reference.ReferencePipeline`` (SCRFD-500M at 640, alignment, the bundle's E_F),
      which embeds the faces and does not classify or route them.
    """
    from ..detect.scrfd import vectron_model_path
    from .reference import ReferencePipeline

    photos = [p for pair in pairs for p in pair]
    runtime = verifier.Verifier(bundle, backend, batch_size=config.batch_size, detector=config.detector)
    chainless = bundle if bundle.detector is None else replace(bundle, detector=replace(bundle.detector, fallback=()))
    no_fallback = verifier.Verifier(chainless, backend, batch_size=config.batch_size, detector=config.detector)
    today = verifier.Verifier(bundle, backend, batch_size=config.batch_size, detector="mtcnn")
    peer = ReferencePipeline(vectron_model_path(), bundle.path("full"))
    contenders: dict[str, Callable[[], Any]] = {
        "runtime": lambda: run_verifier(runtime, pairs, aligned=False),
        "no_fallback": lambda: run_verifier(no_fallback, pairs, aligned=False),
        "mtcnn": lambda: run_verifier(today, pairs, aligned=False),
        "reference": lambda: peer.embed(photos),
    }
    for run in contenders.values():  # warm-up: sessions size their buffers on the first call of a shape
        run()
    rates: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(config.runs):
        for name, run in contenders.items():
            start = time.perf_counter()
            run()
            rates[name].append(len(photos) / (time.perf_counter() - start))
        progress()
    runtime_name = runtime.detector_name
    chain = runtime.aligner.fallback
    retried = chain.opened if chain is not None else []
    for opened in (runtime, no_fallback, today):
        opened.close()
    ratio = {other: median([a / b for a, b in zip(rates["runtime"], rates[other])])
             for other in ("no_fallback", "mtcnn", "reference")}
    return {
        "photos": len(photos),
        "runs": config.runs,
        "runtime_detector": runtime_name,
        "faces_per_s": {name: median(values) for name, values in rates.items()},
        "faces_per_s_runs": {name: [round(v, 2) for v in values] for name, values in rates.items()},
        "fallback_chain": [str(step) for step in chain.steps] if chain is not None else [],
        "fallback_detectors_opened": retried,  # empty: no photo needed a retry
        "runtime_over_no_fallback": ratio["no_fallback"],
        "runtime_over_mtcnn": ratio["mtcnn"],
        "runtime_over_reference": ratio["reference"],
        "definition": "faces/s on the same raw LFW photos; runtime, no_fallback (the runtime without the bundle's "
                      "detector fallback chain) and mtcnn verify pairs (detect, align, classify, "
                      "route, embed), reference embeds each face with E_F (SCRFD-500M at 640, insightface-style); "
                      "ratios are medians of per-run ratios",
    }

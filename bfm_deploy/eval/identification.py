"""Open-set 1:N identification on LFW (``bfm-eval --dataset lfw-identification``), with balanced matching.

Protocol (LFW folds 6-10 by default, the test folds; every identity there appears in no other fold):
- **gallery**: of each identity of those folds with two or more images, its first image (by file name);
- **mated probes**: that identity's other images, at most ``max_probes_per_identity`` (the first by name,
  so George W Bush's 529 photos do not outweigh everyone else);
- **non-mated probes**: the first image of each identity of those folds with exactly one image (never enrolled).

Three conditions: unmasked gallery and probes; masked probes (each probe's synthetic masked twin, from the
masked-LFW cache) against the unmasked gallery; a masked gallery (the enrolled images masked) with unmasked
probes. Three methods on the same faces: routed (the mask classifier decides each face's state and the
gallery matches the paper's way), E_F alone (Baseline 1: every face treated as unmasked) and E_P alone (every
face treated as masked). Metrics on each probe's best candidate: rank-1 accuracy over the mated probes; FPIR
(non-mated probes whose best margin reaches t) and FNIR (mated probes whose best candidate is wrong or below t)
over every t, which give the DET curve and TPIR = 1 - FNIR at FPIR 1%; and FPIR/TPIR at margin 0, the
operating point ``bfm-gallery identify`` uses by default.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..bundle import Bundle
from ..datasets import lfw_identities_in_folds, read_lfw_pairs
from ..errors import BfmError
from ..matching import ROUTES, exact_structures, match, unit
from ..progress import progress, stage
from ..verifier import FaceFeatures, Verifier
from .protocols import load_aligned, require_file

CONDITIONS = ("unmasked probes", "masked probes", "masked gallery")
METHODS = ("routed", "E_F alone", "E_P alone")
TARGET_FPIR = 0.01
TEST_FOLDS = (6, 7, 8, 9, 10)  # LFW's folds held out of training: never calibrate on them


@dataclass(frozen=True)
class IdentificationProtocol:
    gallery: list[tuple[str, Path]]
    mated: list[tuple[str, Path]]
    non_mated: list[Path]
    folds: list[int]  # 1-based


def lfw_identification(data_dir: Path, folds: Sequence[int] = TEST_FOLDS,
                       max_probes_per_identity: int = 10) -> IdentificationProtocol:
    root = data_dir / "lfw"
    images = root / "aligned112"
    pairs = read_lfw_pairs(require_file(root / "pairs.txt", "LFW pairs file"), images)
    names = sorted(lfw_identities_in_folds(pairs, {f - 1 for f in folds}))
    gallery: list[tuple[str, Path]] = []
    mated: list[tuple[str, Path]] = []
    non_mated: list[Path] = []
    for name in names:
        files = sorted((images / name).glob("*.jpg"))
        if len(files) >= 2:
            gallery.append((name, files[0]))
            mated.extend((name, f) for f in files[1 : 1 + max_probes_per_identity])
        elif files:
            non_mated.append(files[0])
    if not gallery or not non_mated:
        raise BfmError(f"{root}: folds {list(folds)} give no gallery or no non-mated probes")
    return IdentificationProtocol(gallery, mated, non_mated, list(folds))


def det_curve(mated_margin: np.ndarray, mated_correct: np.ndarray, non_mated_margin: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(thresholds, FPIR, FNIR) at every distinct best-candidate margin."""
    thresholds = np.unique(np.concatenate([mated_margin, non_mated_margin, [np.inf]]))
    non_sorted = np.sort(non_mated_margin)
    fpir = 1.0 - np.searchsorted(non_sorted, thresholds, side="left") / len(non_sorted)
    hits = np.sort(mated_margin[mated_correct])
    tpir = (len(hits) - np.searchsorted(hits, thresholds, side="left")) / len(mated_margin)
    return thresholds, fpir, 1.0 - tpir


def tpir_at_fpir(mated_margin: np.ndarray, mated_correct: np.ndarray, non_mated_margin: np.ndarray,
                 target: float = TARGET_FPIR) -> tuple[float, float]:
    """TPIR at the lowest threshold whose FPIR is at most ``target``, and that threshold."""
    return _at_target(*det_curve(mated_margin, mated_correct, non_mated_margin), target)


def _at_target(thresholds: np.ndarray, fpir: np.ndarray, fnir: np.ndarray, target: float) -> tuple[float, float]:
    i = np.flatnonzero(fpir <= target)[0]  # thresholds ascend, FPIR descends: the first within target is the lowest
    return float(1.0 - fnir[i]), float(thresholds[i])


def _forced(features: list[FaceFeatures], masked: bool | None) -> list[FaceFeatures]:
    return features if masked is None else [replace(f, masked=masked) for f in features]


def _search(bundle: Bundle, gallery_names: list[str], gallery: list[FaceFeatures], probes: list[FaceFeatures],
            open_set: dict[str, float] | None) -> tuple[list[str], np.ndarray]:
    """Each probe's best identity and its margin over the open-set threshold of its route (the margin itself
    without ``open_set``): the gallery's rule (``bfm_deploy.matching``) on faces enrolled one each, in order."""
    if not probes:
        return [], np.zeros(0, np.float32)
    structures = exact_structures(unit(np.stack([f.full for f in gallery])), unit(np.stack([f.partial for f in gallery])),
                                  np.array([f.masked for f in gallery], bool))
    names = dict(enumerate(gallery_names, start=1))  # face ids 1, 2, ...: enrolment order breaks ties
    found = match(unit(np.stack([p.full for p in probes])), unit(np.stack([p.partial for p in probes])),
                  np.array([p.masked for p in probes], bool), structures,
                  lambda ids: {i: names[i] for i in ids}, {route: bundle.threshold(route) for route in ROUTES},
                  {route: 0.0 if open_set is None else float(open_set[route]) for route in ROUTES}, top_k=1)
    return found.identity[:, 0].tolist(), found.over_open_set[:, 0].astype(np.float32)


def open_set_thresholds(report: dict[str, Any]) -> dict[str, Any]:
    """Per-route open-set thresholds on the margin from an uncalibrated report of training folds: E_F alone's
    threshold at the target FPIR with unmasked probes; for E_P the larger of masked probes' and a masked
    gallery's (so the target holds in both)."""
    if report.get("open_set") is not None:
        raise BfmError("calibrate from an evaluation without open-set thresholds")
    test = sorted(set(report["folds"]) & set(TEST_FOLDS))
    if test:
        raise BfmError(f"folds {test} are LFW's test folds: calibrate on training identities (folds 1-5)")
    conditions = report["conditions"]
    full = conditions["unmasked probes"]["methods"]["E_F alone"]["margin_at_target"]
    partial = max(conditions[c]["methods"]["E_P alone"]["margin_at_target"] for c in ("masked probes", "masked gallery"))
    gallery = conditions["unmasked probes"]["gallery"]
    return {"full": float(full), "partial": float(partial), "fpir": float(report["target_fpir"]),
            "calibration": f"FPIR {report['target_fpir']:g} on LFW folds {_folds(report['folds'])} (bundle "
                           f"{report['bundle']}, {gallery} enrolled identities): E_F alone on unmasked probes, "
                           "E_P alone on masked probes and a masked gallery (the larger)"}


def read_report(path: Path) -> dict[str, Any]:
    """A ``bfm-eval --dataset lfw-identification --json`` report, checked enough to calibrate from."""
    import json

    try:
        report = json.loads(Path(path).read_text())
        if report.get("dataset") != "lfw-identification":
            raise ValueError(f"dataset {report.get('dataset')!r}")
        report["conditions"]["unmasked probes"]["methods"]["E_F alone"]["margin_at_target"]
        float(report["target_fpir"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise BfmError(f"{path}: not a bfm-eval lfw-identification report ({str(exc)[:120]})") from None
    return report


def _folds(folds: Sequence[int]) -> str:
    return ",".join(str(f) for f in folds)


def evaluate_identification(verifier: Verifier, protocol: IdentificationProtocol, masked_path: dict[Path, Path],
                            target_fpir: float = TARGET_FPIR, open_set: dict[str, Any] | None = None,
                            cache_dir: Path | None = None) -> dict[str, Any]:
    """Every condition x method on ``protocol``; ``masked_path`` maps an LFW image to its masked twin (images the
    masker refused are left out of the conditions that need their twin). With ``open_set`` (per-route
    thresholds, from ``open_set_thresholds`` of training folds) the routed method is scored by its margin over
    them and the report gives FPIR/TPIR at that operating point. ``cache_dir``: keep the faces' features there
    (``FeatureCache``), so that a second run with the same bundle embeds nothing."""
    from .feature_cache import FeatureCache

    if not 0 < target_fpir < 1:
        raise BfmError(f"the target FPIR must be in (0, 1), got {target_fpir}")
    needed = [p for _, p in protocol.gallery] + [p for _, p in protocol.mated] + protocol.non_mated
    features: dict[Path, FaceFeatures] = {}
    masked_features: dict[Path, FaceFeatures] = {}
    cache = FeatureCache(cache_dir, verifier)
    for what, sources, store in (("faces", {p: p for p in needed}, features),
                                 ("masked twins", masked_path, masked_features)):
        todo = [p for p in needed if p in sources]
        stage(f"embedding {len(todo)} {what}" + (f" (cache {cache.path})" if cache.path is not None else ""))
        with progress(total=len(todo), desc=f"embedding {what}", unit="face") as bar:
            store.update(zip(todo, cache.features([sources[p] for p in todo], load_aligned, on_batch=bar.update)))
    cache.save()
    if cache.path is not None:
        stage(f"features: {cache.hits} from the cache, {cache.misses} embedded")
    stage("searching the gallery")
    results: dict[str, Any] = {}
    for condition in CONDITIONS:
        gallery_feats = masked_features if condition == "masked gallery" else features
        probe_feats = masked_features if condition == "masked probes" else features
        gallery = [(n, p) for n, p in protocol.gallery if p in gallery_feats]
        names = {n for n, _ in gallery}
        mated = [(n, p) for n, p in protocol.mated if p in probe_feats and n in names]
        non_mated = [p for p in protocol.non_mated if p in probe_feats]
        results[condition] = {"gallery": len(gallery), "mated_probes": len(mated), "non_mated_probes": len(non_mated),
                              "methods": {}}
        for method, force in zip(METHODS, (None, False, True)):
            probes = _forced([probe_feats[p] for _, p in mated] + [probe_feats[p] for p in non_mated], force)
            calibrated = open_set if method == "routed" else None
            got, margin = _search(verifier.bundle, [n for n, _ in gallery],
                                  _forced([gallery_feats[p] for _, p in gallery], force), probes, calibrated)
            correct = np.array([g == n for g, (n, _) in zip(got, mated)], bool)
            mated_margin, non_margin = margin[: len(mated)], margin[len(mated):]
            thresholds, fpir_curve, fnir_curve = det_curve(mated_margin, correct, non_margin)
            tpir, threshold = _at_target(thresholds, fpir_curve, fnir_curve, target_fpir)
            results[condition]["methods"][method] = {
                "rank1": float(correct.mean()),
                "tpir_at_target": tpir, "margin_at_target": threshold,
                # margin 0: the verification thresholds, or (routed, calibrated) the open-set thresholds
                "at_margin_0": {"fpir": float((non_margin >= 0).mean()),
                                "tpir": float((correct & (mated_margin >= 0)).mean())},
                "probes_masked": int(sum(p.masked for p in probes)) if force is None else None,
                "det": _det_points(fpir_curve, fnir_curve),
            }
    return {"dataset": "lfw-identification", "folds": protocol.folds, "bundle": verifier.bundle.name,
            "target_fpir": target_fpir, "open_set": open_set, "conditions": results}


def _det_points(fpir: np.ndarray, fnir: np.ndarray, points: int = 200) -> dict[str, list[float]]:
    """The DET curve at about ``points`` thresholds spread evenly in log FPIR (the JSON stays small)."""
    keep = np.unique(np.searchsorted(-fpir, -np.geomspace(1.0, 1e-4, points)).clip(0, len(fpir) - 1))
    return {"fpir": [round(float(v), 6) for v in fpir[keep]], "fnir": [round(float(v), 6) for v in fnir[keep]]}


def table(report: dict[str, Any]) -> str:
    target = f"{100 * report['target_fpir']:g}%"
    at = "open-set thresholds (routed) / verification thresholds" if report.get("open_set") else "verification thresholds"
    lines = [f"| condition | method | rank-1 | TPIR @ FPIR {target} | FPIR / TPIR @ {at} |", "|---|---|---:|---:|---:|"]
    for condition, result in report["conditions"].items():
        for method, m in result["methods"].items():
            lines.append(f"| {condition} | {method} | {100 * m['rank1']:.2f} | {100 * m['tpir_at_target']:.2f} | "
                         f"{100 * m['at_margin_0']['fpir']:.2f} / {100 * m['at_margin_0']['tpir']:.2f} |")
    return "\n".join(lines)


def write_det_plot(path: Path, report: dict[str, Any]) -> None:
    from ..plotting import pyplot, save_png

    plt = pyplot()

    conditions = report["conditions"]
    fig, axes = plt.subplots(1, len(conditions), figsize=(5 * len(conditions), 4.2), squeeze=False)
    for axis, (condition, result) in zip(axes[0], conditions.items()):
        for method, m in result["methods"].items():
            fpir, fnir = np.array(m["det"]["fpir"]), np.array(m["det"]["fnir"])
            keep = fpir > 0
            axis.plot(fpir[keep], np.maximum(fnir[keep], 1e-4), label=f"{method} (TPIR {100 * m['tpir_at_target']:.1f}%)")
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.axvline(report["target_fpir"], color="grey", lw=0.7, ls="--")
        axis.set_xlabel("FPIR")
        axis.set_ylabel("FNIR")
        axis.set_title(f"{condition}: {result['gallery']} enrolled, {result['mated_probes']}+{result['non_mated_probes']} probes",
                       fontsize=9)
        axis.legend(fontsize=8)
        axis.grid(True, which="both", alpha=0.3)
    fig.suptitle(f"LFW open-set identification, folds {report['folds']}, bundle {report['bundle']}")
    save_png(fig, path)

"""Parity of a device path against the CPU reference: embeddings, mask decisions, detections, pair decisions.

The reference is the torch backend on the CPU (FP32; its detector on onnxruntime). A decision that flips
where the reference sits within a hair of its threshold is a near tie, reported but not a failure: FP16
rounding moves a score by ~1e-3, and a pair scored 0.3001 against a threshold of 0.30 has no right answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from bfm_deploy.routing import is_masked, mask_probability
from bfm_deploy.tensor import preprocess
from bfm_deploy.verifier import l2_normalise

MIN_COSINE = 0.999
SCORE_TIE = 5e-3  # |reference score - threshold| below this: a flipped same/different decision is a near tie
PROBABILITY_TIE = 1e-2  # |reference mask probability - mask threshold| below this: a near tie
LANDMARK_TOLERANCE_PX = 1.0  # the top face's five points, in photo pixels


@dataclass
class ParityRow:
    path: str  # the device configuration, e.g. "fast fp16"
    check: str  # what was compared, e.g. "pairs lfw-raw" or "embeddings full (uint8 upload)"
    compared: int
    min_cosine: float | None = None
    decisions_differ: int = 0
    near_ties: int = 0
    max_landmark_px: float | None = None
    ok: bool = True
    note: str = ""
    required: bool = True  # False: reported, but a failure does not fail the check (e.g. the BF16 option)


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(l2_normalise(a) * l2_normalise(b), axis=1)


NETWORKS = ("classifier", "full", "partial")


def reference_outputs(reference: Any, crops: np.ndarray) -> dict[str, np.ndarray]:
    """The reference's outputs for ``crops``, once for every path compared with it: on the CPU ``infer_crops``
    is ``infer`` on the host-normalised tensor, so they stand for both ways in."""
    batch = preprocess(list(crops))
    return {network: reference.infer(network, batch) for network in NETWORKS}


def network_rows(path: str, want: dict[str, np.ndarray], backend: Any, crops: np.ndarray,
                 mask_threshold: float) -> list[ParityRow]:
    """full and partial embeddings (cosine) and the classifier's mask decisions against the reference's outputs
    ``want`` (``reference_outputs``), through ``infer`` (host normalisation) and ``infer_crops`` (uint8 upload
    where the backend does it)."""
    batch = preprocess(list(crops))
    rows = []
    for form, run in (("float", lambda n: backend.infer(n, batch)), ("uint8", lambda n: backend.infer_crops(n, crops))):
        for network in ("full", "partial"):
            cos = float(_cosines(want[network], run(network)).min())
            rows.append(ParityRow(path, f"embeddings {network} ({form})", len(crops), min_cosine=cos,
                                  ok=cos >= MIN_COSINE))
        ref_p = mask_probability(want["classifier"])
        got_p = mask_probability(run("classifier"))
        differ = is_masked(ref_p, mask_threshold) != is_masked(got_p, mask_threshold)
        ties = int(np.sum(differ & (np.abs(ref_p - mask_threshold) < PROBABILITY_TIE)))
        rows.append(ParityRow(path, f"mask decisions ({form})", len(crops), decisions_differ=int(differ.sum()) - ties,
                              near_ties=ties, ok=int(differ.sum()) == ties))
    return rows


def detection_row(path: str, reference: list[list[Any]], got: list[list[Any]]) -> ParityRow:
    """The top face of each photo: found on both paths, its landmarks within the tolerance."""
    found_differ = sum(bool(a) != bool(b) for a, b in zip(reference, got))
    worst = max((float(np.abs(a[0].landmarks - b[0].landmarks).max()) for a, b in zip(reference, got) if a and b),
                default=0.0)
    return ParityRow(path, "detections (top face)", len(reference), decisions_differ=found_differ,
                     max_landmark_px=worst, ok=found_differ == 0 and worst <= LANDMARK_TOLERANCE_PX)


def pair_row(path: str, name: str, reference: list[Any], got: list[Any], mask_threshold: float) -> ParityRow:
    """Same/different decisions, routes and per-pair cosine-of-scores agreement of two verify_many runs."""
    differ = ties = errors = 0
    worst_score = 0.0
    for ref, res in zip(reference, got):
        ref_error, res_error = not hasattr(ref, "same"), not hasattr(res, "same")
        if ref_error or res_error:
            errors += ref_error != res_error
            continue
        worst_score = max(worst_score, abs(ref.score - res.score))
        mask_tie = any(abs(p - mask_threshold) < PROBABILITY_TIE for p in ref.mask_probability)
        if ref.route != res.route:
            differ += 1
            ties += mask_tie
        elif ref.same != res.same:
            differ += 1
            ties += abs(ref.score - ref.threshold) < SCORE_TIE
    note = f"largest score difference {worst_score:.4f}; {errors} pairs failed on one path only"
    return ParityRow(path, f"pairs {name}", len(reference), decisions_differ=differ - ties, near_ties=ties,
                     ok=differ == ties and errors == 0, note=note)

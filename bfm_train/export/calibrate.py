"""Per-route verification thresholds from a labelled pairs list (of training identities, never test ones).

Each pair is routed as the runtime routes it (classifier C: full when neither face is masked, else
partial); each route's threshold is the one that maximises accuracy on its own pairs. A route that gets
too few pairs of either kind is calibrated on all pairs with its extractor instead, and the manifest says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bfm_deploy.contract import CROP_SIZE
from bfm_deploy.bundle import ROUTES, sha256_file
from bfm_deploy.datasets import read_lfw_pairs, read_pairs_file
from bfm_deploy.errors import BfmError
from bfm_deploy.metrics import best_threshold
from bfm_deploy.images import load_image
from bfm_deploy.progress import progress
from bfm_deploy.routing import DEFAULT_MASK_THRESHOLD, mask_probability, partial_route
from bfm_deploy.tensor import preprocess
from bfm_deploy.tensor import l2_normalise

MIN_PER_KIND = 10  # same and different pairs a route needs to be calibrated on its own pairs
BATCH = 64


@dataclass(frozen=True)
class LabelledPair:
    left: Path
    right: Path
    same: bool


@dataclass(frozen=True)
class Calibration:
    value: float
    accuracy: float
    pairs: int
    description: str


def read_labelled_pairs(path: Path) -> list[LabelledPair]:
    """An LFW-style ``pairs.txt`` (header ``folds per_fold``; images in ``aligned112/`` beside it) or a pairs
    file with a label on every line (``bfm_deploy.datasets.read_pairs_file``)."""
    if not path.is_file():
        raise BfmError(f"calibration pairs file not found: {path}")
    lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip() and not ln.startswith("#")]
    if lines and len(first := lines[0].split()) == 2 and all(f.isdigit() for f in first):
        return [LabelledPair(p.left, p.right, p.same) for p in read_lfw_pairs(path, path.parent / "aligned112")]
    return [LabelledPair(p.left, p.right, bool(p.same)) for p in read_pairs_file(path, need_labels=True)]


class _Runner:
    """Caches decoded crops and network outputs per image so that each image is processed once."""

    def __init__(self, images: list[Path]) -> None:
        self.images = images
        self.index = {p: i for i, p in enumerate(images)}
        self._crops: list[np.ndarray] | None = None

    def crops(self) -> list[np.ndarray]:
        if self._crops is None:
            self._crops = []
            for path in progress(self.images, desc="calibration images", unit="img", leave=False):
                crop = load_image(path)
                if crop.shape[:2] != (CROP_SIZE, CROP_SIZE):
                    raise BfmError(f"{path}: calibration images must be aligned 112x112 crops")
                self._crops.append(crop)
        return self._crops

    def run(self, module: nn.Module, what: str) -> np.ndarray:
        crops = self.crops()
        outputs = []
        with torch.inference_mode():
            for i in progress(range(0, len(crops), BATCH), desc=f"calibration {what}", unit="batch", leave=False):
                outputs.append(module(torch.from_numpy(preprocess(crops[i : i + BATCH]))).float().numpy())
        return np.concatenate(outputs)


def calibrate(pairs_file: Path, networks: dict[str, nn.Module],
              mask_threshold: float = DEFAULT_MASK_THRESHOLD) -> dict[str, Calibration]:
    pairs = read_labelled_pairs(pairs_file)
    images = sorted({p for pair in pairs for p in (pair.left, pair.right)})
    runner = _Runner(images)
    left = np.array([runner.index[p.left] for p in pairs])
    right = np.array([runner.index[p.right] for p in pairs])
    same = np.array([p.same for p in pairs])
    probability = mask_probability(runner.run(networks["classifier"], "classifier"))
    to_partial = partial_route(probability[left], probability[right], mask_threshold)
    file_id = f"{pairs_file.name} (sha256 {sha256_file(pairs_file)[:12]})"
    result: dict[str, Calibration] = {}
    for route in ROUTES:
        emb = l2_normalise(runner.run(networks[route], route))
        scores = (emb[left] * emb[right]).sum(axis=1)
        routed = to_partial if route == "partial" else ~to_partial
        enough = min(int((same & routed).sum()), int((~same & routed).sum())) >= MIN_PER_KIND
        subset = routed if enough else np.ones(len(pairs), bool)
        value = best_threshold(scores[subset], same[subset])
        accuracy = float(((scores[subset] >= value) == same[subset]).mean())
        scope = (f"the {int(subset.sum())} pairs the classifier routes to {route}" if enough else
                 f"all {len(pairs)} pairs with the {route} extractor (only {int(routed.sum())} routed to {route})")
        result[route] = Calibration(value, accuracy, int(subset.sum()),
                                    f"accuracy-maximising threshold on {scope} of {file_id}: accuracy {accuracy:.4f}")
    return result

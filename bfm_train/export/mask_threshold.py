"""The manifest's ``mask_threshold``: the classifier's balanced-accuracy threshold on held-out labelled faces."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bfm_deploy.contract import CROP_SIZE, sha256_file
from bfm_deploy.errors import BfmError
from bfm_deploy.images import load_image
from bfm_deploy.manifest import Threshold
from bfm_deploy.routing import calibrate_mask_threshold, mask_probability
from bfm_deploy.tensor import preprocess


def read_mask_calibration(path: Path) -> tuple[list[Path], np.ndarray]:
    """``image<TAB>label`` lines (label 1 = masked), paths relative to the file; blank and # lines skipped."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise BfmError(f"cannot read mask calibration file {path}: {exc}") from None
    images, labels = [], []
    for number, line in enumerate(lines, start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = line.split("\t")
        if len(fields) != 2 or fields[1].strip() not in ("0", "1"):
            raise BfmError(f"{path}:{number}: expected 'image<TAB>0|1'")
        image = Path(fields[0])
        images.append(image if image.is_absolute() else path.parent / image)
        labels.append(fields[1].strip() == "1")
    label_array = np.array(labels, dtype=bool)
    if not label_array.any() or label_array.all():
        raise BfmError(f"{path}: mask calibration needs both masked (1) and unmasked (0) faces")
    return images, label_array


def calibrated_mask_threshold(classifier_onnx: Path, calibration: Path) -> Threshold:
    """The manifest's ``mask_threshold`` entry: balanced-accuracy threshold of the classifier on ``calibration``."""
    import onnxruntime as ort

    images, labels = read_mask_calibration(calibration)
    session = ort.InferenceSession(str(classifier_onnx), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    probabilities = []
    for start in range(0, len(images), 256):
        crops = [load_image(p) for p in images[start : start + 256]]
        if any(c.shape != (CROP_SIZE, CROP_SIZE, 3) for c in crops):
            raise BfmError(f"{calibration}: mask calibration images must be aligned 112x112 crops")
        probabilities.append(mask_probability(session.run(None, {name: preprocess(crops)})[0]))
    probs = np.concatenate(probabilities)
    value, balanced = calibrate_mask_threshold(probs[~labels], probs[labels])
    at_half = (np.mean(probs[~labels] < 0.5) + np.mean(probs[labels] >= 0.5)) / 2
    # Six decimals keep the manifest readable; a classifier sure of every face can put the threshold below 5e-7,
    # which must not round to 0 (a bundle's mask threshold lies strictly inside (0, 1)).
    return Threshold(min(max(round(value, 6), 1e-6), 1 - 1e-6),
                     f"balanced-accuracy threshold on {len(labels)} held-out faces of {calibration.name} "
                     f"(sha256 {sha256_file(calibration)[:12]}, {int(labels.sum())} masked): balanced accuracy "
                     f"{100 * balanced:.2f}% (at 0.5: {100 * at_half:.2f}%)")

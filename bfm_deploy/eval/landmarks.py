"""Landmark accuracy of a detector on raw photos with known landmarks (LFW's ``landmarks5.txt``).

Five-point alignment is only as good as the five points: this measures, per photo, the mean distance between
the detector's landmarks (of the face the runtime would pick) and the reference, in pixels and as a fraction
of the reference inter-ocular distance. Photos can be the raw LFW fold-1 originals or a copy of them with
synthetic masks drawn on (``bfm-mask SRC DST --raw``): masking moves no landmark, so the same reference holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BfmError
from ..progress import progress as progress_bar

CHUNK = 64


@dataclass(frozen=True)
class LandmarkSet:
    photos: Path  # <identity>/<file> images
    reference: dict[str, np.ndarray]  # relative path -> 5x2 reference landmarks


def read_reference(path: Path) -> dict[str, np.ndarray]:
    """``landmarks5.txt``: ``relative/path<TAB>x1<TAB>y1 ... x5<TAB>y5`` a line."""
    if not path.is_file():
        raise BfmError(f"landmark reference {path} not found")
    refs = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        name, *values = line.split("\t")
        if len(values) != 10:
            raise BfmError(f"{path}:{number}: expected a path and 10 coordinates, got {len(values)} values")
        refs[name] = np.asarray(values, dtype=np.float64).reshape(5, 2)
    return refs


def landmark_errors(detector: Any, landmark_set: LandmarkSet, progress: bool = True) -> dict[str, Any]:
    """Per-photo landmark error of ``detector`` (a ``--detector`` choice already opened) over the set."""
    from ..detect import FaceAligner, NoFaceError

    photos = sorted(p for p in landmark_set.photos.glob("*/*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    photos = [p for p in photos if _key(landmark_set.photos, p) in landmark_set.reference]
    if not photos:
        raise BfmError(f"no photos under {landmark_set.photos} have reference landmarks")
    pixel_errors, relative_errors, per_point = [], [], []
    offsets: list[np.ndarray] = []
    inter_oculars: list[float] = []
    missed: list[str] = []
    with FaceAligner(detector) as aligner, progress_bar(total=len(photos), desc="landmarks", unit="photo",
                                                           enabled=progress) as bar:
        for start in range(0, len(photos), CHUNK):
            chunk = photos[start : start + CHUNK]
            for path, item in zip(chunk, aligner.align_many(chunk)):
                if isinstance(item, NoFaceError):
                    missed.append(_key(landmark_set.photos, path))
                    continue
                if isinstance(item, BfmError):
                    raise item
                ref = landmark_set.reference[_key(landmark_set.photos, path)]
                offset = item.face.landmarks.astype(np.float64) - ref
                distances = np.linalg.norm(offset, axis=1)
                inter_ocular = float(np.linalg.norm(ref[0] - ref[1]))
                offsets.append(offset)
                inter_oculars.append(inter_ocular)
                pixel_errors.append(float(distances.mean()))
                relative_errors.append(float(distances.mean()) / max(inter_ocular, 1e-6))
                per_point.append(distances)
            bar.update(len(chunk))
    pixels = np.asarray(pixel_errors)
    points = np.asarray(per_point) if per_point else np.zeros((0, 5))
    convention_free = _convention_free(offsets, inter_oculars)
    return {
        "photos": len(photos),
        "found": len(pixel_errors),
        "missed": missed,
        "median_px": float(np.median(pixels)) if len(pixels) else None,
        "mean_px": float(pixels.mean()) if len(pixels) else None,
        "p90_px": float(np.percentile(pixels, 90)) if len(pixels) else None,
        "median_inter_ocular": float(np.median(relative_errors)) if relative_errors else None,
        "share_over_0.1_inter_ocular": float(np.mean(np.asarray(relative_errors) > 0.1)) if relative_errors else None,
        # Diagnostic: the error left after removing the detector's mean offset per point (in inter-ocular
        # units) over these photos. Detectors follow different annotation conventions (where exactly a nose
        # tip is); this separates a constant convention gap from scatter. Fitted on the set it reports.
        "median_px_after_mean_offset": convention_free,
        "median_px_per_point": {name: float(np.median(points[:, i])) if len(points) else None
                                for i, name in enumerate(("left_eye", "right_eye", "nose", "mouth_left", "mouth_right"))},
    }


def _convention_free(offsets: list[np.ndarray], inter_oculars: list[float]) -> float | None:
    if not offsets:
        return None
    scale = np.asarray(inter_oculars)[:, None, None]
    relative = np.asarray(offsets) / scale
    residual = (relative - relative.mean(axis=0)) * scale
    return float(np.median(np.linalg.norm(residual, axis=2).mean(axis=1)))


def _key(root: Path, path: Path) -> str:
    return path.relative_to(root).as_posix()

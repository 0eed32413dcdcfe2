"""Does the exported ONNX graph compute what the torch module computes? Checked on real faces."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from bfm_deploy.contract import CROP_SIZE
from bfm_deploy.errors import BfmError
from bfm_deploy.tensor import preprocess


@dataclass(frozen=True)
class ParityBatch:
    tensor: np.ndarray  # NCHW float32, the tensor contract
    description: str  # what the faces are, for the log


@dataclass(frozen=True)
class ParityResult:
    max_abs_diff: float
    min_cosine: float  # worst per-sample cosine between torch and ONNX outputs
    output_size: int  # width of the output (512 for extractors, 2 for the classifier)


def lfw_crops(data_dir: Path, count: int) -> list[Path]:
    """The first image of each of the first ``count`` LFW identities (sorted): varied, deterministic faces."""
    root = data_dir / "lfw" / "aligned112"
    if not root.is_dir():
        return []
    paths: list[Path] = []
    for name in sorted(os.listdir(root)):
        images = sorted((root / name).glob("*.jpg"))
        if images:
            paths.append(images[0])
        if len(paths) == count:
            break
    return paths


def parity_batch(data_dir: Path, count: int, seed: int = 0) -> ParityBatch:
    """Aligned LFW crops if the shared data is there, else random input (with a warning: weaker check)."""
    paths = lfw_crops(data_dir, count)
    crops = [img for img in (cv2.imread(str(p), cv2.IMREAD_COLOR) for p in paths) if img is not None]
    if len(crops) == count and all(c.shape == (CROP_SIZE, CROP_SIZE, 3) for c in crops):
        return ParityBatch(preprocess(crops), f"{count} aligned LFW faces from {data_dir}")
    warnings.warn(
        f"no aligned LFW faces under {data_dir} (set BFM_DATA): checking ONNX parity on random input instead",
        stacklevel=2,
    )
    rng = np.random.default_rng(seed)
    crops = [rng.integers(0, 256, (CROP_SIZE, CROP_SIZE, 3), dtype=np.uint8) for _ in range(count)]
    return ParityBatch(preprocess(crops), f"{count} random images (no face data found)")


def check_parity(module: nn.Module, onnx_path: Path, batch: np.ndarray) -> ParityResult:
    """Run ``module`` (eval, FP32) and the ONNX graph through onnxruntime on the same batch and compare."""
    import onnxruntime as ort

    with torch.inference_mode():
        expected = module(torch.from_numpy(batch)).float().numpy()
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(onnx_path), sess_options=options, providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: batch})
    if got.shape != expected.shape:
        raise BfmError(f"{onnx_path.name}: ONNX output shape {got.shape} differs from torch {expected.shape}")
    num = (got * expected).sum(axis=1)
    den = np.linalg.norm(got, axis=1) * np.linalg.norm(expected, axis=1)
    cosine = np.where(den > 0, num / np.maximum(den, 1e-30), 1.0)
    return ParityResult(float(np.abs(got - expected).max()), float(cosine.min()), int(got.shape[1]))

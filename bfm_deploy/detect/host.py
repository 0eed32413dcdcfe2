"""What the detectors share: the input check, the onnxruntime CPU session, and the host detectors' loop
(MTCNN and YuNet run one image at a time on the CPU)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import BfmError
from .detection import Face

if TYPE_CHECKING:
    import onnxruntime as ort


def check_bgr(bgr: np.ndarray) -> None:
    if bgr.dtype != np.uint8 or bgr.ndim != 3 or bgr.shape[2] != 3:
        raise BfmError(f"detector expects a BGR uint8 HxWx3 image, got {bgr.dtype} {bgr.shape}")


def onnx_session(path: Path, threads: int = 0, missing: str = "detector model not found") -> ort.InferenceSession:
    """A CPU session with onnxruntime's log noise off; one-line errors for missing or unreadable graphs."""
    import onnxruntime as ort  # imported here so that importing bfm_deploy.detect stays cheap

    if not Path(path).is_file():
        raise BfmError(f"{missing}: {path}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types for unreadable graphs
        raise BfmError(f"cannot load {path}: {str(exc).splitlines()[0]}") from None


class HostDetector:
    """A detector whose graph has a different shape for every image (MTCNN's pyramid) or that runs outside
    the backends (YuNet in OpenCV): ``detect_batch`` is a loop over ``detect``."""

    name = "host"

    def detect(self, bgr: np.ndarray) -> list[Face]:
        raise NotImplementedError

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[list[Face]]:
        return [self.detect(bgr) for bgr in images]

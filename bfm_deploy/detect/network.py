"""A single-graph face detector (SCRFD) run in fixed-size batches on any backend.

Each image is letterboxed to the detector's square input (scaled so that its longer side fills it, placed at
the top-left corner, so that coordinates map back by one scale factor), the batch goes through the graph in
one call, and each image's outputs are decoded, suppressed and mapped back to its pixels. The graph is run
by whatever callable is given: a backend's ``detect`` (the bundle's detector) or an ``OnnxRunner``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np

from ..errors import BfmError
from ..tensor import to_nchw
from .boxes import nms
from .host import check_bgr, onnx_session
from .detection import Face
from .scrfd import decode_scrfd
from .spec import DetectorSpec

Runner = Callable[[np.ndarray], list[np.ndarray]]
# Runs the graph on uint8 canvases (N x S x S x 3, BGR), given the normalisation: (canvases, mean, std,
# reverse_channels) -> outputs; a backend's detect_canvases, which may normalise on the GPU.
CanvasRunner = Callable[[np.ndarray, float, float, bool], list[np.ndarray]]


def letterbox(bgr: np.ndarray, size: int) -> tuple[np.ndarray, float]:
    """``bgr`` scaled so that its longer side is ``size``, on a black ``size x size`` canvas at the top left."""
    height, width = bgr.shape[:2]
    scale = size / max(height, width)
    new_size = (min(size, max(1, round(width * scale))), min(size, max(1, round(height * scale))))
    # Shrinking averages pixels (no aliasing on large photos); enlarging a small crop interpolates.
    interpolation = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR
    canvas = np.zeros((size, size, 3), dtype=np.uint8)
    canvas[: new_size[1], : new_size[0]] = cv2.resize(bgr, new_size, interpolation=interpolation)
    return canvas, scale


class NetworkDetector:
    """Finds faces and five landmarks in BGR uint8 images, a batch of up to ``max_batch`` per graph call."""

    def __init__(self, spec: DetectorSpec, run: Runner, max_batch: int = 32, name: str | None = None,
                 run_canvases: CanvasRunner | None = None) -> None:
        if max_batch < 1:
            raise BfmError(f"detector max_batch must be at least 1, got {max_batch}")
        self.spec = spec
        self.name = name or spec.architecture
        self._run = run
        self._run_canvases = run_canvases
        self.max_batch = max_batch

    def detect(self, bgr: np.ndarray) -> list[Face]:
        return self.detect_batch([bgr])[0]

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[list[Face]]:
        """All faces of each image (HxWx3 uint8 BGR), highest score first."""
        found: list[list[Face]] = []
        for start in range(0, len(images), self.max_batch):
            found += self._detect_chunk(images[start : start + self.max_batch])
        return found

    def blob(self, canvases: Sequence[np.ndarray]) -> np.ndarray:
        """Letterboxed uint8 canvases -> the graph's NCHW float32 input."""
        return to_nchw(canvases, self.spec.mean, self.spec.std, reverse_channels=self.spec.channel_order == "RGB")

    def _detect_chunk(self, images: Sequence[np.ndarray]) -> list[list[Face]]:
        for bgr in images:
            check_bgr(bgr)
        boxed = [letterbox(bgr, self.spec.input_size) for bgr in images]
        if self._run_canvases is not None:
            outputs = self._run_canvases(np.stack([canvas for canvas, _ in boxed]), self.spec.mean, self.spec.std,
                                         self.spec.channel_order == "RGB")
        else:
            outputs = self._run(self.blob([canvas for canvas, _ in boxed]))
        if len(outputs) != len(self.spec.output_names):
            raise BfmError(f"detector returned {len(outputs)} outputs, its spec names {len(self.spec.output_names)}")
        return [self._faces([out[i] for out in outputs], scale) for i, (_, scale) in enumerate(boxed)]

    def _faces(self, outputs: list[np.ndarray], scale: float) -> list[Face]:
        boxes, scores, points = decode_scrfd(outputs, self.spec.input_size, self.spec.score_threshold)
        if not len(scores):
            return []
        keep = nms(boxes, scores, self.spec.nms_threshold)
        # Back to image pixels; the box is made inclusive like MTCNN's (x2 - x1 + 1 pixels wide).
        boxes = boxes[keep] / scale - np.array([0.0, 0.0, 1.0, 1.0])
        points = points[keep] / scale
        return [
            Face(box=b.astype(np.float32), score=float(s), landmarks=p.astype(np.float32))
            for b, s, p in zip(boxes, scores[keep], points)
        ]


class OnnxRunner:
    """Runs a detector graph on its own ONNX Runtime CPU session (a detector chosen outside a bundle)."""

    def __init__(self, path: Path, input_name: str, output_names: Sequence[str], threads: int = 0) -> None:
        self._session = onnx_session(path, threads)
        self._input = input_name
        self._outputs = list(output_names)

    def __call__(self, blob: np.ndarray) -> list[np.ndarray]:
        return list(self._session.run(self._outputs, {self._input: blob}))

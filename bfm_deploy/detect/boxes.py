"""Box arithmetic for the MTCNN cascade.

Boxes are float arrays ``[x1, y1, x2, y2]`` of *inclusive* pixel indices (0-based), so a box is
``x2 - x1 + 1`` pixels wide: the convention the MTCNN regression targets were trained with.
"""

from __future__ import annotations

import cv2
import numpy as np


def box_sizes(boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return boxes[:, 2] - boxes[:, 0] + 1, boxes[:, 3] - boxes[:, 1] + 1


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, mode: str = "union") -> np.ndarray:
    """Indices of the boxes kept by greedy non-maximum suppression, highest score first.

    ``mode="union"`` compares intersection over union; ``"min"`` intersection over the smaller box, which
    also drops a small box lying inside a larger one (MTCNN's last stage uses it).
    """
    if len(boxes) == 0:
        return np.zeros(0, dtype=np.int64)
    widths, heights = box_sizes(boxes)
    areas = widths * heights
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        best, rest = order[0], order[1:]
        keep.append(best)
        iw = np.maximum(0.0, np.minimum(boxes[best, 2], boxes[rest, 2]) - np.maximum(boxes[best, 0], boxes[rest, 0]) + 1)
        ih = np.maximum(0.0, np.minimum(boxes[best, 3], boxes[rest, 3]) - np.maximum(boxes[best, 1], boxes[rest, 1]) + 1)
        inter = iw * ih
        if mode == "min":
            overlap = inter / np.minimum(areas[best], areas[rest])
        else:
            overlap = inter / (areas[best] + areas[rest] - inter)
        order = rest[overlap <= threshold]
    return np.asarray(keep, dtype=np.int64)


def apply_regression(boxes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Shift each edge by the net's offset, given as a fraction of the box width/height."""
    widths, heights = box_sizes(boxes)
    scale = np.stack([widths, heights, widths, heights], axis=1)
    return boxes + offsets * scale


def to_square(boxes: np.ndarray) -> np.ndarray:
    """Grow each box to a square around its centre (R-Net and O-Net see square crops)."""
    widths, heights = box_sizes(boxes)
    side = np.maximum(widths, heights)
    x1 = boxes[:, 0] + (widths - side) / 2
    y1 = boxes[:, 1] + (heights - side) / 2
    return np.stack([x1, y1, x1 + side - 1, y1 + side - 1], axis=1)


def crop_patches(image: np.ndarray, boxes: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Cut each box out of ``image`` (HxWxC), zero-padding where it leaves the image, resized to size x size.

    Returns the patches (N, size, size, C) and the boxes rounded to the pixels actually cut, which is what
    the next net's regression and landmarks are relative to.
    """
    h, w = image.shape[:2]
    rounded = np.rint(boxes).astype(np.int64)
    patches = np.zeros((len(boxes), size, size, image.shape[2]), dtype=image.dtype)
    for i, (x1, y1, x2, y2) in enumerate(rounded):
        bw, bh = x2 - x1 + 1, y2 - y1 + 1
        if bw <= 0 or bh <= 0:
            continue
        patch = np.zeros((bh, bw, image.shape[2]), dtype=image.dtype)
        sx1, sy1, sx2, sy2 = max(x1, 0), max(y1, 0), min(x2, w - 1), min(y2, h - 1)
        if sx2 >= sx1 and sy2 >= sy1:
            patch[sy1 - y1 : sy2 - y1 + 1, sx1 - x1 : sx2 - x1 + 1] = image[sy1 : sy2 + 1, sx1 : sx2 + 1]
        patches[i] = cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA)
    return patches, rounded.astype(np.float64)

"""Face geometry from 68 landmarks: a face frame, head yaw, jaw intersections, mask anchor points, eye keep-out.

Sides are in image terms, as in MaskTheFace's templates: ``left`` means the head is turned so that the nose
points towards the image's left edge (the image-left ear is hidden), ``right`` the mirror case.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .landmarks import LEFT_EYE, RIGHT_EYE

# |yaw| above this picks a turned-head variant. Chosen by eye on LFW crops, where it separates visibly turned
# heads from frontal ones; about a quarter of LFW faces (223 of 843 sampled) are beyond it.
YAW_SIDE_THRESHOLD = 0.35
# Polylines get this many samples per control-point segment; enough for smooth edges on a 250 px face.
CURVE_SAMPLES = 8
FIXED_SHIFT = 4  # cv2 drawing takes fixed-point coordinates: 4 fractional bits = 1/16 pixel


def fixed_point(points: np.ndarray) -> np.ndarray:
    """Points as the int32 Nx1x2 fixed-point array cv2 drawing functions take with ``shift=FIXED_SHIFT``."""
    return np.round(np.asarray(points) * (1 << FIXED_SHIFT)).astype(np.int32).reshape(-1, 1, 2)


@dataclass(frozen=True)
class FaceGeometry:
    """Landmarks plus the derived frame: ``ex`` runs from the image-left eye to the other, ``dn`` down the face."""

    points: np.ndarray  # 68x2
    ex: np.ndarray
    dn: np.ndarray
    eye_dist: float
    face_width: float
    face_height: float  # nose bridge top (27) to chin (8) along dn
    yaw: float  # -1..1: negative when the nose points to the image's left

    @classmethod
    def from_landmarks(cls, points: np.ndarray) -> FaceGeometry:
        left_eye = points[LEFT_EYE].mean(0)
        right_eye = points[RIGHT_EYE].mean(0)
        eye_vec = right_eye - left_eye
        eye_dist = float(np.linalg.norm(eye_vec))
        # Degenerate landmarks (both eyes on one point): fall back to an upright frame rather than divide by 0.
        ex = eye_vec / eye_dist if eye_dist > 1e-3 else np.array([1.0, 0.0])
        eye_dist = max(eye_dist, 1e-3)
        dn = np.array([-ex[1], ex[0]])
        face_width = max(float(np.dot(points[16] - points[0], ex)), eye_dist)
        face_height = max(float(np.dot(points[8] - points[27], dn)), eye_dist)
        # Nose tip against the jaw at nose level: the near cheek shrinks in projection as the head turns.
        to_left = float(np.dot(points[30] - points[2], ex))
        to_right = float(np.dot(points[14] - points[30], ex))
        total = abs(to_left) + abs(to_right)
        yaw = float(np.clip((to_left - to_right) / total, -1.0, 1.0)) if total > 1e-6 else 0.0
        return cls(points, ex, dn, eye_dist, face_width, face_height, yaw)

    @property
    def side(self) -> str:
        if self.yaw < -YAW_SIDE_THRESHOLD:
            return "left"
        if self.yaw > YAW_SIDE_THRESHOLD:
            return "right"
        return "front"

    def bridge(self, t: float) -> np.ndarray:
        """Point on the nose bridge: t = 0 between the eyes (27), 1 at the nose tip (30)."""
        return self.points[27] + t * (self.points[30] - self.points[27])

    def jaw(self, index: float | np.ndarray) -> np.ndarray:
        """Jaw contour at fractional landmark index(es) in 0..16: 2 values for a scalar, Nx2 for an array."""
        idx = np.clip(np.asarray(index, dtype=np.float64), 0.0, 16.0)
        lo = np.minimum(np.floor(idx).astype(int), 15)
        frac = (idx - lo)[..., None]
        return self.points[lo] + frac * (self.points[lo + 1] - self.points[lo])

    def jaw_index_at_level(self, point: np.ndarray, side: str) -> float:
        """Fractional jaw index where the line through ``point`` along ``ex`` meets the jaw on ``side``.

        The left half of the jaw runs 0..8, the right half 16..8; returns the end (0 or 16) when the line passes
        above the jaw and 8 when it passes below the chin.
        """
        order = range(0, 9) if side == "left" else range(16, 7, -1)
        idx = list(order)
        level = ((self.points[idx] - point) @ self.dn).tolist()
        if level[0] >= 0:
            return float(idx[0])
        for k in range(len(idx) - 1):
            if level[k] < 0 <= level[k + 1]:
                f = -level[k] / (level[k + 1] - level[k])
                return idx[k] + f * (idx[k + 1] - idx[k])
        return 8.0

    def expand(self, point: np.ndarray, amount: float | np.ndarray) -> np.ndarray:
        """Move ``point`` away from the nose tip by ``amount`` of its distance (negative: towards it)."""
        centre = self.points[30]
        return point + amount * (point - centre)

    def to_frame(self, pts: np.ndarray, origin: np.ndarray) -> np.ndarray:
        rel = np.asarray(pts, dtype=np.float64) - origin
        return np.stack([rel @ self.ex, rel @ self.dn], axis=-1)

    def from_frame(self, uv: np.ndarray, origin: np.ndarray) -> np.ndarray:
        uv = np.asarray(uv, dtype=np.float64)
        return origin + uv[..., :1] * self.ex + uv[..., 1:] * self.dn

    def eye_boxes(self) -> list[tuple[float, float, float, float]]:
        """Per eye, the (u0, u1, v_top, v_bottom) region in the frame at landmark 27 that a mask must leave bare.

        Padded sideways by a quarter of the eye's width and downwards by a tenth of the eye distance, so that
        the lower lid and the skin just under it stay visible; upwards it reaches the eyebrows.
        """
        origin = self.points[27]
        boxes = []
        for eye, brow in ((LEFT_EYE, slice(17, 22)), (RIGHT_EYE, slice(22, 27))):
            uv = self.to_frame(self.points[eye], origin)
            brow_v = float(self.to_frame(self.points[brow], origin)[:, 1].min())
            width = float(uv[:, 0].max() - uv[:, 0].min())
            boxes.append(
                (
                    float(uv[:, 0].min()) - 0.25 * width,
                    float(uv[:, 0].max()) + 0.25 * width,
                    brow_v,
                    float(uv[:, 1].max()) + 0.10 * self.eye_dist,
                )
            )
        return boxes

    def clamp_below_eyes(self, curve: np.ndarray) -> np.ndarray:
        """Push points of a mask's top edge that would cover an eye down to just under it.

        Beside an eye the floor falls away at 45 degrees instead of ending in a step, so that a lowered stretch
        of the edge joins the rest in a slope rather than a notch.
        """
        origin = self.points[27]
        uv = self.to_frame(curve, origin)
        for u0, u1, _, v_bottom in self.eye_boxes():
            beside = np.maximum(u0 - uv[:, 0], 0.0) + np.maximum(uv[:, 0] - u1, 0.0)
            uv[:, 1] = np.maximum(uv[:, 1], v_bottom - beside)
        return self.from_frame(uv, origin)

    def clear_eyes(self, alpha: np.ndarray, offset: np.ndarray) -> None:
        """Zero ``alpha`` (a uint8 canvas whose pixel (0, 0) is image pixel ``offset``) over both eye regions."""
        origin = self.points[27]
        for u0, u1, v_top, v_bottom in self.eye_boxes():
            corners = self.from_frame(
                np.array([[u0, v_top], [u1, v_top], [u1, v_bottom], [u0, v_bottom]]), origin
            )
            cv2.fillPoly(alpha, [fixed_point(corners - offset)], 0, lineType=cv2.LINE_8, shift=FIXED_SHIFT)

    def template_anchors(self) -> np.ndarray:
        """The six MaskTheFace anchor points a-f on this face (6x2).

        a/c: the jaw at the height of b; b: the top of the mask on the nose bridge; d/f: the jaw half-way
        from b down to the chin; e: just under the chin.
        """
        b = self.bridge(0.38)
        e = self.expand(self.points[8], 0.04)
        mid = b + 0.55 * (e - b)
        a = self.jaw(self.jaw_index_at_level(b, "left"))
        c = self.jaw(self.jaw_index_at_level(b, "right"))
        d = self.jaw(self.jaw_index_at_level(mid, "left"))
        f = self.jaw(self.jaw_index_at_level(mid, "right"))
        return np.array([a, b, c, d, e, f])


def smooth_curve(control: np.ndarray, samples: int = CURVE_SAMPLES) -> np.ndarray:
    """Catmull-Rom spline through the control points (open curve, ends included)."""
    pts = np.asarray(control, dtype=np.float64)
    if len(pts) < 3:
        return pts.copy()
    padded = np.vstack([2 * pts[0] - pts[1], pts, 2 * pts[-1] - pts[-2]])
    p0, p1, p2, p3 = (padded[k : k + len(pts) - 1][:, None, :] for k in range(4))
    t = np.linspace(0.0, 1.0, samples, endpoint=False)[None, :, None]
    segments = 0.5 * (
        2 * p1
        + (-p0 + p2) * t
        + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2
        + (-p0 + 3 * p1 - 3 * p2 + p3) * t**3
    )
    return np.vstack([segments.reshape(-1, 2), pts[-1:]])


def resample(curve: np.ndarray, count: int) -> np.ndarray:
    """``count`` points evenly spaced by arc length along a polyline."""
    curve = np.asarray(curve, dtype=np.float64)
    seg = np.linalg.norm(np.diff(curve, axis=0), axis=1)
    dist = np.concatenate([[0.0], np.cumsum(seg)])
    if dist[-1] <= 0:
        return np.repeat(curve[:1], count, axis=0)
    target = np.linspace(0.0, dist[-1], count)
    return np.stack([np.interp(target, dist, curve[:, 0]), np.interp(target, dist, curve[:, 1])], axis=1)

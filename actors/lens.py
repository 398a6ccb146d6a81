"""Fisheye lens geometry: pixels <-> ray angles <-> the floor under a ceiling camera. Pure module: numpy and OpenCV.

Two models, both centred on the optical axis at pixel ``(cx, cy)``:

- **OpenCV fisheye** (``cv2.fisheye``, a calibration ``K``, ``D``): a ray at angle ``theta`` from the axis lands at
  distance ``f * theta_d`` from the centre, ``theta_d = theta (1 + k1 theta^2 + k2 theta^4 + k3 theta^6 + k4 theta^8)``
  (``fx`` and ``fy`` may differ: each axis is scaled by its own).
- **Equidistant** (no calibration, the default): ``r = f * theta`` with ``f = radius / (fov / 2)``, where ``radius`` is
  the image circle's radius in pixels and ``fov`` the lens's field of view (180 degrees for most ceiling fisheyes).

Azimuth ``phi`` is measured in degrees clockwise from the image's up (``-y``), as the rotated boxes of CEPDOF are.
For a camera looking straight down from the ceiling, a ray ``(theta, phi)`` meets the floor ``tan(theta)`` camera
heights from the point under the lens, in the direction ``phi`` (``to_floor`` / ``from_floor``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

MAX_THETA = math.radians(89.0)  # rays at or beyond the horizon never meet the floor: clipped just below it


@dataclass(frozen=True)
class Lens:
    """A fisheye lens: centre ``(cx, cy)`` and image-circle ``radius`` in pixels, focal lengths ``fx``/``fy`` in
    pixels per radian and OpenCV's distortion ``k`` (``k1..k4``; zeros: equidistant)."""

    cx: float
    cy: float
    radius: float
    fx: float
    fy: float
    k: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)

    def __post_init__(self) -> None:
        values = (self.cx, self.cy, self.radius, self.fx, self.fy, *self.k)
        if not all(math.isfinite(v) for v in values):
            raise ValueError(f"lens parameters must be finite numbers, got {values}")
        if self.radius <= 0 or self.fx <= 0 or self.fy <= 0:
            raise ValueError(f"lens radius and focal lengths must be > 0, got {self.radius}, {self.fx}, {self.fy}")

    @classmethod
    def equidistant(cls, cx: float, cy: float, radius: float, fov_deg: float = 180.0) -> Lens:
        """The default without a calibration: ``r = f theta``, the circle's edge at ``fov / 2`` from the axis."""
        f = radius / math.radians(fov_deg / 2)
        return cls(cx, cy, radius, f, f)

    @classmethod
    def calibrated(cls, K: np.ndarray | list[list[float]], D: np.ndarray | list[float], radius: float) -> Lens:
        """From OpenCV's fisheye calibration (``K`` 3x3, ``D`` 4 values) and the image circle's radius."""
        k_mat = np.asarray(K, dtype=np.float64).reshape(3, 3)
        d = np.asarray(D, dtype=np.float64).reshape(-1)
        if d.size != 4:
            raise ValueError(f"D must hold the 4 coefficients k1..k4 of cv2.fisheye, got {d.size}")
        k = (float(d[0]), float(d[1]), float(d[2]), float(d[3]))
        return cls(float(k_mat[0, 2]), float(k_mat[1, 2]), radius, float(k_mat[0, 0]), float(k_mat[1, 1]), k)

    # ------------------------------------------------------------------------------------------ pixel <-> ray

    def _distort(self, theta: np.ndarray) -> np.ndarray:
        t2 = theta * theta
        k1, k2, k3, k4 = self.k
        return theta * (1 + t2 * (k1 + t2 * (k2 + t2 * (k3 + t2 * k4))))

    def _undistort(self, theta_d: np.ndarray) -> np.ndarray:
        """Inverse of ``_distort`` by Newton's method (as ``cv2.fisheye.undistortPoints`` does)."""
        if not any(self.k):
            return theta_d
        k1, k2, k3, k4 = self.k
        theta = theta_d.copy()
        for _ in range(20):
            t2 = theta * theta
            f = self._distort(theta) - theta_d
            df = 1 + t2 * (3 * k1 + t2 * (5 * k2 + t2 * (7 * k3 + t2 * 9 * k4)))
            theta = theta - f / df
        return theta

    def rays(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pixels ``(N, 2)`` -> (``theta`` radians from the axis, ``phi`` degrees clockwise from up), each ``(N,)``."""
        p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        u, v = (p[:, 0] - self.cx) / self.fx, (p[:, 1] - self.cy) / self.fy
        theta = self._undistort(np.hypot(u, v))
        phi = np.degrees(np.arctan2(u, -v)) % 360.0
        return theta, phi

    def pixels(self, theta: np.ndarray, phi_deg: np.ndarray) -> np.ndarray:
        """Rays (``theta`` radians, ``phi`` degrees clockwise from up) -> pixels ``(N, 2)``."""
        t = np.asarray(theta, dtype=np.float64).reshape(-1)
        ph = np.radians(np.asarray(phi_deg, dtype=np.float64).reshape(-1))
        r = self._distort(t)
        return np.stack([self.cx + self.fx * r * np.sin(ph), self.cy - self.fy * r * np.cos(ph)], axis=1)

    # ----------------------------------------------------------------------------------------- the floor

    def to_floor(self, points: np.ndarray) -> np.ndarray:
        """Pixels ``(N, 2)`` -> floor positions ``(N, 2)`` in camera heights (x right, y down the image), for a lens
        looking straight down. Rays at or beyond the horizon are clipped to ``MAX_THETA``."""
        theta, phi = self.rays(points)
        rho = np.tan(np.minimum(theta, MAX_THETA))
        ph = np.radians(phi)
        return np.stack([rho * np.sin(ph), -rho * np.cos(ph)], axis=1)

    def from_floor(self, floor: np.ndarray) -> np.ndarray:
        """Floor positions ``(N, 2)`` in camera heights -> pixels ``(N, 2)`` (the inverse of ``to_floor``)."""
        g = np.asarray(floor, dtype=np.float64).reshape(-1, 2)
        theta = np.arctan(np.hypot(g[:, 0], g[:, 1]))
        phi = np.degrees(np.arctan2(g[:, 0], -g[:, 1])) % 360.0
        return self.pixels(theta, phi)

    def azimuth(self, points: np.ndarray) -> np.ndarray:
        """Degrees clockwise from up of each pixel around the centre (no undistortion needed)."""
        p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        return np.degrees(np.arctan2(p[:, 0] - self.cx, -(p[:, 1] - self.cy))) % 360.0


# ---------------------------------------------------------------------------------------- the image circle


@dataclass(frozen=True)
class Circle:
    cx: float
    cy: float
    radius: float
    edge_points: int  # boundary pixels the circle was fitted to (not on the frame's border)


def estimate_circle(frame_bgr: np.ndarray, dark: int = 24) -> Circle | None:
    """The image circle of a fisheye frame: the largest region brighter than ``dark`` (0..255 grey), its boundary
    fitted with a least-squares circle (Kasa's), leaving out boundary pixels on the frame's own border (a circle
    cropped by the sensor). None when no usable circle is found: no dark surround (the lens fills the frame), or
    too little of the boundary is visible."""
    grey = np.asarray(cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2GRAY) if frame_bgr.ndim == 3 else frame_bgr, np.uint8)
    grey = np.asarray(cv2.medianBlur(grey, 5), np.uint8)
    bright = (grey > dark).astype(np.uint8)
    mask = cv2.morphologyEx(bright, cv2.MORPH_CLOSE, np.ones((15, 15), np.uint8))
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if not contours:
        return None
    biggest = max(contours, key=cv2.contourArea)
    pts = biggest.reshape(-1, 2).astype(np.float64)
    h, w = grey.shape[:2]
    inside = (pts[:, 0] > 1) & (pts[:, 0] < w - 2) & (pts[:, 1] > 1) & (pts[:, 1] < h - 2)
    pts = pts[inside]
    if len(pts) < 0.25 * 2 * math.pi * min(w, h) / 2 * 0.5:  # under about an eighth of a frame-sized circle
        return None
    # Kasa fit: x^2 + y^2 + D x + E y + F = 0, least squares.
    a = np.column_stack([pts[:, 0], pts[:, 1], np.ones(len(pts))])
    b = -(pts[:, 0] ** 2 + pts[:, 1] ** 2)
    (d, e, f), *_ = np.linalg.lstsq(a, b, rcond=None)
    cx, cy = -d / 2, -e / 2
    r2 = cx * cx + cy * cy - f
    if r2 <= 0:
        return None
    radius = math.sqrt(r2)
    if not (0 <= cx <= w and 0 <= cy <= h):
        return None  # an arc of something else: a ceiling fisheye's optical centre is inside its frame
    # A fit is only trusted when the boundary really is a circle: median residual under 1 % of the radius.
    resid = np.abs(np.hypot(pts[:, 0] - cx, pts[:, 1] - cy) - radius)
    if float(np.median(resid)) > 0.01 * radius:
        return None
    return Circle(float(cx), float(cy), float(radius), len(pts))

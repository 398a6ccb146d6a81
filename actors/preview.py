"""One camera's set-up drawn on one of its frames, for an installer to check by eye (``edgepair camera preview``).

Pure drawing (numpy, OpenCV): the frame in, a copy with the camera's set-up drawn out, at the frame's own size. Colours
(BGR) are fixed so a test can find each item where the config puts it:

- the lens's image circle: yellow ``CIRCLE``; the borders of the rotated views' wedges: cyan ``VIEWS``;
- zones: blue ``ZONE`` outlines; counting lines: red ``LINE``, with a small disc on the in side;
- detections: green ``DETECTION`` (rotated boxes under a fisheye, else rectangles); tracks: magenta ``TRACK`` id labels
  at their anchor.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

from actors.detections import Detections
from actors.fisheye import RotatedBoxes, View
from actors.lens import Lens

CIRCLE = (0, 255, 255)
VIEWS = (255, 255, 0)
ZONE = (255, 0, 0)
LINE = (0, 0, 255)
DETECTION = (0, 255, 0)
TRACK = (255, 0, 255)
Point = tuple[float, float]


def _px(p: Point, w: int, h: int) -> tuple[int, int]:
    return round(p[0] * w), round(p[1] * h)


def thickness(frame: np.ndarray) -> int:
    """Line width in pixels: 3 on a 1000-pixel frame, at least 2."""
    return max(2, round(max(frame.shape[:2]) / 330))


def draw_lens(out: np.ndarray, lens: Lens, views: Sequence[View]) -> None:
    t = thickness(out)
    for v in views:
        for side in (-v.half_wedge, v.half_wedge):
            a = math.radians(v.phi + side)
            end = (lens.cx + lens.radius * math.sin(a), lens.cy - lens.radius * math.cos(a))
            cv2.line(out, (round(lens.cx), round(lens.cy)), (round(end[0]), round(end[1])), VIEWS, max(1, t // 2))
    cv2.circle(out, (round(lens.cx), round(lens.cy)), round(lens.radius), CIRCLE, t)


def draw_zones(out: np.ndarray, zones: Sequence[tuple[str, Sequence[Point]]]) -> None:
    h, w = out.shape[:2]
    for zone_id, polygon in zones:
        pts = np.array([_px(p, w, h) for p in polygon], np.int32)
        cv2.polylines(out, [pts], True, ZONE, thickness(out))
        cv2.putText(out, zone_id, tuple(int(v) for v in pts.min(axis=0)), 0, 0.6, ZONE, 2)


def draw_lines(out: np.ndarray, lines: Sequence[tuple[str, Point, Point, Point]]) -> None:
    h, w = out.shape[:2]
    t = thickness(out)
    for line_id, start, end, in_point in lines:
        a, b = _px(start, w, h), _px(end, w, h)
        cv2.line(out, a, b, LINE, t)
        mid = ((a[0] + b[0]) / 2, (a[1] + b[1]) / 2)
        d = np.array(_px(in_point, w, h), np.float64) - mid
        d = d / max(1e-9, float(np.hypot(*d))) * 6 * t
        cv2.circle(out, (round(mid[0] + d[0]), round(mid[1] + d[1])), 2 * t, LINE, -1)
        cv2.putText(out, line_id, (a[0] + 4, a[1] - 6), 0, 0.6, LINE, 2)


def draw_detections(out: np.ndarray, dets: Detections, rotated: RotatedBoxes | None = None) -> None:
    t = max(1, thickness(out) // 2)
    if rotated is not None:
        for corners in rotated.corners():
            cv2.polylines(out, [np.round(corners).astype(np.int32)], True, DETECTION, t)
        return
    for x0, y0, x1, y1 in np.round(dets.xyxy).astype(int):
        cv2.rectangle(out, (x0, y0), (x1, y1), DETECTION, t)


def draw_tracks(out: np.ndarray, tracks: Detections, anchor: str) -> None:
    for (x, y), tid in zip(tracks.anchors(anchor), tracks.tracker_id, strict=True):
        cv2.circle(out, (round(x), round(y)), thickness(out) * 2, TRACK, -1)
        cv2.putText(out, f"#{tid}", (round(x) + 6, round(y) - 6), 0, 0.8, TRACK, 2)

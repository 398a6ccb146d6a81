"""Detection under a ceiling fisheye: rotated views in, person boxes in fisheye pixels out. Pure module (numpy, OpenCV).

Seen from a ceiling fisheye, people radiate from the centre: their heads point away from it, so an upright person
detector sees only those standing below the centre (heads down the image are upside-down for it) or none at all.
The method, chosen by measurement on CEPDOF (``bench/fisheye.py``, README "Fisheye cameras"):

1. ``plan_views``: ``n`` views, view ``k`` the frame rotated by ``phi_k = k * 360 / n`` degrees so that the direction
   ``phi_k`` (clockwise from up) points up, cropped to the wedge of the circle around it (``+- 180 / n`` degrees) with
   a margin, and scaled so its longer side is ``view_px``. One affine map per view, computed once per camera.
2. ``make_views``: ``cv2.warpAffine`` of the frame with each map (the rotation, crop and scaling in one pass). The
   views are ordinary BGR frames: they go through the same detector (``Detector.detect_batch`` or the shared
   inference server) as any camera's frames, batched.
3. ``merge_views``: each view's boxes are mapped back into fisheye pixels as rotated boxes (centre, width, height,
   angle: the box's up along the radius through its centre). A box is taken first from the view where it stands most
   upright: its centre within the view's own wedge (people near the centre, within ``CENTRE_FRACTION`` of the radius,
   from every view), duplicates removed by rotated-box NMS. Then a box from a neighbouring view (up to
   ``NEIGHBOUR_WEDGES`` wedges beyond its own) fills a gap where it overlaps none of those: a person the own view
   missed, found tilted in the next one (the first round dropped them; README "Fisheye cameras").

The result is the video path's ``Detections`` (``xyxy``: the axis-aligned hull of each rotated box, so the tracker,
lines and zones work unchanged in raw fisheye pixels) plus the rotated boxes themselves (``RotatedBoxes``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import cv2
import numpy as np

from actors.detections import Detections
from actors.lens import Lens

DEFAULT_VIEWS = 12  # bench/fisheye.py on CEPDOF: YOLOX-nano recall/precision .94/.94 with 8, .99/1.00 with 12
DEFAULT_VIEW_PX = 640
MARGIN = 0.25  # of the radius, around each view's wedge: a person whose centre is in the wedge fits in the view
CENTRE_FRACTION = 0.15  # of the radius: boxes centred this close to the centre are taken from every view (then NMS)
NEIGHBOUR_WEDGES = 0.5  # see merge_views: how far beyond its own wedge a view's box may fill a gap (in wedges)
ROTATED_NMS_IOU = 0.3  # two boxes of one person from two views overlap; two people side by side seldom do by this


@dataclass(frozen=True)
class View:
    """One rotated crop: ``matrix`` (2x3) maps fisheye pixels to view pixels; ``size`` is ``(width, height)``."""

    phi: float  # degrees clockwise from up: this direction is up in the view
    half_wedge: float  # degrees: boxes centred within +- this of ``phi`` are taken from this view
    matrix: np.ndarray
    size: tuple[int, int]
    scale: float  # view pixels per fisheye pixel

    @property
    def inverse(self) -> np.ndarray:
        return cv2.invertAffineTransform(self.matrix)


@dataclass(frozen=True)
class RotatedBoxes:
    """Rotated boxes in fisheye pixels: ``(N, 5)`` rows ``cx, cy, w, h, angle`` (degrees clockwise, as CEPDOF and
    ``cv2.boxPoints`` use them: ``h`` runs along the angle's up), with their scores."""

    boxes: np.ndarray
    scores: np.ndarray

    def __len__(self) -> int:
        return len(self.boxes)

    def corners(self) -> np.ndarray:
        """``(N, 4, 2)`` corners of each box."""
        return np.array([cv2.boxPoints(((b[0], b[1]), (b[2], b[3]), b[4])) for b in self.boxes]).reshape(-1, 4, 2)

    def hulls(self) -> np.ndarray:
        """``(N, 4)`` axis-aligned ``xyxy`` hulls."""
        c = self.corners()
        if len(c) == 0:
            return np.zeros((0, 4), np.float32)
        return np.concatenate([c.min(axis=1), c.max(axis=1)], axis=1).astype(np.float32)


def plan_views(
    lens: Lens, n: int = DEFAULT_VIEWS, view_px: int = DEFAULT_VIEW_PX, margin: float = MARGIN
) -> list[View]:
    """``n`` rotated wedge views of the circle (see the module doc); ``n`` in 1..36, ``view_px`` 64..4096."""
    if not 1 <= n <= 36:
        raise ValueError(f"views must be 1..36, got {n}")
    if not 64 <= view_px <= 4096:
        raise ValueError(f"view_px must be 64..4096, got {view_px}")
    radius = lens.radius
    half = 180.0 / n
    pad = margin * radius
    if n == 1:
        half_w, top, bottom = radius + pad, radius + pad, radius + pad
    else:
        half_w = radius * math.sin(math.radians(min(half, 90.0))) + pad
        top, bottom = radius, pad if half <= 90 else radius * -math.cos(math.radians(half)) + pad
    width, height = 2 * half_w, top + bottom
    scale = view_px / max(width, height)
    views = []
    for k in range(n):
        phi = k * 360.0 / n
        ph = math.radians(phi)
        up = np.array([math.sin(ph), -math.cos(ph)])
        right = np.array([math.cos(ph), math.sin(ph)])
        a = scale * np.stack([right, -up])
        centre = np.array([lens.cx, lens.cy])
        b = np.array([scale * half_w, scale * top]) - a @ centre
        matrix = np.concatenate([a, b[:, None]], axis=1)
        views.append(View(phi, half, matrix, (round(width * scale), round(height * scale)), scale))
    return views


def make_views(frame_bgr: np.ndarray, views: Sequence[View]) -> list[np.ndarray]:
    """The view images of one frame (BGR uint8), black outside the frame."""
    return [
        cv2.warpAffine(frame_bgr, v.matrix, v.size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        for v in views
    ]


def _angle_diff(a: np.ndarray, b: float) -> np.ndarray:
    return np.abs((a - b + 180.0) % 360.0 - 180.0)


def view_boxes(dets: Detections, view: View, lens: Lens) -> RotatedBoxes:
    """One view's axis-aligned boxes -> rotated boxes in fisheye pixels (all of them, none filtered)."""
    if len(dets) == 0:
        return RotatedBoxes(np.zeros((0, 5), np.float32), np.zeros(0, np.float32))
    xyxy = dets.xyxy.astype(np.float64)
    centres = np.stack([(xyxy[:, 0] + xyxy[:, 2]) / 2, (xyxy[:, 1] + xyxy[:, 3]) / 2], axis=1)
    inv = view.inverse
    fish = centres @ inv[:, :2].T + inv[:, 2]
    w = (xyxy[:, 2] - xyxy[:, 0]) / view.scale
    h = (xyxy[:, 3] - xyxy[:, 1]) / view.scale
    # The box's up along the radius through its centre (where an upright person's head points). Near the centre
    # (within CENTRE_FRACTION of the radius, where boxes come from every view, a person seen upright in one and
    # lying in another) the radius says little of how the box lies: its own view's up, where its w and h were
    # measured, so that the copies of one person from two views overlap as they do in the frame (NMS removes them).
    radial = lens.azimuth(fish)
    near = np.hypot(fish[:, 0] - lens.cx, fish[:, 1] - lens.cy) < CENTRE_FRACTION * lens.radius
    angle = np.where(near, view.phi, radial)
    angle = (angle + 180.0) % 360.0 - 180.0
    boxes = np.column_stack([fish, w, h, angle]).astype(np.float32)
    return RotatedBoxes(boxes, dets.confidence.astype(np.float32))


def rotated_nms(boxes: RotatedBoxes, iou_threshold: float = ROTATED_NMS_IOU) -> np.ndarray:
    """Indices (best first) kept by greedy NMS on rotated-box IoU (``cv2.dnn.NMSBoxesRotated``)."""
    if len(boxes) == 0:
        return np.zeros(0, np.int64)
    rects = [((float(b[0]), float(b[1])), (float(b[2]), float(b[3])), float(b[4])) for b in boxes.boxes]
    shifted = (boxes.scores.astype(np.float64) - float(np.min(boxes.scores)) + 1.0).tolist()
    idx = cv2.dnn.NMSBoxesRotated(rects, shifted, 0.0, float(iou_threshold))
    return np.asarray(idx, dtype=np.int64).reshape(-1)


def merge_views(
    per_view: Sequence[Detections],
    views: Sequence[View],
    lens: Lens,
    iou_threshold: float = ROTATED_NMS_IOU,
    wedge_filter: bool = True,
    neighbours: float = NEIGHBOUR_WEDGES,
) -> RotatedBoxes:
    """Every view's detections as rotated boxes in fisheye pixels, duplicates removed by rotated NMS, each person from
    the view where it stands most upright (``wedge_filter``):

    1. boxes centred in their view's own wedge (or near the centre), rotated NMS among them;
    2. boxes up to ``neighbours`` wedge widths beyond their view's wedge (a person the own view missed: tilted by up
       to ``(1 + 2 neighbours)`` half-wedges, still in the crop) fill the gaps: dropped when they overlap any box of
       step 1 at all, then rotated NMS among them. 0: step 1 only (the first round's rule).

    ``wedge_filter`` False: every box of every view, rotated NMS by score alone."""
    if len(per_view) != len(views):
        raise ValueError(f"got detections of {len(per_view)} views for {len(views)} views")
    own: list[RotatedBoxes] = []
    near: list[RotatedBoxes] = []
    for dets, view in zip(per_view, views, strict=True):
        rb = view_boxes(dets, view, lens)
        if not wedge_filter:
            own.append(rb)
            continue
        tilt = _angle_diff(lens.azimuth(rb.boxes[:, :2]), view.phi)
        r = np.hypot(rb.boxes[:, 0] - lens.cx, rb.boxes[:, 1] - lens.cy)
        mine = (tilt <= view.half_wedge) | (r < CENTRE_FRACTION * lens.radius)
        beside = ~mine & (tilt <= view.half_wedge * (1 + 2 * neighbours))
        own.append(RotatedBoxes(rb.boxes[mine], rb.scores[mine]))
        near.append(RotatedBoxes(rb.boxes[beside], rb.scores[beside]))
    kept = _nms(_concat(own), iou_threshold)
    fill = _concat(near)
    if len(fill) and len(kept):
        alone = rotated_iou(fill.boxes, kept.boxes).max(axis=1) <= 0.0
        fill = RotatedBoxes(fill.boxes[alone], fill.scores[alone])
    return _concat([kept, _nms(fill, iou_threshold)])


def _concat(parts: Sequence[RotatedBoxes]) -> RotatedBoxes:
    boxes = [p.boxes for p in parts]
    scores = [p.scores for p in parts]
    return RotatedBoxes(
        np.concatenate(boxes).reshape(-1, 5) if boxes else np.zeros((0, 5), np.float32),
        np.concatenate(scores).reshape(-1) if scores else np.zeros(0, np.float32),
    )


def _nms(boxes: RotatedBoxes, iou_threshold: float) -> RotatedBoxes:
    keep = rotated_nms(boxes, iou_threshold)
    return RotatedBoxes(boxes.boxes[keep], boxes.scores[keep])


def to_detections(boxes: RotatedBoxes) -> Detections:
    """The video path's type: axis-aligned hulls of the rotated boxes, their scores, person class."""
    return Detections(xyxy=boxes.hulls(), confidence=boxes.scores, class_id=np.zeros(len(boxes), np.int64))


# ---------------------------------------------------------------------------------------------------- scoring


def rotated_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix ``(len(a), len(b))`` of rotated boxes ``cx, cy, w, h, angle`` (exact polygon intersection)."""
    out = np.zeros((len(a), len(b)), np.float64)
    for i, p in enumerate(a):
        rp = ((float(p[0]), float(p[1])), (float(p[2]), float(p[3])), float(p[4]))
        for j, q in enumerate(b):
            rq = ((float(q[0]), float(q[1])), (float(q[2]), float(q[3])), float(q[4]))
            kind, pts = cv2.rotatedRectangleIntersection(rp, rq)
            if kind == cv2.INTERSECT_NONE or pts is None:
                continue
            inter = cv2.contourArea(cv2.convexHull(pts))
            union = p[2] * p[3] + q[2] * q[3] - inter
            out[i, j] = inter / union if union > 0 else 0.0
    return out


# ------------------------------------------------------------------------------------------ the camera's path


class LensLike(Protocol):
    """What the path needs of a camera's lens config (``cluster.lens_config.LensConfig``)."""

    @property
    def is_fisheye(self) -> bool: ...

    @property
    def views(self) -> int: ...

    def lens_for(self, width: int, height: int) -> Lens: ...


@dataclass(frozen=True)
class _Pending:
    refs: list[Any]
    size: tuple[int, int]


class FisheyeDetection:
    """The fisheye path around a camera's ``submit``/``resolve`` pair (the shared inference server's): ``submit``
    sends the frame's views, each as a frame of its own, and ``resolve`` merges their detections into fisheye pixels.
    The views of each frame size are planned once (``plan_views``) and kept."""

    def __init__(
        self, lens: LensLike, submit: Callable[[np.ndarray], Any], resolve: Callable[[Any], Detections]
    ) -> None:
        self.lens_config = lens
        self._submit = submit
        self._resolve = resolve
        self._plans: dict[tuple[int, int], tuple[Lens, list[View]]] = {}
        self.last: RotatedBoxes | None = None  # the rotated boxes of the latest frame resolved (preview, debugging)

    def plan(self, width: int, height: int) -> tuple[Lens, list[View]]:
        key = (width, height)
        if key not in self._plans:
            lens = self.lens_config.lens_for(width, height)
            self._plans[key] = (lens, plan_views(lens, self.lens_config.views))
        return self._plans[key]

    def submit(self, frame: np.ndarray) -> _Pending:
        height, width = frame.shape[:2]
        _, views = self.plan(width, height)
        return _Pending([self._submit(v) for v in make_views(frame, views)], (width, height))

    def resolve(self, pending: _Pending) -> Detections:
        lens, views = self.plan(*pending.size)
        boxes = merge_views([self._resolve(r) for r in pending.refs], views, lens)
        self.last = boxes
        return to_detections(boxes)


def wrap_detection(
    lens: LensLike | None, submit: Callable[[np.ndarray], Any], resolve: Callable[[Any], Detections]
) -> tuple[Callable[[np.ndarray], Any], Callable[[Any], Detections]]:
    """A camera's ``(submit, resolve)``: unchanged for a normal lens (or none), the fisheye path for a fisheye."""
    if lens is None or not lens.is_fisheye:
        return submit, resolve
    path = FisheyeDetection(lens, submit, resolve)
    return path.submit, path.resolve


def wrap_ready(
    lens: LensLike | None, ready: Callable[[Any, float], bool] | None
) -> Callable[[Any, float], bool] | None:
    """The camera's ``ready(ref, timeout)`` for what ``wrap_detection``'s ``submit`` returns: for a fisheye, a
    frame's result is there once every view's is (it waits up to ``timeout`` on the first view not yet answered)."""
    if ready is None or lens is None or not lens.is_fisheye:
        return ready
    inner = ready

    def views_ready(pending: _Pending, timeout: float) -> bool:
        return all(inner(r, timeout) for r in pending.refs)

    return views_ready

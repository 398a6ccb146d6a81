"""A ByteTrack-style multi-object tracker: two-stage association on a Kalman motion model. Pure numpy/scipy.

Rules:

- Detections at or above ``high_thresh`` are matched first against tracked and lost tracks (IoU with the Kalman
  prediction, Hungarian assignment, at least ``match_iou``); detections between ``low_thresh`` and ``high_thresh``
  then recover the tracked tracks left unmatched (at least ``second_match_iou``).
- A new track starts from an unmatched detection at or above ``new_track_thresh`` and is *confirmed* after
  ``min_hits`` matched frames; only confirmed tracks are returned (so a flicker never gets counted).
- A track unmatched for more than ``max_lost_s`` seconds is removed; its id is reported once in ``removed_ids``.
  Ids are positive, increasing and never reused.
- Time-aware: the Kalman prediction is scaled by the time since the last frame, so dropped frames or a lower
  frame rate do not break association.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from actors.detections import Detections


@dataclass(frozen=True)
class TrackerConfig:
    high_thresh: float = 0.5
    low_thresh: float = 0.1
    new_track_thresh: float = 0.6
    match_iou: float = 0.2
    second_match_iou: float = 0.5
    unconfirmed_match_iou: float = 0.3
    min_hits: int = 3
    max_lost_s: float = 3.0
    nominal_dt: float = 0.1  # seconds per step of the motion model (velocities are per nominal step)


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix between xyxy boxes ``a`` (N, 4) and ``b`` (M, 4)."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), np.float32)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return (inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)).astype(np.float32)


def match(cost_iou: np.ndarray, min_iou: float) -> tuple[list[tuple[int, int]], list[int], list[int]]:
    """Hungarian assignment maximising IoU; pairs below ``min_iou`` are left unmatched."""
    n, m = cost_iou.shape
    if n == 0 or m == 0:
        return [], list(range(n)), list(range(m))
    rows, cols = linear_sum_assignment(-cost_iou)
    pairs = [(int(r), int(c)) for r, c in zip(rows, cols, strict=True) if cost_iou[r, c] >= min_iou]
    mr = {r for r, _ in pairs}
    mc = {c for _, c in pairs}
    return pairs, [r for r in range(n) if r not in mr], [c for c in range(m) if c not in mc]


def _xyxy_to_xyah(b: np.ndarray) -> np.ndarray:
    w, h = b[2] - b[0], b[3] - b[1]
    return np.array([b[0] + w / 2, b[1] + h / 2, w / max(h, 1e-6), h], dtype=np.float64)


class KalmanBox:
    """Constant-velocity Kalman filter on (cx, cy, aspect, h), noise scaled by box height (as in ByteTrack)."""

    _std_pos = 1.0 / 20
    _std_vel = 1.0 / 160

    def __init__(self, box: np.ndarray) -> None:
        z = _xyxy_to_xyah(box)
        self.x = np.concatenate([z, np.zeros(4)])
        h = z[3]
        std = [
            2 * self._std_pos * h,
            2 * self._std_pos * h,
            1e-2,
            2 * self._std_pos * h,
            10 * self._std_vel * h,
            10 * self._std_vel * h,
            1e-5,
            10 * self._std_vel * h,
        ]
        self.P = np.diag(np.square(std))

    def predict(self, steps: float) -> None:
        F = np.eye(8)
        F[:4, 4:] = np.eye(4) * steps
        h = self.x[3]
        q = [
            self._std_pos * h,
            self._std_pos * h,
            1e-2,
            self._std_pos * h,
            self._std_vel * h,
            self._std_vel * h,
            1e-5,
            self._std_vel * h,
        ]
        Q = np.diag(np.square(q)) * max(steps, 1e-3)
        self.x = F @ self.x
        self.P = F @ self.P @ F.T + Q

    def update(self, box: np.ndarray) -> None:
        z = _xyxy_to_xyah(box)
        H = np.eye(4, 8)
        h = self.x[3]
        R = np.diag(np.square([self._std_pos * h, self._std_pos * h, 1e-1, self._std_pos * h]))
        S = H @ self.P @ H.T + R
        K = self.P @ H.T @ np.linalg.inv(S)
        self.x = self.x + K @ (z - H @ self.x)
        self.P = (np.eye(8) - K @ H) @ self.P

    def box(self) -> np.ndarray:
        cx, cy, a, h = self.x[:4]
        h = max(h, 1e-3)
        w = a * h
        return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dtype=np.float32)


class _Track:
    def __init__(self, track_id: int, box: np.ndarray, score: float, ts: float) -> None:
        self.id = track_id
        self.kf = KalmanBox(box)
        self.box = box.astype(np.float32)
        self.score = score
        self.hits = 1
        self.last_seen = ts
        self.confirmed = False
        self.matched_now = True

    def predicted(self) -> np.ndarray:
        return self.kf.box()


class ByteTracker:
    def __init__(self, config: TrackerConfig | None = None) -> None:
        self.config = config or TrackerConfig()
        self.reset()

    def reset(self) -> None:
        self._tracks: list[_Track] = []
        self._next_id = 1
        self._last_ts: float | None = None
        self.removed_ids: list[int] = []

    def active_ids(self) -> list[int]:
        return [t.id for t in self._tracks if t.confirmed]

    def update(self, detections: Detections, ts: float) -> Detections:
        """Associate this frame's detections; return the confirmed tracks matched in this frame."""
        c = self.config
        dt = c.nominal_dt if self._last_ts is None else max(ts - self._last_ts, 1e-3)
        self._last_ts = ts
        steps = dt / c.nominal_dt
        for t in self._tracks:
            t.kf.predict(steps)
            t.matched_now = False
        scores = detections.confidence
        high = np.flatnonzero(scores >= c.high_thresh)
        low = np.flatnonzero((scores >= c.low_thresh) & (scores < c.high_thresh))
        boxes = detections.xyxy
        confirmed = [t for t in self._tracks if t.confirmed]
        unconfirmed = [t for t in self._tracks if not t.confirmed]

        # Stage 1: high-score detections against confirmed tracks (tracked and lost).
        pred = np.array([t.predicted() for t in confirmed]).reshape(-1, 4)
        pairs, left_t, left_d = match(iou(pred, boxes[high]), c.match_iou)
        for ti, di in pairs:
            self._hit(confirmed[ti], high[di], detections, ts)
        rest_tracks = [confirmed[i] for i in left_t]
        rest_high = high[left_d]

        # Stage 2: low-score detections recover tracks seen in the previous frame(s) that stage 1 left.
        recent = [t for t in rest_tracks if ts - t.last_seen <= 2 * dt + 1e-6]
        pred2 = np.array([t.predicted() for t in recent]).reshape(-1, 4)
        pairs2, _lt2, _ld2 = match(iou(pred2, boxes[low]), c.second_match_iou)
        for ti, di in pairs2:
            self._hit(recent[ti], low[di], detections, ts)

        # Unconfirmed tracks take what is left of the high detections.
        pred3 = np.array([t.predicted() for t in unconfirmed]).reshape(-1, 4)
        pairs3, left_u, left_d3 = match(iou(pred3, boxes[rest_high]), c.unconfirmed_match_iou)
        for ti, di in pairs3:
            self._hit(unconfirmed[ti], rest_high[di], detections, ts)
        dead_unconfirmed = {unconfirmed[i].id for i in left_u}

        # New tracks from unmatched confident detections.
        for di in left_d3:
            d = rest_high[di]
            if scores[d] >= c.new_track_thresh:
                t = _Track(self._next_id, boxes[d], float(scores[d]), ts)
                self._next_id += 1
                t.confirmed = c.min_hits <= 1
                self._tracks.append(t)

        # Removal: unconfirmed tracks die when unmatched; confirmed ones after max_lost_s.
        self.removed_ids = []
        kept = []
        for t in self._tracks:
            if not t.confirmed and t.id in dead_unconfirmed:
                continue
            if t.confirmed and ts - t.last_seen > c.max_lost_s:
                self.removed_ids.append(t.id)
                continue
            kept.append(t)
        self._tracks = kept
        out = [t for t in self._tracks if t.confirmed and t.matched_now]
        if not out:
            return Detections.empty()
        return Detections(
            xyxy=np.array([t.box for t in out], np.float32),
            confidence=np.array([t.score for t in out], np.float32),
            tracker_id=np.array([t.id for t in out], np.int64),
        )

    def _hit(self, t: _Track, d: int, dets: Detections, ts: float) -> None:
        t.kf.update(dets.xyxy[d])
        t.box = dets.xyxy[d].astype(np.float32)
        t.score = float(dets.confidence[d])
        t.last_seen = ts
        t.hits += 1
        t.matched_now = True
        if not t.confirmed and t.hits >= self.config.min_hits:
            t.confirmed = True

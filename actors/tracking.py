"""A ByteTrack-style multi-object tracker: two-stage association on a Kalman motion model. Pure numpy/scipy.

Rules, applied in this order at every ``update(detections, ts)``:

1. A confirmed track unseen for more than ``max_lost_s`` seconds is removed before association (it can no longer
   be matched); its id is reported once in ``removed_ids``. Seconds, not frames, so it means the same at any rate.
2. Every track is predicted forward by ``(ts - previous ts) / nominal_dt`` steps of its constant-velocity Kalman
   filter on (cx, cy, aspect, h): a dropped frame or a slower camera moves the prediction as far as the person
   walked. A lost track keeps its velocity but not its growth in height (as in ByteTrack).
3. First association: detections scoring at least ``high_thresh`` against the confirmed tracks, tracked and lost,
   by IoU with the prediction (multiplied by the detection score when ``fuse_score``), Hungarian assignment, pairs
   below ``match_iou`` rejected.
4. Second association: detections scoring in ``[low_thresh, high_thresh)`` against the tracks left from step 3
   that were matched in the previous update (not the lost ones), plain IoU at least ``second_match_iou``. This is
   what lets a half-occluded person, whose score drops, keep the track.
5. Unconfirmed tracks against the high detections left from step 3 (at least ``unconfirmed_match_iou``); an
   unconfirmed track unmatched in any update is dropped at once, so a flicker never lives long.
6. A high detection still unmatched and scoring at least ``new_track_thresh`` starts a new unconfirmed track.
   A track is confirmed on its ``min_hits``-th matched update (in consecutive updates).
7. Re-linking (``link_s`` > 0): a track confirmed in this update continues a lost confirmed track, taking over its
   id, when the lost track was last seen before the new one was born, at most ``link_s`` earlier, and its feet,
   carried forward at its last velocity to the new track's birth, are within ``link_dist`` box heights of the new
   track's first feet (box heights within a factor 1.5). Several at once: the Hungarian assignment on that distance.
   The lost track is then dropped without being reported removed: the person goes on under the same id. This is
   what keeps a crossing when a detector misses someone for a few frames near a line and the Kalman prediction no
   longer overlaps them when they come back (the tracker's own re-finding needs that overlap).

Only confirmed tracks matched in this update are returned, with the *detection's* box, score and class (not the
Kalman prediction), ordered by id. Ids are given at confirmation, so a flicker costs no id: they are 1, 2, 3, ...
in order of confirmation (a re-linked track takes the id it continues) and never reused by this tracker
(``reset()`` starts again from 1).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from actors.detections import Detections

log = logging.getLogger(__name__)

EPS_S = 1e-6  # time comparisons tolerate the rounding of epoch-second floats (about 2e-7 s today)
VELOCITY_S = 1.0  # a track's velocity for re-linking is measured over its last second of matched feet
LINK_HEIGHT_RATIO = 1.5  # re-linking: box heights of the two fragments within this factor
# Re-linking defaults (rule 7), chosen on random lines of PETS09-S2L1 (tuning seeds 1-3, docs/accuracy.md):
# PicoDet-S-416 count error 7.4 -> 6.9 % with the confirmation delay of the lines; 1.5 s / 0.75 and 2.5 s give
# the same, 1.5 box heights over-links (7.3 %).
LINK_S = 2.0
LINK_DIST = 1.0


@dataclass(frozen=True)
class TrackerConfig:
    """Tracker thresholds. Scores and IoUs are in 0..1; ByteTrack's defaults except where said.

    - ``high_thresh`` (0.5): detections at or above take part in the first association.
    - ``low_thresh`` (0.1): detections at or above (and below ``high_thresh``) take part in the second; lower ones
      are ignored.
    - ``new_track_thresh`` (0.6): score an unmatched detection needs to start a track.
    - ``match_iou`` (0.1): minimum similarity (IoU, times the score when ``fuse_score``) in the first association.
      Half ByteTrack's 0.2 (its ``match_thresh`` 0.8 on the distance), which was set for 30 fps: at the 5-10 fps of
      a CCTV pipeline a walker moves three to six times farther between updates, the prediction overlaps the next
      box by less, and with the score fused a 0.6-score detection needed an IoU of 0.33. Measured on PETS09-S2L1
      (PicoDet-S-416, 10 fps): IDF1 0.64 -> 0.79, ID switches 36 -> 25, MOTA 0.80 -> 0.81; 0.3 gives IDF1 0.53.
      Gating stays: the Hungarian assignment maximises the total, and a pair still needs some overlap.
    - ``second_match_iou`` (0.5): minimum IoU in the second association (low-score detections).
    - ``unconfirmed_match_iou`` (0.1): minimum similarity for an unconfirmed track (times the score when fused).
      Lower than ByteTrack's 0.3 on purpose: a new track has no velocity yet, and at 5-10 fps the second box of a
      person walking sideways (a box 0.4 times as wide as high) overlaps the first by little.
    - ``min_hits`` (3): matched updates before a new track is confirmed and returned (ByteTrack: 2); 1 confirms
      at once.
    - ``max_lost_s`` (3.0): seconds a confirmed track is kept without a match, waiting to be re-found (ByteTrack:
      30 frames, 1 s at 30 fps; longer here for people hidden behind shelves).
    - ``fuse_score`` (True): multiply IoU by the detection score in the first and unconfirmed associations.
    - ``nominal_dt`` (1/30): seconds of one Kalman step, the frame interval ByteTrack's noise weights were tuned
      for (30 fps); velocities are per step and the process noise grows with the steps, so predictions and their
      uncertainty do not depend on the frame rate.
    - ``link_s`` (LINK_S): how long after a confirmed track was last seen a newly confirmed track may continue it
      (rule 7); 0 turns re-linking off. At most ``max_lost_s`` in effect (a removed track is never continued).
    - ``link_dist`` (LINK_DIST): gate of rule 7, in box heights of the lost track.
    """

    high_thresh: float = 0.5
    low_thresh: float = 0.1
    new_track_thresh: float = 0.6
    match_iou: float = 0.1
    second_match_iou: float = 0.5
    unconfirmed_match_iou: float = 0.1
    min_hits: int = 3
    max_lost_s: float = 3.0
    fuse_score: bool = True
    nominal_dt: float = 1 / 30
    link_s: float = LINK_S
    link_dist: float = LINK_DIST

    def __post_init__(self) -> None:
        if not 0 <= self.low_thresh <= self.high_thresh <= 1:
            raise ValueError(
                "TrackerConfig: expected 0 <= low_thresh <= high_thresh <= 1,"
                f" got {self.low_thresh}, {self.high_thresh}"
            )
        for name in ("new_track_thresh", "match_iou", "second_match_iou", "unconfirmed_match_iou"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise ValueError(f"TrackerConfig.{name} must be in 0..1, got {value}")
        if self.min_hits < 1:
            raise ValueError(f"TrackerConfig.min_hits must be at least 1, got {self.min_hits}")
        if self.link_s < 0 or self.link_dist < 0:
            raise ValueError(
                f"TrackerConfig: expected link_s >= 0 and link_dist >= 0, got {self.link_s}, {self.link_dist}"
            )
        if self.max_lost_s < 0 or self.nominal_dt <= 0:
            raise ValueError(
                f"TrackerConfig: expected max_lost_s >= 0 and nominal_dt > 0, got {self.max_lost_s}, {self.nominal_dt}"
            )


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix between xyxy boxes ``a`` (N, 4) and ``b`` (M, 4)."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), np.float64)
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def match(similarity: np.ndarray, min_similarity: float) -> tuple[list[tuple[int, int]], list[int], list[int]]:
    """Hungarian assignment maximising total similarity; pairs below ``min_similarity`` are left unmatched.

    Returns (pairs of (row, column), unmatched rows, unmatched columns), each in increasing order.
    """
    n, m = similarity.shape
    if n == 0 or m == 0:
        return [], list(range(n)), list(range(m))
    rows, cols = linear_sum_assignment(-similarity)
    pairs = [(int(r), int(c)) for r, c in zip(rows, cols, strict=True) if similarity[r, c] >= min_similarity]
    matched_rows = {r for r, _ in pairs}
    matched_cols = {c for _, c in pairs}
    return pairs, [r for r in range(n) if r not in matched_rows], [c for c in range(m) if c not in matched_cols]


def _xyxy_to_xyah(box: np.ndarray) -> np.ndarray:
    w, h = float(box[2] - box[0]), float(box[3] - box[1])
    return np.array([box[0] + w / 2, box[1] + h / 2, w / max(h, 1e-6), h], dtype=np.float64)


class KalmanBox:
    """Constant-velocity Kalman filter on (cx, cy, aspect, h) and their velocities per step.

    Noise is proportional to the box height, with ByteTrack's weights; the process noise of a prediction grows
    linearly with the number of steps, so two half steps add the same uncertainty as one whole step.
    """

    _std_pos = 1.0 / 20
    _std_vel = 1.0 / 160
    _H = np.eye(4, 8)

    def __init__(self, box: np.ndarray) -> None:
        z = _xyxy_to_xyah(box)
        self.mean = np.concatenate([z, np.zeros(4)])
        h = z[3]
        p, v = self._std_pos * h, self._std_vel * h
        self.cov = np.diag(np.square([2 * p, 2 * p, 1e-2, 2 * p, 10 * v, 10 * v, 1e-5, 10 * v]))

    def predict(self, steps: float, freeze_height: bool = False) -> None:
        """Move the state ``steps`` nominal steps forward (fractions allowed); ``freeze_height`` zeroes dh/dt."""
        if freeze_height:
            self.mean[7] = 0.0
        if steps <= 0:
            return
        f = np.eye(8)
        f[:4, 4:] = np.eye(4) * steps
        h = self.mean[3]
        p, v = self._std_pos * h, self._std_vel * h
        q = np.diag(np.square([p, p, 1e-2, p, v, v, 1e-5, v])) * steps
        self.mean = f @ self.mean
        self.cov = f @ self.cov @ f.T + q

    def update(self, box: np.ndarray) -> None:
        z = _xyxy_to_xyah(box)
        h = self.mean[3]
        p = self._std_pos * h
        r = np.diag(np.square([p, p, 1e-1, p]))
        s = self._H @ self.cov @ self._H.T + r
        gain = np.linalg.solve(s, self._H @ self.cov).T  # P H^T S^-1 (S and P are symmetric)
        self.mean = self.mean + gain @ (z - self._H @ self.mean)
        self.cov = self.cov - gain @ s @ gain.T

    def box(self) -> np.ndarray:
        cx, cy, a, h = self.mean[:4]
        h = max(h, 1e-3)
        w = a * h
        return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dtype=np.float64)


def _feet(box: np.ndarray) -> np.ndarray:
    return np.array([(box[0] + box[2]) / 2, box[3]], np.float64)


class _Track:
    __slots__ = (
        "birth",
        "box",
        "class_id",
        "feet",
        "hits",
        "id",
        "kf",
        "last_seen",
        "matched_now",
        "score",
        "tracked",
    )

    def __init__(self, box: np.ndarray, score: float, class_id: int, ts: float) -> None:
        self.kf = KalmanBox(box)
        self.box = box.astype(np.float32)
        self.score = score
        self.class_id = class_id
        self.hits = 1
        self.last_seen = ts
        self.id = 0  # public id, given at confirmation
        self.tracked = True  # matched in the last update; False: lost
        self.matched_now = True
        self.birth = (ts, _feet(box), float(box[3] - box[1]))  # when and where it was first seen, its height
        self.feet: list[tuple[float, np.ndarray]] = [(ts, _feet(box))]  # matched feet of the last VELOCITY_S

    def velocity(self) -> np.ndarray:
        """Feet velocity in pixels a second over the last matched updates (0 with less than 0.2 s of them)."""
        (t0, p0), (t1, p1) = self.feet[0], self.feet[-1]
        return (p1 - p0) / (t1 - t0) if t1 - t0 >= 0.2 else np.zeros(2)

    @property
    def confirmed(self) -> bool:
        return self.id > 0


def _boxes(tracks: list[_Track]) -> np.ndarray:
    return np.array([t.kf.box() for t in tracks], np.float64).reshape(-1, 4)


class ByteTracker:
    """ByteTrack on one camera; see the module docstring for the rules. Not thread-safe: one caller per camera."""

    def __init__(self, config: TrackerConfig | None = None, camera_id: str = "") -> None:
        self.config = config or TrackerConfig()
        self.camera_id = camera_id
        self.reset()

    def reset(self, keep_ids: bool = False) -> None:
        """Drop every track. Ids start again from 1 unless ``keep_ids`` (ids then stay unique across the reset)."""
        self._tracks: list[_Track] = []
        if not keep_ids or not hasattr(self, "_next_id"):
            self._next_id = 1
        self._last_ts: float | None = None
        self.removed_ids: list[int] = []
        self._to_confirm: list[_Track] = []

    def active_ids(self) -> list[int]:
        """Ids of the confirmed tracks still kept (matched in the last update, or lost for at most ``max_lost_s``)."""
        return sorted(t.id for t in self._tracks if t.confirmed)

    def update(self, detections: Detections, ts: float) -> Detections:
        """Associate this frame's detections at time ``ts`` (seconds); return the confirmed tracks matched now."""
        c = self.config
        if self._last_ts is not None and ts < self._last_ts:
            log.warning(
                "camera %s: tracker time went back %.3f s (%.3f after %.3f); treated as no time elapsed",
                self.camera_id,
                self._last_ts - ts,
                ts,
                self._last_ts,
            )
            ts = self._last_ts
        steps = 0.0 if self._last_ts is None else (ts - self._last_ts) / c.nominal_dt
        self._last_ts = ts

        self._remove_stale(ts)  # 1. Removal of tracks lost for too long.

        # 2. Prediction.
        for t in self._tracks:
            t.kf.predict(steps, freeze_height=not t.tracked)
            t.matched_now = False

        scores = detections.confidence.astype(np.float64)
        boxes = detections.xyxy
        high = np.flatnonzero(scores >= c.high_thresh)
        low = np.flatnonzero((scores >= c.low_thresh) & (scores < c.high_thresh))
        confirmed = [t for t in self._tracks if t.confirmed]
        unconfirmed = [t for t in self._tracks if not t.confirmed]

        # 3. High detections against confirmed tracks, tracked and lost.
        sim = iou(_boxes(confirmed), boxes[high])
        if c.fuse_score:
            sim = sim * scores[high][None, :]
        pairs, left_tracks, left_high = match(sim, c.match_iou)
        for ti, di in pairs:
            self._hit(confirmed[ti], int(high[di]), detections, ts)
        high = high[left_high]

        # 4. Low detections against the remaining tracks that were tracked in the previous update.
        recent = [confirmed[i] for i in left_tracks if confirmed[i].tracked]
        pairs, _, _ = match(iou(_boxes(recent), boxes[low]), c.second_match_iou)
        for ti, di in pairs:
            self._hit(recent[ti], int(low[di]), detections, ts)

        # 5. Unconfirmed tracks against the remaining high detections; the unmatched ones die.
        sim = iou(_boxes(unconfirmed), boxes[high])
        if c.fuse_score:
            sim = sim * scores[high][None, :]
        pairs, _, left_high = match(sim, c.unconfirmed_match_iou)
        for ti, di in pairs:
            self._hit(unconfirmed[ti], int(high[di]), detections, ts)
        high = high[left_high]

        # 6. New tracks.
        for d in high:
            if scores[d] >= c.new_track_thresh:
                t = _Track(boxes[d], float(scores[d]), int(detections.class_id[d]), ts)
                self._tracks.append(t)
                if c.min_hits <= 1:
                    self._to_confirm.append(t)

        # 7. Confirmation, continuing lost tracks where rule 7 allows.
        if self._to_confirm:
            self._relink(self._to_confirm)
            for t in self._to_confirm:
                if not t.confirmed:
                    self._confirm(t)
            self._to_confirm = []

        self._tracks = [t for t in self._tracks if t.confirmed or t.matched_now]
        for t in self._tracks:
            t.tracked = t.matched_now
        return self._matched_now()

    def _remove_stale(self, ts: float) -> None:
        """Rule 1: tracks lost for more than ``max_lost_s`` are removed (their ids in ``removed_ids``)."""
        stale = [t for t in self._tracks if ts - t.last_seen > self.config.max_lost_s + EPS_S]
        self.removed_ids = sorted(t.id for t in stale if t.confirmed)
        self._tracks = [t for t in self._tracks if t not in stale]
        if self.removed_ids:
            log.debug(
                "camera %s: tracks %s lost for more than %.1f s, removed",
                self.camera_id,
                self.removed_ids,
                self.config.max_lost_s,
            )

    def _matched_now(self) -> Detections:
        """The confirmed tracks matched in this update, by id."""
        out = sorted((t for t in self._tracks if t.confirmed and t.matched_now), key=lambda t: t.id)
        if not out:
            return Detections.empty()
        return Detections(
            xyxy=np.array([t.box for t in out], np.float32),
            confidence=np.array([t.score for t in out], np.float32),
            class_id=np.array([t.class_id for t in out], np.int64),
            tracker_id=np.array([t.id for t in out], np.int64),
        )

    def _hit(self, t: _Track, d: int, dets: Detections, ts: float) -> None:
        t.kf.update(dets.xyxy[d])
        t.box = dets.xyxy[d].astype(np.float32)
        t.score = float(dets.confidence[d])
        t.class_id = int(dets.class_id[d])
        t.last_seen = ts
        t.hits += 1
        t.matched_now = True
        t.feet.append((ts, _feet(t.box)))
        while t.feet[-1][0] - t.feet[0][0] > VELOCITY_S + EPS_S:
            t.feet.pop(0)
        if not t.confirmed and t.hits >= self.config.min_hits:
            self._to_confirm.append(t)

    def _relink(self, new: list[_Track]) -> None:
        """Rule 7: give each new track the id of the lost track it continues, if any; drop those lost tracks."""
        c = self.config
        lost = [t for t in self._tracks if t.confirmed and not t.matched_now]
        if c.link_s <= 0 or not lost:
            return
        cost = np.full((len(new), len(lost)), np.inf)
        for i, n in enumerate(new):
            born, feet, height = n.birth
            for j, o in enumerate(lost):
                gap = born - o.last_seen
                o_h = float(o.box[3] - o.box[1])
                if gap <= EPS_S or gap > c.link_s + EPS_S or o_h <= 0:
                    continue
                if not 1 / LINK_HEIGHT_RATIO <= height / o_h <= LINK_HEIGHT_RATIO:
                    continue
                expected = o.feet[-1][1] + o.velocity() * gap
                dist = float(np.hypot(*(feet - expected))) / o_h
                if dist <= c.link_dist:
                    cost[i, j] = dist
        if not np.isfinite(cost).any():
            return
        rows, cols = linear_sum_assignment(np.where(np.isfinite(cost), cost, 1e6))
        gone: set[int] = set()
        for i, j in zip(rows, cols, strict=True):
            if not np.isfinite(cost[i, j]):
                continue
            n, o = new[i], lost[j]
            n.id = o.id
            gone.add(id(o))
            log.debug(
                "camera %s: new track continues lost track %d (%.2f box heights)", self.camera_id, o.id, cost[i, j]
            )
        self._tracks = [t for t in self._tracks if id(t) not in gone]

    def _confirm(self, t: _Track) -> None:
        t.id = self._next_id
        self._next_id += 1
        log.debug("camera %s: track %d confirmed", self.camera_id, t.id)

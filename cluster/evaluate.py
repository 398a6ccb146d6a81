"""``edgepair evaluate``: tracking and counting accuracy against MOT ground truth, on the production code path.

The footage goes through the same ``CameraWorker`` as in production (capture, the real detector, the ByteTrack-style
tracker, the lines and zones of the config), with inference in-process instead of in a Ray actor. The tracks it
produces are scored with ``motmetrics`` (MOTA, IDF1, ID switches, ...). True line crossings are derived from the
ground-truth tracks with the same ``LineCounter`` geometry and rules, fed the ground-truth boxes as tracks.

motmetrics 1.4 calls ``np.asfarray``, removed in NumPy 2, inside its own IoU helper: the IoU distance matrix is
computed here (numpy) and handed to ``MOTAccumulator.update``; the metrics themselves are motmetrics'.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from actors.detections import Detections
from actors.events import LINE_CROSS, ZONE_EXIT, Event
from actors.lines import LineCounter
from actors.tracking import iou
from cluster.config import Config
from cluster.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass
class GroundTruth:
    """MOT rows: frame (1-based) -> (ids, xyxy boxes, considered flags)."""

    frames: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]

    @classmethod
    def load(cls, path: Path) -> GroundTruth:
        try:
            raw = np.loadtxt(path, delimiter=",", ndmin=2)
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"cannot read ground truth {path}: {exc}; expected MOT rows frame,id,x,y,w,h,flag,..."
            ) from None
        frames: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        for f in np.unique(raw[:, 0]).astype(int):
            rows = raw[raw[:, 0] == f]
            xyxy = np.stack([rows[:, 2], rows[:, 3], rows[:, 2] + rows[:, 4], rows[:, 3] + rows[:, 5]], axis=1)
            flags = rows[:, 6] if rows.shape[1] > 6 else np.ones(len(rows))
            frames[int(f)] = (rows[:, 1].astype(np.int64), xyxy.astype(np.float32), flags > 0)
        return cls(frames)


def iou_distance(gt: np.ndarray, hyp: np.ndarray, max_iou: float = 0.5) -> np.ndarray:
    """1 - IoU between xyxy boxes, NaN where IoU < ``max_iou`` (motmetrics' convention)."""
    if len(gt) == 0 or len(hyp) == 0:
        return np.empty((len(gt), len(hyp)))
    iou_m = iou(np.asarray(gt, np.float32), np.asarray(hyp, np.float32)).astype(np.float64)
    dist = 1.0 - iou_m
    dist[iou_m < max_iou] = np.nan
    return dist


@dataclass
class EvalResult:
    frames: int
    fps: float
    mot: dict[str, float]
    lines: list[dict[str, Any]] = field(default_factory=list)
    visits: list[dict[str, Any]] = field(default_factory=list)

    @property
    def count_error_pct(self) -> float:
        """Sum over lines and directions of |counted - true| over the sum of true crossings, in %."""
        true = sum(r["true"] for r in self.lines)
        err = sum(abs(r["counted"] - r["true"]) for r in self.lines)
        return 100.0 * err / true if true else 0.0


def run_tracks(config: Config, camera_id: str, model_path: Path, *, every: int = 1) -> tuple[dict, list[Event], float]:
    """Run the production worker in-process on a file; return tracks per source frame index, events, fps."""
    import time

    from actors.inference import Detector
    from actors.worker import CameraWorker

    m = config.model
    det = Detector(str(model_path), family=m.family, threshold=m.threshold, tiles=m.tiles, threads=m.threads or 0)
    tracks: dict[int, Detections] = {}
    events: list[Event] = []
    worker = CameraWorker(
        config, camera_id, det.detect, lambda d: d, autostart=False, start_ts=0.0, model_version=det.model_sha256[:12]
    )
    original = worker.analytics.process

    def process(dets: Detections, ts: float, w: int, h: int) -> tuple[Detections, list[Event]]:
        tracked, evs = original(dets, ts, w, h)
        tracks[round(ts * worker.capture.stats.source_fps)] = tracked
        events.extend(evs)
        return tracked, evs

    original_finish = worker.analytics.finish

    def finish(ts: float) -> list[Event]:
        evs = original_finish(ts)
        events.extend(evs)
        return evs

    worker.analytics.process = process  # type: ignore[method-assign, assignment]
    worker.analytics.finish = finish  # type: ignore[method-assign, assignment]
    t0 = time.perf_counter()
    worker.start()
    worker.wait(24 * 3600)
    elapsed = time.perf_counter() - t0
    if worker.error:
        raise ConfigError(f"evaluation run failed on camera {camera_id}: {worker.error}")
    return tracks, events, worker.frames / max(elapsed, 1e-9)


def score_tracks(gt: GroundTruth, tracks: dict[int, Detections], *, frame_offset: int = 1) -> dict[str, float]:
    try:
        import motmetrics as mm
    except ImportError:
        raise ConfigError("scoring needs motmetrics: pip install 'edgepair[eval]'") from None

    acc = mm.MOTAccumulator(auto_id=True)
    for index in sorted(tracks):
        frame = index + frame_offset
        hyp = tracks[index]
        gids, gboxes, considered = gt.frames.get(frame, (np.zeros(0, np.int64), np.zeros((0, 4)), np.zeros(0, bool)))
        dist = iou_distance(gboxes, hyp.xyxy)
        # Boxes the ground truth marks "ignored" (flag 0): drop them and any hypothesis matched to them.
        ignored = ~considered
        if ignored.any() and len(hyp):
            d_ign = dist[ignored]
            matched_ign = np.any(~np.isnan(d_ign), axis=0) if d_ign.size else np.zeros(len(hyp), bool)
        else:
            matched_ign = np.zeros(len(hyp), bool)
        keep_h = ~matched_ign
        acc.update(list(gids[considered]), list(hyp.tracker_id[keep_h]), dist[considered][:, keep_h])
    mh = mm.metrics.create()
    names = [
        "mota",
        "motp",
        "idf1",
        "idp",
        "idr",
        "recall",
        "precision",
        "num_switches",
        "num_false_positives",
        "num_misses",
        "mostly_tracked",
        "mostly_lost",
        "num_unique_objects",
    ]
    summary = mh.compute(acc, metrics=names, name="eval")
    return {k: float(summary[k].iloc[0]) for k in names}


def true_crossings(
    config: Config, camera_id: str, gt: GroundTruth, width: int, height: int, fps: float, every: int = 1
) -> list[Event]:
    """Crossings of the ground-truth tracks, with the same LineCounter as production."""
    cam = next(c for c in config.cameras if c.id == camera_id)
    counters = [
        LineCounter(ln.id, cam.id, ln.start, ln.end, ln.in_point, hysteresis=ln.hysteresis, anchor=cam.anchor)
        for ln in cam.lines
    ]
    events: list[Event] = []
    for frame in sorted(gt.frames):
        if (frame - 1) % every:
            continue
        ids, boxes, _considered = gt.frames[frame]
        dets = Detections(xyxy=boxes, confidence=np.ones(len(ids), np.float32), tracker_id=ids)
        for c in counters:
            events.extend(c.trigger(dets, (frame - 1) / fps, width, height))
    for c in counters:
        events.extend(c.flush())
    return events


def line_table(config: Config, camera_id: str, counted: list[Event], true: list[Event]) -> list[dict[str, Any]]:
    cam = next(c for c in config.cameras if c.id == camera_id)
    c_counts: dict[tuple[str, str], int] = defaultdict(int)
    t_counts: dict[tuple[str, str], int] = defaultdict(int)
    for e in counted:
        if e.kind == LINE_CROSS:
            c_counts[(e.line_id or "", e.direction or "")] += 1
    for e in true:
        t_counts[(e.line_id or "", e.direction or "")] += 1
    rows = []
    for ln in cam.lines:
        for d in ("in", "out"):
            c, t = c_counts[(ln.id, d)], t_counts[(ln.id, d)]
            err = 100.0 * (c - t) / t if t else (0.0 if c == 0 else float("inf"))
            rows.append({"line": ln.id, "direction": d, "counted": c, "true": t, "error_pct": round(err, 1)})
    return rows


def visit_table(events: list[Event]) -> list[dict[str, Any]]:
    rows = []
    for e in sorted(events, key=lambda e: e.ts):
        if e.kind == ZONE_EXIT and e.dwell_s is not None:
            rows.append(
                {
                    "zone": e.zone_id,
                    "track": e.track_id,
                    "enter_s": round(e.ts - e.dwell_s, 1),
                    "exit_s": round(e.ts, 1),
                    "dwell_s": round(e.dwell_s, 1),
                }
            )
    return rows


def evaluate(
    config: Config, model_path: Path, gt_path: Path | None, *, camera_id: str | None = None, every: int = 1
) -> EvalResult:
    import cv2

    cam = next((c for c in config.cameras if c.id == camera_id), config.cameras[0]) if camera_id else config.cameras[0]
    cap = cv2.VideoCapture(cam.source)
    width, height = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    src_fps = cap.get(cv2.CAP_PROP_FPS) or 10.0
    cap.release()
    if width == 0:
        raise ConfigError(f"cannot open footage {cam.source}: check the path")
    tracks, events, fps = run_tracks(config, cam.id, model_path, every=every)
    mot: dict[str, float] = {}
    lines: list[dict[str, Any]] = []
    if gt_path is not None:
        gt = GroundTruth.load(gt_path)
        mot = score_tracks(gt, tracks)
        step = max(1, round(src_fps / cam.fps)) if cam.fps else 1
        lines = line_table(config, cam.id, events, true_crossings(config, cam.id, gt, width, height, src_fps, step))
    return EvalResult(frames=len(tracks), fps=fps, mot=mot, lines=lines, visits=visit_table(events))


def format_result(r: EvalResult) -> str:
    out = [f"frames: {r.frames}, pipeline fps (in-process): {r.fps:.1f}"]
    if r.mot:
        m = r.mot
        out.append(
            f"MOTA {m['mota']:.3f}  IDF1 {m['idf1']:.3f}  ID switches {int(m['num_switches'])}  "
            f"recall {m['recall']:.3f}  precision {m['precision']:.3f}  MT {int(m['mostly_tracked'])}/"
            f"{int(m['num_unique_objects'])}"
        )
    if r.lines:
        out.append("line        dir  counted  true  error %")
        for row in r.lines:
            out.append(
                f"{row['line']:<11} {row['direction']:<4} {row['counted']:>7} {row['true']:>5} {row['error_pct']:>8}"
            )
        out.append(f"total count error: {r.count_error_pct:.1f} %")
    if r.visits:
        out.append(f"visits: {len(r.visits)}")
        for v in r.visits:
            out.append(f"  {v['zone']} track {v['track']}: {v['enter_s']} s -> {v['exit_s']} s, dwell {v['dwell_s']} s")
    return "\n".join(out)

"""The baseline of a drill: the same live frames replayed in-process by one undisturbed tracker, and the comparison.

Live playback shows frame ``floor(t * fps) mod N`` at UTC ``t``, so the frames a drill's cameras saw can be replayed
exactly. Outside the coverage gaps, windows with dropped frames, the continuity horizon after each fresh tracker
start and the tail of the span, the drill's events must equal the replay's (see :mod:`cluster.drill`).
"""

from __future__ import annotations

import bisect
import logging
import math
import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def _key(e: dict[str, Any]) -> tuple[Any, ...]:
    return (round(e["t"], 3), e["kind"], e["line_id"], e["zone_id"], e["direction"])


def compare_with_baseline(
    config_path: Path,
    cfg: dict[str, Any],
    cam: str,
    ev: list[dict[str, Any]],
    m: dict[str, Any],
    starts: list[float],
    *,
    min_events: int,
    keep: Callable[[float], bool] | None = None,
) -> dict[str, Any]:
    """Drill events against the undisturbed replay of the same frames, outside gaps and continuity horizons.

    ``keep``: which frames the replay processes (:func:`processed_filter`: the frames the drill's windows list);
    None: every frame. Windows with skipped frames whose frames are not listed (``short_windows_inexact``, else
    ``short_windows``) are left out like gaps.

    ``verdict``: ``match`` (the same events, at least ``min_events`` of them compared), ``differ``, or
    ``inconclusive`` (the same, but fewer than ``min_events`` compared: nothing shown either way)."""
    lo, hi = m["span"]
    base, alive = replay(config_path, cam, lo, hi, keep)
    t_cfg = cfg.get("tracking") or {}
    grace = float(t_cfg.get("max_lost_s", 3.0)) + 2.0
    disturbed = [*m["gaps"], *m.get("short_windows_inexact", m.get("short_windows", []))]
    excluded = [(x - 1.0, y) for x, y in disturbed]
    for t in [lo, *starts, *(y for _x, y in disturbed)]:
        excluded.append((t - 2.0, _horizon(alive, t) + grace))
    # The tail of the span: an exit stamped before ``hi`` is decided by frames after it (the exit grace, a lost
    # track's max age), which neither the replay nor the measured copy may have seen yet.
    excluded.append((hi - grace, hi))

    def out(t: float) -> bool:
        return not any(x <= t < y for x, y in excluded)

    drill = Counter(_key(e) for e in ev if e["camera_id"] == cam and lo <= e["t"] < hi and out(e["t"]))
    undisturbed = Counter(_key(e) for e in base if out(e["t"]))
    missing, extra = undisturbed - drill, drill - undisturbed
    merged = sorted(_merge(excluded, lo, hi))
    compared = sum(undisturbed.values())
    verdict = "differ" if missing or extra else "match" if compared >= min_events else "inconclusive"
    return {
        "verdict": verdict,
        "min_events": min_events,
        "compared_s": round((hi - lo) - sum(y - x for x, y in merged), 1),
        "excluded": [[round(x, 1), round(y, 1)] for x, y in merged],
        "baseline_events": len(base),
        "drill_events_compared": sum(drill.values()),
        "baseline_events_compared": sum(undisturbed.values()),
        "missing": sorted(missing.elements())[:20],
        "extra": sorted(extra.elements())[:20],
        "match": verdict == "match",
    }


def processed_filter(windows: list[tuple[float, float, tuple[float, ...] | None]]) -> Callable[[float], bool]:
    """Which frames the replay processes: a frame inside a window ``(start, end, times)`` only if ``times`` lists it
    (within 2 ms: the segments store whole milliseconds), every frame of a window whose ``times`` is None, and
    every frame outside the windows (in a gap the undisturbed tracker keeps watching)."""
    spans = sorted(windows, key=lambda w: w[0])
    starts = [w[0] for w in spans]
    listed = [None if t is None else {round(x * 1000) for x in t} for _s, _e, t in spans]

    def keep(ts: float) -> bool:
        i = bisect.bisect_right(starts, ts) - 1
        if i < 0 or ts >= spans[i][1] or listed[i] is None:
            return True
        ms = round(ts * 1000)
        return any(ms + d in listed[i] for d in (-2, -1, 0, 1, 2))  # type: ignore[operator]

    return keep


def _merge(spans: list[tuple[float, float]], lo: float, hi: float) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    for x, y in sorted((max(lo, x), min(hi, y)) for x, y in spans):
        if y <= x:
            continue
        if out and x <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], y))
        else:
            out.append((x, y))
    return out


def _horizon(alive: list[tuple[float, set[int]]], t: float) -> float:
    """When the last track the undisturbed tracker had alive at ``t`` (or confirmed within 1 s of it) has ended."""
    born: set[int] = set()
    for ts, ids in alive:
        if t <= ts < t + 1.0:
            born |= ids
    last = t
    for ts, ids in alive:
        if ts >= t and ids & born:
            last = ts
    return last


_detectors: dict[tuple[Any, ...], Any] = {}
_memo: dict[tuple[Any, ...], dict[int, tuple[Any, int, int]]] = {}
"""Detections per (model, settings, source) and frame index: the live cameras loop over one file, so the drills of
one process (``--repeat``, the test suite) detect each frame once. A file's frames do not change under a drill."""


def replay(
    config_path: Path, cam: str, lo: float, hi: float, keep: Callable[[float], bool] | None = None
) -> tuple[list[dict[str, Any]], list[Any]]:
    """The undisturbed baseline: the frames live playback shows in [lo, hi) (those ``keep`` accepts), through the
    production worker."""
    from actors.inference import Detector
    from actors.worker import CameraWorker
    from cluster.config import load_config
    from cluster.runner import resolve_model

    config = load_config(config_path)
    m = config.model
    model = str(resolve_model(config))
    key = (model, m.family, m.threshold, m.tiles)
    if key not in _detectors:
        _detectors[key] = Detector(model, family=m.family, threshold=m.threshold, tiles=m.tiles, threads=0)
    det = _detectors[key]
    with tempfile.TemporaryDirectory(prefix="edgepair-baseline-") as tmp:
        cfg = config.model_copy(update={"storage": config.storage.model_copy(update={"data_dir": Path(tmp)})})
        quiet = logging.getLogger("storage.segments")
        level = quiet.level
        quiet.setLevel(logging.ERROR)  # the replay writes no segment: no warning about unsigned ones
        try:
            worker = CameraWorker(cfg, cam, det.detect, lambda d: d, autostart=False)
        finally:
            quiet.setLevel(level)
        events: list[dict[str, Any]] = []
        alive: list[tuple[float, set[int]]] = []
        src_fps, step, n = _source(worker.cam.source, worker.cam.fps)
        k = math.ceil(lo * src_fps / step)
        import cv2

        cap = cv2.VideoCapture(worker.cam.source)
        pos = -1
        try:
            while True:
                absolute = math.ceil(k * step)
                ts = absolute / src_fps
                if ts >= hi:
                    break
                k += 1
                if keep is not None and not keep(ts):
                    continue  # a frame the live node skipped: the replay skips it too
                want = absolute % n
                memo = _memo.setdefault((*key, worker.cam.source), {})
                if want not in memo:
                    if want <= pos:
                        cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
                        pos = -1
                    while pos + 1 < want and cap.grab():
                        pos += 1
                    ok, frame = cap.read()
                    pos += 1
                    if not ok:
                        continue
                    memo[want] = (det.detect(frame), frame.shape[1], frame.shape[0])
                dets, w, h = memo[want]
                _tracked, evs = worker.analytics.process(dets, ts, w, h)
                alive.append((ts, set(worker.analytics.tracker.active_ids())))
                events += [
                    {"t": e.ts, "kind": e.kind, "line_id": e.line_id, "zone_id": e.zone_id, "direction": e.direction}
                    for e in evs
                ]
        finally:
            cap.release()
    return events, alive


def _source(path: str, fps: float | None) -> tuple[float, float, int]:
    import cv2

    cap = cv2.VideoCapture(path)
    src = cap.get(cv2.CAP_PROP_FPS) or 0.0
    src = src if 1.0 <= src <= 240.0 else 25.0
    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    cap.release()
    return src, src / min(fps or src, src), n

"""Classify the line-count errors of one setup on random lines (issue 14 profiling): which crossing, which track, why.

    PYTHONPATH=. .venv/bin/python bench/accuracy_errors.py [--model pico416] [--seeds 1-3] [--list]

Every tracked box is given the ground-truth id it overlaps most (IoU >= 0.3, Hungarian per frame). A counted
crossing is matched to a true one on the same line and direction, same ground-truth person, within 2 s; what is
left is matched across persons within 1 s (a swap: the count is right, the person is not). The unmatched rest are
misses (true, not counted) and extras (counted, not true), each with a cause, guessed from the ground-truth track
and the tracker's:

- ``untracked``: no track on that person within 1 s of the crossing (the detector or the tracker lost them);
- ``born-late``: the person's track starts after the crossing (its first side is on the far side: only recorded);
- ``near-end``: the true (or counted) crossing point is within 0.03 of a line end, or the other side's move passes
  the end: a few pixels decide whether the move meets the segment;
- ``grazing``: the move is within 25 degrees of the line (walking along it);
- ``jitter``: the track crosses and comes back (an in-out pair of one track) where the truth has none;
- ``fragment``: the person's track ended (or started) within 1 s of the crossing;
- ``other``.

Tuning-seed use only (seeds 1-3): it prints the causes and, with ``--list``, every error.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from actors.events import LINE_CROSS, Event  # noqa: E402
from actors.lines import LineCounter  # noqa: E402
from actors.tracking import iou  # noqa: E402
from bench.accuracy import CONFIG, GT, SETUPS, VTEST, configure, model_path, seed_list  # noqa: E402
from cluster.accuracy import replay, with_random_geometry  # noqa: E402
from cluster.accuracy_data import Walkable, cache_threshold, clip_detections, foot_points  # noqa: E402
from cluster.config import load_config  # noqa: E402
from cluster.evaluate import GroundTruth, true_crossings  # noqa: E402

FPS = 10.0


def gt_map(tracks: dict[int, object], gt: GroundTruth) -> dict[tuple[int, int], int]:
    """(frame index, track id) -> ground-truth id."""
    out: dict[tuple[int, int], int] = {}
    for i, det in tracks.items():
        if i + 1 not in gt.frames or not len(det):  # type: ignore[arg-type]
            continue
        ids, boxes, _ = gt.frames[i + 1]
        m = iou(det.xyxy, boxes)  # type: ignore[attr-defined]
        r, c = linear_sum_assignment(-m)
        for a, b in zip(r, c, strict=True):
            if m[a, b] >= 0.3:
                out[(i, int(det.tracker_id[a]))] = int(ids[b])  # type: ignore[attr-defined]
    return out


def feet_series(frames: dict[int, tuple[np.ndarray, np.ndarray]], w: int, h: int) -> dict[int, list]:
    """id -> [(frame, feet normalised)]."""
    out: dict[int, list] = defaultdict(list)
    for f in sorted(frames):
        ids, boxes = frames[f]
        for k, b in zip(ids, boxes, strict=True):
            out[int(k)].append((f, np.array([(b[0] + b[2]) / 2 / w, b[3] / h])))
    return out


def near(series: list, frame: int, span: int) -> list:
    return [(f, p) for f, p in series if abs(f - frame) <= span]


def geometry(line: LineCounter, series: list, frame: int) -> tuple[float, float]:
    """(distance of the crossing point from the nearer end, angle of the move to the line in degrees)."""
    pts = near(series, frame, 5)
    if len(pts) < 2:
        return float("nan"), float("nan")
    before = [p for f, p in pts if f <= frame]
    after = [p for f, p in pts if f >= frame]
    p, q = (before[0] if before else pts[0][1]), (after[-1] if after else pts[-1][1])
    d = q - p
    ang = abs(np.degrees(np.arctan2(d[0] * line._dir[1] - d[1] * line._dir[0], np.dot(d, line._dir))))
    ang = min(ang, 180 - ang)
    x = (p + q) / 2
    u = float(np.dot(x - line.start, line._dir)) / line.length
    return min(u, line.length - u), ang


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="pico416")
    ap.add_argument("--seeds", default="1-3")
    ap.add_argument("--list", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    setup = next(s for s in SETUPS if s.key == args.model)
    seeds = seed_list(args.seeds)
    from actors.inference import Detector

    with tempfile.TemporaryDirectory() as tmp:
        cfg = configure(load_config(CONFIG), setup, None, Path(tmp))
    probe = Detector(model_path(setup), tiles=setup.tiles, threshold=setup.threshold)
    clip = clip_detections(
        model_path(setup), VTEST, threshold=cache_threshold(probe.family, probe.threshold), tiles=setup.tiles
    )
    gt = GroundTruth.load(GT)
    walk = Walkable.from_points(foot_points(gt.frames, clip.width, clip.height))
    cfg = with_random_geometry(cfg, walk, seeds, 24, 0)
    cam = cfg.cameras[0]
    run = replay(cfg, clip, threshold=probe.threshold)
    true = true_crossings(cfg, cam.id, gt, clip.width, clip.height, clip.fps)
    counted = [e for e in run.events if e.kind == LINE_CROSS]
    tmap = gt_map(run.tracks, gt)
    gts = feet_series({f - 1: (v[0], v[1]) for f, v in gt.frames.items()}, clip.width, clip.height)
    trk_frames = {i: (d.tracker_id, d.xyxy) for i, d in run.tracks.items()}
    trs = feet_series(trk_frames, clip.width, clip.height)
    lines = {ln.id: LineCounter(ln.id, cam.id, ln.start, ln.end, ln.in_point) for ln in cam.lines}

    def fr(e: Event) -> int:
        return round(e.ts * FPS)

    def person(e: Event) -> int:
        f = fr(e)
        for df in (0, -1, 1, -2, 2, -3, 3):
            g = tmap.get((f + df, e.track_id))
            if g is not None:
                return g
        return -1

    by_key: dict[tuple[str, str], tuple[list[Event], list[Event]]] = defaultdict(lambda: ([], []))
    for e in true:
        by_key[(e.line_id or "", e.direction or "")][0].append(e)
    for e in counted:
        by_key[(e.line_id or "", e.direction or "")][1].append(e)
    causes: Counter[str] = Counter()
    swaps = 0
    listing = []
    for (lid, d), (ts, cs) in sorted(by_key.items()):
        ts, cs = list(ts), list(cs)
        for strict in (True, False):
            for t in list(ts):
                best = None
                for c in cs:
                    if strict and (person(c) != t.track_id or abs(c.ts - t.ts) > 2.0):
                        continue
                    if not strict and abs(c.ts - t.ts) > 1.0:
                        continue
                    if best is None or abs(c.ts - t.ts) < abs(best.ts - t.ts):
                        best = c
                if best is not None:
                    ts.remove(t)
                    cs.remove(best)
                    swaps += 0 if strict else 1
        line = lines[lid]
        for t in ts:
            f = fr(t)
            end_d, ang = geometry(line, gts[t.track_id], f)
            mine = sorted({k for (i, k), g in tmap.items() if g == t.track_id and abs(i - f) <= 10})
            first = min((i for (i, k), g in tmap.items() if g == t.track_id and k in mine), default=None)
            cause = "other"
            if not mine:
                cause = "untracked"
            elif end_d < 0.03:
                cause = "near-end"
            elif ang < 25:
                cause = "grazing"
            elif all(min(i for i, _ in trs[k]) > f - 3 for k in mine):
                cause = "born-late"
            elif any(abs(max(i for i, _ in trs[k]) - f) <= 10 for k in mine) and len(mine) > 1:
                cause = "fragment"
            causes["miss " + cause] += 1
            listing.append(
                f"miss  {lid:7} {d:3} t={t.ts:6.1f} gt {t.track_id:3} tracks {mine} end {end_d:.3f} "
                f"angle {ang:4.0f} first {first} -> {cause}"
            )
        for c in cs:
            f = fr(c)
            g = person(c)
            end_d, ang = geometry(line, trs[c.track_id], f)
            other = [e for e in counted if e.line_id == lid and e.track_id == c.track_id and e is not c]
            cause = "other"
            if end_d < 0.03:
                cause = "near-end"
            elif ang < 25:
                cause = "grazing"
            elif any(abs(e.ts - c.ts) < 3 and e.direction != c.direction for e in other):
                cause = "jitter"
            elif g >= 0 and any(e.track_id == g and e.line_id == lid for e in true):
                cause = "dup-person"
            elif g < 0:
                cause = "no-person"
            causes["extra " + cause] += 1
            listing.append(
                f"extra {lid:7} {d:3} t={c.ts:6.1f} trk {c.track_id:3} gt {g:3} end {end_d:.3f} "
                f"angle {ang:4.0f} -> {cause}"
            )
    n_true = len(true)
    print(
        f"{setup.label}, seeds {seeds}: {len(counted)} counted / {n_true} true; swaps (right count, other person) "
        f"{swaps}"
    )
    for k, v in sorted(causes.items(), key=lambda kv: -kv[1]):
        print(f"  {k:22} {v:4}  ({100 * v / n_true:.1f} % of true)")
    if args.list:
        print("\n".join(listing))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

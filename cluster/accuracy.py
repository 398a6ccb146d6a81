"""The generalisation benchmark: counting accuracy on random lines and zones nobody tuned for.

``edgepair evaluate --random-lines N --seed S`` and ``bench/accuracy.py --random`` use it. For one setup (a model
at a threshold and tiling, with the tracking settings of the config) and a list of seeds:

1. the clip's detections come from the on-disk cache (``cluster.accuracy_data.clip_detections``: computed once);
2. ``N`` random lines per seed (and ``Z`` random zones) are drawn over the walkable region, the convex hull of the
   ground truth's foot points (``cluster.accuracy_data``), and added to the camera of the config;
3. the production analytics (``actors.worker.build_analytics``: tracker, lines, zones, as a worker builds them) is
   fed the cached detections frame by frame at the frame's timestamp, then ``finish``; lines do not interact, so
   every seed's lines ride on one replay of the tracker;
4. the true crossings and visits are the ground-truth tracks fed as tracks through the *same* ``LineCounter`` and
   ``PolygonZone`` (``cluster.evaluate.true_crossings``).

Figures per seed and pooled over seeds: total count error = sum over lines and directions of |counted - true| over
the sum of true crossings; the per-line error (both directions of a line together, lines with a true crossing) as
median and 90th percentile; the worst line direction among those with at least 5 true crossings; visits per zone
(count error) and total dwell (error of the sum).
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from actors.detections import Detections
from actors.events import LINE_CROSS, ZONE_EXIT, Event
from actors.zones import PolygonZone
from cluster.accuracy_data import (
    ClipDetections,
    Walkable,
    cache_threshold,
    clip_detections,
    foot_points,
    random_lines,
    random_zones,
)
from cluster.config import Config
from cluster.evaluate import GroundTruth, line_table, true_crossings

log = logging.getLogger(__name__)

MIN_DIRECTION_TRUE = 5  # a line direction with at least this many true crossings is judged on its own


@dataclass
class Replay:
    """What the production analytics made of a clip: its events and the confirmed tracks of every frame."""

    events: list[Event]
    tracks: dict[int, Detections] = field(default_factory=dict)


def replay(config: Config, clip: ClipDetections, *, threshold: float | None, every: int = 1) -> Replay:
    """Feed the cached detections of every ``every``-th frame to the analytics a worker would build."""
    from actors.worker import build_analytics

    cam = config.cameras[0]
    analytics = build_analytics(cam, config)
    events: list[Event] = []
    tracks: dict[int, Detections] = {}
    ts = 0.0
    for i in range(0, len(clip.frames), every):
        ts = i / clip.fps
        tracked, evs = analytics.process(clip.at(i, threshold), ts, clip.width, clip.height)
        tracks[i] = tracked
        events.extend(evs)
    events.extend(analytics.finish(ts))
    return Replay(events, tracks)


def true_visits(config: Config, gt: GroundTruth, width: int, height: int, fps: float, every: int) -> list[Event]:
    """Zone visits of the ground-truth tracks through the same ``PolygonZone`` rules."""
    cam = config.cameras[0]
    zones = [PolygonZone(z.id, cam.id, z.polygon, exit_grace_s=z.exit_grace_s, anchor=cam.anchor) for z in cam.zones]
    events: list[Event] = []
    for frame in sorted(gt.frames):
        if (frame - 1) % every:
            continue
        ids, boxes, _ = gt.frames[frame]
        dets = Detections(xyxy=boxes, confidence=np.ones(len(ids), np.float32), tracker_id=ids)
        for z in zones:
            events.extend(z.trigger(dets, (frame - 1) / fps, width, height))
    for z in zones:
        events.extend(z.finish())
    return events


def zone_table(config: Config, counted: list[Event], true: list[Event]) -> list[dict[str, Any]]:
    rows = []
    for z in config.cameras[0].zones:
        c = [e for e in counted if e.kind == ZONE_EXIT and e.zone_id == z.id]
        t = [e for e in true if e.kind == ZONE_EXIT and e.zone_id == z.id]
        rows.append(
            {
                "zone": z.id,
                "visits": len(c),
                "true_visits": len(t),
                "dwell_s": round(sum(e.dwell_s or 0.0 for e in c), 1),
                "true_dwell_s": round(sum(e.dwell_s or 0.0 for e in t), 1),
            }
        )
    return rows


def line_figures(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Total count error, per-line median and p90, and the worst line direction with >= 5 true crossings."""
    true = sum(r["true"] for r in rows)
    counted = sum(r["counted"] for r in rows)
    wrong = sum(abs(r["counted"] - r["true"]) for r in rows)
    per_line: dict[str, list[int]] = {}
    for r in rows:
        acc = per_line.setdefault(r["line"], [0, 0])
        acc[0] += abs(r["counted"] - r["true"])
        acc[1] += r["true"]
    line_err = [100.0 * e / t for e, t in per_line.values() if t > 0]
    judged = [r for r in rows if r["true"] >= MIN_DIRECTION_TRUE]
    worst = max(judged, key=lambda r: abs(r["counted"] - r["true"]) / r["true"], default=None)
    return {
        "lines": len(per_line),
        "true": true,
        "counted": counted,
        "wrong": wrong,
        "count_error_pct": round(100.0 * wrong / true, 1) if true else 0.0,
        "line_error_median_pct": round(float(np.median(line_err)), 1) if line_err else 0.0,
        "line_error_p90_pct": round(float(np.percentile(line_err, 90)), 1) if line_err else 0.0,
        "phantom_lines": sum(1 for e, t in per_line.values() if t == 0 and e > 0),
        "directions_judged": len(judged),
        "directions_over_20pct": sum(1 for r in judged if abs(r["counted"] - r["true"]) > 0.2 * r["true"]),
        "worst_direction": (
            {k: worst[k] for k in ("line", "direction", "counted", "true")} if worst is not None else None
        ),
        "worst_direction_error_pct": (
            round(100.0 * abs(worst["counted"] - worst["true"]) / worst["true"], 1) if worst is not None else 0.0
        ),
    }


def zone_figures(rows: list[dict[str, Any]]) -> dict[str, Any]:
    true = sum(r["true_visits"] for r in rows)
    wrong = sum(abs(r["visits"] - r["true_visits"]) for r in rows)
    dwell = sum(r["dwell_s"] for r in rows)
    true_dwell = sum(r["true_dwell_s"] for r in rows)
    return {
        "zones": len(rows),
        "visits": sum(r["visits"] for r in rows),
        "true_visits": true,
        "visit_error_pct": round(100.0 * wrong / true, 1) if true else 0.0,
        "dwell_s": round(dwell, 1),
        "true_dwell_s": round(true_dwell, 1),
        "dwell_error_pct": round(100.0 * (dwell - true_dwell) / true_dwell, 1) if true_dwell else 0.0,
    }


@dataclass
class RandomResult:
    """Per seed and pooled figures of one setup on random lines and zones."""

    per_seed: dict[int, dict[str, Any]]
    pooled: dict[str, Any]
    zones: dict[str, Any]
    rows: list[dict[str, Any]]
    zone_rows: list[dict[str, Any]]


def with_random_geometry(config: Config, walkable: Walkable, seeds: list[int], n_lines: int, n_zones: int) -> Config:
    cam = config.cameras[0]
    lines = [ln for s in seeds for ln in random_lines(walkable, n_lines, s)]
    zones = [z for s in seeds for z in random_zones(walkable, n_zones, s)]
    cam = cam.model_copy(update={"lines": lines, "zones": zones})
    return config.model_copy(update={"cameras": [cam]})


def evaluate_random(
    config: Config,
    clip: ClipDetections,
    gt: GroundTruth,
    seeds: list[int],
    *,
    n_lines: int = 24,
    n_zones: int = 0,
    threshold: float | None = None,
    every: int = 1,
) -> RandomResult:
    """Random lines and zones of every seed on one replay of the analytics; see the module docstring."""
    walkable = Walkable.from_points(foot_points(gt.frames, clip.width, clip.height))
    cfg = with_random_geometry(config, walkable, seeds, n_lines, n_zones)
    cam = cfg.cameras[0]
    run = replay(cfg, clip, threshold=threshold, every=every)
    true = true_crossings(cfg, cam.id, gt, clip.width, clip.height, clip.fps, every)
    rows = line_table(cfg, cam.id, [e for e in run.events if e.kind == LINE_CROSS], true)
    per_seed = {s: line_figures([r for r in rows if r["line"].startswith(f"r{s}-")]) for s in seeds}
    zone_rows = zone_table(cfg, run.events, true_visits(cfg, gt, clip.width, clip.height, clip.fps, every))
    return RandomResult(per_seed, line_figures(rows), zone_figures(zone_rows), rows, zone_rows)


def format_random(r: RandomResult, label: str = "") -> str:
    out = [label] if label else []
    out.append("seed  lines  counted  true  count error  line median  line p90  worst dir (>=5 true)")
    for s, f in [*r.per_seed.items(), ("all", r.pooled)]:
        w = f["worst_direction"]
        worst = f"{w['line']} {w['direction']} {w['counted']}/{w['true']}" if w else "-"
        out.append(
            f"{s!s:<5} {f['lines']:>5} {f['counted']:>8} {f['true']:>5} {f['count_error_pct']:>10.1f} % "
            f"{f['line_error_median_pct']:>9.1f} % {f['line_error_p90_pct']:>7.1f} %  {worst}"
            f" ({f['directions_over_20pct']}/{f['directions_judged']} over 20 %)"
        )
    z = r.zones
    if z["zones"]:
        out.append(
            f"zones: {z['zones']}, visits {z['visits']} / {z['true_visits']} true ({z['visit_error_pct']} % error), "
            f"dwell {z['dwell_s']} s / {z['true_dwell_s']} s ({z['dwell_error_pct']:+.1f} %)"
        )
    return "\n".join(out)


def cmd_evaluate_random(args: argparse.Namespace, config: Config, model: Path) -> int:
    """``edgepair evaluate --random-lines N --seed S [--seeds K] [--random-zones Z]``: see the module docstring."""
    from cluster.errors import ConfigError

    if not args.gt:
        raise ConfigError("--random-lines needs --gt: the true crossings come from the ground-truth tracks")
    footage = Path(args.footage).resolve()
    m = config.model
    threshold, family = clip_detections_threshold(m.threshold, m.family, model, m.tiles)
    floor = cache_threshold(family, threshold)
    clip = clip_detections(model, footage, threshold=floor, tiles=m.tiles, family=m.family, threads=m.threads or 1)
    cam = config.cameras[0]
    every = max(1, round(clip.fps / cam.fps)) if cam.fps else 1
    seeds = [args.seed + i for i in range(args.seeds)]
    gt = GroundTruth.load(Path(args.gt))
    r = evaluate_random(
        config, clip, gt, seeds, n_lines=args.random_lines, n_zones=args.random_zones, threshold=threshold, every=every
    )
    if args.json:
        print(json.dumps({"per_seed": r.per_seed, "pooled": r.pooled, "zones": r.zones, "lines": r.rows}, indent=1))
    else:
        print(format_random(r, f"{model.name}, threshold {threshold:g}, tiles {m.tiles}, seeds {seeds}"))
    return 0


def clip_detections_threshold(threshold: float | None, family: str, model: Path, tiles: int) -> tuple[float, str]:
    """The operating threshold (the config's, or the family default) and the model's family."""
    from actors.inference import Detector

    probe = Detector(model, family=family, tiles=tiles, threshold=threshold, threads=1)
    return probe.threshold, probe.family

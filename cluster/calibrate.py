"""``edgepair calibrate``: choose a store's detector threshold, tiling and tracker settings from a labelled clip.

The labels are either MOT ground truth of the clip (``--gt``) or true counts per line (``--truth``, as an
acceptance run gives them). Every candidate setting is replayed on the clip's cached detections
(``cluster.accuracy_data``: one detector pass per tiling, every threshold at or above the lowest is a filter), so a
calibration costs one or two detector passes and a few seconds per candidate.

Held-out validation, so that calibration cannot overfit:

- with MOT ground truth the lines are random lines over the walkable region (``cluster.accuracy``): candidates
  are ranked on the lines of the *tuning* seeds, and the chosen one (with the current settings beside it) is then
  measured on the lines of other, *validation* seeds it was never ranked on, and on the camera's own lines;
- with counts per line, the camera's lines are split in two: ranked on every other line, validated on the others.

The figure reported, and written into the config's comment, is the validation one. ``--write`` replaces the
``model:`` and ``tracking:`` sections of the store config (every other line, comments included, is kept) after the
new file has been validated, and keeps the old file as ``<name>.bak``. The settings are store-wide: the config has
one model and one tracker section for every camera, so calibrate on the camera that matters most, or on the one
whose view is the hardest.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from actors.events import LINE_CROSS
from cluster.accuracy import line_figures, replay, with_random_geometry
from cluster.accuracy_data import ClipDetections, Walkable, cache_threshold, clip_detections, foot_points
from cluster.config import Config, load_config, parse_config
from cluster.errors import ConfigError
from cluster.evaluate import GroundTruth, line_table, true_crossings

log = logging.getLogger(__name__)

TUNE_SEEDS = [101, 102]
VALIDATE_SEEDS = [201, 202]
# Score thresholds tried per family, on the score scale of each (SSD's scores sit lower than the COCO models').
THRESHOLDS = {"ssd": [0.1, 0.15, 0.2, 0.3], "gfl": [0.3, 0.4, 0.5], "yolox": [0.3, 0.4, 0.5], "yolov8": [0.3, 0.4]}
# Tracker settings tried: (high_thresh, new_track_thresh) per family; None = the detector threshold's scale.
TRACKER_GRID: dict[str, list[tuple[float, float]]] = {
    "ssd": [(0.2, 0.3), (0.25, 0.35), (0.3, 0.4)],
    "gfl": [(0.5, 0.6), (0.4, 0.5)],
    "yolox": [(0.5, 0.6), (0.4, 0.5)],
    "yolov8": [(0.4, 0.5), (0.5, 0.6)],
}
MIN_HITS = [2, 3]


@dataclass(frozen=True)
class Candidate:
    tiles: int
    threshold: float
    high_thresh: float
    new_track_thresh: float
    min_hits: int

    def describe(self) -> str:
        return (
            f"tiles {self.tiles}, threshold {self.threshold:g}, high_thresh {self.high_thresh:g},"
            f" new_track_thresh {self.new_track_thresh:g}, min_hits {self.min_hits}"
        )


def candidates(family: str, tiles: list[int], thresholds: list[float] | None = None) -> list[Candidate]:
    out = []
    grid = itertools.product(tiles, thresholds or THRESHOLDS[family], TRACKER_GRID[family], MIN_HITS)
    for x, t, (hi, new), mh in grid:
        if t > hi:
            continue  # detections below high_thresh but above the detector threshold: the second association
        out.append(Candidate(x, t, hi, new, mh))
    return out


def apply(config: Config, c: Candidate) -> Config:
    tracking = config.tracking.model_copy(
        update={"high_thresh": c.high_thresh, "new_track_thresh": c.new_track_thresh, "min_hits": c.min_hits}
    )
    model = config.model.model_copy(update={"threshold": c.threshold, "tiles": c.tiles})
    return config.model_copy(update={"tracking": tracking, "model": model})


def current(config: Config, family: str, default_threshold: float) -> Candidate:
    t = config.tracking
    return Candidate(
        config.model.tiles,
        config.model.threshold if config.model.threshold is not None else default_threshold,
        t.high_thresh,
        t.new_track_thresh,
        t.min_hits,
    )


def _score_lines(cfg: Config, clip: ClipDetections, threshold: float, every: int, truth: Any) -> list[dict[str, Any]]:
    cam = cfg.cameras[0]
    counted = [e for e in replay(cfg, clip, threshold=threshold, every=every).events if e.kind == LINE_CROSS]
    return line_table(cfg, cam.id, counted, truth)


@dataclass
class Calibration:
    chosen: Candidate
    was: Candidate
    tuned: dict[str, Any]  # figures of the chosen candidate on the tuning lines
    validation: dict[str, Any]  # ... on the validation lines (held out)
    validation_was: dict[str, Any]  # the current settings on the same validation lines
    own_lines: list[dict[str, Any]]  # the camera's own lines with the chosen settings (MOT labels only)
    tried: int
    labels: str

    def comment(self) -> str:
        v, w = self.validation, self.validation_was
        return (
            f"edgepair calibrate {time.strftime('%Y-%m-%d')} ({self.labels}, {self.tried} candidates):"
            f" held-out count error {v['count_error_pct']} % on {v['lines']} lines ({v['true']} true crossings),"
            f" {w['count_error_pct']} % with the settings before;"
            f" tuned on other lines: {self.tuned['count_error_pct']} %"
        )


def calibrate_gt(
    config: Config,
    clips: dict[int, ClipDetections],
    gt: GroundTruth,
    *,
    every: int = 1,
    n_lines: int = 24,
    thresholds: list[float] | None = None,
) -> Calibration:
    """Rank candidates on the tuning seeds' random lines, validate the best on the validation seeds' lines."""
    any_clip = next(iter(clips.values()))
    walkable = Walkable.from_points(foot_points(gt.frames, any_clip.width, any_clip.height))
    tune_cfg = with_random_geometry(config, walkable, TUNE_SEEDS, n_lines, 0)
    val_cfg = with_random_geometry(config, walkable, VALIDATE_SEEDS, n_lines, 0)
    w, h, fps = any_clip.width, any_clip.height, any_clip.fps
    tune_truth = true_crossings(tune_cfg, config.cameras[0].id, gt, w, h, fps, every)
    val_truth = true_crossings(val_cfg, config.cameras[0].id, gt, w, h, fps, every)
    cands = candidates(any_clip.family, sorted(clips), thresholds)
    ranked = []
    for c in cands:
        rows = _score_lines(apply(tune_cfg, c), clips[c.tiles], c.threshold, every, tune_truth)
        f = line_figures(rows)
        ranked.append(((f["count_error_pct"], f["directions_over_20pct"], cands.index(c)), c, f))
    ranked.sort(key=lambda x: x[0])
    _, best, tuned = ranked[0]
    from actors import decoders

    was = current(config, any_clip.family, decoders.default_threshold(any_clip.family, None, config.model.tiles))
    validation = line_figures(_score_lines(apply(val_cfg, best), clips[best.tiles], best.threshold, every, val_truth))
    if was.tiles in clips:
        validation_was = line_figures(
            _score_lines(apply(val_cfg, was), clips[was.tiles], was.threshold, every, val_truth)
        )
    else:
        validation_was = {"count_error_pct": None, "lines": 0, "true": 0}
    own: list[dict[str, Any]] = []
    if config.cameras[0].lines:
        own_truth = true_crossings(config, config.cameras[0].id, gt, w, h, fps, every)
        own = _score_lines(apply(config, best), clips[best.tiles], best.threshold, every, own_truth)
    return Calibration(best, was, tuned, validation, validation_was, own, len(cands), "MOT ground truth")


def calibrate_counts(
    config: Config,
    clips: dict[int, ClipDetections],
    truth: dict[str, dict[str, int]],
    *,
    every: int = 1,
    thresholds: list[float] | None = None,
) -> Calibration:
    """Rank on every other line of the camera (by its order in the config), validate on the others."""
    cam = config.cameras[0]
    lines = [ln for ln in cam.lines if ln.id in truth]
    if len(lines) < 2:
        raise ConfigError(
            "calibrating from counts needs true counts for at least 2 lines of the camera (one to tune on, one to"
            " validate on); with one line, label the clip with MOT ground truth (--gt)"
        )
    from actors.events import Event

    def truth_events(ids: set[str]) -> list[Event]:
        return [
            Event(0.0, cam.id, 0, LINE_CROSS, line_id=line, direction=d)
            for line, dirs in truth.items()
            if line in ids
            for d, n in dirs.items()
            for _ in range(n)
        ]

    def sub(ids: list[str]) -> Config:
        c = cam.model_copy(update={"lines": [ln for ln in lines if ln.id in ids], "zones": []})
        return config.model_copy(update={"cameras": [c]})

    tune_ids = [ln.id for ln in lines[::2]]
    val_ids = [ln.id for ln in lines[1::2]]
    any_clip = next(iter(clips.values()))
    cands = candidates(any_clip.family, sorted(clips), thresholds)
    ranked = []
    for c in cands:
        f = line_figures(
            _score_lines(apply(sub(tune_ids), c), clips[c.tiles], c.threshold, every, truth_events(set(tune_ids)))
        )
        ranked.append(((f["count_error_pct"], f["directions_over_20pct"], cands.index(c)), c, f))
    ranked.sort(key=lambda x: x[0])
    _, best, tuned = ranked[0]
    from actors import decoders

    was = current(config, any_clip.family, decoders.default_threshold(any_clip.family, None, config.model.tiles))
    vt = truth_events(set(val_ids))
    validation = line_figures(_score_lines(apply(sub(val_ids), best), clips[best.tiles], best.threshold, every, vt))
    validation_was = (
        line_figures(_score_lines(apply(sub(val_ids), was), clips[was.tiles], was.threshold, every, vt))
        if was.tiles in clips
        else {"count_error_pct": None, "lines": 0, "true": 0}
    )
    return Calibration(best, was, tuned, validation, validation_was, [], len(cands), "counts per line")


# ------------------------------------------------------------------------------------------ writing the config

_TOP_KEY = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\s*:")
COMMENT = "# calibrate: "  # every line of the comment calibrate writes starts so (and is replaced next time)


def _drop_section(lines: list[str], key: str) -> tuple[list[str], int | None]:
    """Remove the top-level ``key:`` section (its line, its indented or blank lines, and the comments right above
    it that were written by calibrate); return the lines and where it was."""
    out: list[str] = []
    at: int | None = None
    skipping = False
    for line in lines:
        m = _TOP_KEY.match(line)
        if m:
            skipping = m.group(1) == key
            if skipping:
                while out and out[-1].startswith(COMMENT):
                    out.pop()
                at = len(out)
                continue
        elif skipping and (not line.strip() or line[:1] in (" ", "\t")):
            continue  # the section's own lines
        else:
            skipping = False
        out.append(line)
    return out, at


def updated_config_text(text: str, config: Config, cal: Calibration) -> str:
    """The store YAML with its ``model:`` and ``tracking:`` sections replaced by the chosen settings."""
    c = cal.chosen
    model = config.model
    model_lines = ["model:"]
    if model.path is not None:
        model_lines.append(f"  path: {json.dumps(str(model.path))}")
    if model.family != "auto":
        model_lines.append(f"  family: {model.family}")
    model_lines += [f"  threshold: {c.threshold:g}", f"  tiles: {c.tiles}"]
    if model.threads:
        model_lines.append(f"  threads: {model.threads}")
    t = config.tracking.model_copy(
        update={"high_thresh": c.high_thresh, "new_track_thresh": c.new_track_thresh, "min_hits": c.min_hits}
    )
    tracking_lines = ["tracking:"] + [f"  {k}: {v:g}" for k, v in t.model_dump().items()]
    lines = text.splitlines()
    lines, at_model = _drop_section(lines, "model")
    lines, at_tracking = _drop_section(lines, "tracking")
    comment = [COMMENT + part for part in _wrap(cal.comment(), 104)]
    block = comment + model_lines + tracking_lines
    at = at_model if at_model is not None else at_tracking
    if at is None:
        at = len(lines)
    return "\n".join(lines[:at] + block + lines[at:]) + "\n"


def _wrap(text: str, width: int) -> list[str]:
    out, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            out.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    out.append(line)
    return out


def write_config(path: Path, config: Config, cal: Calibration) -> str:
    text = path.read_text(encoding="utf-8")
    new = updated_config_text(text, config, cal)
    parse_config(new, source=str(path), base_dir=path.resolve().parent)  # refuse to write a config that is invalid
    backup = path.with_name(path.name + ".bak")
    backup.write_text(text, encoding="utf-8")
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(new)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return new


# ------------------------------------------------------------------------------------------ the command


def format_calibration(cal: Calibration) -> str:
    v, w, t = cal.validation, cal.validation_was, cal.tuned
    out = [
        f"calibration ({cal.labels}): {cal.tried} candidates",
        f"  before: {cal.was.describe()}",
        f"  chosen: {cal.chosen.describe()}",
        f"  tuning lines: count error {t['count_error_pct']} % ({t['counted']} counted / {t['true']} true)",
        f"  HELD-OUT lines: count error {v['count_error_pct']} % ({v['counted']} counted / {v['true']} true),"
        f" median line {v['line_error_median_pct']} %, p90 {v['line_error_p90_pct']} %;"
        f" the settings before: {w['count_error_pct']} %",
    ]
    if cal.own_lines:
        f = line_figures(cal.own_lines)
        out.append(f"  the camera's own lines (chosen settings): count error {f['count_error_pct']} %")
        for r in cal.own_lines:
            out.append(f"    {r['line']:<16} {r['direction']:<4} counted {r['counted']:>4} true {r['true']:>4}")
    return "\n".join(out)


def cmd_calibrate(args: argparse.Namespace) -> int:
    from actors.inference import Detector
    from cluster.acceptance import load_truth
    from cluster.runner import resolve_model

    path = Path(args.config)
    config = load_config(path)
    camera_id = args.camera or config.cameras[0].id
    cam = next((c for c in config.cameras if c.id == camera_id), None)
    if cam is None:
        raise ConfigError(f"camera {camera_id} is not in {path}")
    footage = Path(args.footage).resolve()
    if not footage.is_file():
        raise ConfigError(f"footage {args.footage} not found: the labelled clip of camera {camera_id}")
    if bool(args.gt) == bool(args.truth):
        raise ConfigError("label the clip with exactly one of --gt (MOT ground truth) or --truth (counts per line)")
    cfg1 = config.model_copy(update={"cameras": [cam.model_copy(update={"source": str(footage)})]})
    model = resolve_model(config)
    family = Detector(model, family=config.model.family, threads=1).family
    tiles = sorted({int(x) for x in args.tiles.split(",")})
    thresholds = [float(x) for x in args.thresholds.split(",")] if args.thresholds else THRESHOLDS[family]
    floor = cache_threshold(family, min(thresholds))
    # the family as the config names it (usually auto): the cache key is the same as the other tools'
    fam = config.model.family
    clips = {x: clip_detections(model, footage, threshold=floor, tiles=x, family=fam) for x in tiles}
    fps = next(iter(clips.values())).fps
    rate = args.fps or cam.fps
    every = max(1, round(fps / rate)) if rate else 1
    if args.gt:
        gt = GroundTruth.load(Path(args.gt))
        cal = calibrate_gt(cfg1, clips, gt, every=every, n_lines=args.lines, thresholds=thresholds)
    else:
        cal = calibrate_counts(cfg1, clips, load_truth(Path(args.truth)), every=every, thresholds=thresholds)
    print(format_calibration(cal))
    if args.write:
        write_config(path, config, cal)
        print(f"written to {path} (the previous file kept as {path.name}.bak)")
    return 0


def add_parser(sub: Any) -> None:
    s = sub.add_parser("calibrate", help="choose threshold, tiling, tracker settings from a labelled clip (held out)")
    s.add_argument("--config", required=True, help="store YAML")
    s.add_argument("--camera", default=None, help="camera id (default: the first)")
    s.add_argument("--footage", required=True, help="a labelled clip of that camera")
    s.add_argument("--gt", default=None, help="MOT ground truth of the clip")
    s.add_argument("--truth", default=None, help="or true counts {line: {in: N, out: M}} (at least 2 lines)")
    s.add_argument("--tiles", default="1,2", help="tilings to try, e.g. 1,2 (one detector pass each)")
    s.add_argument("--thresholds", default=None, help="detector thresholds to try (default: per family)")
    s.add_argument("--fps", type=float, default=None, help="frames a second processed (default: the camera's)")
    s.add_argument("--lines", type=int, default=24, help="random lines per seed (MOT labels; 2 tuning, 2 held-out)")
    s.add_argument("--write", action="store_true", help="write the chosen settings into the config (keeps .bak)")
    s.set_defaults(func=cmd_calibrate)

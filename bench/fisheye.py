"""Detection under a ceiling fisheye: the plain detector against the fisheye path, per model, on CEPDOF.

    PYTHONPATH=. .venv/bin/python bench/fisheye.py [--models pico416,yolox] [--views 8] [--sweep] [--json out.json]
    PYTHONPATH=. .venv/bin/python bench/fisheye.py --tracking
    PYTHONPATH=. .venv/bin/python bench/fisheye.py --counting [--seeds 2,3,4] [--count-models yolox,nano416]
        [--views 12] [--walkers 6] [--seconds 16] [--fps 5] [--margin-s 1.5] [--apart 0.2] [--no-plain]

For each model of ``../shared/models`` and the default one (``edgepair model install``'s SSDLite), on the 10 frames
of ``../shared/footage/fisheye-cepdof`` (7 people in each, rotated-box ground truth):

- **plain**: the detector on the whole 2048x2048 frame, as a normal camera runs it (axis-aligned boxes);
- **fisheye**: ``actors.fisheye`` (``n`` rotated wedge views of the image circle, batched through the same
  ``Detector.detect_batch``, merged back into fisheye pixels as rotated boxes with rotated NMS).

Scored at IoU >= 0.5 with one-to-one greedy matching (highest IoU first), two ways: **rotated** IoU (our boxes as
rotated boxes: the plain detector's at angle 0, the fisheye path's along the radius; against the rotated ground
truth) and **axis-aligned** IoU (each side's axis-aligned hull). ``ms/frame`` is the median wall time per frame of
each path (views built, detector, merge), ONNX Runtime on one thread, measured in the same run side by side; the
machine is shared, so ratios mean more than absolute times. The image circle is estimated from the first frame
(``actors.lens.estimate_circle``), as ``edgepair camera calibrate-lens`` does.

``--tracking`` measures the tracker alone on synthetic walks under the lens (``bench/fisheye_tracking.py``: track ids
per walk by nearest approach to the point under the lens, speed and detector gap).

``--counting`` runs the synthetic counting scene instead (``tests/fisheye_scene.py``: people cut out of the one-by-one
footage walking known paths across a virtual ceiling fisheye, true crossings known exactly) and prints the count
error per seed and model of the fisheye path, the first round's merge and the plain detector, side by side
(``bench/fisheye_counting.py``); progress on stderr.

Needs ``../shared`` (models, footage); exits 2 with a message when absent.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from actors.detections import Detections  # noqa: E402
from actors.fisheye import (  # noqa: E402
    DEFAULT_VIEW_PX,
    DEFAULT_VIEWS,
    NEIGHBOUR_WEDGES,
    make_views,
    merge_views,
    plan_views,
    rotated_iou,
)
from actors.lens import Lens, estimate_circle  # noqa: E402
from tests.cepdof import CEPDOF, IOU, axis_rotated, hull_of, load_cepdof, matches  # noqa: E402

SHARED = REPO.parent / "shared"
MODELS = SHARED / "models"
FLOOR = 0.15  # detections are computed once at this score and thresholded after (greedy NMS commutes with it)


@dataclass(frozen=True)
class Model:
    key: str
    label: str
    file: str  # under ../shared/models, or "default"


MODEL_LIST = [
    Model("default", "SSDLite (default, `edgepair model install`)", "default"),
    Model("ssd", "SSDLite (../shared copy)", "ssdlite_pedestrian.onnx"),
    Model("pico320", "PicoDet-S-320", "picodet_s_320_coco.onnx"),
    Model("pico416", "PicoDet-S-416", "picodet_s_416_coco.onnx"),
    Model("nano416", "NanoDet-m-416", "nanodet_m_416_coco.onnx"),
    Model("yolox", "YOLOX-nano 640", "yolox_nano_coco.onnx"),
]


def model_file(m: Model) -> Path:
    from cluster.models import default_model_path

    return default_model_path() if m.file == "default" else MODELS / m.file


def score(preds: list[np.ndarray], truths: list[np.ndarray]) -> dict[str, float]:
    """Recall and precision, rotated and axis-aligned, over all frames; ``preds``: rotated rows per frame."""
    tp_rot = tp_axis = n_pred = n_true = 0
    for p, t in zip(preds, truths, strict=True):
        n_pred += len(p)
        n_true += len(t)
        tp_rot += matches(rotated_iou(p, t))
        tp_axis += matches(rotated_iou(axis_rotated(hull_of(p)), axis_rotated(hull_of(t))))
    return {
        "recall_rot": tp_rot / max(1, n_true),
        "precision_rot": tp_rot / max(1, n_pred),
        "recall_axis": tp_axis / max(1, n_true),
        "precision_axis": tp_axis / max(1, n_pred),
        "detections": n_pred,
        "truths": n_true,
    }


# ------------------------------------------------------------------------------------------------ the paths


@dataclass
class Run:
    """One model, one path: the raw detections at ``FLOOR`` per frame (per view for the fisheye path), and times."""

    per_frame: list[list[Detections]]
    ms: list[float]


def run_plain(detector: Any, frames: list[np.ndarray]) -> Run:
    per, ms = [], []
    for f in frames:
        t0 = time.perf_counter()
        per.append([detector.detect(f)])
        ms.append(1000 * (time.perf_counter() - t0))
    return Run(per, ms)


def run_fisheye(detector: Any, frames: list[np.ndarray], lens: Lens, n: int, view_px: int) -> Run:
    views = plan_views(lens, n, view_px)
    per, ms = [], []
    for f in frames:
        t0 = time.perf_counter()
        per.append(detector.detect_batch(make_views(f, views)))
        merge_views(per[-1], views, lens)  # timed: part of the path's cost
        ms.append(1000 * (time.perf_counter() - t0))
    return Run(per, ms)


def plain_boxes(run: Run, threshold: float) -> list[np.ndarray]:
    return [axis_rotated(d[0].xyxy[d[0].confidence >= threshold]) for d in run.per_frame]


def fisheye_boxes(
    run: Run, threshold: float, lens: Lens, n: int, view_px: int, neighbours: float = NEIGHBOUR_WEDGES
) -> list[np.ndarray]:
    views = plan_views(lens, n, view_px)
    out = []
    for per_view in run.per_frame:
        kept = [d[d.confidence >= threshold] for d in per_view]
        out.append(merge_views(kept, views, lens, neighbours=neighbours).boxes.astype(np.float64))
    return out


def best_threshold(boxes_at: Any, truths: list[np.ndarray], grid: list[float]) -> tuple[float, dict[str, float]]:
    """The threshold of ``grid`` with the best rotated F1 (ties: the lower threshold), and its scores."""
    best: tuple[float, float, dict[str, float]] | None = None
    for t in grid:
        s = score(boxes_at(t), truths)
        r, p = s["recall_rot"], s["precision_rot"]
        f1 = 2 * r * p / (r + p) if r + p else 0.0
        if best is None or f1 > best[1] + 1e-9:
            best = (t, f1, s)
    assert best is not None
    return best[0], best[2]


def threshold_grid(family: str) -> list[float]:
    return [0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6] if family != "ssd" else [0.15, 0.2, 0.25, 0.3, 0.4, 0.5]


def bench_models(models: list[Model], n: int, view_px: int, sweep: bool) -> list[dict[str, Any]]:
    from actors.inference import Detector

    frames, truths, _ = load_cepdof()
    circle = estimate_circle(frames[0])
    if circle is None:
        raise SystemExit("no image circle found in the first CEPDOF frame")
    lens = Lens.equidistant(circle.cx, circle.cy, circle.radius)
    rows = []
    for m in models:
        det = Detector(model_file(m), threshold=FLOOR, threads=1)
        default_t = _default_threshold(det)
        plain = run_plain(det, frames)
        fish = run_fisheye(det, frames, lens, n, view_px)
        grid = threshold_grid(det.family)
        row: dict[str, Any] = {"model": m.key, "label": m.label, "family": det.family, "views": n, "view_px": view_px}
        row["plain_ms"] = statistics.median(plain.ms)
        row["fisheye_ms"] = statistics.median(fish.ms)
        row["plain_default"] = {"threshold": default_t, **score(plain_boxes(plain, default_t), truths)}
        row["fisheye_default"] = {
            "threshold": default_t,
            **score(fisheye_boxes(fish, default_t, lens, n, view_px), truths),
        }
        row["fisheye_first_round"] = {
            "threshold": default_t,
            **score(fisheye_boxes(fish, default_t, lens, n, view_px, neighbours=0.0), truths),
        }
        if sweep:
            t, s = best_threshold(lambda t, p=plain: plain_boxes(p, t), truths, grid)
            row["plain_best"] = {"threshold": t, **s}
            t, s = best_threshold(lambda t, f=fish: fisheye_boxes(f, t, lens, n, view_px), truths, grid)
            row["fisheye_best"] = {"threshold": t, **s}
        rows.append(row)
        print(f"{m.label}: done", file=sys.stderr, flush=True)
    return rows


def _default_threshold(det: Any) -> float:
    from actors import decoders

    return decoders.default_threshold(det.family, det.input_size, det.tiles)


def _cell(s: dict[str, Any]) -> str:
    return (
        f"t={s['threshold']:.2f}: **{s['recall_rot']:.2f} / {s['precision_rot']:.2f}** "
        f"({s['recall_axis']:.2f} / {s['precision_axis']:.2f})"
    )


def markdown(rows: list[dict[str, Any]]) -> str:
    sweep = "plain_best" in rows[0]
    head = "| model | plain: recall / precision, rotated (axis-aligned) | fisheye path | first round's merge |"
    out = [head + " ms/frame plain | fisheye |", "|---|---|---|---|---:|---:|"]
    for r in rows:
        out.append(
            f"| {r['label']}, default t | {_cell(r['plain_default'])} | {_cell(r['fisheye_default'])} | "
            f"{_cell(r['fisheye_first_round'])} | "
            f"{r['plain_ms']:.0f} | {r['fisheye_ms']:.0f} ({r['fisheye_ms'] / r['plain_ms']:.1f}x) |"
        )
        if sweep:
            out.append(f"| {r['label']}, best-F1 t | {_cell(r['plain_best'])} | {_cell(r['fisheye_best'])} | | | |")
    views = rows[0]["views"]
    out.append(
        f"\nCEPDOF Lunch3 frames 1-10, {rows[0]['plain_default']['truths']} people; fisheye path: {views} views of "
        f"{rows[0]['view_px']} px; IoU >= {IOU}; ONNX Runtime, 1 thread."
    )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default=",".join(m.key for m in MODEL_LIST), help="comma-separated model keys")
    ap.add_argument("--views", type=int, default=DEFAULT_VIEWS, help="rotated views per frame")
    ap.add_argument("--view-px", type=int, default=DEFAULT_VIEW_PX, help="longer side of each view in pixels")
    ap.add_argument("--sweep", action="store_true", help="also the best-F1 threshold of each path and model")
    ap.add_argument("--counting", action="store_true", help="the synthetic counting scene instead (see the doc)")
    ap.add_argument("--tracking", action="store_true", help="the tracker on synthetic fisheye walks (no detector)")
    ap.add_argument("--seeds", default="2,3,4", help="--counting: scene seeds (7 and 1 tuning, others held out)")
    ap.add_argument("--count-models", default="yolox,nano416", help="--counting: yolox, nano416 (comma-separated)")
    ap.add_argument("--walkers", type=int, default=6, help="--counting: people per scene")
    ap.add_argument("--seconds", type=float, default=16.0, help="--counting: scene length")
    ap.add_argument("--fps", type=float, default=5.0, help="--counting: frames a second")
    ap.add_argument("--margin-s", type=float, default=None, help="--counting: crossings this far from walk ends")
    ap.add_argument("--apart", type=float, default=None, help="--counting: walkers keep this far apart (floor)")
    ap.add_argument("--no-plain", action="store_true", help="--counting: skip the plain detector")
    ap.add_argument("--json", default=None, help="also write the rows to this file")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if not CEPDOF.exists() or not MODELS.exists():
        print(f"fisheye bench skipped: {CEPDOF} or {MODELS} not found (needs ../shared)")
        return 2
    if args.tracking:
        from bench.fisheye_tracking import bench_tracking

        rows = bench_tracking()
        print(rows["markdown"])
    elif args.counting:
        from bench.fisheye_counting import bench_counting
        from tests.fisheye_scene import MARGIN_S, MIN_APART

        args.margin_s = MARGIN_S if args.margin_s is None else args.margin_s
        args.apart = MIN_APART if args.apart is None else args.apart
        rows = bench_counting(args)
        print(rows["markdown"])
    else:
        keys = args.models.split(",")
        unknown = sorted(set(keys) - {m.key for m in MODEL_LIST})
        if unknown:
            ap.error(f"unknown models {unknown}; known: {[m.key for m in MODEL_LIST]}")
        rows = bench_models([m for m in MODEL_LIST if m.key in keys], args.views, args.view_px, args.sweep)
        print(markdown(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Tracking and counting accuracy per detector on PETS09-S2L1, printed as a Markdown table (docs/accuracy.md).

    PYTHONPATH=. .venv/bin/python bench/accuracy.py [--models pico416,yolox] [--fps 10] [--json out.json]
    PYTHONPATH=. .venv/bin/python bench/accuracy.py --random [--seeds 4-9] [--lines 24] [--zones 8]

``--random`` is the generalisation benchmark (``cluster.accuracy``): per setup, 24 random lines (and 8 random
zones) per seed over the walkable region, true crossings and visits from the ground truth through the same line and
zone code; detections are computed once per (model, threshold, tiles) and cached under ~/.cache/edgepair/eval, so
a second run only replays the tracker and the counting (about 10 s a setup). Seeds 1-3 are the ones the counting
was tuned on; 4-9 are held out (docs/accuracy.md).

Each row runs ``cluster.evaluate.evaluate`` (the production ``CameraWorker`` in-process: capture, the real ONNX
detector, the tracker, the lines of ``cluster/examples/pets09.yaml``) on Debian's ``vtest.avi`` and scores it
against ``../shared/footage/pets09-s2l1/gt.txt`` with motmetrics. ``fps`` is the in-process pipeline rate on this
machine (decode, detection, tracking, analytics; ONNX Runtime on every core), so it depends on the machine and on
what else runs on it. ByteTrack's published MOT17 figures are printed beside the rows for context only: another
data set (crowded, 30 fps, a YOLOX-x detector trained on it), not a comparison on equal terms.

Needs ``../shared`` (models, ground truth) and OpenCV's sample video; exits with a message when they are absent.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cluster.config import Config, load_config  # noqa: E402
from cluster.evaluate import EvalResult, evaluate  # noqa: E402

SHARED = REPO.parent / "shared"
MODELS = SHARED / "models"
GT = SHARED / "footage" / "pets09-s2l1" / "gt.txt"
VTEST = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")
CONFIG = REPO / "cluster" / "examples" / "pets09.yaml"

# Published figures, for context: ByteTrack (Zhang et al., ECCV 2022), MOT17 test set, private detector (YOLOX-x).
BYTETRACK_MOT17 = {"mota": 80.3, "idf1": 77.3, "switches": 2196}


@dataclass(frozen=True)
class Setup:
    """One detector at its operating point, and the tracker thresholds on that detector's score scale."""

    key: str
    label: str
    model: str
    tiles: int = 1
    threshold: float | None = None  # None: the family default (actors/decoders.default_threshold)
    tracking: dict[str, Any] = field(default_factory=dict)


DEFAULT_MODEL = "default"  # Setup.model: the model `edgepair model install` caches (cluster.models)

# The operating points of issue 14 (chosen on random lines, tuning seeds 1-3; docs/accuracy.md): the COCO models'
# detector thresholds at or below ByteTrack's high_thresh (0.5) feed its second association; SSDLite's scores sit
# lower, so its tracker thresholds are set on its scale.
SSD_TRACKING = {"high_thresh": 0.25, "new_track_thresh": 0.45, "min_hits": 2}
SETUPS = [
    Setup("default", "SSDLite (default), full frame, t=0.3", DEFAULT_MODEL),
    Setup(
        "default2",
        "SSDLite (default), 2 halves, t=0.15, track >= 0.25, 2 hits",
        DEFAULT_MODEL,
        tiles=2,
        threshold=0.15,
        tracking=SSD_TRACKING,
    ),
    Setup("ssd", "SSDLite (../shared copy), full frame, t=0.3", "ssdlite_pedestrian.onnx"),
    Setup(
        "ssd2",
        "SSDLite (../shared copy), 2 halves, t=0.15, track >= 0.25, 2 hits",
        "ssdlite_pedestrian.onnx",
        tiles=2,
        threshold=0.15,
        tracking=SSD_TRACKING,
    ),
    Setup("pico320", "PicoDet-S-320, t=0.3", "picodet_s_320_coco.onnx", threshold=0.3),
    Setup("pico416", "PicoDet-S-416, t=0.3", "picodet_s_416_coco.onnx", threshold=0.3),
    Setup("nano416", "NanoDet-m-416, t=0.4", "nanodet_m_416_coco.onnx", threshold=0.4),
    Setup("yolox", "YOLOX-nano 640, t=0.5", "yolox_nano_coco.onnx"),
]


def model_path(setup: Setup) -> Path:
    from cluster.models import default_model_path

    return default_model_path() if setup.model == DEFAULT_MODEL else MODELS / setup.model


def configure(base: Config, setup: Setup, fps: float | None, data_dir: Path) -> Config:
    """The example config with this setup's model, thresholds and frame rate, writing segments to ``data_dir``."""
    cam = base.cameras[0].model_copy(update={"source": str(VTEST), "playback": "fast", "loop": False, "fps": fps})
    model = base.model.model_copy(
        update={"path": model_path(setup), "tiles": setup.tiles, "threshold": setup.threshold, "family": "auto"}
    )
    tracking = base.tracking.model_copy(update=setup.tracking)
    storage = base.storage.model_copy(update={"data_dir": data_dir})
    return base.model_copy(update={"cameras": [cam], "model": model, "tracking": tracking, "storage": storage})


def measure(setup: Setup, fps: float | None) -> EvalResult:
    with tempfile.TemporaryDirectory(prefix="edgepair-acc-") as tmp:
        cfg = configure(load_config(CONFIG), setup, fps, Path(tmp))
        assert cfg.model.path is not None
        return evaluate(cfg, cfg.model.path, GT)


def row(setup: Setup, r: EvalResult) -> dict[str, Any]:
    m = r.mot
    return {
        "setup": setup.key,
        "label": setup.label,
        "fps": round(r.fps, 1),
        "mota": round(100 * m["mota"], 1),
        "idf1": round(100 * m["idf1"], 1),
        "switches": int(m["num_switches"]),
        "recall": round(100 * m["recall"], 1),
        "precision": round(100 * m["precision"], 1),
        "counted": sum(x["counted"] for x in r.lines),
        "true": sum(x["true"] for x in r.lines),
        "count_error_pct": round(r.count_error_pct, 1),
        "lines": r.lines,
    }


def markdown(rows: list[dict[str, Any]]) -> str:
    out = [
        "| detector (PETS09-S2L1, 795 frames) | fps here | MOTA | IDF1 | ID sw. | recall / precision | "
        "crossings counted / true | count error |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for x in rows:
        out.append(
            f"| {x['label']} | {x['fps']} | {x['mota']} | {x['idf1']} | {x['switches']} | "
            f"{x['recall']} / {x['precision']} | {x['counted']} / {x['true']} | {x['count_error_pct']} % |"
        )
    b = BYTETRACK_MOT17
    out.append(
        f"| *ByteTrack, MOT17 test (published, for context)* | - | {b['mota']} | {b['idf1']} | {b['switches']} "
        "| - | - | - |"
    )
    return "\n".join(out)


def seed_list(text: str) -> list[int]:
    """``4-9`` or ``1,2,3``."""
    if "-" in text:
        lo, hi = text.split("-", 1)
        return list(range(int(lo), int(hi) + 1))
    return [int(x) for x in text.split(",")]


def measure_random(setup: Setup, seeds: list[int], n_lines: int, n_zones: int, fps: float | None) -> dict[str, Any]:
    from actors.inference import Detector
    from cluster.accuracy import evaluate_random
    from cluster.accuracy_data import cache_threshold, clip_detections
    from cluster.evaluate import GroundTruth

    with tempfile.TemporaryDirectory(prefix="edgepair-acc-") as tmp:
        cfg = configure(load_config(CONFIG), setup, fps, Path(tmp))
    model = model_path(setup)
    probe = Detector(model, tiles=setup.tiles, threshold=setup.threshold)
    threshold = probe.threshold
    floor = cache_threshold(probe.family, threshold)
    clip = clip_detections(model, VTEST, threshold=floor, tiles=setup.tiles)
    every = max(1, round(clip.fps / fps)) if fps else 1
    r = evaluate_random(
        cfg, clip, GroundTruth.load(GT), seeds, n_lines=n_lines, n_zones=n_zones, threshold=threshold, every=every
    )
    return {
        "setup": setup.key,
        "label": setup.label,
        "seeds": seeds,
        "per_seed": r.per_seed,
        "pooled": r.pooled,
        "zones": r.zones,
    }


def markdown_random(rows: list[dict[str, Any]]) -> str:
    out = [
        "| detector | seeds | crossings counted / true | count error | per-line error median / p90 | "
        "worst direction (>= 5 true) | directions off > 20 % | zone visits counted / true | dwell error |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for x in rows:
        f, z = x["pooled"], x["zones"]
        per_seed = ", ".join(f"{s['count_error_pct']}" for s in x["per_seed"].values())
        out.append(
            f"| {x['label']} | {x['seeds'][0]}-{x['seeds'][-1]} ({per_seed} %) | {f['counted']} / {f['true']} | "
            f"**{f['count_error_pct']} %** | {f['line_error_median_pct']} / {f['line_error_p90_pct']} % | "
            f"{f['worst_direction_error_pct']} % | {f['directions_over_20pct']} of {f['directions_judged']} | "
            f"{z['visits']} / {z['true_visits']} | {z['dwell_error_pct']:+.1f} % |"
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--models",
        default=",".join(s.key for s in SETUPS if s.key not in ("ssd", "ssd2")),
        help="comma-separated setup keys (ssd, ssd2: the ../shared copy of the default model)",
    )
    ap.add_argument("--fps", type=float, default=None, help="frames a second processed (default: the source's 10)")
    ap.add_argument("--json", default=None, help="also write the rows (with per-line counts) to this file")
    ap.add_argument("--random", action="store_true", help="the generalisation benchmark: random lines and zones")
    ap.add_argument("--seeds", default="4-9", help="--random: seeds, e.g. 4-9 (held out) or 1,2,3 (tuned on)")
    ap.add_argument("--lines", type=int, default=24, help="--random: lines per seed")
    ap.add_argument("--zones", type=int, default=8, help="--random: zones per seed")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    missing = [p for p in (GT, VTEST, MODELS) if not p.exists()]
    if missing:
        print(f"accuracy bench skipped: {', '.join(map(str, missing))} not found (needs ../shared and opencv-doc)")
        return 2
    keys = args.models.split(",")
    unknown = sorted(set(keys) - {s.key for s in SETUPS})
    if unknown:
        ap.error(f"unknown setups {unknown}; known: {[s.key for s in SETUPS]}")
    rows = []
    for setup in (s for s in SETUPS if s.key in keys):
        if args.random:
            rows.append(measure_random(setup, seed_list(args.seeds), args.lines, args.zones, args.fps))
        else:
            rows.append(row(setup, measure(setup, args.fps)))
        print(f"{setup.label}: done", file=sys.stderr, flush=True)
    print(markdown_random(rows) if args.random else markdown(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

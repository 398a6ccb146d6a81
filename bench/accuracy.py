"""Tracking and counting accuracy per detector on PETS09-S2L1, printed as a Markdown table (docs/accuracy.md).

    PYTHONPATH=. .venv/bin/python bench/accuracy.py [--models pico416,yolox] [--fps 10] [--json out.json]

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


SETUPS = [
    Setup("ssd", "SSDLite (default), full frame, t=0.3", "ssdlite_pedestrian.onnx"),
    Setup(
        "ssd2",
        "SSDLite, 2 halves, t=0.1, track >= 0.3",
        "ssdlite_pedestrian.onnx",
        tiles=2,
        threshold=0.1,
        tracking={"high_thresh": 0.3, "new_track_thresh": 0.4},
    ),
    Setup("pico320", "PicoDet-S-320, t=0.45", "picodet_s_320_coco.onnx"),
    Setup("pico416", "PicoDet-S-416, t=0.5", "picodet_s_416_coco.onnx"),
    Setup("nano416", "NanoDet-m-416, t=0.4", "nanodet_m_416_coco.onnx", threshold=0.4),
    Setup("yolox", "YOLOX-nano 640, t=0.5", "yolox_nano_coco.onnx"),
]


def configure(base: Config, setup: Setup, fps: float | None, data_dir: Path) -> Config:
    """The example config with this setup's model, thresholds and frame rate, writing segments to ``data_dir``."""
    cam = base.cameras[0].model_copy(update={"source": str(VTEST), "playback": "fast", "loop": False, "fps": fps})
    model = base.model.model_copy(
        update={"path": MODELS / setup.model, "tiles": setup.tiles, "threshold": setup.threshold, "family": "auto"}
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default=",".join(s.key for s in SETUPS), help="comma-separated setup keys")
    ap.add_argument("--fps", type=float, default=None, help="frames a second processed (default: the source's 10)")
    ap.add_argument("--json", default=None, help="also write the rows (with per-line counts) to this file")
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
        rows.append(row(setup, measure(setup, args.fps)))
        print(f"{setup.label}: done", file=sys.stderr, flush=True)
    print(markdown(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The counter's own noise floor: ground-truth tracks, their boxes moved by a detector's localisation noise.

    PYTHONPATH=. .venv/bin/python bench/accuracy_noise.py [--seeds 1-3] [--draws 5] [--sd 0.05]

Perfect detection and identities, but every box's bottom edge and centre moved by independent Gaussian noise of
``--sd`` box heights (measured between PicoDet-S-416's boxes and PETS09-S2L1's ground truth: 0.05 for the bottom,
0.044 for the centre; docs/accuracy.md); the noisy tracks go through the same ``LineCounter`` as the truth, on the
random lines of the seeds. What is left is the error the counting rule makes of localisation noise alone: a rule
that is less sensitive to it lowers this floor. Tune on seeds 1-3 only.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from actors.detections import Detections  # noqa: E402
from actors.events import Event  # noqa: E402
from actors.lines import LineCounter  # noqa: E402
from bench.accuracy import CONFIG, GT, seed_list  # noqa: E402
from cluster.accuracy import line_figures, with_random_geometry  # noqa: E402
from cluster.accuracy_data import Walkable, foot_points  # noqa: E402
from cluster.config import load_config  # noqa: E402
from cluster.evaluate import GroundTruth, line_table  # noqa: E402

W, H, FPS = 768, 576, 10.0


def crossings(counters: list[LineCounter], gt: GroundTruth, rng: np.random.Generator | None, sd: float) -> list[Event]:
    events: list[Event] = []
    for frame in sorted(gt.frames):
        ids, boxes, _ = gt.frames[frame]
        boxes = boxes.astype(np.float64).copy()
        if rng is not None and len(boxes):
            h = boxes[:, 3] - boxes[:, 1]
            dx = rng.normal(0.0, 0.88 * sd, len(h)) * h
            dy = rng.normal(0.0, sd, len(h)) * h
            boxes[:, [0, 2]] += dx[:, None]
            boxes[:, 3] += dy
        dets = Detections(xyxy=boxes, confidence=np.ones(len(ids), np.float32), tracker_id=ids)
        for c in counters:
            events.extend(c.trigger(dets, (frame - 1) / FPS, W, H))
    for c in counters:
        events.extend(c.flush())
    return events


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", default="1-3")
    ap.add_argument("--draws", type=int, default=5)
    ap.add_argument("--sd", type=float, default=0.05, help="noise of the bottom edge, box heights")
    args = ap.parse_args(argv)
    seeds = seed_list(args.seeds)
    gt = GroundTruth.load(GT)
    with tempfile.TemporaryDirectory():
        cfg = load_config(CONFIG)
    walk = Walkable.from_points(foot_points(gt.frames, W, H))
    cfg = with_random_geometry(cfg, walk, seeds, 24, 0)
    cam = cfg.cameras[0]

    def counters() -> list[LineCounter]:
        return [LineCounter(ln.id, cam.id, ln.start, ln.end, ln.in_point, hysteresis=ln.hysteresis) for ln in cam.lines]

    true = crossings(counters(), gt, None, 0.0)
    errs = []
    for d in range(args.draws):
        noisy = crossings(counters(), gt, np.random.default_rng(1000 + d), args.sd)
        f = line_figures(line_table(cfg, cam.id, noisy, true))
        errs.append(f["count_error_pct"])
        print(
            f"draw {d}: {f['counted']} / {f['true']}, count error {f['count_error_pct']} %, "
            f"directions off > 20 %: {f['directions_over_20pct']} of {f['directions_judged']}",
            flush=True,
        )
    print(f"seeds {args.seeds}, sd {args.sd}: count error mean {np.mean(errs):.2f} % over {args.draws} draws")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

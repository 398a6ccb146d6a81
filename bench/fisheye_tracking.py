"""The tracker under a ceiling fisheye, without a detector: ``bench/fisheye.py --tracking``.

One person walks a straight floor line past the point under the lens (nearest approach ``d`` camera heights) at a
constant speed, seen at 5 fps through an equidistant 180-degree fisheye (1024x1024). Each frame gives the box a
perfect fisheye path would (``actors.fisheye``: a rotated box along the radius from the feet to above the head, as
wide as the shoulders, with 2 px of noise on its centre), as the axis-aligned hull the tracker gets, score 0.8.
A detector gap can be cut around the nearest point (no box while the walker is within ``gap`` of it along the walk).
Printed: track ids per walk (mean over walks at random headings; 1.0: one track from first sight to last), for the
product's tracker (``ByteTracker`` with its defaults: IoU association of hulls in raw fisheye pixels, constant
velocity Kalman, re-linking of rule 7).

The box model (shoulders 0.15 camera heights wide at 0.45 of the height, head at ``PERSON_H``) is a sketch of a
person, not a detector: this measures the motion model, not detection.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from actors.detections import Detections
from actors.fisheye import RotatedBoxes
from actors.lens import Lens
from actors.tracking import ByteTracker, TrackerConfig

PERSON_H = 0.57  # of the camera's height (1.7 m under 3 m), as tests/fisheye_scene.py
SHOULDER_W, SHOULDER_Z = 0.15, 0.45
REACH = 1.3  # the walk runs from REACH before the nearest point to REACH after it
FPS = 5.0


def person_box(lens: Lens, p: np.ndarray) -> list[float]:
    """The rotated box ``cx, cy, w, h, angle`` of a person standing at floor point ``p`` (camera heights)."""
    feet, head = lens.from_floor(p)[0], lens.from_floor(p / (1 - PERSON_H))[0]
    rho = float(np.hypot(*p))
    if rho > 1e-6:
        w = lens.fx * math.atan(rho / (1 - SHOULDER_Z)) * SHOULDER_W / rho
    else:
        w = lens.fx * SHOULDER_W / (1 - SHOULDER_Z)
    c = (feet + head) / 2
    angle = float(lens.azimuth(c[None])[0]) if rho > 1e-3 else 0.0
    return [float(c[0]), float(c[1]), w, float(np.hypot(*(head - feet))) + 0.6 * w, (angle + 180) % 360 - 180]


def walk_ids(lens: Lens, rng: np.random.Generator, nearest: float, speed: float, gap: float) -> int:
    a = rng.uniform(0, 2 * math.pi)
    u = np.array([math.cos(a), math.sin(a)])
    n = np.array([-u[1], u[0]])
    tracker = ByteTracker(TrackerConfig())
    ids: set[int] = set()
    for k in range(int(2 * REACH / speed * FPS) + 1):
        t = k / FPS
        along = -REACH + speed * t
        if gap > 0 and abs(along) < gap:
            dets = Detections.empty()
        else:
            b = np.array([person_box(lens, n * nearest + u * along)], np.float32)
            b[0, :2] += rng.normal(0, 2, 2)
            dets = Detections(RotatedBoxes(b, np.array([0.8], np.float32)).hulls(), [0.8])
        ids |= set(tracker.update(dets, 1000.0 + t).tracker_id.tolist())
    return len(ids)


def bench_tracking(walks: int = 20, seed: int = 0) -> dict[str, Any]:
    lens = Lens.equidistant(512, 512, 512)
    rng = np.random.default_rng(seed)
    nearest = (0.0, 0.1, 0.2, 0.3, 0.5, 0.8)
    rows = []
    for gap in (0.0, 0.2, 0.3):
        for speed in (0.4, 0.6):
            ids = [float(np.mean([walk_ids(lens, rng, d, speed, gap) for _ in range(walks)])) for d in nearest]
            rows.append({"gap": gap, "speed": speed, "ids": dict(zip(nearest, ids, strict=True))})
    head = "| gap around the nearest point | speed | " + " | ".join(f"d={d:g}" for d in nearest) + " |"
    md = [head, "|---|---|" + "---:|" * len(nearest)]
    for r in rows:
        gap_s = 2 * r["gap"] / r["speed"]
        cells = " | ".join(f"{v:.2f}" for v in r["ids"].values())
        md.append(f"| {2 * r['gap']:g} camera heights ({gap_s:.1f} s) | {r['speed']:g} | {cells} |")
    md.append(
        f"\nTrack ids per walk, mean of {walks} walks at random headings (seed {seed}); d: nearest approach to the "
        "point under the lens, camera heights; speed in camera heights a second (0.4: 1.2 m/s under 3 m); 5 fps."
    )
    return {"rows": rows, "markdown": "\n".join(md)}

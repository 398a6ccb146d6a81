"""A ceiling-fisheye scene with exact ground truth: real people walking known paths under a virtual fisheye.

People are cut out of ``../shared/footage/one-by-one`` (frame minus the static background: six visitors, one frame
of each at the table, where they stand whole), and its wooden floor is the floor texture. A virtual ceiling camera
one unit above the floor looks straight down through an equidistant 180-degree fisheye (``actors.lens``). Each
walker goes in a straight line on the floor at a constant speed; a person ``PERSON_H`` of the camera's height tall
is drawn as the cut-out, upright along the radius (feet where the floor point projects, head where the point above it
at the person's height projects), which is how a standing person appears under a ceiling fisheye.

The counting lines are diameters of the image circle: a line on the floor through the point under the lens projects
to a straight radial line, and a person's box centre lies on the same radius as the feet, so the side of the line
of any point of the person is the side of the feet: the true crossings are exact, from the floor paths alone.

Test and bench harness (never imported by the product): used by ``bench/fisheye_counting.py`` and
``tests/integration/test_fisheye.py`` (fixed seeds, exact numbers).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from actors.lens import Lens

SHARED = Path(__file__).resolve().parents[2] / "shared"
ONE_BY_ONE = SHARED / "footage" / "one-by-one" / "one-by-one-person-detection.mp4"
BACKGROUND_S = 2.0  # nobody in view (the first visit starts at 6 s)
PERSON_S = (8.0, 25.0, 52.0, 77.0, 95.0, 126.0)  # one frame of each visitor, standing whole at the table
PERSON_H = 0.57  # of the camera's height: 1.7 m under a 3 m ceiling
SPEED = 0.4  # camera heights a second: 1.2 m/s under a 3 m ceiling
FLOOR_PX = 260.0  # texture pixels per camera height
# A walker appears and vanishes at the ends of its walk (the scene has no doors): a crossing within a second of
# either end is not seen on both sides by any counter (measured, README "Fisheye cameras"), so walks keep their
# crossings this far from their ends. 0 gives the scenes of the first round (same seeds, same walks).
MARGIN_S = 1.5
# People do not walk through each other: walkers keep this far apart on the floor (0.6 m under a 3 m ceiling; in
# the first round's seed 1 two walkers passed 9 cm apart, one blob to any detector).
MIN_APART = 0.2
MIN_NADIR = 0.3  # paths keep this far from the point under the lens (a person there is seen from the top only)

# Diameters of the image circle, normalised, with the side counted "in".
LINES: dict[str, dict[str, Any]] = {
    "across": {"start": [0.08, 0.5], "end": [0.92, 0.5], "in_point": [0.5, 0.9]},
    "along": {"start": [0.5, 0.08], "end": [0.5, 0.92], "in_point": [0.9, 0.5]},
}


@dataclass
class Sprite:
    bgr: np.ndarray
    alpha: np.ndarray  # float32 0..1, same height and width


@dataclass
class Walker:
    start: np.ndarray  # floor position (camera heights), x right, y down the image
    end: np.ndarray
    t0: float  # seconds
    sprite: int

    @property
    def duration(self) -> float:
        return float(np.linalg.norm(self.end - self.start)) / SPEED

    def at(self, t: float) -> np.ndarray | None:
        if not self.t0 <= t <= self.t0 + self.duration:
            return None
        f = (t - self.t0) / self.duration
        return self.start + f * (self.end - self.start)


@dataclass
class Scene:
    size: int
    fps: float
    seconds: float
    lens: Lens
    walkers: list[Walker]
    sprites: list[Sprite]
    floor_maps: tuple[np.ndarray, np.ndarray]
    texture: np.ndarray
    truth: dict[str, dict[str, int]] = field(default_factory=dict)

    def frames(self) -> list[tuple[float, np.ndarray]]:
        return [(i / self.fps, self.render(i / self.fps)) for i in range(round(self.seconds * self.fps))]

    def render(self, t: float) -> np.ndarray:
        frame = cv2.remap(self.texture, *self.floor_maps, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        frame[self._outside()] = 0
        # Farther people first: nearer ones (closer to the nadir) are drawn over them.
        placed = [(w, p) for w in self.walkers if (p := w.at(t)) is not None]
        for w, p in sorted(placed, key=lambda wp: -float(np.hypot(*wp[1]))):
            self._draw(frame, self.sprites[w.sprite], p)
        return frame

    def person_centre(self, w: Walker, t: float) -> tuple[np.ndarray, float] | None:
        """Where walker ``w`` is drawn at ``t``: the pixel midway from feet to head, and the feet-to-head length."""
        p = w.at(t)
        if p is None:
            return None
        feet = self.lens.from_floor(p)[0]
        head = self.lens.from_floor(p / (1 - PERSON_H))[0]
        return (feet + head) / 2, float(np.hypot(*(head - feet)))

    def _outside(self) -> np.ndarray:
        yy, xx = np.mgrid[0 : self.size, 0 : self.size]
        return np.asarray(np.hypot(xx - self.lens.cx, yy - self.lens.cy) > self.lens.radius)

    def _draw(self, frame: np.ndarray, sprite: Sprite, floor: np.ndarray) -> None:
        feet = self.lens.from_floor(floor)[0]
        head = self.lens.from_floor(floor / (1 - PERSON_H))[0]
        tall = float(np.hypot(*(head - feet)))
        sh, sw = sprite.alpha.shape
        s = tall / sh
        phi = math.radians(float(self.lens.azimuth(feet[None])[0]))
        right, up = np.array([math.cos(phi), math.sin(phi)]), np.array([math.sin(phi), -math.cos(phi)])
        a = np.stack([s * right, -s * up], axis=1)  # sprite (u, v) -> frame
        b = feet - a @ np.array([sw / 2, sh])
        m = np.concatenate([a, b[:, None]], axis=1)
        size = (self.size, self.size)
        bgr = cv2.warpAffine(sprite.bgr, m, size, flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0))
        alpha = cv2.warpAffine(sprite.alpha, m, size, flags=cv2.INTER_LINEAR, borderValue=0.0)[:, :, None]
        frame[:] = (alpha * bgr + (1 - alpha) * frame).astype(np.uint8)


# ------------------------------------------------------------------------------------------------- the parts


def _read(cap: cv2.VideoCapture, t: float) -> np.ndarray:
    cap.set(cv2.CAP_PROP_POS_FRAMES, round(t * 10))
    ok, frame = cap.read()
    if not ok:
        raise RuntimeError(f"cannot read {ONE_BY_ONE} at {t} s")
    return np.asarray(frame)


def cut_people(video: Path = ONE_BY_ONE) -> tuple[np.ndarray, list[Sprite]]:
    """The empty room (background) and one cut-out of each visitor (frame minus background, largest blob)."""
    cap = cv2.VideoCapture(str(video))
    try:
        background = _read(cap, BACKGROUND_S)
        sprites = []
        for t in PERSON_S:
            frame = _read(cap, t)
            diff = cv2.absdiff(frame, background).max(axis=2)
            mask = (cv2.GaussianBlur(diff, (5, 5), 0) > 28).astype(np.uint8)
            mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((5, 5), np.uint8))
            mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, np.ones((9, 9), np.uint8))
            _n, labels, stats, _ = cv2.connectedComponentsWithStats(mask)
            k = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
            x, y, w, h = (int(v) for v in stats[k, :4])
            alpha = (labels[y : y + h, x : x + w] == k).astype(np.float32)
            alpha = cv2.GaussianBlur(alpha, (3, 3), 0)
            sprites.append(Sprite(frame[y : y + h, x : x + w].copy(), alpha))
    finally:
        cap.release()
    return background, sprites


def floor_maps(lens: Lens, size: int, texture_shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """``cv2.remap`` tables: each fisheye pixel -> the floor texture pixel under it (computed once)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    floor = lens.to_floor(np.stack([xx.ravel(), yy.ravel()], axis=1))
    th, tw = texture_shape[:2]
    mx = (floor[:, 0] * FLOOR_PX + tw / 2).reshape(size, size).astype(np.float32)
    my = (floor[:, 1] * FLOOR_PX + th / 2).reshape(size, size).astype(np.float32)
    return mx, my


def random_walkers(
    rng: np.random.Generator,
    n: int,
    seconds: float,
    reach: float,
    margin_s: float = MARGIN_S,
    apart: float = MIN_APART,
) -> list[Walker]:
    """``n`` walkers, each from one point of the floor circle of radius ``reach`` to another, staying at least
    ``MIN_NADIR`` from the point under the lens, starting at random times so that all finish within ``seconds``,
    crossing each line at least ``margin_s`` of walking after they appear and before they vanish, and never closer
    than ``apart`` to another walker (0, 0: any walks, the first round's scenes)."""
    walkers: list[Walker] = []
    while len(walkers) < n:
        a, b = rng.uniform(0, 2 * math.pi, 2)
        start = reach * np.array([math.sin(a), -math.cos(a)])
        end = reach * np.array([math.sin(b), -math.cos(b)])
        d = end - start
        length = float(np.linalg.norm(d))
        if length < reach:  # too short a walk to cross much
            continue
        nearest = abs(float(start[0] * d[1] - start[1] * d[0])) / length
        if nearest < MIN_NADIR:
            continue
        duration = length / SPEED
        if duration > seconds - 0.5:
            continue
        t0 = float(rng.uniform(0.2, seconds - duration - 0.2))
        walker = Walker(start, end, t0, int(rng.integers(0, len(PERSON_S))))
        if margin_s > 0 and not _crossings_clear_of_ends(walker, margin_s):
            continue
        if apart > 0 and any(_closest(walker, other) < apart for other in walkers):
            continue
        walkers.append(walker)
    return walkers


def _closest(a: Walker, b: Walker) -> float:
    """The closest two walkers come on the floor while both are in the scene (inf: never at the same time)."""
    t0, t1 = max(a.t0, b.t0), min(a.t0 + a.duration, b.t0 + b.duration)
    if t0 > t1:
        return math.inf
    dists = []
    for t in np.linspace(t0, t1, max(2, int((t1 - t0) * 20) + 1)):
        pa, pb = a.at(float(t)), b.at(float(t))
        if pa is not None and pb is not None:
            dists.append(float(np.linalg.norm(pa - pb)))
    return min(dists, default=math.inf)


def _crossings_clear_of_ends(w: Walker, margin_s: float) -> bool:
    """Is every crossing of a line's diameter at least ``margin_s`` of walking from both ends of the walk?"""
    for ln in LINES.values():
        d = np.array(ln["end"], np.float64) - np.array(ln["start"], np.float64)  # the diameter's direction (floor too)
        normal = np.array([-d[1], d[0]])
        sa, sb = float(normal @ w.start), float(normal @ w.end)
        if sa * sb >= 0:
            continue
        at = sa / (sa - sb) * w.duration
        if at < margin_s or w.duration - at < margin_s:
            return False
    return True


def true_crossings(walkers: list[Walker], lens: Lens, size: int) -> dict[str, dict[str, int]]:
    """Per line, crossings in and out: a walker whose feet path changes side of the line's diameter within the
    segment (the crossing point's pixel between the segment's ends)."""
    out: dict[str, dict[str, int]] = {}
    for name, ln in LINES.items():
        p0, p1, pin = (np.array(ln[k], np.float64) * size for k in ("start", "end", "in_point"))
        normal = np.array([-(p1 - p0)[1], (p1 - p0)[0]])
        in_sign = np.sign(normal @ (pin - p0))
        counts = {"in": 0, "out": 0}
        for w in walkers:
            a, b = lens.from_floor(np.stack([w.start, w.end]))
            sa, sb = normal @ (a - p0), normal @ (b - p0)
            if np.sign(sa) == np.sign(sb):
                continue
            # On the floor the walk is straight and the line's floor image is a straight diameter: one crossing,
            # at the floor point where the walk meets it, projected to find where along the segment it lies.
            g = w.start + (w.end - w.start) * _floor_fraction(w, ln, lens, size)
            x = lens.from_floor(g[None])[0]
            along = (x - p0) @ (p1 - p0) / float((p1 - p0) @ (p1 - p0))
            if 0 <= along <= 1:
                counts["in" if np.sign(sb) == in_sign else "out"] += 1
        out[name] = counts
    return out


def _floor_fraction(w: Walker, ln: dict[str, Any], lens: Lens, size: int) -> float:
    """Fraction of the walk where it meets the line's floor diameter (through the nadir, along the line)."""
    p0, p1 = (lens.to_floor(np.array(ln[k], np.float64)[None] * size)[0] for k in ("start", "end"))
    direction = p1 - p0
    normal = np.array([-direction[1], direction[0]])
    sa, sb = normal @ w.start, normal @ w.end  # the diameter passes through the floor origin
    return float(sa / (sa - sb))


def build_scene(
    seed: int,
    walkers: int = 6,
    seconds: float = 16.0,
    fps: float = 5.0,
    size: int = 1024,
    margin_s: float = MARGIN_S,
    apart: float = MIN_APART,
) -> Scene:
    """The scene of ``seed``: a ``size`` x ``size`` fisheye, ``walkers`` people over ``seconds``, true counts."""
    background, sprites = cut_people()
    texture = background[int(background.shape[0] * 0.62) :]  # the wooden floor below the wall
    lens = Lens.equidistant(size / 2, size / 2, size / 2)
    rng = np.random.default_rng(seed)
    people = random_walkers(rng, walkers, seconds, reach=1.3, margin_s=margin_s, apart=apart)
    scene = Scene(size, fps, seconds, lens, people, sprites, floor_maps(lens, size, texture.shape), texture)
    scene.truth = true_crossings(people, lens, size)
    return scene


# ---------------------------------------------------------------------------------------------- counting


def scene_config(scene: Scene, fisheye: bool, views: int | None = None) -> Any:
    """A store config with one camera on the scene, the lines of ``LINES``, and the scene's lens when ``fisheye``."""
    from cluster.config import parse_config

    camera: dict[str, Any] = {
        "id": "fisheye",
        "source": "scene.mp4",
        "anchor": "center",
        "lines": [{"id": name, **ln} for name, ln in LINES.items()],
    }
    if fisheye:
        r = scene.lens.radius / scene.size
        camera["lens"] = {"type": "fisheye", "centre": [0.5, 0.5], "radius": r, **({"views": views} if views else {})}
    doc = {"store": {"id": "bench", "timezone": "UTC"}, "cameras": [camera]}
    import yaml

    return parse_config(yaml.safe_dump(doc), source="<fisheye scene>")


def count_scene(scene: Scene, detector: Any, fisheye: bool, views: int | None = None) -> dict[str, dict[str, int]]:
    """Run the scene through detection (the worker's fisheye wrapper when ``fisheye``), the tracker and the lines
    (``actors.worker.build_analytics``, as the camera worker builds them); crossings counted per line and direction."""
    from actors.fisheye import wrap_detection

    cfg = scene_config(scene, fisheye, views)
    submit, resolve = wrap_detection(cfg.cameras[0].lens, detector.detect, lambda d: d)
    return Counter(scene, cfg).run(resolve(submit(frame)) for _, frame in scene.frames())


class Counter:
    """The camera's analytics (``actors.worker.build_analytics``: tracker, lines) fed one frame's detections at a
    time; ``counts`` per line and direction, and which track each walker was given (``walker_tracks``)."""

    def __init__(self, scene: Scene, cfg: Any) -> None:
        from actors.worker import build_analytics

        self.scene = scene
        self.analytics = build_analytics(cfg.cameras[0], cfg)
        self.events: list[Any] = []
        self.frame = 0
        self.walker_tracks: dict[int, set[int]] = {i: set() for i in range(len(scene.walkers))}
        self.walker_seen = 0  # walker-frames with a detection on the walker (centre within half its height)
        self.walker_frames = 0

    def feed(self, dets: Any) -> None:
        ts = self.frame / self.scene.fps
        tracked, evs = self.analytics.process(dets, 1000.0 + ts, self.scene.size, self.scene.size)
        self.events.extend(evs)
        present = [(i, found) for i, w in enumerate(self.scene.walkers) if (found := self.scene.person_centre(w, ts))]
        self.walker_frames += len(present)
        self.walker_seen += len(_assign(dets.xyxy, present))
        for i, j in _assign(tracked.xyxy, present).items():
            self.walker_tracks[i].add(int(tracked.tracker_id[j]))
        self.frame += 1

    def run(self, detections: Any) -> dict[str, dict[str, int]]:
        for dets in detections:
            self.feed(dets)
        return self.counts()

    def counts(self) -> dict[str, dict[str, int]]:
        events = self.events + self.analytics.finish(1000.0 + self.scene.seconds)
        counts = {name: {"in": 0, "out": 0} for name in LINES}
        for e in events:
            if e.kind == "line_cross":
                counts[e.line_id][e.direction] += 1
        return counts


def _assign(xyxy: np.ndarray, present: list[tuple[int, tuple[np.ndarray, float]]]) -> dict[int, int]:
    """Walker -> box, one to one (nearest box centres, Hungarian), only within half the walker's height."""
    if len(xyxy) == 0 or not present:
        return {}
    from scipy.optimize import linear_sum_assignment

    c = np.stack([(xyxy[:, 0] + xyxy[:, 2]) / 2, (xyxy[:, 1] + xyxy[:, 3]) / 2], axis=1)
    d = np.array([np.hypot(*(c - centre).T) / (tall / 2) for _, (centre, tall) in present])
    rows, cols = linear_sum_assignment(np.minimum(d, 10.0))
    return {present[r][0]: int(k) for r, k in zip(rows, cols, strict=True) if d[r, k] < 1.0}


def count_error(counted: dict[str, dict[str, int]], truth: dict[str, dict[str, int]]) -> tuple[int, int]:
    """(sum of |counted - true| over lines and directions, true crossings)."""
    err = sum(abs(counted[k][d] - truth[k][d]) for k in truth for d in ("in", "out"))
    return err, sum(truth[k][d] for k in truth for d in ("in", "out"))

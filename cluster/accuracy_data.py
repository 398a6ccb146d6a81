"""Data for the accuracy benchmarks: cached detections of a clip, the walkable region, random lines and zones.

- **Detections are computed once** per (model file, family, threshold, tiles, clip) and kept on disk under
  ``<cache>/eval/`` (``EDGEPAIR_CACHE_DIR`` or ``~/.cache/edgepair``), keyed by the model's sha256, the settings and
  the clip's name, size and modification time. The production ``Detector`` runs on every decoded frame, exactly
  as the worker would call it; a higher threshold is then a filter on the cached rows (the decoders' NMS is greedy
  and has no top-k, so whether a box survives depends only on higher-scoring boxes: filtering after equals
  detecting at that threshold). The tracker and the counting are then replayed on the cache, which is cheap.
- **Walkable region**: the convex hull of the ground truth's foot points (bottom centre of every box, normalised
  to the frame), i.e. where people were seen standing. A random line's centre is drawn uniformly inside it.
- **Random lines**: centre in the walkable hull, length uniform in 0.16-0.44 of the frame (normalised units, the
  ones ``LineCounter`` measures in), direction uniform in 0-180 degrees, both ends inside the frame, "in" side
  chosen by a fair coin. **Random zones**: axis-aligned rectangles, sides uniform in 0.10-0.30, centre in the hull,
  inside the frame. Both from ``numpy.random.default_rng(seed)``, so a seed always gives the same lines.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from actors.detections import Detections
from cluster.config import LineConfig, ZoneConfig
from cluster.errors import ConfigError

log = logging.getLogger(__name__)

# Detections are cached down to this score (per family: SSD's scores sit lower than the COCO models'); any higher
# threshold is a filter on the cache, so one detector pass serves every operating point tried.
CACHE_THRESHOLD = {"ssd": 0.05}
CACHE_THRESHOLD_OTHERS = 0.1
LINE_LENGTH = (0.16, 0.44)
ZONE_SIDE = (0.10, 0.30)
CACHE_VERSION = 1


def eval_cache_dir() -> Path:
    base = os.environ.get("EDGEPAIR_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "edgepair"
    )
    return Path(base) / "eval"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class ClipDetections:
    """Detections of every decoded frame of a clip (frame index 0..n-1), above ``threshold``, in frame pixels."""

    frames: list[Detections]
    width: int
    height: int
    fps: float
    family: str
    threshold: float
    model_sha256: str

    def at(self, index: int, threshold: float | None = None) -> Detections:
        """Frame ``index``'s detections, filtered to ``threshold`` with the family's own comparison."""
        d = self.frames[index]
        if threshold is None or threshold <= self.threshold:
            return d
        keep = d.confidence >= threshold if self.family == "ssd" else d.confidence > threshold
        return d[np.flatnonzero(keep)]


def _cache_key(sha: str, family: str, threshold: float, tiles: int, clip: Path) -> str:
    st = clip.stat()
    text = json.dumps([CACHE_VERSION, sha, family, round(threshold, 6), tiles, clip.name, st.st_size, int(st.st_mtime)])
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def cache_threshold(family: str, wanted: float) -> float:
    """The score detections are cached down to for an operating point at ``wanted``."""
    return min(wanted, CACHE_THRESHOLD.get(family, CACHE_THRESHOLD_OTHERS))


def clip_detections(
    model: Path, clip: Path, *, threshold: float, tiles: int = 1, family: str = "auto", threads: int = 1
) -> ClipDetections:
    """The cached detections of ``clip`` with ``model`` at ``threshold`` and ``tiles``; computed once, then read."""
    from actors.inference import Detector

    if not clip.is_file():
        raise ConfigError(f"footage {clip} not found")
    sha = _sha256(model)
    key = _cache_key(sha, family, threshold, tiles, clip)
    path = eval_cache_dir() / f"{clip.stem}-{model.stem}-t{threshold:g}-x{tiles}-{key}.npz"
    if path.exists():
        z = np.load(path, allow_pickle=False)
        meta = json.loads(str(z["meta"]))
        offsets = z["offsets"]
        xyxy, conf = z["xyxy"], z["conf"]
        cached = [Detections(xyxy=xyxy[a:b], confidence=conf[a:b]) for a, b in itertools.pairwise(offsets)]
        return ClipDetections(cached, meta["width"], meta["height"], meta["fps"], meta["family"], threshold, sha)
    import cv2

    det = Detector(model, family=family, threshold=threshold, tiles=tiles, threads=threads)
    cap = cv2.VideoCapture(str(clip))
    fps = float(cap.get(cv2.CAP_PROP_FPS) or 10.0)
    frames: list[Detections] = []
    width = height = 0
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            height, width = frame.shape[:2]
            frames.append(det.detect(frame))
    finally:
        cap.release()
    if not frames:
        raise ConfigError(f"footage {clip}: no frame could be decoded")
    offsets = np.cumsum([0] + [len(d) for d in frames])
    meta = {"width": width, "height": height, "fps": fps, "family": det.family, "model": str(model), "tiles": tiles}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
    np.savez(
        tmp,
        xyxy=np.concatenate([d.xyxy for d in frames]).reshape(-1, 4),
        conf=np.concatenate([d.confidence for d in frames]),
        offsets=offsets,
        meta=json.dumps(meta),
    )
    os.replace(tmp, path)
    log.info("detections of %s with %s (t=%g, tiles %d) cached in %s", clip.name, model.name, threshold, tiles, path)
    return ClipDetections(frames, width, height, fps, det.family, threshold, sha)


# ------------------------------------------------------------------------------------------ walkable region


def foot_points(frames: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]], width: int, height: int) -> np.ndarray:
    """Normalised bottom centres of every ground-truth box."""
    pts = [
        np.stack([(boxes[:, 0] + boxes[:, 2]) / 2 / width, boxes[:, 3] / height], axis=1)
        for _ids, boxes, _flags in frames.values()
        if len(boxes)
    ]
    return np.clip(np.concatenate(pts).astype(np.float64), 0.0, 1.0) if pts else np.zeros((0, 2))


@dataclass(frozen=True)
class Walkable:
    """The convex hull of the ground truth's foot points: ``contains`` tests points (N, 2)."""

    hull: np.ndarray  # (K, 2) vertices, counter-clockwise

    @classmethod
    def from_points(cls, pts: np.ndarray) -> Walkable:
        from scipy.spatial import ConvexHull

        if len(pts) < 3:
            raise ConfigError("the ground truth has fewer than 3 foot points: no walkable region")
        h = ConvexHull(pts)
        return cls(pts[h.vertices])

    def contains(self, p: np.ndarray) -> np.ndarray:
        a = self.hull
        b = np.roll(a, -1, axis=0)
        cross = (b[None, :, 0] - a[None, :, 0]) * (p[:, None, 1] - a[None, :, 1]) - (b[None, :, 1] - a[None, :, 1]) * (
            p[:, None, 0] - a[None, :, 0]
        )
        return np.asarray(np.all(cross >= 0, axis=1))

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        lo, hi = self.hull.min(axis=0), self.hull.max(axis=0)
        while True:
            p = rng.uniform(lo, hi)
            if self.contains(p[None])[0]:
                return np.asarray(p)


def random_lines(walkable: Walkable, n: int, seed: int) -> list[LineConfig]:
    """``n`` random lines (see the module docstring), ids ``r<seed>-<i>``."""
    rng = np.random.default_rng(seed)
    out: list[LineConfig] = []
    while len(out) < n:
        c = walkable.sample(rng)
        length = rng.uniform(*LINE_LENGTH)
        angle = rng.uniform(0.0, np.pi)
        d = np.array([np.cos(angle), np.sin(angle)]) * length / 2
        a, b = c - d, c + d
        if not (np.all((a >= 0) & (a <= 1)) and np.all((b >= 0) & (b <= 1))):
            continue
        normal = np.array([-d[1], d[0]]) / np.hypot(*d) * (1 if rng.random() < 0.5 else -1)
        inside = np.clip(c + 0.01 * normal, 0.0, 1.0)
        out.append(
            LineConfig(
                id=f"r{seed}-{len(out)}",
                start=(round(float(a[0]), 4), round(float(a[1]), 4)),
                end=(round(float(b[0]), 4), round(float(b[1]), 4)),
                in_point=(round(float(inside[0]), 4), round(float(inside[1]), 4)),
            )
        )
    return out


def random_zones(walkable: Walkable, n: int, seed: int, exit_grace_s: float = 1.0) -> list[ZoneConfig]:
    """``n`` random rectangles (see the module docstring), ids ``z<seed>-<i>``."""
    rng = np.random.default_rng(10_000 + seed)
    out: list[ZoneConfig] = []
    while len(out) < n:
        c = walkable.sample(rng)
        half = rng.uniform(*ZONE_SIDE, size=2) / 2
        x0, y0 = c - half
        x1, y1 = c + half
        if min(x0, y0) < 0 or max(x1, y1) > 1:
            continue
        poly = [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
        out.append(
            ZoneConfig(
                id=f"z{seed}-{len(out)}",
                polygon=[(round(float(x), 4), round(float(y), 4)) for x, y in poly],
                exit_grace_s=exit_grace_s,
            )
        )
    return out

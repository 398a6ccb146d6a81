"""``edgepair camera calibrate-lens`` and ``edgepair camera preview``: a camera's lens and set-up, from one frame.

- ``calibrate-lens`` finds the image circle of a fisheye frame (``actors.lens.estimate_circle``) and prints the
  ``lens:`` block to put under the camera in the store config (centre and radius normalised like lines and zones).
- ``preview`` writes a PNG of one frame with the lens circle and views, detections, tracks, lines and zones drawn
  (``actors.preview``), for every camera: the first ``--frames`` frames go through the camera's detection path (the
  fisheye path when its lens is one) and the tracker, and the last one is drawn.

The frame comes from ``--image`` (a picture of the camera's view) or from the camera's own source (a file, or the
stream with its credentials). Every failure is one line naming the thing and the fix.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import numpy as np

from cluster.config import CameraConfig, Config, load_config
from cluster.errors import ConfigError, EdgepairError


class CameraError(EdgepairError):
    """A camera's frame cannot be had or used (``camera calibrate-lens`` / ``camera preview``)."""


def _camera(cfg: Config, name: str) -> CameraConfig:
    for cam in cfg.cameras:
        if cam.id == name:
            return cam
    known = ", ".join(c.id for c in cfg.cameras)
    raise ConfigError(f"camera {name!r} is not in the store config (cameras: {known})")


def read_frames(cfg: Config, cam: CameraConfig, image: str | None, count: int) -> list[np.ndarray]:
    """``count`` frames: the image file repeated, or the first ``count`` frames of the camera's source."""
    import cv2

    if image is not None:
        frame = cv2.imread(image)
        if frame is None:
            raise CameraError(f"cannot read image {image}: give a PNG or JPEG file of the camera's view")
        return [frame] * count
    from actors.capture import _open  # the capture's own opening: credentials injected at the last moment

    cap = _open(cam.source, cam.is_stream, 10_000, cfg.credential_source(cam.id))
    try:
        frames: list[np.ndarray] = []
        while len(frames) < count:
            ok, frame = cap.read()
            if not ok:
                break
            frames.append(frame)
    finally:
        cap.release()
    if not frames:
        raise CameraError(f"camera {cam.id}: no frame could be read from its source; check it, or pass --image")
    return frames


def lens_block(frame: np.ndarray) -> str:
    """The YAML ``lens:`` block of the frame's image circle; CameraError when none is found."""
    from actors.lens import estimate_circle

    circle = estimate_circle(frame)
    if circle is None:
        raise CameraError(
            "no image circle found in this frame (no dark surround, or too little of its edge visible): measure the"
            " circle's centre and radius by hand, or give the lens's OpenCV calibration (K, D, size)"
        )
    h, w = frame.shape[:2]
    return (
        "lens:\n  type: fisheye\n"
        f"  centre: [{circle.cx / w:.4f}, {circle.cy / h:.4f}]\n"
        f"  radius: {circle.radius / h:.4f}\n"
        f"  size: [{w}, {h}]\n"
        f"# image circle: centre ({circle.cx:.1f}, {circle.cy:.1f}) px, radius {circle.radius:.1f} px of a {w}x{h}"
        f" frame, fitted to {circle.edge_points} edge pixels"
    )


def render_preview(cfg: Config, cam: CameraConfig, frames: list[np.ndarray], detector: Any | None) -> np.ndarray:
    """The last frame with the camera's set-up drawn (see ``actors.preview``); ``detector`` None: no detections."""
    from actors import preview
    from actors.detections import Detections
    from actors.fisheye import FisheyeDetection

    frame = frames[-1]
    h, w = frame.shape[:2]
    out = frame.copy()
    detect = detector.detect if detector is not None else (lambda f: Detections.empty())
    fisheye = FisheyeDetection(cam.lens, detect, lambda d: d) if cam.lens and cam.lens.is_fisheye else None
    if fisheye is not None:
        lens, views = fisheye.plan(w, h)
        preview.draw_lens(out, lens, views)
    if detector is not None:
        _draw_detections(cfg, cam, frames, detector, fisheye, out)
    # The set-up last, over the detections: what the installer checks is where the lines and zones are.
    preview.draw_zones(out, [(z.id, z.polygon) for z in cam.zones])
    preview.draw_lines(out, [(ln.id, ln.start, ln.end, ln.in_point) for ln in cam.lines])
    return out


def _draw_detections(
    cfg: Config, cam: CameraConfig, frames: list[np.ndarray], detector: Any, fisheye: Any, out: np.ndarray
) -> None:
    from actors import preview
    from actors.detections import Detections
    from actors.fisheye import RotatedBoxes
    from actors.worker import build_analytics

    h, w = out.shape[:2]
    analytics = build_analytics(cam, cfg)
    dets, tracks, rotated = Detections.empty(), Detections.empty(), None
    for i, f in enumerate(frames):
        dets = fisheye.resolve(fisheye.submit(f)) if fisheye is not None else detector.detect(f)
        tracks, _ = analytics.process(dets, float(i) / (cam.fps or 10.0), w, h)
    if fisheye is not None:
        rotated = fisheye.last if fisheye.last is not None else RotatedBoxes(np.zeros((0, 5)), np.zeros(0))
    preview.draw_detections(out, dets, rotated)
    preview.draw_tracks(out, tracks, cam.anchor)


def write_png(path: Path, image: np.ndarray) -> None:
    """Atomically: a temporary name, fsync, rename."""
    import cv2

    ok, data = cv2.imencode(".png", image)
    if not ok:
        raise CameraError(f"cannot encode the preview as PNG for {path}")
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data.tobytes())
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise CameraError(f"cannot write {path}: {exc.strerror}; choose a writable --out") from None


def cmd_camera(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    cam = _camera(cfg, args.camera)
    if args.action == "calibrate-lens":
        print(lens_block(read_frames(cfg, cam, args.image, 1)[0]))
        return 0
    if not args.out:
        raise CameraError("camera preview needs --out file.png")
    if not 1 <= args.frames <= 300:
        raise CameraError(f"--frames must be 1..300, got {args.frames}")
    detector = None
    if not args.no_detect:
        from actors.inference import Detector
        from cluster.models import default_model_path

        m = cfg.model
        detector = Detector(
            m.path or default_model_path(), family=m.family, threshold=m.threshold, tiles=m.tiles, threads=m.threads
        )
    image = render_preview(cfg, cam, read_frames(cfg, cam, args.image, args.frames), detector)
    write_png(Path(args.out), image)
    print(f"camera {cam.id}: preview {image.shape[1]}x{image.shape[0]} written to {args.out}")
    return 0


def add_parser(sub: Any) -> None:
    s = sub.add_parser("camera", help="a camera's lens and set-up: calibrate-lens (image circle), preview (PNG)")
    s.add_argument("action", choices=["calibrate-lens", "preview"])
    s.add_argument("--config", required=True, help="store YAML")
    s.add_argument("--camera", required=True, help="camera id")
    s.add_argument("--image", default=None, help="a frame of the camera as an image file (default: its source)")
    s.add_argument("--out", default=None, help="preview: the PNG to write")
    s.add_argument("--frames", type=int, default=5, help="preview: frames run through detection and tracking")
    s.add_argument("--no-detect", action="store_true", help="preview: the set-up only, no detector")
    s.set_defaults(func=cmd_camera)

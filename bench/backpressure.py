"""Backpressure soak: a camera whose inference cannot keep up, for an hour; memory must stay flat.

    .venv/bin/python bench/backpressure.py [--minutes 60] [--detect-fps 2] [--model PATH]

One production ``CameraWorker`` in this process reads vtest.avi played as a live camera (10 frames/s, frame position
from the wall clock, looping) while its detector (the real ONNX Runtime session, slowed down to ``--detect-fps``
frames/s to stand for an overloaded machine) cannot keep up. The capture keeps only the newest frames
(``runtime.frame_queue``) and counts what it drops. Every 30 s the script samples this process's resident memory, the
frames processed and dropped; it prints the samples, then the first-to-last and max-to-first RSS ratios after a
2-minute warm-up, and what an unbounded queue would have held by the end (dropped frames x frame bytes).
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from actors.inference import Detector  # noqa: E402
from actors.worker import CameraWorker  # noqa: E402
from cluster.config import parse_config  # noqa: E402
from cluster.models import default_model_path  # noqa: E402

VTEST = "/usr/share/doc/opencv-doc/examples/data/vtest.avi"
FRAME_BYTES = 768 * 576 * 3


def rss_mb() -> float:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--detect-fps", type=float, default=2.0, help="what the slowed detector sustains")
    ap.add_argument("--sample-s", type=float, default=30.0)
    ap.add_argument("--model", type=Path, default=None)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    model = args.model or default_model_path()
    if not model.exists():
        raise SystemExit(f"model {model} not found: run `edgepair model install` or pass --model")
    det = Detector(str(model), threads=1)
    period = 1.0 / args.detect_fps

    def resolve(frame: object) -> object:
        t = time.monotonic()
        out = det.detect(frame)  # type: ignore[arg-type]
        time.sleep(max(0.0, period - (time.monotonic() - t)))
        return out

    with tempfile.TemporaryDirectory(prefix="edgepair-backpressure-") as tmp:
        cfg = parse_config(
            f"""
store: {{id: soak, timezone: Europe/London}}
model: {{path: {model}}}
cameras:
  - id: cam-1
    source: {VTEST}
    playback: live
    loop: true
    fps: 10
    lines: [{{id: l1, start: [0.05, 0.55], end: [0.95, 0.55], in_point: [0.5, 0.9]}}]
storage: {{data_dir: {tmp}/data}}
runtime: {{inflight: 1}}
"""
        )
        worker = CameraWorker(cfg, "cam-1", lambda f: f, resolve, token=1, model_version="soak")
        samples: list[tuple[float, float, int, int]] = []
        t0 = time.monotonic()
        end = t0 + args.minutes * 60
        print(f"{'min':>6} {'rss MB':>8} {'processed':>10} {'dropped':>9}")
        try:
            while time.monotonic() < end:
                time.sleep(min(args.sample_s, max(0.0, end - time.monotonic())))
                st = worker.status()
                samples.append((time.monotonic() - t0, rss_mb(), int(st["frames"]), int(st["dropped"])))
                m, r, f, d = samples[-1]
                print(f"{m / 60:>6.1f} {r:>8.1f} {f:>10} {d:>9}", flush=True)
        finally:
            worker.stop()
    warm = [s for s in samples if s[0] >= 120] or samples
    first, last, peak = warm[0][1], warm[-1][1], max(s[1] for s in warm)
    dropped = samples[-1][3]
    print()
    print(f"machine: {platform.node()} {os.cpu_count()} cores; {args.minutes:g} min; camera 10 fps, detector")
    print(f"{args.detect_fps:g} fps; frame_queue {cfg.runtime.frame_queue}")
    print(f"RSS after warm-up: first {first:.1f} MB, last {last:.1f} MB, max {peak:.1f} MB, median")
    med = statistics.median(s[1] for s in warm)
    print(f"{med:.1f} MB; last/first {last / first:.3f}, max/first {peak / first:.3f}")
    print(f"frames processed {samples[-1][2]}, dropped {dropped}: an unbounded queue would hold")
    print(f"{dropped * FRAME_BYTES / 2**30:.1f} GiB of frames by now")
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    os._exit(code)  # OpenCV's and ONNX Runtime's native threads abort a normal interpreter exit here

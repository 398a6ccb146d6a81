"""onnxruntime's intra-op threads with and without busy-waiting between runs, side by side in one run.

    .venv/bin/python bench/spinning.py [--model PATH] [--threads 0] [--fps 4] [--seconds 15] [--repeat 3]

Two figures per setting, on the same frames of vtest.avi already decoded in memory:
- throughput: ``Detector.detect`` back to back (frames/s);
- paced cost: ``detect`` called at a camera's rate (``--fps``) for ``--seconds``, and the CPU time the process used
  per second of wall time (percent of one core): what a camera costs a workstation that also decodes, tracks and
  writes. A spinning thread keeps a core busy after each run although there is nothing to do.
Rounds alternate the two settings (spinning, then not, ``--repeat`` times); medians and ratios are printed.
"""

from __future__ import annotations

import argparse
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import cv2

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from actors.inference import Detector  # noqa: E402
from cluster.models import default_model_path  # noqa: E402

VTEST = "/usr/share/doc/opencv-doc/examples/data/vtest.avi"


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def one_round(det: Detector, frames: list, fps: float, seconds: float) -> tuple[float, float]:
    for f in frames[:3]:
        det.detect(f)
    t0 = time.perf_counter()
    for f in frames:
        det.detect(f)
    throughput = len(frames) / (time.perf_counter() - t0)
    c0, t0, i = _cpu_s(), time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        det.detect(frames[i % len(frames)])
        i += 1
        time.sleep(max(0.0, t0 + i / fps - time.perf_counter()))
    return throughput, 100.0 * (_cpu_s() - c0) / (time.perf_counter() - t0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, default=None, help="ONNX detector (default: the installed default model)")
    ap.add_argument("--threads", type=int, default=0, help="intra-op threads (0: onnxruntime's choice, as nodes use)")
    ap.add_argument("--fps", type=float, default=4.0, help="the paced camera rate")
    ap.add_argument("--seconds", type=float, default=15.0, help="length of each paced run")
    ap.add_argument("--frames", type=int, default=60, help="frames of vtest.avi in memory")
    ap.add_argument("--repeat", type=int, default=3, help="alternating rounds per setting")
    args = ap.parse_args()
    model = args.model or default_model_path()
    if not Path(model).is_file():
        msg = f"bench/spinning.py: no detector at {model}: run `edgepair model install` or pass --model"
        print(msg, file=sys.stderr)
        return 2
    cap = cv2.VideoCapture(VTEST)
    frames = []
    while len(frames) < args.frames:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    if not frames:
        print(f"bench/spinning.py: cannot read {VTEST}: install Debian's opencv-doc package", file=sys.stderr)
        return 2
    dets = {spin: Detector(model, threads=args.threads, spinning=spin) for spin in (True, False)}
    results: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
    for r in range(args.repeat):
        for spin in (True, False):
            results[spin].append(one_round(dets[spin], frames, args.fps, args.seconds))
            thr, cpu = results[spin][-1]
            name = "on " if spin else "off"
            print(f"round {r + 1} spinning={name}: {thr:6.1f} frames/s, paced {cpu:5.1f} % of a core")
    med = {s: (statistics.median(t for t, _ in v), statistics.median(c for _, c in v)) for s, v in results.items()}
    print(f"\n{Path(model).name}, threads={args.threads}, {len(frames)} frames, paced at {args.fps:g} frames/s; "
          f"{platform.node()}, {platform.processor() or platform.machine()}, median of {args.repeat}")  # fmt: skip
    print("| spinning | throughput frames/s | CPU at the paced rate (% of a core) |")
    print("|---|---|---|")
    for spin in (True, False):
        name = "on (onnxruntime default)" if spin else "off (edgepair)"
        print(f"| {name} | {med[spin][0]:.1f} | {med[spin][1]:.1f} |")
    print(f"ratio off/on: throughput {med[False][0] / med[True][0]:.2f}, paced CPU {med[False][1] / med[True][1]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

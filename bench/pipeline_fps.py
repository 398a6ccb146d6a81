"""Raw ONNX Runtime frames/s of the detector alone vs end-to-end frames/s of the Ray pipeline, same frames, one run.

    .venv/bin/python bench/pipeline_fps.py [--model PATH] [--frames 400] [--repeat 3]

The raw figure is ``Detector.detect`` (pre-processing, session.run, decoding) on frames already decoded in memory,
one after the other; the pipeline figure is ``edgepair run`` on the same file in ``fast`` playback (capture, shared
inference actor, tracking, analytics, segments), counted from its first to its last processed frame so that Ray's
start-up is excluded. Both use the same ONNX Runtime thread setting. Medians over ``--repeat`` alternating rounds.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from actors.inference import Detector  # noqa: E402
from cluster.config import parse_config  # noqa: E402
from cluster.models import default_model_path  # noqa: E402

VTEST = "/usr/share/doc/opencv-doc/examples/data/vtest.avi"


def clip(n: int, out_dir: Path) -> tuple[Path, list]:
    """The first n frames of vtest.avi, as a file for the pipeline and in memory for the raw run."""
    cap = cv2.VideoCapture(VTEST)
    frames = []
    while len(frames) < n:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f)
    cap.release()
    path = out_dir / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (frames[0].shape[1], frames[0].shape[0]))
    for f in frames:
        writer.write(f)
    writer.release()
    return path, frames


def raw_fps(model: Path, frames: list, threads: int) -> float:
    det = Detector(str(model), threads=threads)
    det.detect(frames[0])  # warm-up
    t0 = time.perf_counter()
    for f in frames:
        det.detect(f)
    return len(frames) / (time.perf_counter() - t0)


def pipeline_fps(model: Path, video: Path, work: Path, threads: int) -> tuple[float, dict]:
    text = f"""
store: {{id: bench, timezone: Europe/London}}
model: {{path: {model}, threads: {threads}}}
cameras:
  - id: cam-1
    source: {video}
    playback: fast
    lines: [{{id: l1, start: [0.05, 0.55], end: [0.95, 0.55], in_point: [0.5, 0.9]}}]
storage: {{data_dir: {work / "data"}}}
"""
    work.mkdir(parents=True, exist_ok=True)
    cfg_path = work / "bench.yaml"
    cfg_path.write_text(text)
    parse_config(text)  # fail early with the config error, not in the child
    code = (
        "import json,sys; from cluster.config import load_config; from cluster.runner import run_store;"
        f"r = run_store(load_config({str(cfg_path)!r}), progress=False);"
        "print('RESULT ' + json.dumps({'cameras': r.cameras, 'inference': r.inference}))"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if line is None:
        raise SystemExit(f"pipeline run failed:\n{out.stderr[-3000:]}")
    res = json.loads(line[7:])
    cam = res["cameras"]["cam-1"]
    span = cam["last_frame_at"] - cam["first_frame_at"]
    return (cam["frames"] - 1) / span, res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--frames", type=int, default=400)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0 = all cores)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    model = args.model or default_model_path()
    if not model.exists():
        raise SystemExit(f"model {model} not found: run `edgepair model install` or pass --model")
    with tempfile.TemporaryDirectory(prefix="edgepair-bench-") as tmp:
        work = Path(tmp)
        video, frames = clip(args.frames, work)
        raws, pipes = [], []
        info: dict = {}
        for i in range(args.repeat):
            raws.append(raw_fps(model, frames, args.threads))
            fps, info = pipeline_fps(model, video, work / f"run{i}", args.threads)
            pipes.append(fps)
            print(
                f"round {i + 1}: raw {raws[-1]:.1f} fps, pipeline {pipes[-1]:.1f} fps, ratio {pipes[-1] / raws[-1]:.2f}"
            )
        raw, pipe = statistics.median(raws), statistics.median(pipes)
        ratios = [p / r for p, r in zip(pipes, raws, strict=True)]
        print()
        print(f"machine: {platform.node()} {os.cpu_count()} cores, {platform.processor() or platform.machine()}")
        print(f"model: {model.name} ({info['inference']['provider']}), {len(frames)} frames of vtest.avi 768x576")
        print(f"| measure | frames/s (median of {args.repeat}) |")
        print("|---|---|")
        print(f"| raw ONNX Runtime (Detector.detect, in-memory frames) | {raw:.1f} |")
        print(f"| end-to-end Ray pipeline (decode, inference actor, tracking, analytics, Parquet) | {pipe:.1f} |")
        print(f"| ratio pipeline / raw | {statistics.median(ratios):.2f} (target >= 0.85) |")


if __name__ == "__main__":
    main()

"""Raw ONNX Runtime vs the in-process pipeline vs the Ray pipeline, same frames, one run, with a profile per stage.

    .venv/bin/python bench/pipeline_fps.py [--model PATH] [--frames 400] [--repeat 3]

The raw figure is ``Detector.detect`` (pre-processing, session.run, decoding) on frames already decoded in memory,
one after the other; the in-process figure is ``edgepair evaluate``'s path (the production ``CameraWorker``, the
detector called in its thread); the Ray figure is ``edgepair run`` (capture actor, shared inference actor, tracking,
analytics, segments). Both pipelines read the same file in ``fast`` playback, each in a fresh process, counted from
its first to its last processed frame so that start-up is excluded. All use the same ONNX Runtime thread setting.
Medians over ``--repeat`` rounds (raw, in-process, Ray in each round), then the ratios.

The profile is read from what the pipeline keeps anyway: the worker's time per stage (``status()["stages"]``), the
capture's decode time (``capture.decode_s``) and the inference server's batching wait, hand-over and busy time
(``info()``). Stages run in parallel threads and processes (decode beside the worker, inference in its own actor), so
they do not add up to the wall time per frame; the "worker waits" rows are where the worker thread sat idle.
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


def write_config(model: Path, video: Path, work: Path, threads: int) -> Path:
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
    return cfg_path


def run_child(kind: str, cfg_path: Path) -> dict:
    """One pipeline run in a fresh process: ``ray`` (``edgepair run``'s path) or ``inproc`` (``evaluate``'s path)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", kind, "--config", str(cfg_path)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if line is None:
        raise SystemExit(f"{kind} pipeline run failed:\n{out.stderr[-3000:]}")
    return json.loads(line[7:])


def child(kind: str, cfg_path: Path) -> None:
    from cluster.config import load_config

    config = load_config(cfg_path)
    if kind == "ray":
        from cluster.runner import run_store

        r = run_store(config, progress=False)
        cameras, inference = r.cameras, r.inference
    else:
        # The in-process pipeline of ``edgepair evaluate`` (cluster.evaluate.run_tracks): the same CameraWorker, the
        # detector called in the worker's thread.
        from actors.inference import Detector
        from actors.worker import CameraWorker

        m = config.model
        det = Detector(m.path, family=m.family, threshold=m.threshold, tiles=m.tiles, threads=m.threads or 0)
        worker = CameraWorker(
            config, "cam-1", det.detect, lambda d: d, autostart=False, model_version=det.model_sha256[:12]
        )
        worker.start()
        worker.wait(24 * 3600)
        if worker.error:
            raise SystemExit(f"in-process run failed: {worker.error}")
        cameras, inference = {"cam-1": worker.status()}, {"provider": det.provider}
    print("RESULT " + json.dumps({"cameras": cameras, "inference": inference}), flush=True)
    # The in-process detector's and capture's daemon threads may sit in ONNX Runtime or OpenCV code: the interpreter's
    # teardown would abort under them ("terminate called without an active exception"). Everything is printed: leave.
    os._exit(0)


def fps_of(res: dict) -> float:
    cam = res["cameras"]["cam-1"]
    return (cam["frames"] - 1) / (cam["last_frame_at"] - cam["first_frame_at"])


# (label, how to read ms per frame from a run's result); None where the stage does not exist on that path.
def profile(res: dict, kind: str) -> dict[str, float | None]:
    cam = res["cameras"]["cam-1"]
    n = max(1, cam["frames"])
    st, cap, inf = cam["stages"], cam["capture"], res["inference"]
    ms = {k: 1000.0 * v / n for k, v in st.items()}
    out: dict[str, float | None] = {
        "decode (capture thread)": 1000.0 * cap["decode_s"] / max(1, cap["frames_read"]),
        "worker waits for a frame": ms["wait_frame"],
    }
    if kind == "ray":
        out["hand-over: submit call (worker)"] = ms["submit"]
        out["hand-over: sent to arrived (actor)"] = 1000.0 * inf["handover_s"] / max(1, inf["handed"])
        out["batching wait (actor queue)"] = 1000.0 * inf["queue_s"] / max(1, inf["frames"])
        out["inference (actor, per frame)"] = 1000.0 * inf["busy_s"] / max(1, inf["frames"])
        out["worker waits for the result"] = ms["wait_result"]
        out["hand-back: ray.get (worker)"] = ms["resolve"]
    else:
        out["hand-over: submit call (worker)"] = None
        out["hand-over: sent to arrived (actor)"] = None
        out["batching wait (actor queue)"] = None
        out["inference (actor, per frame)"] = ms["submit"]  # in-process, submit is the detection
        out["worker waits for the result"] = None
        out["hand-back: ray.get (worker)"] = None
    out["tracking + counting"] = ms["track_count"]
    out["segment writing"] = ms["write"]
    out["wall time per frame"] = 1000.0 / fps_of(res)
    return out


RAW_ROWS = ("inference (actor, per frame)", "wall time per frame")


def _cell(values: list[float | None]) -> str:
    got = [v for v in values if v is not None]
    return f"{statistics.median(got):.2f}" if got else "-"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--frames", type=int, default=400)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0 = all cores)")
    ap.add_argument("--child", choices=("ray", "inproc"), help=argparse.SUPPRESS)
    ap.add_argument("--config", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.child:
        child(args.child, args.config)
        return
    model = args.model or default_model_path()
    if not model.exists():
        raise SystemExit(f"model {model} not found: run `edgepair model install` or pass --model")
    with tempfile.TemporaryDirectory(prefix="edgepair-bench-") as tmp:
        work = Path(tmp)
        video, frames = clip(args.frames, work)
        raws: list[float] = []
        fps: dict[str, list[float]] = {"inproc": [], "ray": []}
        prof: dict[str, list[dict[str, float | None]]] = {"inproc": [], "ray": []}
        info: dict = {}
        for i in range(args.repeat):
            raws.append(raw_fps(model, frames, args.threads))
            for kind in ("inproc", "ray"):
                res = run_child(kind, write_config(model, video, work / f"{kind}{i}", args.threads))
                fps[kind].append(fps_of(res))
                prof[kind].append(profile(res, kind))
                info = res if kind == "ray" else info
            print(
                f"round {i + 1}: raw {raws[-1]:.1f} fps, in-process {fps['inproc'][-1]:.1f} fps, "
                f"Ray {fps['ray'][-1]:.1f} fps; Ray/in-process {fps['ray'][-1] / fps['inproc'][-1]:.2f}, "
                f"Ray/raw {fps['ray'][-1] / raws[-1]:.2f}",
                flush=True,
            )
        raw, inproc, ray_ = statistics.median(raws), statistics.median(fps["inproc"]), statistics.median(fps["ray"])
        n = args.repeat
        print()
        print(f"machine: {platform.node()} {os.cpu_count()} cores, {platform.processor() or platform.machine()}")
        print(f"model: {model.name} ({info['inference']['provider']}), {len(frames)} frames of vtest.avi 768x576")
        print()
        print(f"| stage, ms per frame (median of {n}) | raw | in-process | Ray |")
        print("|---|---:|---:|---:|")
        for label in prof["ray"][0]:
            raw_cell = f"{1000.0 / raw:.2f}" if label in RAW_ROWS else "-"
            cells = [_cell([p[label] for p in prof[k]]) for k in ("inproc", "ray")]
            print(f"| {label} | {raw_cell} | {cells[0]} | {cells[1]} |")
        print()
        print(f"| measure | frames/s (median of {n}) |")
        print("|---|---|")
        print(f"| raw ONNX Runtime (Detector.detect, in-memory frames) | {raw:.1f} |")
        print(f"| in-process pipeline (evaluate's path: decode, detect, track, count, Parquet) | {inproc:.1f} |")
        print(f"| Ray pipeline (capture actor, inference actor, tracking, counting, Parquet) | {ray_:.1f} |")
        r_ip = statistics.median([r / p for r, p in zip(fps["ray"], fps["inproc"], strict=True)])
        r_raw = statistics.median([r / w for r, w in zip(fps["ray"], raws, strict=True)])
        ip_raw = statistics.median([p / w for p, w in zip(fps["inproc"], raws, strict=True)])
        print(f"| ratio Ray / in-process | {r_ip:.2f} (target >= 0.9) |")
        print(f"| ratio Ray pipeline / raw | {r_raw:.2f} (target >= 0.85) |")
        print(f"| ratio in-process / raw | {ip_raw:.2f} |")


if __name__ == "__main__":
    main()

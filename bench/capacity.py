"""Cameras a workstation carries at a frame rate and resolution before any camera drops frames, per model.

    PYTHONPATH=. .venv/bin/python bench/capacity.py [--quick] [--models all|default|PATH,...]
        [--settings 768x576@10,768x576@5,1920x1080@10,1920x1080@5] [--seconds 8] [--max-cameras 16]

For each model and setting, the Ray pipeline (``edgepair run``'s actors: one capture actor per camera, the node's
one shared inference actor) and the in-process pipeline (the same ``CameraWorker``s as threads of one process, one
in-process ``InferenceServer`` batching across them) are each given N cameras playing a clip of that resolution in
real time, looped, at that frame rate. A probe lets them settle, then watches them for ``--seconds``: it passes when
no camera dropped a frame (the capture's backpressure, ``frames_dropped``) and every camera processed at least 95 %
of the frames its rate asks for (a camera whose decoding falls behind drops as surely, only later). The capacity is
the largest N that passes, found by doubling then bisecting (``max_passing``, a pure function tested in
``tests/unit/test_capacity_search.py``); the cameras of one search stay running between probes (only the difference
is started or stopped), each path in a fresh process per model and resolution.

The detector runs where ONNX Runtime's ``auto`` providers put it: CUDA when this onnxruntime build has it and a GPU
is there, else the CPU; the table says which (and that there is no GPU, where there is none).
``--quick``: the default model only, 6 s probes, at most 12 cameras. Clips: vtest.avi (768x576, 10 fps) and the same
frames scaled to 1920x1080 (MJPG, written once per run).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
VTEST = "/usr/share/doc/opencv-doc/examples/data/vtest.avi"
SHARED_MODELS = REPO.parent / "shared" / "models"
MIN_SHARE = 0.95
"""A probe fails when a camera processed fewer than this share of the frames its rate asks for in the window, less
one frame (the window's two ends are status reads, not frame times: one frame either way is not a lag)."""


# --- the search and the verdict (pure) --------------------------------------------------------------------------


def max_passing(probe: Callable[[int], bool], *, start: int = 1, limit: int = 64) -> tuple[int, list[tuple[int, bool]]]:
    """The largest n in [0, ``limit``] for which ``probe(n)`` is true, for a probe that is true up to some n and false
    past it (cameras carried, then not).

    Doubles from ``start`` until a probe fails or ``limit`` passes, then bisects between the last n that passed (0
    when none) and the first that failed. Each n is probed at most once. Returns the n and the probes made, in order,
    as (n, passed). 0 means even ``start`` failed and so did every n below it down to 1.
    """
    if start < 1 or limit < start:
        raise ValueError(f"need 1 <= start <= limit, got start={start}, limit={limit}")
    trace: list[tuple[int, bool]] = []

    def ask(n: int) -> bool:
        ok = bool(probe(n))
        trace.append((n, ok))
        return ok

    lo, hi = 0, 0  # lo: largest n known to pass (0: none); hi: smallest n known to fail (0: none yet)
    n = start
    while True:
        if ask(n):
            lo = n
            if n >= limit:
                return lo, trace
            n = min(2 * n, limit)
        else:
            hi = n
            break
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if ask(mid):
            lo = mid
        else:
            hi = mid
    return lo, trace


def verdict(
    before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]], fps: float, seconds: float
) -> tuple[bool, str]:
    """Whether the cameras carried their rate between two status snapshots ``seconds`` apart, and why (a sentence).

    A status is the worker's ``status()``: ``frames`` processed and ``dropped`` by the capture. Fails when a camera
    dropped a frame, processed fewer than ``MIN_SHARE`` of ``fps * seconds`` frames less one, or is missing from
    ``after``.
    """
    want = fps * seconds
    worst: list[str] = []
    for cam, b in sorted(before.items()):
        a = after.get(cam)
        if a is None:
            return False, f"camera {cam} gave no status"
        dropped = a["dropped"] - b["dropped"]
        done = a["frames"] - b["frames"]
        if dropped > 0:
            worst.append(f"{cam} dropped {dropped}")
        elif done + 1 < MIN_SHARE * want:
            worst.append(f"{cam} processed {done} of {want:.0f}")
    if worst:
        return False, f"{len(worst)} of {len(before)} cameras behind: " + ", ".join(worst[:3])
    done = sum(after[c]["frames"] - before[c]["frames"] for c in before)
    return True, f"{len(before)} cameras, {done} frames in {seconds:.0f} s, none dropped"


# --- probes (child processes) --------------------------------------------------------------------------------


def parse_setting(text: str) -> tuple[int, int, float]:
    size, _, fps = text.partition("@")
    w, _, h = size.partition("x")
    return int(w), int(h), float(fps)


def make_clip(width: int, height: int, out: Path, frames: int = 200) -> Path:
    """vtest.avi's first ``frames`` frames at ``width`` x ``height``, 10 fps, MJPG (looped by the cameras)."""
    import cv2

    cap = cv2.VideoCapture(VTEST)
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (width, height))
    for _ in range(frames):
        ok, f = cap.read()
        if not ok:
            break
        if f.shape[1] != width or f.shape[0] != height:
            f = cv2.resize(f, (width, height), interpolation=cv2.INTER_LINEAR)
        writer.write(f)
    writer.release()
    cap.release()
    return out


def config_text(model: Path, clip: Path, data_dir: Path, cameras: int) -> str:
    cams = "\n".join(
        f"  - {{id: cam-{i + 1}, source: {clip}, playback: realtime, loop: true,"
        f" lines: [{{id: l1, start: [0.05, 0.55], end: [0.95, 0.55], in_point: [0.5, 0.9]}}]}}"
        for i in range(cameras)
    )
    return (
        f"store: {{id: capacity, timezone: Europe/London}}\nmodel: {{path: {model}}}\n"
        f"cameras:\n{cams}\nstorage: {{data_dir: {data_dir}}}\n"
    )


class _Pool:
    """Running cameras of one path (``ray`` or ``inproc``), grown or shrunk to N between probes."""

    def __init__(self, kind: str, config: Any, model: Path) -> None:
        from cluster.runner import load_detector_info

        self.kind, self.config = kind, config
        self.version = load_detector_info(config, model)["model_sha256"][:12]
        self.running: list[tuple[str, Any]] = []
        self.next_id = 0
        if kind == "ray":
            from actors.ray_actors import start_inference, start_ray

            start_ray(config, Path(config.storage.data_dir).parent / "run")
            self.inference = start_inference(config, str(model))
            import ray

            self.provider = ray.get(self.inference.info.remote())["provider"]
        else:
            from actors.worker import InferenceServer

            self.server = InferenceServer(config, str(model), config.runtime.inference_batch)
            self.provider = self.server.detector.provider

    def resize(self, n: int, fps: float) -> None:
        while len(self.running) > n:
            self._stop(*self.running.pop())
        while len(self.running) < n:
            cam_id = self.config.cameras[self.next_id].id
            self.next_id += 1
            if self.kind == "ray":
                from actors.ray_actors import start_camera

                w = start_camera(self.config, cam_id, self.inference, token=0, model_version=self.version, fps=fps)
            else:
                from actors.worker import CameraWorker

                w = CameraWorker(
                    self.config, cam_id, self.server.detect, lambda d: d, model_version=self.version, fps=fps
                )
            self.running.append((cam_id, w))

    def statuses(self) -> dict[str, dict[str, Any]]:
        if self.kind == "ray":
            import ray

            refs = {c: w.status.remote() for c, w in self.running}
            return {c: ray.get(r, timeout=60) for c, r in refs.items()}
        return {c: w.status() for c, w in self.running}

    def _stop(self, cam_id: str, w: Any) -> None:
        if self.kind == "ray":
            import ray

            ray.kill(w)
        else:
            w.stop(timeout=10)

    def close(self) -> None:
        for c, w in self.running:
            self._stop(c, w)
        self.running.clear()
        if self.kind == "ray":
            import ray

            ray.shutdown()


def child(args: argparse.Namespace) -> None:
    """One path, one model, one resolution: a capacity search per frame rate, printed as RESULT lines."""
    import logging

    from cluster.config import parse_config

    logging.basicConfig(level=logging.ERROR)
    logging.getLogger().setLevel(logging.ERROR)
    work = Path(args.work)
    config = parse_config(config_text(Path(args.model), Path(args.clip), work / "data", args.max_cameras))
    pool = _Pool(args.child, config, Path(args.model))
    try:
        for fps in [float(f) for f in args.fps.split(",")]:

            def probe(n: int, fps: float = fps) -> bool:
                pool.resize(n, fps)
                settle = time.monotonic() + 60
                while time.monotonic() < settle:  # every camera processing (actors start one by one)
                    st = pool.statuses()
                    if all(s["frames"] > 0 for s in st.values()):
                        break
                    time.sleep(0.5)
                time.sleep(args.settle)
                before = pool.statuses()
                t0 = time.monotonic()
                time.sleep(args.seconds)
                after = pool.statuses()
                ok, why = verdict(before, after, fps, time.monotonic() - t0)
                print(f"PROBE {args.child} fps={fps:g} n={n}: {'pass' if ok else 'FAIL'}: {why}", flush=True)
                return ok

            # Cameras still running from the previous rate: restart them at this one.
            pool.resize(0, fps)
            n, trace = max_passing(probe, limit=args.max_cameras)
            out = {"path": args.child, "fps": fps, "cameras": n, "trace": trace, "provider": pool.provider}
            print("RESULT " + json.dumps(out), flush=True)
    finally:
        pool.close()
    # Daemon threads (capture readers, the in-process inference server) may sit in OpenCV or ONNX Runtime code: the
    # interpreter's teardown aborts the process under them. Everything is printed and written: leave now.
    sys.stdout.flush()
    os._exit(0)


# --- driver --------------------------------------------------------------------------------------------------


def run_child(kind: str, model: Path, clip: Path, fps: list[float], work: Path, args: argparse.Namespace) -> list[dict]:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        kind,
        "--model",
        str(model),
        "--clip",
        str(clip),
        "--fps",
        ",".join(f"{f:g}" for f in fps),
        "--work",
        str(work),
        "--seconds",
        str(args.seconds),
        "--settle",
        str(args.settle),
        "--max-cameras",
        str(args.max_cameras),
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    results = []
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("PROBE "):
                print(f"  {model.stem} {clip.stem}: {line[6:].rstrip()}", flush=True)
            elif line.startswith("RESULT "):
                results.append(json.loads(line[7:]))
        err = proc.stderr.read() if proc.stderr else ""
    if proc.returncode != 0 or len(results) != len(fps):
        raise SystemExit(f"capacity run {kind} {model.name} {clip.name} failed (rc {proc.returncode}):\n{err[-3000:]}")
    return results


def models_of(spec: str) -> list[tuple[str, Path]]:
    from cluster.models import default_model_path

    default = default_model_path()
    if spec == "default":
        return [(f"{default.stem} (default)", default)]
    if spec == "all":
        out = [(f"{default.stem} (default)", default)] if default.exists() else []
        for p in sorted(SHARED_MODELS.glob("*.onnx")):
            if default.exists() and p.read_bytes() == default.read_bytes():
                continue  # the default model is one of them
            out.append((p.stem, p))
        return out
    return [(Path(p).stem, Path(p)) for p in spec.split(",")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="default model, 6 s probes, at most 12 cameras")
    ap.add_argument("--models", default="all", help="all (default + ../shared/models), default, or paths")
    ap.add_argument("--settings", default="768x576@10,768x576@5,1920x1080@10,1920x1080@5")
    ap.add_argument("--paths", default="ray,inproc")
    ap.add_argument("--seconds", type=float, default=8.0, help="how long a probe watches the cameras")
    ap.add_argument("--settle", type=float, default=2.0, help="seconds after every camera's first frame")
    ap.add_argument("--max-cameras", type=int, default=16)
    ap.add_argument("--child", choices=("ray", "inproc"), help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--clip", help=argparse.SUPPRESS)
    ap.add_argument("--fps", help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    args = ap.parse_args()
    sys.path.insert(0, str(REPO))
    if args.child:
        child(args)
        return
    if args.quick:
        args.models, args.seconds, args.max_cameras = "default", 6.0, 12
    import onnxruntime as ort

    models = models_of(args.models)
    missing = [str(p) for _, p in models if not p.exists()]
    if missing:
        raise SystemExit(f"models not found: {missing} (run `edgepair model install`; ../shared/models for the rest)")
    settings = [parse_setting(s) for s in args.settings.split(",")]
    sizes = sorted({(w, h) for w, h, _ in settings}, key=lambda s: s[0] * s[1])
    paths = args.paths.split(",")
    gpu = "CUDAExecutionProvider" in ort.get_available_providers()
    print(
        f"machine: {platform.node()}, {os.cpu_count()} cores; onnxruntime {ort.__version__}, providers "
        f"{ort.get_available_providers()}; GPU: {'CUDA provider present' if gpu else 'absent (CPU only)'}"
    )
    print(f"load before: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}", flush=True)
    table: dict[tuple[str, int, int, float, str], dict] = {}
    with tempfile.TemporaryDirectory(prefix="edgepair-capacity-") as tmp:
        work = Path(tmp)
        clips = {(w, h): make_clip(w, h, work / f"clip{w}x{h}.avi") for w, h in sizes}
        for label, model in models:
            for w, h in sizes:
                rates = [f for sw, sh, f in settings if (sw, sh) == (w, h)]
                for kind in paths:
                    sub = work / f"{model.stem}-{w}x{h}-{kind}"
                    for r in run_child(kind, model, clips[(w, h)], rates, sub, args):
                        table[(label, w, h, r["fps"], kind)] = r
    print(f"load after: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")
    print()
    lim = args.max_cameras
    print("| model | resolution | fps | provider | Ray pipeline (cameras) | in-process (cameras) | Ray / in-process |")
    print("|---|---|---:|---|---:|---:|---:|")
    for label, _ in models:
        for w, h, fps in settings:
            cells = {}
            for kind in ("ray", "inproc"):
                r = table.get((label, w, h, fps, kind))
                cells[kind] = "-" if r is None else (f">= {lim}" if r["cameras"] >= lim else str(r["cameras"]))
            r = table.get((label, w, h, fps, "ray")) or table.get((label, w, h, fps, "inproc")) or {}
            ray_n = (table.get((label, w, h, fps, "ray")) or {}).get("cameras")
            ip_n = (table.get((label, w, h, fps, "inproc")) or {}).get("cameras")
            ratio = f"{ray_n / ip_n:.2f}" if ray_n is not None and ip_n else "-"
            print(
                f"| {label} | {w}x{h} | {fps:g} | {r.get('provider', '-')} | {cells['ray']} | {cells['inproc']} "
                f"| {ratio} |"
            )
    if not gpu:
        print("\nGPU: absent on this machine (no CUDA provider in this onnxruntime build): CPU figures only.")


if __name__ == "__main__":
    main()

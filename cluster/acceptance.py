"""``edgepair acceptance``: the installer's acceptance test of a camera's counting lines, as counters are commissioned.

During a window the camera runs through the production worker (capture, detector, tracker, lines: the store
config as it is), the command prints the live count every few seconds, and at the end compares, per line and
direction, what was counted with what truly happened:

- the truth is either counts given by the installer (``--truth FILE``, YAML or JSON ``{line: {in: N, out: M}}``:
  the installer walked across the line a known number of times, or a staff member counted by hand), or, for
  recorded footage, MOT ground truth (``--gt``) whose tracks go through the same ``LineCounter`` as the product;
- accuracy = 1 - |counted - true| / true; its 95 % confidence interval treats the counting errors as rare,
  independent events: the Garwood (exact Poisson) interval of |counted - true|, divided by the true count. The
  interval says how much the window can tell: 2 errors in 40 crossings is 95 % accurate, but anything from 87 to
  99.4 % is consistent with it; about 400 true crossings are needed before one error in 100 is told from five;
- a line direction passes when its accuracy reaches the target (``--target``, default 0.95); the verdict is
  *conclusive* when the whole interval is on one side of the target, else the report says more crossings are
  needed. Over- and under-counts can cancel within a count: a count-level test cannot see that (no per-person
  truth), so the report gives counted and true side by side.

The report is printed, and written as ``acceptance.json`` and a self-contained ``acceptance.html`` in ``--out``.
"""

from __future__ import annotations

import argparse
import html
import json
import logging
import math
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from actors.detections import Detections
from actors.events import LINE_CROSS, Event
from cluster.config import Config, load_config
from cluster.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_TARGET = 0.95


def garwood(k: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact (Garwood) confidence interval of a Poisson mean from one count ``k``."""
    from scipy.stats import chi2

    a = 1.0 - confidence
    lo = 0.0 if k == 0 else float(chi2.ppf(a / 2, 2 * k)) / 2
    hi = float(chi2.ppf(1 - a / 2, 2 * k + 2)) / 2
    return lo, hi


def judge(counted: int, true: int, target: float = DEFAULT_TARGET) -> dict[str, Any]:
    """One line direction's figures: error, accuracy with its 95 % interval, pass and whether it is conclusive."""
    if true <= 0:
        return {
            "counted": counted,
            "true": true,
            "error_pct": None,
            "accuracy": None,
            "accuracy_ci95": None,
            "pass": counted == 0,
            "conclusive": False,
            "reason": "no true crossing in the window: nothing to measure"
            + ("" if counted == 0 else f", yet {counted} counted"),
        }
    wrong = abs(counted - true)
    lo, hi = garwood(wrong)
    accuracy = 1.0 - wrong / true
    acc_lo, acc_hi = max(0.0, 1.0 - hi / true), 1.0 - lo / true
    passed = accuracy >= target - 1e-12
    conclusive = acc_lo >= target if passed else acc_hi < target
    if conclusive:
        reason = f"accuracy {accuracy:.1%} {'>=' if passed else '<'} target {target:.0%}, interval on that side"
    else:
        reason = (
            f"accuracy {accuracy:.1%} {'>=' if passed else '<'} target {target:.0%}, but the interval "
            f"{acc_lo:.1%}-{acc_hi:.1%} straddles it: walk more crossings"
        )
    return {
        "counted": counted,
        "true": true,
        "error_pct": round(100.0 * (counted - true) / true, 1),
        "accuracy": round(accuracy, 4),
        "accuracy_ci95": [round(acc_lo, 4), round(acc_hi, 4)],
        "pass": passed,
        "conclusive": conclusive,
        "reason": reason,
    }


def load_truth(path: Path) -> dict[str, dict[str, int]]:
    """``{line: {in: N, out: M}}`` from a YAML or JSON file."""
    import yaml

    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read the true counts {path}: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping line id -> {{in: N, out: M}}")
    out: dict[str, dict[str, int]] = {}
    for line, dirs in raw.items():
        if not isinstance(dirs, dict) or set(dirs) - {"in", "out"}:
            raise ConfigError(f"{path}: line {line}: expected {{in: N, out: M}}, got {dirs!r}")
        for d, n in dirs.items():
            if not isinstance(n, int) or isinstance(n, bool) or n < 0:
                raise ConfigError(f"{path}: line {line} {d}: expected a count (an integer >= 0), got {n!r}")
        out[str(line)] = {d: int(dirs.get(d, 0)) for d in ("in", "out")}
    return out


@dataclass
class Window:
    """What the camera counted during the window."""

    camera_id: str
    start_ts: float
    end_ts: float
    frames: int
    events: list[Event] = field(default_factory=list)

    def counts(self) -> dict[tuple[str, str], int]:
        c: dict[tuple[str, str], int] = defaultdict(int)
        for e in self.events:
            if e.kind == LINE_CROSS:
                c[(e.line_id or "", e.direction or "")] += 1
        return c


def count_window(
    config: Config, camera_id: str, model: Path, seconds: float | None, *, live_every_s: float = 5.0, out: Any = None
) -> Window:
    """Run the camera through the production worker for ``seconds`` (None: a file to its end), printing counts."""
    from actors.inference import Detector
    from actors.worker import CameraWorker

    cam = next((c for c in config.cameras if c.id == camera_id), None)
    if cam is None:
        raise ConfigError(f"camera {camera_id} is not in the config (has {[c.id for c in config.cameras]})")
    out = out or sys.stdout
    m = config.model
    det = Detector(str(model), family=m.family, threshold=m.threshold, tiles=m.tiles, threads=m.threads or 0)
    window = Window(camera_id, 0.0, 0.0, 0)
    with tempfile.TemporaryDirectory(prefix="edgepair-acceptance-") as tmp:
        cfg = config.model_copy(update={"storage": config.storage.model_copy(update={"data_dir": Path(tmp)})})
        start_ts = None if cam.is_stream else 0.0
        worker = CameraWorker(
            cfg,
            camera_id,
            det.detect,
            lambda d: d,
            autostart=False,
            start_ts=start_ts,
            model_version=det.model_sha256[:12],
        )
        original = worker.analytics.process
        started = [False]
        shown_at = [-math.inf]

        def process(dets: Detections, ts: float, w: int, h: int) -> tuple[Detections, list[Event]]:
            if not started[0]:
                started[0] = True
                window.start_ts = ts
            if seconds is not None and ts - window.start_ts >= seconds:
                worker._stop.set()  # the window is over: this frame and later ones are not counted
                return Detections.empty(), []
            tracked, evs = original(dets, ts, w, h)
            window.frames += 1
            window.end_ts = ts
            window.events.extend(e for e in evs if e.kind == LINE_CROSS)
            if ts - shown_at[0] >= live_every_s:
                shown_at[0] = ts
                counts = window.counts()
                shown = ", ".join(
                    f"{ln.id} in {counts[(ln.id, 'in')]} out {counts[(ln.id, 'out')]}" for ln in cam.lines
                )
                print(f"[{ts - window.start_ts:6.1f} s] {shown}", file=out, flush=True)
            return tracked, evs

        original_finish = worker.analytics.finish

        def finish(ts: float) -> list[Event]:
            evs = original_finish(ts)
            window.events.extend(e for e in evs if e.kind == LINE_CROSS)
            return evs

        worker.analytics.process = process  # type: ignore[method-assign, assignment]
        worker.analytics.finish = finish  # type: ignore[method-assign, assignment]
        worker.start()
        deadline = None if seconds is None or not cam.is_stream else time.monotonic() + seconds + 30.0
        while not worker.wait(0.5):
            if deadline is not None and time.monotonic() > deadline:
                worker.stop()
                break
        if worker.error:
            raise ConfigError(f"acceptance run failed on camera {camera_id}: {worker.error}")
    return window


def truth_from_gt(
    config: Config, camera_id: str, gt_path: Path, window: Window, every: int
) -> dict[str, dict[str, int]]:
    """True counts of the window from MOT ground truth, through the same ``LineCounter`` (frame N at (N-1)/fps)."""
    import cv2

    from cluster.evaluate import GroundTruth, true_crossings

    cam = next(c for c in config.cameras if c.id == camera_id)
    cap = cv2.VideoCapture(cam.source)
    width, height = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    fps = cap.get(cv2.CAP_PROP_FPS) or 10.0
    cap.release()
    gt = GroundTruth.load(gt_path)
    gt.frames = {f: v for f, v in gt.frames.items() if window.start_ts - 1e-6 <= (f - 1) / fps <= window.end_ts + 1e-6}
    truth: dict[str, dict[str, int]] = {ln.id: {"in": 0, "out": 0} for ln in cam.lines}
    for e in true_crossings(config, camera_id, gt, width, height, fps, every):
        truth[e.line_id or ""][e.direction or ""] += 1
    return truth


def report(
    config: Config, window: Window, truth: dict[str, dict[str, int]], target: float = DEFAULT_TARGET
) -> dict[str, Any]:
    cam = next(c for c in config.cameras if c.id == window.camera_id)
    unknown = sorted(set(truth) - {ln.id for ln in cam.lines})
    if unknown:
        raise ConfigError(f"the true counts name lines {unknown} that camera {cam.id} does not have")
    counts = window.counts()
    rows = []
    for ln in cam.lines:
        if ln.id not in truth:
            continue
        for d in ("in", "out"):
            rows.append({"line": ln.id, "direction": d, **judge(counts[(ln.id, d)], truth[ln.id][d], target)})
    judged = [r for r in rows if r["true"] > 0]
    true_total = sum(r["true"] for r in rows)
    wrong = sum(abs(r["counted"] - r["true"]) for r in rows)
    return {
        "store": config.store.id,
        "camera": cam.id,
        "window_s": round(window.end_ts - window.start_ts, 1),
        "frames": window.frames,
        "target": target,
        "rows": rows,
        "total": judge(sum(r["counted"] for r in rows), true_total, target) | {"wrong": wrong},
        "pass": bool(judged) and all(r["pass"] for r in rows),
        "conclusive": bool(judged) and all(r["conclusive"] for r in judged),
    }


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f} %"


def format_report(rep: dict[str, Any]) -> str:
    out = [
        f"acceptance: store {rep['store']} camera {rep['camera']}, window {rep['window_s']} s ({rep['frames']} frames),"
        f" target {rep['target']:.0%}",
        "line                 dir  counted  true  error %  accuracy  95 % CI          verdict",
    ]
    for r in rep["rows"]:
        ci = r["accuracy_ci95"]
        ci_s = f"{100 * ci[0]:.1f}-{100 * ci[1]:.1f} %" if ci else "-"
        err = "-" if r["error_pct"] is None else f"{r['error_pct']:+.1f}"
        verdict = ("PASS" if r["pass"] else "FAIL") + ("" if r["conclusive"] else " (inconclusive)")
        out.append(
            f"{r['line']:<20} {r['direction']:<4} {r['counted']:>7} {r['true']:>5} {err:>8} {_pct(r['accuracy']):>9}"
            f"  {ci_s:<15}  {verdict}"
        )
    t = rep["total"]
    out.append(
        f"all lines: {t['counted']} counted / {t['true']} true, {t['wrong']} wrong, accuracy {_pct(t['accuracy'])}"
    )
    out.append(
        f"verdict: {'PASS' if rep['pass'] else 'FAIL'}"
        + ("" if rep["conclusive"] else " (inconclusive: some intervals straddle the target, walk more crossings)")
    )
    return "\n".join(out)


def render_html(rep: dict[str, Any]) -> str:
    rows = []
    for r in rep["rows"]:
        ci = r["accuracy_ci95"]
        colour = "#d4f4d4" if r["pass"] else "#f8d0d0"
        err = "-" if r["error_pct"] is None else f"{r['error_pct']:+.1f} %"
        ci_s = "-" if not ci else f"{100 * ci[0]:.1f} - {100 * ci[1]:.1f} %"
        rows.append(
            f"<tr style='background:{colour}'><td>{html.escape(r['line'])}</td><td>{r['direction']}</td>"
            f"<td>{r['counted']}</td><td>{r['true']}</td>"
            f"<td>{err}</td><td>{_pct(r['accuracy'])}</td>"
            f"<td>{ci_s}</td>"
            f"<td>{'PASS' if r['pass'] else 'FAIL'}</td><td>{html.escape(r['reason'])}</td></tr>"
        )
    verdict = "PASS" if rep["pass"] else "FAIL"
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>Acceptance "
        f"{html.escape(rep['store'])} {html.escape(rep['camera'])}</title>"
        "<style>body{font-family:sans-serif;margin:2em}td,th{padding:4px 10px;border:1px solid #999}"
        "table{border-collapse:collapse}</style></head><body>"
        f"<h1>Counting acceptance: {html.escape(rep['store'])} / {html.escape(rep['camera'])}</h1>"
        f"<p>Window {rep['window_s']} s, {rep['frames']} frames; target accuracy {rep['target']:.0%} per line and"
        f" direction. Verdict: <b>{verdict}</b>{'' if rep['conclusive'] else ' (inconclusive)'}.</p>"
        "<table><tr><th>line</th><th>direction</th><th>counted</th><th>true</th><th>error</th><th>accuracy</th>"
        "<th>95 % CI</th><th>verdict</th><th>why</th></tr>" + "".join(rows) + "</table>"
        "<p>Accuracy = 1 - |counted - true| / true. The 95 % interval is the exact Poisson (Garwood) interval of the"
        " number of counting errors, divided by the true count.</p></body></html>\n"
    )


def write_report(rep: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    j, h = out_dir / "acceptance.json", out_dir / "acceptance.html"
    j.write_text(json.dumps(rep, indent=2) + "\n")
    h.write_text(render_html(rep))
    return j, h


def cmd_acceptance(args: argparse.Namespace) -> int:
    from cluster.runner import resolve_model

    config = load_config(args.config)
    camera_id = args.camera or config.cameras[0].id
    cam = next((c for c in config.cameras if c.id == camera_id), None)
    if cam is None:
        raise ConfigError(f"camera {camera_id} is not in {args.config}")
    if args.footage:
        cam = cam.model_copy(update={"source": str(Path(args.footage).resolve()), "playback": "fast", "loop": False})
        config = config.model_copy(update={"cameras": [cam]})
    if bool(args.truth) == bool(args.gt):
        raise ConfigError("give the true counts with exactly one of --truth FILE (counts per line) or --gt (MOT)")
    if cam.is_stream and args.seconds is None:
        raise ConfigError("a live camera needs --seconds: how long the acceptance window lasts")
    truth: dict[str, dict[str, int]] = {}
    if args.truth:  # checked before the window, not after the installer has walked it
        truth = load_truth(Path(args.truth))
        unknown = sorted(set(truth) - {ln.id for ln in cam.lines})
        if unknown:
            raise ConfigError(f"the true counts name lines {unknown} that camera {cam.id} does not have")
    window = count_window(config, camera_id, resolve_model(config), args.seconds)
    if args.gt:
        import cv2

        cap = cv2.VideoCapture(cam.source)
        src_fps = cap.get(cv2.CAP_PROP_FPS) or 10.0
        cap.release()
        every = max(1, round(src_fps / cam.fps)) if cam.fps else 1
        truth = truth_from_gt(config, camera_id, Path(args.gt), window, every)
    rep = report(config, window, truth, args.target)
    print(format_report(rep))
    if args.out:
        j, h = write_report(rep, Path(args.out))
        print(f"report: {h} and {j}")
    return 0 if rep["pass"] else 1


def add_parser(sub: Any) -> None:
    s = sub.add_parser("acceptance", help="installer's acceptance test: live count, then counted vs true per line")
    s.add_argument("--config", required=True, help="store YAML")
    s.add_argument("--camera", default=None, help="camera id (default: the first)")
    s.add_argument("--seconds", type=float, default=None, help="window length (a file: default to its end)")
    s.add_argument("--truth", default=None, help="YAML/JSON true counts {line: {in: N, out: M}}")
    s.add_argument("--gt", default=None, help="or MOT ground truth of recorded footage")
    s.add_argument("--footage", default=None, help="recorded footage instead of the camera's source")
    s.add_argument("--target", type=float, default=DEFAULT_TARGET, help="accuracy per line and direction (0.95)")
    s.add_argument("--out", default=None, help="directory for acceptance.json and acceptance.html")
    s.set_defaults(func=cmd_acceptance)

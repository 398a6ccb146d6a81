"""``edgepair drill SCENARIO``: a fault injected into a running local pair, measured, checked against a baseline.

A drill runs against a pair started by ``edgepair pair up`` (state in ``<run_dir>/pair.json``). It watches both
nodes' ``/health`` at 10 Hz, injects the fault (:mod:`cluster.drill_faults`), restores what it broke, lets the pair
settle and replication catch up, and then reads the survivor's data dir through the DuckDB views:

- detection: fault to the first health sample where any node's role, leader, mode or cameras changed;
- takeover per camera: fault to the first frame processed by a camera actor started after the fault;
- coverage gap per camera: seconds of the drill span covered by no window (``windows`` view), and frames missing
  (expected frames at the camera's fps minus frames processed);
- events credited twice (``events_audit``: a (camera, track, ts, kind, line, zone) credited more than once) and
  seconds credited to two producers at once (overlapping credited windows); both must be 0;
- tokens monotonic: the tokens of credited windows of a camera never decrease in time;
- events against a baseline: the same source frames (live playback: frame ``floor(t * fps) mod N`` at UTC ``t``)
  processed again in this process by the production ``CameraWorker`` with an in-process detector, one continuous
  tracker over the whole span (undisturbed). Outside the gaps and outside the *continuity horizons* the events must
  match exactly. A horizon starts at each fresh tracker start of the drill run (first frame of a new actor, end of a
  gap, start of the span) and ends when the last track the undisturbed tracker had alive at that moment has ended:
  until then a fresh tracker legitimately sees the same people differently (a crossing half done, a visit already
  under way). Events inside horizons are reported, not asserted. See docs/drills.md.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cluster import drill_frames
from cluster.drill_baseline import compare_with_baseline, processed_filter
from cluster.drill_report import AHEAD_S, boundaries, detection, failures, summarize, summary_of, takeovers
from cluster.drill_target import NODE_FAULTS, SCENARIOS, DrillTarget, LocalPair, cut_camera
from cluster.errors import EdgepairError
from cluster.waiting import wait_for

__all__ = ["SCENARIOS", "run_drill", "run_once"]

MIN_EVENTS = 5
"""Events per camera the baseline must compare for a run to count as a match (else inconclusive)."""
HORIZON_S = 30.0
REMEASURE_S = 40.0
"""How much longer a run whose measurement compared too few events watches (20 s at a time) before it says
inconclusive, within ``max_extra_s`` in all."""
"""A fresh tracker's continuity horizon on the demo footage is 10-30 s (people in view): the estimate used to decide
whether to watch longer; the comparison uses the exact horizons from the replay."""

log = logging.getLogger(__name__)


class Watcher:
    """Polls each node's /health (one thread per node, so a frozen node does not slow the other)."""

    def __init__(self, target: DrillTarget, period: float = 0.1) -> None:
        self.target = target
        self.period = period
        self.samples: list[tuple[float, str, dict[str, Any]]] = []
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._poll, args=(n,), daemon=True) for n in target.nodes]

    def __enter__(self) -> Watcher:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=5)

    def _poll(self, node: str) -> None:
        while not self._stop.wait(self.period):
            h = self.target.health(node, timeout=0.5)
            if h is not None:
                with self.lock:
                    self.samples.append((time.time(), node, h))

    def latest(self, max_age: float = 0.6) -> dict[str, dict[str, Any]]:
        """Each node's last answer, if it is fresh (a frozen or dead node has none)."""
        now = time.time()
        with self.lock:
            return {n: h for t, n, h in self.samples[-40:] if t > now - max_age}


PLACEMENT_TRIES = 6  # watches of pre_s before a fault for the placement to hold still


def _wait(pred: Any, timeout: float, what: str) -> Any:
    return wait_for(pred, timeout, what, period=0.1, error=EdgepairError, prefix="drill: ")


def _placement(hs: dict[str, dict[str, Any]]) -> dict[str, str]:
    """camera -> node whose actor is running it now."""
    out = {}
    for node, h in hs.items():
        for cam, st in (h.get("camera_status") or {}).items():
            if st.get("state") == "running" and st.get("frames", 0) > 0:
                out[cam] = node
    return out


def _all_running(target: DrillTarget, cams: list[str]) -> dict[str, str] | None:
    hs = {n: target.health(n) or {} for n in target.nodes}
    place = _placement(hs)
    return place if set(cams) <= set(place) and all(h.get("healthy") for h in hs.values()) else None


def _ready(target: DrillTarget, cams: list[str]) -> dict[str, str] | None:
    """What a run starts from: :func:`_all_running`, and no node listing a camera as failing at its source (a node
    remembers that for ``cluster.health.FAILING_MEMORY_S``, 120 s: a camera cut again within it, failing from both
    nodes as far as they know, rightly stays where it is, so a second ``camera-cut`` run waits it out)."""
    place = _all_running(target, cams)
    if place is None or any((target.health(n) or {}).get("failing") for n in target.nodes):
        return None
    return place


def _leader(target: DrillTarget) -> str:
    def find() -> str | None:
        for n in target.nodes:
            h = target.health(n) or {}
            if h.get("role") == "leader":
                return n
        return None

    return str(_wait(find, 30, "a leader"))


READY = "every camera running, both nodes healthy and no camera listed as failing at its source"
READY_S = 420.0
"""How long a drill waits for that before a run: a node turned unhealthy by each run of a gray drill takes twice as
long to be healthy again each time within the hour (``cluster.health.Hysteresis``: up to 64 x good_ticks)."""


def _still_before_fault(
    target: DrillTarget, cams: list[str], start: dict[str, str], pre_s: float
) -> tuple[str, dict[str, str]]:
    """Watch ``pre_s`` before the fault until the placement held still for all of it; return the leader then (not
    before the watch: a lease lost during it moves the leadership) and the placement.

    A camera that moved while it was watched (a rebalance after the last run's restore) started a fresh tracker, and
    one not yet processing in its new home would be missing from what the fault must move."""
    for _attempt in range(PLACEMENT_TRIES):
        time.sleep(pre_s)
        leader = _leader(target)
        place = _placement({n: target.health(n) or {} for n in target.nodes})
        if place == start:
            return leader, place
        log.info("drill: cameras moved before the fault (%s -> %s): watching %.0f s more", start, place, pre_s)
        start = _wait(lambda: _ready(target, cams), READY_S, READY)
    raise EdgepairError(
        f"drill: the cameras kept moving between the nodes ({PLACEMENT_TRIES} tries of {pre_s:.0f} s):"
        " check `edgepair status` for a camera that fails on one node and pin or fix it"
    )


def run_once(
    target: DrillTarget,
    scenario: str,
    *,
    settle_s: float,
    hold_s: float,
    pre_s: float,
    baseline: bool,
    min_events: int = MIN_EVENTS,
    max_extra_s: float = 120.0,
    remeasure_s: float = REMEASURE_S,
) -> dict[str, Any]:
    """One drill: fault, restore, settle (longer when too few events could be compared), measure."""
    target.prepare()
    cfg = target.node_config()
    cams = [c["id"] for c in cfg["cameras"]]
    start = _wait(lambda: _ready(target, cams), READY_S, READY)
    with Watcher(target) as watch:
        t_begin = time.time()
        leader, place = _still_before_fault(target, cams, start, pre_s)
        before = {n: summary_of(h) for n, h in watch.latest().items()}
        t0 = time.time()
        victim, restore = target.inject(scenario, leader=leader, place=place, hold_s=hold_s)
        log.info("drill %s: fault injected on %s at %.3f", scenario, victim, t0)
        moved = _to_move(scenario, place, leader)
        try:
            _wait(lambda: _taken_over(watch, cams, t0, moved), 60, "every camera processing frames again")
            recovered = True
        except EdgepairError as exc:
            log.error("%s", exc)
            recovered = False
        except BaseException:  # interrupted (Ctrl-C): the fault is undone all the same
            restore()
            raise
        restore()
        t_restored = time.time()
        _wait(lambda: _all_running(target, cams), 120, "both nodes healthy again with every camera running")
        time.sleep(settle_s)
        watch_from = time.time()
        _watch_longer(target, cfg, watch, t_begin, t0, min_events if baseline else 0, max_extra_s)
        survivor = next(n for n in target.nodes if n != leader)
        measuring = 0.0  # time spent measuring (a first replay can take minutes): not watching, not in the bound
        remeasure_until = time.time() - watch_from + remeasure_s  # a bounded second chance
        while True:
            t_end = time.time()
            with watch.lock:
                samples = list(watch.samples)
            _settle_replication(target)
            report: dict[str, Any] = {
                "scenario": scenario,
                "victim": victim,
                "survivor": survivor,
                "fault_at": t0,
                "recovered": recovered,
                "restored_after_s": round(t_restored - t0, 2),
                "span": [t_begin, t_end],
                "watched_longer_s": round(t_end - watch_from - measuring, 1),
                "detection_s": detection(samples, before, t0),
                "takeover_s": takeovers([x for x in samples if x[0] <= t_restored], t0, cams),
                "unsafe_break": sorted({b for _t, _n, h in samples for b in h.get("unsafe_break") or ()}),
            }
            report.update(_measure(target, survivor, t_begin, t_end - 2.0, samples, t0, baseline, min_events))
            # The watch's estimate uses a fixed horizon; the replay's lasts until the last person in view at a fresh
            # tracker start has left, which can be longer: measured too few, watch on (the replay remembers the
            # frames it detected, so measuring again costs little) within the same bound.
            short = sorted(c for c, b in (report.get("baseline") or {}).items() if b["verdict"] == "inconclusive")
            measuring += time.time() - t_end
            watched = time.time() - watch_from - measuring
            left = min(max_extra_s - watched, remeasure_until - watched)
            if not short or left <= 0:
                break
            log.info("drill: the baseline compared too few events for %s: watching %.0f s longer", short, min(20, left))
            time.sleep(min(20.0, left))
    return _verdict(target, cams, report)


def _to_move(scenario: str, place: dict[str, str], leader: str) -> list[str]:
    """The cameras the fault must move (or restart): the leader's for a node fault, the first for ``kill-actor`` (its
    actor comes back in a new process), the cut one for ``camera-cut`` (to the workstation that still reaches it)."""
    if scenario == "kill-actor":
        return [sorted(place)[0]]
    if scenario == "camera-cut":
        return [cut_camera(place, leader)[1]]
    return [c for c, n in place.items() if n == leader] if scenario in NODE_FAULTS else []


def _verdict(target: DrillTarget, cams: list[str], report: dict[str, Any]) -> dict[str, Any]:
    """The end of a run: where the cameras run, the windows a failing disk left in memory (held until written: none
    by now), the failures and the verdict."""
    report["running_after"] = _all_running(target, cams) or {}
    healths = {n: target.health(n) or {} for n in target.nodes}
    report["kept_frames"] = {n: h.get("kept_frames") or {} for n, h in healths.items() if h.get("kept_frames")}
    report["kept_frames_lost"] = sum(int(h.get("kept_frames_lost") or 0) for h in healths.values())
    report["failures"] = failures(report, cams)
    report["ok"] = not report["failures"]
    return report


def _watch_longer(
    target: DrillTarget,
    cfg: dict[str, Any],
    watch: Watcher,
    t_begin: float,
    t0: float,
    min_events: int,
    max_extra_s: float,
) -> float:
    """Keep watching (up to ``max_extra_s``) until every camera has ``min_events`` events that the baseline can
    compare: credited events from :data:`HORIZON_S` after the last disturbance of the camera (or after the start)
    to the span's tail. An estimate; the replay decides, and a run that compares fewer is inconclusive."""
    if min_events <= 0:
        return 0.0
    from storage.views import run_query

    started = time.time()
    grace = float((cfg.get("tracking") or {}).get("max_lost_s", 3.0)) + 2.0
    while True:
        with watch.lock:
            samples = list(watch.samples)
        now = time.time()
        short = []
        for cam in (c["id"] for c in cfg["cameras"]):
            quiet = [t for t in drill_frames.disturbed(samples, target.nodes, cam) if t >= t0 - 1.0]
            # A tracker that started afresh after the fault (a camera actor restarted within a second is never seen
            # stopped): the baseline leaves out a horizon after its first frame too.
            quiet += [t for t in drill_frames.fresh_starts(samples, cam) if t >= t0 - 1.0]
            last = max(quiet, default=t0)
            spans = [(t_begin + HORIZON_S, t0 - 1.0), (last + HORIZON_S, now - grace)]
            n = 0
            for node, data_dir in target.data_dirs(t_begin, now).items():
                del node
                for x, y in spans:
                    if y > x:
                        n += int(
                            run_query(
                                data_dir,
                                target.timezone,
                                f"SELECT count(*) AS n FROM events WHERE camera_id = '{cam}' "
                                f"AND ts >= to_timestamp({x}) AND ts < to_timestamp({y})",
                            )
                            .column("n")[0]
                            .as_py()
                        )
                break  # one node's view is enough for an estimate
            if n < min_events:
                short.append(f"{cam} ({n})")
        if not short or now - started >= max_extra_s:
            if short:
                log.warning("drill: after %.0f s more, still few comparable events: %s", now - started, short)
            elif now > started + 1:
                log.info("drill: watched %.0f s longer for enough events to compare", now - started)
            return now - started
        log.info("drill: watching longer: too few events to compare yet for %s", ", ".join(short))
        time.sleep(10.0)


def _taken_over(watch: Watcher, cams: list[str], t0: float, moved: list[str]) -> bool:
    """Every camera running on a node that answers, each of ``moved`` in an actor whose first frame came after the
    fault, 1.5 s after the fault at least."""
    latest = watch.latest()
    place = _placement(latest)
    fresh = {
        c
        for h in latest.values()
        for c, st in (h.get("camera_status") or {}).items()
        if float(st.get("first_frame_at") or 0) > t0
    }
    return time.time() > t0 + 1.5 and set(cams) <= set(place) and set(moved) <= fresh


def _settle_replication(target: DrillTarget, bound_s: float = 30.0) -> None:
    def settled() -> bool:
        hs = [target.health(n) or {} for n in target.nodes]
        return all(h.get("replication_lag_s", 1) == 0 for h in hs)

    try:
        _wait(settled, bound_s, "replication to catch up")
    except EdgepairError as exc:
        log.warning("%s; measuring anyway", exc)
    time.sleep(2.0)


def _measure(
    target: DrillTarget,
    node: str,
    a: float,
    b: float,
    samples: list[tuple[float, str, dict[str, Any]]],
    t0: float,
    baseline: bool,
    min_events: int,
) -> dict[str, Any]:
    from storage.views import run_query

    dirs = target.data_dirs(a - 5.0, b + 5.0)
    data_dir = dirs[node]
    tz = target.timezone
    cfg = target.node_config()
    fps = {c["id"]: float(c.get("fps") or 10.0) for c in cfg["cameras"]}
    interval = float(cfg["storage"].get("flush_interval_s", 1.0))
    win = run_query(
        data_dir,
        tz,
        f"SELECT camera_id, epoch(window_start) AS s, epoch(window_end) AS e, node, token, frames, credited, "
        f"credited_s, segment_id FROM windows WHERE window_end > to_timestamp({a}) "
        f"AND window_start < to_timestamp({b}) ORDER BY camera_id, window_start, token",
    ).to_pylist()
    ev = run_query(
        data_dir,
        tz,
        f"SELECT camera_id, epoch(ts) AS t, kind, line_id, zone_id, direction FROM events "
        f"WHERE ts >= to_timestamp({a}) AND ts < to_timestamp({b})",
    ).to_pylist()
    twice = (
        run_query(
            data_dir,
            tz,
            "SELECT count(*) AS n FROM (SELECT camera_id, track_id, ts, kind, line_id, zone_id FROM events_audit "
            "WHERE credited GROUP BY ALL HAVING count(*) > 1)",
        )
        .column("n")[0]
        .as_py()
    )
    per_cam: dict[str, Any] = {}
    keeps: dict[str, Callable[[float], bool]] = {}
    for cam, cam_fps in fps.items():
        ws = [w for w in win if w["camera_id"] == cam]
        keeps[cam], per_cam[cam] = _camera_metrics(target, dirs, samples, cam, cam_fps, interval, (a, b), ws, ev)
    tokens_ok = all(c["tokens_monotonic"] for c in per_cam.values())
    out: dict[str, Any] = {
        "cameras": per_cam,
        "events_credited_twice": int(twice),
        "double_running_s": round(sum(c["double_running_s"] for c in per_cam.values()), 3),
        "tokens_monotonic": tokens_ok,
    }
    if baseline:
        path = target.config_path()
        if path is None:
            out["baseline_skipped"] = "the cameras' frames cannot be replayed here (live streams)"
        else:
            out["baseline"] = {
                cam: compare_with_baseline(
                    path,
                    cfg,
                    cam,
                    ev,
                    per_cam[cam],
                    boundaries(samples, cam, a),
                    min_events=min_events,
                    keep=keeps[cam],
                )
                for cam in per_cam
            }
    return out


def _camera_metrics(
    target: DrillTarget,
    dirs: dict[str, Path],
    samples: list[tuple[float, str, dict[str, Any]]],
    cam: str,
    fps: float,
    interval: float,
    span: tuple[float, float],
    ws: list[dict[str, Any]],
    ev: list[dict[str, Any]],
) -> tuple[Callable[[float], bool], dict[str, Any]]:
    """One camera's measurements over ``span`` from its windows ``ws`` (the survivor's view), the events ``ev`` and
    every node's own files; with the filter of the frames its credited windows processed (the baseline's replay)."""
    a, b = span
    lo = math.floor(a / interval) * interval + interval  # whole windows only
    hi = math.floor(b / interval) * interval
    gaps = drill_frames.gaps([(w["s"], w["e"]) for w in ws], lo, hi)
    credited = sorted((w for w in ws if w["credited_s"] > 0), key=lambda w: (w["s"], w["token"]))
    toks = [w["token"] for w in credited]
    mono = all(x <= y for x, y in itertools.pairwise(toks))
    inside = [w for w in credited if lo <= w["s"] < hi]
    expected = round((hi - lo) * fps)
    # Windows where backpressure dropped frames: the tracker saw other frames than an undisturbed run would,
    # so the baseline comparison treats them like gaps (reported as frames missing, never hidden).
    per_window = round(fps * (w["e"] - w["s"])) if (w := next(iter(inside), None)) else 0
    short = [(w["s"], w["e"]) for w in inside if int(w["frames"]) < round(fps * (w["e"] - w["s"]))]
    # What each producer really processed, from every node's own files (replicated or not).
    frames = drill_frames.read_windows(dirs, target.store, cam, lo, hi)
    # The frames the credited windows processed, where their segments list them: the baseline replays exactly
    # those, so a window where a loaded node skipped frames is compared like any other.
    exact = {f.segment_id: f.frame_times for f in frames if f.frame_times and len(f.frame_times) == f.frames}
    keep = processed_filter([(w["s"], w["e"], exact.get(w["segment_id"])) for w in inside])
    inexact = [(w["s"], w["e"]) for w in inside if w["segment_id"] not in exact and (w["s"], w["e"]) in short]
    dr = drill_frames.double_running(frames, drill_frames.frame_s(fps))
    written = {f.segment_id for f in frames if f.frames > 0 and lo <= f.start < hi}
    in_view = {w["segment_id"] for w in ws}
    unwritten = drill_frames.frames_unwritten(samples, cam)
    lost, stalled = drill_frames.stalls(
        drill_frames.unexplained(gaps, drill_frames.disturbed(samples, target.nodes, cam), (a, b)),
        samples,
        cam,
        unwritten,
    )
    # Windows stamped well after their file was written: by a wall clock that ran ahead.
    ahead = drill_frames.windows_ahead(dirs, target.store, cam, a, AHEAD_S)
    return keep, {
        "gap_s": round(sum(y - x for x, y in gaps), 3),
        "gaps": [[round(x, 3), round(y, 3)] for x, y in gaps],
        "unexplained_gaps": [[round(x, 3), round(y, 3)] for x, y in lost],
        "stalls": stalled,
        "frames_unwritten": unwritten,
        "short_windows": [[round(x, 3), round(y, 3)] for x, y in short],
        "short_windows_inexact": [[round(x, 3), round(y, 3)] for x, y in inexact],
        "frames_per_window": per_window,
        "frames_expected": expected,
        "frames_missing": max(0, expected - sum(int(w["frames"]) for w in inside)),
        "double_running_s": dr.seconds,
        "double_running": [[round(x, 3), round(y, 3), [f"{n}/{t}" for n, t in p]] for x, y, p in dr.pieces],
        "double_running_events": drill_frames.loser_events(frames, dr),
        "handovers": dr.handovers,
        "handover_margin_s": dr.min_margin_s,
        "not_replicated": sorted(written - in_view)[:20],
        "windows_ahead": ahead[:20],
        "tokens": sorted(set(toks)),
        "tokens_monotonic": mono,
        "events": sum(1 for e in ev if e["camera_id"] == cam and lo <= e["t"] < hi),
        "span": [lo, hi],
    }


def run_drill(
    target: DrillTarget | Path,
    scenario: str,
    *,
    repeat: int = 1,
    report: Path | None = None,
    settle_s: float = 20.0,
    hold_s: float = 5.0,
    pre_s: float = 15.0,
    baseline: bool = True,
    min_events: int = MIN_EVENTS,
    remeasure_s: float = REMEASURE_S,
) -> dict[str, Any]:
    """Run ``scenario`` ``repeat`` times against ``target`` (a :class:`DrillTarget`, or the run dir of a local
    pair); write the JSON report to ``report``.

    ``pre_s``: seconds watched before the fault; ``hold_s``: how long a freeze, cut or lost member lasts;
    ``settle_s``: seconds the pair runs after it is whole again, before the measurement; ``baseline``: replay the
    same frames in-process and compare the events (slow on a small machine: about real time per camera);
    ``min_events``: events per camera the baseline must compare, else the run watches longer (at most 120 s more)
    and, still short, is inconclusive (a failure); ``remeasure_s``: how long it watches on when the measurement
    itself compared too few (:data:`REMEASURE_S`; 0: measure once).
    """
    if scenario not in SCENARIOS:
        raise EdgepairError(f"unknown drill scenario {scenario!r}: choose one of {', '.join(SCENARIOS)}")
    tgt: DrillTarget = LocalPair(target) if isinstance(target, (str, Path)) else target
    runs = [
        run_once(
            tgt,
            scenario,
            settle_s=settle_s,
            hold_s=hold_s,
            pre_s=pre_s,
            baseline=baseline,
            min_events=min_events,
            remeasure_s=remeasure_s,
        )
        for _ in range(repeat)
    ]
    out: dict[str, Any] = {
        "scenario": scenario,
        "target": tgt.name,
        "repeat": repeat,
        "runs": runs,
        "summary": summarize(runs),
    }
    if report is not None:
        Path(report).write_text(json.dumps(out, indent=2, default=str))
    return out

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

import functools
import itertools
import json
import logging
import math
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cluster import drill_faults as faults
from cluster.drill_baseline import compare_with_baseline
from cluster.drill_report import summarize
from cluster.errors import EdgepairError
from cluster.pair import load_state, node_health
from failover.drill import wait_for

log = logging.getLogger(__name__)

SCENARIOS = (
    "kill-node",
    "kill-leader",
    "freeze-node",
    "kill-etcd-leader",
    "partition",
    "lose-quorum",
    "kill-actor",
    "switchover",
)


NODE_FAULTS = ("kill-node", "kill-leader", "freeze-node", "partition")


class Watcher:
    """Polls each node's /health (one thread per node, so a frozen node does not slow the other)."""

    def __init__(self, state: dict[str, Any], period: float = 0.1) -> None:
        self.state = state
        self.period = period
        self.samples: list[tuple[float, str, dict[str, Any]]] = []
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._poll, args=(n,), daemon=True) for n in state["nodes"]]

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
            h = node_health(self.state, node, timeout=0.5)
            if h is not None:
                with self.lock:
                    self.samples.append((time.time(), node, h))

    def latest(self, max_age: float = 0.6) -> dict[str, dict[str, Any]]:
        """Each node's last answer, if it is fresh (a frozen or dead node has none)."""
        now = time.time()
        with self.lock:
            return {n: h for t, n, h in self.samples[-40:] if t > now - max_age}


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


def _all_running(state: dict[str, Any], cams: list[str]) -> dict[str, str] | None:
    hs = {n: node_health(state, n) or {} for n in state["nodes"]}
    place = _placement(hs)
    return place if set(cams) <= set(place) and all(h.get("healthy") for h in hs.values()) else None


def _leader(state: dict[str, Any]) -> str:
    def find() -> str | None:
        for n in state["nodes"]:
            h = node_health(state, n) or {}
            if h.get("role") == "leader":
                return n
        return None

    return str(_wait(find, 30, "a leader"))


def _inject(
    run_dir: Path, state: dict[str, Any], scenario: str, hold_s: float, leader: str, place: dict[str, str]
) -> Any:
    """Apply the fault at once; return (victim, the restore callable, the cameras it disrupts)."""
    other = next(n for n in state["nodes"] if n != leader)
    if scenario == "kill-node":
        pids = faults.workstation_pids(state, leader)
        faults.kill_all(pids)
        faults.kill_etcd_member(state, leader)

        def restore() -> None:
            faults.reap_orphans(pids)
            faults.restart_etcd_member(run_dir, state, leader)
            faults.restart_node(run_dir, state, leader)

        return leader, restore
    if scenario == "kill-leader":
        pids = faults.workstation_pids(state, leader)
        faults.kill_all(pids[:1])
        return leader, _seq(lambda: faults.reap_orphans(pids[1:]), lambda: faults.restart_node(run_dir, state, leader))
    if scenario == "freeze-node":
        pids = faults.workstation_pids(state, leader)
        faults.signal_all(pids, 19)  # SIGSTOP
        return leader, _seq(lambda: time.sleep(hold_s), lambda: faults.signal_all(pids, 18))  # SIGCONT
    if scenario == "kill-etcd-leader":
        member = faults.etcd_leader(state) or "witness"
        faults.kill_etcd_member(state, member)
        return member, _seq(lambda: time.sleep(hold_s), lambda: faults.restart_etcd_member(run_dir, state, member))
    if scenario == "partition":
        cut = faults.Partition(state, leader)
        cut.cut()
        return leader, _seq(lambda: time.sleep(hold_s), cut.heal)
    if scenario == "lose-quorum":
        members = [m for m in state["etcd"] if m != leader][:2]
        for m in members:
            faults.kill_etcd_member(state, m)
        return ",".join(members), _seq(
            lambda: time.sleep(hold_s),
            *[functools.partial(faults.restart_etcd_member, run_dir, state, m) for m in members],
        )
    if scenario == "kill-actor":
        cam = sorted(place)[0]
        node = place[cam]
        pid = _actor_pid(state, node, cam)
        faults.kill_all([pid])
        return f"{node}/{cam} (pid {pid})", lambda: None
    if scenario == "switchover":
        from cluster.pair import admin_identity
        from failover import admin

        admin.switchover(state["endpoints"], state["store"], to=other, identity=admin_identity(state))
        return leader, lambda: None
    raise EdgepairError(f"unknown drill scenario {scenario!r}: choose one of {', '.join(SCENARIOS)}")


def _seq(*steps: Callable[[], object]) -> Callable[[], None]:
    """One restore callable that runs ``steps`` in order."""

    def run() -> None:
        for step in steps:
            step()

    return run


def _actor_pid(state: dict[str, Any], node: str, cam: str) -> int:
    """The camera actor's pid: from /health (``pid`` in the status) or the node's one ``ray::CameraWorker``."""
    h = node_health(state, node) or {}
    pid = ((h.get("camera_status") or {}).get(cam) or {}).get("pid")
    if pid:
        return int(pid)
    workers = [
        p
        for p in faults.descendants(int(state["nodes"][node]["pid"]))
        if faults.cmdline(p)[:1] and faults.cmdline(p)[0].startswith("ray::CameraWorker")
    ]
    if len(workers) != 1:
        raise EdgepairError(
            f"kill-actor: cannot tell {cam}'s actor among {len(workers)} CameraWorker processes of {node}: "
            "add its pid to CameraWorker.status()"
        )
    return workers[0]


def run_once(
    run_dir: Path, scenario: str, *, settle_s: float, hold_s: float, pre_s: float, baseline: bool
) -> dict[str, Any]:
    """One drill: fault, restore, settle, measure. Returns the report of this run."""
    run_dir = Path(run_dir).resolve()
    state = load_state(run_dir)
    faults.remember_etcd_argv(run_dir, state)
    cams = [c["id"] for c in _node_config(state)["cameras"]]
    _wait(lambda: _all_running(state, cams), 120, "every camera running and both nodes healthy")
    leader = _leader(state)
    with Watcher(state) as watch:
        t_begin = time.time()
        time.sleep(pre_s)
        place = _placement(watch.latest())
        before = {n: _summary(h) for n, h in watch.latest().items()}
        t0 = time.time()
        victim, restore = _inject(run_dir, state, scenario, hold_s, leader, place)
        log.info("drill %s: fault injected on %s at %.3f", scenario, victim, t0)
        moved = [c for c, n in place.items() if n == leader] if scenario in NODE_FAULTS else []
        if scenario == "kill-actor":
            moved = [sorted(place)[0]]  # the camera whose actor was killed must come back in a new process
        try:
            _wait(lambda: _taken_over(watch, cams, t0, moved), 60, "every camera processing frames again")
            recovered = True
        except EdgepairError as exc:
            log.error("%s", exc)
            recovered = False
        restore()
        t_restored = time.time()
        _wait(lambda: _all_running(state, cams), 120, "both nodes healthy again with every camera running")
        time.sleep(settle_s)
        t_end = time.time()
        with watch.lock:
            samples = list(watch.samples)
    survivor = next(n for n in state["nodes"] if n != leader)
    _settle_replication(state)
    report = {
        "scenario": scenario,
        "victim": victim,
        "survivor": survivor,
        "fault_at": t0,
        "recovered": recovered,
        "restored_after_s": round(t_restored - t0, 2),
        "span": [t_begin, t_end],
        "detection_s": _detection(samples, before, t0),
        "takeover_s": _takeovers([x for x in samples if x[0] <= t_restored], t0, cams),
    }
    report.update(_measure(state, survivor, t_begin, t_end - 2.0, samples, t0, baseline))
    report["running_after"] = _all_running(state, cams) or {}
    report["ok"] = _ok(report, cams)
    return report


def _node_config(state: dict[str, Any]) -> dict[str, Any]:
    import yaml

    return dict(yaml.safe_load(Path(next(iter(state["nodes"].values()))["config"]).read_text()))


def _summary(h: dict[str, Any]) -> tuple[Any, ...]:
    return (h.get("role"), h.get("leader"), h.get("mode"), tuple(h.get("cameras") or ()))


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


def _detection(samples: list[tuple[float, str, dict[str, Any]]], before: dict[str, Any], t0: float) -> float | None:
    for t, node, h in samples:
        if t > t0 and node in before and _summary(h) != before[node]:
            return round(t - t0, 2)
    return None


def _takeovers(samples: list[tuple[float, str, dict[str, Any]]], t0: float, cams: list[str]) -> dict[str, Any]:
    """Per camera: fault to the first frame of the first actor started after the fault (None: never disturbed).

    ``samples`` end when the fault is repaired: what moves after that (the rebalance once the victim is back) is
    not a takeover.
    """
    out: dict[str, Any] = {}
    for cam in cams:
        firsts = [
            float(st["first_frame_at"])
            for _t, _n, h in samples
            for c, st in (h.get("camera_status") or {}).items()
            if c == cam and float(st.get("first_frame_at") or 0) > t0
        ]
        out[cam] = round(min(firsts) - t0, 2) if firsts else None
    return out


def _boundaries(samples: list[tuple[float, str, dict[str, Any]]], cam: str, t0: float) -> list[float]:
    return sorted(
        {
            float(st["first_frame_at"])
            for _t, _n, h in samples
            for c, st in (h.get("camera_status") or {}).items()
            if c == cam and float(st.get("first_frame_at") or 0) > t0
        }
    )


def _settle_replication(state: dict[str, Any], bound_s: float = 30.0) -> None:
    def settled() -> bool:
        hs = [node_health(state, n) or {} for n in state["nodes"]]
        return all(h.get("replication_lag_s", 1) == 0 for h in hs)

    try:
        _wait(settled, bound_s, "replication to catch up")
    except EdgepairError as exc:
        log.warning("%s; measuring anyway", exc)
    time.sleep(2.0)


def _measure(
    state: dict[str, Any],
    node: str,
    a: float,
    b: float,
    samples: list[tuple[float, str, dict[str, Any]]],
    t0: float,
    baseline: bool,
) -> dict[str, Any]:
    from storage.views import run_query

    data_dir = Path(state["nodes"][node]["data_dir"])
    tz = state["timezone"]
    cfg = _node_config(state)
    fps = {c["id"]: float(c.get("fps") or 10.0) for c in cfg["cameras"]}
    interval = float(cfg["storage"].get("flush_interval_s", 1.0))
    win = run_query(
        data_dir,
        tz,
        f"SELECT camera_id, epoch(window_start) AS s, epoch(window_end) AS e, node, token, frames, credited, "
        f"credited_s FROM windows WHERE window_end > to_timestamp({a}) AND window_start < to_timestamp({b}) "
        "ORDER BY camera_id, window_start, token",
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
    tokens_ok = True
    overlap_s = 0.0
    for cam in fps:
        ws = [w for w in win if w["camera_id"] == cam]
        lo = math.floor(a / interval) * interval + interval  # whole windows only
        hi = math.floor(b / interval) * interval
        gaps = _gaps([(w["s"], w["e"]) for w in ws], lo, hi)
        credited = sorted((w for w in ws if w["credited_s"] > 0), key=lambda w: (w["s"], w["token"]))
        toks = [w["token"] for w in credited]
        mono = all(x <= y for x, y in itertools.pairwise(toks))
        tokens_ok = tokens_ok and mono
        full = [w for w in credited if w["credited"]]
        for w1, w2 in itertools.pairwise(full):
            if (w1["node"], w1["token"]) != (w2["node"], w2["token"]):
                overlap_s += max(0.0, min(w1["e"], w2["e"]) - max(w1["s"], w2["s"]))
        inside = [w for w in credited if lo <= w["s"] < hi]
        expected = round((hi - lo) * fps[cam])
        # Windows where backpressure dropped frames: the tracker saw other frames than an undisturbed run would,
        # so the baseline comparison treats them like gaps (reported as frames missing, never hidden).
        per_window = round(fps[cam] * (w["e"] - w["s"])) if (w := next(iter(inside), None)) else 0
        short = [(w["s"], w["e"]) for w in inside if int(w["frames"]) < round(fps[cam] * (w["e"] - w["s"]))]
        per_cam[cam] = {
            "gap_s": round(sum(y - x for x, y in gaps), 3),
            "gaps": [[round(x, 3), round(y, 3)] for x, y in gaps],
            "short_windows": [[round(x, 3), round(y, 3)] for x, y in short],
            "frames_per_window": per_window,
            "frames_expected": expected,
            "frames_missing": max(0, expected - sum(int(w["frames"]) for w in inside)),
            "tokens": sorted(set(toks)),
            "tokens_monotonic": mono,
            "events": sum(1 for e in ev if e["camera_id"] == cam and lo <= e["t"] < hi),
            "span": [lo, hi],
        }
    out: dict[str, Any] = {
        "cameras": per_cam,
        "events_credited_twice": int(twice),
        "credited_overlap_s": round(overlap_s, 3),
        "tokens_monotonic": tokens_ok,
    }
    if baseline:
        out["baseline"] = {
            cam: compare_with_baseline(state, cfg, cam, ev, per_cam[cam], _boundaries(samples, cam, t0))
            for cam in per_cam
        }
    return out


def _gaps(windows: list[tuple[float, float]], lo: float, hi: float) -> list[tuple[float, float]]:
    """The parts of [lo, hi) that no window covers."""
    out, cur = [], lo
    for s, e in sorted(windows):
        if s > cur and cur < hi:
            out.append((cur, min(s, hi)))
        cur = max(cur, e)
    if cur < hi:
        out.append((cur, hi))
    return out


def _ok(r: dict[str, Any], cams: list[str]) -> bool:
    base = r.get("baseline") or {}
    return (
        r["recovered"]
        and r["events_credited_twice"] == 0
        and r["credited_overlap_s"] == 0
        and r["tokens_monotonic"]
        and set(cams) <= set(r["running_after"])
        and all(b["match"] for b in base.values())
    )


def run_drill(
    run_dir: Path,
    scenario: str,
    *,
    repeat: int = 1,
    report: Path | None = None,
    settle_s: float = 20.0,
    hold_s: float = 5.0,
    pre_s: float = 15.0,
    baseline: bool = True,
) -> dict[str, Any]:
    """Run ``scenario`` ``repeat`` times against the pair of ``run_dir``; write the JSON report to ``report``.

    ``pre_s``: seconds watched before the fault; ``hold_s``: how long a freeze, cut or lost member lasts;
    ``settle_s``: seconds the pair runs after it is whole again, before the measurement; ``baseline``: replay the
    same frames in-process and compare the events (slow on a small machine: about real time per camera).
    """
    if scenario not in SCENARIOS:
        raise EdgepairError(f"unknown drill scenario {scenario!r}: choose one of {', '.join(SCENARIOS)}")
    runs = [
        run_once(run_dir, scenario, settle_s=settle_s, hold_s=hold_s, pre_s=pre_s, baseline=baseline)
        for _ in range(repeat)
    ]
    out: dict[str, Any] = {"scenario": scenario, "repeat": repeat, "runs": runs, "summary": summarize(runs)}
    if report is not None:
        Path(report).write_text(json.dumps(out, indent=2, default=str))
    return out

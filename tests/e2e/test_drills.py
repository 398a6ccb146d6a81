"""Failover drills against a real local pair (3 etcd members, two node agents with their own Ray).

The scenarios run one after the other against ONE pair (as an engineer drills a store: each drill leaves the pair
whole again): lose-quorum and kill-actor in `make test` (CI's lab run, `make test-lab`, runs the other six through
drill.yml on the deployed lab store, kill-node and partition as real machine and network faults), all eight here in
`make test-all`. The pair is brought up on a
copy of cluster/examples/pair.yaml with its data in a temporary folder and always brought down by pid. Each report is
checked exactly: no double running measured from the frames, no window lost outside the gaps the faults explain,
every event outside gaps and horizons equal to the undisturbed baseline with at least :data:`MIN_EVENTS` compared per
camera.

The drills that must FAIL: the same pair, last, its nodes restarted with the test-only break
``EDGEPAIR_UNSAFE_BREAK=fence,drop-window`` (a fence that ignores its lease, a node that drops every window starting
on a multiple of 20 s) is drilled and the report must say FAIL with both reasons: double running measured from the
frames, and frames processed but never written (the workers' own counters).
"""

from __future__ import annotations

import json
import math
import shutil
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from cluster.drill_target import GRAY_SCENARIOS, NODE_FAULTS, SCENARIOS
from cluster.models import default_model_path

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "cluster" / "examples" / "pair.yaml"
VTEST = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")
SHARED_MODEL = REPO.parent / "shared" / "models" / "ssdlite_pedestrian.onnx"
MIN_EVENTS = 5
BROKEN_MARK = "unsafe-break"  # in a pair's run dir: its nodes were restarted with EDGEPAIR_UNSAFE_BREAK


def _model() -> Path | None:
    if default_model_path().exists():
        return None  # the default model: no model.path needed
    if SHARED_MODEL.exists():
        return SHARED_MODEL
    pytest.skip(f"no detector: neither {default_model_path()} (`edgepair model install`) nor {SHARED_MODEL}")


def _pair_up(tmp: Path, sources: dict[str, str] | None = None, converge_s: float = 60.0) -> Iterator[Path]:
    from cluster.pair import pair_down, pair_up

    if shutil.which("etcd") is None:
        pytest.skip("etcd not found on PATH (Debian: apt-get install etcd-server)")
    if not VTEST.exists():
        pytest.skip(f"{VTEST} not found: install Debian's opencv-doc package")
    model = _model()
    cfg = yaml.safe_load(EXAMPLE.read_text())
    for cam in cfg["cameras"]:
        if cam["id"] == "cam-2":
            # A zone beside its line: events often enough that a drill's baseline compares MIN_EVENTS soon after the
            # continuity horizon (the example's one line sees a crossing every 10 s or so at 5 fps).
            cam.setdefault("zones", []).append(
                {"id": "west", "polygon": [[0.05, 0.35], [0.45, 0.35], [0.45, 0.95], [0.05, 0.95]]}
            )
        if sources:  # real RTSP cameras: a stream has no playback or loop of its own
            cam["source"] = sources[cam["id"]]
            cam.pop("playback", None)
            cam.pop("loop", None)
    cfg["storage"]["data_dir"] = str(tmp / "data")
    if model is not None:
        cfg.setdefault("model", {})["path"] = str(model)
    config = tmp / "pair.yaml"
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    run_dir = tmp / "run"
    try:
        pair_up(config, run_dir, wait_s=180)
        yield run_dir
    finally:
        if (run_dir / "pair.json").exists():
            # A pair that ran with the test-only breaks never converges (the survivor refuses the windows the
            # victim wrote under its stale token): no 60 s wait for that at the end.
            pair_down(run_dir, 5.0 if (run_dir / BROKEN_MARK).exists() else converge_s)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One pair for every scenario of this module, in order (each drill leaves it whole)."""
    yield from _pair_up(tmp_path_factory.mktemp("pair"))


@pytest.fixture
def rtsp_pair(tmp_path: Path) -> Iterator[Path]:
    """The example pair on two real RTSP cameras: camsim (GStreamer's RTSP server) streaming vtest.avi."""
    from tests.rtsp import RtspServer, unavailable_reason

    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    with RtspServer({"cam-1": VTEST, "cam-2": VTEST}) as server:
        yield from _pair_up(tmp_path, {c: server.url(c) for c in ("cam-1", "cam-2")})


def _check(report: dict, *, moved: bool, baseline: bool = True) -> None:
    from cluster.drill_report import format_report

    print(format_report(report))
    (run,) = report["runs"]
    # A baseline that compared too few events is reported inconclusive by the drill (a FAIL of the report); here,
    # on a shared CI machine where load can stall the cameras for the whole watch, it is accepted with a warning,
    # while a baseline that differs, and every safety figure below, fail the test.
    inconclusive = [f for f in run["failures"] if "baseline inconclusive" in f]
    if inconclusive:
        warnings.warn(f"drill {report['scenario']}: {inconclusive}", stacklevel=1)
    assert [f for f in run["failures"] if f not in inconclusive] == [], run["failures"]
    assert run["recovered"], "a camera was not processing frames again within 60 s of the fault"
    assert run["unsafe_break"] == []
    assert run["events_credited_twice"] == 0
    assert run["double_running_s"] == 0
    assert run["tokens_monotonic"]
    assert set(run["running_after"]) == {"cam-1", "cam-2"}, run["running_after"]
    for cam, c in run["cameras"].items():
        assert c["double_running_s"] == 0, (cam, c["double_running"])
        assert c["double_running_events"] == 0
        assert c["frames_unwritten"] == {}, (cam, c["frames_unwritten"])
        assert c["not_replicated"] == [], (cam, c["not_replicated"])
        # Every handover of the camera stopped the old producer before the new one's first frame.
        assert all(h["margin_s"] >= 0 for h in c["handovers"]), (cam, c["handovers"])
    if baseline:
        assert set(run["baseline"]) == {"cam-1", "cam-2"}
        for cam, b in run["baseline"].items():
            assert b["verdict"] in ("match", "inconclusive"), f"{cam}: {b}"
            assert b["baseline_events_compared"] == b["drill_events_compared"], (cam, b)
            assert (b["verdict"] == "match") == (b["drill_events_compared"] >= MIN_EVENTS), (cam, b)
    moved_cams = [c for c, v in run["takeover_s"].items() if v is not None]
    if moved:
        assert moved_cams, "no camera was taken over"
    if report["scenario"] in NODE_FAULTS:
        # A camera that moved to the other workstation has a handover between two producers in its frames (a camera
        # actor that Ray restarts on the same node carries on as the same producer: same node, same token).
        for cam in moved_cams:
            assert run["cameras"][cam]["handovers"], (cam, run["cameras"][cam])
    assert report["summary"]["ok"] or inconclusive
    assert report["summary"]["double_running_s"] == 0
    assert report["summary"]["frames_lost"] == 0
    assert report["summary"]["windows_not_replicated"] == 0


def _drill(run_dir: Path, scenario: str, out: Path, **kw: object) -> dict:
    from cluster.drill import run_drill

    args: dict = {"settle_s": 10.0, "pre_s": 10.0, "hold_s": 5.0, "min_events": MIN_EVENTS, **kw}
    return run_drill(run_dir, scenario, report=out / f"{scenario}.json", **args)


# CI runs every scenario at least once: here lose-quorum and kill-actor (the two the lab does not run) with the
# baseline, and the must-fail drill; in the lab (`make test-lab`) the other six through drill.yml, kill-node as a
# whole machine powered off and partition as a network namespace cut off. `make test-all` also runs all eight here.
EVERY_RUN = [
    ("lose-quorum", False),
    ("kill-actor", True),
]
SLOW = [
    ("kill-leader", True),
    ("kill-node", True),
    ("freeze-node", True),
    ("partition", True),
    ("kill-etcd-leader", False),
    ("switchover", False),  # sticky: the cameras stay where they run, under the new token
]


def _run(pair: Path, tmp_path: Path, scenario: str, moved: bool, **kw: object) -> None:
    report = _drill(pair, scenario, tmp_path, **kw)
    assert json.loads((tmp_path / f"{scenario}.json").read_text())["summary"] == report["summary"]
    _check(report, moved=moved)


@pytest.mark.parametrize(("scenario", "moved"), EVERY_RUN, ids=[s for s, _ in EVERY_RUN])
def test_drill(pair: Path, tmp_path: Path, scenario: str, moved: bool) -> None:
    # Measured once (no second chance for a short baseline, which is only a warning here): CI's time, 2.5 minutes
    # for lose-quorum on 2026-12-02. The slow drills below measure again as engineers' drills do.
    _run(pair, tmp_path, scenario, moved, remeasure_s=0.0)


def test_every_scenario_has_a_drill_test() -> None:
    from tests.e2e.test_lab_drills import IN_CI

    # The eight failover scenarios (the gray failures have their own suite: tests/e2e/test_gray_drills.py).
    assert sorted(s for s, _ in EVERY_RUN + SLOW) == sorted(set(SCENARIOS) - set(GRAY_SCENARIOS))
    # CI runs every scenario at least once: these two here, the other six in its lab run (README, "Failover drills").
    assert sorted(IN_CI + [s for s, _ in EVERY_RUN]) == sorted(set(SCENARIOS) - set(GRAY_SCENARIOS))


@pytest.mark.slow
@pytest.mark.parametrize(("scenario", "moved"), SLOW, ids=[s for s, _ in SLOW])
def test_drill_slow(pair: Path, tmp_path: Path, scenario: str, moved: bool) -> None:
    _run(pair, tmp_path, scenario, moved)


# Slow: every lab drill of `make test-lab` (tests/e2e/test_lab_drills.py) already runs on RTSP cameras, which keeps
# CI within its time; this one runs the same on one machine in `make test-all`.
@pytest.mark.slow
def test_kill_leader_on_rtsp_cameras(rtsp_pair: Path, tmp_path: Path) -> None:
    """The same drill on live RTSP streams. No baseline here: a stream's frames cannot be replayed exactly (the
    file-backed live cameras above can), so this checks takeover, double running, lost windows and crediting."""
    report = _drill(rtsp_pair, "kill-leader", tmp_path, settle_s=10.0, pre_s=10.0, baseline=False)
    assert "baseline" not in report["runs"][0]
    _check(report, moved=True, baseline=False)


def _restart_nodes(run_dir: Path) -> None:
    """Stop both node agents of a running pair by pid (SIGTERM: each stops its own Ray) and start them again as
    ``pair up`` does, in this process's environment: one at a time, both healthy, the cameras spread."""
    from cluster import drill_faults
    from cluster.pair import _wait_healthy, admin_identity, load_state, stop_pid
    from failover.admin import rebalance

    state = load_state(run_dir)
    for v in state["nodes"].values():
        stop_pid(v["pid"], term_timeout=45)
    started: dict = {}
    for name in state["nodes"]:
        drill_faults.restart_node(run_dir, state, name)
        started[name] = state["nodes"][name]
        _wait_healthy({**state, "nodes": started}, 180)
    rebalance(state["endpoints"], state["store"], identity=admin_identity(state))


@pytest.fixture
def broken_pair(pair: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The module's pair, its nodes restarted with the test-only breaks (inherited from this process's environment).
    The module's last test: the pair is not whole after it (its copies never converge), and its own pair would cost
    CI another start and stop of Ray."""
    monkeypatch.setenv("EDGEPAIR_UNSAFE_BREAK", "fence,drop-window")
    (pair / BROKEN_MARK).write_text(f"{time.time():.3f}\n")  # when the broken workers (and their counters) began
    _restart_nodes(pair)
    yield pair


def test_a_broken_fence_and_a_dropped_window_make_the_drill_fail(broken_pair: Path, tmp_path: Path) -> None:
    """The partitioned leader keeps its cameras (its fence ignores the lease) while the survivor takes them over:
    the drill must measure that double running from the frames; and the windows the nodes drop must be reported
    lost."""
    from cluster.drill_report import format_report

    report = _drill(broken_pair, "partition", tmp_path, baseline=False, hold_s=6.0)
    print(format_report(report))
    (run,) = report["runs"]
    assert report["summary"]["ok"] is False
    assert run["unsafe_break"] == ["drop-window", "fence"]
    # The cameras the survivor took from the victim (a camera the survivor already ran only changes token there).
    victim, survivor = run["victim"], run["survivor"]
    moved = sorted(
        cam
        for cam, c in run["cameras"].items()
        if run["takeover_s"][cam] is not None
        and any(h["from"].split("/")[0] == victim and h["to"].split("/")[0] == survivor for h in c["handovers"])
    )
    assert moved, "the survivor took no camera over: the partition did not happen"
    t_restored = run["fault_at"] + run["restored_after_s"]
    for cam in moved:
        c = run["cameras"][cam]
        # Two producers at once: the victim under its old token, the survivor under its new one, from the survivor's
        # first frame until the old leader hears of the new assignment after the heal.
        pieces = c["double_running"]
        assert all({p.split("/")[0] for p in ps} == {run["victim"], run["survivor"]} for _, _, ps in pieces), pieces
        taken = run["fault_at"] + run["takeover_s"][cam]
        # Between the fault and the old leader hearing of the new assignment after the heal. Not necessarily from
        # the survivor's first frame: the victim, cut off from etcd on a loaded machine, may skip seconds of frames
        # (CI once saw its first overlapping frame 3.7 s after the takeover), so no bound on where it starts.
        x, y = pieces[0][0], pieces[-1][1]
        assert run["fault_at"] <= x < y <= t_restored + 15.0, (x, y, taken, t_restored)
        assert c["double_running_s"] >= 1.0, c["double_running"]
        assert c["handover_margin_s"] < 0
        assert any(f.startswith(f"{cam}: processed by two producers at once") for f in run["failures"])
    # The dropped windows: the workers' own counters show frames processed and never written, on both nodes'
    # workers (each drops every window starting on a multiple of 20 s), in whole windows of the camera's rate; and the
    # gaps seen while every health sample showed the camera processing are such windows.
    for cam, c in run["cameras"].items():
        assert c["frames_unwritten"], (cam, c)
        # At most the frames of the dropped windows (a loaded node processes fewer than the camera's rate).
        since = float((broken_pair / BROKEN_MARK).read_text())  # the workers' counters start with them
        dropped = sum(1 for k in range(math.floor(since), math.ceil(t_restored) + 60) if k % 20 == 0)
        assert all(0 < n <= dropped * c["frames_per_window"] for n in c["frames_unwritten"].values()), c
        assert all(round(x) % 20 == 0 and y - x == 1.0 for x, y in c["unexplained_gaps"]), c["unexplained_gaps"]
        assert any(f.startswith(f"{cam}: frames processed and never written") for f in run["failures"])

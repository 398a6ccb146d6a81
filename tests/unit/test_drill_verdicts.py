"""When a failover drill passes: the failure lines of one run (cluster.drill_report.failures) and the events compared
with the undisturbed baseline (cluster.drill_baseline.compare_with_baseline). Pure logic: the replay is faked."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from cluster import drill_baseline
from cluster.drill_baseline import compare_with_baseline
from cluster.drill_report import failures as _failures

T = 1_800_000_000.0
CAMS = ["cam-1", "cam-2"]


# --- _failures -------------------------------------------------------------------------------------------------------


def cam_metrics(cam: str) -> dict[str, Any]:
    """One camera's measurements as ``_measure`` fills them, for a clean run."""
    return {
        "gap_s": 2.0,
        "gaps": [[T + 10.0, T + 12.0]],
        "unexplained_gaps": [],
        "frames_unwritten": {},
        "short_windows": [],
        "frames_per_window": 10,
        "frames_expected": 1000,
        "frames_missing": 20,
        "double_running_s": 0.0,
        "double_running": [],
        "double_running_events": 0,
        "handovers": [{"from": "ws-a/5", "to": "ws-b/6", "at": T + 11.7, "margin_s": 0.3}],
        "handover_margin_s": 0.3,
        "not_replicated": [],
        "windows_ahead": [],
        "tokens": [5, 6],
        "tokens_monotonic": True,
        "events": 12,
        "span": [T + 1.0, T + 100.0],
    }


def baseline_match() -> dict[str, Any]:
    return {
        "verdict": "match",
        "min_events": 5,
        "compared_s": 60.0,
        "excluded": [[T, T + 5.0], [T + 95.0, T + 100.0]],
        "baseline_events": 9,
        "drill_events_compared": 7,
        "baseline_events_compared": 7,
        "missing": [],
        "extra": [],
        "match": True,
    }


def clean_run() -> dict[str, Any]:
    """A passing run as ``run_once`` fills it (``_measure`` with a baseline, ``running_after``)."""
    return {
        "scenario": "kill-leader",
        "victim": "ws-a",
        "survivor": "ws-b",
        "fault_at": T + 15.0,
        "recovered": True,
        "restored_after_s": 5.2,
        "span": [T, T + 102.0],
        "watched_longer_s": 0.0,
        "detection_s": 1.1,
        "takeover_s": {"cam-1": 3.4, "cam-2": 3.6},
        "unsafe_break": [],
        "cameras": {cam: cam_metrics(cam) for cam in CAMS},
        "events_credited_twice": 0,
        "double_running_s": 0.0,
        "tokens_monotonic": True,
        "baseline": {cam: baseline_match() for cam in CAMS},
        "running_after": {"cam-1": "ws-b", "cam-2": "ws-b"},
    }


def run_with(top: dict[str, Any] | None = None, **cams: dict[str, Any]) -> dict[str, Any]:
    """``clean_run`` with top-level keys replaced and, per camera (``cam_1=...``), camera keys replaced."""
    r = clean_run()
    r.update(copy.deepcopy(top or {}))
    for key, over in cams.items():
        r["cameras"][key.replace("_", "-")].update(copy.deepcopy(over))
    return r


DIFFER = {
    **baseline_match(),
    "verdict": "differ",
    "match": False,
    "missing": [(T + 20.0, "line_cross", "door", None, "in")],
    "extra": [(T + 30.5, "zone_enter", None, "till", None), (T + 31.0, "zone_exit", None, "till", None)],
}
INCONCLUSIVE = {
    **baseline_match(),
    "verdict": "inconclusive",
    "match": False,
    "drill_events_compared": 3,
    "baseline_events_compared": 3,
}


def test_clean_run_has_no_failures() -> None:
    assert _failures(clean_run(), CAMS) == []


def test_run_without_baseline_has_no_failures() -> None:
    r = clean_run()
    del r["baseline"]  # ``baseline=False``: _measure writes no such key
    assert _failures(r, CAMS) == []
    r["baseline_skipped"] = "the cameras' frames cannot be replayed here (live streams)"
    assert _failures(r, CAMS) == []


@pytest.mark.parametrize(
    ("run", "line"),
    [
        pytest.param(
            run_with({"unsafe_break": ["no-fence", "skip-flush"]}),
            "a node ran with the test-only break no-fence,skip-flush (EDGEPAIR_UNSAFE_BREAK)",
            id="unsafe-break",
        ),
        pytest.param(
            run_with({"recovered": False}),
            "a camera was not processing frames again within 60 s of the fault",
            id="not-recovered",
        ),
        pytest.param(
            run_with(
                cam_1={
                    "double_running_s": 0.4,
                    "double_running_events": 2,
                    "double_running": [[T + 1.2, T + 1.6, ["ws-a/5", "ws-b/6"]]],
                }
            ),
            "cam-1: processed by two producers at once for 0.4 s (2 events written by the loser then): "
            "[[1800000001.2, 1800000001.6, ['ws-a/5', 'ws-b/6']]]",
            id="double-running",
        ),
        pytest.param(
            run_with(
                cam_2={
                    "frames_unwritten": {"ws-a/4242": 7},
                    "unexplained_gaps": [[T + 40.0, T + 41.0]],
                }
            ),
            "cam-2: frames processed and never written (lost windows): {'ws-a/4242': 7};"
            " gaps while the camera was processing: [[1800000040.0, 1800000041.0]]",
            id="frames-unwritten",
        ),
        pytest.param(
            run_with(cam_1={"not_replicated": ["cam-1.1800000020000.ws-a.5", "cam-1.1800000021000.ws-a.5"]}),
            "cam-1: 2 windows written but not in the survivor's data",
            id="not-replicated",
        ),
        pytest.param(
            run_with(cam_1={"windows_ahead": ["cam-1.1800000300000.ws-a.5"]}),
            "cam-1: 1 windows stamped more than 10 s after their file was written (a clock ahead of the true"
            " time): ['cam-1.1800000300000.ws-a.5']",
            id="windows-ahead",
        ),
        pytest.param(
            run_with(cam_2={"tokens_monotonic": False, "tokens": [5, 6, 7]}),
            "cam-2: credited tokens go back in time: [5, 6, 7]",
            id="tokens-not-monotonic",
        ),
        pytest.param(
            run_with({"events_credited_twice": 3}),
            "3 events credited twice",
            id="credited-twice",
        ),
        pytest.param(
            run_with({"running_after": {"cam-1": "ws-b"}}),
            "not running after the drill: cam-2",
            id="one-camera-not-running",
        ),
        pytest.param(
            # _all_running answers None (stored as {}) unless every camera runs: then all are listed, sorted.
            run_with({"running_after": {}}),
            "not running after the drill: cam-1, cam-2",
            id="no-camera-running",
        ),
        pytest.param(
            run_with({"baseline": {"cam-1": baseline_match(), "cam-2": DIFFER}}),
            "cam-2: events outside gaps and horizons differ from the baseline "
            "([(1800000020.0, 'line_cross', 'door', None, 'in')] missing, "
            "[(1800000030.5, 'zone_enter', None, 'till', None), (1800000031.0, 'zone_exit', None, 'till', None)] "
            "extra)",
            id="baseline-differ",
        ),
        pytest.param(
            run_with({"baseline": {"cam-1": INCONCLUSIVE, "cam-2": baseline_match()}}),
            "cam-1: baseline inconclusive: 3 events compared, at least 5 needed (watch longer: --settle)",
            id="baseline-inconclusive",
        ),
    ],
)
def test_each_reason_alone_gives_its_one_line(run: dict[str, Any], line: str) -> None:
    assert _failures(run, CAMS) == [line]


def test_lists_are_cut_in_the_lines() -> None:
    pieces = [[T + i, T + i + 0.5, ["ws-a/5", "ws-b/6"]] for i in range(4)]
    gaps = [[T + 10.0 * i, T + 10.0 * i + 1.0] for i in range(6)]
    missing = [(T + 20.0 + i, "line_cross", "door", None, "in") for i in range(4)]
    r = run_with(
        {"baseline": {"cam-1": {**DIFFER, "missing": missing, "extra": []}, "cam-2": baseline_match()}},
        cam_1={"double_running_s": 2.0, "double_running_events": 0, "double_running": pieces},
        cam_2={"frames_unwritten": {"ws-b/77": 3}, "unexplained_gaps": gaps},
    )
    assert _failures(r, CAMS) == [
        f"cam-1: processed by two producers at once for 2.0 s (0 events written by the loser then): {pieces[:3]}",
        f"cam-2: frames processed and never written (lost windows): {{'ws-b/77': 3}}; "
        f"gaps while the camera was processing: {gaps[:5]}",
        f"cam-1: events outside gaps and horizons differ from the baseline ({missing[:3]} missing, [] extra)",
    ]


def test_several_reasons_give_all_lines_in_order() -> None:
    r = run_with(
        {
            "unsafe_break": ["no-fence"],
            "recovered": False,
            "events_credited_twice": 1,
            "running_after": {},
            "baseline": {"cam-1": DIFFER, "cam-2": INCONCLUSIVE},
        },
        cam_1={
            "double_running_s": 0.1,
            "double_running_events": 1,
            "double_running": [[T + 5.0, T + 5.1, ["ws-a/5", "ws-b/6"]]],
            "not_replicated": ["s1"],
        },
        cam_2={
            "frames_unwritten": {"ws-a/1": 10},
            "unexplained_gaps": [],
            "tokens_monotonic": False,
            "tokens": [6, 7],
        },
    )
    assert _failures(r, CAMS) == [
        "a node ran with the test-only break no-fence (EDGEPAIR_UNSAFE_BREAK)",
        "a camera was not processing frames again within 60 s of the fault",
        "cam-1: processed by two producers at once for 0.1 s (1 events written by the loser then): "
        "[[1800000005.0, 1800000005.1, ['ws-a/5', 'ws-b/6']]]",
        "cam-1: 1 windows written but not in the survivor's data",
        "cam-2: frames processed and never written (lost windows): {'ws-a/1': 10}; "
        "gaps while the camera was processing: []",
        "cam-2: credited tokens go back in time: [6, 7]",
        "1 events credited twice",
        "not running after the drill: cam-1, cam-2",
        "cam-1: events outside gaps and horizons differ from the baseline "
        "([(1800000020.0, 'line_cross', 'door', None, 'in')] missing, "
        "[(1800000030.5, 'zone_enter', None, 'till', None), (1800000031.0, 'zone_exit', None, 'till', None)] extra)",
        "cam-2: baseline inconclusive: 3 events compared, at least 5 needed (watch longer: --settle)",
    ]


# --- compare_with_baseline -------------------------------------------------------------------------------------------

LO, HI = T, T + 100.0
# With the default tracking (max_lost_s 3) the grace is 5 s: with no track alive, the span's start excludes
# [LO - 2, LO + 5) and its tail [HI - 5, HI); events in [LO + 5, HI - 5) are compared.


def ev(t: float, kind: str = "line_cross", cam: str | None = "cam-1") -> dict[str, Any]:
    """An event as ``_measure`` reads it (``cam``) or as the replay returns it (``cam=None``)."""
    line, zone, direction = ("door", None, "in") if kind == "line_cross" else (None, "till", None)
    e: dict[str, Any] = {"t": t, "kind": kind, "line_id": line, "zone_id": zone, "direction": direction}
    if cam is not None:
        e["camera_id"] = cam
    return e


def key(t: float, kind: str = "line_cross") -> tuple[Any, ...]:
    line, zone, direction = ("door", None, "in") if kind == "line_cross" else (None, "till", None)
    return (round(t, 3), kind, line, zone, direction)


class FakeReplay:
    """Stands in for ``drill_baseline.replay``: the undisturbed events and alive tracks, and the calls made."""

    def __init__(self, events: list[dict[str, Any]], alive: list[tuple[float, set[int]]] | None = None) -> None:
        self.events, self.alive = events, alive or []
        self.calls: list[tuple[Path, str, float, float]] = []

    def __call__(
        self, config_path: Path, cam: str, lo: float, hi: float, keep: Callable[[float], bool] | None = None
    ) -> tuple[list[dict[str, Any]], list[Any]]:
        self.calls.append((config_path, cam, lo, hi))
        self.keep = keep
        return list(self.events), list(self.alive)


def metrics(gaps: list[list[float]] | None = None, short: list[list[float]] | None = None) -> dict[str, Any]:
    return {"span": [LO, HI], "gaps": gaps or [], "short_windows": short or []}


def compare(
    monkeypatch: pytest.MonkeyPatch,
    base: Sequence[float | dict[str, Any]],
    drill: Sequence[float | dict[str, Any]],
    *,
    m: dict[str, Any] | None = None,
    starts: list[float] | None = None,
    alive: list[tuple[float, set[int]]] | None = None,
    cfg: dict[str, Any] | None = None,
    min_events: int = 5,
) -> dict[str, Any]:
    """Run the comparison for cam-1; plain floats stand for line crossings at those times."""
    fake = FakeReplay([e if isinstance(e, dict) else ev(e, cam=None) for e in base], alive)
    monkeypatch.setattr(drill_baseline, "replay", fake)
    got = compare_with_baseline(
        Path("/nonexistent/edgepair.yaml"),
        cfg if cfg is not None else {},
        "cam-1",
        [e if isinstance(e, dict) else ev(e) for e in drill],
        m or metrics(),
        starts or [],
        min_events=min_events,
    )
    assert fake.calls == [(Path("/nonexistent/edgepair.yaml"), "cam-1", LO, HI)]
    return got


def test_same_events_match(monkeypatch: pytest.MonkeyPatch) -> None:
    times = [T + 10.0, T + 20.0, T + 30.0, T + 40.0, T + 50.0]
    assert compare(monkeypatch, times, times) == {
        "verdict": "match",
        "min_events": 5,
        "compared_s": 90.0,
        "excluded": [[T, T + 5.0], [T + 95.0, T + 100.0]],
        "baseline_events": 5,
        "drill_events_compared": 5,
        "baseline_events_compared": 5,
        "missing": [],
        "extra": [],
        "match": True,
    }


def test_missing_and_extra_events_differ(monkeypatch: pytest.MonkeyPatch) -> None:
    base = [ev(T + t, cam=None) for t in (10.0, 20.0, 30.0, 40.0, 50.0, 60.0)] + [ev(T + 70.0, "zone_enter", None)]
    drill = [ev(T + t) for t in (10.0, 30.0, 40.0, 50.0, 60.0)] + [
        ev(T + 33.3333, "zone_enter"),
        ev(T + 70.0, "zone_enter"),
    ]
    got = compare(monkeypatch, base, drill)
    assert (got["verdict"], got["match"]) == ("differ", False)
    assert got["missing"] == [key(T + 20.0)]
    assert got["extra"] == [key(T + 33.333, "zone_enter")]
    assert (got["drill_events_compared"], got["baseline_events_compared"], got["baseline_events"]) == (7, 7, 7)


def test_an_event_credited_twice_in_the_drill_is_one_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    times = [T + 10.0, T + 20.0, T + 30.0, T + 40.0, T + 50.0]
    got = compare(monkeypatch, times, [*times, T + 30.0])
    assert (got["verdict"], got["missing"], got["extra"]) == ("differ", [], [key(T + 30.0)])


def test_same_kind_at_another_time_or_on_another_line_is_not_the_same_event(monkeypatch: pytest.MonkeyPatch) -> None:
    times = [T + 10.0, T + 20.0, T + 30.0, T + 40.0, T + 50.0]
    other_line = {**ev(T + 50.0), "line_id": "exit"}
    got = compare(monkeypatch, times, [T + 10.0, T + 20.0, T + 30.0, T + 40.002, other_line])
    assert got["verdict"] == "differ"
    assert got["missing"] == [key(T + 40.0), key(T + 50.0)]
    assert got["extra"] == sorted([key(T + 40.002), (T + 50.0, "line_cross", "exit", None, "in")])


def test_differ_wins_over_too_few_events(monkeypatch: pytest.MonkeyPatch) -> None:
    got = compare(monkeypatch, [T + 10.0], [])
    assert (got["verdict"], got["missing"], got["extra"], got["match"]) == ("differ", [key(T + 10.0)], [], False)


@pytest.mark.parametrize(
    ("n", "min_events", "verdict"),
    [
        (4, 5, "inconclusive"),  # min_events - 1 compared
        (5, 5, "match"),  # exactly min_events compared
        (6, 5, "match"),
        (0, 1, "inconclusive"),
        (0, 0, "match"),
    ],
)
def test_fewer_than_min_events_compared_is_inconclusive(
    monkeypatch: pytest.MonkeyPatch, n: int, min_events: int, verdict: str
) -> None:
    times = [T + 10.0 + 10.0 * i for i in range(n)]
    got = compare(monkeypatch, times, times, min_events=min_events)
    assert (got["verdict"], got["match"], got["min_events"]) == (verdict, verdict == "match", min_events)
    assert (got["drill_events_compared"], got["baseline_events_compared"], got["missing"], got["extra"]) == (
        n,
        n,
        [],
        [],
    )


def test_events_outside_the_span_head_tail_and_other_cameras_are_not_compared(monkeypatch: pytest.MonkeyPatch) -> None:
    kept = [T + 5.0, T + 20.0, T + 40.0, T + 60.0, T + 94.999]  # [LO + 5, HI - 5): compared
    base = [T + 0.5, T + 4.999, *kept, T + 95.0, T + 99.0]
    drill = [ev(T - 1.0), ev(T + 3.0), *(ev(t) for t in kept), ev(T + 96.0), ev(T + 100.0), ev(T + 50.0, cam="cam-2")]
    got = compare(monkeypatch, base, drill)
    assert (got["verdict"], got["missing"], got["extra"]) == ("match", [], [])
    assert (got["baseline_events"], got["baseline_events_compared"], got["drill_events_compared"]) == (9, 5, 5)


def test_events_in_gaps_short_windows_and_horizons_are_not_compared(monkeypatch: pytest.MonkeyPatch) -> None:
    # A gap [40, 45): excluded from 1 s before it, and a fresh tracker after it: [43, 45 + 5).
    # A window with dropped frames [20, 21): likewise [19, 21) and [19, 26).
    # A fresh actor at 70, while the undisturbed tracker has tracks 1 and 2 alive (born within 1 s): until the last
    # of them has ended (80) plus the grace, [68, 85). Track 3, born later, does not extend it.
    alive = [(T + 70.0, {1}), (T + 70.5, {1, 2}), (T + 75.0, {2, 3}), (T + 80.0, {2, 3}), (T + 88.0, {3})]
    compared = [T + 10.0, T + 18.999, T + 26.0, T + 30.0, T + 38.999, T + 50.0, T + 60.0, T + 85.0]
    only_base = [T + 19.0, T + 25.999, T + 39.0, T + 49.0, T + 68.0, T + 84.999]
    only_drill = [T + 20.5, T + 42.0, T + 45.0, T + 71.0, T + 80.0]
    got = compare(
        monkeypatch,
        sorted(compared + only_base),
        sorted(compared + only_drill),
        m=metrics(gaps=[[T + 40.0, T + 45.0]], short=[[T + 20.0, T + 21.0]]),
        starts=[T + 70.0],
        alive=alive,
    )
    assert got == {
        "verdict": "match",
        "min_events": 5,
        "compared_s": 100.0 - (5.0 + 7.0 + 11.0 + 17.0 + 5.0),
        "excluded": [[T, T + 5.0], [T + 19.0, T + 26.0], [T + 39.0, T + 50.0], [T + 68.0, T + 85.0], [T + 95.0, HI]],
        "baseline_events": 14,
        "drill_events_compared": 8,
        "baseline_events_compared": 8,
        "missing": [],
        "extra": [],
        "match": True,
    }


def test_an_event_just_past_a_horizon_is_compared(monkeypatch: pytest.MonkeyPatch) -> None:
    times = [T + 10.0, T + 20.0, T + 30.0, T + 40.0, T + 50.0]
    got = compare(monkeypatch, [*times, T + 75.0], times, starts=[T + 70.0])  # horizon [68, 75) with no track alive
    assert (got["verdict"], got["missing"], got["extra"]) == ("differ", [key(T + 75.0)], [])
    assert got["excluded"] == [[T, T + 5.0], [T + 68.0, T + 75.0], [T + 95.0, HI]]


def test_the_grace_follows_the_tracker_max_lost(monkeypatch: pytest.MonkeyPatch) -> None:
    # max_lost_s 8: grace 10 s, so the head is [LO, LO + 10) and the tail [HI - 10, HI).
    times = [T + 10.0, T + 20.0, T + 30.0, T + 40.0, T + 89.999]
    got = compare(monkeypatch, [T + 9.0, *times, T + 90.0], [T + 7.0, *times], cfg={"tracking": {"max_lost_s": 8.0}})
    assert got["excluded"] == [[T, T + 10.0], [T + 90.0, HI]]
    assert (got["verdict"], got["baseline_events_compared"], got["compared_s"]) == ("match", 5, 80.0)


def test_short_windows_are_optional(monkeypatch: pytest.MonkeyPatch) -> None:
    times = [T + 10.0, T + 20.0, T + 30.0, T + 40.0, T + 50.0]
    got = compare(monkeypatch, times, times, m={"span": [LO, HI], "gaps": []})
    assert (got["verdict"], got["excluded"]) == ("match", [[T, T + 5.0], [T + 95.0, HI]])


def test_an_inconclusive_comparison_fails_the_run_with_its_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    times = [T + 10.0, T + 20.0, T + 30.0]
    r = run_with({"baseline": {"cam-1": compare(monkeypatch, times, times), "cam-2": baseline_match()}})
    assert _failures(r, CAMS) == [
        "cam-1: baseline inconclusive: 3 events compared, at least 5 needed (watch longer: --settle)"
    ]


def test_short_windows_with_listed_frames_are_compared(monkeypatch: pytest.MonkeyPatch) -> None:
    """A window where a loaded node skipped frames, whose segment lists the frames it processed, is compared: the
    replay processed the same frames. Only the inexact ones (frames not listed) are left out like gaps."""
    crossings = [LO + 40.0 + k for k in range(6)]
    short = [[LO + 40.0, LO + 41.0]]
    exact = compare(monkeypatch, crossings, crossings, m={**metrics(short=short), "short_windows_inexact": []})
    assert (exact["verdict"], exact["drill_events_compared"]) == ("match", 6)
    inexact = compare(monkeypatch, crossings, crossings, m={**metrics(short=short), "short_windows_inexact": short})
    assert (inexact["verdict"], inexact["drill_events_compared"]) == ("inconclusive", 0)  # 39 s to 41 s + 5 s grace


def test_camera_port_of_a_network_camera_and_a_refused_file() -> None:
    from cluster.drill_cut import camera_port
    from cluster.errors import EdgepairError

    assert camera_port("rtsp://127.0.0.1:8554/cam-1") == 8554
    assert camera_port("rtsp://10.0.0.5/stream") == 554
    assert camera_port("https://cam.local/mjpeg") == 443
    for source in ("/srv/video.mp4", "rtspt://10.0.0.5/s"):
        with pytest.raises(EdgepairError, match="camera-cut needs a network camera"):
            camera_port(source)


def test_camera_cut_cuts_the_leaders_first_camera_or_else_the_others() -> None:
    from cluster.drill_target import cut_camera
    from cluster.errors import EdgepairError

    assert cut_camera({"cam-2": "ws-a", "cam-1": "ws-b", "cam-3": "ws-a"}, "ws-a") == ("ws-a", "cam-2")
    # An earlier cut moved the leader's camera away (per-camera moves stay): the other workstation's first camera.
    assert cut_camera({"cam-2": "ws-b", "cam-1": "ws-b"}, "ws-a") == ("ws-b", "cam-1")
    with pytest.raises(EdgepairError, match="no camera runs"):
        cut_camera({}, "ws-a")


def test_a_stall_passes_and_the_report_names_it() -> None:
    from cluster.drill_report import format_report, summarize

    stall = {"gap": [T + 40.0, T + 41.0], "workers": {"ws-b/77": {"dropped": 6, "fence_pauses": 0, "reconnects": 0}}}
    r = run_with(cam_2={"stalls": [stall], "gap_s": 1.0, "gaps": [[T + 40.0, T + 41.0]]})
    r["failures"] = _failures(r, CAMS)
    r["ok"] = not r["failures"]
    assert r["failures"] == []
    text = format_report({"scenario": "partition", "repeat": 1, "runs": [r], "summary": summarize([r])})
    assert "  stall (run 1, cam-2): nothing processed in 1.0 s though running; ws-b/77: dropped +6" in text.splitlines()


def test_windows_held_or_lost_after_a_failing_disk_fail_the_run() -> None:
    held = run_with({"kept_frames": {"ws-a": {"cam-1": 25}}, "kept_frames_lost": 0})
    assert _failures(held, CAMS) == [
        "windows a failing disk refused are still held in memory at the end: {'ws-a': {'cam-1': 25}}"
    ]
    lost = run_with({"kept_frames": {}, "kept_frames_lost": 12})
    assert _failures(lost, CAMS) == ["12 frames in windows a failing disk refused were lost with their actor"]
    assert _failures(run_with({"kept_frames": {}, "kept_frames_lost": 0}), CAMS) == []

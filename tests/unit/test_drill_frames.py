"""Double running, handover margins and lost windows from frame times (cluster.drill_frames): pure logic."""

from __future__ import annotations

from pathlib import Path

import pytest

from cluster import drill_frames as df
from cluster.drill_frames import FrameWindow

T = 1_800_000_000.0


def w(start: float, node: str, token: int, first: float, last: float, frames: int = 5) -> FrameWindow:
    return FrameWindow(f"cam-1.{round(start * 1000)}.{node}.{token}", "cam-1", start, start + 1, node, token, frames,
                       first, last, f"/x/{node}{token}{start}")  # fmt: skip


def test_clean_handover_inside_one_window_is_not_double_running() -> None:
    # ws-a (token 5) processes 0.0-0.4, ws-b (token 6) starts at 0.7 in the same window slot.
    ws = [w(T, "ws-a", 5, T + 0.0, T + 0.4), w(T, "ws-b", 6, T + 0.7, T + 0.9), w(T + 1, "ws-b", 6, T + 1.0, T + 1.9)]
    dr = df.double_running(ws, 0.1)
    assert dr.seconds == 0.0
    assert dr.pieces == []
    assert dr.handovers == [{"from": "ws-a/5", "to": "ws-b/6", "at": round(T + 0.7, 3), "margin_s": 0.3}]
    assert dr.min_margin_s == 0.3  # the new owner's first frame, 0.3 s after the old owner's last one


def test_overlap_is_measured_to_the_frame() -> None:
    # The old owner keeps processing until 2.5 while the new one started at 1.2: 1.3 s + one frame of overlap.
    ws = [
        w(T + 1, "ws-a", 5, T + 1.0, T + 1.9),
        w(T + 2, "ws-a", 5, T + 2.0, T + 2.5),
        w(T + 1, "ws-b", 6, T + 1.2, T + 1.9),
        w(T + 2, "ws-b", 6, T + 2.0, T + 2.9),
    ]
    dr = df.double_running(ws, 0.1)
    assert dr.seconds == pytest.approx(1.4, abs=1e-6)  # [1.2, 2.6)
    assert [(round(x - T, 3), round(y - T, 3), p) for x, y, p in dr.pieces] == [(1.2, 2.6, [("ws-a", 5), ("ws-b", 6)])]
    assert dr.handovers[0]["margin_s"] == pytest.approx(-1.3, abs=1e-3)  # old's last frame 1.3 s after new's first


def test_a_camera_moved_away_and_back_under_one_token_is_two_handovers() -> None:
    # ws-a runs it (token 7), the leader moves it to ws-b (ws-a's inference failed), then back: the same producer
    # ws-a/7 twice. Margins are per stint, not from ws-a's first frame ever.
    ws = [w(T + k, "ws-a", 7, T + k, T + k + 0.9) for k in range(0, 3)]
    ws += [w(T + k, "ws-b", 7, T + k + 0.2, T + k + 0.9) for k in range(3, 6)]
    ws += [w(T + k, "ws-a", 7, T + k + 0.5, T + k + 0.9) for k in range(6, 8)]
    dr = df.double_running(ws, 0.1)
    assert (dr.seconds, dr.pieces) == (0.0, [])
    assert [(h["from"], h["to"], round(h["at"] - T, 3), h["margin_s"]) for h in dr.handovers] == [
        ("ws-a/7", "ws-b/7", 3.2, 0.3),
        ("ws-b/7", "ws-a/7", 6.5, 0.6),
    ]
    assert df.stints({("ws-a", 7): [(T, T + 2.9)]}) == [(("ws-a", 7), T, T + 2.9)]


def test_a_single_frame_of_the_old_owner_after_the_new_one_started_counts() -> None:
    ws = [w(T, "ws-b", 6, T + 0.0, T + 0.9, 10), w(T, "ws-a", 5, T + 0.5, T + 0.5, 1)]
    dr = df.double_running(ws, 0.1)
    assert dr.seconds == pytest.approx(0.1, abs=1e-6)


def test_a_loaded_producer_skipping_frames_still_runs_between_its_windows() -> None:
    # ws-a processes one frame a second (it skips frames of a live source) in windows that abut: it held the camera
    # the whole time ws-b ran it (1.0-4.0). A dropped window (3-4 missing) breaks the bridge: nothing proves ws-a ran
    # from its frame at 2.5 (+1 frame) to its next at 4.5, so only 1.0-2.6 counts.
    old = [w(T + k, "ws-a", 5, T + k + 0.5, T + k + 0.5, 1) for k in range(5)]
    new = [w(T + k, "ws-b", 6, T + k, T + k + 0.9, 10) for k in range(1, 4)]
    dr = df.double_running(old + new, 0.1)
    assert [(round(x - T, 3), round(y - T, 3)) for x, y, _ in dr.pieces] == [(1.0, 4.0)]
    assert dr.seconds == pytest.approx(3.0, abs=1e-6)
    dropped = [x for x in old if x.start != T + 3]
    dr = df.double_running(dropped + new, 0.1)
    assert [(round(x - T, 3), round(y - T, 3)) for x, y, _ in dr.pieces] == [(1.0, 2.6)]
    assert dr.seconds == pytest.approx(1.6, abs=1e-6)


def test_a_token_change_within_one_node_is_not_double_running() -> None:
    # ws-a keeps the camera under a newer token: its last frame of token 5 at 0.9, its first of token 6 at 0.95
    # (capture jitter: less than a frame interval apart). Between two nodes that would be 0.05 s of double running.
    ws = [w(T, "ws-a", 5, T + 0.0, T + 0.9), w(T + 1, "ws-a", 6, T + 0.95, T + 1.9)]
    assert df.double_running(ws, 0.1).seconds == 0.0
    other = [w(T, "ws-a", 5, T + 0.0, T + 0.9), w(T + 1, "ws-b", 6, T + 0.95, T + 1.9)]
    assert df.double_running(other, 0.1).seconds == pytest.approx(0.05, abs=1e-6)


def test_one_producer_paused_and_resumed_is_one_producer() -> None:
    ws = [w(T, "ws-a", 5, T, T + 0.9), w(T + 5, "ws-a", 5, T + 5, T + 5.9)]
    dr = df.double_running(ws, 0.1)
    assert (dr.seconds, dr.pieces, dr.handovers) == (0.0, [], [])


def test_windows_without_frames_or_frame_times() -> None:
    empty = w(T, "ws-a", 5, 0.0, 0.0, frames=0)
    assert empty.processed(0.1) is None
    compacted_run = w(T, "ws-a", 5, 0.0, 0.0, frames=10)  # frame times unknown: the whole window is assumed
    assert compacted_run.processed(0.1) == (T, T + 1)


def test_gaps_and_which_are_explained() -> None:
    windows = [(T + k, T + k + 1) for k in range(10) if k not in (3, 7)]
    gaps = df.gaps(windows, T, T + 10)
    assert gaps == [(T + 3, T + 4), (T + 7, T + 8)]
    # A sample at 3.5 saw the camera not processing (a takeover); none near 7: that window was lost.
    assert df.unexplained(gaps, [T + 3.5], (T - 20, T + 30)) == [(T + 7, T + 8)]
    # Gaps at the edges of what was watched are not judged.
    assert df.unexplained(gaps, [], (T + 2, T + 30)) == [(T + 7, T + 8)]


def _h(cam_state: str, frames: int, last_frame_at: float) -> dict:
    return {"camera_status": {"cam-1": {"state": cam_state, "frames": frames, "last_frame_at": last_frame_at}}}


def test_disturbed_samples() -> None:
    samples = [
        (T + 0.0, "ws-a", _h("running", 10, T - 0.1)),
        (T + 0.1, "ws-b", {"camera_status": {}}),
        (T + 0.2, "ws-a", _h("fenced", 10, T - 0.1)),  # fenced: not processing
        (T + 0.3, "ws-a", _h("running", 12, T - 2.0)),  # running but no frame for 2.3 s: stalled
        (T + 1.5, "ws-b", _h("running", 1, T + 1.4)),  # ws-a's last answer is 1.2 s old: not counted
    ]
    assert df.disturbed(samples, ["ws-a", "ws-b"], "cam-1") == [T + 0.2, T + 0.3]


def test_fresh_starts_are_each_workers_first_frame() -> None:
    def h(first: object) -> dict:
        return {
            "camera_status": {"cam-1": {"state": "running", "first_frame_at": first}, "cam-2": {"first_frame_at": 5}}
        }

    samples = [
        (T + 0.0, "ws-a", h(T - 50.0)),
        (T + 0.5, "ws-a", h(T - 50.0)),  # the same worker again
        (T + 3.0, "ws-a", h(T + 2.1)),  # Ray restarted the actor: a new tracker
        (T + 3.1, "ws-b", h(0.0)),  # not started yet
        (T + 3.2, "ws-b", h("nan")),  # hostile values are skipped
        (T + 3.3, "ws-b", h(None)),
        (T + 3.4, "ws-b", {"camera_status": {}}),
    ]
    assert df.fresh_starts(samples, "cam-1") == [T - 50.0, T + 2.1]
    assert df.fresh_starts(samples, "cam-3") == []


def test_read_windows_reads_frame_times_from_segments(tmp_path: Path) -> None:
    from actors.events import Event
    from storage.segments import SegmentWriter

    a = SegmentWriter(tmp_path / "a", "s1", "UTC", "ws-a")
    b = SegmentWriter(tmp_path / "b", "s1", "UTC", "ws-b")
    ev = Event(camera_id="cam-1", ts=T + 0.3, track_id=1, kind="line_cross", line_id="l", direction="in")
    a.write("cam-1", T, T + 1, [ev], frames=4, token=5, config_version="c", model_version="m",
            first_frame=T + 0.0, last_frame=T + 0.3)  # fmt: skip
    b.write("cam-1", T, T + 1, [], frames=3, token=6, config_version="c", model_version="m",
            first_frame=T + 0.2, last_frame=T + 0.4)  # fmt: skip
    b.write("cam-1", T + 1, T + 2, [], frames=10, token=6, config_version="c", model_version="m",
            first_frame=T + 1.0, last_frame=T + 1.9)  # fmt: skip
    ws = df.read_windows({"ws-a": tmp_path / "a", "ws-b": tmp_path / "b"}, "s1", "cam-1", T, T + 2)
    assert [(x.node, x.token, x.frames, x.first_frame - T, x.last_frame - T) for x in ws] == [
        ("ws-a", 5, 4, 0.0, pytest.approx(0.3)),
        ("ws-b", 6, 3, pytest.approx(0.2), pytest.approx(0.4)),
        ("ws-b", 6, 10, 1.0, pytest.approx(1.9)),
    ]
    dr = df.double_running(ws, 0.1)
    assert dr.seconds == pytest.approx(0.2, abs=1e-6)  # [0.2, 0.4): both processed frames then
    assert df.loser_events(ws, dr) == 1  # ws-a's event at 0.3 was written while ws-b also ran the camera


def test_frame_times_outside_the_window_are_refused() -> None:
    from storage.schema import SegmentMeta

    with pytest.raises(ValueError, match="not inside the window"):
        SegmentMeta("cam-1.1.ws-a.5", "s1", "cam-1", T, T + 1, 3, "ws-a", 5, 0, "c", "m", "UTC", T + 2, T + 2.5)
    with pytest.raises(ValueError, match="finite"):
        SegmentMeta("cam-1.1.ws-a.5", "s1", "cam-1", T, T + 1, 3, "ws-a", 5, 0, "c", "m", "UTC", float("nan"), T)


def _st(pid: int, frames: int, written: int, pending: int) -> dict:
    return {"camera_status": {"cam-1": {"pid": pid, "frames": frames, "frames_written": written,
                                        "frames_pending": pending}}}  # fmt: skip


def test_frames_unwritten_from_the_workers_counters() -> None:
    ok = [(T + k, "ws-a", _st(7, 100 + k, 90 + k, 10)) for k in range(6)]
    # A counter read mid-update (one frame counted, not yet in its window) is not a loss, even when the node's
    # cached /health repeats that one reading in every sample until its next refresh: readings are deduplicated.
    glitch = [(T + 6 + k / 10, "ws-a", _st(7, 107, 96, 10)) for k in range(10)]
    assert df.frames_unwritten(ok + glitch, "cam-1") == {}
    # ws-b's worker dropped a window of 10 frames: its counters stay 10 apart for good.
    lost = [(T + k, "ws-b", _st(9, 200 + k, 180 + k, 10)) for k in range(6)]
    assert df.frames_unwritten(ok + lost, "cam-1") == {"ws-b/9": 10}
    # A node of an earlier release (no counters) is not judged.
    old = [(T, "ws-a", {"camera_status": {"cam-1": {"frames": 5}}})]
    assert df.frames_unwritten(old, "cam-1") == {}


def test_segment_frame_times_round_trip_and_are_checked() -> None:
    from storage.schema import SegmentMeta, encode_frame_times

    base = dict(segment_id="s", store_id="st", camera_id="cam-1", window_start=T, window_end=T + 1, frames=3,
                node="ws-a", token=5, rows=0, config_version="c", model_version="m", timezone="UTC")  # fmt: skip
    times = [T + 0.0, T + 0.4, T + 0.8]
    meta = SegmentMeta(**base, first_frame=T, last_frame=T + 0.8, frame_times=encode_frame_times(T, times))
    assert meta.frame_times == "0,400,800"
    assert SegmentMeta.from_kv(meta.to_kv()) == meta
    assert [round(t - T, 3) for t in meta.frame_timestamps] == [0.0, 0.4, 0.8]
    for bad, why in (("0,400", "2 offsets for 3 frames"), ("0,900,400", "in order"), ("0,400,1800", "0..1001 ms"),
                     ("0,4e2,800", "whole milliseconds"), ("0,-1,800", "whole milliseconds"),
                     ("1," * 40_000 + "1", "at most")):  # fmt: skip
        with pytest.raises(ValueError, match=why):
            SegmentMeta(**base, frame_times=bad)


def test_the_replay_processes_the_frames_the_windows_list() -> None:
    from cluster.drill_baseline import processed_filter

    keep = processed_filter([(T, T + 1, (T + 0.0, T + 0.2)), (T + 1, T + 2, None)])
    assert [keep(T + k / 10) for k in range(10)] == [True, False, True] + [False] * 7  # listed frames only
    assert keep(T + 0.2004) and not keep(T + 0.205)  # whole milliseconds: 2 ms of slack, no more
    assert all(keep(T + 1 + k / 10) for k in range(10))  # frames not listed (an older segment): every frame
    assert keep(T - 0.5) and keep(T + 2.5)  # outside every window (a gap): the undisturbed tracker watches on


def test_windows_ahead_of_the_time_their_file_was_written(tmp_path: Path) -> None:
    """A window stamped more than the slack after its file was written (by the kernel's clock) was stamped by a
    clock ahead of the true time; files written before the drill and compacted files are not looked at."""
    import os

    written = 1_800_000_000.0
    folder = tmp_path / "ws-a" / "events" / "store=s1" / "date=2027-01-15" / "camera=cam-1"
    folder.mkdir(parents=True)
    files = {
        "cam-1.1800000000000.ws-a.3": written + 1,  # written a second after its window started: on time
        "cam-1.1800000009000.ws-a.3": written,  # 9 s ahead: within the slack
        "cam-1.1800000300000.ws-a.3": written,  # 300 s ahead
        "cam-1.1800000300000~1800003600000.ws-a.3": written,  # compacted: left out
        "cam-1.1800000600000.ws-a.3": written - 100,  # ahead, but written before the drill
    }
    for stem, mtime in files.items():
        path = folder / f"{stem}.parquet"
        path.write_bytes(b"")
        os.utime(path, (mtime, mtime))
    other = tmp_path / "ws-b" / "events" / "store=s1" / "date=2027-01-16" / "camera=cam-1"
    other.mkdir(parents=True)
    (other / "cam-1.1800090000000.ws-b.3.parquet").write_bytes(b"")
    os.utime(other / "cam-1.1800090000000.ws-b.3.parquet", (written, written))  # a day ahead, another date folder
    dirs = {"ws-a": tmp_path / "ws-a", "ws-b": tmp_path / "ws-b"}
    assert df.windows_ahead(dirs, "s1", "cam-1", written - 10, 10.0) == [
        "cam-1.1800000300000.ws-a.3",
        "cam-1.1800090000000.ws-b.3",
    ]
    assert df.windows_ahead(dirs, "s1", "cam-2", written - 10, 10.0) == []


def _run(pid: int, frames: int, dropped: int = 0, fence_pauses: int = 0) -> dict:
    st = {"state": "running", "pid": pid, "frames": frames, "frames_written": frames, "frames_pending": 0,
          "dropped": dropped, "fence_pauses": fence_pauses, "reconnects": 0}  # fmt: skip
    return {"camera_status": {"cam-1": st}}


def test_a_gap_with_nothing_processed_is_a_stall_and_a_lost_window_is_not() -> None:
    gap = [(T + 7, T + 8)]
    # ws-b's worker ran through the gap and reported 3 s after it; every frame it processed was written; its
    # capture dropped 5 frames over the gap (backpressure): a stall, with its cause.
    samples = [(T + k, "ws-b", _run(9, 10 * k, dropped=5 if k >= 8 else 0)) for k in range(12)]
    lost, stalled = df.stalls(gap, samples, "cam-1", df.frames_unwritten(samples, "cam-1"))
    assert lost == [] and stalled == [
        {"gap": [T + 7, T + 8], "workers": {"ws-b/9": {"dropped": 5, "fence_pauses": 0, "reconnects": 0}}}
    ]
    # The same gap on a worker whose counters show frames processed and never written: lost, not a stall.
    assert df.stalls(gap, samples, "cam-1", {"ws-b/9": 10}) == (gap, [])
    # A worker not seen after the gap (killed, stopped) cannot show it processed nothing there: lost.
    early = [s for s in samples if s[0] <= T + 9]
    assert df.stalls(gap, early, "cam-1", {}) == (gap, [])
    # No worker seen running near the gap: nothing shows what happened, so it stays unexplained.
    far = [s for s in samples if s[0] >= T + 10.5 or s[0] <= T + 5]
    assert df.stalls(gap, far, "cam-1", {}) == (gap, [])
    # A fence pause over the gap is named as its cause.
    fenced = [(T + k, "ws-b", _run(9, 10 * k, fence_pauses=1 if k >= 8 else 0)) for k in range(12)]
    assert df.stalls(gap, fenced, "cam-1", {})[1][0]["workers"]["ws-b/9"]["fence_pauses"] == 1

"""Review of issue 20's StreamPacer: frames that arrive late and together (a read delayed by a busy core, a network
hiccup) are still frames of the camera; a camera read at its own rate must not lose them, and a rate below the
camera's must still be kept over time. A stall longer than the catch-up window still earns no burst."""

from __future__ import annotations

from actors.capture import StreamPacer


def _taken(fps: float | None, arrivals: list[float]) -> int:
    pacer = StreamPacer(fps)
    return sum(pacer.take(t) for t in arrivals)


def _with_delays(n: int, period: float, every: int, delay: float, decode: float = 0.005) -> list[float]:
    """Frames produced every ``period``; every ``every``-th read returns ``delay`` late, and the frames buffered
    meanwhile come right after it, ``decode`` apart (what cap.read() sees when a core is busy for a moment)."""
    out: list[float] = []
    prev = -1.0
    for i in range(n):
        t = max(i * period, prev + decode)
        if i % every == every - 1:
            t += delay
        out.append(t)
        prev = t
    return out


def test_a_camera_read_at_its_own_rate_keeps_every_frame_through_short_read_delays() -> None:
    arrivals = _with_delays(200, 0.1, 10, 0.25)  # 10 frames/s, one read 250 ms late each second
    assert _taken(10, arrivals) == 200  # the old pick (fps = source rate) took all 200; 143 were taken


def test_frames_delivered_in_pairs_at_the_asked_rate_are_all_taken() -> None:
    pairs = sorted([i * 0.2 for i in range(50)] + [i * 0.2 + 0.001 for i in range(50)])  # 10/s, two at a time
    # 79 were taken; the first pair's second frame is ahead of a schedule that has no catching up to do yet
    assert _taken(10, pairs) >= 99
    assert _taken(5, pairs) == 50


def test_the_asked_rate_is_kept_over_time_through_read_delays() -> None:
    arrivals = _with_delays(500, 0.04, 25, 0.3)  # 25 frames/s for 20 s, one read 300 ms late each second
    assert 190 <= _taken(10, arrivals) <= 201  # 10 a second: 200 (144 were taken)


def test_a_burst_at_open_does_not_shrink_the_jitter_tolerance_for_good() -> None:
    # FFmpeg's probe buffers a few frames: the first reads return together; then 10/s with 15 ms of jitter
    jitter = [0.015, -0.012, 0.008, -0.015, 0.011, -0.004, 0.013, -0.009, 0.002, -0.014]
    arrivals = [0.0, 0.001, 0.002, 0.003] + [0.1 + i * 0.1 + jitter[i % 10] for i in range(100)]
    assert _taken(10, arrivals) >= 100

"""Adversarial review of issue 15: FencedRunner's timer thread is a loop that dies."""

from __future__ import annotations

import time

from failover.fence import FencedRunner


class Flaky:
    def __init__(self) -> None:
        self.cams: set[str] = set()
        self.fail_next_stop = False

    def start_camera(self, camera_id: str, fps: float, token: int) -> None:
        self.cams.add(camera_id)

    def stop_camera(self, camera_id: str) -> None:
        if self.fail_next_stop:
            self.fail_next_stop = False
            raise RuntimeError("actor busy")
        self.cams.discard(camera_id)

    def running(self) -> set[str]:
        return set(self.cams)


def test_r15_the_fence_timer_survives_one_failed_stop() -> None:
    now = [0.0]
    inner = Flaky()
    fr = FencedRunner(inner, ttl=1.0, node="ws-a", monotonic=lambda: now[0])
    fr.start(period=0.01)
    try:
        fr.renewed(0.0)
        fr.start_camera("cam-1", 10.0, 7)
        inner.fail_next_stop = True
        now[0] = 1.0  # past the 0.8 s deadline: the timer's stop raises once
        time.sleep(0.1)
        assert fr._thread is not None
        alive_after_first = fr._thread.is_alive()
        # renewed again, camera started again, then the lease lapses again: nobody stops it now
        fr.renewed(1.0)
        fr.start_camera("cam-1", 10.0, 7)
        now[0] = 3.0
        time.sleep(0.2)
        print("timer alive after one failed stop:", alive_after_first, "running after 2nd expiry:", inner.running())
        assert alive_after_first, "the fence timer thread died on one exception"
        assert inner.running() == set(), "a camera keeps running past its fence deadline"
    finally:
        fr.close()

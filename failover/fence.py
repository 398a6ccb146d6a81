"""Self-fencing: a node stops its cameras by itself before its lease can have expired.

The rule itself is :class:`cluster.fencing.Fence`, used by every runner (``FencedRunner`` here, the node's
``RayCameraRunner`` and each camera's ``CameraWorker``): a deadline on the monotonic clock that renewals move forward
only, expired once the clock reaches it. ``docs/architecture.md`` (walk 2) lists every place the fencing token and
this deadline are checked.

``FencedRunner`` wraps the runner that really starts cameras. Every successful lease renewal (or fresh confirmation
that etcd has no quorum anywhere) pushes a deadline of ``at + 0.8 x ttl`` on the monotonic clock, ``at`` being the
moment the renewal request was *sent* (the server extends the lease from a later moment, so the deadline is always
before the lease's end). A timer thread, independent of the HA loop, stops every camera when the deadline passes;
a camera is never started after it. Where the HA loop can freeze without the cameras freezing (SIGSTOP of the
agent, a long GC pause), the ``FencedRunner`` must live with the cameras, not with the loop: ``tests.harness.testnode``
runs it in the camera process and sends it the renewals through a pipe.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from cluster.fencing import Fence
from failover.decide import FENCE_FRACTION

log = logging.getLogger(__name__)


class CameraRunner(Protocol):
    """What the HA loop needs from whatever runs cameras (idempotent methods)."""

    def start_camera(self, camera_id: str, fps: float, token: int) -> None: ...

    def stop_camera(self, camera_id: str) -> None: ...

    def running(self) -> set[str]: ...


@runtime_checkable
class Fenced(Protocol):
    """A runner that enforces the renewal deadline itself."""

    def renewed(self, at: float) -> None: ...

    def start_camera(self, camera_id: str, fps: float, token: int) -> None: ...

    def stop_camera(self, camera_id: str) -> None: ...

    def running(self) -> set[str]: ...


class FencedRunner:
    """A runner that refuses starts and stops everything once ``fraction x ttl`` passed since the last renewal."""

    def __init__(
        self,
        runner: CameraRunner,
        ttl: float,
        node: str = "",
        fraction: float = FENCE_FRACTION,
        monotonic: Callable[[], float] = time.monotonic,
        on_fence: Callable[[list[str]], None] | None = None,
    ) -> None:
        self.runner = runner
        self.fence = Fence(fraction * ttl, monotonic)  # nothing may run before the first renewal
        self.window = fraction * ttl
        self.node = node
        self.monotonic = monotonic
        self.on_fence = on_fence
        self.current: dict[str, tuple[float, int]] = {}
        self.lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def deadline(self) -> float:
        return self.fence.deadline

    def renewed(self, at: float) -> None:
        with self.lock:
            self.fence.renewed(at)

    def start_camera(self, camera_id: str, fps: float, token: int) -> None:
        with self.lock:
            if self.fence.expired():
                log.warning("%s: not starting %s: fenced (no lease renewal in time)", self.node, camera_id)
                return
            if self.current.get(camera_id) == (fps, token) and camera_id in self.runner.running():
                return
            self.runner.start_camera(camera_id, fps, token)
            self.current[camera_id] = (fps, token)

    def stop_camera(self, camera_id: str) -> None:
        with self.lock:
            self.runner.stop_camera(camera_id)
            self.current.pop(camera_id, None)

    def running(self) -> set[str]:
        with self.lock:
            return set(self.runner.running())

    def check(self, now: float | None = None) -> list[str]:
        """Stop every camera if the deadline has passed; returns the cameras stopped."""
        with self.lock:
            now = self.monotonic() if now is None else now
            if not self.fence.expired(now):
                return []
            stopped = sorted(self.runner.running())
            for cam in stopped:
                try:  # one camera that fails to stop must not keep the others running
                    self.stop_camera(cam)
                except Exception:
                    log.exception("%s: fenced: stopping %s failed; trying again at the next check", self.node, cam)
            if stopped:
                log.warning(
                    "%s: fenced: no lease renewal for %.2fs (limit %.2fs), stopped %s",
                    self.node,
                    self.fence.since_renewal(now),
                    self.window,
                    ", ".join(stopped),
                )
                if self.on_fence is not None:
                    self.on_fence(stopped)
            return stopped

    def start(self, period: float | None = None) -> FencedRunner:
        """Start the timer thread (daemon); it checks every ``period`` seconds (default window / 20)."""
        period = period if period is not None else max(0.005, self.window / 20)

        def run() -> None:
            while not self._stop.wait(period):
                try:
                    self.check()
                except Exception:  # the fence's timer never dies: a failed check is retried at the next period
                    log.exception("%s: fence check failed; trying again", self.node)

        self._thread = threading.Thread(target=run, name=f"fence-{self.node}", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

"""Health reaching the decision core on a real etcd: two HA loops (``failover.loop.HALoop`` over ``EtcdDCS``), each fed
by a real ``cluster.health.HealthMonitor`` whose inference probe the test controls, as the node agent wires them.

ws-b's inference stops answering: its monitor turns it unhealthy after ``bad_ticks`` evaluations, its member key says
so with the reason, the leader moves ws-b's camera (ws-b stops it before ws-a starts it), and when the probe answers
again the camera goes back to ws-b, again stopped first. Every process is stopped by its pid (the etcd members, by
``EtcdCluster.stop``); every wait is bounded.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cluster.health import HealthMonitor, Settings, Sources
from failover.etcd_cluster import EtcdCluster
from failover.etcd_dcs import EtcdDCS
from failover.loop import HALoop

pytestmark = pytest.mark.skipif(shutil.which("etcd") is None, reason="etcd not installed (apt-get install etcd-server)")

TTL = 2.0
CAMS = {"cam-1": 10.0, "cam-2": 10.0}


class Runner:
    """Cameras that record (monotonic time, node, event, camera) in one shared list."""

    def __init__(self, node: str, log: list[tuple[float, str, str, str]], lock: threading.Lock) -> None:
        self.node, self.log, self.lock = node, log, lock
        self.cams: set[str] = set()

    def start_camera(self, camera_id: str, fps: float, token: int) -> None:
        with self.lock:
            if camera_id not in self.cams:
                self.cams.add(camera_id)
                self.log.append((time.monotonic(), self.node, "start", camera_id))

    def stop_camera(self, camera_id: str) -> None:
        with self.lock:
            if camera_id in self.cams:
                self.cams.discard(camera_id)
                self.log.append((time.monotonic(), self.node, "stop", camera_id))

    def running(self) -> set[str]:
        with self.lock:
            return set(self.cams)


def wait_for(pred: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[EtcdCluster]:
    c = EtcdCluster(tmp_path / "etcd", heartbeat_ms=50, election_ms=500).start()
    try:
        yield c
    finally:
        c.stop()


def test_an_unhealthy_node_hands_its_camera_over_and_gets_it_back(cluster: EtcdCluster) -> None:
    log: list[tuple[float, str, str, str]] = []
    lock = threading.Lock()
    answers = {"ws-a": True, "ws-b": True}
    stop = threading.Event()
    loops: dict[str, HALoop] = {}
    threads: list[threading.Thread] = []
    dcs: dict[str, EtcdDCS] = {}
    try:
        for name in ("ws-a", "ws-b"):
            monitor = HealthMonitor(
                name,
                Settings(period_s=0.2, bad_ticks=3, good_ticks=5, inference_deadline_s=2.0),
                Sources(
                    inference=lambda deadline, name=name: (0.01, "") if answers[name] else (None, ""),  # type: ignore[misc]
                    cameras=lambda: {},
                    disk=lambda: ("", 1 << 40),
                    replication=lambda: ("", None, ""),
                    peer_wall=lambda: ("", None),
                ),
            )
            dcs[name] = EtcdDCS(cluster.endpoints, "health", TTL)
            loops[name] = HALoop(dcs[name], name, CAMS, 4, Runner(name, log, lock), ttl=TTL, health=monitor.report)
            threads.append(threading.Thread(target=monitor.run, args=(stop,), daemon=True))
            threads.append(threading.Thread(target=loops[name].run, daemon=True))
            if name == "ws-a":
                threads[-2].start()
                threads[-1].start()
                wait_for(lambda: loops["ws-a"].leader is not None, 15, "ws-a to lead")
        threads[-2].start()
        threads[-1].start()
        loops["ws-a"].dcs.set_rebalance(True)
        wait_for(lambda: loops["ws-b"].runner.running() == {"cam-2"}, 15, "ws-b to run cam-2 after the rebalance")
        assert loops["ws-a"].runner.running() == {"cam-1"}

        # ws-b's inference hangs: unhealthy after 3 evaluations, cam-2 moves to ws-a, stopped on ws-b first.
        t0 = time.monotonic()
        answers["ws-b"] = False
        wait_for(lambda: loops["ws-a"].runner.running() == {"cam-1", "cam-2"}, 15, "ws-a to take cam-2")
        member = dcs["ws-a"].get_cluster().members["ws-b"]
        assert (member.healthy, member.reasons) == (False, ("inference: no answer to a probe frame (deadline 2s)",))
        moved = [(node, event, cam) for t, node, event, cam in log if t >= t0]
        assert moved == [("ws-b", "stop", "cam-2"), ("ws-a", "start", "cam-2")]
        assert "cam-2" not in loops["ws-b"].runner.running()

        # The probe answers again: healthy after 5 evaluations, cam-2 goes back to ws-b, stopped on ws-a first.
        t1 = time.monotonic()
        answers["ws-b"] = True
        wait_for(lambda: loops["ws-b"].runner.running() == {"cam-2"}, 15, "cam-2 back on ws-b")
        back = [(node, event, cam) for t, node, event, cam in log if t >= t1]
        assert back == [("ws-a", "stop", "cam-2"), ("ws-b", "start", "cam-2")]
        assert loops["ws-a"].runner.running() == {"cam-1"}
        assert dcs["ws-a"].get_cluster().members["ws-b"].healthy is True
        assert (loops["ws-a"].tick_errors, loops["ws-b"].tick_errors) == (0, 0)
    finally:
        stop.set()
        for loop in loops.values():
            loop.shutdown(release=False)
        for t in threads:
            t.join(timeout=10)
        for d in dcs.values():
            d.close()

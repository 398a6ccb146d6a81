"""Adversarial review of issue 15: an assignment naming a camera this node's config lacks (the two workstations'
configs differ while a camera is being added, or a stale/malformed assignment) makes every HA tick of that node
raise after its lease renewal: the cameras sorted after the unknown one are assigned to it and never started, the
leader sees nothing wrong, and the node stays healthy."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from cluster.camera_runner import RayCameraRunner
from cluster.errors import ConfigError
from tests.unit.test_loop import World


def test_r15_the_real_runner_raises_on_a_camera_missing_from_its_config() -> None:
    fake = SimpleNamespace(config=SimpleNamespace(node="ws-b", cameras=[SimpleNamespace(id="cam-1", fps=10.0)]))
    with pytest.raises(ConfigError, match="camera cam-1a is assigned to node ws-b but not in its config"):
        RayCameraRunner.effective_fps(fake, "cam-1a", 10.0)  # type: ignore[arg-type]


def test_r15_an_unknown_camera_in_the_assignment_keeps_the_nodes_other_cameras_dark() -> None:
    w = World()
    w.loops["ws-a"].cameras = {**w.loops["ws-a"].cameras, "cam-1a": 10.0}  # the leader's config has a new camera
    runner_b = w.runners["ws-b"]
    known = set(w.loops["ws-b"].cameras)
    start = runner_b.start_camera

    def start_like_ray(camera_id: str, fps: float, token: int) -> None:
        if camera_id not in known:  # RayCameraRunner.effective_fps: next(...) over its config raises
            raise ConfigError(f"camera {camera_id} is not in this node's config")
        start(camera_id, fps, token)

    runner_b.start_camera = start_like_ray  # type: ignore[method-assign]
    w.join("ws-b")
    for _ in range(10):  # what HALoop.run does each tick: an exception is counted, the loop goes on
        for n in ("ws-a", "ws-b"):
            try:
                w.loops[n].run_once()
            except Exception:
                w.loops[n].tick_errors += 1
        for _ in range(4):
            w.clock.advance(0.125)
            w.check_fences()
    a = w.store.keys["/edgepair/s1/assignment"].value
    print("assignment:", a)
    print("running:", w.running(), "ws-b tick errors:", w.loops["ws-b"].tick_errors)
    given_b = {c for c, n in __import__("json").loads(a)["cameras"].items() if n == "ws-b"} & known
    assert given_b <= w.running()["ws-b"], f"{given_b - w.running()['ws-b']} assigned to ws-b and run nowhere"

"""When a drill puts its fault in (``cluster.drill._still_before_fault``): only after the placement of the cameras
held still for the whole watch before it. Pure logic: the nodes' /health answers are scripted."""

from __future__ import annotations

from typing import Any

import pytest

from cluster import drill
from cluster.errors import EdgepairError


def health(role: str, cams: list[str]) -> dict[str, Any]:
    st = {"state": "running", "frames": 10, "last_frame_at": 0.0}
    return {"role": role, "healthy": True, "failing": [], "camera_status": {c: dict(st) for c in cams}}


class Target:
    """Each node's health read from a script: one placement per read of the pair (the last one repeats)."""

    def __init__(self, script: list[dict[str, list[str]]]) -> None:
        self.nodes = ["ws-a", "ws-b"]
        self.script = script
        self.reads: dict[str, int] = {"ws-a": 0, "ws-b": 0}

    def health(self, node: str) -> dict[str, Any]:
        k = min(self.reads[node], len(self.script) - 1)
        self.reads[node] += 1
        return health("leader" if node == "ws-a" else "replica", self.script[k][node])


def test_the_fault_waits_for_a_camera_that_moved_during_the_watch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(drill.time, "sleep", lambda s: None)
    both_on_a = {"ws-a": ["cam-1", "cam-2"], "ws-b": []}
    moved = {"ws-a": ["cam-1"], "ws-b": []}  # cam-2 on its way to ws-b, not processing there yet
    spread = {"ws-a": ["cam-1"], "ws-b": ["cam-2"]}
    # reads: _leader (1 read of ws-a), placement, then _ready (2 reads each) and again
    target = Target([both_on_a, moved, spread])
    leader, place = drill._still_before_fault(target, ["cam-1", "cam-2"], {"cam-1": "ws-a", "cam-2": "ws-a"}, 0.0)  # type: ignore[arg-type]
    assert (leader, place) == ("ws-a", {"cam-1": "ws-a", "cam-2": "ws-b"})


def test_a_still_placement_lets_the_fault_in_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(drill.time, "sleep", lambda s: None)
    spread = {"ws-a": ["cam-1"], "ws-b": ["cam-2"]}
    target = Target([spread])
    start = {"cam-1": "ws-a", "cam-2": "ws-b"}
    assert drill._still_before_fault(target, ["cam-1", "cam-2"], start, 0.0) == ("ws-a", start)  # type: ignore[arg-type]


def test_cameras_that_never_settle_end_the_drill_with_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(drill.time, "sleep", lambda s: None)
    # Every watch ends with the cameras elsewhere than where they were when it began.
    monkeypatch.setattr(drill, "_ready", lambda target, cams: {"cam-1": "ws-a"})
    monkeypatch.setattr(drill, "_placement", lambda hs: {"cam-1": "ws-b"})
    target = Target([{"ws-a": ["cam-1"], "ws-b": []}])
    with pytest.raises(EdgepairError, match=r"drill: the cameras kept moving between the nodes \(6 tries of 0 s\)"):
        drill._still_before_fault(target, ["cam-1"], {"cam-1": "ws-a"}, 0.0)  # type: ignore[arg-type]

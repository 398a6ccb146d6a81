"""Fault drills on a real 3-member etcd with two node processes (``failover.testnode``), TTL 2 s.

Each test asserts order and exact facts from the nodes' JSONL events: who ran which camera under which token, that
no camera ever ran on two nodes at once, that the old owner stopped before the new one started. Every wait is
bounded; every process is stopped by its pid.
"""

from __future__ import annotations

import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from failover.drill import CAMS, Pair, double_runs, wait_for
from failover.etcd_cluster import EtcdCluster

TTL = 2

pytestmark = pytest.mark.skipif(shutil.which("etcd") is None, reason="etcd not installed (apt-get install etcd-server)")


def assert_no_double_run(events: list[dict[str, Any]]) -> None:
    assert double_runs(events) == []


def assert_tokens_grow(events: list[dict[str, Any]]) -> None:
    tokens = [e["token"] for e in sorted(events, key=lambda e: e["mono"]) if e["event"] == "leader"]
    assert tokens == sorted(tokens) and len(set(tokens)) == len(tokens)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[EtcdCluster]:
    c = EtcdCluster(tmp_path / "etcd", heartbeat_ms=50, election_ms=500).start()
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
def pair(cluster: EtcdCluster, tmp_path: Path) -> Iterator[Pair]:
    p = Pair(cluster, tmp_path / "events.jsonl", store="drill")
    try:
        p.start("ws-a")
        wait_for(p.leaders, 15, "ws-a to lead")
        p.start("ws-b")
        p.wait_spread()
        yield p
    finally:
        p.stop()


def leader_of(pair: Pair) -> tuple[str, str, int]:
    name, token = pair.leaders()[-1]
    return name, ("ws-b" if name == "ws-a" else "ws-a"), token


def test_leader_sigkill_survivor_takes_every_camera(pair: Pair) -> None:
    old, survivor, token = leader_of(pair)
    pair.signal(old, signal.SIGKILL)
    killed_at = time.monotonic()
    pair.wait_all_on(survivor)
    events = pair.events()
    assert pair.leaders()[-1][0] == survivor and pair.leaders()[-1][1] > token
    assert_tokens_grow(events)
    assert_no_double_run(events)
    new_starts = [e for e in events if e["event"] == "start" and e["node"] == survivor and e["mono"] > killed_at]
    assert {e["camera"] for e in new_starts} == {
        c
        for c in CAMS
        if c
        not in {
            e["camera"] for e in events if e["node"] == survivor and e["event"] == "start" and e["mono"] <= killed_at
        }
    }
    assert all(e["token"] == pair.leaders()[-1][1] for e in new_starts)


def test_leader_sigstop_fences_itself_before_takeover(pair: Pair) -> None:
    old, survivor, token = leader_of(pair)
    before = pair.running()[old]
    pair.signal(old, signal.SIGSTOP)
    stopped_at = time.monotonic()
    pair.wait_all_on(survivor)
    time.sleep(max(0.0, stopped_at + 2 * TTL - time.monotonic()))
    pair.signal(old, signal.SIGCONT)
    cont_at = time.monotonic()
    wait_for(
        lambda: (
            any(e["node"] == old and e["mono"] > cont_at + 1 for e in pair.events()) or time.monotonic() > cont_at + 3
        ),
        10,
        "the old leader to run after SIGCONT",
    )
    time.sleep(1.5)
    events = pair.events()
    for cam in before:
        stop = [e["mono"] for e in events if e["node"] == old and e["event"] == "stop" and e.get("camera") == cam]
        start = [
            e["mono"] for e in events if e["node"] == survivor and e["event"] == "start" and e.get("camera") == cam
        ]
        assert stop and start and min(s for s in stop if s > stopped_at) < max(start), f"{cam}: stop/start order"
    fence = [e for e in events if e["node"] == old and e["event"] == "fence"]
    assert fence and fence[0]["mono"] < cont_at, "the camera process fenced itself while the loop was stopped"
    late_writes = [e for e in events if e["node"] == old and e["event"] == "assignment" and e["mono"] > cont_at]
    assert not [e for e in late_writes if e["ok"] and e["token"] == token], "wrote under the old token after SIGCONT"
    late_starts = [e for e in events if e["node"] == old and e["event"] == "start" and e["mono"] > cont_at]
    assert all(e["token"] != token for e in late_starts)
    assert pair.leaders()[-1][0] == survivor
    assert_no_double_run(events)
    assert_tokens_grow(events)


def test_leaders_own_etcd_member_killed(pair: Pair) -> None:
    old, _survivor, token = leader_of(pair)
    pair.cluster.stop_member(old, signal.SIGKILL)
    time.sleep(2 * TTL)
    run = pair.wait_spread()
    assert run[old], "the leader keeps cameras while its own etcd member is down"
    assert pair.leaders()[-1] == (old, token)
    assert_no_double_run(pair.events())


def test_raft_leader_member_killed(pair: Pair) -> None:
    raft_leader = pair.cluster.leader_name()
    assert raft_leader is not None
    name, _survivor, token = leader_of(pair)
    pair.cluster.stop_member(raft_leader, signal.SIGKILL)
    time.sleep(2 * TTL)
    pair.wait_spread()
    assert pair.leaders()[-1] == (name, token)
    assert_no_double_run(pair.events())


def test_quorum_lost_and_regained(pair: Pair) -> None:
    name, _survivor, token = leader_of(pair)
    before = pair.running()
    lost_at = time.monotonic()
    for member in ("ws-b", "witness"):
        pair.cluster.stop_member(member, signal.SIGKILL)
    time.sleep(2 * TTL)
    assert pair.running() == before, "failsafe: both nodes keep their cameras while no quorum can exist"
    assert not [e for e in pair.events() if e["event"] == "stop" and e["mono"] > lost_at]
    for member in ("ws-b", "witness"):
        pair.cluster.start_member(member)
    pair.cluster.wait_healthy()
    time.sleep(TTL)
    assert pair.running() == before
    assert pair.leaders()[-1] == (name, token)
    out = (pair.log.with_name(f"{name}.out")).read_text()
    assert "no quorum: keeping" in out
    assert_no_double_run(pair.events())

"""Fault drills on a real 3-member etcd with two node processes (``tests.harness.testnode``), TTL 2 s.

The cluster runs as a store runs it: mutual TLS on client and peer URLs and etcd auth (each node process is its
workstation's etcd user, limited to the store's prefix). One test repeats the SIGKILL takeover in plain text, the
explicit opt-out (``EtcdCluster`` without ``cert_dir``).

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

from failover import admin
from failover.etcd_cluster import EtcdCluster
from tests.harness.blackhole import Partition
from tests.harness.pair import CAMS, Pair, double_runs, store_pki, wait_for

TTL = 2

pytestmark = pytest.mark.skipif(shutil.which("etcd") is None, reason="etcd not installed (apt-get install etcd-server)")


def assert_no_double_run(events: list[dict[str, Any]]) -> None:
    assert double_runs(events) == []


def assert_tokens_grow(events: list[dict[str, Any]]) -> None:
    tokens = [e["token"] for e in sorted(events, key=lambda e: e["mono"]) if e["event"] == "leader"]
    assert tokens == sorted(tokens) and len(set(tokens)) == len(tokens)


@pytest.fixture
def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[EtcdCluster]:
    """TLS and auth by default; ``indirect`` parametrization with "plain" gives the plain-text opt-out."""
    plain = getattr(request, "param", "tls") == "plain"
    cert_dir = None if plain else store_pki(tmp_path / "pki", "drill")
    c = EtcdCluster(tmp_path / "etcd", heartbeat_ms=50, election_ms=500, cert_dir=cert_dir).start()
    try:
        assert all(e.startswith("https://") for e in c.endpoints) != plain
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
        p.spread_cameras()
        yield p
    finally:
        p.stop()


def leader_of(pair: Pair) -> tuple[str, str, int]:
    name, token = pair.leaders()[-1]
    return name, ("ws-b" if name == "ws-a" else "ws-a"), token


@pytest.mark.parametrize("cluster", ["tls", "plain"], indirect=True)
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
    out = pair.log.with_name(f"{old}.out")
    offset = out.stat().st_size
    pair.signal(old, signal.SIGCONT)
    cont_at = time.monotonic()
    # Its loop runs again: it finds its lease expired, rejoins and follows the survivor (read from its own log).
    wait_for(
        lambda: f"{old}: following {survivor}: running no camera" in out.read_text()[offset:],
        15,
        f"{old} to follow {survivor} after SIGCONT",
    )
    time.sleep(1.5)  # let it tick a few times more under the new leader: nothing it does then may break a rule below
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


def test_switchover_hands_over_at_once_and_moves_no_camera(pair: Pair) -> None:
    old, other, token = leader_of(pair)
    before = pair.running()
    asked_at = time.monotonic()
    admin.switchover(pair.cluster.endpoints, "drill", to=other, identity=pair.cluster.client_identity())
    wait_for(lambda: pair.leaders()[-1][0] == other, 15, f"{other} to lead after the switchover")
    time.sleep(TTL)  # both nodes tick a few times under the new leader
    events = pair.events()
    out = pair.log.with_name(f"{old}.out").read_text()
    assert f"{old}: released leadership (token {token}) for the switchover" in out
    assert pair.leaders()[-1][1] > token
    assert [e for e in events if e["event"] in ("start", "stop") and e["mono"] > asked_at] == []
    assert pair.running() == before
    assert admin.status(pair.cluster.endpoints, "drill", identity=pair.cluster.client_identity())["switchover"] is None
    assert_tokens_grow(events)
    assert_no_double_run(events)


def test_pause_freezes_reassignment_until_resume(pair: Pair) -> None:
    leader, follower, token = leader_of(pair)
    theirs = pair.running()[follower]
    admin.pause(pair.cluster.endpoints, "drill", identity=pair.cluster.client_identity())
    pair.signal(follower, signal.SIGKILL)
    killed_at = time.monotonic()
    out = pair.log.with_name(f"{leader}.out")
    kept = ", ".join(sorted(pair.running()[leader]))
    wait_for(lambda: f"{leader}: leader, paused: moving no camera, keeping {kept}" in out.read_text(), 15, "pause")
    time.sleep(max(0.0, killed_at + 2 * TTL - time.monotonic()))  # the follower's lease has long expired
    assert [e for e in pair.events() if e["node"] == leader and e["event"] == "start" and e["mono"] > killed_at] == []
    admin.resume(pair.cluster.endpoints, "drill", identity=pair.cluster.client_identity())
    resumed_at = time.monotonic()
    pair.wait_all_on(leader)
    starts = [e for e in pair.events() if e["node"] == leader and e["event"] == "start" and e["mono"] > killed_at]
    assert {e["camera"] for e in starts} == theirs and all(e["mono"] > resumed_at for e in starts)
    assert pair.leaders()[-1] == (leader, token)
    assert_no_double_run(pair.events())


# -- a partition of one node from etcd: a black-hole proxy per node in front of every member's client port -------


@pytest.fixture
def cut_pair(cluster: EtcdCluster, tmp_path: Path) -> Iterator[tuple[Pair, dict[str, Partition]]]:
    parts: dict[str, Partition] = {}
    p: Pair | None = None
    try:
        for name in ("ws-a", "ws-b"):
            own = cluster.endpoint(name)
            parts[name] = Partition([own] + [e for e in cluster.endpoints if e != own], name=name)
        p = Pair(
            cluster, tmp_path / "events.jsonl", store="drill", endpoints={n: q.endpoints for n, q in parts.items()}
        )
        p.start("ws-a")
        wait_for(p.leaders, 15, "ws-a to lead")
        p.start("ws-b")
        p.spread_cameras()
        yield p, parts
    finally:
        if p is not None:
            p.stop()
        for part in parts.values():
            part.close()


def first_after(events: list[dict[str, Any]], node: str, kind: str, camera: str, after: float) -> float:
    found = [
        e["mono"]
        for e in events
        if (e["node"], e["event"], e.get("camera")) == (node, kind, camera) and e["mono"] > after
    ]
    assert found, f"no {kind} of {camera} on {node} after the cut"
    return min(found)


def heal_and_wait_follower(pair: Pair, part: Partition, node: str, leader: str) -> float:
    """Heal ``node``'s partition; wait until its loop says it follows ``leader`` (read from its own log)."""
    out = pair.log.with_name(f"{node}.out")
    offset = out.stat().st_size
    part.heal()
    healed_at = time.monotonic()
    wait_for(
        lambda: f"{node}: following {leader}: running no camera" in out.read_text()[offset:],
        15,
        f"{node} to rejoin as a follower of {leader} after the heal",
    )
    return healed_at


def cut_for_two_ttls(pair: Pair, part: Partition, victim: str, other: str) -> tuple[float, float, list[dict[str, Any]]]:
    """Cut ``victim`` off until ``other`` runs every camera and two TTLs have passed (as a frozen node would stay
    away), heal, wait until it follows again and a TTL more; returns (cut at, healed at, the events)."""
    part.cut()
    cut_at = time.monotonic()
    pair.wait_all_on(other)
    time.sleep(max(0.0, cut_at + 2 * TTL - time.monotonic()))
    healed_at = heal_and_wait_follower(pair, part, victim, other)
    time.sleep(TTL)  # let the rejoined node tick a few times under the leader
    return cut_at, healed_at, pair.events()


def assert_stopped_before_started(
    events: list[dict[str, Any]], cams: set[str], old: str, new: str, since: float
) -> None:
    for cam in cams:
        stopped = first_after(events, old, "stop", cam, since)
        started = first_after(events, new, "start", cam, since)
        assert stopped < started, f"{cam}: {old} stopped it {started - stopped:.2f}s after {new} started it"


def test_partitioned_leader_fences_before_takeover_and_rejoins_as_follower(
    cut_pair: tuple[Pair, dict[str, Partition]],
) -> None:
    pair, parts = cut_pair
    old, survivor, token = leader_of(pair)
    before = pair.running()[old]
    cut_at, healed_at, events = cut_for_two_ttls(pair, parts[old], old, survivor)
    assert_stopped_before_started(events, before, old, survivor, cut_at)
    fences = [e for e in events if e["node"] == old and e["event"] == "fence" and e["mono"] > cut_at]
    assert len(fences) == 1 and fences[0]["mono"] < healed_at and set(fences[0]["cameras"]) == before
    writes = [e for e in events if e["node"] == old and e["event"] == "assignment" and e["mono"] > cut_at and e["ok"]]
    assert writes == [], "the cut-off leader wrote an assignment"
    assert [e for e in events if e["node"] == old and e["event"] == "start" and e["mono"] > cut_at] == []
    new_leader, new_token = pair.leaders()[-1]
    assert new_leader == survivor and new_token > token
    assert pair.running() == {old: set(), survivor: set(CAMS)}
    state = admin.status(pair.cluster.endpoints, "drill", identity=pair.cluster.client_identity())
    assert (state["leader"], state["token"]) == (survivor, new_token)
    assert sorted(state["members"]) == ["ws-a", "ws-b"]
    assert_tokens_grow(events)
    assert_no_double_run(events)


def test_partitioned_follower_fences_and_leader_takes_its_cameras(
    cut_pair: tuple[Pair, dict[str, Partition]],
) -> None:
    pair, parts = cut_pair
    leader, follower, token = leader_of(pair)
    theirs = pair.running()[follower]
    cut_at, _healed_at, events = cut_for_two_ttls(pair, parts[follower], follower, leader)
    assert_stopped_before_started(events, theirs, follower, leader, cut_at)
    assert [e for e in events if e["node"] == leader and e["event"] == "stop" and e["mono"] > cut_at] == []
    assert pair.leaders()[-1] == (leader, token)
    assert pair.running() == {follower: set(), leader: set(CAMS)}
    assert_tokens_grow(events)
    assert_no_double_run(events)

"""Adversarial review of issue 15: the node's peer_wall estimate hides a step of this node's own clock whenever the
peer's member key has not changed since it was last seen (this node cannot read etcd, so last_cluster is stale; or
the peer is frozen). The estimate is computed on this node's own (stepped) wall clock."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import cluster.node as node_mod
from cluster.config import HealthConfig
from failover.dcs import Cluster, Member


def test_r15_peer_wall_hides_our_own_clock_step_when_the_peer_key_is_stale(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    class Prober:
        def __init__(self, inference: Any) -> None:
            self.latencies = None

        def probe(self, deadline: float) -> tuple[float | None, str]:
            return 0.01, ""

    monkeypatch.setattr(node_mod, "InferenceProber", Prober)
    real = time.time
    step = [0.0]
    monkeypatch.setattr(time, "time", lambda: real() + step[0])
    peer_key_wall = real()  # the peer's key as last read (the node reads etcd no more, or the peer froze)
    last_cluster = Cluster({"ws-b": Member("ws-b", wall=peer_key_wall, session=2)}, None, None)
    fake = SimpleNamespace(
        runner=SimpleNamespace(statuses=lambda: {}),
        inference=None,
        replicator=None,
        loop=SimpleNamespace(last_cluster=last_cluster),
        me=SimpleNamespace(name="ws-a"),
        config=SimpleNamespace(
            cluster=SimpleNamespace(nodes=[], health=HealthConfig()),
            storage=SimpleNamespace(data_dir=tmp_path),
        ),
    )
    mon = node_mod.Node._health_monitor(fake)  # type: ignore[arg-type]
    mon.evaluate()
    step[0] = 3600.0  # this node's wall clock jumps an hour
    v = mon.evaluate()
    clock = {p.name: p for p in v.probes}["clock"]
    print("clock probe after a +3600 s step of our own clock:", clock)
    assert not clock.ok, "an hour's step of this node's clock passes the clock probe (and confirms it to the workers)"

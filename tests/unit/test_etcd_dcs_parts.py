"""The parts of the etcd DCS split out of ``EtcdDCS`` (issue 16), without etcd: reading the store's keys into a
cluster (a malformed key read as absent and reported, never raised) and the watch that wakes the loop (armed once,
re-armed after its stream ended, failures kept from the loop). Over a real etcd: test_etcd_security.py."""

from __future__ import annotations

import json
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from pyetcd.events import DeleteEvent, PutEvent

from failover.dcs import Assignment, Member, Switchover
from failover.etcd_keys import cluster_from_kvs
from failover.etcd_watch import KeyWatch

PREFIX = "/edgepair/s1/"


def kv(name: str, value: bytes, create: int = 1, mod: int = 1) -> tuple[bytes, Any]:
    return value, SimpleNamespace(key=(PREFIX + name).encode(), create_revision=create, mod_revision=mod)


def test_every_key_is_read_with_its_revision_and_a_malformed_one_is_reported_and_absent() -> None:
    a = Assignment({"cam-1": "ws-a"}, {"cam-1": 10.0}, 7)
    kvs = [
        kv("members/ws-a", Member("ws-a", capacity=3).to_json().encode(), create=11),
        kv("members/ws-b", b"{not json", mod=12),
        kv("leader", b"ws-a", create=7),
        kv("assignment", a.to_json().encode()),
        kv("switchover", Switchover("ws-b", "ws-a").to_json().encode()),
        kv("pause", b"{}"),
        kv("something-else", b"x"),
    ]
    bad: list[tuple[str, int, str]] = []
    c = cluster_from_kvs(PREFIX, kvs, lambda n, r, e: bad.append((n, r, type(e).__name__)))
    assert list(c.members) == ["ws-a"] and c.members["ws-a"].session == 11
    assert c.leader is not None and (c.leader.name, c.leader.token) == ("ws-a", 7)
    assert c.assignment == a and c.switchover == Switchover("ws-b", "ws-a")
    assert c.paused and not c.rebalance
    assert [(n, r) for n, r, _ in bad] == [("members/ws-b", 12)]


class Client:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.callbacks: dict[int, Callable[[object], None]] = {}
        self.cancelled: list[int] = []

    def add_watch_prefix_callback(self, prefix: str, callback: Callable[[object], None]) -> int:
        if self.fail:
            raise OSError("stream refused")
        self.callbacks[len(self.callbacks) + 1] = callback
        return len(self.callbacks)

    def cancel_watch(self, watch_id: int) -> None:
        self.cancelled.append(watch_id)
        raise OSError("already closed")  # cancelling must never raise out of the watch


def event(cls: type, name: str, value: bytes = b"") -> object:
    raw = SimpleNamespace(kv=SimpleNamespace(key=(PREFIX + name).encode(), value=value))
    return cls(raw)


def test_the_watch_wakes_on_a_change_the_loop_acts_on_and_is_rearmed_after_its_stream_ended() -> None:
    client, woken = Client(), []
    w = KeyWatch(PREFIX, "s1")
    assert w.arm(client, lambda: woken.append(1), "ws-a") and w.arm(client, lambda: woken.append(1), "ws-a")
    assert list(client.callbacks) == [1]  # armed once while alive
    fire = client.callbacks[1]
    fire(SimpleNamespace(events=[event(PutEvent, "members/ws-a", b"{}")]))  # our own key: no wake
    assert woken == []
    member = json.dumps({"name": "ws-b", "healthy": True, "wall": 1.0}).encode()
    fire(SimpleNamespace(events=[event(PutEvent, "members/ws-b", member)]))
    fire(SimpleNamespace(events=[event(DeleteEvent, "leader")]))
    assert woken == [1, 1]
    fire(None)  # the stream ended: woken, marked dead, armed again at the next call
    assert woken == [1, 1, 1] and w.dead
    assert w.arm(client, lambda: None, "ws-a") and client.cancelled == [1] and list(client.callbacks) == [1, 2]
    w.cancel()
    assert w.current is None and client.cancelled == [1, 2]


def test_a_watch_that_cannot_be_armed_says_so_and_raises_nothing() -> None:
    assert not KeyWatch(PREFIX, "s1").arm(Client(fail=True), lambda: None, "ws-a")

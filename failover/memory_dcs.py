"""An in-memory DCS with a fake clock, for unit tests: the same rules as etcd, no process, no sleeping.

``MemoryStore`` plays the etcd cluster (revisions, leases that expire on the fake clock); each node gets its own
``MemoryDCS`` client over the shared store. ``store.reachable = False`` makes every client call raise ``DCSError``
(etcd unreachable), and ``store.probe`` is what ``probe_quorum`` reports; ``lose_quorum``/``regain_quorum`` do both
the way etcd does (a new raft leader extends every lease by its TTL). ``client.cut = True`` cuts one node off: its
calls raise ``DCSError`` and its probe hears from no member, while the other nodes go on.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from cluster.errors import DCSError
from failover.dcs import AbstractDCS, Assignment, Cluster, Leader, Member, QuorumProbe, Switchover

T = TypeVar("T")


class FakeClock:
    """A monotonic clock that moves only when told to (``sleep`` advances it)."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += max(0.0, seconds)

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class _KV:
    value: str
    create_revision: int
    mod_revision: int
    lease: int = 0


class MemoryStore:
    """The shared state: keys with revisions, leases with deadlines on ``clock``."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.revision = 1
        self.keys: dict[str, _KV] = {}
        self.leases: dict[int, float] = {}
        self.lease_ttl: dict[int, float] = {}
        self.next_lease = 100
        self.reachable = True
        self.probe = QuorumProbe(total=3, unknown=("a", "b", "c"))

    def lose_quorum(self, probe: QuorumProbe) -> None:
        """No quorum: every call fails, ``probe`` is what the members say; leases stop expiring (etcd's too)."""
        self.reachable = False
        self.probe = probe

    def regain_quorum(self) -> None:
        """A quorum again: like etcd's new raft leader, extend every lease to a full TTL from now."""
        now = self.clock.monotonic()
        for lease_id, deadline in self.leases.items():
            self.leases[lease_id] = max(deadline, now + self.lease_ttl.get(lease_id, 0.0))
        self.reachable = True
        self.probe = QuorumProbe(total=3, with_leader=("a", "b", "c"))

    def check(self) -> None:
        if not self.reachable:
            raise DCSError("etcd unreachable (simulated)")
        now = self.clock.monotonic()
        for lease_id, deadline in list(self.leases.items()):
            if deadline <= now:
                del self.leases[lease_id]
                self.lease_ttl.pop(lease_id, None)
                for key in [k for k, kv in self.keys.items() if kv.lease == lease_id]:
                    del self.keys[key]
                    self.revision += 1

    def put(self, key: str, value: str, lease: int = 0) -> None:
        self.revision += 1
        old = self.keys.get(key)
        create = old.create_revision if old else self.revision
        self.keys[key] = _KV(value, create, self.revision, lease)

    def delete(self, key: str) -> bool:
        if key in self.keys:
            del self.keys[key]
            self.revision += 1
            return True
        return False


class MemoryDCS(AbstractDCS):
    """One node's client over a ``MemoryStore``."""

    def __init__(self, store: MemoryStore, store_id: str, ttl: float) -> None:
        super().__init__(store_id, ttl)
        self.store = store
        self.lease_id = 0
        self.cut = False
        self.malformed_keys = 0  # keys that could not be parsed (read as absent)

    def _check(self) -> None:
        if self.cut:
            raise DCSError("etcd unreachable from this node (simulated cut)")
        self.store.check()

    def _lease(self) -> int:
        if self.lease_id not in self.store.leases:
            self.store.next_lease += 1
            self.lease_id = self.store.next_lease
            self.store.leases[self.lease_id] = self.store.clock.monotonic() + self.ttl
            self.store.lease_ttl[self.lease_id] = self.ttl
        return self.lease_id

    def get_cluster(self) -> Cluster:
        """As the etcd DCS: a malformed key is counted in ``malformed_keys`` and read as absent, never raised."""
        self._check()
        keys = self.store.keys
        members: dict[str, Member] = {}
        for kv_key, kv in keys.items():
            if kv_key.startswith(self.key("members", "")):
                member = self._parse(
                    functools.partial(
                        Member.from_json,
                        kv.value,
                        session=kv.create_revision,
                        key_name=kv_key[len(self.key("members", "")) :],
                    )
                )
                if member is not None:
                    members[member.name] = member
        lk = keys.get(self.key("leader"))
        ak = keys.get(self.key("assignment"))
        sk = keys.get(self.key("switchover"))
        return Cluster(
            members=members,
            leader=Leader(lk.value, lk.create_revision) if lk else None,
            assignment=self._parse(lambda: Assignment.from_json(ak.value)) if ak else None,
            paused=self.key("pause") in keys,
            switchover=self._parse(lambda: Switchover.from_json(sk.value)) if sk else None,
            rebalance=self.key("rebalance") in keys,
        )

    def _parse(self, read: Callable[[], T]) -> T | None:
        try:
            return read()
        except Exception:
            self.malformed_keys += 1
            return None

    def renew(self) -> bool:
        self._check()
        if self.lease_id in self.store.leases:
            self.store.leases[self.lease_id] = self.store.clock.monotonic() + self.ttl
            return True
        self._lease()
        return False

    def touch_member(self, member: Member) -> int:
        self._check()
        key = self.key("members", member.name)
        lease = self._lease()
        old = self.store.keys.get(key)
        if old is not None and old.lease != lease:
            self.store.delete(key)  # a member key of an older session: a new session gets a new create revision
        self.store.put(key, member.to_json(), lease)
        return self.store.keys[key].create_revision

    def attempt_to_acquire_leader(self, name: str) -> Leader | None:
        self._check()
        key = self.key("leader")
        lease = self._lease()
        kv = self.store.keys.get(key)
        if kv is None:
            self.store.put(key, name, lease)
            return Leader(name, self.store.keys[key].create_revision)
        if kv.value == name:
            kv.lease = lease
            return Leader(name, kv.create_revision)
        return None

    def write_assignment(self, assignment: Assignment) -> bool:
        self._check()
        kv = self.store.keys.get(self.key("leader"))
        if kv is None or kv.create_revision != assignment.token:
            return False
        self.store.put(self.key("assignment"), assignment.to_json())
        return True

    def release_leader(self, leader: Leader) -> bool:
        self._check()
        kv = self.store.keys.get(self.key("leader"))
        if kv is None or kv.create_revision != leader.token:
            return False
        return self.store.delete(self.key("leader"))

    def set_paused(self, paused: bool) -> None:
        self._check()
        if paused:
            self.store.put(self.key("pause"), "{}")
        else:
            self.store.delete(self.key("pause"))

    def request_switchover(self, candidate: str | None = None, leader: str | None = None) -> None:
        self._check()
        self.store.put(self.key("switchover"), Switchover(candidate, leader).to_json())

    def clear_switchover(self) -> None:
        self._check()
        self.store.delete(self.key("switchover"))

    def set_rebalance(self, wanted: bool) -> None:
        self._check()
        if wanted:
            self.store.put(self.key("rebalance"), "{}")
        else:
            self.store.delete(self.key("rebalance"))

    def probe_quorum(self) -> QuorumProbe:
        if self.cut:
            return QuorumProbe(total=self.store.probe.total, unknown=("a", "b", "c")[: self.store.probe.total])
        return self.store.probe

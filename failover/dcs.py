"""The DCS (distributed configuration store) interface, its value types and its key layout.

Key layout, under ``/edgepair/<store>/``::

    members/<node>   lease-bound: one per live node (health, capacity, cameras it runs); gone when the node is gone
    leader           lease-bound: the leader's name; its create revision is the fencing token
    assignment       camera -> node, camera -> fps, the token it was written under, the member sessions it saw
    pause            present while reassignment is frozen (``edgepair pair pause``)
    switchover       present while a switchover is asked for (optionally naming the candidate)
    rebalance        present while an even re-spread of the cameras over the live members is asked for

Rules every implementation keeps (Patroni's ``AbstractDCS`` is the model):

- every client failure raises ``DCSError`` (``raise DCSError(...) from exc``); no library exception escapes;
- each node holds one session lease of ``ttl`` seconds; its member key and (when leading) the leader key are bound
  to it, so both vanish together when the node stops renewing;
- the leader key is created atomically if absent; the create revision of that key is the fencing token, so a
  token only ever grows and two leaderships never share one;
- the assignment is written only in a transaction that checks that the leader key still has the writer's token;
  a deposed leader's write fails instead of overwriting its successor's;
- a member's ``session`` is the create revision of its member key: a node that lost its lease and came back has a
  new session, and an assignment made for its old session does not apply to it;
- reads return one consistent ``Cluster`` (one revision).
"""

from __future__ import annotations

import json
import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cluster.errors import DCSError

ROOT = "/edgepair"


@dataclass(frozen=True)
class Member:
    """One live node as it registered itself. ``session`` is filled in by the DCS on reads (0 when writing)."""

    name: str
    healthy: bool = True
    capacity: int = 1
    running: tuple[str, ...] = ()
    session: int = 0
    mode: str = "normal"
    reasons: tuple[str, ...] = ()  # why the node is unhealthy (or what it reports without counting), one per probe
    failing: tuple[str, ...] = ()  # cameras failing at their source from this node (not the node's fault)
    wall: float = 0.0  # the node's wall clock when it wrote the key (UTC epoch s; 0: not said)

    def to_json(self) -> str:
        return json.dumps(
            {
                "name": self.name,
                "healthy": self.healthy,
                "capacity": self.capacity,
                "running": sorted(self.running),
                "mode": self.mode,
                "reasons": list(self.reasons),
                "failing": sorted(self.failing),
                "wall": self.wall,
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, raw: str | bytes, session: int = 0, key_name: str | None = None) -> Member:
        """Parse a member key; DCSError for one of the wrong shape (a string for a list, "false" for false, a
        capacity below 1, a name other than its key's ``key_name``): read as absent, never coerced."""
        data = _load(raw, "member")
        name = data["name"]
        if not isinstance(name, str) or (key_name is not None and name != key_name):
            raise DCSError(f"the member key {key_name} names {name!r}: a key names its own node")
        healthy = data.get("healthy", True)
        capacity = data.get("capacity", 1)
        if not isinstance(healthy, bool):
            raise DCSError(f"member {name}: healthy must be true or false, got {healthy!r}")
        if isinstance(capacity, bool) or not isinstance(capacity, int) or not 1 <= capacity <= 1000:
            raise DCSError(f"member {name}: capacity must be a whole number 1..1000, got {capacity!r}")
        wall = data.get("wall", 0.0)
        if isinstance(wall, bool) or not isinstance(wall, int | float) or not math.isfinite(wall):
            raise DCSError(f"member {name}: wall must be a finite number, got {wall!r}")
        return cls(
            name=name,
            healthy=healthy,
            capacity=capacity,
            running=_names(data.get("running", ()), f"member {name}: running"),
            session=session,
            mode=str(data.get("mode", "normal")),
            reasons=tuple(str(r) for r in _list(data.get("reasons", ()), f"member {name}: reasons")),
            failing=_names(data.get("failing", ()), f"member {name}: failing"),
            wall=float(wall),
        )


@dataclass(frozen=True)
class Leader:
    """The holder of the leader key and its fencing token (the key's create revision)."""

    name: str
    token: int


@dataclass(frozen=True)
class Assignment:
    """Which node runs which camera, at which frame rate, decided by the leader holding ``token``.

    ``cameras[c] is None`` while ``c`` is being moved: ``moving[c]`` names the node it is leaving, and the leader
    gives it to another node only once that node no longer reports running it (or is gone). ``sessions`` holds the
    session of every node the assignment gives cameras to. ``displaced[c]`` names the node ``c`` was moved off
    because that node was unhealthy: ``c`` goes back there, balanced, once it is healthy again.
    """

    cameras: dict[str, str | None]
    fps: dict[str, float]
    token: int
    sessions: dict[str, int] = field(default_factory=dict)
    moving: dict[str, str] = field(default_factory=dict)
    displaced: dict[str, str] = field(default_factory=dict)

    def cameras_of(self, node: str) -> list[str]:
        return sorted(c for c, n in self.cameras.items() if n == node)

    def same_plan(self, other: Assignment | None) -> bool:
        """True if ``other`` assigns the same cameras, rates, sessions and moves (token aside)."""
        return (
            other is not None
            and self.cameras == other.cameras
            and self.fps == other.fps
            and self.sessions == other.sessions
            and self.moving == other.moving
            and self.displaced == other.displaced
        )

    def to_json(self) -> str:
        return json.dumps(
            {
                "cameras": self.cameras,
                "fps": self.fps,
                "token": self.token,
                "sessions": self.sessions,
                "moving": self.moving,
                "displaced": self.displaced,
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, raw: str | bytes) -> Assignment:
        data = _load(raw, "assignment")
        fps = {str(k): v for k, v in data.get("fps", {}).items()}
        for cam, v in fps.items():
            if isinstance(v, bool) or not isinstance(v, int | float) or not (math.isfinite(v) and v > 0):
                raise DCSError(f"assignment: fps of {cam} must be a positive number, got {v!r}")
        return cls(
            cameras={str(k): (None if v is None else str(v)) for k, v in data["cameras"].items()},
            fps={k: float(v) for k, v in fps.items()},
            token=int(data["token"]),
            sessions={str(k): int(v) for k, v in data.get("sessions", {}).items()},
            moving={str(k): str(v) for k, v in data.get("moving", {}).items()},
            displaced={str(k): str(v) for k, v in data.get("displaced", {}).items()},
        )


@dataclass(frozen=True)
class Switchover:
    """A request to hand leadership over from ``leader``; ``candidate`` None means any other healthy member."""

    candidate: str | None = None
    leader: str | None = None

    def to_json(self) -> str:
        return json.dumps({"candidate": self.candidate, "leader": self.leader})

    @classmethod
    def from_json(cls, raw: str | bytes) -> Switchover:
        data = _load(raw, "switchover")
        cand, lead = data.get("candidate"), data.get("leader")
        return cls(candidate=None if cand is None else str(cand), leader=None if lead is None else str(lead))


@dataclass(frozen=True)
class Cluster:
    """One consistent read of the store's keys."""

    members: dict[str, Member]
    leader: Leader | None
    assignment: Assignment | None
    paused: bool = False
    switchover: Switchover | None = None
    rebalance: bool = False


@dataclass(frozen=True)
class QuorumProbe:
    """What each etcd member said when asked directly, used to tell "no quorum anywhere" from "I am cut off".

    ``no_leader``: answered and reports no raft leader; ``down``: refused the connection (no process listens);
    ``with_leader``: answered and reports a leader; ``unknown``: did not answer in time (could be anything).
    """

    total: int
    no_leader: tuple[str, ...] = ()
    down: tuple[str, ...] = ()
    with_leader: tuple[str, ...] = ()
    unknown: tuple[str, ...] = ()

    @property
    def quorum_impossible(self) -> bool:
        """True only when so many members are confirmed out of any quorum that no majority can exist."""
        majority = self.total // 2 + 1
        excluded = len(self.no_leader) + len(self.down)
        return self.total > 0 and self.total - excluded < majority

    def describe(self) -> str:
        parts = [
            f"{len(names)} {label}"
            for names, label in (
                (self.no_leader, "without raft leader"),
                (self.down, "down"),
                (self.with_leader, "with raft leader"),
                (self.unknown, "not answering"),
            )
            if names
        ]
        return f"etcd members: {', '.join(parts) or 'none probed'} of {self.total}"


class AbstractDCS(ABC):
    """The store's view of the cluster for one node. See the module docstring for the rules."""

    def __init__(self, store_id: str, ttl: float) -> None:
        if not store_id or "/" in store_id:
            raise DCSError(f"store id must be a non-empty name without '/', got {store_id!r}")
        if ttl <= 0:
            raise DCSError(f"ttl must be positive, got {ttl!r}")
        self.store_id = store_id
        self.ttl = ttl
        self.prefix = f"{ROOT}/{store_id}/"

    def key(self, *parts: str) -> str:
        return self.prefix + "/".join(parts)

    @abstractmethod
    def get_cluster(self) -> Cluster:
        """Read every key of the store at one revision."""

    @abstractmethod
    def renew(self) -> bool:
        """Keep our session lease alive.

        Returns True if the lease existed and was extended; False if it had expired (or never existed), in which
        case a fresh lease is granted and everything bound to the old one (member key, leader key) is gone.
        """

    @abstractmethod
    def touch_member(self, member: Member) -> int:
        """Write our member key bound to the session lease; returns our session (the key's create revision)."""

    @abstractmethod
    def attempt_to_acquire_leader(self, name: str) -> Leader | None:
        """Create the leader key atomically if absent, bound to our lease. Returns the Leader or None if taken.

        If the key already holds ``name`` under our own lease, that leadership is returned unchanged (a retried
        request whose first attempt succeeded). If it holds ``name`` under another lease (this node restarted),
        the key is re-bound to our lease in a transaction that checks the old create revision; the token is kept.
        """

    @abstractmethod
    def write_assignment(self, assignment: Assignment) -> bool:
        """Write the assignment iff the leader key's create revision equals ``assignment.token``."""

    @abstractmethod
    def release_leader(self, leader: Leader) -> bool:
        """Delete the leader key iff it still has ``leader.token`` (at once, without waiting for the TTL)."""

    @abstractmethod
    def set_paused(self, paused: bool) -> None:
        """Create or delete the pause key."""

    @abstractmethod
    def request_switchover(self, candidate: str | None = None, leader: str | None = None) -> None:
        """Write the switchover key (from ``leader``, to ``candidate``); the leader releases when it sees it."""

    @abstractmethod
    def clear_switchover(self) -> None:
        """Delete the switchover key."""

    @abstractmethod
    def set_rebalance(self, wanted: bool) -> None:
        """Create or delete the rebalance key."""

    @abstractmethod
    def probe_quorum(self) -> QuorumProbe:
        """Ask every etcd member directly whether it has a raft leader. Never raises."""

    def watch_changes(self, on_change: Callable[[], None], me: str) -> bool:
        """Optional: call ``on_change()`` (from another thread) when a key of the store changes in a way the HA loop
        of node ``me`` acts on (:class:`ChangeFilter`: the leader key, the assignment, an operator's flag, another
        member's health or cameras), so that it reacts before its next tick. Returns True while such a watch is
        armed; never raises. The default has no watch (the loop polls every tick); a watch only ever makes a tick
        come sooner, it never replaces one."""
        return False

    def close(self) -> None:
        """Release client resources (not the lease: a closing node lets its keys expire or revokes explicitly)."""
        return None


def _list(value: object, what: str) -> list[Any]:
    if not isinstance(value, list | tuple):
        raise DCSError(f"{what} must be a list, got {value!r:.80}")
    return list(value)


def _names(value: object, what: str) -> tuple[str, ...]:
    items = _list(value, what)
    if not all(isinstance(x, str) for x in items):
        raise DCSError(f"{what} must be a list of names, got {value!r:.80}")
    return tuple(items)


def _load(raw: str | bytes, what: str) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except (ValueError, TypeError) as exc:
        raise DCSError(f"the {what} key holds invalid JSON: {raw[:80]!r}") from exc
    if not isinstance(data, dict):
        raise DCSError(f"the {what} key must hold a JSON object, got {type(data).__name__}")
    return data


class ChangeFilter:
    """Which changes of the store's keys wake node ``me``'s HA loop before its next tick.

    A key wakes it when its value differs from the one last seen through the watch (or it was deleted, or first
    seen), except this node's own member key, and except a member key whose only change is its ``wall`` clock field,
    which every member rewrites each tick: waking on those would make the two nodes tick each other in a loop. So a
    peer that turns unhealthy, stops or starts a camera, or whose key expires, wakes this node at once; a leader
    that writes an assignment wakes its followers; a follower that stopped a moved camera wakes the node about to
    start it.
    """

    def __init__(self, me: str) -> None:
        self.own = f"members/{me}"
        self.seen: dict[str, bytes | None] = {}

    def wakes(self, name: str, value: bytes | None) -> bool:
        """``name``: the key below the store prefix; ``value``: its new value, None when it was deleted."""
        if name == self.own:
            return False
        if value is not None and name.startswith("members/"):
            value = _without_wall(value)
        if name in self.seen and self.seen[name] == value:
            return False
        self.seen[name] = value
        return True


def _without_wall(raw: bytes) -> bytes:
    try:
        data = json.loads(raw)
    except ValueError:
        return raw  # malformed: its every change wakes (get_cluster reports it)
    if isinstance(data, dict):
        data.pop("wall", None)
    return json.dumps(data, sort_keys=True).encode()

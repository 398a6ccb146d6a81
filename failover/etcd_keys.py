"""The store's keys as etcd holds them, read into a :class:`failover.dcs.Cluster` (:mod:`failover.etcd_dcs`).

Below the store prefix: ``members/<name>`` (the member's session is the key's create revision), ``leader`` (the
fencing token is its create revision), ``assignment``, ``switchover``, and the flags ``pause`` and ``rebalance``
(present or not). Any other key is ignored. A key that cannot be parsed is handed to ``malformed`` (its name, its
mod revision, the error) and read as absent: never fatal to the HA loop.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from failover.dcs import Assignment, Cluster, Leader, Member, Switchover


def cluster_from_kvs(
    prefix: str, kvs: Iterable[tuple[bytes, Any]], malformed: Callable[[str, int, BaseException], None]
) -> Cluster:
    """The cluster the ``(value, meta)`` pairs of a prefix read describe (``meta``: pyetcd's KV metadata)."""
    members: dict[str, Member] = {}
    leader = assignment = switchover = None
    paused = rebalance = False
    for value, meta in kvs:
        name = meta.key.decode(errors="replace")[len(prefix) :]
        try:
            if name.startswith("members/"):
                member = Member.from_json(value, session=meta.create_revision, key_name=name[len("members/") :])
                members[member.name] = member
            elif name == "leader":
                leader = Leader(value.decode(), meta.create_revision)
            elif name == "assignment":
                assignment = Assignment.from_json(value)
            elif name == "pause":
                paused = True
            elif name == "switchover":
                switchover = Switchover.from_json(value)
            elif name == "rebalance":
                rebalance = True
        except Exception as exc:  # a malformed key is reported and ignored, never fatal to the HA loop
            malformed(name, meta.mod_revision, exc)
    return Cluster(members, leader, assignment, paused, switchover, rebalance)

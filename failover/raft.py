"""Where etcd's raft leader sits, and moving it to the member we prefer (the store's witness).

Why: when the etcd member that is raft leader dies, the new raft leader extends every lease by a full TTL plus the
election timeout (measured with etcd 3.4.23), so a workstation that dies together with the raft leader's member is
taken over in about TTL x 2 instead of TTL. A store runs etcd on both workstations and on a small witness device:
with the raft leader on the witness, the death of a workstation (its agent, its Ray and its etcd member) never costs
an etcd election. The node agent that leads keeps it there (:func:`keep_raft_leader_on`); when the witness itself
dies, etcd elects another leader by itself and the agent moves leadership back once the witness is healthy again.

TLS and auth: both RPCs go over mutual TLS with the agent's own identity (its workstation certificate). Measured on
etcd 3.4.23 with ``--client-cert-auth`` and auth enabled (tests/integration/test_etcd_security.py): ``Status`` and
``MoveLeader`` are not subject to etcd's RBAC; any client holding a certificate of the store CA may call them, while
``Hash``/``Defragment``/auth changes need root. So the agent needs no admin (``root``) key on a workstation for this,
and none is put there: a root key on a workstation would let a compromised workstation turn auth off. If an etcd
release refuses ``MoveLeader`` to a node user, the call reports it in one sentence ("needs etcd's root user") and
leadership stays where it is (the cost is only a slower takeover when the raft leader's workstation dies); a caller
that holds the admin identity may pass it as ``admin`` for that one call.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cluster.pki import Identity

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MemberStatus:
    endpoint: str
    member_id: int
    leader_id: int


def _target(endpoint: str) -> str:
    return endpoint.split("://", 1)[-1].rstrip("/")


def member_status(endpoint: str, timeout: float = 0.5, identity: Identity | None = None) -> MemberStatus | None:
    """The member's id and the raft leader it knows, from its Status RPC; None when it does not answer (or refuses
    our TLS handshake)."""
    import grpc

    from failover.etcd_tls import member_status as status

    try:
        st = status(endpoint, identity, timeout)
        return MemberStatus(endpoint, int(st.header.member_id), int(st.leader))
    except grpc.RpcError:
        return None


def keep_raft_leader_on(
    endpoints: list[str],
    preferred: str,
    timeout: float = 2.0,
    *,
    identity: Identity | None = None,
    admin: Identity | None = None,
) -> str:
    """Move etcd's raft leadership to ``preferred`` (one of ``endpoints``) if it is healthy and not leader yet.

    ``identity``: the caller's certificate (TLS on); ``admin``: used for ``MoveLeader`` only, when given (see the
    module docstring). Returns a one-line account of what it found or did (logged by the caller when it changes).
    Never raises on an unreachable member: the cluster keeps working with its current leader.
    """
    import grpc
    from pyetcd import etcdrpc

    from failover.etcd_tls import describe, explain, open_channel

    statuses = [s for s in (member_status(e, identity=identity) for e in endpoints) if s is not None]
    mine = next((s for s in statuses if _target(s.endpoint) == _target(preferred)), None)
    if mine is None:
        return f"raft leader: preferred member {preferred} does not answer; leaving leadership where it is"
    leader = next((s for s in statuses if s.member_id == s.leader_id and s.leader_id), None)
    if leader is None:
        return "raft leader: none elected right now"
    if leader.member_id == mine.member_id:
        return f"raft leader: on the preferred member {preferred}"
    mover = admin or identity
    channel = open_channel(leader.endpoint, mover)
    try:  # MoveLeader must be sent to the current leader
        etcdrpc.MaintenanceStub(channel).MoveLeader(etcdrpc.MoveLeaderRequest(targetID=mine.member_id), timeout)
    except grpc.RpcError as exc:
        if "permission denied" in (exc.details() or "").lower():
            who = mover.name if mover is not None else "this client"
            return (
                f"raft leader: etcd at {leader.endpoint} refused MoveLeader to {who} ({describe(exc)}): this etcd"
                f" needs etcd's root user for it; leaving leadership on {leader.endpoint}"
            )
        why = explain(exc, leader.endpoint, mover) or describe(exc)
        return f"raft leader: moving it from {leader.endpoint} to {preferred} failed: {why}"
    finally:
        channel.close()
    log.info("raft leader moved from %s to the preferred member %s", leader.endpoint, preferred)
    return f"raft leader: moved from {leader.endpoint} to {preferred}"

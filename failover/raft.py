"""Where etcd's raft leader sits, and moving it to the member we prefer (the store's witness).

Why: when the etcd member that is raft leader dies, the new raft leader extends every lease by a full TTL plus the
election timeout (measured with etcd 3.4.23), so a workstation that dies together with the raft leader's member is
taken over in about TTL x 2 instead of TTL. A store runs etcd on both workstations and on a small witness device:
with the raft leader on the witness, the death of a workstation (its agent, its Ray and its etcd member) never costs
an etcd election. The node agent that leads keeps it there (:func:`keep_raft_leader_on`); when the witness itself
dies, etcd elects another leader by itself and the agent moves leadership back once the witness is healthy again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MemberStatus:
    endpoint: str
    member_id: int
    leader_id: int


def _target(endpoint: str) -> str:
    return endpoint.split("://", 1)[-1].rstrip("/")


def member_status(endpoint: str, timeout: float = 0.5) -> MemberStatus | None:
    """The member's id and the raft leader it knows, from its Status RPC; None when it does not answer."""
    import grpc
    from pyetcd import etcdrpc

    channel = grpc.insecure_channel(_target(endpoint))
    try:
        st = etcdrpc.MaintenanceStub(channel).Status(etcdrpc.StatusRequest(), timeout)
        return MemberStatus(endpoint, int(st.header.member_id), int(st.leader))
    except grpc.RpcError:
        return None
    finally:
        channel.close()


def keep_raft_leader_on(endpoints: list[str], preferred: str, timeout: float = 2.0) -> str:
    """Move etcd's raft leadership to ``preferred`` (one of ``endpoints``) if it is healthy and not leader yet.

    Returns a one-line account of what it found or did (logged by the caller when it changes). Never raises on an
    unreachable member: the cluster keeps working with its current leader.
    """
    import grpc
    from pyetcd import etcdrpc

    statuses = [s for s in (member_status(e) for e in endpoints) if s is not None]
    mine = next((s for s in statuses if _target(s.endpoint) == _target(preferred)), None)
    if mine is None:
        return f"raft leader: preferred member {preferred} does not answer; leaving leadership where it is"
    leader = next((s for s in statuses if s.member_id == s.leader_id and s.leader_id), None)
    if leader is None:
        return "raft leader: none elected right now"
    if leader.member_id == mine.member_id:
        return f"raft leader: on the preferred member {preferred}"
    channel = grpc.insecure_channel(_target(leader.endpoint))
    try:  # MoveLeader must be sent to the current leader
        etcdrpc.MaintenanceStub(channel).MoveLeader(etcdrpc.MoveLeaderRequest(targetID=mine.member_id), timeout)
    except grpc.RpcError as exc:
        return f"raft leader: moving it from {leader.endpoint} to {preferred} failed: {exc.code().name}"
    finally:
        channel.close()
    log.info("raft leader moved from %s to the preferred member %s", leader.endpoint, preferred)
    return f"raft leader: moved from {leader.endpoint} to {preferred}"

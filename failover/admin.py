"""Operator functions behind the CLI: status, switchover, pause, resume, rebalance, and a text formatter.

Each opens a short-lived ``EtcdDCS`` (no lease: an operator is not a member) and raises ``DCSError`` on failure.
With TLS on, each takes the ``identity`` to present (``cluster.pki.Identity``): the admin ``root`` certificate, or a
workstation's own, which etcd auth lets read and write the store's prefix (``failover.etcd_auth``); the witness's
certificate is refused.
``status`` never raises for an unreachable etcd: it reports ``mode: no-quorum`` (a majority of members confirmed
out of any quorum: nodes keep their cameras, nothing is reassigned) or ``mode: unreachable`` instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from cluster.errors import DCSError
from failover.etcd_dcs import EtcdDCS

if TYPE_CHECKING:
    from cluster.pki import Identity


def _dcs(endpoints: Sequence[str], store_id: str, identity: Identity | None) -> EtcdDCS:
    return EtcdDCS(list(endpoints), store_id, ttl=2.0, timeout=1.0, identity=identity)


def status(endpoints: Sequence[str], store_id: str, *, identity: Identity | None = None) -> dict[str, Any]:
    """Leader, token, members, assignment, switchover/pause flags and the cluster mode, as plain data."""
    dcs = _dcs(endpoints, store_id, identity)
    try:
        try:
            cluster = dcs.get_cluster()
        except DCSError as exc:
            probe = dcs.probe_quorum()
            return {
                "store": store_id,
                "mode": "no-quorum" if probe.quorum_impossible else "unreachable",
                "error": str(exc),
                "etcd": probe.describe(),
            }
        a = cluster.assignment
        return {
            "store": store_id,
            "mode": "paused" if cluster.paused else "normal",
            "leader": cluster.leader.name if cluster.leader else None,
            "token": cluster.leader.token if cluster.leader else None,
            "members": {
                m.name: {
                    "healthy": m.healthy,
                    "capacity": m.capacity,
                    "running": list(m.running),
                    "session": m.session,
                    "mode": m.mode,
                }
                for m in cluster.members.values()
            },
            "assignment": None
            if a is None
            else {
                "token": a.token,
                "valid": cluster.leader is not None and a.token == cluster.leader.token,
                "cameras": a.cameras,
                "fps": a.fps,
                "moving": a.moving,
            },
            "switchover": None if cluster.switchover is None else cluster.switchover.candidate or "any",
            "rebalance": cluster.rebalance,
        }
    finally:
        dcs.close()


def switchover(
    endpoints: Sequence[str], store_id: str, to: str | None = None, *, identity: Identity | None = None
) -> None:
    """Ask the leader to hand over (to ``to``, or any healthy member); it deletes its key at its next tick."""
    dcs = _dcs(endpoints, store_id, identity)
    try:
        cluster = dcs.get_cluster()
        if cluster.leader is None:
            raise DCSError(f"store {store_id} has no leader to switch over from")
        if to is not None and to not in cluster.members:
            raise DCSError(f"switchover candidate {to} is not a live member (members: {', '.join(cluster.members)})")
        if to == cluster.leader.name:
            raise DCSError(f"{to} is already the leader")
        dcs.request_switchover(to, leader=cluster.leader.name)
    finally:
        dcs.close()


def pause(endpoints: Sequence[str], store_id: str, *, identity: Identity | None = None) -> None:
    """Freeze reassignment: no camera moves until ``resume``."""
    _flag(endpoints, store_id, "pause", True, identity)


def resume(endpoints: Sequence[str], store_id: str, *, identity: Identity | None = None) -> None:
    _flag(endpoints, store_id, "pause", False, identity)


def rebalance(endpoints: Sequence[str], store_id: str, *, identity: Identity | None = None) -> None:
    """Ask the leader for an even re-spread of the cameras over the live members (moves are two-step)."""
    _flag(endpoints, store_id, "rebalance", True, identity)


def _flag(endpoints: Sequence[str], store_id: str, name: str, on: bool, identity: Identity | None) -> None:
    dcs = _dcs(endpoints, store_id, identity)
    try:
        if name == "pause":
            dcs.set_paused(on)
        else:
            dcs.set_rebalance(on)
    finally:
        dcs.close()


def format_status(st: dict[str, Any]) -> str:
    """Human text for ``status``."""
    lines = [f"store {st['store']}: mode {st['mode']}"]
    if "error" in st:
        lines.append(f"  etcd: {st['etcd']}")
        if st["mode"] == "no-quorum":
            lines.append("  nodes keep the cameras they run; no camera is reassigned until etcd has a quorum again")
        else:
            lines.append(f"  {st['error']}")
        return "\n".join(lines)
    lines.append(f"  leader: {st['leader'] or '-'} (token {st['token'] if st['token'] is not None else '-'})")
    for name, m in sorted(st["members"].items()):
        health = "healthy" if m["healthy"] else "UNHEALTHY"
        lines.append(
            f"  member {name}: {health}, capacity {m['capacity']}, mode {m['mode']}, "
            f"running {', '.join(m['running']) or 'nothing'}"
        )
    a = st["assignment"]
    if a is None:
        lines.append("  assignment: none")
    else:
        lines.append(f"  assignment (token {a['token']}{'' if a['valid'] else ', STALE'}):")
        for cam in sorted(a["cameras"]):
            node = a["cameras"][cam] or f"moving from {a['moving'].get(cam, '?')}"
            fps = a["fps"].get(cam)
            lines.append(f"    {cam} -> {node}" + (f" at {fps:g} fps" if fps is not None else ""))
    if st["switchover"]:
        lines.append(f"  switchover requested to {st['switchover']}")
    if st["rebalance"]:
        lines.append("  rebalance requested")
    return "\n".join(lines)

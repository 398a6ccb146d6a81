"""etcd auth for a store: who may touch which keys, bootstrapped idempotently over the gRPC Auth API.

What it sets up (etcd 3.4 with ``--client-cert-auth`` takes a client certificate's common name as the user name
once auth is enabled, so every user is made without a password, as ``etcdctl user add --no-password`` does: a
password login as any of them is refused):

- user ``root`` with role ``root`` (the admin certificate ``root.crt``): everything, including auth itself;
- role ``edgepair-node-<store>``: read and write on the store's prefix ``/edgepair/<store>/`` and nothing else;
- one user per workstation (``ws-a``, ``ws-b``: their certificates' CN) with that role;
- auth enabled. No other user exists, so the witness's certificate (a valid TLS client of the store CA, as the
  witness's own member needs) reads and writes nothing: etcd refuses it every key, ``leader``, ``assignment`` and
  ``pause`` included.

Measured on etcd 3.4.23 (tests/integration/test_etcd_security.py): with auth on, a workstation's user can grant and
keep its lease, run the leader and assignment transactions, watch the leader key and call the maintenance
``Status`` (used by the quorum probe) and ``MoveLeader`` (``failover.raft.keep_raft_leader_on``): etcd 3.4 does not
subject those two, nor ``MemberList`` and ``LeaseGrant``, to RBAC, so any holder of a store certificate (the witness
too) may call them. See ``failover.raft``.

Idempotence: each step tolerates "already exists", the role's permissions are made exactly the store's prefix
(anything else granted to it is revoked), and enabling auth when it is on is a no-op; so ``pair up`` on the data
dirs of an earlier run, or a second store on the same cluster (a bench), runs it again safely. Auth is enabled last:
before that, etcd has no root user to enable it for.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from cluster.errors import DCSError
from failover.dcs import ROOT
from failover.etcd_tls import describe, explain, open_channel

if TYPE_CHECKING:
    from cluster.pki import Identity

log = logging.getLogger(__name__)

ROOT_USER = "root"
ROOT_ROLE = "root"
# AuthUserAddRequest.options = UserAddOptions(no_password=true): field 3, a 2-byte message holding field 1 = true.
# pyetcd's protos predate the field; protobuf keeps unknown fields, so it is appended to the serialized request.
NO_PASSWORD_OPTION = b"\x1a\x02\x08\x01"


def store_prefix(store_id: str) -> str:
    return f"{ROOT}/{store_id}/"


def prefix_range_end(prefix: str) -> str:
    """The end of the range of every key that starts with ``prefix`` (its last byte plus one)."""
    raw = prefix.encode()
    return (raw[:-1] + bytes([raw[-1] + 1])).decode()


def node_role(store_id: str) -> str:
    return f"edgepair-node-{store_id}"


def enable_auth(
    endpoints: Sequence[str],
    store_id: str,
    admin: Identity,
    node_names: Sequence[str],
    timeout: float = 10.0,
) -> list[str]:
    """Make the store's users and role (see the module docstring) and enable auth; returns what it changed.

    Talks to the first endpoint that answers, as ``admin`` (the ``root`` certificate). Raises DCSError naming the
    endpoint and the fix when no endpoint takes the calls.
    """
    if admin.name != ROOT_USER:
        raise DCSError(f"etcd auth is bootstrapped with the admin certificate {ROOT_USER}.crt, not {admin.cert}")
    if not node_names:
        raise DCSError(f"no workstation to give store {store_id} to: name the node users (ws-a, ws-b)")
    errors: list[str] = []
    for endpoint in endpoints:
        try:
            changed = _bootstrap(endpoint, store_id, admin, node_names, timeout)
        except _Unreachable as exc:
            errors.append(str(exc))
            continue
        for line in changed:
            log.info("etcd auth (store %s): %s", store_id, line)
        return changed
    raise DCSError(f"etcd auth bootstrap for store {store_id} failed on every endpoint ({'; '.join(errors)})")


class _Unreachable(Exception):
    """This endpoint did not take the call (down, not answering): try the next one."""


def _bootstrap(endpoint: str, store_id: str, admin: Identity, nodes: Sequence[str], timeout: float) -> list[str]:
    import grpc
    from pyetcd import etcdrpc

    channel = open_channel(endpoint, admin)
    stub: Any = etcdrpc.AuthStub(channel)
    changed: list[str] = []

    def call(what: str, method: Callable[..., Any], request: Any, exists: str = "") -> Any:
        try:
            return method(request, timeout)
        except grpc.RpcError as exc:
            details = exc.details() or "" if hasattr(exc, "details") else ""
            if exists and exists in details:
                return None
            code = getattr(exc.code(), "name", "") if hasattr(exc, "code") else ""
            why = explain(exc, endpoint, admin) or describe(exc)
            if code in ("UNAVAILABLE", "DEADLINE_EXCEEDED") and explain(exc, endpoint, admin) is None:
                raise _Unreachable(f"{endpoint}: {why}") from exc
            raise DCSError(f"etcd auth bootstrap: {what} at {endpoint} failed: {why}") from exc

    def add_user(name: str) -> None:
        req = etcdrpc.AuthUserAddRequest.FromString(
            etcdrpc.AuthUserAddRequest(name=name).SerializeToString() + NO_PASSWORD_OPTION
        )
        if call(f"adding user {name}", stub.UserAdd, req, exists="user name already exists") is not None:
            changed.append(f"user {name} added")

    def add_role(name: str) -> None:
        if call(f"adding role {name}", stub.RoleAdd, etcdrpc.AuthRoleAddRequest(name=name), "already exists"):
            changed.append(f"role {name} added")

    def grant_role(user: str, role: str) -> None:
        got = call(f"reading user {user}", stub.UserGet, etcdrpc.AuthUserGetRequest(name=user))
        if got is not None and role in got.roles:
            return
        call(f"granting {role} to {user}", stub.UserGrantRole, etcdrpc.AuthUserGrantRoleRequest(user=user, role=role))
        changed.append(f"role {role} granted to {user}")

    try:
        add_user(ROOT_USER)
        add_role(ROOT_ROLE)
        grant_role(ROOT_USER, ROOT_ROLE)
        role, prefix = node_role(store_id), store_prefix(store_id)
        end = prefix_range_end(prefix)
        add_role(role)
        got = call(f"reading role {role}", stub.RoleGet, etcdrpc.AuthRoleGetRequest(role=role))
        perms = list(got.perm) if got is not None else []
        wanted = (etcdrpc.Permission.READWRITE, prefix.encode(), end.encode())
        for perm in perms:
            if (perm.permType, perm.key, perm.range_end) != wanted:
                req = etcdrpc.AuthRoleRevokePermissionRequest(
                    role=role, key=perm.key.decode(), range_end=perm.range_end.decode()
                )
                call(f"revoking a permission of {role}", stub.RoleRevokePermission, req)
                changed.append(f"role {role}: permission on {perm.key!r}..{perm.range_end!r} revoked")
        if not any((p.permType, p.key, p.range_end) == wanted for p in perms):
            perm = etcdrpc.Permission(
                permType=etcdrpc.Permission.READWRITE, key=prefix.encode(), range_end=end.encode()
            )
            req = etcdrpc.AuthRoleGrantPermissionRequest(name=role, perm=perm)
            call(f"granting {prefix} to {role}", stub.RoleGrantPermission, req)
            changed.append(f"role {role}: read/write on {prefix} granted")
        for node in nodes:
            if node == ROOT_USER:
                raise DCSError(f"{ROOT_USER!r} is the admin, not a workstation")
            add_user(node)
            grant_role(node, role)
        # etcd 3.4 has no AuthStatus RPC; AuthEnable when auth is on already is a no-op that answers OK.
        call("enabling auth", stub.AuthEnable, etcdrpc.AuthEnableRequest())
    finally:
        channel.close()
    return changed

"""``EtcdDCS``: the DCS rules of ``failover.dcs`` over etcd v3 with the pyetcd client.

- One session lease per node (TTL rounded up to whole seconds; etcd raises a TTL below ceil(1.5 x election timeout),
  so run etcd with ``--election-timeout 500`` for TTL 1); renewed by a keepalive each tick.
- Leader: a transaction "create revision of ``leader`` == 0 → put bound to our lease"; the key's create revision is
  the fencing token. The assignment is written in a transaction that compares the leader key's create revision
  with the writer's token, so a deposed leader's write fails.
- Every client failure is translated into ``DCSError`` here (``raise DCSError(...) from exc``).
- pyetcd's own endpoint failover is sticky (a failed endpoint is retried only after 300 s), so ``EndpointRotator``
  keeps one single-endpoint client per member and moves to the next endpoint at once when a call fails, trying each
  endpoint at most once per call. A retried write may have been applied by the first attempt: the acquisition
  checks "the key holds our name under our lease" on failure, the other writes are idempotent.
- TLS: with an ``identity`` (a workstation's certificate of the store CA) every call is mutual TLS to
  ``https://`` (or bare ``host:port``) endpoints, and etcd auth names the user by the certificate's CN; see
  ``failover.etcd_tls`` for the endpoint rules and ``failover.etcd_auth`` for what that user may do. A TLS or auth
  refusal becomes a ``DCSError`` that names the endpoint and what to fix (``failover.etcd_tls.explain``).
- ``watch_changes``: a watch on the store's keys at the current endpoint wakes the loop as soon as something it acts
  on changed (``failover.dcs.ChangeFilter``: the leader key deleted when a leader's lease expired or was revoked, a
  new assignment, a peer turned unhealthy or stopped a camera) instead of at its next tick. When the watch stream
  ends (the member died, the client closed) it is re-armed at a later tick; while it is dead or silent the loop
  just polls.

The parts: :class:`EtcdDCS` (this module) holds the session and the transactions; :class:`EndpointRotator` the
clients; :mod:`failover.etcd_keys` reads the keys into a cluster, :mod:`failover.etcd_watch` keeps the watch.
"""

from __future__ import annotations

import logging
import math
import socket
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
from pyetcd.client import Endpoint, MultiEndpointEtcd3Client, Transactions
from pyetcd.exceptions import Etcd3Exception

from cluster.errors import DCSError
from failover.dcs import AbstractDCS, Assignment, Cluster, Leader, Member, QuorumProbe, Switchover
from failover.etcd_keys import cluster_from_kvs
from failover.etcd_tls import credentials, describe, explain, member_status, parse_endpoint
from failover.etcd_watch import KeyWatch

if TYPE_CHECKING:
    from cluster.pki import Identity

log = logging.getLogger(__name__)

T = TypeVar("T")
Client: Any = MultiEndpointEtcd3Client  # untyped library class


class EndpointRotator:
    """Calls go to the current endpoint; on failure the next one is tried at once (each at most once per call)."""

    def __init__(self, endpoints: Sequence[str], timeout: float, identity: Identity | None = None) -> None:
        if not endpoints:
            raise DCSError("no etcd endpoint given")
        self.endpoints = list(endpoints)
        self.timeout = timeout
        self.identity = identity
        targets = [parse_endpoint(ep, identity) for ep in self.endpoints]  # every endpoint checked before any dial
        creds = credentials(identity) if identity is not None else None
        self.clients: list[Client] = []
        for t in targets:
            # time_retry=0: pyetcd never refuses a failed endpoint; the rotation below decides where calls go.
            ep = Endpoint(t.host, t.port, secure=t.secure, creds=creds, time_retry=0)
            self.clients.append(Client(endpoints=[ep], timeout=timeout))
        self.index = 0

    def call(self, what: str, fn: Callable[[Client], T]) -> T:
        errors: list[str] = []
        for _ in range(len(self.clients)):
            client = self.clients[self.index]
            try:
                return fn(client)
            except (Etcd3Exception, grpc.RpcError, ValueError) as exc:
                ep = self.endpoints[self.index]
                errors.append(explain(exc, ep, self.identity) or f"{ep}: {describe(exc)}")
                self.index = (self.index + 1) % len(self.clients)
                last = exc
        raise DCSError(f"etcd {what} failed on every endpoint ({'; '.join(errors)})") from last

    def close(self) -> None:
        for client in self.clients:
            try:
                client.close()
            except Exception as exc:  # closing must never raise
                log.debug("closing etcd client: %s", exc)


class EtcdDCS(AbstractDCS):
    """One node's view of the store in etcd. ``timeout`` is per request (default min(1 s, ttl / 6)); with
    ``identity`` every call is mutual TLS as that host (see the module rules)."""

    def __init__(
        self,
        endpoints: Sequence[str],
        store_id: str,
        ttl: float,
        timeout: float | None = None,
        identity: Identity | None = None,
    ) -> None:
        super().__init__(store_id, ttl)
        self.timeout = timeout if timeout is not None else max(0.1, min(1.0, ttl / 6))
        self.identity = identity
        self.etcd = EndpointRotator(endpoints, self.timeout, identity)
        self.lease_ttl = max(1, math.ceil(ttl))
        self.lease_id: int | None = None
        self.on_grant: Callable[[int], None] | None = None  # told each new session lease (the node's supervisor file)
        self._member_lease: int | None = None
        self.watch = KeyWatch(self.prefix, store_id)
        self.malformed_keys = 0
        self._malformed_seen: dict[str, int] = {}

    # -- reads -----------------------------------------------------------------------------------------------------

    def get_cluster(self) -> Cluster:
        kvs = self.etcd.call("read", lambda c: list(c.get_prefix(self.prefix)))
        return cluster_from_kvs(self.prefix, kvs, self._malformed)

    def _malformed(self, name: str, revision: int, exc: BaseException) -> None:
        """Log a malformed key once per revision of it (it is then read as absent) and count it."""
        self.malformed_keys += 1
        if self._malformed_seen.get(name) != revision:
            self._malformed_seen[name] = revision
            log.error(
                "etcd key %s%s (revision %d) of store %s is malformed and ignored: %s: %s",
                self.prefix,
                name[:128],
                revision,
                self.store_id,
                type(exc).__name__,
                str(exc)[:200],
            )

    # -- session ---------------------------------------------------------------------------------------------------

    def _grant(self) -> int:
        lease = self.etcd.call("lease grant", lambda c: c.lease(self.lease_ttl))
        self.lease_id = int(lease.id)
        if self.on_grant is not None:
            try:
                self.on_grant(self.lease_id)
            except Exception as exc:  # the supervisor then lets the lease expire: slower, never unsafe
                log.warning("recording lease %x of store %s failed: %s", self.lease_id, self.store_id, exc)
        return self.lease_id

    def renew(self) -> bool:
        lease_id = self.lease_id
        if lease_id is None:
            self._grant()
            return False
        replies = self.etcd.call("lease keepalive", lambda c: list(c.refresh_lease(lease_id)))
        if replies and replies[0].TTL > 0:
            return True
        log.warning("etcd lease %x of store %s had expired; granting a new one", lease_id, self.store_id)
        self._grant()
        return False

    def _lease(self) -> int:
        return self.lease_id if self.lease_id is not None else self._grant()

    def touch_member(self, member: Member) -> int:
        key = self.key("members", member.name)
        lease = self._lease()
        tx = Transactions()
        if self._member_lease != lease:
            # A key left by an older session of this node: delete it so the new session gets a new create revision.
            _value, meta = self.etcd.call("member read", lambda c: c.get(key))
            if meta is not None and meta.lease_id != lease:
                mod = meta.mod_revision
                self.etcd.call(
                    "member cleanup",
                    lambda c: c.transaction(compare=[tx.mod(key) == mod], success=[tx.delete(key)], failure=[]),
                )
        _ok, responses = self.etcd.call(
            "member write",
            lambda c: c.transaction(
                compare=[], success=[tx.put(key, member.to_json(), lease=lease), tx.get(key)], failure=[]
            ),
        )
        self._member_lease = lease
        kvs = responses[1] if len(responses) > 1 else []
        return int(kvs[0][1].create_revision) if kvs else 0

    # -- leadership ------------------------------------------------------------------------------------------------

    def attempt_to_acquire_leader(self, name: str) -> Leader | None:
        key = self.key("leader")
        lease = self._lease()
        tx = Transactions()
        ok, responses = self.etcd.call(
            "leader create",
            lambda c: c.transaction(
                compare=[tx.create(key) == 0],
                success=[tx.put(key, name, lease=lease), tx.get(key)],
                failure=[tx.get(key)],
            ),
        )
        kvs = responses[-1] if responses else []
        if not kvs:
            return None
        value, meta = kvs[0]
        if value.decode() != name:
            return None
        token = int(meta.create_revision)
        if ok or meta.lease_id == lease:
            return Leader(name, token)
        # Our name under another lease: an earlier session of this node. Re-bind it to our lease, token kept.
        ok, _ = self.etcd.call(
            "leader re-take",
            lambda c: c.transaction(
                compare=[tx.create(key) == token, tx.value(key) == name],
                success=[tx.put(key, name, lease=lease)],
                failure=[],
            ),
        )
        return Leader(name, token) if ok else None

    def write_assignment(self, assignment: Assignment) -> bool:
        leader_key, key = self.key("leader"), self.key("assignment")
        tx = Transactions()
        ok, _ = self.etcd.call(
            "assignment write",
            lambda c: c.transaction(
                compare=[tx.create(leader_key) == assignment.token],
                success=[tx.put(key, assignment.to_json())],
                failure=[],
            ),
        )
        return bool(ok)

    def release_leader(self, leader: Leader) -> bool:
        key = self.key("leader")
        tx = Transactions()
        ok, _ = self.etcd.call(
            "leader release",
            lambda c: c.transaction(compare=[tx.create(key) == leader.token], success=[tx.delete(key)], failure=[]),
        )
        return bool(ok)

    def revoke(self) -> None:
        """Revoke our session lease (member key and leader key vanish at once)."""
        lease_id = self.lease_id
        if lease_id is not None:
            self.etcd.call("lease revoke", lambda c: c.revoke_lease(lease_id))
            self.lease_id = None

    # -- operator keys ---------------------------------------------------------------------------------------------

    def _set(self, name: str, value: str | None) -> None:
        key = self.key(name)
        if value is None:
            self.etcd.call(f"{name} delete", lambda c: c.delete(key))
        else:
            self.etcd.call(f"{name} write", lambda c: c.put(key, value))

    def set_paused(self, paused: bool) -> None:
        self._set("pause", "{}" if paused else None)

    def request_switchover(self, candidate: str | None = None, leader: str | None = None) -> None:
        self._set("switchover", Switchover(candidate, leader).to_json())

    def clear_switchover(self) -> None:
        self._set("switchover", None)

    def set_rebalance(self, wanted: bool) -> None:
        self._set("rebalance", "{}" if wanted else None)

    # -- quorum probe ----------------------------------------------------------------------------------------------

    def probe_quorum(self) -> QuorumProbe:
        groups: dict[str, list[str]] = {"no_leader": [], "down": [], "with_leader": [], "unknown": []}
        for ep in self.etcd.endpoints:
            groups[probe_member(ep, self.timeout, self.identity)].append(ep)
        return QuorumProbe(total=len(self.etcd.endpoints), **{k: tuple(v) for k, v in groups.items()})

    # -- leader watch ----------------------------------------------------------------------------------------------

    def watch_changes(self, on_change: Callable[[], None], me: str) -> bool:
        return self.watch.arm(self.etcd.clients[self.etcd.index], on_change, me)

    def close(self) -> None:
        self.watch.cancel()
        self.etcd.close()


def probe_member(endpoint: str, timeout: float, identity: Identity | None = None) -> str:
    """``down`` (connection refused), ``unknown`` (no answer), ``no_leader`` or ``with_leader`` (its Status).

    A member that refuses our TLS handshake is ``unknown``: it is running, and says nothing about its quorum."""
    target = parse_endpoint(endpoint, identity)
    try:
        with socket.create_connection((target.host, target.port), timeout=timeout):
            pass
    except ConnectionRefusedError:
        return "down"
    except OSError:
        return "unknown"
    try:
        status: Any = member_status(endpoint, identity, timeout)
    except grpc.RpcError:
        return "unknown"
    return "with_leader" if status.leader else "no_leader"

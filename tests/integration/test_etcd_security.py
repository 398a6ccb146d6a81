"""Attacks on a store's etcd (3 real members, mutual TLS on client and peer URLs, etcd auth): each is refused, and
afterwards the store's keys are what they were and every operation of the HA loop still works.

The attacker sits on the store LAN: it reaches every member's client port, trusts whatever the members present, and
holds at best a certificate of another CA, or the witness's certificate (a host of the store that is no etcd user).
"""

from __future__ import annotations

import shutil
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from pyetcd import etcdrpc

from cluster.errors import DCSError
from cluster.pki import CertDir, Identity
from failover import admin
from failover.dcs import Assignment, Member
from failover.drill import store_pki, wait_for
from failover.etcd_auth import node_role, prefix_range_end, store_prefix
from failover.etcd_cluster import EtcdCluster
from failover.etcd_dcs import EtcdDCS
from failover.etcd_tls import parse_endpoint
from failover.raft import keep_raft_leader_on

pytestmark = pytest.mark.skipif(shutil.which("etcd") is None, reason="etcd not installed (apt-get install etcd-server)")

STORE = "drill"
KEYS = ("leader", "assignment", "pause")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return store_pki(tmp_path_factory.mktemp("pki"), STORE)


@pytest.fixture(scope="module")
def foreign(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another CA of the same store name, with a workstation certificate named ws-a: a forgery of ws-a."""
    return store_pki(tmp_path_factory.mktemp("foreign"), STORE)


@pytest.fixture(scope="module")
def cluster(pki: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    c = EtcdCluster(tmp_path_factory.mktemp("etcd"), cert_dir=pki).start()
    try:
        yield c
    finally:
        c.stop()


def ident(pki: Path, name: str) -> Identity:
    return Identity.load(pki, name)


@pytest.fixture(scope="module")
def leader_dcs(cluster: EtcdCluster, pki: Path) -> Iterator[EtcdDCS]:
    """ws-a leads the store, with an assignment, as a real node would have set it up before the attacks."""
    dcs = EtcdDCS(cluster.endpoints, STORE, ttl=30, timeout=2.0, identity=ident(pki, "ws-a"))
    try:
        dcs.renew()
        dcs.touch_member(Member("ws-a", capacity=3))
        leader = dcs.attempt_to_acquire_leader("ws-a")
        assert leader is not None
        assert dcs.write_assignment(Assignment({"cam-1": "ws-a"}, {"cam-1": 10.0}, leader.token))
        yield dcs
    finally:
        dcs.close()


@pytest.fixture(scope="module")
def before(cluster: EtcdCluster, leader_dcs: EtcdDCS) -> dict[bytes, tuple[bytes, int]]:
    """The store's keys (value, mod revision) before any attack."""
    return store_keys(cluster)


def store_keys(cluster: EtcdCluster) -> dict[bytes, tuple[bytes, int]]:
    prefix = store_prefix(STORE)
    chan = raw_channel(cluster.endpoints[0], ident_files(cluster, "root"))
    try:
        resp = etcdrpc.KVStub(chan).Range(
            etcdrpc.RangeRequest(key=prefix.encode(), range_end=prefix_range_end(prefix).encode()), 2
        )
        return {kv.key: (kv.value, kv.mod_revision) for kv in resp.kvs}
    finally:
        chan.close()


def ident_files(cluster: EtcdCluster, name: str) -> tuple[bytes, bytes, bytes]:
    assert cluster.cert_dir is not None
    return Identity.load(cluster.cert_dir, name).pem()


def raw_channel(endpoint: str, pem: tuple[bytes | None, bytes | None, bytes | None] | None) -> grpc.Channel:
    """An attacker's channel: plain text (``pem`` None), or TLS trusting ``pem[0]`` and presenting ``pem[1:]``."""
    netloc = parse_endpoint(endpoint.split("://", 1)[-1]).netloc
    if pem is None:
        return grpc.insecure_channel(netloc)
    ca, cert, key = pem
    return grpc.secure_channel(netloc, grpc.ssl_channel_credentials(ca, key, cert))


def put(chan: grpc.Channel, key: str, value: bytes = b"forged") -> Any:
    return etcdrpc.KVStub(chan).Put(etcdrpc.PutRequest(key=key.encode(), value=value), 2)


def refused(fn: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        fn()
    return info.value


# -- endpoints and certificates, no etcd needed ---------------------------------------------------------------------


def test_endpoint_forms(pki: Path) -> None:
    ws_a = ident(pki, "ws-a")
    assert parse_endpoint("127.0.0.1:2379").url == "http://127.0.0.1:2379"
    assert parse_endpoint("http://127.0.0.1:2379/").url == "http://127.0.0.1:2379"
    assert parse_endpoint("https://127.0.0.1:2379", ws_a).url == "https://127.0.0.1:2379"
    assert parse_endpoint("127.0.0.1:2379", ws_a).secure
    with pytest.raises(DCSError, match=r"http://127.0.0.1:2379 is plain text but TLS is on.*https://"):
        parse_endpoint("http://127.0.0.1:2379", ws_a)
    with pytest.raises(DCSError, match=r"https://127.0.0.1:2379 needs TLS.*security.cert_dir"):
        parse_endpoint("https://127.0.0.1:2379")
    with pytest.raises(DCSError, match="must be host:port"):
        parse_endpoint("grpc://127.0.0.1:x")


def test_member_certificate_must_name_loopback(tmp_path: Path) -> None:
    certs = CertDir(tmp_path / "pki")
    certs.init(STORE)
    for name, role in (("ws-a", "node"), ("ws-b", "node"), ("witness", "witness"), ("root", "admin")):
        certs.issue(name, role, ["localhost"] if name == "witness" else ["127.0.0.1"])
    with pytest.raises(DCSError, match=r"witness.crt does not name 127.0.0.1 \(it names localhost\)"):
        EtcdCluster(tmp_path / "etcd", cert_dir=certs.path)


def test_cluster_without_admin_certificate_is_refused(tmp_path: Path) -> None:
    certs = CertDir(tmp_path / "pki")
    certs.init(STORE)
    for name, role in (("ws-a", "node"), ("ws-b", "node"), ("witness", "witness")):
        certs.issue(name, role, ["127.0.0.1"])
    with pytest.raises(DCSError, match=r"root.crt not found"):
        EtcdCluster(tmp_path / "etcd", cert_dir=certs.path)


# -- attacks --------------------------------------------------------------------------------------------------------


def test_plain_text_client_is_refused(cluster: EtcdCluster, before: Any) -> None:
    for endpoint in cluster.endpoints:
        chan = raw_channel(endpoint, None)
        try:
            err = refused(lambda chan=chan: put(chan, store_prefix(STORE) + "leader"))
            assert err.code() == grpc.StatusCode.UNAVAILABLE
            refused(lambda chan=chan: etcdrpc.MaintenanceStub(chan).Status(etcdrpc.StatusRequest(), 2))
        finally:
            chan.close()
    bare = [e.split("://", 1)[1] for e in cluster.endpoints]
    dcs = EtcdDCS(bare, STORE, ttl=2, timeout=1.0)
    try:
        with pytest.raises(DCSError) as info:
            dcs.set_paused(True)
    finally:
        dcs.close()
    assert f"etcd at {bare[0]} closed the connection of a plain-text client" in str(info.value)
    assert "security.tls: true" in str(info.value)


@pytest.mark.parametrize("presented", ["another CA's ws-a", "no certificate"])
def test_client_certificate_not_of_the_store_ca_is_refused_at_the_handshake(
    cluster: EtcdCluster, pki: Path, foreign: Path, presented: str, before: Any
) -> None:
    ca = (pki / "ca.crt").read_bytes()  # the attacker trusts the members: only etcd's check of *its* cert is tested
    forged = Identity.load(foreign, "ws-a").pem()
    pem = (ca, forged[1], forged[2]) if presented.startswith("another") else (ca, None, None)
    for endpoint in cluster.endpoints:
        chan = raw_channel(endpoint, pem)
        try:
            err = refused(lambda chan=chan: put(chan, store_prefix(STORE) + "assignment"))
            assert err.code() == grpc.StatusCode.UNAVAILABLE, err
            refused(lambda chan=chan: etcdrpc.MaintenanceStub(chan).Status(etcdrpc.StatusRequest(), 2))
        finally:
            chan.close()


def peer_get(port: int, ctx: ssl.SSLContext | None) -> bytes:
    """``GET /version`` on a member's peer port (plain text when ``ctx`` is None); what came back, b"" if refused."""
    request = b"GET /version HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=3) as raw:
        try:
            sock = ctx.wrap_socket(raw, server_hostname="127.0.0.1") if ctx is not None else raw
            sock.sendall(request)
            out = b""
            while b"}" not in out and (chunk := sock.recv(65536)):  # etcd keeps the connection open after the body
                out += chunk
            return out
        except (ssl.SSLError, ConnectionResetError, BrokenPipeError, TimeoutError):
            return b""


@pytest.mark.parametrize("presented", ["ws-a", "another CA's ws-a", "no certificate", "plain text"])
def test_peer_port_takes_only_a_certificate_of_the_store_ca(
    cluster: EtcdCluster, pki: Path, foreign: Path, presented: str
) -> None:
    ctx: ssl.SSLContext | None = None
    if presented != "plain text":
        ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        if presented != "no certificate":
            d = pki if presented == "ws-a" else foreign
            ctx.load_cert_chain(str(d / "ws-a.crt"), str(d / "ws-a.key"))
    for member in cluster.members.values():
        got = peer_get(member.peer_port, ctx)
        assert (b" 200 OK" in got and b"etcdserver" in got) == (presented == "ws-a"), got[:200]


def test_another_cas_identity_gets_a_dcs_error_that_says_what_to_fix(cluster: EtcdCluster, foreign: Path) -> None:
    dcs = EtcdDCS(cluster.endpoints, STORE, ttl=2, timeout=1.0, identity=Identity.load(foreign, "ws-a"))
    try:
        with pytest.raises(DCSError) as info:
            dcs.get_cluster()
    finally:
        dcs.close()
    text = str(info.value)
    for endpoint in cluster.endpoints:
        assert f"etcd at {endpoint} presented a certificate not trusted by" in text
    assert "check security.cert_dir" in text


@pytest.mark.parametrize("key", KEYS)
def test_witness_certificate_cannot_write_the_operator_keys(
    cluster: EtcdCluster, pki: Path, key: str, before: Any
) -> None:
    chan = raw_channel(cluster.endpoints[0], ident(pki, "witness").pem())
    full = store_prefix(STORE) + key
    try:
        assert refused(lambda: put(chan, full)).code() == grpc.StatusCode.PERMISSION_DENIED
        delete = etcdrpc.DeleteRangeRequest(key=full.encode())
        assert refused(lambda: etcdrpc.KVStub(chan).DeleteRange(delete, 2)).code() == grpc.StatusCode.PERMISSION_DENIED
        read = etcdrpc.RangeRequest(key=full.encode())
        assert refused(lambda: etcdrpc.KVStub(chan).Range(read, 2)).code() == grpc.StatusCode.PERMISSION_DENIED
    finally:
        chan.close()
    dcs = EtcdDCS(cluster.endpoints, STORE, ttl=2, timeout=1.0, identity=ident(pki, "witness"))
    try:
        with pytest.raises(DCSError, match=rf"etcd at {cluster.endpoints[0]} denied user 'witness'"):
            {"leader": lambda: dcs.attempt_to_acquire_leader("witness"), "pause": lambda: dcs.set_paused(True)}.get(
                key, lambda: dcs.write_assignment(Assignment({"cam-1": "witness"}, {}, 1))
            )()
    finally:
        dcs.close()


def test_witness_cannot_revoke_the_leaders_lease(cluster: EtcdCluster, pki: Path, leader_dcs: EtcdDCS) -> None:
    assert leader_dcs.lease_id is not None
    chan = raw_channel(cluster.endpoints[0], ident(pki, "witness").pem())
    try:
        revoke = etcdrpc.LeaseRevokeRequest(ID=leader_dcs.lease_id)
        err = refused(lambda: etcdrpc.LeaseStub(chan).LeaseRevoke(revoke, 2))
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    finally:
        chan.close()


@pytest.mark.parametrize("who", ["ws-a", "witness"])
def test_no_host_can_turn_auth_off_or_add_users(cluster: EtcdCluster, pki: Path, who: str) -> None:
    chan = raw_channel(cluster.endpoints[0], ident(pki, who).pem())
    auth = etcdrpc.AuthStub(chan)
    try:
        refused(lambda: auth.AuthDisable(etcdrpc.AuthDisableRequest(), 2))
        refused(lambda: auth.UserAdd(etcdrpc.AuthUserAddRequest(name="evil", password="x"), 2))
        grant = etcdrpc.AuthUserGrantRoleRequest(user=who, role="root")
        refused(lambda: auth.UserGrantRole(grant, 2))
        # No password works: a node user is its certificate, nothing else (made as `user add --no-password`).
        login = etcdrpc.AuthenticateRequest(name="ws-b", password="")
        assert "password was given for no password user" in (refused(lambda: auth.Authenticate(login, 2)).details())
        refused(lambda: etcdrpc.MaintenanceStub(chan).Defragment(etcdrpc.DefragmentRequest(), 2))
    finally:
        chan.close()


def test_node_certificate_cannot_touch_another_stores_prefix(cluster: EtcdCluster, pki: Path) -> None:
    other = store_prefix("other-store")
    root = raw_channel(cluster.endpoints[0], ident(pki, "root").pem())
    chan = raw_channel(cluster.endpoints[0], ident(pki, "ws-a").pem())
    try:
        put(root, other + "leader", b"ws-x")
        assert refused(lambda: put(chan, other + "leader", b"ws-a")).code() == grpc.StatusCode.PERMISSION_DENIED
        assert refused(lambda: put(chan, "/edgepair/drillx/leader")).code() == grpc.StatusCode.PERMISSION_DENIED
        assert refused(lambda: put(chan, "/elsewhere")).code() == grpc.StatusCode.PERMISSION_DENIED
        everything = etcdrpc.RangeRequest(key=b"\0", range_end=b"\0")
        assert refused(lambda: etcdrpc.KVStub(chan).Range(everything, 2)).code() == grpc.StatusCode.PERMISSION_DENIED
        got = etcdrpc.KVStub(root).Range(etcdrpc.RangeRequest(key=(other + "leader").encode()), 2)
        assert [kv.value for kv in got.kvs] == [b"ws-x"]
    finally:
        chan.close()
        root.close()
    dcs = EtcdDCS(cluster.endpoints, "other-store", ttl=2, timeout=1.0, identity=ident(pki, "ws-a"))
    try:
        with pytest.raises(DCSError, match=r"denied user 'ws-a'.*prefix only"):
            dcs.get_cluster()
        with pytest.raises(DCSError, match=r"denied user 'ws-a'"):
            dcs.attempt_to_acquire_leader("ws-a")
    finally:
        dcs.close()


def test_store_keys_unchanged_by_the_attacks(cluster: EtcdCluster, before: dict[bytes, tuple[bytes, int]]) -> None:
    assert store_keys(cluster) == before


# -- what the HA loop needs still works -----------------------------------------------------------------------------


def test_node_certificate_does_everything_the_ha_loop_does(
    cluster: EtcdCluster, pki: Path, leader_dcs: EtcdDCS
) -> None:
    ws_b = EtcdDCS(cluster.endpoints, STORE, ttl=2, timeout=1.0, identity=ident(pki, "ws-b"))
    try:
        assert ws_b.renew() is False  # the first renewal grants the lease
        assert ws_b.renew() is True
        assert ws_b.touch_member(Member("ws-b", capacity=3)) > 0
        state = ws_b.get_cluster()
        assert state.leader is not None and state.leader.name == "ws-a"
        assert set(state.members) == {"ws-a", "ws-b"}
        assert ws_b.attempt_to_acquire_leader("ws-b") is None
        stale = Assignment({"cam-1": "ws-b"}, {"cam-1": 10.0}, state.leader.token - 1)
        assert ws_b.write_assignment(stale) is False  # the fencing transaction compares the leader's token
        assert ws_b.probe_quorum().with_leader == tuple(cluster.endpoints)
        woke = threading.Event()
        assert ws_b.watch_leader(woke.set)
        ws_b.set_paused(True)
        ws_b.set_paused(False)
        ws_b.request_switchover("ws-b", leader="ws-a")
        ws_b.clear_switchover()
        ws_b.set_rebalance(False)
        assert leader_dcs.release_leader(state.leader)
        wait_for(woke.is_set, 5, "ws-b's watch on the leader key to fire on its deletion")
        took = ws_b.attempt_to_acquire_leader("ws-b")
        assert took is not None and took.token > state.leader.token
        assert ws_b.write_assignment(Assignment({"cam-1": "ws-b"}, {"cam-1": 10.0}, took.token))
        ws_b.revoke()
        assert ws_b.get_cluster().leader is None
    finally:
        ws_b.close()


def test_operator_commands_with_a_node_or_the_admin_certificate(cluster: EtcdCluster, pki: Path) -> None:
    for who in ("ws-a", "root"):
        admin.pause(cluster.endpoints, STORE, identity=ident(pki, who))
        assert admin.status(cluster.endpoints, STORE, identity=ident(pki, who))["mode"] == "paused"
        admin.resume(cluster.endpoints, STORE, identity=ident(pki, who))
        assert admin.status(cluster.endpoints, STORE, identity=ident(pki, who))["mode"] == "normal"
    with pytest.raises(DCSError, match="denied user 'witness'"):
        admin.pause(cluster.endpoints, STORE, identity=ident(pki, "witness"))


def test_raft_leader_move_needs_only_a_node_certificate(cluster: EtcdCluster, pki: Path) -> None:
    """Measured on etcd 3.4.23: MoveLeader is outside etcd's RBAC (see failover.raft); a workstation moves it."""
    leader = cluster.leader_name()
    target = next(n for n in cluster.members if n != leader)
    what = keep_raft_leader_on(cluster.endpoints, cluster.endpoint(target), identity=ident(pki, "ws-a"))
    assert what == f"raft leader: moved from {cluster.endpoint(leader or '')} to {cluster.endpoint(target)}"
    wait_for(lambda: cluster.leader_name(timeout=0.5) == target, 5, f"{target} to be raft leader")
    what = keep_raft_leader_on(cluster.endpoints, cluster.endpoint(target), identity=ident(pki, "ws-a"))
    assert what == f"raft leader: on the preferred member {cluster.endpoint(target)}"


# -- the bootstrap: idempotent, converging, and bound to the data dir's mode -----------------------------------------


def test_auth_bootstrap_is_idempotent_across_restarts_and_converges(pki: Path, tmp_path: Path) -> None:
    c = EtcdCluster(tmp_path / "etcd", cert_dir=pki).start()
    try:
        assert c.authorize(STORE) == []  # start() did it all
        root = raw_channel(c.endpoints[0], ident(pki, "root").pem())
        try:
            extra = etcdrpc.Permission(permType=etcdrpc.Permission.READWRITE, key=b"/", range_end=b"\0")
            etcdrpc.AuthStub(root).RoleGrantPermission(
                etcdrpc.AuthRoleGrantPermissionRequest(name=node_role(STORE), perm=extra), 2
            )
        finally:
            root.close()
        assert c.authorize(STORE) == [f"role {node_role(STORE)}: permission on b'/'..b'\\x00' revoked"]
    finally:
        c.stop()
    again = EtcdCluster(tmp_path / "etcd", cert_dir=pki)
    assert again.endpoints == c.endpoints  # same ports, same data
    again.start()
    try:
        assert again.authorize(STORE) == []
        chan = raw_channel(again.endpoints[1], ident(pki, "ws-b").pem())
        try:
            put(chan, store_prefix(STORE) + "members/ws-b", b"{}")
            assert refused(lambda: put(chan, "/x")).code() == grpc.StatusCode.PERMISSION_DENIED
        finally:
            chan.close()
    finally:
        again.stop()


def test_data_dir_made_in_plain_text_is_not_started_with_tls(pki: Path, tmp_path: Path) -> None:
    EtcdCluster(tmp_path / "etcd").start().stop()
    with pytest.raises(DCSError, match=r"made with plain text peers and cannot be started with TLS"):
        EtcdCluster(tmp_path / "etcd", cert_dir=pki).start()

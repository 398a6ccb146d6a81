"""The pure parts of the local etcd cluster split out of ``EtcdCluster`` (issue 16): a member's command line, the
ports and mode kept beside the data dirs, and the host check of a member's certificate. The processes themselves
are covered by the integration tests that start clusters (test_election.py, test_etcd_security.py)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from cluster.errors import DCSError
from failover.etcd_bootstrap import same_ip
from failover.etcd_kept import PORTS_FILE, check_mode, read_kept, save_kept
from failover.etcd_member import EtcdMember, etcd_command


def members(tmp_path: Path, secure: bool = False) -> list[EtcdMember]:
    return [
        EtcdMember(n, 2000 + i, 3000 + i, tmp_path / f"{n}.etcd", tmp_path / f"{n}.etcd.log", secure=secure)
        for i, n in enumerate(("ws-a", "ws-b"))
    ]


def flag(cmd: list[str], name: str) -> str:
    return cmd[cmd.index(name) + 1]


def test_a_new_member_in_plain_text_listens_on_loopback_with_the_fast_raft_timings(tmp_path: Path) -> None:
    ms = members(tmp_path)
    cmd = etcd_command("/usr/bin/etcd", ms[1], ms, token="t-1", heartbeat_ms=50, election_ms=500)
    assert cmd[0] == "/usr/bin/etcd" and flag(cmd, "--name") == "ws-b"
    assert flag(cmd, "--listen-client-urls") == "http://127.0.0.1:2001" == flag(cmd, "--advertise-client-urls")
    assert flag(cmd, "--listen-peer-urls") == "http://127.0.0.1:3001"
    assert flag(cmd, "--initial-cluster") == "ws-a=http://127.0.0.1:3000,ws-b=http://127.0.0.1:3001"
    assert (flag(cmd, "--initial-cluster-state"), flag(cmd, "--initial-cluster-token")) == ("new", "t-1")
    assert (flag(cmd, "--heartbeat-interval"), flag(cmd, "--election-timeout")) == ("50", "500")
    assert "--pre-vote" in cmd and not any("cert" in c for c in cmd)
    assert ms[1].endpoint == "127.0.0.1:2001"


def test_a_member_with_tls_requires_client_certificates_on_both_ports_and_rejoins_its_data(tmp_path: Path) -> None:
    ms = members(tmp_path, secure=True)
    ms[0].data_dir.mkdir()
    ident = cast(Any, SimpleNamespace(ca=Path("/p/ca.crt"), cert=Path("/p/ws-a.crt"), key=Path("/p/ws-a.key")))
    cmd = etcd_command("etcd", ms[0], ms, token="t", heartbeat_ms=50, election_ms=500, identity=ident)
    assert flag(cmd, "--initial-cluster-state") == "existing"
    assert flag(cmd, "--listen-client-urls") == "https://127.0.0.1:2000" == ms[0].endpoint
    tail = cmd[cmd.index("--pre-vote") + 1 :]
    assert tail == ["--client-cert-auth", "--trusted-ca-file", "/p/ca.crt", "--cert-file", "/p/ws-a.crt",
                    "--key-file", "/p/ws-a.key", "--peer-client-cert-auth", "--peer-trusted-ca-file", "/p/ca.crt",
                    "--peer-cert-file", "/p/ws-a.crt", "--peer-key-file", "/p/ws-a.key"]  # fmt: skip


def test_ports_are_kept_only_for_the_same_members_with_their_data(tmp_path: Path) -> None:
    names = ("ws-a", "ws-b")
    assert read_kept(tmp_path, names) == ({}, None)
    save_kept(tmp_path, {"ws-a": [2000, 3000], "ws-b": [2001, 3001]}, tls=True)
    assert read_kept(tmp_path, names) == ({}, None)  # no data dirs yet
    for n in names:
        (tmp_path / f"{n}.etcd").mkdir()
    assert read_kept(tmp_path, names) == ({"ws-a": (2000, 3000), "ws-b": (2001, 3001)}, True)
    assert read_kept(tmp_path, ("ws-a", "ws-b", "witness")) == ({}, None)
    (tmp_path / PORTS_FILE).write_text('{"ws-a": [2000, 3000], "ws-b": [2001, 3001]}')  # the older file: ports only
    assert read_kept(tmp_path, names) == ({"ws-a": (2000, 3000), "ws-b": (2001, 3001)}, False)
    (tmp_path / PORTS_FILE).write_text("[1, 2]")
    assert read_kept(tmp_path, names) == ({}, None)


@pytest.mark.parametrize(
    ("stored", "secure", "refused"),
    [(None, True, False), (None, False, False), (True, True, False), (False, False, False), (True, False, True),
     (False, True, True)],
)  # fmt: skip
def test_data_made_in_one_mode_is_never_started_in_the_other(
    tmp_path: Path, stored: bool | None, secure: bool, refused: bool
) -> None:
    if not refused:
        check_mode(tmp_path, stored, secure)
        return
    with pytest.raises(DCSError, match="cannot be started with") as info:
        check_mode(tmp_path, stored, secure)
    assert str(tmp_path) in str(info.value) and "fencing tokens then restart from 1" in str(info.value)


@pytest.mark.parametrize(
    ("host", "same"), [("127.0.0.1", True), ("127.000.000.001", False), ("localhost", False), ("::1", False)]
)
def test_only_the_loopback_address_itself_names_the_members_host(host: str, same: bool) -> None:
    assert same_ip(host, "127.0.0.1") is same

"""``edgepair doctor``'s rules (cluster.doctor_checks): facts in, exact findings out. Table-driven, no I/O."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from cluster.doctor_checks import (
    DAY_S,
    CertFact,
    DataDirFact,
    DiskFact,
    EtcdFact,
    Facts,
    Finding,
    HttpFact,
    LogFact,
    MembersFact,
    ModelFact,
    Settings,
    diagnose,
    format_findings,
    problems,
)

NOW = 1_800_000_000.0  # 2027-01-15 08:00 UTC
GIB = 1024**3
ENDPOINTS = ("https://10.0.0.11:2379", "https://10.0.0.12:2379", "https://10.0.0.13:2379")
HEALTHY = {"healthy": True, "member_healthy": True, "role": "leader", "cameras": ["cam-1"], "mode": "normal"}


def healthy_facts(**changes: Any) -> Facts:
    facts = Facts(
        node="ws-a",
        peer="ws-b",
        peer_host="10.0.0.12",
        config_path="/etc/edgepair/store.yaml",
        cert_dir="/etc/edgepair/pki",
        now=NOW,
        health=HttpFact("https://10.0.0.11:9101/health", 200, HEALTHY, offset_s=0.0),
        peer_health=HttpFact("https://10.0.0.12:9101/health", 200, {**HEALTHY, "role": "follower"}, offset_s=0.4),
        etcd=tuple(EtcdFact(e, has_leader=True, version="3.4.23") for e in ENDPOINTS),
        members=MembersFact(client_urls=ENDPOINTS, names=("witness1", "ws-a", "ws-b")),
        disk=DiskFact("", 400 * GIB, 1000 * GIB),
        data_dir=DataDirFact("/var/lib/edgepair/data", mode=0o750, owner="edgepair"),
        model=ModelFact("/opt/edgepair/models/m.onnx", sha256="ab" * 32, recorded_sha256="ab" * 32),
        certs=(
            CertFact("/etc/edgepair/pki/ca.crt", "ca", not_before=NOW - DAY_S, not_after=NOW + 3000 * DAY_S),
            CertFact(
                "/etc/edgepair/pki/ws-a.crt",
                "ws-a",
                not_before=NOW - DAY_S,
                not_after=NOW + 400 * DAY_S,
                key_path="/etc/edgepair/pki/ws-a.key",
                key_mode=0o600,
            ),
        ),
        log=LogFact("/var/log/edgepair.log", lines_read=2000),
    )
    return replace(facts, **changes)


def test_a_healthy_workstation_has_no_problem() -> None:
    findings = diagnose(healthy_facts(), Settings())
    assert problems(findings) == []
    assert [f.message for f in findings] == [
        "ws-a: /health answers: leader, healthy, 1 camera(s) cam-1",
        "etcd member https://10.0.0.11:2379 answers, with a leader (etcd 3.4.23)",
        "etcd member https://10.0.0.12:2379 answers, with a leader (etcd 3.4.23)",
        "etcd member https://10.0.0.13:2379 answers, with a leader (etcd 3.4.23)",
        "etcd membership: witness1, ws-a, ws-b (the configured endpoints)",
        "peer ws-b: /health answers (follower)",
        "clock offset to ws-b +0 s (±1 s)",
        "data dir /var/lib/edgepair/data writable, 400.0 GiB free (40%)",
        "data dir /var/lib/edgepair/data mode 0750, owner edgepair",
        "model /opt/edgepair/models/m.onnx sha256 abababababab as recorded",
        "/etc/edgepair/pki/ca.crt valid until 2035-04-03 (3000 days)",
        "/etc/edgepair/pki/ws-a.crt valid until 2028-02-19 (400 days)",
        "log /var/log/edgepair.log: no error in its last 2000 lines",
    ]


def etcd_down() -> dict[str, Any]:
    return {"etcd": (EtcdFact(ENDPOINTS[0], error="UNAVAILABLE failed to connect"), *healthy_facts().etcd[1:])}


CASES: list[tuple[str, dict[str, Any], Finding]] = [
    (
        "agent unit failed",
        {"units": (("edgepair.service", "failed"), ("edgepair-etcd.service", "active"))},
        Finding(
            "service",
            False,
            "edgepair.service is failed",
            "systemctl restart edgepair.service; journalctl -u edgepair.service -n 100",
        ),
    ),
    (
        "node down",
        {"health": HttpFact("https://10.0.0.11:9101/health", error="ConnectionRefusedError: [Errno 111] refused")},
        Finding(
            "health",
            False,
            "ws-a: /health at https://10.0.0.11:9101/health does not answer: ConnectionRefusedError: [Errno 111]"
            " refused",
            "systemctl restart edgepair; journalctl -u edgepair -n 200 (on ws-a)",
        ),
    ),
    (
        "node fenced",
        {"health": HttpFact("u", 503, {**HEALTHY, "healthy": False, "mode": "fenced", "reason": "lease lost"})},
        Finding(
            "health",
            False,
            "ws-a: /health answers but the node is not running normally (mode fenced): lease lost",
            "edgepair status --config /etc/edgepair/store.yaml; docs/runbook.md#edgepairfencepaused",
        ),
    ),
    (
        "node unhealthy",
        {
            "health": HttpFact(
                "u", 200, {**HEALTHY, "member_healthy": False, "health_reasons": ["inference: no answer"]}
            )
        },
        Finding(
            "health",
            False,
            "ws-a: unhealthy: inference: no answer",
            "edgepair status --config /etc/edgepair/store.yaml; docs/runbook.md#edgepairnodeunhealthy",
        ),
    ),
    (
        "etcd member down",
        etcd_down(),
        Finding(
            "etcd",
            False,
            "etcd member https://10.0.0.11:2379 does not answer: UNAVAILABLE failed to connect",
            "systemctl restart edgepair-etcd; journalctl -u edgepair-etcd -n 100 (on 10.0.0.11)",
        ),
    ),
    (
        "etcd without leader",
        {"etcd": (EtcdFact(ENDPOINTS[0], has_leader=False, version="3.4.23"), *healthy_facts().etcd[1:])},
        Finding(
            "etcd",
            False,
            "etcd member https://10.0.0.11:2379 has no raft leader (quorum lost: fewer than 2 of 3 members reach"
            " each other)",
            "systemctl status edgepair-etcd (on every store host); docs/runbook.md#edgepairnoleader",
        ),
    ),
    (
        "etcd membership differs",
        {"members": MembersFact(client_urls=ENDPOINTS[:2], names=("ws-a", "ws-b"))},
        Finding(
            "etcd",
            False,
            "etcd members https://10.0.0.11:2379, https://10.0.0.12:2379 are not the configured endpoints"
            " https://10.0.0.11:2379, https://10.0.0.12:2379, https://10.0.0.13:2379",
            "fix cluster.etcd_endpoints in the store config, or re-run the etcd role: ansible-playbook -i"
            " inventories/<store> site.yml",
        ),
    ),
    (
        "peer down",
        {"peer_health": HttpFact("https://10.0.0.12:9101/health", error="TimeoutError: timed out")},
        Finding(
            "peer",
            False,
            "peer ws-b: /health at https://10.0.0.12:9101/health does not answer: TimeoutError: timed out",
            "systemctl status edgepair; edgepair doctor --config /etc/edgepair/store.yaml --name ws-b on 10.0.0.12",
        ),
    ),
    (
        "clock off",
        {"peer_health": HttpFact("u", 200, HEALTHY, offset_s=-7.4)},
        Finding(
            "clock",
            False,
            "clock offset to ws-b -7 s (bound 5 s): one of the two clocks is wrong",
            "timedatectl timesync-status; timedatectl set-ntp true (on the host whose clock is wrong)",
        ),
    ),
    (
        "data dir not writable",
        {"disk": DiskFact("PermissionError: Permission denied", 400 * GIB, 1000 * GIB)},
        Finding(
            "disk",
            False,
            "data dir /var/lib/edgepair/data cannot be written: PermissionError: Permission denied",
            "mount | grep -w /var/lib/edgepair/data; chown -R edgepair:edgepair /var/lib/edgepair/data",
        ),
    ),
    (
        "disk below the node's minimum",
        {"disk": DiskFact("", 100 * 1024**2, 1000 * GIB)},
        Finding(
            "disk",
            False,
            "data dir /var/lib/edgepair/data has 100.0 MiB free, less than the node's minimum 256.0 MiB",
            "du -sh /var/lib/edgepair/data/* | sort -h; lower storage.retention_days in /etc/edgepair/store.yaml or"
            " give the data dir a larger disk",
        ),
    ),
    (
        "disk nearly full",
        {"disk": DiskFact("", 50 * GIB, 1000 * GIB)},
        Finding(
            "disk",
            False,
            "data dir /var/lib/edgepair/data has 50.0 GiB free, 5% of 1000.0 GiB (below 10%)",
            "du -sh /var/lib/edgepair/data/* | sort -h; lower storage.retention_days in /etc/edgepair/store.yaml or"
            " give the data dir a larger disk",
        ),
    ),
    (
        "data dir missing",
        {"data_dir": DataDirFact("/var/lib/edgepair/data", exists=False)},
        Finding(
            "data-dir",
            False,
            "data dir /var/lib/edgepair/data does not exist",
            "install -d -o edgepair -g edgepair -m 0750 /var/lib/edgepair/data",
        ),
    ),
    (
        "data dir world-writable",
        {"data_dir": DataDirFact("/var/lib/edgepair/data", mode=0o777, owner="edgepair")},
        Finding(
            "data-dir",
            False,
            "data dir /var/lib/edgepair/data is mode 0777: other users may write it",
            "chmod 0750 /var/lib/edgepair/data",
        ),
    ),
    (
        "data dir world-readable",
        {"data_dir": DataDirFact("/var/lib/edgepair/data", mode=0o755, owner="edgepair")},
        Finding(
            "data-dir",
            False,
            "data dir /var/lib/edgepair/data is mode 0755: other users may read it",
            "chmod 0750 /var/lib/edgepair/data",
        ),
    ),
    (
        "model corrupt",
        {"model": ModelFact("/m.onnx", sha256="cd" * 32, recorded_sha256="ab" * 32)},
        Finding(
            "model",
            False,
            "model /m.onnx is corrupt: sha256 cdcdcdcdcdcd, recorded abababababab",
            "edgepair model install --force (or install the file again with --sha256)",
        ),
    ),
    (
        "model missing",
        {"model": ModelFact("/m.onnx", exists=False)},
        Finding("model", False, "model /m.onnx not found", "edgepair model install (or fix model.path in the config)"),
    ),
    (
        "certificate expiring",
        {"certs": (CertFact("/p/ws-a.crt", "ws-a", not_before=NOW - DAY_S, not_after=NOW + 9.2 * DAY_S),)},
        Finding(
            "certificate",
            False,
            "/p/ws-a.crt expires in 9 days (2027-01-24)",
            "edgepair certs rotate ws-a --dir <the store's pki dir> (on the controller); ansible-playbook -i"
            " inventories/<store> rotate-certs.yml",
        ),
    ),
    (
        "certificate expired",
        {"certs": (CertFact("/p/ws-a.crt", "ws-a", not_before=NOW - 900 * DAY_S, not_after=NOW - 2 * DAY_S),)},
        Finding(
            "certificate",
            False,
            "/p/ws-a.crt expired on 2027-01-13",
            "edgepair certs rotate ws-a --dir <the store's pki dir> (on the controller); ansible-playbook -i"
            " inventories/<store> rotate-certs.yml",
        ),
    ),
    (
        "CA expiring",
        {"certs": (CertFact("/p/ca.crt", "ca", not_before=NOW - DAY_S, not_after=NOW + 20 * DAY_S),)},
        Finding(
            "certificate",
            False,
            "/p/ca.crt expires in 20 days (2027-02-04)",
            "edgepair certs rotate-ca --dir <pki dir> (docs/security.md)",
        ),
    ),
    (
        "certificate unreadable",
        {"certs": (CertFact("/p/ws-a.crt", "ws-a", error="certificate /p/ws-a.crt not found"),)},
        Finding(
            "certificate",
            False,
            "/p/ws-a.crt: certificate /p/ws-a.crt not found",
            "edgepair certs rotate ws-a --dir <the store's pki dir> (on the controller); ansible-playbook -i"
            " inventories/<store> rotate-certs.yml",
        ),
    ),
    (
        "key readable by others",
        {
            "certs": (
                CertFact(
                    "/p/ws-a.crt",
                    "ws-a",
                    not_before=0,
                    not_after=NOW + 400 * DAY_S,
                    key_path="/p/ws-a.key",
                    key_mode=0o644,
                ),
            )
        },
        Finding(
            "certificate", False, "/p/ws-a.key is mode 0644: other users may read the key", "chmod 0600 /p/ws-a.key"
        ),
    ),
    (
        "plain text",
        {"tls": False, "certs": ()},
        Finding(
            "certificate",
            False,
            "security.tls is false: etcd, replication and /health run in plain text",
            "set security.tls: true in /etc/edgepair/store.yaml (docs/security.md)",
        ),
    ),
    (
        "errors in the log",
        {"log": LogFact("/l.log", lines_read=900, errors=("a ERROR x", "b ERROR y", "c CRITICAL z", "d ERROR w"))},
        Finding(
            "log",
            False,
            "log /l.log: 4 error line(s) in its last 900 lines; latest: b ERROR y | c CRITICAL z | d ERROR w",
            "grep -n -E 'ERROR|CRITICAL|Traceback' /l.log | tail -50",
        ),
    ),
    (
        "log unreadable",
        {"log": LogFact("/l.log", error="No such file or directory")},
        Finding("log", False, "log /l.log unreadable: No such file or directory", "ls -l /l.log"),
    ),
]


@pytest.mark.parametrize(("what", "changes", "expected"), CASES, ids=[c[0] for c in CASES])
def test_one_problem_gives_exactly_its_finding(what: str, changes: dict[str, Any], expected: Finding) -> None:
    assert problems(diagnose(healthy_facts(**changes), Settings())) == [expected]


def test_active_units_are_listed_first() -> None:
    units = (("edgepair.service", "active"), ("edgepair-etcd.service", "active"))
    findings = diagnose(healthy_facts(units=units), Settings())
    assert findings[:2] == [
        Finding("service", True, "edgepair.service is active"),
        Finding("service", True, "edgepair-etcd.service is active"),
    ]
    assert problems(findings) == []


def test_a_data_dir_others_cannot_reach_is_private_whatever_its_mode() -> None:
    d = DataDirFact("/run/pair/ws-a/data", mode=0o755, owner="root", closed_parent="/run/pair")
    (finding,) = [f for f in diagnose(healthy_facts(data_dir=d), Settings()) if f.check == "data-dir"]
    assert finding == Finding(
        "data-dir", True, "data dir /run/pair/ws-a/data mode 0755, owner root; others cannot enter /run/pair"
    )


def test_no_peer_and_no_log_are_not_problems() -> None:
    findings = diagnose(healthy_facts(peer_health=None, log=None), Settings())
    assert problems(findings) == []
    assert [f.check for f in findings] == [
        "health",
        "etcd",
        "etcd",
        "etcd",
        "etcd",
        "peer",
        "disk",
        "data-dir",
        "model",
        "certificate",
        "certificate",
    ]


def test_the_printout_gives_each_problem_its_fix() -> None:
    facts = healthy_facts(**etcd_down())
    text = format_findings(facts, diagnose(facts, Settings()))
    lines = text.splitlines()
    assert lines[0] == "edgepair doctor: ws-a (/etc/edgepair/store.yaml)"
    assert (
        lines[2]
        == "  FAIL  etcd        etcd member https://10.0.0.11:2379 does not answer: UNAVAILABLE failed to connect"
    )
    assert lines[3] == (
        "                    fix: systemctl restart edgepair-etcd; journalctl -u edgepair-etcd -n 100 (on 10.0.0.11)"
    )
    assert lines[-1] == "1 problem(s) found"

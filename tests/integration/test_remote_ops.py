"""``edgepair doctor`` and ``edgepair support-bundle`` on a workstation's real surroundings: a real 3-member etcd with
mutual TLS and auth (``EtcdCluster``), the store's real PKI, real files, the real CLI in a subprocess. No node agent
runs here (the test with a real pair, a healthy node and then one problem at a time, is
tests/e2e/test_remote_ops_pair.py, slow): the node's and the peer's /health refuse the connection, and every other
check is real.

The store config carries a camera password in a stream URL (as a careless installer writes it) and another in the
credentials file; the node's log and a drill report carry both. The bundle must hold neither, nor any private key.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from failover.etcd_cluster import EtcdCluster, free_port
from tests.harness.pair import store_pki

REPO = Path(__file__).resolve().parents[2]
STORE = "doc-store"
URL_SECRET = "UrlSecret-7781"
FILE_SECRET = "FileSecret-9902"

pytestmark = pytest.mark.skipif(shutil.which("etcd") is None, reason="etcd not installed (apt-get install etcd-server)")


@pytest.fixture(scope="module")
def site() -> Iterator[dict[str, Any]]:
    """A workstation's folder (0755 under /var/tmp, so that a data dir mode is what other users see) with its PKI,
    config, credentials, model, log and drill reports; and the store's etcd running."""
    base = Path(tempfile.mkdtemp(prefix="edgepair-doctor-", dir="/var/tmp"))
    base.chmod(0o755)
    cluster = None
    try:
        pki = store_pki(base / "pki", STORE)
        cluster = EtcdCluster(base / "etcd", cert_dir=pki, store_id=STORE, node_users=("ws-a", "ws-b")).start()
        (base / "data").mkdir(mode=0o750)
        model = base / "model.onnx"
        model.write_bytes(b"not really a network, only bytes to checksum\n")
        (base / "model.json").write_text(json.dumps({"sha256": hashlib.sha256(model.read_bytes()).hexdigest()}))
        creds = base / "cameras.yaml"
        fd = os.open(creds, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            yaml.safe_dump({"cam-2": {"user": "operator", "password": FILE_SECRET}}, f)
        ports = {n: free_port() for n in ("ws-a", "ws-b")}
        cfg = {
            "store": {"id": STORE, "timezone": "Europe/London"},
            "node": "ws-a",
            "model": {"path": str(model)},
            "cameras": [
                {"id": "cam-1", "source": f"rtsp://admin:{URL_SECRET}@127.0.0.1:8554/cam-1"},
                {"id": "cam-2", "source": "rtsp://127.0.0.1:8554/cam-2"},
            ],
            "credentials_file": str(creds),
            "storage": {"data_dir": str(base / "data")},
            "cluster": {
                "etcd_endpoints": cluster.endpoints,
                "nodes": [
                    {"name": n, "host": "127.0.0.1", "flight_port": free_port(), "metrics_port": p}
                    for n, p in ports.items()
                ],
            },
            "security": {"tls": True, "cert_dir": str(pki)},
        }
        config = base / "store.yaml"
        config.write_text(yaml.safe_dump(cfg, sort_keys=False))
        log = base / "ws-a.log"
        log.write_text(
            "10:00:00 INFO    cluster.node: node ws-a: health on https://127.0.0.1:9101/health\n"
            f"10:00:01 WARNING actors.capture: camera cam-1: rtsp://admin:{URL_SECRET}@127.0.0.1:8554/cam-1 refused\n"
            f"10:00:02 INFO    actors.capture: ffmpeg said: authentication with {FILE_SECRET} failed\n"
        )
        drills = base / "drills"
        drills.mkdir()
        (drills / "kill-node.json").write_text(
            json.dumps({"scenario": "kill-node", "camera": f"rtsp://admin:{URL_SECRET}@127.0.0.1:8554/cam-1"})
        )
        yield {"base": base, "config": config, "pki": pki, "log": log, "drills": drills, "ports": ports}
    finally:
        if cluster is not None:
            cluster.stop()
        shutil.rmtree(base, ignore_errors=True)


def edgepair(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cluster.cli", *args], capture_output=True, text=True, cwd=REPO, timeout=300
    )


def doctor_cli(site: dict[str, Any]) -> tuple[int, list[dict[str, Any]]]:
    """``edgepair doctor --json`` as an operator runs it: exit status and findings."""
    done = edgepair("doctor", "--config", str(site["config"]), "--log", str(site["log"]), "--json")
    assert "error" not in done.stderr, done.stderr
    return done.returncode, json.loads(done.stdout)["findings"]


def doctor(site: dict[str, Any]) -> list[dict[str, Any]]:
    """The same findings, gathered in this process (no interpreter start for each injected problem)."""
    from cluster.config import load_config
    from cluster.doctor import diagnose, gather, settings_for

    cfg = load_config(site["config"])
    facts = gather(cfg, "ws-a", str(site["config"]), site["log"])
    return [f.as_dict() for f in diagnose(facts, settings_for(cfg))]


def problem_texts(findings: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    return [(f["check"], f["message"], f["fix"]) for f in findings if not f["ok"]]


def test_doctor_checks_a_workstation_and_names_each_problem(site: dict[str, Any]) -> None:
    base, ports = site["base"], site["ports"]
    rc, findings = doctor_cli(site)
    assert rc == 1
    refused = "ConnectionRefusedError: [Errno 111] Connection refused"
    node_down = [
        (
            "health",
            f"ws-a: /health at https://127.0.0.1:{ports['ws-a']}/health does not answer: {refused}",
            "systemctl restart edgepair; journalctl -u edgepair -n 200 (on ws-a)",
        ),
        (
            "peer",
            f"peer ws-b: /health at https://127.0.0.1:{ports['ws-b']}/health does not answer: {refused}",
            f"systemctl status edgepair; edgepair doctor --config {site['config']} --name ws-b on 127.0.0.1",
        ),
    ]
    assert problem_texts(findings) == node_down
    ok = {f["check"]: f["message"] for f in findings if f["ok"] and f["check"] in ("disk", "data-dir", "model", "log")}
    assert ok["data-dir"] == f"data dir {base / 'data'} mode 0750, owner root"
    assert ok["model"].startswith(f"model {base / 'model.onnx'} sha256 ") and ok["model"].endswith(" as recorded")
    assert ok["log"] == f"log {site['log']}: no error in its last 3 lines"
    etcd = [f["message"] for f in findings if f["check"] == "etcd"]
    assert len(etcd) == 4 and all(" answers, with a leader (etcd 3.4." in m for m in etcd[:3])
    assert etcd[3] == "etcd membership: witness, ws-a, ws-b (the configured endpoints)"
    certs = [f["message"].split(" valid until ")[0] for f in findings if f["check"] == "certificate"]
    assert certs == [str(site["pki"] / "ca.crt"), str(site["pki"] / "ws-a.crt"), str(site["pki"] / "root.crt")]

    # One problem at a time, each undone before the next: each adds exactly its finding.
    data = base / "data"
    data.chmod(0o777)
    try:
        assert problem_texts(doctor(site)) == [
            *node_down,
            ("data-dir", f"data dir {data} is mode 0777: other users may write it", f"chmod 0750 {data}"),
        ]
    finally:
        data.chmod(0o750)

    from cluster.pki import CertDir

    cert, key = site["pki"] / "ws-a.crt", site["pki"] / "ws-a.key"
    saved = cert.read_bytes(), key.read_bytes()
    try:
        CertDir(site["pki"]).issue("ws-a", "node", ["127.0.0.1", "localhost"], days=9)
        expiring = [f for f in doctor(site) if not f["ok"] and f["check"] == "certificate"]
        assert [(f["message"].split(" (")[0], f["fix"]) for f in expiring] == [
            (
                f"{cert} expires in 9 days",
                "edgepair certs rotate ws-a --dir <the store's pki dir> (on the controller); ansible-playbook -i"
                " inventories/<store> rotate-certs.yml",
            )
        ]
    finally:
        cert.write_bytes(saved[0])
        key.write_bytes(saved[1])

    key = site["pki"] / "ws-a.key"
    key.chmod(0o644)  # the node's identity no longer loads: doctor connects with root's and says what is wrong
    try:
        assert problem_texts(doctor(site)) == [
            *node_down,
            ("certificate", f"{key} is mode 0644: other users may read the key", f"chmod 0600 {key}"),
        ]
    finally:
        key.chmod(0o600)

    log = site["log"].read_text()
    try:
        with site["log"].open("a") as f:
            f.write("10:00:03 ERROR   cluster.node: node ws-a: replication to ws-b not started: refused\n")
        assert problem_texts(doctor(site)) == [
            *node_down,
            (
                "log",
                f"log {site['log']}: 1 error line(s) in its last 4 lines; latest: 10:00:03 ERROR   cluster.node:"
                " node ws-a: replication to ws-b not started: refused",
                f"grep -n -E 'ERROR|CRITICAL|Traceback' {site['log']} | tail -50",
            ),
        ]
    finally:
        site["log"].write_text(log)
    assert problem_texts(doctor(site)) == node_down  # every problem undone: the first findings again


def test_support_bundle_holds_what_a_remote_engineer_needs_and_no_secret(site: dict[str, Any]) -> None:
    out = site["base"] / "out" / "bundle.tar.gz"
    done = edgepair(
        "support-bundle", "--config", str(site["config"]), "--log", str(site["log"]), "--drills", str(site["drills"]),
        "--out", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0].startswith(f"support bundle: {out} (")
    assert sorted(p.name for p in out.parent.iterdir()) == ["bundle.tar.gz"]  # no temporary file left
    assert out.stat().st_mode & 0o777 == 0o600
    with tarfile.open(out) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]
    assert sorted(members) == [
        f"bundle/{n}"
        for n in (
            "MANIFEST.json",
            "certificates.json",
            "config/effective.json",
            "config/store.yaml",
            "doctor.json",
            "drills/kill-node.json",
            "logs/ws-a.log",
            "status.json",
            "versions.json",
        )
    ]
    manifest = json.loads(members["bundle/MANIFEST.json"])
    assert sorted(manifest["not_gathered"]) == [
        "health/ws-a.json",
        "health/ws-b.json",
        "metrics/ws-a.prom",
        "metrics/ws-b.prom",
        "replication.json",
    ]
    assert json.loads(members["bundle/status.json"])["store"] == STORE
    assert [f["check"] for f in json.loads(members["bundle/doctor.json"])["findings"] if not f["ok"]] == [
        "health",
        "peer",
    ]
    log = members["bundle/logs/ws-a.log"].decode()
    assert "rtsp://127.0.0.1:8554/cam-1 refused" in log and "authentication with *** failed" in log
    assert "source: rtsp://127.0.0.1:8554/cam-1" in members["bundle/config/store.yaml"].decode()
    # No secret anywhere: the archive's bytes, compressed and not, and every member's.
    raw = out.read_bytes()
    with tarfile.open(out) as tar, io.BytesIO() as buf:
        for m in tar.getmembers():
            f = tar.extractfile(m)
            buf.write(f.read() if f is not None else b"")
        plain = buf.getvalue()
    key_body = b"".join((site["pki"] / "ws-a.key").read_bytes().splitlines()[1:-1])[:40]
    for blob in (raw, plain):
        for secret in (URL_SECRET.encode(), FILE_SECRET.encode(), b"PRIVATE KEY", key_body):
            assert secret not in blob


def test_a_secret_that_escaped_redaction_stops_the_bundle(tmp_path: Path) -> None:
    from cluster.bundle import Bundle, write_archive
    from cluster.errors import StorageError
    from cluster.redact import register_secret

    register_secret("Escaped-Secret-4242")
    b = Bundle()
    b.members["logs/raw.log"] = b"a library printed Escaped-Secret-4242 as is\n"  # bypassing Bundle.text's redaction
    out = tmp_path / "b.tar.gz"
    with pytest.raises(StorageError, match=r"^support bundle: logs/raw.log holds a camera password; nothing was"):
        write_archive(b, out)
    assert list(tmp_path.iterdir()) == []
